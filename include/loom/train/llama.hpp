#pragma once
// Training pass of the LLaMA family (models/llama.hpp): a forward over whole sequences
// that keeps every activation the backward pass needs, the cross-entropy loss, and the
// backward pass, which reads like the forward upside down. The blocks are the model's
// own (nn/), each with its forward and backward side by side; their weights are the f32
// master copies of train::Parameters, so the forward here gives the same bits as
// inference on the same tokens.
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/aligned.hpp"
#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/attention.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/models/llama.hpp"
#include "loom/nn/gradient.hpp"
#include "loom/train/batch.hpp"
#include "loom/train/loss.hpp"
#include "loom/train/parameters.hpp"

namespace loom::train {

// What one decoder layer's forward keeps for its backward.
struct LayerActivations {
    AlignedVector<float> attention_input;  // [rows, hidden] input_norm(residual in)
    nn::AttentionActivations attention;
    AlignedVector<float> middle;           // [rows, hidden] residual after the attention block
    AlignedVector<float> mlp_input;        // [rows, hidden] post_attention_norm(middle)
    nn::MlpActivations mlp;
};

class LlamaTraining {
public:
    // recompute: keep only each layer's input and rerun the layer's forward during the
    // backward pass (about a third more work for a fraction of the activation memory).
    LlamaTraining(const models::Llama& model, nn::GradientOf gradient_of, bool recompute = false)
        : model_(model), gradient_of_(std::move(gradient_of)), recompute_(recompute) {}

    // Forward, loss and backward: adds d(loss * gradient_scale)/d(parameter) to every
    // trainable parameter's gradient. Returns the loss before the update.
    Loss forward_backward(const Batch& batch, ThreadPool& pool, float gradient_scale = 1.0f) {
        forward(batch, pool);
        const Loss loss = cross_entropy(logits_.data(), rows_, vocab(), batch.targets, true, gradient_scale, pool);
        if (loss.targets > 0) backward(batch, pool);
        return loss;
    }

    // Forward and loss only (validation).
    Loss evaluate(const Batch& batch, ThreadPool& pool) {
        forward(batch, pool);
        return cross_entropy(logits_.data(), rows_, vocab(), batch.targets, false, 1.0f, pool);
    }

    // Logits of the last forward: [rows, vocab]. After forward_backward they hold the
    // loss gradient instead.
    std::span<const float> logits() const noexcept { return logits_; }

    // Bytes held by activations and backward buffers (planned once per batch shape).
    std::size_t activation_bytes() const noexcept {
        std::size_t floats = logits_.capacity() + cosines_.capacity() + sines_.capacity() + normed_final_.capacity() + recomputed_output_.capacity() +
                             branch_.capacity() + residual_gradient_.capacity() + gradient_.capacity() +
                             norm_scratch_.capacity();
        for (const auto& input : layer_inputs_) floats += input.capacity();
        for (const LayerActivations& saved : saved_) floats += activation_floats(saved);
        floats += attention_scratch_.dmixed.capacity() + attention_scratch_.dqueries.capacity() +
                  attention_scratch_.dkeys.capacity() + attention_scratch_.dvalues.capacity() +
                  attention_scratch_.dx_part.capacity() + mlp_scratch_.dhidden.capacity() +
                  mlp_scratch_.dgate.capacity() + mlp_scratch_.dup.capacity() + mlp_scratch_.dx_up.capacity();
        return floats * sizeof(float);
    }

private:
    std::size_t hidden() const noexcept { return model_.config().hidden_size; }
    std::size_t vocab() const noexcept { return model_.config().vocab_size; }

