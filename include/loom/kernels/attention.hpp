#pragma once
// Causal grouped-query attention over KV caches. For each query position and head:
//   score[k] = (sum over d in plain order of q[d] * key_k[d]) * scale, 16 keys per SIMD
//              accumulator (one key per lane, so the order is the same on every target);
//   softmax over the keys in ascending position order (ops.hpp);
//   out[d]   = sum over k in ascending position order of weight[k] * value_k[d].
// Nothing depends on the batch, the thread count or how the prompt was split into calls,
// so a token's output is the same in prefill, token by token, or next to other sequences.
// A cache holds f32 or f16 keys and values (see nn::KVCache): f16 ones are rounded once when
// stored and widened exactly when read, so both kinds keep every guarantee above.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "loom/core/aligned.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/simd.hpp"

namespace loom::kernels {

struct AttentionShape {
    std::size_t query_heads;
    std::size_t kv_heads;
    std::size_t head_dim;
    std::size_t sliding_window;  // 0 = unlimited: attend to every earlier position
};

// One sequence's queries and its cache (layout of nn::KVCache).
struct AttentionSequence {
    const float* queries;        // [tokens, query_heads, head_dim], positions first_position ...
    std::size_t tokens;
    std::size_t first_position;
    std::byte* keys;             // [kv_heads, key_blocks, head_dim, 16], filled up to the last query's position
    std::byte* values;           // [capacity, kv_heads, head_dim]
    DType cache_dtype;           // of keys and values: f32 or f16
    std::size_t key_blocks;      // blocks of 16 positions per head
    float* out;                  // [tokens, query_heads, head_dim]
    // A single token's own key and value ([kv_heads, head_dim] each) when the cache does not
    // hold them yet: each kv head's item stores its part first. A key's elements land on
    // as many cache lines, which mostly miss; stored in the items, those misses overlap
    // with the other threads' attention instead of holding every thread up.
    const float* new_key = nullptr;
    const float* new_value = nullptr;
};

// The element types a KV cache can hold.
inline void check_cache_dtype(DType dtype) {
    if (dtype != DType::f32 && dtype != DType::f16) {
        throw argument_error("a KV cache holds F32 or F16 values, not " + std::string(dtype_name(dtype)));
    }
}

// Calls body(std::integral_constant<DType, dtype>) for a cache's element type, so that the
// code for each type is compiled once and chosen at run time.
template <typename Body>
decltype(auto) with_cache_dtype(DType dtype, Body&& body) {
    check_cache_dtype(dtype);
    if (dtype == DType::f16) return body(std::integral_constant<DType, DType::f16>{});
    return body(std::integral_constant<DType, DType::f32>{});
}

// The element a cache of `dtype` stores (f16 as its bits), and a value rounded to it.
template <DType dtype>
using CacheElement = std::conditional_t<dtype == DType::f32, float, std::uint16_t>;

template <DType dtype>
inline CacheElement<dtype> to_cache_element(float value) noexcept {
    static_assert(dtype == DType::f32 || dtype == DType::f16, "KV caches hold f32 or f16");
    if constexpr (dtype == DType::f32) {
        return value;
    } else {
        return f32_to_f16(value);  // the scalar rounding on every target: the same bits everywhere
    }
}

// Writes one key into a head's blocks of the layout above: position p lands in block p / 16,
// as element [d][p % 16] of that block's [head_dim, 16] (16 keys fill one accumulator).
template <DType dtype = DType::f32>
inline void store_key_in_blocks(CacheElement<dtype>* head_blocks, std::size_t position, const float* key,
                                std::size_t head_dim) noexcept {
    CacheElement<dtype>* block =
        head_blocks + (position / reduction_lanes) * head_dim * reduction_lanes + position % reduction_lanes;
    for (std::size_t d = 0; d < head_dim; ++d) block[d * reduction_lanes] = to_cache_element<dtype>(key[d]);
}

// Stores one position of one kv head: its key into the head's blocks (`head_keys`, as
// store_key_in_blocks) and its value into row `position` of `head_values` (the head's part
// of position 0, rows `kv_stride` elements apart).
template <DType dtype>
inline void store_position(CacheElement<dtype>* head_keys, CacheElement<dtype>* head_values, std::size_t kv_stride,
                           std::size_t position, const float* key, const float* value, std::size_t head_dim) noexcept {
    store_key_in_blocks<dtype>(head_keys, position, key, head_dim);
    CacheElement<dtype>* row = head_values + position * kv_stride;
    for (std::size_t d = 0; d < head_dim; ++d) row[d] = to_cache_element<dtype>(value[d]);
}

// store_position for a cache of either element type (its arrays as bytes).
inline void store_position(DType dtype, std::byte* head_keys, std::byte* head_values, std::size_t kv_stride,
                           std::size_t position, const float* key, const float* value, std::size_t head_dim) {
    with_cache_dtype(dtype, [&](auto cache) {
        using Element = CacheElement<decltype(cache)::value>;
        store_position<decltype(cache)::value>(reinterpret_cast<Element*>(head_keys),
                                               reinterpret_cast<Element*>(head_values), kv_stride, position, key,
                                               value, head_dim);
    });
}

namespace detail {

// Scores are scaled by 1/sqrt(head_dim), computed in double and rounded once: inference
// and training use this one value, so their forward passes give the same bits.
inline float attention_scale(std::size_t head_dim) noexcept { return float(1.0 / std::sqrt(double(head_dim))); }

// The keys a query at `position` attends to: [first, position].
inline std::size_t first_key(std::size_t position, std::size_t sliding_window) noexcept {
    return sliding_window && position + 1 > sliding_window ? position + 1 - sliding_window : 0;
}

// The query heads that share a key/value head (grouped-query attention) are computed
// together, up to this many at a time: each key and value is loaded once for all of them,
// and their sums are independent chains the core overlaps, where one head's chain alone
// waits on the adder's latency at every step.
inline constexpr std::size_t heads_at_once = 4;

// Calls body(first_head, std::integral_constant<size_t, Heads>) for consecutive chunks of
// `heads` heads, Heads <= heads_at_once.
template <typename Body>
void in_head_chunks(std::size_t heads, Body&& body) {
    for (std::size_t first = 0; first < heads; first += heads_at_once) {
        switch (std::min(heads_at_once, heads - first)) {
            case 1: body(first, std::integral_constant<std::size_t, 1>{}); break;
            case 2: body(first, std::integral_constant<std::size_t, 2>{}); break;
            case 3: body(first, std::integral_constant<std::size_t, 3>{}); break;
            default: body(first, std::integral_constant<std::size_t, 4>{}); break;
        }
    }
}

// A decoding step reads every sequence's cache once, mostly from memory, in runs too short
// for the hardware prefetcher: key lines are requested 8 KiB (two blocks of 16 positions)
// and value rows 16 positions before their use. Measured on Zen 5 with 8 sequences of 100
// positions in SmolLM2-135M's shape: 1.3x faster.
inline constexpr std::size_t key_prefetch_distance = 8192;
inline constexpr std::size_t value_prefetch_rows = 16;

// Scores are computed for whole blocks of 16 positions; a row of them starts at the block
// holding first_key, so the key at position p is element p - first_block_start(first_key).
inline std::size_t first_block_start(std::size_t first_key) noexcept { return first_key - first_key % reduction_lanes; }
inline std::size_t score_row_length(std::size_t first_key, std::size_t end) noexcept {
    const std::size_t start = first_block_start(first_key);
    return (end - start + reduction_lanes - 1) / reduction_lanes * reduction_lanes;
}

// Scores of Heads query heads `query_stride` floats apart against Runs runs of PerRun
// consecutive blocks, run r starting at block + r * run_stride: for each of those blocks c,
// scores[h * scores_stride + 16 * (c - block) + lane] = (query_h . key(16 * c + lane)) * scale.
// keys: one kv head's [blocks, head_dim, 16].
template <std::size_t Heads, std::size_t PerRun, std::size_t Runs = 1, DType Cache = DType::f32>
LOOM_ALWAYS_INLINE void score_blocks(const float* queries, std::size_t query_stride, const CacheElement<Cache>* keys,
                                     std::size_t head_dim, std::size_t block, float scale, float* scores,
                                     std::size_t scores_stride, std::size_t run_stride = 0) noexcept {
    constexpr std::size_t Blocks = PerRun * Runs;
    auto offset = [&](std::size_t b) { return b / PerRun * run_stride + b % PerRun; };  // from `block`
    const CacheElement<Cache>* first = keys + block * head_dim * reduction_lanes;
    simd::Lanes16 sums[Heads][Blocks];
    LOOM_UNROLL for (auto& head : sums) {
        LOOM_UNROLL for (auto& lanes : head) lanes = simd::zero16();
    }
    for (std::size_t d = 0; d < head_dim; ++d) {
        simd::Lanes16 key[Blocks];
        LOOM_UNROLL for (std::size_t b = 0; b < Blocks; ++b) {
            const auto* line = reinterpret_cast<const std::byte*>(first + (offset(b) * head_dim + d) * reduction_lanes);
            simd::prefetch(line + key_prefetch_distance);
            key[b] = simd::load16_weights<Cache>(line);
            LOOM_UNROLL for (auto& part : key[b].part) simd::hold_in_register(part);
        }
        LOOM_UNROLL for (std::size_t h = 0; h < Heads; ++h) {
            const simd::Floats q = simd::broadcast(queries[h * query_stride + d]);
            LOOM_UNROLL for (std::size_t b = 0; b < Blocks; ++b) {
                LOOM_UNROLL for (std::size_t p = 0; p < simd::parts; ++p) {
                    sums[h][b].part[p] = sums[h][b].part[p] + q * key[b].part[p];
                }
            }
        }
    }
    const simd::Floats scale_lanes = simd::broadcast(scale);
    LOOM_UNROLL for (std::size_t h = 0; h < Heads; ++h) {
        LOOM_UNROLL for (std::size_t b = 0; b < Blocks; ++b) {
            LOOM_UNROLL for (std::size_t p = 0; p < simd::parts; ++p) sums[h][b].part[p] = sums[h][b].part[p] * scale_lanes;
            simd::store16(scores + h * scores_stride + offset(b) * reduction_lanes, sums[h][b]);
        }
    }
}

// Scores of Heads query heads against the keys [first_key, end), in whole blocks: row h
// (scores_stride >= score_row_length) holds the key at position p at p - first_block_start.
// Positions of a block outside the range are computed and ignored.
template <std::size_t Heads, DType Cache = DType::f32>
void attention_scores(const float* queries, std::size_t query_stride, const CacheElement<Cache>* keys, std::size_t head_dim,
                      std::size_t first_key, std::size_t end, float scale, float* scores,
                      std::size_t scores_stride) noexcept {
    // Independent sums per step: a few blocks of keys when there are few heads.
    constexpr std::size_t chains = simd::parts == 1 ? 6 : 4;
    constexpr std::size_t Blocks = std::clamp<std::size_t>(chains / Heads, 1, 4);
    const std::size_t first_block = first_key / reduction_lanes;
    const std::size_t blocks = score_row_length(first_key, end) / reduction_lanes;
    std::size_t b = 0;
    // With 32 registers, the row's first and second halves side by side: a decoding step
    // reads a head's keys from memory, and a core keeps more reads in flight from two
    // sequential streams than from one. Measured on Zen 5, attention of one sequence in
    // SmolLM2-135M's shape over 30 layers, the cache read from memory, medians of four runs:
    // at position 2000 5.74 -> 5.30 ms on one thread and 3.58 -> 3.31 on two, at 1000
    // 2.89 -> 2.81; at 192 within the noise. Each score is its own sum, so the order of
    // blocks changes no bit.
    if constexpr (simd::parts == 1) {
        constexpr std::size_t PerRun = std::max<std::size_t>(1, Blocks / 2);
        const std::size_t run = blocks / 2 / PerRun * PerRun;
        for (; b < run; b += PerRun) {
            score_blocks<Heads, PerRun, 2, Cache>(queries, query_stride, keys, head_dim, first_block + b, scale,
                                                  scores + b * reduction_lanes, scores_stride, run);
        }
        b = 2 * run;
    }
    for (; b + Blocks <= blocks; b += Blocks) {
        score_blocks<Heads, Blocks, 1, Cache>(queries, query_stride, keys, head_dim, first_block + b, scale,
                                              scores + b * reduction_lanes, scores_stride);
    }
    for (; b < blocks; ++b) {
        score_blocks<Heads, 1, 1, Cache>(queries, query_stride, keys, head_dim, first_block + b, scale,
                                         scores + b * reduction_lanes, scores_stride);
    }
}

// out_h[d] = sum_k weights[h * weights_stride + k] * value_k[d] for Heads heads (outputs
// head_dim apart), keys in ascending order; values rows `stride` apart. Vectors SIMD
// registers of each head's output stay in registers over all keys.
template <std::size_t Heads, std::size_t Vectors, DType Cache>
LOOM_ALWAYS_INLINE void weighted_values_block(const float* weights, std::size_t weights_stride, std::size_t count,
                                              const CacheElement<Cache>* values, std::size_t stride, float* out,
                                              std::size_t head_dim) noexcept {
    simd::Floats sums[Heads][Vectors];
    LOOM_UNROLL for (auto& head : sums) {
        LOOM_UNROLL for (auto& sum : head) sum = simd::broadcast(0.0f);
    }
    for (std::size_t k = 0; k < count; ++k) {
        simd::Floats value[Vectors];
        LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) {
            const CacheElement<Cache>* part = values + k * stride + v * simd::width;
            if ((v * simd::width * sizeof *part) % cache_line_bytes == 0) simd::prefetch(part + value_prefetch_rows * stride);
            value[v] = simd::load_widened<Cache>(reinterpret_cast<const std::byte*>(part));
            simd::hold_in_register(value[v]);
        }
        LOOM_UNROLL for (std::size_t h = 0; h < Heads; ++h) {
            const simd::Floats weight = simd::broadcast(weights[h * weights_stride + k]);
            LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) sums[h][v] = sums[h][v] + weight * value[v];
        }
    }
    LOOM_UNROLL for (std::size_t h = 0; h < Heads; ++h) {
        LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) simd::store(out + h * head_dim + v * simd::width, sums[h][v]);
    }
}

