#pragma once
// Hugging Face-layout checkpoints with deterministic weights, for tests, benchmarks and
// the built-in default model: no real checkpoint can be shipped or downloaded, but the
// loading and the arithmetic can still be exercised end to end on real file formats.
// Each tensor draws from its own stream (seed and name hashed), so the values do not
// depend on the order tensors are made in.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/random.hpp"
#include "loom/io/safetensors.hpp"

namespace loom::models {

struct SyntheticModelSpec {
    std::string family = "llama";  // llama | qwen2 | mistral
    std::size_t vocab_size = 256;
    std::size_t hidden_size = 64;
    std::size_t intermediate_size = 160;
    std::size_t num_hidden_layers = 2;
    std::size_t num_attention_heads = 4;
    std::size_t num_key_value_heads = 2;
    std::optional<std::size_t> head_dim;  // written to config.json only when set
    std::size_t max_position_embeddings = 2048;
    double rope_theta = 10000.0;
    double rms_norm_eps = 1e-5;
    bool tie_word_embeddings = true;
    bool attention_bias = false;           // Llama only; Qwen2 always has q/k/v biases
    std::optional<std::size_t> sliding_window;  // Mistral only
    nlohmann::json rope_scaling = nullptr;
    int bos_token_id = 1;
    std::vector<int> eos_token_ids = {2};
    DType dtype = DType::f32;
    double weight_std = 0.02;  // of the uniform distribution the weights are drawn from
    std::uint64_t seed = 0;

