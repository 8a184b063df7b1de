#pragma once
// The training loop: micro-batches from the data loader through the training pass,
// gradient accumulation, clipping, the learning-rate schedule and the optimizer step;
// validation; and the training state that lets a run resume bit-identically.
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/train/checkpoint.hpp"
#include "loom/train/data.hpp"
#include "loom/train/llama.hpp"
#include "loom/train/optimizer.hpp"

namespace loom::train {

enum class OptimizerKind { adamw, sgd };

inline OptimizerKind parse_optimizer(const std::string& name) {
    if (name == "adamw") return OptimizerKind::adamw;
    if (name == "sgd") return OptimizerKind::sgd;
    throw argument_error("optimizer must be 'adamw' or 'sgd', got '" + name + "'");
}

struct TrainingOptions {
    std::size_t steps = 100;                 // optimizer steps
    std::size_t batch_size = 4;              // sequences per micro-batch
    std::size_t sequence_length = 256;
    std::size_t gradient_accumulation = 1;   // micro-batches per optimizer step
    double learning_rate = 3e-4;             // peak, after warmup
    std::size_t warmup_steps = 0;
    Schedule schedule = Schedule::cosine;
    double min_learning_rate_ratio = 0.0;    // cosine only: where the decay ends, relative to the peak
    OptimizerKind optimizer = OptimizerKind::adamw;
    AdamWConfig adamw;
    SGDConfig sgd;
    double clip = 1.0;                       // global gradient norm limit; 0 = no clipping
    std::uint64_t seed = 0;
    double validation_fraction = 0.1;
    bool recompute = false;                  // recompute activations in backward to save memory
    std::vector<std::string> freeze;         // parameter name patterns left untrained
};

struct StepReport {
    std::size_t step = 0;              // 1-based: optimizer steps taken after this one
    double loss = 0.0;                 // mean over the step's micro-batches
    double learning_rate = 0.0;        // used by this step
    double gradient_norm = 0.0;        // before clipping
    std::size_t tokens = 0;            // input tokens processed
    std::size_t trained_targets = 0;   // targets that counted in the loss
    double seconds = 0.0;
};

// The loss or the gradient became NaN or infinite: the step was not applied, so the
// weights (and any checkpoint saved so far) are still the last good ones.
class non_finite_error : public error {
public:
    using error::error;
};

inline constexpr const char* training_state_file = "training_state.safetensors";

class Trainer {
public:
    // `model` and `data` must outlive the trainer.
    Trainer(TrainableLlama& model, const PackedDataset& data, TrainingOptions options, ThreadPool& pool)
        : model_(model), data_(data), options_(std::move(options)), pool_(pool),
          loader_(data, options_.batch_size, options_.seed),
          schedule_(options_.schedule, options_.warmup_steps, options_.steps, options_.min_learning_rate_ratio),
          training_(*model.network, model.gradient_of(), options_.recompute) {
        if (options_.steps == 0) throw argument_error("the number of training steps must be at least 1");
        if (options_.gradient_accumulation == 0) throw argument_error("gradient accumulation must be at least 1");
        if (!(options_.learning_rate > 0.0) || !std::isfinite(options_.learning_rate)) {
            throw argument_error("learning rate must be positive, got " + std::to_string(options_.learning_rate));
        }
        if (!(options_.clip >= 0.0)) throw argument_error("clip must be >= 0 (0 turns clipping off)");
        if (data.sequence_length() > model.network->config().max_position_embeddings) {
            throw argument_error("sequence length " + std::to_string(data.sequence_length()) +
                                 " exceeds the model's context of " +
                                 std::to_string(model.network->config().max_position_embeddings) + " positions");
        }
        if (!options_.freeze.empty()) train::freeze(model.parameters, options_.freeze);
        if (options_.optimizer == OptimizerKind::adamw) {
            optimizer_ = std::make_unique<AdamW>(model.parameters, options_.adamw);
        } else {
            optimizer_ = std::make_unique<SGD>(model.parameters, options_.sgd);
        }
    }

    std::size_t steps_taken() const noexcept { return std::size_t(optimizer_->steps_taken()); }
    bool finished() const noexcept { return steps_taken() >= options_.steps; }
    const TrainingOptions& options() const noexcept { return options_; }
    const DataLoader& loader() const noexcept { return loader_; }
    std::size_t activation_bytes() const noexcept { return training_.activation_bytes(); }

    // One optimizer step over gradient_accumulation micro-batches.
    StepReport step() {
        const auto start = std::chrono::steady_clock::now();
        StepReport report;
        report.step = steps_taken() + 1;
        model_.parameters.zero_gradients();
        const float share = 1.0f / float(options_.gradient_accumulation);
        for (std::size_t micro = 0; micro < options_.gradient_accumulation; ++micro) {
            const Batch batch = loader_.next_batch();
            const Loss loss = training_.forward_backward(batch, pool_, share);
            report.loss += loss.value / double(options_.gradient_accumulation);
            report.tokens += batch.inputs.size();
            report.trained_targets += loss.targets;
        }
        report.gradient_norm = options_.clip > 0.0 ? clip_gradient_norm(model_.parameters, options_.clip, &pool_)
                                                   : gradient_norm(model_.parameters, &pool_);
        if (!std::isfinite(report.loss) || !std::isfinite(report.gradient_norm)) {
            throw non_finite_error("step " + std::to_string(report.step) + ": the " +
                                   (std::isfinite(report.loss) ? "gradient norm" : "loss") + " is not finite (loss " +
                                   std::to_string(report.loss) + ", gradient norm " +
                                   std::to_string(report.gradient_norm) +
                                   "); the step was not applied. Try a lower learning rate or --clip.");
        }
        report.learning_rate = options_.learning_rate * schedule_.multiplier(steps_taken());
        optimizer_->step(report.learning_rate, &pool_);
        report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return report;
    }