template <std::size_t Heads, DType Cache = DType::f32>
void weighted_values(const float* weights, std::size_t weights_stride, std::size_t count,
                     const CacheElement<Cache>* values, std::size_t stride, std::size_t head_dim, float* out) noexcept {
    // Heads x Vectors accumulators plus the loaded values fit the register file.
    constexpr std::size_t vectors = simd::parts == 1 ? 4 : 2;
    constexpr std::size_t block = vectors * simd::width;
    std::size_t d = 0;
    for (; d + block <= head_dim; d += block) {
        weighted_values_block<Heads, vectors, Cache>(weights, weights_stride, count, values + d, stride, out + d, head_dim);
    }
    for (; d + simd::width <= head_dim; d += simd::width) {
        weighted_values_block<Heads, 1, Cache>(weights, weights_stride, count, values + d, stride, out + d, head_dim);
    }
    for (; d < head_dim; ++d) {
        for (std::size_t h = 0; h < Heads; ++h) {
            float sum = 0.0f;
            for (std::size_t k = 0; k < count; ++k) {
                sum = sum + weights[h * weights_stride + k] *
                                load_as_f32(reinterpret_cast<const std::byte*>(values + k * stride + d), Cache, 0);
            }
            out[h * head_dim + d] = sum;
        }
    }
}

