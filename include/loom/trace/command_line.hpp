#pragma once
// trace_layers: runs Loom's forward pass with every stage recorded and compares each
// stage with a reference dump (NumPy .npy files, or one .safetensors, as written by
// apps/trace_layers/dump_pytorch.py), or writes Loom's own stages in the same format.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/generate/command_line.hpp"
#include "loom/io/npy.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/models/load.hpp"
#include "loom/tokenizer/load.hpp"
#include "loom/trace/compare.hpp"
#include "loom/trace/recorder.hpp"

namespace loom::trace {

// Relative tolerance per stage: f32 and f16 checkpoints are compared at 1e-5; bf16 ones at
// 1e-2, since a dump made in bfloat16 arithmetic differs from f32 arithmetic at that level.
inline constexpr double default_tolerance = 1e-5;
inline constexpr double default_bf16_tolerance = 1e-2;

struct TraceCommand {
    std::string model;
    std::optional<std::vector<int>> ids;
    std::optional<std::string> prompt;
    std::string reference;  // folder of .npy files, a .safetensors file, or a folder holding trace.safetensors
    std::string emit;       // folder to write Loom's stages to
    bool json = false;
    std::vector<std::pair<std::string, double>> tolerances;  // stage pattern ('*' wildcard, or "all") = value
    std::size_t threads = default_thread_count();
    bool help = false;
};

inline const char* trace_usage() {
    return "usage: trace_layers --model DIR|Org/Name (--ids \"1,2,3\" | --prompt TEXT) (--reference DUMP | --emit DIR)\n"
           "                    [--json] [--tolerance STAGE=VALUE ...] [--threads N]\n"
           "  --reference  a folder of <stage>.npy files, or a .safetensors holding the same names\n"
           "               (apps/trace_layers/dump_pytorch.py writes either)\n"
           "  --emit       write Loom's own stages as .npy files into DIR (to compare two Loom runs)\n"
           "  --tolerance  relative tolerance for stages matching STAGE ('*' wildcard, or 'all');\n"
           "               defaults: 1e-5 (f32/f16 checkpoints), 1e-2 (bf16 checkpoints)\n"
           "exit status: 0 every stage passes, 1 a stage differs (last line names the first), 2 bad input\n";
}

namespace detail {

inline bool glob_matches(std::string_view pattern, std::string_view text) {
    if (pattern == "all") return true;
    if (pattern.empty()) return text.empty();
    if (pattern.front() == '*') {
        for (std::size_t skip = 0; skip <= text.size(); ++skip) {
            if (glob_matches(pattern.substr(1), text.substr(skip))) return true;
        }
        return false;
    }
    return !text.empty() && pattern.front() == text.front() && glob_matches(pattern.substr(1), text.substr(1));
}

// Where reference tensors come from: .npy files by stage name, or one safetensors file.
class ReferenceDump {
public:
    explicit ReferenceDump(const std::filesystem::path& path) {
        std::filesystem::path safetensors;
        if (std::filesystem::is_regular_file(path)) safetensors = path;
        else if (std::filesystem::is_directory(path) && std::filesystem::exists(path / "trace.safetensors")) safetensors = path / "trace.safetensors";
        else if (!std::filesystem::is_directory(path)) throw not_found_error(path.string() + ": no such reference folder or file");
        folder_ = path;
        if (!safetensors.empty()) store_ = io::TensorStore::open(safetensors);
    }

    // nullopt when the dump has no such stage.
    std::optional<io::NpyArray> find(const std::string& stage) const {
        if (store_) {
            if (!store_->contains(stage)) return std::nullopt;
            const TensorView& view = store_->get(stage);
            return io::NpyArray{view.shape, view.to_f32(), std::string(dtype_name(view.dtype))};
        }
        const auto file = folder_ / (stage + ".npy");
        if (!std::filesystem::exists(file)) return std::nullopt;
        return io::read_npy(file);
    }

private:
    std::filesystem::path folder_;
    std::optional<io::TensorStore> store_;
};

inline std::string shape_text(const Shape& shape) { return shape_to_string(shape); }

}  // namespace detail

inline TraceCommand parse_trace_arguments(const std::vector<std::string>& arguments) {
    TraceCommand command;
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        const std::string& flag = arguments[i];
        if (flag == "--help" || flag == "-h") {
            command.help = true;
            continue;
        }
        if (flag == "--json") {
            command.json = true;
            continue;
        }
        if (flag.rfind("--", 0) != 0) throw argument_error("unexpected argument '" + flag + "'");
        if (i + 1 >= arguments.size()) throw argument_error(flag + " needs a value");
        const std::string& value = arguments[++i];
        if (flag == "--model") command.model = value;
        else if (flag == "--ids") command.ids = generate::detail::parse_id_list(value);
        else if (flag == "--prompt") command.prompt = value;
        else if (flag == "--reference") command.reference = value;
        else if (flag == "--emit") command.emit = value;
        else if (flag == "--threads") {
            command.threads = generate::detail::parse_integer<std::size_t>(flag, value);
            if (command.threads == 0 || command.threads > 1024) throw argument_error("--threads must be in 1..1024");
        } else if (flag == "--tolerance") {
            const std::size_t equals = value.find('=');
            if (equals == std::string::npos || equals == 0) throw argument_error("--tolerance takes STAGE=VALUE, got '" + value + "'");
            const double tolerance = generate::detail::parse_float(flag, value.substr(equals + 1));
            if (!(tolerance >= 0)) throw argument_error("--tolerance: value must be >= 0 in '" + value + "'");
            command.tolerances.push_back({value.substr(0, equals), tolerance});
        } else {
            throw argument_error("unknown option '" + flag + "' (see --help)");
        }
    }
    if (command.help) return command;
    if (command.model.empty()) throw argument_error("--model is required");
    if (command.ids.has_value() == command.prompt.has_value()) throw argument_error("give exactly one of --ids and --prompt");
    if (command.reference.empty() && command.emit.empty()) throw argument_error("give --reference DUMP, --emit DIR, or both");
    return command;
}

