#pragma once
// y = x W^T + b, the nn.Linear of PyTorch, with W kept in its checkpoint dtype.
#include <cstddef>
#include <optional>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/tensor.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/matmul.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/products.hpp"
#include "loom/nn/gradient.hpp"

namespace loom::nn {

// Buffers of Linear::backward, shared by every layer of a model.
struct LinearBackwardScratch {
    std::vector<float> weight_transposed;  // [in, out]
    std::vector<float> dout_transposed;    // [out, rows]
    std::vector<float> x_transposed;       // [in, rows]
    kernels::ProductScratch products;
};

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

    // Backward of forward() with f32 weights. dout: [rows, out_features]. Writes
    // dx = dout W ([rows, in_features]) unless dx is null, and adds dW = dout^T x and
    // dbias = column sums of dout to their gradients. Both are products of rows on
    // transposed copies (kernels/products.hpp), each element in one fixed order.
    void backward(const float* x, std::size_t rows, const float* dout, float* dx, const GradientOf& gradient_of,
                  LinearBackwardScratch& scratch, ThreadPool& pool) const {
        const std::size_t in = in_features(), out = out_features();
        if (dx) {
            scratch.weight_transposed.resize(in * out);
            kernels::transpose(f32_values(weight), out, in, scratch.weight_transposed.data(), pool);
            kernels::product_of_rows(dout, rows, scratch.weight_transposed.data(), in, out, dx, false, scratch.products, pool);
        }
        if (float* weight_gradient = gradient_of(weight)) {
            scratch.dout_transposed.resize(out * rows);
            scratch.x_transposed.resize(in * rows);
            kernels::transpose(dout, rows, out, scratch.dout_transposed.data(), pool);
            kernels::transpose(x, rows, in, scratch.x_transposed.data(), pool);
            kernels::product_of_rows(scratch.dout_transposed.data(), out, scratch.x_transposed.data(), in, rows,
                                     weight_gradient, true, scratch.products, pool);
        }
        if (float* bias_gradient = bias ? gradient_of(*bias) : nullptr) {
            for (std::size_t r = 0; r < rows; ++r) kernels::add_in_place(bias_gradient, dout + r * out, out);
        }
    }

    // This layer as one product of a kernels::matmul_group writing to `out`.
    kernels::Product product(float* out) const { return {&weight, bias ? &*bias : nullptr, out}; }

private:
    static const float* f32_values(const TensorView& view) {
        if (view.dtype != DType::f32) throw argument_error("backward passes need f32 weights (train on f32 master copies)");
        return reinterpret_cast<const float*>(view.data);
    }
};

}  // namespace loom::nn