// Attention of Heads query heads that share one kv head, for the query at `position`:
// queries and out [Heads, head_dim]; keys: the kv head's [blocks, head_dim, 16]; values:
// position 0 of the kv head, rows kv_stride apart. Leaves each head's softmax weights in
// scores (rows score_row_length(first_key, position + 1) apart, see attention_scores).
template <std::size_t Heads, DType Cache = DType::f32>
void attend(const float* queries, const CacheElement<Cache>* keys, const CacheElement<Cache>* values, std::size_t kv_stride,
            std::size_t head_dim, std::size_t position, std::size_t sliding_window, float scale,
            std::vector<float>& scores, float* out) {
    const std::size_t first_key = detail::first_key(position, sliding_window);
    const std::size_t key_count = position + 1 - first_key;
    const std::size_t row = score_row_length(first_key, position + 1);
    const std::size_t skip = first_key - first_block_start(first_key);
    if (scores.size() < Heads * row) scores.resize(Heads * row);
    attention_scores<Heads, Cache>(queries, head_dim, keys, head_dim, first_key, position + 1, scale, scores.data(), row);
    // Each row has room up to its end (whole blocks), past the keys' own scores.
    for (std::size_t h = 0; h < Heads; ++h) softmax(scores.data() + h * row + skip, key_count, row - skip);
    weighted_values<Heads, Cache>(scores.data() + skip, row, key_count, values + first_key * kv_stride, kv_stride, head_dim,
                                  out);
}

