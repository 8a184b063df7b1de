#pragma once
// The LLaMA decoder: LlamaForCausalLM (SmolLM2, TinyLlama, Llama 3.x), and the two
// families that differ from it only in configuration:
//   Qwen2ForCausalLM   = LLaMA + biases on the q/k/v projections;
//   MistralForCausalLM = LLaMA + an optional sliding attention window.
// io::parse_model_config resolves those differences into flags, so one forward serves all.
#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "loom/core/aligned.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/io/hf_config.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/models/weight_loader.hpp"
#include "loom/nn/attention.hpp"
#include "loom/nn/embedding.hpp"
#include "loom/nn/kv_cache.hpp"
#include "loom/nn/linear.hpp"
#include "loom/nn/mlp.hpp"
#include "loom/nn/rmsnorm.hpp"
#include "loom/nn/rope.hpp"
#include "loom/trace/recorder.hpp"

namespace loom::models {

struct DecoderLayer {
    nn::RMSNorm input_norm;
    nn::Attention attention;
    nn::RMSNorm post_attention_norm;
    nn::SwiGLU mlp;
};

// Activation buffers of one forward call, grown to the largest batch seen and then
// reused, so decoding allocates nothing.
struct ForwardScratch {
    AlignedVector<float> hidden;           // [rows, hidden] the residual stream
    AlignedVector<float> normed;           // [rows, hidden]
    AlignedVector<float> branch;           // [rows, hidden] attention or MLP output before the residual add
    std::vector<float> cosines, sines;     // [rows, head_dim / 2] rotary angles of each row's position
    AlignedVector<float> head_input;       // [logit rows, hidden]
    std::vector<nn::SequenceRows> batch;
    nn::AttentionScratch attention;
    nn::MlpScratch mlp;
};

// Everything one sequence needs between calls: its KV cache (and, for the one-sequence
// forward, its scratch buffers).
struct SequenceState {
    nn::KVCache cache;
    ForwardScratch scratch;

    std::size_t position() const noexcept { return cache.length(); }
};

enum class LogitRows { last, all };

// One sequence's share of a batched forward call.
struct BatchEntry {
    std::span<const int> tokens;
    SequenceState* sequence;
    LogitRows rows = LogitRows::last;
};

class Llama {
public:
    Llama(io::ModelConfig config, io::TensorStore store) : config_(std::move(config)), store_(std::move(store)) {
        load_weights();
    }

    // The weights point into the store; copying would leave them pointing at the old one.
    Llama(const Llama&) = delete;
    Llama& operator=(const Llama&) = delete;

    const io::ModelConfig& config() const noexcept { return config_; }
    const io::TensorStore& weights() const noexcept { return store_; }

    // The blocks, for passes other than inference (training runs them with saved activations).
    const nn::Embedding& embedding() const noexcept { return embed_tokens_; }
    std::span<const DecoderLayer> layers() const noexcept { return layers_; }
    const nn::RMSNorm& final_norm() const noexcept { return norm_; }
    const nn::Linear& head() const noexcept { return lm_head_; }
    const nn::RotaryEmbedding& rope() const noexcept { return rope_; }

    // The element type of the KV caches of sequences made (or restarted) from now on: f32
    // (the default: the same arithmetic as a PyTorch run in f32) or f16 (half the memory and
    // half the bytes each decoding step reads; see nn/kv_cache.hpp).
    void set_cache_dtype(DType dtype) {
        kernels::check_cache_dtype(dtype);
        cache_dtype_ = dtype;
    }
    DType cache_dtype() const noexcept { return cache_dtype_; }

    // A fresh sequence able to hold `context` positions.
    SequenceState new_sequence(std::size_t context) const {
        SequenceState state;
        state.cache = new_cache(context);
        return state;
    }

