#pragma once
// What a training step does after backward: freeze parameters by name, clip the global
// gradient norm, pick the learning rate from a schedule, and update the weights with
// AdamW or SGD. Every formula follows PyTorch 1.13 (torch.optim.AdamW and SGD on their
// default single-tensor path, torch.nn.utils.clip_grad_norm_) and Hugging Face's
// schedules operation for operation in f32, so a run matches torch bit for bit where
// torch computes without fused multiply-adds (its reference CPU kernels; its AVX2
// kernels fuse a + alpha*b, which moves the last bit).
//
// An optimizer owns its moments as flat f32 buffers and exports them as named views
// ("optimizer.exp_avg.<parameter>") plus a JSON of scalars, so a trainer can save them in
// a safetensors file and continue a run bit-identically after loading them back.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <numbers>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/core/error.hpp"
#include "loom/core/tensor.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/kernels/simd.hpp"
#include "loom/train/parameters.hpp"

namespace loom::train {

// ---- Freezing ------------------------------------------------------------------------

// Shell-style match of a whole name: '*' is any run of characters (dots included),
// '?' is exactly one character, everything else matches itself.
inline bool matches_glob(std::string_view pattern, std::string_view name) noexcept {
    std::size_t p = 0, n = 0;
    std::size_t star = std::string_view::npos, resume = 0;
    while (n < name.size()) {
        if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            resume = n;
        } else if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
            ++p;
            ++n;
        } else if (star != std::string_view::npos) {
            p = star + 1;  // let the last '*' swallow one more character
            n = ++resume;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') ++p;
    return p == pattern.size();
}

// Marks every parameter whose name matches one of `patterns` as not trainable and returns
// how many parameters matched. A pattern that matches nothing is almost always a typo
// (the run would silently train what it meant to freeze), so it is an error.
inline std::size_t freeze(Parameters& parameters, const std::vector<std::string>& patterns) {
    std::set<std::string> matched;
    for (const std::string& pattern : patterns) {
        bool any = false;
        for (Parameter& parameter : parameters.list()) {
            if (!matches_glob(pattern, parameter.name)) continue;
            parameter.trainable = false;
            matched.insert(parameter.name);
            any = true;
        }
        if (!any) {
            const auto list = parameters.list();
            std::string examples;
            for (std::size_t i = 0; i < std::min<std::size_t>(3, list.size()); ++i) {
                examples += (i ? ", '" : "'") + list[i].name + "'";
            }
            throw argument_error("freeze pattern '" + pattern + "' matches no parameter (the " +
                                 std::to_string(list.size()) + " parameters are named like " + examples + ")");
        }
    }
    return matched.size();
}

// ---- Learning-rate schedules ---------------------------------------------------------

enum class Schedule { constant, linear, cosine };

inline Schedule parse_schedule(std::string_view name) {
    if (name == "constant") return Schedule::constant;
    if (name == "linear") return Schedule::linear;
    if (name == "cosine") return Schedule::cosine;
    throw argument_error("unknown learning-rate schedule '" + std::string(name) +
                         "' (expected constant, linear or cosine)");
}

inline std::string_view schedule_name(Schedule schedule) noexcept {
    switch (schedule) {
        case Schedule::constant: return "constant";
        case Schedule::linear: return "linear";
        case Schedule::cosine: return "cosine";
    }
    return "?";
}

// The factor on the peak learning rate at each step, as Hugging Face's
// get_{constant,linear,cosine}_schedule_with_warmup (and get_cosine_with_min_lr_...)
// compute it, in double: a linear ramp 0, 1/W, 2/W, ... over the first W steps, then
// constant, linear to 0 at total_steps, or half a cosine wave from 1 to min_ratio.
// `step` counts the optimizer steps already taken (0 for the first), as torch's LambdaLR
// counts them. Past total_steps the formulas are Hugging Face's as well: linear stays 0,
// cosine climbs back up, so a trainer stops at total_steps.
class LearningRateSchedule {
public:
    LearningRateSchedule(Schedule kind, std::size_t warmup_steps, std::size_t total_steps = 0, double min_ratio = 0.0)
        : kind_(kind), warmup_steps_(warmup_steps), total_steps_(total_steps), min_ratio_(min_ratio) {
        const std::string what = "learning-rate schedule '" + std::string(schedule_name(kind)) + "'";
        if (kind != Schedule::constant && (total_steps == 0 || total_steps < warmup_steps)) {
            throw argument_error(what + " needs total_steps >= warmup_steps and > 0, got total_steps " +
                                 std::to_string(total_steps) + ", warmup_steps " + std::to_string(warmup_steps));
        }
        if (!(min_ratio >= 0.0 && min_ratio <= 1.0)) {
            throw argument_error(what + ": min_ratio must be in [0, 1], got " + std::to_string(min_ratio));
        }
        if (kind != Schedule::cosine && min_ratio != 0.0) {
            throw argument_error(what + ": min_ratio applies to the cosine schedule only");
        }
    }