// A prompt's later positions attend to more keys, so items in position order would give the
// thread with the last contiguous share most of the work (3x the first's for two threads).
// The n positions are taken as 0, n - 1, 1, n - 2, ...: contiguous shares then hold about
// the same number of keys. Each item writes only its own outputs, so the order changes no
// result.
inline std::size_t balanced_token(std::size_t slot, std::size_t tokens) noexcept {
    return slot % 2 == 0 ? slot / 2 : tokens - 1 - slot / 2;
}

}  // namespace detail

inline void causal_attention(std::span<const AttentionSequence> sequences, const AttentionShape& shape,
                             ThreadPool& pool) {
    const std::size_t head_dim = shape.head_dim;
    const std::size_t group = shape.query_heads / shape.kv_heads;
    const std::size_t kv_stride = shape.kv_heads * head_dim;
    const float scale = detail::attention_scale(head_dim);
    // One item: the query heads of one kv head at one position.
    std::size_t items = 0;
    for (const AttentionSequence& sequence : sequences) {
        const bool pending = sequence.new_key != nullptr;
        if (pending != (sequence.new_value != nullptr) || (pending && sequence.tokens != 1)) {
            throw argument_error("attention: a new key and value are stored for exactly one token, both given, got " +
                                 std::to_string(sequence.tokens) + " tokens");
        }
        check_cache_dtype(sequence.cache_dtype);
        items += sequence.tokens * shape.kv_heads;
    }
    pool.parallel_for(items, [&](std::size_t begin, std::size_t end) {
        thread_local std::vector<float> scores;
        std::size_t first_item = 0;  // of the current sequence
        auto sequence = sequences.begin();
        for (std::size_t item = begin; item < end; ++item) {
            while (item >= first_item + sequence->tokens * shape.kv_heads) {
                first_item += sequence->tokens * shape.kv_heads;
                ++sequence;
            }
            const std::size_t local = item - first_item;
            const std::size_t token = detail::balanced_token(local / shape.kv_heads, sequence->tokens);
            const std::size_t kv_head = local % shape.kv_heads;
            const std::size_t first_head = token * shape.query_heads + kv_head * group;
            with_cache_dtype(sequence->cache_dtype, [&](auto cache) {
                constexpr DType Cache = decltype(cache)::value;
                auto* keys = reinterpret_cast<CacheElement<Cache>*>(sequence->keys) +
                             kv_head * sequence->key_blocks * head_dim * reduction_lanes;
                auto* values = reinterpret_cast<CacheElement<Cache>*>(sequence->values) + kv_head * head_dim;
                if (sequence->new_key) {
                    store_position<Cache>(keys, values, kv_stride, sequence->first_position,
                                          sequence->new_key + kv_head * head_dim,
                                          sequence->new_value + kv_head * head_dim, head_dim);
                }
                detail::in_head_chunks(group, [&](std::size_t chunk, auto heads) {
                    const std::size_t offset = (first_head + chunk) * head_dim;
                    detail::attend<decltype(heads)::value, Cache>(sequence->queries + offset, keys, values, kv_stride,
                                                                  head_dim, sequence->first_position + token,
                                                                  shape.sliding_window, scale, scores,
                                                                  sequence->out + offset);
                });
            });
        }
    });
}