    // Readies `state` for a new sequence of `context` positions, keeping its buffers when
    // they are large enough and of this model's shape and cache type: a new prompt then writes into memory
    // the process already holds. Fresh buffers often come from the operating system page by
    // page (measured on Zen 5, SmolLM2-135M, a 128-token prompt generating one token, call
    // after call: 2,270 page faults per call, and prefill 1.16x faster with one reused state).
    //
    // `keep`: the first positions of the cache that the new sequence shares with the old one
    // (the same tokens, run by these weights). They stay, copied into larger buffers when
    // the old ones are too small: their keys and values are what running those tokens again
    // would store, bit for bit (the forward does not depend on how a sequence was split
    // into calls). Returns the positions kept.
    std::size_t restart(SequenceState& state, std::size_t context, std::size_t keep = 0) const {
        check_context(context);  // before the old cache goes: a refused restart leaves the state as it was
        const nn::KVCache& cache = state.cache;
        if (cache.layers() == config_.num_hidden_layers && cache.kv_heads() == config_.num_key_value_heads &&
            cache.head_dim() == config_.head_dim && cache.dtype() == cache_dtype_) {
            const std::size_t kept = std::min({keep, cache.length(), context});
            if (cache.capacity() >= context) {
                state.cache.truncate(kept);
                return kept;
            }
            if (kept > 0) {
                state.cache = cache.with_capacity(context, kept);
                return kept;
            }
        }
        state.cache = nn::KVCache();  // the old buffers go before the new ones are taken
        state.cache = new_cache(context);
        return 0;
    }

    // Runs `tokens` at the next positions of `state` and appends them to its cache.
    // logits: [tokens, vocab] for LogitRows::all, [1, vocab] (the last token) for ::last.
    // A recorder, when given, receives every stage's output (see trace/recorder.hpp).
    void forward(std::span<const int> tokens, SequenceState& state, LogitRows rows, xt::xtensor<float, 2>& logits,
                 ThreadPool& pool, trace::Recorder* recorder = nullptr) const {
        const BatchEntry entry{tokens, &state, rows};
        forward(std::span<const BatchEntry>(&entry, 1), state.scratch, logits, pool, recorder);
    }

    // Several sequences in one pass: their rows are concatenated, every matrix product
    // reads the weights once for all of them, and each sequence attends to its own cache.
    // A sequence's logits are bit-identical to running it alone. logits: the rows each
    // entry asks for, entry after entry. A recorder sees the concatenated rows.
    void forward(std::span<const BatchEntry> entries, ForwardScratch& scratch, xt::xtensor<float, 2>& logits,
                 ThreadPool& pool, trace::Recorder* recorder = nullptr) const {
        const std::size_t hidden = config_.hidden_size;
        std::size_t count = 0, logit_rows = 0;
        for (const BatchEntry& entry : entries) {
            if (entry.tokens.empty()) throw argument_error("forward needs at least one token per sequence");
            for (const BatchEntry& other : entries) {
                if (&other != &entry && other.sequence == entry.sequence) {
                    throw argument_error("a sequence can appear only once in a batch");
                }
            }
            entry.sequence->cache.check_room(entry.tokens.size());
            count += entry.tokens.size();
            logit_rows += entry.rows == LogitRows::all ? entry.tokens.size() : 1;
        }
        if (count == 0) throw argument_error("forward needs at least one token");
        scratch.hidden.resize(count * hidden);
        scratch.normed.resize(count * hidden);
        scratch.branch.resize(count * hidden);
        prepare_rows(entries, count, scratch);
        float* x = scratch.hidden.data();
        auto tap = [&](auto&& stage, const float* data, std::size_t rows_recorded, std::size_t columns) {
            if (recorder) recorder->record(stage, data, rows_recorded, columns);
        };

        std::size_t first_row = 0;
        for (const BatchEntry& entry : entries) {
            embed_tokens_.forward(entry.tokens.data(), entry.tokens.size(), x + first_row * hidden);
            first_row += entry.tokens.size();
        }
        tap("embedding", x, count, hidden);
        float* normed = scratch.normed.data();
        float* branch = scratch.branch.data();
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            const DecoderLayer& layer = layers_[l];
            for_row_blocks(pool, count, parallel_row_steps_from, [&](std::size_t begin, std::size_t end) {
                layer.input_norm.forward(x + begin * hidden, end - begin, normed + begin * hidden);
            });
            if (recorder) tap(trace::layer_stage(l, "input_norm"), normed, count, hidden);
            layer.attention.forward(normed, count, scratch.batch, rope_, scratch.cosines.data(), scratch.sines.data(), l,
                                    scratch.attention, branch, pool);
            if (recorder) tap(trace::layer_stage(l, "attn_output"), branch, count, hidden);
            for_row_blocks(pool, count, parallel_row_steps_from, [&](std::size_t begin, std::size_t end) {
                kernels::add_in_place(x + begin * hidden, branch + begin * hidden, (end - begin) * hidden);
                layer.post_attention_norm.forward(x + begin * hidden, end - begin, normed + begin * hidden);
            });
            if (recorder) tap(trace::layer_stage(l, "after_attn_residual"), x, count, hidden);
            if (recorder) tap(trace::layer_stage(l, "post_attn_norm"), normed, count, hidden);
            layer.mlp.forward(normed, count, scratch.mlp, branch, pool);
            if (recorder) tap(trace::layer_stage(l, "mlp_output"), branch, count, hidden);
            for_row_blocks(pool, count, parallel_row_steps_from, [&](std::size_t begin, std::size_t end) {
                kernels::add_in_place(x + begin * hidden, branch + begin * hidden, (end - begin) * hidden);
            });
            if (recorder) tap(trace::layer_stage(l, "output"), x, count, hidden);
        }
        for (const BatchEntry& entry : entries) entry.sequence->cache.advance(entry.tokens.size());