    double multiplier(std::size_t step) const {
        if (step < warmup_steps_) return double(step) / double(std::max<std::size_t>(1, warmup_steps_));
        if (kind_ == Schedule::constant) return 1.0;
        const double decay_steps = double(std::max<std::size_t>(1, total_steps_ - warmup_steps_));
        switch (kind_) {
            case Schedule::constant: return 1.0;
            case Schedule::linear:
                return std::max(0.0, (double(total_steps_) - double(step)) / decay_steps);
            case Schedule::cosine: {
                const double progress = double(step - warmup_steps_) / decay_steps;
                const double cycles = 0.5;  // half a wave: from the peak down to the floor
                double factor = 0.5 * (1.0 + std::cos(std::numbers::pi * cycles * 2.0 * progress));
                factor = factor * (1.0 - min_ratio_) + min_ratio_;
                return std::max(0.0, factor);
            }
        }
        return 1.0;
    }

    Schedule kind() const noexcept { return kind_; }
    std::size_t warmup_steps() const noexcept { return warmup_steps_; }
    std::size_t total_steps() const noexcept { return total_steps_; }
    double min_ratio() const noexcept { return min_ratio_; }

private:
    Schedule kind_;
    std::size_t warmup_steps_;
    std::size_t total_steps_;
    double min_ratio_;
};

namespace detail {

// A fixed piece of one parameter. Work is split into the same pieces whatever the pool
// size, and each piece is computed the same way by whichever thread runs it.
struct Block {
    std::size_t item;  // index into the caller's list of parameters
    std::size_t begin;
    std::size_t end;
};

inline constexpr std::size_t block_elements = std::size_t(1) << 14;

inline std::vector<Block> split_into_blocks(const std::vector<const Parameter*>& parameters) {
    std::vector<Block> blocks;
    for (std::size_t item = 0; item < parameters.size(); ++item) {
        for (std::size_t begin = 0; begin < parameters[item]->size; begin += block_elements) {
            blocks.push_back({item, begin, std::min(parameters[item]->size, begin + block_elements)});
        }
    }
    return blocks;
}

// Calls body(index) for every block, on the pool's threads if there is a pool.
template <class Body>
void run_blocks(ThreadPool* pool, std::size_t count, Body&& body) {
    if (pool == nullptr) {
        for (std::size_t i = 0; i < count; ++i) body(i);
        return;
    }
    pool->parallel_for(count, [&](std::size_t first, std::size_t last) {
        for (std::size_t i = first; i < last; ++i) body(i);
    });
}

}  // namespace detail

// ---- Gradient clipping ---------------------------------------------------------------

namespace detail {

inline std::vector<const Parameter*> trainable_parameters(const Parameters& parameters) {
    std::vector<const Parameter*> trainable;
    for (const Parameter& parameter : parameters.list()) {
        if (parameter.trainable) trainable.push_back(&parameter);
    }
    return trainable;
}

}  // namespace detail

// The L2 norm of all trainable gradients. The sum of squares runs in double over fixed
// blocks added in list order, so the norm does not depend on the thread count.
inline float gradient_norm(const Parameters& parameters, ThreadPool* pool = nullptr) {
    const std::vector<const Parameter*> trainable = detail::trainable_parameters(parameters);
    const std::vector<detail::Block> blocks = detail::split_into_blocks(trainable);
    std::vector<double> sums(blocks.size(), 0.0);
    detail::run_blocks(pool, blocks.size(), [&](std::size_t index) {
        const detail::Block& block = blocks[index];
        const float* gradient = trainable[block.item]->gradient;
        double sum = 0.0;
        for (std::size_t i = block.begin; i < block.end; ++i) sum += double(gradient[i]) * double(gradient[i]);
        sums[index] = sum;
    });
    double total = 0.0;
    for (double sum : sums) total += sum;
    return float(std::sqrt(total));
}

// Scales every trainable gradient by min(1, max_norm / (norm + 1e-6)) as
// torch.nn.utils.clip_grad_norm_ does, and returns gradient_norm() before clipping. A
// non-finite norm (an overflow or a NaN in backward) is returned with the gradients left
// as they are: the caller decides whether to skip the step.
inline float clip_gradient_norm(Parameters& parameters, double max_norm, ThreadPool* pool = nullptr) {
    if (!(max_norm > 0.0) || !std::isfinite(max_norm)) {
        throw argument_error("gradient clipping needs a positive finite max_norm, got " + std::to_string(max_norm));
    }
    const float norm = gradient_norm(parameters, pool);
    if (!std::isfinite(norm)) return norm;

    // torch: clip_coef = max_norm / (total_norm + 1e-6) on an f32 tensor, where
    // scalar / tensor is tensor.reciprocal() * scalar; then clamp(max=1).
    const float coefficient = std::min(1.0f / (norm + float(1e-6)) * float(max_norm), 1.0f);
    if (coefficient == 1.0f) return norm;  // torch multiplies by 1 here, which changes nothing
    const std::vector<const Parameter*> trainable = detail::trainable_parameters(parameters);
    const std::vector<detail::Block> blocks = detail::split_into_blocks(trainable);
    detail::run_blocks(pool, blocks.size(), [&](std::size_t index) {
        const detail::Block& block = blocks[index];
        float* gradient = trainable[block.item]->gradient;
        for (std::size_t i = block.begin; i < block.end; ++i) gradient[i] = gradient[i] * coefficient;
    });
    return norm;
}

// ---- Optimizers ----------------------------------------------------------------------

// The parameters trainable when an optimizer is built are the ones it updates; each gets
// state of its own shape in every slot (AdamW: exp_avg, exp_avg_sq; SGD with momentum:
// momentum_buffer). The Parameters must outlive the optimizer.
class Optimizer {
public:
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    const std::string& kind() const noexcept { return kind_; }
    std::uint64_t steps_taken() const noexcept { return steps_; }