    // Mean loss over every validation sequence (each batch weighted by its counted targets).
    // Empty when there is no validation data.
    std::optional<double> validate() {
        if (loader_.validation_batch_count() == 0) return std::nullopt;
        double total = 0.0;
        std::size_t targets = 0;
        for (std::size_t index = 0; index < loader_.validation_batch_count(); ++index) {
            const Loss loss = training_.evaluate(loader_.validation_batch(index), pool_);
            total += loss.value * double(loss.targets);
            targets += loss.targets;
        }
        if (targets == 0) return std::nullopt;
        return total / double(targets);
    }

    // The model folder (config, weights in `dtype`, tokenizer files from `source_folder`)
    // plus the training state: f32 master weights, optimizer moments, step and data
    // position, from which resume() continues exactly.
    void save(const std::filesystem::path& folder, const nlohmann::json& config_json,
              const std::filesystem::path& source_folder, SaveDtype dtype) const {
        save_model(model_.parameters, config_json, source_folder, folder, dtype);
        std::map<std::string, TensorView> tensors = optimizer_->state_tensors();
        for (const auto& [name, view] : model_.parameters.views()) tensors["master." + name] = view;
        const std::map<std::string, std::string> metadata = {
            {"format", "loom-training-state"},
            {"version", "1"},
            {"step", std::to_string(steps_taken())},
            {"optimizer", optimizer_->state_scalars().dump()},
            {"data", loader_.state().dump()},
            {"options", options_json().dump()},
        };
        io::write_safetensors(folder / training_state_file, tensors, metadata);
    }

    // Continues from what save() wrote into `folder`, after checking that the run's
    // options agree with the saved ones (steps may grow).
    void resume(const std::filesystem::path& folder) {
        const std::filesystem::path file = folder / training_state_file;
        const io::TensorStore state = io::TensorStore::open(file);
        const auto& metadata = state.metadata();
        const auto field = [&](const std::string& key) -> const std::string& {
            const auto found = metadata.find(key);
            if (found == metadata.end()) throw format_error(file.string() + ": metadata has no \"" + key + "\"");
            return found->second;
        };
        if (field("format") != "loom-training-state" || field("version") != "1") {
            throw format_error(file.string() + ": not a Loom training state of version 1");
        }
        const nlohmann::json saved_options = parse_metadata_json(file, "options", field("options"));
        nlohmann::json current = options_json();
        for (auto it = current.begin(); it != current.end(); ++it) {
            if (it.key() == "steps") continue;
            if (!saved_options.contains(it.key()) || saved_options.at(it.key()) != it.value()) {
                throw argument_error(file.string() + ": option \"" + it.key() + "\" was " +
                                     (saved_options.contains(it.key()) ? saved_options.at(it.key()).dump() : "absent") +
                                     " in the saved run and is " + it.value().dump() + " now; resume with the same options");
            }
        }
        for (Parameter& parameter : model_.parameters.list()) {
            const std::string name = "master." + parameter.name;
            if (!state.contains(name)) throw format_error(file.string() + ": no tensor \"" + name + "\"");
            const TensorView& view = state.get(name);
            if (view.dtype != DType::f32 || view.shape != parameter.shape) {
                throw format_error(file.string() + ": tensor \"" + name + "\" is " + std::string(dtype_name(view.dtype)) +
                                   " " + shape_to_string(view.shape) + ", expected f32 " + shape_to_string(parameter.shape));
            }
            std::memcpy(parameter.value, view.data, parameter.size * sizeof(float));
        }
        optimizer_->load_state(state, parse_metadata_json(file, "optimizer", field("optimizer")));
        loader_.restore(parse_metadata_json(file, "data", field("data")));
    }

private:
    static nlohmann::json parse_metadata_json(const std::filesystem::path& file, const std::string& key,
                                              const std::string& text) {
        try {
            return nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception& problem) {
            throw format_error(file.string() + ": metadata \"" + key + "\" is not valid JSON: " + problem.what());
        }
    }

    // The options that decide the numbers a run produces.
    nlohmann::json options_json() const {
        return {{"steps", options_.steps},
                {"batch_size", options_.batch_size},
                {"sequence_length", data_.sequence_length()},
                {"gradient_accumulation", options_.gradient_accumulation},
                {"learning_rate", options_.learning_rate},
                {"warmup_steps", options_.warmup_steps},
                {"schedule", std::string(schedule_name(options_.schedule))},
                {"min_learning_rate_ratio", options_.min_learning_rate_ratio},
                {"clip", options_.clip},
                {"seed", options_.seed},
                {"freeze", options_.freeze}};
    }

    TrainableLlama& model_;
    const PackedDataset& data_;
    TrainingOptions options_;
    ThreadPool& pool_;
    DataLoader loader_;
    LearningRateSchedule schedule_;
    LlamaTraining training_;
    std::unique_ptr<Optimizer> optimizer_;
};

}  // namespace loom::train