// Training: whole sequences held in plain [rows, heads, head_dim] buffers (no cache), the
// attention weights kept for the backward pass. Scores, softmax and weighted values are
// computed in the same order as causal_attention(), so the forward gives the same bits.
struct TrainingSequence {
    std::size_t first_row;  // of the batch; the sequence occupies positions 0 .. tokens-1
    std::size_t tokens;
};

// Offset of each sequence's attention weights: [query_heads, tokens, tokens] per sequence.
inline std::vector<std::size_t> attention_weight_offsets(std::span<const TrainingSequence> sequences,
                                                         std::size_t query_heads) {
    std::vector<std::size_t> offsets;
    std::size_t total = 0;
    for (const TrainingSequence& sequence : sequences) {
        offsets.push_back(total);
        total += query_heads * sequence.tokens * sequence.tokens;
    }
    offsets.push_back(total);
    return offsets;
}

// queries [rows, query_heads, head_dim], keys and values [rows, kv_heads, head_dim] ->
// out [rows, query_heads, head_dim]; weights: the softmax rows (see attention_weight_offsets).
inline void causal_attention_keeping(std::span<const TrainingSequence> sequences, const AttentionShape& shape,
                                     const float* queries, const float* keys, const float* values, float* weights,
                                     float* out, ThreadPool& pool) {
    const std::size_t head_dim = shape.head_dim;
    const std::size_t group = shape.query_heads / shape.kv_heads;
    const std::size_t q_stride = shape.query_heads * head_dim, kv_stride = shape.kv_heads * head_dim;
    const float scale = detail::attention_scale(head_dim);
    const std::vector<std::size_t> offsets = attention_weight_offsets(sequences, shape.query_heads);
    pool.parallel_for(sequences.size() * shape.kv_heads, [&](std::size_t begin, std::size_t end) {
        thread_local std::vector<float> key_blocks, scores;
        for (std::size_t item = begin; item < end; ++item) {
            const TrainingSequence& sequence = sequences[item / shape.kv_heads];
            const std::size_t kv_head = item % shape.kv_heads, tokens = sequence.tokens;
            const float* sequence_keys = keys + sequence.first_row * kv_stride + kv_head * head_dim;
            const float* sequence_values = values + sequence.first_row * kv_stride + kv_head * head_dim;
            // The keys in the KV cache's layout (blocks of 16 positions, transposed), so the
            // attention comes from the inference kernel itself.
            const std::size_t blocks = (tokens + reduction_lanes - 1) / reduction_lanes;
            key_blocks.assign(blocks * head_dim * reduction_lanes, 0.0f);
            for (std::size_t k = 0; k < tokens; ++k) {
                store_key_in_blocks(key_blocks.data(), k, sequence_keys + k * kv_stride, head_dim);
            }
            float* sequence_weights = weights + offsets[item / shape.kv_heads];
            for (std::size_t t = 0; t < tokens; ++t) {
                const std::size_t first = detail::first_key(t, shape.sliding_window);
                const std::size_t row = detail::score_row_length(first, t + 1);
                const std::size_t skip = first - detail::first_block_start(first);
                detail::in_head_chunks(group, [&](std::size_t chunk, auto heads) {
                    constexpr std::size_t H = decltype(heads)::value;
                    const std::size_t head = kv_head * group + chunk;
                    const std::size_t offset = (sequence.first_row + t) * q_stride + head * head_dim;
                    detail::attend<H>(queries + offset, key_blocks.data(), sequence_values, kv_stride, head_dim, t,
                                      shape.sliding_window, scale, scores, out + offset);
                    for (std::size_t h = 0; h < H; ++h) {
                        float* weight_row = sequence_weights + ((head + h) * tokens + t) * tokens;
                        std::fill(weight_row, weight_row + tokens, 0.0f);
                        std::copy_n(scores.data() + h * row + skip, t + 1 - first, weight_row + first);
                    }
                });
            }
        }
    });
}