    // One update of every trainable parameter from its gradient. The update is
    // elementwise, so the pool only changes the speed, never a bit of the result.
    void step(double learning_rate, ThreadPool* pool = nullptr) {
        if (!(learning_rate >= 0.0) || !std::isfinite(learning_rate)) {
            throw argument_error(kind_ + ": learning rate must be finite and >= 0, got " + std::to_string(learning_rate));
        }
        check_trainable_set();
        begin_step(learning_rate, double(steps_ + 1));
        detail::run_blocks(pool, blocks_.size(), [&](std::size_t index) {
            const detail::Block& block = blocks_[index];
            update(tracked_[block.item], block.begin, block.end);
        });
        ++steps_;
    }

    // Views of the optimizer's own buffers, named "optimizer.<slot>.<parameter>". They
    // live as long as the optimizer and show the state as of the latest step.
    std::map<std::string, TensorView> state_tensors() const {
        std::map<std::string, TensorView> tensors;
        for (std::size_t slot = 0; slot < slot_names_.size(); ++slot) {
            for (const Tracked& tracked : tracked_) {
                tensors[state_name(slot, tracked)] = {
                    DType::f32, tracked.parameter->shape,
                    reinterpret_cast<const std::byte*>(slots_[slot].data() + tracked.offset)};
            }
        }
        return tensors;
    }

