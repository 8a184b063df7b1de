#pragma once
// Softmax cross-entropy over next-token targets, as torch.nn.functional.cross_entropy
// with ignore_index=-100 and mean reduction: the mean over the targets that count.
#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/math.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/train/batch.hpp"

namespace loom::train {

struct Loss {
    double value = 0.0;       // mean over counted targets (0 when none count)
    std::size_t targets = 0;  // how many targets counted
};

inline void check_targets(std::span<const int> targets, std::size_t vocab) {
    for (std::size_t row = 0; row < targets.size(); ++row) {
        const int target = targets[row];
        if (target != ignore_index && (target < 0 || std::size_t(target) >= vocab)) {
            throw argument_error("target " + std::to_string(target) + " at row " + std::to_string(row) +
                                 " is outside the vocabulary [0, " + std::to_string(vocab) + ") and is not " +
                                 std::to_string(ignore_index) + " (ignored)");
        }
    }
}

// logits: [rows, vocab]. Returns the loss; when `gradient` is true, also replaces the logits by
// d(loss * gradient_scale)/d(logits) = (softmax - one_hot(target)) * gradient_scale / counted
// (rows with an ignored target get zeros). Each row's log-sum-exp uses the kernels' own
// exp and the fixed-order sum; rows are summed in order, so the loss has one value for
// any thread count.
inline Loss cross_entropy(float* logits, std::size_t rows, std::size_t vocab, std::span<const int> targets,
                          bool gradient, float gradient_scale, ThreadPool& pool) {
    check_targets(targets, vocab);
    Loss loss;
    for (int target : targets) loss.targets += target != ignore_index;
    std::vector<double> row_losses(rows, 0.0);
    const float row_scale = loss.targets ? gradient_scale / float(loss.targets) : 0.0f;
    pool.parallel_for(rows, [&](std::size_t begin, std::size_t end) {
        thread_local std::vector<float> copy;  // without a gradient the logits stay as they are
        for (std::size_t row = begin; row < end; ++row) {
            float* values = logits + row * vocab;
            const int target = targets[row];
            if (target == ignore_index) {
                if (gradient) std::fill(values, values + vocab, 0.0f);
                continue;
            }
            if (!gradient) {
                copy.assign(values, values + vocab);
                values = copy.data();
            }
            const float largest = kernels::detail::maximum(values, vocab);
            const float target_margin = values[target] - largest;
            kernels::detail::exp_of_difference(values, largest, vocab, vocab);
            const float total = kernels::sum(values, vocab);
            row_losses[row] = kernels::log_f64(double(total)) - double(target_margin);
            if (!gradient) continue;
            kernels::detail::divide_in_place(values, total, vocab);
            values[target] = values[target] - 1.0f;
            for (std::size_t i = 0; i < vocab; ++i) values[i] = values[i] * row_scale;
        }
    });
    double total = 0.0;
    for (double value : row_losses) total += value;
    if (loss.targets) loss.value = total / double(loss.targets);
    return loss;
}

}  // namespace loom::train
