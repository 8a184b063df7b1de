#pragma once
// Multi-head self-attention with grouped key/value heads (GQA), rotary positions and an
// optional sliding window, for a batch of sequences whose rows are concatenated: the
// projections run once over all rows, each sequence attends to its own KV cache.
#include <cstddef>
#include <span>
#include <vector>

#include "loom/core/aligned.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/attention.hpp"
#include "loom/kernels/matmul.hpp"
#include "loom/nn/kv_cache.hpp"
#include "loom/nn/gradient.hpp"
#include "loom/nn/linear.hpp"
#include "loom/nn/rope.hpp"

namespace loom::nn {

static_assert(KVCache::key_block == kernels::reduction_lanes, "the attention kernel reads keys in blocks of 16 positions");

// What a training forward keeps for the backward pass.
struct AttentionActivations {
    AlignedVector<float> queries, keys, values;  // [rows, heads * head_dim], queries and keys rotated
    AlignedVector<float> weights;                // softmax rows, kernels::attention_weight_offsets
    AlignedVector<float> mixed;                  // [rows, query_heads * head_dim], the input of output
};

struct AttentionBackwardScratch {
    AlignedVector<float> dmixed, dqueries, dkeys, dvalues, dx_part;
};

struct AttentionScratch {
    AlignedVector<float> queries, keys, values, mixed;  // [rows, heads * head_dim] each
    std::vector<kernels::AttentionSequence> sequences;
};

// Rows first_row .. first_row + tokens - 1 of a batch belong to the sequence whose cache
// this is, at positions cache->length() ...
struct SequenceRows {
    KVCache* cache;
    std::size_t first_row;
    std::size_t tokens;
};

struct Attention {
    Linear query, key, value, output;
    kernels::AttentionShape shape;

    // x: [rows, hidden] (already normalised); cosines/sines: [rows, head_dim / 2] per row's
    // position; out: [rows, hidden]. Writes the new keys and values into each cache but
    // does not advance it; the model does after all layers.
    void forward(const float* x, std::size_t rows, std::span<const SequenceRows> batch, const RotaryEmbedding& rope,
                 const float* cosines, const float* sines, std::size_t layer, AttentionScratch& scratch, float* out,
                 ThreadPool& pool) const {
        const std::size_t q_width = shape.query_heads * shape.head_dim;
        const std::size_t kv_width = shape.kv_heads * shape.head_dim;
        scratch.queries.resize(rows * q_width);
        scratch.keys.resize(rows * kv_width);
        scratch.values.resize(rows * kv_width);
        scratch.mixed.resize(rows * q_width);

        const kernels::Product projections[] = {query.product(scratch.queries.data()), key.product(scratch.keys.data()),
                                                value.product(scratch.values.data())};
        kernels::matmul_group(x, rows, projections, pool);
        const std::size_t half = rope.half();
        for_row_blocks(pool, rows, parallel_row_steps_from, [&](std::size_t begin, std::size_t end) {
            rope.apply(scratch.queries.data() + begin * q_width, end - begin, shape.query_heads, cosines + begin * half,
                       sines + begin * half);
            rope.apply(scratch.keys.data() + begin * kv_width, end - begin, shape.kv_heads, cosines + begin * half,
                       sines + begin * half);
        });

        // A prompt's rows attend to each other's keys, so they are all stored first; a single
        // decoding token's key and value are stored by the attention kernel's own items.
        scratch.sequences.clear();
        for (const SequenceRows& sequence : batch) {
            KVCache& cache = *sequence.cache;
            const float* keys = scratch.keys.data() + sequence.first_row * kv_width;
            const float* values = scratch.values.data() + sequence.first_row * kv_width;
            const bool decoding = sequence.tokens == 1;
            if (!decoding) cache.store(layer, cache.length(), sequence.tokens, keys, values);
            scratch.sequences.push_back({scratch.queries.data() + sequence.first_row * q_width, sequence.tokens,
                                         cache.length(), cache.keys(layer), cache.values(layer), cache.dtype(), cache.key_blocks(),
                                         scratch.mixed.data() + sequence.first_row * q_width, decoding ? keys : nullptr,
                                         decoding ? values : nullptr});
        }
        kernels::causal_attention(scratch.sequences, shape, pool);
        output.forward(scratch.mixed.data(), rows, out, pool);
    }

