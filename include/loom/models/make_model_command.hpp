#pragma once
// loom_make_model's logic: writes a Hugging Face-layout model folder with deterministic
// synthetic weights (tests, benchmarks, demos where no real checkpoint is at hand).
#include <ostream>
#include <string>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/generate/command_line.hpp"
#include "loom/models/synthetic.hpp"

namespace loom::models {

inline const char* make_model_usage() {
    return "usage: loom_make_model --preset NAME --out DIR [--dtype f32|bf16|f16] [--std S] [--seed N]\n"
           "                       [--layers N] [--shard-bytes N]\n"
           "  presets: tiny-llama, tiny-qwen2, tiny-mistral (tests); smollm2-135m, qwen2.5-0.5b (full-size shapes)\n"
           "  --std          standard deviation of the weights (default 0.02)\n"
           "  --layers       override the preset's layer count\n"
           "  --shard-bytes  split model.safetensors into shards of at most N bytes with an index\n";
}

inline int run_make_model(const std::vector<std::string>& arguments, std::ostream& out, std::ostream& err) {
    try {
        std::string preset, folder;
        SyntheticModelSpec overrides;
        std::optional<std::size_t> layers;
        std::optional<double> weight_std;
        std::optional<std::uint64_t> seed;
        std::optional<DType> dtype;
        std::size_t shard_bytes = 0;
        for (std::size_t i = 0; i < arguments.size(); ++i) {
            const std::string& flag = arguments[i];
            if (flag == "--help" || flag == "-h") {
                out << make_model_usage();
                return 0;
            }
            if (i + 1 >= arguments.size()) throw argument_error(flag + " needs a value");
            const std::string& value = arguments[++i];
            if (flag == "--preset") preset = value;
            else if (flag == "--out") folder = value;
            else if (flag == "--std") weight_std = generate::detail::parse_float(flag, value);
            else if (flag == "--seed") seed = generate::detail::parse_integer<std::uint64_t>(flag, value);
            else if (flag == "--layers") layers = generate::detail::parse_integer<std::size_t>(flag, value);
            else if (flag == "--shard-bytes") shard_bytes = generate::detail::parse_integer<std::size_t>(flag, value);
            else if (flag == "--dtype") dtype = generate::detail::parse_weight_dtype(flag, value);
            else throw argument_error("unknown option '" + flag + "' (see --help)");
        }
        if (preset.empty() || folder.empty()) throw argument_error("--preset and --out are required (see --help)");
        SyntheticModelSpec spec = synthetic_preset(preset);
        if (layers) spec.num_hidden_layers = *layers;
        if (weight_std) spec.weight_std = *weight_std;
        if (seed) spec.seed = *seed;
        if (dtype) spec.dtype = *dtype;
        write_synthetic_model(folder, spec, shard_bytes);
        out << "wrote " << preset << " (" << dtype_name(spec.dtype) << ") to " << folder << "\n";
        return 0;
    } catch (const argument_error& failure) {
        err << "loom_make_model: error: " << failure.what() << "\n";
        return 2;
    } catch (const std::exception& failure) {
        err << "loom_make_model: error: " << failure.what() << "\n";
        return 1;
    }
}

}  // namespace loom::models
