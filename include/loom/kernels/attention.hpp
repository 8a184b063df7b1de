#pragma once
// Causal grouped-query attention over KV caches. For each query position and head:
//   score[k] = (sum over d in plain order of q[d] * key_k[d]) * scale, 16 keys per SIMD
//              accumulator (one key per lane, so the order is the same on every target);
//   softmax over the keys in ascending position order (ops.hpp);
//   out[d]   = sum over k in ascending position order of weight[k] * value_k[d].
// Nothing depends on the batch, the thread count or how the prompt was split into calls,
// so a token's output is the same in prefill, token by token, or next to other sequences.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

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
    const float* keys;           // [kv_heads, key_blocks, head_dim, 16], filled up to the last query's position
    const float* values;         // [capacity, kv_heads, head_dim]
    std::size_t key_blocks;      // blocks of 16 positions per head
    float* out;                  // [tokens, query_heads, head_dim]
};

namespace detail {

// scores[k] = (q . key(first_key + k)) * scale for k < count; keys: one head's
// [blocks, head_dim, 16]. Positions of a block before first_key are computed and dropped.
inline void attention_scores(const float* query, const float* keys, std::size_t head_dim, std::size_t first_key,
                             std::size_t count, float scale, float* scores) noexcept {
    const simd::Floats scale_lanes = simd::broadcast(scale);
    const std::size_t end = first_key + count;
    for (std::size_t block_start = first_key - first_key % reduction_lanes; block_start < end;
         block_start += reduction_lanes) {
        const float* block = keys + (block_start / reduction_lanes) * head_dim * reduction_lanes;
        simd::Lanes16 sums = simd::zero16();
        for (std::size_t d = 0; d < head_dim; ++d) {
            const simd::Floats q = simd::broadcast(query[d]);
            LOOM_UNROLL for (std::size_t p = 0; p < simd::parts; ++p) {
                sums.part[p] = sums.part[p] + q * simd::load(block + d * reduction_lanes + p * simd::width);
            }
        }
        LOOM_UNROLL for (std::size_t p = 0; p < simd::parts; ++p) sums.part[p] = sums.part[p] * scale_lanes;
        alignas(64) float lanes[reduction_lanes];
        simd::store16(lanes, sums);
        const std::size_t first = std::max(block_start, first_key), last = std::min(block_start + reduction_lanes, end);
        std::copy(lanes + (first - block_start), lanes + (last - block_start), scores + (first - first_key));
    }
}

// out[d] = sum_k weights[k] * value_k[d], keys in ascending order; values rows `stride`
// apart. A block of `Vectors` SIMD registers of out stays in registers over all keys.
template <std::size_t Vectors>
inline void weighted_values_block(const float* weights, std::size_t count, const float* values, std::size_t stride,
                                  float* out) noexcept {
    simd::Floats sums[Vectors];
    LOOM_UNROLL for (auto& sum : sums) sum = simd::broadcast(0.0f);
    for (std::size_t k = 0; k < count; ++k) {
        const simd::Floats weight = simd::broadcast(weights[k]);
        const float* value = values + k * stride;
        LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) {
            sums[v] = sums[v] + weight * simd::load(value + v * simd::width);
        }
    }
    LOOM_UNROLL for (std::size_t v = 0; v < Vectors; ++v) simd::store(out + v * simd::width, sums[v]);
}

inline void weighted_values(const float* weights, std::size_t count, const float* values, std::size_t stride,
                            std::size_t head_dim, float* out) noexcept {
    constexpr std::size_t block = 4 * simd::width;
    std::size_t d = 0;
    for (; d + block <= head_dim; d += block) weighted_values_block<4>(weights, count, values + d, stride, out + d);
    for (; d + simd::width <= head_dim; d += simd::width) {
        weighted_values_block<1>(weights, count, values + d, stride, out + d);
    }
    for (; d < head_dim; ++d) {
        float sum = 0.0f;
        for (std::size_t k = 0; k < count; ++k) sum = sum + weights[k] * values[k * stride + d];
        out[d] = sum;
    }
}

}  // namespace detail

inline void causal_attention(std::span<const AttentionSequence> sequences, const AttentionShape& shape,
                             ThreadPool& pool) {
    const std::size_t head_dim = shape.head_dim;
    const std::size_t group = shape.query_heads / shape.kv_heads;
    const std::size_t kv_stride = shape.kv_heads * head_dim;
    const float scale = float(1.0 / std::sqrt(double(head_dim)));
    std::size_t items = 0;
    for (const AttentionSequence& sequence : sequences) items += sequence.tokens * shape.query_heads;
    pool.parallel_for(items, [&](std::size_t begin, std::size_t end) {
        thread_local std::vector<float> scores;
        std::size_t first_item = 0;  // of the current sequence
        auto sequence = sequences.begin();
        for (std::size_t item = begin; item < end; ++item) {
            while (item >= first_item + sequence->tokens * shape.query_heads) {
                first_item += sequence->tokens * shape.query_heads;
                ++sequence;
            }
            const std::size_t local = item - first_item;
            const std::size_t token = local / shape.query_heads;
            const std::size_t head = local % shape.query_heads;
            const std::size_t kv_head = head / group;
            const std::size_t position = sequence->first_position + token;
            const std::size_t first_key =
                shape.sliding_window && position + 1 > shape.sliding_window ? position + 1 - shape.sliding_window : 0;
            const std::size_t key_count = position + 1 - first_key;
            scores.resize(key_count);
            detail::attention_scores(sequence->queries + local * head_dim,
                                     sequence->keys + kv_head * sequence->key_blocks * head_dim * reduction_lanes,
                                     head_dim, first_key, key_count, scale, scores.data());
            softmax(scores.data(), key_count);
            detail::weighted_values(scores.data(), key_count,
                                    sequence->values + first_key * kv_stride + kv_head * head_dim, kv_stride,
                                    head_dim, sequence->out + local * head_dim);
        }
    });
}

}  // namespace loom::kernels