namespace detail {

// The backward steps of Heads query heads sharing one kv head, for one query position t,
// keys [first, end), the heads' rows `head_dim` apart (queries, dout, dquery) and the
// keys' rows `stride` apart. Each key's dvalue and dkey are read and written once for all
// the heads, which add their terms in head order; a block of Vectors registers of each
// head's dquery stays in registers over the keys.
template <std::size_t Heads, std::size_t Vectors>
LOOM_ALWAYS_INLINE void attention_gradients_block(const float* weights, std::size_t weights_stride,
                                                  const float* dscores, std::size_t dscores_stride, std::size_t first,
                                                  std::size_t end, const float* keys, float* dkeys, float* dvalues,
                                                  std::size_t stride, const float* queries, const float* dout,
                                                  float* dqueries, std::size_t head_dim) noexcept {
    using simd::Floats;
    {  // d value_k += weight[k] * dout, head by head
        Floats gradient[Heads][Vectors];
        LOOM_UNROLL for (std::size_t h = 0; h < Heads; ++h) {
            LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) {
                gradient[h][v] = simd::load(dout + h * head_dim + v * simd::width);
            }
        }
        for (std::size_t k = first; k < end; ++k) {
            float* dvalue = dvalues + k * stride;
            LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) {
                Floats sum = simd::load(dvalue + v * simd::width);
                LOOM_UNROLL for (std::size_t h = 0; h < Heads; ++h) {
                    sum = sum + simd::broadcast(weights[h * weights_stride + k - first]) * gradient[h][v];
                }
                simd::store(dvalue + v * simd::width, sum);
            }
        }
    }
    // dquery = sum over k of dscore[k] * key_k; d key_k += dscore[k] * query, head by head
    Floats sums[Heads][Vectors], query[Heads][Vectors];
    LOOM_UNROLL for (std::size_t h = 0; h < Heads; ++h) {
        LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) {
            sums[h][v] = simd::broadcast(0.0f);
            query[h][v] = simd::load(queries + h * head_dim + v * simd::width);
        }
    }
    for (std::size_t k = first; k < end; ++k) {
        float* dkey = dkeys + k * stride;
        LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) {
            const Floats key = simd::load(keys + k * stride + v * simd::width);
            Floats sum = simd::load(dkey + v * simd::width);
            LOOM_UNROLL for (std::size_t h = 0; h < Heads; ++h) {
                const Floats dscore = simd::broadcast(dscores[h * dscores_stride + k - first]);
                sums[h][v] = sums[h][v] + dscore * key;
                sum = sum + dscore * query[h][v];
            }
            simd::store(dkey + v * simd::width, sum);
        }
    }
    LOOM_UNROLL for (std::size_t h = 0; h < Heads; ++h) {
        LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) {
            simd::store(dqueries + h * head_dim + v * simd::width, sums[h][v]);
        }
    }
}