        // Only the rows that need logits go through the final norm and the head.
        scratch.head_input.resize(logit_rows * hidden);
        std::size_t row = 0, head_row = 0;
        for (const BatchEntry& entry : entries) {
            const std::size_t tokens = entry.tokens.size();
            const std::size_t first = entry.rows == LogitRows::all ? 0 : tokens - 1;
            norm_.forward(x + (row + first) * hidden, tokens - first, scratch.head_input.data() + head_row * hidden);
            head_row += tokens - first;
            row += tokens;
        }
        tap("final_norm", scratch.head_input.data(), logit_rows, hidden);
        logits.resize({logit_rows, config_.vocab_size});
        lm_head_.forward(scratch.head_input.data(), logit_rows, logits.data(), pool);
        tap("logits", logits.data(), logit_rows, config_.vocab_size);
    }

private:
    static void check_context(std::size_t context) {
        if (context == 0) throw argument_error("context size must be at least 1");
    }

    nn::KVCache new_cache(std::size_t context) const {
        check_context(context);
        return nn::KVCache(config_.num_hidden_layers, context, config_.num_key_value_heads, config_.head_dim,
                           cache_dtype_);
    }

    // Which rows belong to which cache, and the rotary angles of every row's position.
    void prepare_rows(std::span<const BatchEntry> entries, std::size_t rows, ForwardScratch& scratch) const {
        const std::size_t half = rope_.half();
        scratch.cosines.resize(rows * half);
        scratch.sines.resize(rows * half);
        scratch.batch.clear();
        std::size_t row = 0;
        for (const BatchEntry& entry : entries) {
            nn::KVCache& cache = entry.sequence->cache;
            scratch.batch.push_back({&cache, row, entry.tokens.size()});
            for (std::size_t t = 0; t < entry.tokens.size(); ++t, ++row) {
                rope_.angles(cache.length() + t, scratch.cosines.data() + row * half, scratch.sines.data() + row * half);
            }
        }
    }