    // {"kind", "step", and the hyperparameters}, to store next to state_tensors().
    nlohmann::json state_scalars() const {
        nlohmann::json scalars = hyperparameters();
        scalars["kind"] = kind_;
        scalars["step"] = steps_;
        return scalars;
    }

    // Restores what state_tensors() and state_scalars() exported. Tensors whose names do
    // not start with "optimizer." are ignored, so a whole training-state file can be
    // passed. Everything is checked before anything is changed.
    void load_state(const std::map<std::string, TensorView>& tensors, const nlohmann::json& scalars) {
        const std::string where = kind_ + " optimizer state";
        if (!scalars.is_object()) throw format_error(where + ": scalars must be a JSON object, got " + scalars.dump());
        const auto shown = [&](nlohmann::json::const_iterator found) {
            return found == scalars.end() ? std::string("(missing)") : found->dump();
        };
        const auto kind = scalars.find("kind");
        if (kind == scalars.end() || *kind != kind_) {
            throw format_error(where + ": the saved state is of kind " + shown(kind) + ", not \"" + kind_ + "\"");
        }
        // Every hyperparameter must be ours: resuming with others would change the math.
        const nlohmann::json ours = hyperparameters();
        for (auto field = ours.cbegin(); field != ours.cend(); ++field) {
            const auto saved = scalars.find(field.key());
            if (saved == scalars.end() || *saved != field.value()) {
                throw format_error(where + ": saved " + field.key() + " = " + shown(saved) + " but this optimizer has " +
                                   field.value().dump());
            }
        }
        const auto step = scalars.find("step");
        if (step == scalars.end() || !step->is_number_unsigned()) {
            throw format_error(where + ": \"step\" must be a non-negative integer, got " + shown(step));
        }
        std::set<std::string> expected;
        for (std::size_t slot = 0; slot < slot_names_.size(); ++slot) {
            for (const Tracked& tracked : tracked_) {
                const std::string name = state_name(slot, tracked);
                expected.insert(name);
                const auto found = tensors.find(name);
                if (found == tensors.end()) throw format_error(where + ": missing tensor '" + name + "'");
                const TensorView& view = found->second;
                if (view.dtype != DType::f32 || view.shape != tracked.parameter->shape) {
                    throw format_error(where + ": tensor '" + name + "' is " + std::string(dtype_name(view.dtype)) +
                                       " " + shape_to_string(view.shape) + ", expected F32 " +
                                       shape_to_string(tracked.parameter->shape));
                }
            }
        }
        for (const auto& [name, view] : tensors) {
            if (name.rfind(state_prefix, 0) == 0 && !expected.count(name)) {
                throw format_error(where + ": tensor '" + name +
                                   "' is state this optimizer does not keep (a frozen or unknown parameter, or another slot)");
            }
        }
        for (std::size_t slot = 0; slot < slot_names_.size(); ++slot) {
            for (const Tracked& tracked : tracked_) {
                const TensorView& view = tensors.at(state_name(slot, tracked));
                std::memcpy(slots_[slot].data() + tracked.offset, view.data, view.nbytes());
            }
        }
        steps_ = step->get<std::uint64_t>();
    }

    void load_state(const io::TensorStore& store, const nlohmann::json& scalars) {
        std::map<std::string, TensorView> tensors;
        for (const std::string& name : store.names()) {
            if (name.rfind(state_prefix, 0) == 0) tensors[name] = store.get(name);
        }
        load_state(tensors, scalars);
    }

protected:
    struct Tracked {
        Parameter* parameter;
        std::size_t offset;  // where its state starts in every slot buffer
    };

    Optimizer(Parameters& parameters, std::string kind, std::vector<std::string> slot_names)
        : parameters_(&parameters), kind_(std::move(kind)), slot_names_(std::move(slot_names)) {
        std::size_t total = 0;
        std::vector<const Parameter*> tracked;
        for (Parameter& parameter : parameters.list()) {
            if (!parameter.trainable) continue;
            tracked_.push_back({&parameter, total});
            tracked.push_back(&parameter);
            total += parameter.size;
        }
        if (tracked_.empty()) throw argument_error(kind_ + ": every parameter is frozen; there is nothing to train");
        for (std::size_t slot = 0; slot < slot_names_.size(); ++slot) slots_.emplace_back(total, 0.0f);
        blocks_ = detail::split_into_blocks(tracked);
    }