// attention_gradients_block over the whole head dimension: weights and dscores rows hold
// keys [first, end) from their start; keys, dkeys and dvalues point at key 0 of the kv head.
template <std::size_t Heads>
void attention_gradients(const float* weights, std::size_t weights_stride, const float* dscores,
                         std::size_t dscores_stride, std::size_t first, std::size_t end, const float* keys,
                         float* dkeys, float* dvalues, std::size_t stride, const float* queries, const float* dout,
                         float* dqueries, std::size_t head_dim) noexcept {
    // Both loops keep Heads x Vectors registers twice, plus the loads.
    constexpr std::size_t vectors = simd::parts == 1 ? (Heads <= 3 ? 4 : 2) : 1;
    constexpr std::size_t block = vectors * simd::width;
    std::size_t d = 0;
    for (; d + block <= head_dim; d += block) {
        attention_gradients_block<Heads, vectors>(weights, weights_stride, dscores, dscores_stride, first, end, keys + d,
                                                  dkeys + d, dvalues + d, stride, queries + d, dout + d, dqueries + d,
                                                  head_dim);
    }
    for (; d + simd::width <= head_dim; d += simd::width) {
        attention_gradients_block<Heads, 1>(weights, weights_stride, dscores, dscores_stride, first, end, keys + d,
                                            dkeys + d, dvalues + d, stride, queries + d, dout + d, dqueries + d,
                                            head_dim);
    }
    for (; d < head_dim; ++d) {
        for (std::size_t k = first; k < end; ++k) {
            float value = dvalues[k * stride + d], key = dkeys[k * stride + d];
            for (std::size_t h = 0; h < Heads; ++h) {
                value = value + weights[h * weights_stride + k - first] * dout[h * head_dim + d];
                key = key + dscores[h * dscores_stride + k - first] * queries[h * head_dim + d];
            }
            dvalues[k * stride + d] = value;
            dkeys[k * stride + d] = key;
        }
        for (std::size_t h = 0; h < Heads; ++h) {
            float sum = 0.0f;
            for (std::size_t k = first; k < end; ++k) {
                sum = sum + dscores[h * dscores_stride + k - first] * keys[k * stride + d];
            }
            dqueries[h * head_dim + d] = sum;
        }
    }
}

}  // namespace detail