    void plan(const Batch& batch) {
        if (batch.rows == 0 || batch.sequence_length == 0) throw argument_error("a training batch needs at least one token");
        if (batch.inputs.size() != batch.rows * batch.sequence_length || batch.targets.size() != batch.inputs.size()) {
            throw argument_error("training batch of " + std::to_string(batch.rows) + " x " +
                                 std::to_string(batch.sequence_length) + " tokens has " + std::to_string(batch.inputs.size()) +
                                 " inputs and " + std::to_string(batch.targets.size()) + " targets");
        }
        if (batch.sequence_length > model_.config().max_position_embeddings) {
            throw argument_error("sequence length " + std::to_string(batch.sequence_length) + " exceeds the model's context (" +
                                 std::to_string(model_.config().max_position_embeddings) + " positions)");
        }
        if (batch.rows == planned_sequences_ && batch.sequence_length == planned_length_) return;
        planned_sequences_ = batch.rows;
        planned_length_ = batch.sequence_length;
        rows_ = batch.rows * batch.sequence_length;
        sequences_.clear();
        for (std::size_t s = 0; s < batch.rows; ++s) sequences_.push_back({s * batch.sequence_length, batch.sequence_length});
        const std::size_t half = model_.rope().half();
        cosines_.resize(rows_ * half);
        sines_.resize(rows_ * half);
        for (std::size_t row = 0; row < rows_; ++row) {
            model_.rope().angles(row % batch.sequence_length, cosines_.data() + row * half, sines_.data() + row * half);
        }
        const std::size_t layers = model_.layers().size();
        layer_inputs_.assign(layers + 1, AlignedVector<float>(rows_ * hidden()));
        saved_.assign(recompute_ ? 1 : layers, LayerActivations{});
        branch_.resize(rows_ * hidden());
        normed_final_.resize(rows_ * hidden());
        recomputed_output_.resize(recompute_ ? rows_ * hidden() : 0);
        logits_.resize(rows_ * vocab());
    }

    LayerActivations& saved(std::size_t layer) { return saved_[recompute_ ? 0 : layer]; }

    // One decoder layer: residual `in` -> residual `out`, as models::Llama::forward.
    void layer_forward(std::size_t l, const float* in, float* out, ThreadPool& pool) {
        const models::DecoderLayer& layer = model_.layers()[l];
        LayerActivations& a = saved(l);
        const std::size_t size = rows_ * hidden();
        a.attention_input.resize(size);
        a.middle.resize(size);
        a.mlp_input.resize(size);
        layer.input_norm.forward(in, rows_, a.attention_input.data());
        layer.attention.forward_keeping(a.attention_input.data(), rows_, sequences_, model_.rope(), cosines_.data(),
                                        sines_.data(), a.attention, branch_.data(), pool);
        std::copy(in, in + size, a.middle.begin());
        kernels::add_in_place(a.middle.data(), branch_.data(), size);
        layer.post_attention_norm.forward(a.middle.data(), rows_, a.mlp_input.data());
        layer.mlp.forward_keeping(a.mlp_input.data(), rows_, a.mlp, branch_.data(), pool);
        std::copy(a.middle.begin(), a.middle.end(), out);
        kernels::add_in_place(out, branch_.data(), size);
    }

    void forward(const Batch& batch, ThreadPool& pool) {
        plan(batch);
        model_.embedding().forward(batch.inputs.data(), rows_, layer_inputs_[0].data());
        for (std::size_t l = 0; l < model_.layers().size(); ++l) {
            layer_forward(l, layer_inputs_[l].data(), layer_inputs_[l + 1].data(), pool);
        }
        model_.final_norm().forward(layer_inputs_.back().data(), rows_, normed_final_.data());
        model_.head().forward(normed_final_.data(), rows_, logits_.data(), pool);
    }

