#pragma once
// Buffers that start on a cache-line boundary. Activation rows are whole multiples of 64
// bytes in the models Loom targets (their hidden, intermediate and head widths are
// multiples of 16 floats), so in such a buffer a 16-float SIMD load of a row never spans
// two cache lines; other widths still work, with some loads split.
// With the allocator's 16-byte alignment, where a buffer landed depended on its history
// and prefill speed with it (measured on Zen 5, bf16 prefill of 128 tokens, against the
// better of two allocation patterns: SmolLM2-135M 1.07x faster aligned on one thread and
// 1.08x on two, Qwen2.5-0.5B 1.12x).
#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

namespace loom {

inline constexpr std::size_t cache_line_bytes = 64;

template <typename T>
struct CacheAlignedAllocator {
    using value_type = T;

    CacheAlignedAllocator() noexcept = default;
    template <typename U>
    CacheAlignedAllocator(const CacheAlignedAllocator<U>&) noexcept {}

    T* allocate(std::size_t count) {
        return static_cast<T*>(::operator new(count * sizeof(T), std::align_val_t(cache_line_bytes)));
    }
    void deallocate(T* pointer, std::size_t) noexcept { ::operator delete(pointer, std::align_val_t(cache_line_bytes)); }

    template <typename U>
    bool operator==(const CacheAlignedAllocator<U>&) const noexcept { return true; }
};

template <typename T>
using AlignedVector = std::vector<T, CacheAlignedAllocator<T>>;

// An array left uninitialised (pages never touched are never committed), e.g. a KV cache.
template <typename T>
struct CacheAlignedArrayDelete {
    void operator()(T* pointer) const noexcept { ::operator delete[](pointer, std::align_val_t(cache_line_bytes)); }
};

template <typename T>
using AlignedArray = std::unique_ptr<T[], CacheAlignedArrayDelete<T>>;

template <typename T>
AlignedArray<T> make_uninitialised_array(std::size_t count) {
    // A type with a destructor would get an array cookie the deleter does not expect.
    static_assert(std::is_trivially_destructible_v<T>, "aligned arrays hold plain values");
    return AlignedArray<T>(new (std::align_val_t(cache_line_bytes)) T[count]);
}

}  // namespace loom