// Backward of causal_attention_keeping(): from dout [rows, query_heads, head_dim] to dqueries,
// dkeys and dvalues (overwritten). A task owns one key/value head of one sequence and
// visits its positions in order, the query heads of each position in order, so every sum
// has one fixed order.
inline void causal_attention_backward(std::span<const TrainingSequence> sequences, const AttentionShape& shape,
                                      const float* queries, const float* keys, const float* values,
                                      const float* weights, const float* dout, float* dqueries, float* dkeys,
                                      float* dvalues, ThreadPool& pool) {
    const std::size_t head_dim = shape.head_dim;
    const std::size_t group = shape.query_heads / shape.kv_heads;
    const std::size_t q_stride = shape.query_heads * head_dim, kv_stride = shape.kv_heads * head_dim;
    const float scale = detail::attention_scale(head_dim);
    const std::vector<std::size_t> offsets = attention_weight_offsets(sequences, shape.query_heads);
    pool.parallel_for(sequences.size() * shape.kv_heads, [&](std::size_t begin, std::size_t end) {
        thread_local std::vector<float> dscores, value_blocks;
        for (std::size_t item = begin; item < end; ++item) {
            const TrainingSequence& sequence = sequences[item / shape.kv_heads];
            const std::size_t kv_head = item % shape.kv_heads, tokens = sequence.tokens;
            const std::size_t kv_base = sequence.first_row * kv_stride + kv_head * head_dim;
            // The values in the key cache's layout: d weight[k] = dout . value_k for 16 keys
            // per accumulator, like the scores of the forward pass.
            const std::size_t blocks = (tokens + reduction_lanes - 1) / reduction_lanes;
            value_blocks.assign(blocks * head_dim * reduction_lanes, 0.0f);
            for (std::size_t k = 0; k < tokens; ++k) {
                store_key_in_blocks(value_blocks.data(), k, values + kv_base + k * kv_stride, head_dim);
                std::fill_n(dkeys + kv_base + k * kv_stride, head_dim, 0.0f);
                std::fill_n(dvalues + kv_base + k * kv_stride, head_dim, 0.0f);
            }
            const std::size_t row_length = blocks * reduction_lanes;
            dscores.resize(detail::heads_at_once * row_length);
            const float* sequence_weights = weights + offsets[item / shape.kv_heads];
            for (std::size_t t = 0; t < tokens; ++t) {
                const std::size_t first = detail::first_key(t, shape.sliding_window), count = t + 1 - first;
                const std::size_t skip = first - detail::first_block_start(first);
                detail::in_head_chunks(group, [&](std::size_t chunk, auto heads) {
                    constexpr std::size_t H = decltype(heads)::value;
                    const std::size_t head = kv_head * group + chunk;
                    const std::size_t q_offset = (sequence.first_row + t) * q_stride + head * head_dim;
                    // d weight[k] = dout . value_k, at dscores[h * row_length + skip + k - first].
                    detail::attention_scores<H>(dout + q_offset, head_dim, value_blocks.data(), head_dim, first, t + 1,
                                                1.0f, dscores.data(), row_length);
                    // Through the softmax: d score[k] = weight[k] * (d weight[k] - sum_j weight[j] d weight[j]).
                    const float* first_weights = sequence_weights + (head * tokens + t) * tokens + first;
                    for (std::size_t h = 0; h < H; ++h) {
                        const float* row = first_weights + h * tokens * tokens;
                        float* dscore = dscores.data() + h * row_length + skip;
                        const float mean = dot(row, dscore, count);
                        for (std::size_t j = 0; j < count; ++j) dscore[j] = row[j] * (dscore[j] - mean) * scale;
                    }
                    // Through the weighted sum and the scaled dot products.
                    detail::attention_gradients<H>(first_weights, tokens * tokens, dscores.data() + skip, row_length, first,
                                                   t + 1, keys + kv_base, dkeys + kv_base, dvalues + kv_base, kv_stride,
                                                   queries + q_offset, dout + q_offset, dqueries + q_offset, head_dim);
                });
            }
        }
    });
}

}  // namespace loom::kernels
