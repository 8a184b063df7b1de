#pragma once
// From a model argument (a folder, or an Org/Name id in the Hugging Face cache) to a
// ready model: resolve the folder, read config.json and generation_config.json, read (or
// map) the weights, build the network for the architecture.
#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "loom/io/hf_config.hpp"
#include "loom/io/hf_hub.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/models/llama.hpp"
#include "loom/models/synthetic.hpp"

namespace loom::models {

struct LoadedModel {
    std::filesystem::path folder;  // empty for a model built in memory
    io::GenerationDefaults generation;
    std::unique_ptr<Llama> network;

    const io::ModelConfig& config() const noexcept { return network->config(); }

    // End-of-sequence ids from config.json and generation_config.json together.
    std::vector<int> eos_token_ids() const {
        std::vector<int> ids = config().eos_token_ids;
        for (int id : generation.eos_token_ids) {
            if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
        }
        return ids;
    }
};

// `weights`: read the safetensors files into memory (the default, steadiest decoding) or
// map them (FileAccess::map: starts at once, shares the page cache; see file_image.hpp).
inline LoadedModel load_model(const std::string& model_argument, FileAccess weights = FileAccess::read) {
    LoadedModel model;
    model.folder = io::resolve_model_path(model_argument);
    io::ModelConfig config = io::load_model_config(model.folder / "config.json");
    model.generation = io::load_generation_config(model.folder / "generation_config.json");
    model.network = std::make_unique<Llama>(std::move(config), io::TensorStore::open(model.folder, weights));
    return model;
}

// For embedding and the browser: config.json contents plus safetensors bytes already in memory.
inline LoadedModel load_model_from_memory(const nlohmann::json& config_json, io::TensorStore store,
                                          const std::string& label = "in-memory model") {
    LoadedModel model;
    model.network = std::make_unique<Llama>(io::parse_model_config(config_json, label + "/config.json"), std::move(store));
    return model;
}

// The model used when none is given: a tiny LLaMA with deterministic weights, built in
// memory (no file needed), wide enough in its weights that greedy decoding varies.
inline SyntheticModelSpec default_model_spec() {
    SyntheticModelSpec spec = synthetic_preset("tiny-llama");
    spec.weight_std = 0.25;
    spec.seed = 2024;
    return spec;
}

// The model of `spec`, built in memory (tests, benchmarks, the built-in default model).
inline LoadedModel load_synthetic_model(const SyntheticModelSpec& spec, const std::string& label = "in-memory model") {
    return load_model_from_memory(synthetic_config_json(spec), synthetic_store(spec, label), label);
}

inline LoadedModel load_default_model() {
    const SyntheticModelSpec spec = default_model_spec();
    LoadedModel model = load_synthetic_model(spec, "built-in default model");
    model.generation = io::parse_generation_config(synthetic_generation_config_json(spec), "built-in default model");
    return model;
}

}  // namespace loom::models