    // logits_ holds d loss / d logits. Walks the forward backwards; residual_gradient_ is
    // d loss / d (residual stream) at the current depth.
    void backward(const Batch& batch, ThreadPool& pool) {
        const std::size_t size = rows_ * hidden();
        residual_gradient_.resize(size);
        gradient_.resize(size);
        model_.head().backward(normed_final_.data(), rows_, logits_.data(), gradient_.data(), gradient_of_, pool);
        model_.final_norm().backward(layer_inputs_.back().data(), rows_, gradient_.data(), residual_gradient_.data(),
                                     gradient_of_, norm_scratch_);
        for (std::size_t l = model_.layers().size(); l-- > 0;) {
            const models::DecoderLayer& layer = model_.layers()[l];
            if (recompute_) layer_forward(l, layer_inputs_[l].data(), recomputed_output_.data(), pool);
            const LayerActivations& a = saved(l);
            // out = middle + mlp(post_attention_norm(middle))
            layer.mlp.backward(a.mlp_input.data(), rows_, a.mlp, residual_gradient_.data(), gradient_.data(),
                               gradient_of_, mlp_scratch_, pool);
            layer.post_attention_norm.backward(a.middle.data(), rows_, gradient_.data(), branch_.data(), gradient_of_,
                                               norm_scratch_);
            kernels::add_in_place(residual_gradient_.data(), branch_.data(), size);
            // middle = in + attention(input_norm(in))
            layer.attention.backward(a.attention_input.data(), rows_, sequences_, model_.rope(), cosines_.data(),
                                     sines_.data(), a.attention, residual_gradient_.data(), gradient_.data(),
                                     gradient_of_, attention_scratch_, pool);
            layer.input_norm.backward(layer_inputs_[l].data(), rows_, gradient_.data(), branch_.data(), gradient_of_,
                                      norm_scratch_);
            kernels::add_in_place(residual_gradient_.data(), branch_.data(), size);
        }
        model_.embedding().backward(batch.inputs.data(), rows_, residual_gradient_.data(), gradient_of_);
    }

    static std::size_t activation_floats(const LayerActivations& a) {
        return a.attention_input.capacity() + a.middle.capacity() + a.mlp_input.capacity() +
               a.attention.queries.capacity() + a.attention.keys.capacity() + a.attention.values.capacity() +
               a.attention.weights.capacity() + a.attention.mixed.capacity() + a.mlp.gate.capacity() +
               a.mlp.up.capacity() + a.mlp.hidden.capacity();
    }

    const models::Llama& model_;
    nn::GradientOf gradient_of_;
    bool recompute_ = false;

    std::size_t planned_sequences_ = 0, planned_length_ = 0, rows_ = 0;
    std::vector<kernels::TrainingSequence> sequences_;
    std::vector<float> cosines_, sines_;            // [rows, head_dim / 2]
    std::vector<AlignedVector<float>> layer_inputs_;  // [layers + 1][rows, hidden]: the residual stream between layers
    std::vector<LayerActivations> saved_;             // one per layer, or one reused when recomputing
    AlignedVector<float> branch_;                     // [rows, hidden] a block's output before the residual add
    AlignedVector<float> normed_final_;               // [rows, hidden]
    AlignedVector<float> recomputed_output_;          // [rows, hidden] a recomputed layer's output (unused)
    AlignedVector<float> logits_;                     // [rows, vocab]
    AlignedVector<float> residual_gradient_, gradient_;  // [rows, hidden]
    std::vector<float> norm_scratch_;
    nn::AttentionBackwardScratch attention_scratch_;
    nn::MlpBackwardScratch mlp_scratch_;
};

// A model whose weights are trainable parameters: inference (generation, serving) and
// training read the same f32 values, so generation sees every optimizer step at once.
struct TrainableLlama {
    Parameters parameters;                    // declared first: the network views its buffer
    std::unique_ptr<models::Llama> network;

    TrainableLlama(io::ModelConfig config, const io::TensorStore& checkpoint)
        : parameters(Parameters::from_store(checkpoint)),
          network(std::make_unique<models::Llama>(std::move(config), parameters.store())) {}

    // gradient_of() hands out a view of this object.
    TrainableLlama(const TrainableLlama&) = delete;
    TrainableLlama& operator=(const TrainableLlama&) = delete;

    nn::GradientOf gradient_of() {
        return [this](const TensorView& weight) { return parameters.gradient_of(weight); };
    }
};

}  // namespace loom::train
