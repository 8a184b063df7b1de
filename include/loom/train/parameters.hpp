#pragma once
// The trainable state of a model: f32 master copies of every checkpoint tensor and a
// gradient for each, like llm.c's one allocation of parameters mirrored by one of
// gradients. The values are kept as an f32 safetensors image in memory, so a
// models::Llama built on store() computes with the current weights after every
// optimizer step, and saving is writing that image out.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/tensor.hpp"
#include "loom/io/safetensors.hpp"

namespace loom::train {

struct Parameter {
    std::string name;           // the checkpoint's tensor name
    Shape shape;
    DType stored_dtype;         // the checkpoint's dtype; saving may narrow back to it
    float* value = nullptr;     // [size] f32 master weights
    float* gradient = nullptr;  // [size], accumulated by backward passes
    std::size_t size = 0;
    bool trainable = true;

    // Decoupled weight decay applies to matrices (projections, embeddings), not to the
    // vectors (norm weights, biases), as in the usual AdamW recipes.
    bool decays() const noexcept { return shape.size() >= 2; }
};

class Parameters {
public:
    Parameters() = default;
    // The parameter pointers point into the two buffers, which a move hands over intact.
    Parameters(Parameters&&) = default;
    Parameters& operator=(Parameters&&) = default;
    Parameters(const Parameters&) = delete;
    Parameters& operator=(const Parameters&) = delete;

    // f32 copies of every tensor in `source` (bf16 and f16 widen exactly), in name order.
    static Parameters from_store(const io::TensorStore& source) {
        std::vector<io::TensorToWrite> tensors;
        std::map<std::string, DType> stored;
        for (const std::string& name : source.names()) {
            const TensorView& view = source.get(name);
            tensors.push_back({name, DType::f32, view.shape, view.to_f32()});
            stored[name] = view.dtype;
        }
        if (tensors.empty()) throw argument_error(source.label() + ": the checkpoint has no tensors to train");
        Parameters parameters;
        parameters.image_ = io::serialize_safetensors(tensors);
        tensors.clear();
        const io::TensorStore image = parameters.store();
        const std::byte* first = nullptr;
        for (const std::string& name : image.names()) {
            const TensorView& view = image.get(name);
            if (first == nullptr || view.data < first) first = view.data;
        }
        parameters.data_offset_ = std::size_t(first - parameters.image_.data());
        parameters.gradients_.assign((parameters.image_.size() - parameters.data_offset_) / sizeof(float), 0.0f);
        for (const std::string& name : image.names()) {
            const TensorView& view = image.get(name);
            const std::size_t offset = std::size_t(view.data - first) / sizeof(float);
            parameters.list_.push_back({name, view.shape, stored.at(name), parameters.values().data() + offset,
                                        parameters.gradients_.data() + offset, view.numel(), true});
        }
        return parameters;
    }

    // Views of the current values (f32). A model built on this store reads every update;
    // the store must not outlive these parameters.
    io::TensorStore store() const {
        return io::TensorStore::from_buffer(image_.data(), image_.size(), "trainable parameters");
    }

    std::span<Parameter> list() noexcept { return list_; }
    std::span<const Parameter> list() const noexcept { return list_; }

    Parameter& get(const std::string& name) {
        for (Parameter& parameter : list_) {
            if (parameter.name == name) return parameter;
        }
        throw not_found_error("no parameter named '" + name + "'");
    }

    // All values and all gradients, each one flat buffer in the order of list().
    std::span<float> values() noexcept {
        return {reinterpret_cast<float*>(image_.data() + data_offset_), gradients_.size()};
    }
    std::span<const float> values() const noexcept {
        return {reinterpret_cast<const float*>(image_.data() + data_offset_), gradients_.size()};
    }
    std::span<float> gradients() noexcept { return gradients_; }
    std::span<const float> gradients() const noexcept { return gradients_; }

    // The gradient of a tensor handed out by store() (tied weights share one), or null
    // when that parameter is frozen, so backward passes can skip its weight gradient.
    float* gradient_of(const TensorView& view) noexcept {
        const std::size_t offset = std::size_t(view.data - (image_.data() + data_offset_)) / sizeof(float);
        for (Parameter& parameter : list_) {
            if (parameter.value == values().data() + offset) return parameter.trainable ? parameter.gradient : nullptr;
        }
        return nullptr;
    }

    void zero_gradients() noexcept { std::fill(gradients_.begin(), gradients_.end(), 0.0f); }

    // The values as f32 views, for saving or comparing.
    std::map<std::string, TensorView> views() const {
        std::map<std::string, TensorView> result;
        for (const Parameter& parameter : list_) {
            result[parameter.name] = {DType::f32, parameter.shape, reinterpret_cast<const std::byte*>(parameter.value)};
        }
        return result;
    }

private:
    std::vector<std::byte> image_;  // f32 safetensors file image: header, then every tensor
    std::size_t data_offset_ = 0;   // where the first tensor's values start in image_
    std::vector<float> gradients_;  // mirrors the data section of image_ float for float
    std::vector<Parameter> list_;
};

}  // namespace loom::train