    std::string architecture() const {
        if (family == "llama") return "LlamaForCausalLM";
        if (family == "qwen2") return "Qwen2ForCausalLM";
        if (family == "mistral") return "MistralForCausalLM";
        throw argument_error("synthetic model family must be llama, qwen2 or mistral, got '" + family + "'");
    }
    std::size_t resolved_head_dim() const { return head_dim.value_or(hidden_size / num_attention_heads); }
};

// Named shapes: tiny ones for tests, the full-size ones of real models for benchmarks.
inline std::vector<std::string> synthetic_preset_names() {
    return {"tiny-llama", "tiny-qwen2", "tiny-mistral", "smollm2-135m", "qwen2.5-0.5b"};
}

inline SyntheticModelSpec synthetic_preset(std::string_view name) {
    SyntheticModelSpec spec;
    if (name == "tiny-llama") return spec;
    if (name == "tiny-qwen2") {
        spec.family = "qwen2";
        spec.num_attention_heads = 4;
        spec.num_key_value_heads = 1;
        spec.rope_theta = 1000000.0;
        spec.rms_norm_eps = 1e-6;
        spec.tie_word_embeddings = false;
        spec.eos_token_ids = {2, 3};
        return spec;
    }
    if (name == "tiny-mistral") {
        spec.family = "mistral";
        spec.num_attention_heads = 4;
        spec.num_key_value_heads = 4;
        spec.sliding_window = 8;  // small enough that tests cross it
        spec.tie_word_embeddings = false;
        return spec;
    }
    if (name == "smollm2-135m") {
        spec.vocab_size = 49152;
        spec.hidden_size = 576;
        spec.intermediate_size = 1536;
        spec.num_hidden_layers = 30;
        spec.num_attention_heads = 9;
        spec.num_key_value_heads = 3;
        spec.max_position_embeddings = 8192;
        spec.rope_theta = 100000.0;
        spec.bos_token_id = 1;
        spec.eos_token_ids = {2};
        return spec;
    }
    if (name == "qwen2.5-0.5b") {
        spec.family = "qwen2";
        spec.vocab_size = 151936;
        spec.hidden_size = 896;
        spec.intermediate_size = 4864;
        spec.num_hidden_layers = 24;
        spec.num_attention_heads = 14;
        spec.num_key_value_heads = 2;
        spec.max_position_embeddings = 32768;
        spec.rope_theta = 1000000.0;
        spec.rms_norm_eps = 1e-6;
        spec.bos_token_id = 151643;
        spec.eos_token_ids = {151645, 151643};
        return spec;
    }
    std::string known;
    for (const auto& preset : synthetic_preset_names()) known += (known.empty() ? "" : ", ") + preset;
    throw argument_error("unknown synthetic model preset '" + std::string(name) + "' (known: " + known + ")");
}

inline nlohmann::json synthetic_config_json(const SyntheticModelSpec& spec) {
    nlohmann::json config = {
        {"architectures", {spec.architecture()}},
        {"model_type", spec.family},
        {"vocab_size", spec.vocab_size},
        {"hidden_size", spec.hidden_size},
        {"intermediate_size", spec.intermediate_size},
        {"num_hidden_layers", spec.num_hidden_layers},
        {"num_attention_heads", spec.num_attention_heads},
        {"num_key_value_heads", spec.num_key_value_heads},
        {"max_position_embeddings", spec.max_position_embeddings},
        {"rope_theta", spec.rope_theta},
        {"rms_norm_eps", spec.rms_norm_eps},
        {"hidden_act", "silu"},
        {"tie_word_embeddings", spec.tie_word_embeddings},
        {"rope_scaling", spec.rope_scaling},
        {"bos_token_id", spec.bos_token_id},
        {"torch_dtype", spec.dtype == DType::f32 ? "float32" : spec.dtype == DType::bf16 ? "bfloat16" : "float16"},
    };
    if (spec.eos_token_ids.size() == 1) config["eos_token_id"] = spec.eos_token_ids[0];
    else config["eos_token_id"] = spec.eos_token_ids;
    if (spec.head_dim) config["head_dim"] = *spec.head_dim;
    if (spec.family == "llama") config["attention_bias"] = spec.attention_bias;
    if (spec.family == "mistral") config["sliding_window"] = spec.sliding_window ? nlohmann::json(*spec.sliding_window) : nlohmann::json(nullptr);
    if (spec.family == "qwen2") config["use_sliding_window"] = false;
    return config;
}

inline nlohmann::json synthetic_generation_config_json(const SyntheticModelSpec& spec) {
    return {{"bos_token_id", spec.bos_token_id}, {"eos_token_id", spec.eos_token_ids}, {"do_sample", false}};
}

namespace detail {

inline std::uint64_t hash_name(std::string_view name, std::uint64_t seed) noexcept {
    std::uint64_t hash = 1469598103934665603ull ^ seed;  // FNV-1a
    for (char c : name) hash = (hash ^ std::uint8_t(c)) * 1099511628211ull;
    return hash;
}

// Values uniform in [center - a, center + a] with a = std * sqrt(3), i.e. standard deviation `std`.
inline std::vector<float> uniform_values(std::size_t count, double center, double std, std::string_view name,
                                         std::uint64_t seed) {
    Random random(hash_name(name, seed));
    const double half_width = std * std::sqrt(3.0);
    std::vector<float> values(count);
    for (float& value : values) value = float(center + (2.0 * random.uniform() - 1.0) * half_width);
    return values;
}

}  // namespace detail

inline std::vector<io::TensorToWrite> synthetic_tensors(const SyntheticModelSpec& spec) {
    const std::size_t head_dim = spec.resolved_head_dim();
    const std::size_t q_width = spec.num_attention_heads * head_dim;
    const std::size_t kv_width = spec.num_key_value_heads * head_dim;
    const bool qkv_bias = spec.family == "qwen2" || (spec.family == "llama" && spec.attention_bias);
    const bool output_bias = spec.family == "llama" && spec.attention_bias;
    std::vector<io::TensorToWrite> tensors;
    auto add = [&](const std::string& name, Shape shape, double center, double std) {
        const std::size_t count = shape_numel(shape);
        tensors.push_back({name, spec.dtype, std::move(shape), detail::uniform_values(count, center, std, name, spec.seed)});
    };
    // Norm weights near 1 (not exactly 1) so that a forward that skipped them would be caught.
    auto add_norm = [&](const std::string& name, std::size_t dim) { add(name, {dim}, 1.0, 0.1); };

    add("model.embed_tokens.weight", {spec.vocab_size, spec.hidden_size}, 0.0, spec.weight_std);
    for (std::size_t i = 0; i < spec.num_hidden_layers; ++i) {
        const std::string layer = "model.layers." + std::to_string(i) + ".";
        add_norm(layer + "input_layernorm.weight", spec.hidden_size);
        add_norm(layer + "post_attention_layernorm.weight", spec.hidden_size);
        add(layer + "self_attn.q_proj.weight", {q_width, spec.hidden_size}, 0.0, spec.weight_std);
        add(layer + "self_attn.k_proj.weight", {kv_width, spec.hidden_size}, 0.0, spec.weight_std);
        add(layer + "self_attn.v_proj.weight", {kv_width, spec.hidden_size}, 0.0, spec.weight_std);
        add(layer + "self_attn.o_proj.weight", {spec.hidden_size, q_width}, 0.0, spec.weight_std);
        if (qkv_bias) {
            add(layer + "self_attn.q_proj.bias", {q_width}, 0.0, spec.weight_std);
            add(layer + "self_attn.k_proj.bias", {kv_width}, 0.0, spec.weight_std);
            add(layer + "self_attn.v_proj.bias", {kv_width}, 0.0, spec.weight_std);
        }
        if (output_bias) add(layer + "self_attn.o_proj.bias", {spec.hidden_size}, 0.0, spec.weight_std);
        add(layer + "mlp.gate_proj.weight", {spec.intermediate_size, spec.hidden_size}, 0.0, spec.weight_std);
        add(layer + "mlp.up_proj.weight", {spec.intermediate_size, spec.hidden_size}, 0.0, spec.weight_std);
        add(layer + "mlp.down_proj.weight", {spec.hidden_size, spec.intermediate_size}, 0.0, spec.weight_std);
    }
    add_norm("model.norm.weight", spec.hidden_size);
    if (!spec.tie_word_embeddings) add("lm_head.weight", {spec.vocab_size, spec.hidden_size}, 0.0, spec.weight_std);
    return tensors;
}

// The checkpoint of `spec` in memory, as if read from a model.safetensors.
inline io::TensorStore synthetic_store(const SyntheticModelSpec& spec, const std::string& label) {
    return io::TensorStore::from_bytes(io::serialize_safetensors(synthetic_tensors(spec)), label);
}

// Writes config.json, generation_config.json and model.safetensors (or shards of at most
// max_shard_bytes with an index, when max_shard_bytes > 0) into `folder`.
inline void write_synthetic_model(const std::filesystem::path& folder, const SyntheticModelSpec& spec,
                                  std::size_t max_shard_bytes = 0) {
    std::filesystem::create_directories(folder);
    auto write_json = [&](const char* name, const nlohmann::json& json) {
        std::ofstream out(folder / name);
        out << json.dump(2) << "\n";
        if (!out) throw error((folder / name).string() + ": write failed");
    };
    write_json("config.json", synthetic_config_json(spec));
    write_json("generation_config.json", synthetic_generation_config_json(spec));
    const auto tensors = synthetic_tensors(spec);
    if (max_shard_bytes > 0) io::write_sharded_safetensors(folder, tensors, max_shard_bytes);
    else io::write_safetensors(folder / "model.safetensors", tensors);
}

}  // namespace loom::models
