#pragma once
// y = x W^T + b, the nn.Linear of PyTorch, with W kept in its checkpoint dtype.
#include <cstddef>
#include <optional>

#include "loom/core/tensor.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/matmul.hpp"

namespace loom::nn {

struct Linear {
    TensorView weight;               // [out_features, in_features]
    std::optional<TensorView> bias;  // [out_features]

    std::size_t in_features() const noexcept { return weight.shape[1]; }
    std::size_t out_features() const noexcept { return weight.shape[0]; }

    // x: [rows, in_features] -> out: [rows, out_features]
    void forward(const float* x, std::size_t rows, float* out, ThreadPool& pool) const {
        kernels::matmul(x, rows, weight, bias ? &*bias : nullptr, out, pool);
    }

    // Columns [begin, end) of forward's output, for callers that split the work themselves.
    void forward_columns(const float* x, std::size_t rows, float* out, std::size_t begin, std::size_t end) const {
        kernels::matmul_columns(x, rows, weight, bias ? &*bias : nullptr, out, out_features(), begin, end);
    }

    // This layer as one product of a kernels::matmul_group writing to `out`.
    kernels::Product product(float* out) const { return {&weight, bias ? &*bias : nullptr, out}; }
};

}  // namespace loom::nn