    // Per-step scalars, computed once in double as torch computes them in Python.
    virtual void begin_step(double learning_rate, double step) = 0;
    // Updates elements [begin, end) of one parameter and its state; called concurrently
    // for disjoint ranges.
    virtual void update(const Tracked& tracked, std::size_t begin, std::size_t end) = 0;
    virtual nlohmann::json hyperparameters() const = 0;

    float* slot(std::size_t index, const Tracked& tracked) noexcept { return slots_[index].data() + tracked.offset; }

private:
    static constexpr std::string_view state_prefix = "optimizer.";

    std::string state_name(std::size_t slot, const Tracked& tracked) const {
        return std::string(state_prefix) + slot_names_[slot] + "." + tracked.parameter->name;
    }

    // State is per parameter and bias corrections count steps, so the trainable set
    // cannot change under a running optimizer without silently changing the math.
    void check_trainable_set() const {
        std::size_t next = 0;
        for (const Parameter& parameter : parameters_->list()) {
            const bool tracked = next < tracked_.size() && tracked_[next].parameter == &parameter;
            if (tracked) ++next;
            if (parameter.trainable != tracked) {
                throw argument_error(kind_ + ": parameter '" + parameter.name + "' was " +
                                     (tracked ? "frozen" : "unfrozen") +
                                     " after the optimizer was built; freeze parameters before building it");
            }
        }
    }

    Parameters* parameters_;
    std::string kind_;
    std::vector<std::string> slot_names_;
    std::vector<Tracked> tracked_;           // the trainable parameters, in list order
    std::vector<std::vector<float>> slots_;  // [slot][sum of tracked sizes]
    std::vector<detail::Block> blocks_;
    std::uint64_t steps_ = 0;
};

struct AdamWConfig {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.01;  // decoupled; applied to matrices only (Parameter::decays)
};

// torch.optim.AdamW, _single_tensor_adamw in torch 1.13, amsgrad and maximize off.
class AdamW final : public Optimizer {
public:
    explicit AdamW(Parameters& parameters, AdamWConfig config = {})
        : Optimizer(parameters, "adamw", {"exp_avg", "exp_avg_sq"}), config_(config) {
        if (!(config.beta1 >= 0.0 && config.beta1 < 1.0) || !(config.beta2 >= 0.0 && config.beta2 < 1.0)) {
            throw argument_error("adamw: betas must be in [0, 1), got " + std::to_string(config.beta1) + ", " +
                                 std::to_string(config.beta2));
        }
        if (!(config.eps >= 0.0) || !(config.weight_decay >= 0.0)) {
            throw argument_error("adamw: eps and weight_decay must be >= 0");
        }
    }

    const AdamWConfig& config() const noexcept { return config_; }

private:
    // Python floats become f32 where torch hands them to a kernel as a scalar.
    struct StepScalars {
        float decay_factor, beta1, one_minus_beta1, beta2, one_minus_beta2;
        float bias_correction2_sqrt, eps, negative_step_size;
    };

    void begin_step(double learning_rate, double step) override {
        const double bias_correction1 = 1.0 - std::pow(config_.beta1, step);
        const double bias_correction2 = 1.0 - std::pow(config_.beta2, step);
        scalars_ = {float(1.0 - learning_rate * config_.weight_decay),
                    float(config_.beta1),
                    float(1.0 - config_.beta1),
                    float(config_.beta2),
                    float(1.0 - config_.beta2),
                    float(std::sqrt(bias_correction2)),
                    float(config_.eps),
                    float(-(learning_rate / bias_correction1))};
    }