    // forward() over whole sequences without a cache (each starts at position 0), keeping
    // the activations backward() needs. Same bits as forward() on the same rows.
    void forward_keeping(const float* x, std::size_t rows, std::span<const kernels::TrainingSequence> sequences,
                         const RotaryEmbedding& rope, const float* cosines, const float* sines,
                         AttentionActivations& saved, float* out, ThreadPool& pool) const {
        const std::size_t q_width = shape.query_heads * shape.head_dim;
        const std::size_t kv_width = shape.kv_heads * shape.head_dim;
        saved.queries.resize(rows * q_width);
        saved.keys.resize(rows * kv_width);
        saved.values.resize(rows * kv_width);
        saved.mixed.resize(rows * q_width);
        saved.weights.resize(kernels::attention_weight_offsets(sequences, shape.query_heads).back());
        const kernels::Product projections[] = {query.product(saved.queries.data()), key.product(saved.keys.data()),
                                                value.product(saved.values.data())};
        kernels::matmul_group(x, rows, projections, pool);
        rope.apply(saved.queries.data(), rows, shape.query_heads, cosines, sines);
        rope.apply(saved.keys.data(), rows, shape.kv_heads, cosines, sines);
        kernels::causal_attention_keeping(sequences, shape, saved.queries.data(), saved.keys.data(),
                                          saved.values.data(), saved.weights.data(), saved.mixed.data(), pool);
        output.forward(saved.mixed.data(), rows, out, pool);
    }

    // Backward of forward_keeping(): dx [rows, hidden] from dout [rows, hidden].
    void backward(const float* x, std::size_t rows, std::span<const kernels::TrainingSequence> sequences,
                  const RotaryEmbedding& rope, const float* cosines, const float* sines,
                  const AttentionActivations& saved, const float* dout, float* dx, const GradientOf& gradient_of,
                  AttentionBackwardScratch& scratch, ThreadPool& pool) const {
        const std::size_t q_width = shape.query_heads * shape.head_dim;
        const std::size_t kv_width = shape.kv_heads * shape.head_dim;
        const std::size_t hidden = query.in_features();
        scratch.dmixed.resize(rows * q_width);
        scratch.dqueries.resize(rows * q_width);
        scratch.dkeys.resize(rows * kv_width);
        scratch.dvalues.resize(rows * kv_width);
        scratch.dx_part.resize(rows * hidden);
        output.backward(saved.mixed.data(), rows, dout, scratch.dmixed.data(), gradient_of, pool);
        kernels::causal_attention_backward(sequences, shape, saved.queries.data(), saved.keys.data(),
                                           saved.values.data(), saved.weights.data(), scratch.dmixed.data(),
                                           scratch.dqueries.data(), scratch.dkeys.data(), scratch.dvalues.data(), pool);
        rope.apply_backward(scratch.dqueries.data(), rows, shape.query_heads, cosines, sines);
        rope.apply_backward(scratch.dkeys.data(), rows, shape.kv_heads, cosines, sines);
        query.backward(x, rows, scratch.dqueries.data(), dx, gradient_of, pool);
        key.backward(x, rows, scratch.dkeys.data(), scratch.dx_part.data(), gradient_of, pool);
        kernels::add_in_place(dx, scratch.dx_part.data(), rows * hidden);
        value.backward(x, rows, scratch.dvalues.data(), scratch.dx_part.data(), gradient_of, pool);
        kernels::add_in_place(dx, scratch.dx_part.data(), rows * hidden);
    }
};

}  // namespace loom::nn
