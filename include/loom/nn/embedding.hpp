#pragma once
// Token embedding: one row of the table per token id.
#include <cstddef>
#include <string>

#include "loom/core/error.hpp"
#include "loom/core/tensor.hpp"
#include "loom/nn/gradient.hpp"

namespace loom::nn {

struct Embedding {
    TensorView table;  // [vocab, hidden]

    std::size_t vocab_size() const noexcept { return table.shape[0]; }
    std::size_t dim() const noexcept { return table.shape[1]; }

    // out: [count, dim]
    void forward(const int* ids, std::size_t count, float* out) const {
        const std::size_t width = dim();
        for (std::size_t t = 0; t < count; ++t) {
            if (ids[t] < 0 || std::size_t(ids[t]) >= vocab_size()) {
                throw argument_error("token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                                     " is outside the vocabulary [0, " + std::to_string(vocab_size()) + ")");
            }
            const std::size_t base = std::size_t(ids[t]) * width;
            for (std::size_t i = 0; i < width; ++i) out[t * width + i] = table.at(base + i);
        }
    }

    // Backward of forward(): adds each row of dout to its token's row of the table's
    // gradient, tokens in order, so a repeated token sums its rows in a fixed order.
    // forward() has already checked the ids.
    void backward(const int* ids, std::size_t count, const float* dout, const GradientOf& gradient_of) const {
        float* dtable = gradient_of(table);
        if (dtable == nullptr) return;
        const std::size_t width = dim();
        for (std::size_t t = 0; t < count; ++t) {
            float* row = dtable + std::size_t(ids[t]) * width;
            for (std::size_t i = 0; i < width; ++i) row[i] = row[i] + dout[t * width + i];
        }
    }
};

}  // namespace loom::nn