    void load_weights() {
        const io::ModelConfig& c = config_;
        const std::size_t q_width = c.num_attention_heads * c.head_dim;
        const std::size_t kv_width = c.num_key_value_heads * c.head_dim;
        const float eps = float(c.rms_norm_eps);
        WeightLoader root(store_, c.architecture);
        WeightLoader model = root.at("model");

        embed_tokens_.table = model.tensor("embed_tokens.weight", {c.vocab_size, c.hidden_size});
        auto linear = [](const WeightLoader& at, std::size_t out, std::size_t in, bool has_bias) {
            nn::Linear result{at.tensor("weight", {out, in}), std::nullopt};
            if (has_bias) result.bias = at.tensor("bias", {out});
            return result;
        };
        for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
            const WeightLoader layer = model.at("layers").at(i);
            const WeightLoader attention = layer.at("self_attn");
            const WeightLoader mlp = layer.at("mlp");
            DecoderLayer decoder;
            decoder.input_norm = {layer.tensor("input_layernorm.weight", {c.hidden_size}), eps};
            decoder.attention.query = linear(attention.at("q_proj"), q_width, c.hidden_size, c.attention_bias);
            decoder.attention.key = linear(attention.at("k_proj"), kv_width, c.hidden_size, c.attention_bias);
            decoder.attention.value = linear(attention.at("v_proj"), kv_width, c.hidden_size, c.attention_bias);
            decoder.attention.output = linear(attention.at("o_proj"), c.hidden_size, q_width, c.attention_output_bias);
            decoder.attention.shape = {c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                                       c.sliding_window.value_or(0)};
            decoder.post_attention_norm = {layer.tensor("post_attention_layernorm.weight", {c.hidden_size}), eps};
            decoder.mlp.gate = linear(mlp.at("gate_proj"), c.intermediate_size, c.hidden_size, c.mlp_bias);
            decoder.mlp.up = linear(mlp.at("up_proj"), c.intermediate_size, c.hidden_size, c.mlp_bias);
            decoder.mlp.down = linear(mlp.at("down_proj"), c.hidden_size, c.intermediate_size, c.mlp_bias);
            layers_.push_back(std::move(decoder));
        }
        norm_ = {model.tensor("norm.weight", {c.hidden_size}), eps};

        // A checkpoint's own lm_head wins; tied models may omit it and reuse the embedding.
        if (auto head = root.optional_tensor("lm_head.weight", {c.vocab_size, c.hidden_size})) {
            lm_head_.weight = *head;
        } else if (c.tie_word_embeddings) {
            lm_head_.weight = embed_tokens_.table;
        } else {
            throw format_error("checkpoint is missing tensor 'lm_head.weight' and config.json has "
                               "tie_word_embeddings=false");
        }
        root.require_all_used();

        rope_.inverse_frequencies = nn::rope_inverse_frequencies(rope_parameters(c));
    }

    static nn::RopeParameters rope_parameters(const io::ModelConfig& c) {
        nn::RopeParameters parameters;
        parameters.head_dim = c.head_dim;
        parameters.theta = c.rope_theta;
        parameters.factor = c.rope_scaling.factor;
        parameters.low_freq_factor = c.rope_scaling.low_freq_factor;
        parameters.high_freq_factor = c.rope_scaling.high_freq_factor;
        parameters.original_max_position_embeddings = double(c.rope_scaling.original_max_position_embeddings);
        switch (c.rope_scaling.kind) {
            case io::RopeScalingKind::none: parameters.scaling = nn::RopeScaling::none; break;
            case io::RopeScalingKind::linear: parameters.scaling = nn::RopeScaling::linear; break;
            case io::RopeScalingKind::llama3: parameters.scaling = nn::RopeScaling::llama3; break;
        }
        return parameters;
    }

    io::ModelConfig config_;
    DType cache_dtype_ = DType::f32;
    io::TensorStore store_;
    nn::Embedding embed_tokens_;
    std::vector<DecoderLayer> layers_;
    nn::RMSNorm norm_;
    nn::Linear lm_head_;
    nn::RotaryEmbedding rope_;
};

}  // namespace loom::models