    void update(const Tracked& tracked, std::size_t begin, std::size_t end) override {
        const StepScalars s = scalars_;
        float* value = tracked.parameter->value;
        const float* gradient = tracked.parameter->gradient;
        float* exp_avg = slot(0, tracked);
        float* exp_avg_sq = slot(1, tracked);
        const bool decays = tracked.parameter->decays() && config_.weight_decay != 0.0;
        kernels::simd::elementwise(begin, end, [&](std::size_t i, auto type) {
            using T = decltype(type);
            using kernels::simd::load_as, kernels::simd::store_as;
            const T g = load_as<T>(gradient + i);
            T w = load_as<T>(value + i);
            if (decays) w = w * T(s.decay_factor);  // param.mul_
            const T m = load_as<T>(exp_avg + i) * T(s.beta1) + T(s.one_minus_beta1) * g;  // mul_(beta1).add_(g, alpha)
            const T v = load_as<T>(exp_avg_sq + i) * T(s.beta2) + T(s.one_minus_beta2) * g * g;  // mul_(beta2).addcmul_
            const T denominator = kernels::simd::square_root(v) / T(s.bias_correction2_sqrt) + T(s.eps);
            store_as(exp_avg + i, m);
            store_as(exp_avg_sq + i, v);
            store_as(value + i, w + T(s.negative_step_size) * m / denominator);  // addcdiv_(m, denom, value)
        });
    }

    nlohmann::json hyperparameters() const override {
        return {{"beta1", config_.beta1}, {"beta2", config_.beta2}, {"eps", config_.eps},
                {"weight_decay", config_.weight_decay}};
    }

    AdamWConfig config_;
    StepScalars scalars_{};
};

struct SGDConfig {
    double momentum = 0.0;
    double weight_decay = 0.0;  // coupled (added to the gradient); matrices only
    bool nesterov = false;
};

// torch.optim.SGD, _single_tensor_sgd in torch 1.13, dampening 0 and maximize off.
class SGD final : public Optimizer {
public:
    explicit SGD(Parameters& parameters, SGDConfig config = {})
        : Optimizer(parameters, "sgd", config.momentum != 0.0 ? std::vector<std::string>{"momentum_buffer"}
                                                              : std::vector<std::string>{}),
          config_(config) {
        if (!(config.momentum >= 0.0) || !(config.weight_decay >= 0.0)) {
            throw argument_error("sgd: momentum and weight_decay must be >= 0");
        }
        if (config.nesterov && config.momentum == 0.0) throw argument_error("sgd: nesterov needs a momentum");
    }

    const SGDConfig& config() const noexcept { return config_; }

private:
    struct StepScalars {
        float momentum, weight_decay, negative_learning_rate;
        bool first;  // torch starts the buffer as a copy of the first gradient
    };

    void begin_step(double learning_rate, double step) override {
        scalars_ = {float(config_.momentum), float(config_.weight_decay), float(-learning_rate), step == 1.0};
    }

    void update(const Tracked& tracked, std::size_t begin, std::size_t end) override {
        const StepScalars s = scalars_;
        float* value = tracked.parameter->value;
        const float* gradient = tracked.parameter->gradient;
        const bool decay = tracked.parameter->decays() && config_.weight_decay != 0.0;
        float* buffer = config_.momentum != 0.0 ? slot(0, tracked) : nullptr;
        for (std::size_t i = begin; i < end; ++i) {
            float direction = gradient[i];
            if (decay) direction = direction + s.weight_decay * value[i];  // d_p.add(param, alpha=wd)
            if (buffer != nullptr) {
                buffer[i] = s.first ? direction : buffer[i] * s.momentum + direction;
                direction = config_.nesterov ? direction + s.momentum * buffer[i] : buffer[i];
            }
            value[i] = value[i] + s.negative_learning_rate * direction;  // param.add_(d_p, alpha=-lr)
        }
    }

    nlohmann::json hyperparameters() const override {
        return {{"momentum", config_.momentum}, {"weight_decay", config_.weight_decay}, {"nesterov", config_.nesterov}};
    }

    SGDConfig config_;
    StepScalars scalars_{};
};

}  // namespace loom::train
