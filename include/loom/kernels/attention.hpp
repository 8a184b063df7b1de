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

// Writes one key into a head's blocks of the layout above: position p lands in block p / 16,
// as element [d][p % 16] of that block's [head_dim, 16] (16 keys fill one accumulator).
inline void store_key_in_blocks(float* head_blocks, std::size_t position, const float* key, std::size_t head_dim) noexcept {
    float* block = head_blocks + (position / reduction_lanes) * head_dim * reduction_lanes + position % reduction_lanes;
    for (std::size_t d = 0; d < head_dim; ++d) block[d * reduction_lanes] = key[d];
}

namespace detail {

// Scores are scaled by 1/sqrt(head_dim), computed in double and rounded once: inference
// and training use this one value, so their forward passes give the same bits.
inline float attention_scale(std::size_t head_dim) noexcept { return float(1.0 / std::sqrt(double(head_dim))); }

// The keys a query at `position` attends to: [first, position].
inline std::size_t first_key(std::size_t position, std::size_t sliding_window) noexcept {
    return sliding_window && position + 1 > sliding_window ? position + 1 - sliding_window : 0;
}

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
    const float scale = detail::attention_scale(head_dim);
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
            const std::size_t first_key = detail::first_key(position, shape.sliding_window);
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
    pool.parallel_for(sequences.size() * shape.query_heads, [&](std::size_t begin, std::size_t end) {
        thread_local std::vector<float> key_blocks;
        for (std::size_t item = begin; item < end; ++item) {
            const TrainingSequence& sequence = sequences[item / shape.query_heads];
            const std::size_t head = item % shape.query_heads, kv_head = head / group, tokens = sequence.tokens;
            const float* sequence_keys = keys + sequence.first_row * kv_stride + kv_head * head_dim;
            const float* sequence_values = values + sequence.first_row * kv_stride + kv_head * head_dim;
            // The keys in the KV cache's layout (blocks of 16 positions, transposed), so the
            // scores come from the inference kernel itself: 16 keys per accumulator instead
            // of one latency-bound sum per key.
            const std::size_t blocks = (tokens + reduction_lanes - 1) / reduction_lanes;
            key_blocks.assign(blocks * head_dim * reduction_lanes, 0.0f);
            for (std::size_t k = 0; k < tokens; ++k) {
                store_key_in_blocks(key_blocks.data(), k, sequence_keys + k * kv_stride, head_dim);
            }
            for (std::size_t t = 0; t < tokens; ++t) {
                float* row = weights + offsets[item / shape.query_heads] + (head * tokens + t) * tokens;
                const float* query = queries + (sequence.first_row + t) * q_stride + head * head_dim;
                const std::size_t first = detail::first_key(t, shape.sliding_window);
                std::fill(row, row + tokens, 0.0f);
                detail::attention_scores(query, key_blocks.data(), head_dim, first, t + 1 - first, scale, row + first);
                softmax(row + first, t + 1 - first);
                detail::weighted_values(row + first, t + 1 - first, sequence_values + first * kv_stride, kv_stride,
                                        head_dim, out + (sequence.first_row + t) * q_stride + head * head_dim);
            }
        }
    });
}

// Backward of causal_attention_keeping(): from dout [rows, query_heads, head_dim] to dqueries,
// dkeys and dvalues (overwritten). A task owns one key/value head of one sequence and
// visits its query heads and positions in order, so every sum has one fixed order.
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
        thread_local std::vector<float> dscores, dquery;
        for (std::size_t item = begin; item < end; ++item) {
            const TrainingSequence& sequence = sequences[item / shape.kv_heads];
            const std::size_t kv_head = item % shape.kv_heads, tokens = sequence.tokens;
            const std::size_t kv_base = sequence.first_row * kv_stride + kv_head * head_dim;
            for (std::size_t k = 0; k < tokens; ++k) {
                std::fill_n(dkeys + kv_base + k * kv_stride, head_dim, 0.0f);
                std::fill_n(dvalues + kv_base + k * kv_stride, head_dim, 0.0f);
            }
            dscores.resize(tokens);
            dquery.resize(head_dim);
            for (std::size_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
                for (std::size_t t = 0; t < tokens; ++t) {
                    const float* row = weights + offsets[item / shape.kv_heads] + (head * tokens + t) * tokens;
                    const std::size_t q_offset = (sequence.first_row + t) * q_stride + head * head_dim;
                    const float* query = queries + q_offset;
                    const float* gradient = dout + q_offset;
                    const std::size_t first = detail::first_key(t, shape.sliding_window);
                    // Through the weighted sum: d weight[k] = dout . value_k; d value_k += weight[k] * dout.
                    for (std::size_t k = first; k <= t; ++k) {
                        const float* value = values + kv_base + k * kv_stride;
                        float* dvalue = dvalues + kv_base + k * kv_stride;
                        dscores[k] = dot(gradient, value, head_dim);
                        for (std::size_t d = 0; d < head_dim; ++d) dvalue[d] = dvalue[d] + row[k] * gradient[d];
                    }
                    // Through the softmax: d score[k] = weight[k] * (d weight[k] - sum_j weight[j] d weight[j]).
                    const float mean = dot(row + first, dscores.data() + first, t + 1 - first);
                    for (std::size_t k = first; k <= t; ++k) dscores[k] = row[k] * (dscores[k] - mean) * scale;
                    // Through the scaled dot products.
                    std::fill(dquery.begin(), dquery.end(), 0.0f);
                    for (std::size_t k = first; k <= t; ++k) {
                        const float* key = keys + kv_base + k * kv_stride;
                        float* dkey = dkeys + kv_base + k * kv_stride;
                        for (std::size_t d = 0; d < head_dim; ++d) {
                            dquery[d] = dquery[d] + dscores[k] * key[d];
                            dkey[d] = dkey[d] + dscores[k] * query[d];
                        }
                    }
                    std::copy(dquery.begin(), dquery.end(), dqueries + q_offset);
                }
            }
        }
    });
}

}  // namespace loom::kernels