// Runs trace_layers; returns the exit status (0 pass, 1 mismatch, 2 bad input).
inline int run_trace(const std::vector<std::string>& arguments, std::ostream& out, std::ostream& err) {
    try {
        const TraceCommand command = parse_trace_arguments(arguments);
        if (command.help) {
            out << trace_usage();
            return 0;
        }
        const models::LoadedModel model = models::load_model(command.model);
        std::vector<int> ids;
        if (command.ids) {
            ids = *command.ids;
        } else {
            if (!tokenizer::has_tokenizer(model.folder)) throw argument_error("--prompt needs a tokenizer in " + model.folder.string() + "; pass --ids");
            ids = tokenizer::load_tokenizer(model.folder)->encode(*command.prompt);
        }
        if (ids.empty() || ids.size() > model.config().max_position_embeddings) {
            throw argument_error("the prompt must have 1.." + std::to_string(model.config().max_position_embeddings) + " tokens");
        }

        Collector collector;
        ThreadPool pool(command.threads);
        auto sequence = model.network->new_sequence(ids.size());
        xt::xtensor<float, 2> logits;
        model.network->forward(ids, sequence, models::LogitRows::all, logits, pool, &collector);

        if (!command.emit.empty()) {
            std::filesystem::create_directories(command.emit);
            for (const std::string& stage : collector.stages()) {
                const RecordedTensor& tensor = collector.at(stage);
                io::write_npy(std::filesystem::path(command.emit) / (stage + ".npy"), tensor.values.data(), tensor.shape);
            }
            if (!command.json) out << "wrote " << collector.stages().size() << " stages to " << command.emit << "\n";
        }
        if (command.reference.empty()) return 0;

        bool bf16 = false;
        for (const std::string& name : model.network->weights().names()) bf16 = bf16 || model.network->weights().get(name).dtype == DType::bf16;
        const double base_tolerance = bf16 ? default_bf16_tolerance : default_tolerance;

        const detail::ReferenceDump reference(command.reference);
        std::vector<StageComparison> results;
        std::vector<std::string> missing;
        for (const std::string& stage : collector.stages()) {
            const auto expected = reference.find(stage);
            if (!expected) {
                missing.push_back(stage);
                continue;
            }
            double tolerance = base_tolerance;
            for (const auto& [pattern, value] : command.tolerances) {
                if (detail::glob_matches(pattern, stage)) tolerance = value;
            }
            const RecordedTensor& ours = collector.at(stage);
            results.push_back(compare_stage(stage, ours.shape, ours.values, expected->shape, expected->values, tolerance));
            if (!results.back().shape_matches) {  // a dump of another model or prompt: bad input, not a numeric mismatch
                throw format_error(command.reference + ": stage " + stage + " has shape " + detail::shape_text(expected->shape) +
                                   ", but Loom's is " + detail::shape_text(ours.shape) + " (a dump of another model or other ids?)");
            }
        }
        if (results.empty()) {
            throw format_error(command.reference + ": the reference holds none of Loom's stages (expected files such as embedding.npy, layer_0_output.npy, logits.npy)");
        }
        const auto failing = std::find_if(results.begin(), results.end(), [](const StageComparison& r) { return !r.pass; });

        if (command.json) {
            nlohmann::json report = {{"model", command.model}, {"ids", ids}, {"default_tolerance", base_tolerance},
                                     {"stages", nlohmann::json::array()}, {"not_in_reference", missing}};
            for (const StageComparison& r : results) {
                report["stages"].push_back({{"stage", r.stage}, {"shape", r.ours}, {"reference_shape", r.reference},
                                            {"max_abs_error", r.max_abs_error},
                                            {"max_relative_error", r.max_relative_error}, {"mean_abs_error", r.mean_abs_error},
                                            {"cosine_similarity", r.cosine_similarity},
                                            {"worst_position", {r.worst_row, r.worst_column}}, {"tolerance", r.tolerance},
                                            {"pass", r.pass}});
            }
            report["first_failing_stage"] = failing == results.end() ? nlohmann::json(nullptr) : nlohmann::json(failing->stage);
            report["pass"] = failing == results.end();
            out << report.dump(2) << "\n";
        } else {
            char line[512];
            std::snprintf(line, sizeof line, "%-30s %-14s %10s %10s %10s %10s %12s  %s\n", "stage", "shape", "max abs",
                          "max rel", "mean abs", "cosine", "worst at", "result");
            out << line;
            for (const StageComparison& r : results) {
                const std::string worst = "(" + std::to_string(r.worst_row) + ", " + std::to_string(r.worst_column) + ")";
                std::snprintf(line, sizeof line, "%-30s %-14s %10.3e %10.3e %10.3e %10.7f %12s  %s (tol %.0e)\n",
                              r.stage.c_str(), detail::shape_text(r.ours).c_str(), r.max_abs_error, r.max_relative_error,
                              r.mean_abs_error, r.cosine_similarity, worst.c_str(), r.pass ? "pass" : "FAIL", r.tolerance);
                out << line;
            }
            if (!missing.empty()) out << missing.size() << " stages not in the reference (skipped), first: " << missing.front() << "\n";
            if (failing == results.end()) out << "all " << results.size() << " compared stages pass\n";
            else out << "first failing stage: " << failing->stage << "\n";
        }
        return failing == results.end() ? 0 : 1;
    } catch (const std::exception& failure) {
        err << "trace_layers: error: " << failure.what() << "\n";
        return 2;
    }
}

}  // namespace loom::trace
