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
    // dbias = column sums of dout to their gradients. Both products are sums of outer
    // products (kernels/products.hpp), each element in one fixed order.
    void backward(const float* x, std::size_t rows, const float* dout, float* dx, const GradientOf& gradient_of,
                  ThreadPool& pool) const {
        const std::size_t in = in_features(), out = out_features();
        if (dx) {  // dx[r, i] = sum over o of dout[r, o] * W[o, i]
            kernels::sum_of_outer_products({dout, out, 1}, f32_values(weight), in, rows, in, out, dx, in, false, pool);
        }
        if (float* weight_gradient = gradient_of(weight)) {  // dW[o, i] += sum over r of dout[r, o] * x[r, i]
            kernels::sum_of_outer_products({dout, 1, out}, x, in, out, in, rows, weight_gradient, in, true, pool);
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
