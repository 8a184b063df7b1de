#pragma once
// Keys and values of every processed position, per layer, so each new token attends to
// the past without recomputing it. Layout per layer, chosen for the attention kernel:
//   keys   [kv_heads, capacity / 16, head_dim, 16]: blocks of 16 positions stored
//          transposed, so 16 positions' scores form one SIMD accumulator that sums over
//          head_dim in plain order (no lane folding), and a block is one contiguous read;
//   values [capacity, kv_heads, head_dim]: one row per position, added up position by position.
// Elements are f32, or f16 (llama.cpp's default cache type): half the memory and half the
// bytes each step reads, each key and value rounded once to the nearest f16 when stored.
// Both are deterministic on every target; f16 gives different bits from f32 (and from a
// PyTorch run in f32), see docs/determinism.md.
#include <algorithm>
#include <cstddef>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/aligned.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/kernels/attention.hpp"

namespace loom::nn {

// A cache element type named on a command line (--cache-type), as llama.cpp names them.
inline DType parse_cache_dtype(std::string_view flag, std::string_view name) {
    if (name == "f32") return DType::f32;
    if (name == "f16") return DType::f16;
    throw argument_error(std::string(flag) + " must be f32 or f16, got '" + std::string(name) + "'");
}

class KVCache {
public:
    KVCache() = default;
    KVCache(std::size_t layers, std::size_t capacity, std::size_t kv_heads, std::size_t head_dim,
            DType dtype = DType::f32)
        : capacity_(capacity), kv_heads_(kv_heads), head_dim_(head_dim), row_size_(kv_heads * head_dim),
          dtype_(dtype), keys_(layers), values_(layers) {
        kernels::check_cache_dtype(dtype);
        // 4 TiB (or a quarter of a 32-bit address space): past this, a size overflowed.
        constexpr std::size_t max_floats = std::size_t(1) << (sizeof(std::size_t) >= 8 ? 40 : 28);
        if (row_size_ == 0 || capacity > max_floats / row_size_ / std::max<std::size_t>(layers, 1) / 2) {
            throw argument_error("KV cache of " + std::to_string(capacity) + " positions x " + std::to_string(layers) +
                                 " layers x " + std::to_string(row_size_) + " values is too large");
        }
        // Left uninitialised: positions are written before they are read, and untouched
        // pages of a large context are never committed by the operating system.
        for (std::size_t layer = 0; layer < layers; ++layer) {
            keys_[layer] = make_uninitialised_array<std::byte>(key_blocks() * key_block_floats() * kv_heads_ * element_size());
            values_[layer] = make_uninitialised_array<std::byte>(capacity * row_size_ * element_size());
        }
    }

    std::size_t capacity() const noexcept { return capacity_; }
    std::size_t length() const noexcept { return length_; }   // positions already stored
    std::size_t layers() const noexcept { return keys_.size(); }

    // Throws before any work starts if `tokens` more positions do not fit.
    void check_room(std::size_t tokens) const {
        if (length_ + tokens > capacity_) {
            throw argument_error("context full: " + std::to_string(length_) + " positions cached + " +
                                 std::to_string(tokens) + " new > capacity " + std::to_string(capacity_));
        }
    }

    std::size_t kv_heads() const noexcept { return kv_heads_; }
    std::size_t head_dim() const noexcept { return head_dim_; }
    DType dtype() const noexcept { return dtype_; }
    std::size_t element_size() const noexcept { return dtype_size(dtype_); }

    // Stores `tokens` rows of keys and values ([tokens, kv_heads, head_dim] each) at
    // positions first_position ...
    void store(std::size_t layer, std::size_t first_position, std::size_t tokens, const float* keys,
               const float* values) noexcept {
        for (std::size_t t = 0; t < tokens; ++t) {
            for (std::size_t h = 0; h < kv_heads_; ++h) {
                const std::size_t offset = t * row_size_ + h * head_dim_;
                kernels::store_position(dtype_, keys_[layer].get() + h * key_blocks() * key_block_floats() * element_size(),
                                        values_[layer].get() + h * head_dim_ * element_size(), row_size_,
                                        first_position + t, keys + offset, values + offset, head_dim_);
            }
        }
    }

    // Keys: [kv_heads, capacity / 16, head_dim, 16] (positions rounded up to whole blocks;
    // positions past length() hold garbage, read but never used by the kernel).
    static constexpr std::size_t key_block = 16;
    // (Elements of dtype(), as bytes.)
    const std::byte* keys(std::size_t layer) const noexcept { return keys_[layer].get(); }
    std::byte* keys(std::size_t layer) noexcept { return keys_[layer].get(); }
    std::size_t key_blocks() const noexcept { return (capacity_ + key_block - 1) / key_block; }
    std::size_t key_block_floats() const noexcept { return head_dim_ * key_block; }
    // Values: [capacity, kv_heads, head_dim].
    const std::byte* values(std::size_t layer) const noexcept { return values_[layer].get(); }
    std::byte* values(std::size_t layer) noexcept { return values_[layer].get(); }

    // A cache of `capacity` positions of the same shape holding this one's first `positions`
    // (a longer sequence that starts with them).
    KVCache with_capacity(std::size_t capacity, std::size_t positions) const {
        if (positions > length_ || positions > capacity) {
            throw argument_error("KV cache: cannot keep " + std::to_string(positions) + " positions (" +
                                 std::to_string(length_) + " stored, new capacity " + std::to_string(capacity) + ")");
        }
        KVCache larger(layers(), capacity, kv_heads_, head_dim_, dtype_);
        const std::size_t element = element_size();
        const std::size_t head_bytes = (positions + key_block - 1) / key_block * key_block_floats() * element;
        for (std::size_t layer = 0; layer < layers(); ++layer) {
            for (std::size_t h = 0; h < kv_heads_; ++h) {
                std::copy_n(keys(layer) + h * key_blocks() * key_block_floats() * element, head_bytes,
                            larger.keys(layer) + h * larger.key_blocks() * key_block_floats() * element);
            }
            std::copy_n(values(layer), positions * row_size_ * element, larger.values(layer));
        }
        larger.length_ = positions;
        return larger;
    }

    void advance(std::size_t tokens) noexcept { length_ += tokens; }
    // Forget positions from `length` on (e.g. to reuse a common prompt prefix).
    void truncate(std::size_t length) {
        if (length > length_) throw argument_error("cannot truncate KV cache forwards");
        length_ = length;
    }

    std::size_t bytes() const noexcept {
        return keys_.size() * (key_blocks() * key_block_floats() * kv_heads_ + capacity_ * row_size_) * element_size();
    }

private:
    std::size_t capacity_ = 0;
    std::size_t length_ = 0;
    std::size_t kv_heads_ = 0;
    std::size_t head_dim_ = 0;
    std::size_t row_size_ = 0;
    DType dtype_ = DType::f32;
    std::vector<AlignedArray<std::byte>> keys_;
    std::vector<AlignedArray<std::byte>> values_;
};

}  // namespace loom::nn
