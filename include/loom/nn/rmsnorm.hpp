#pragma once
// Root-mean-square layer norm (LlamaRMSNorm), applied to each row independently.
#include <cstddef>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/tensor.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/nn/gradient.hpp"

namespace loom::nn {

struct RMSNorm {
    TensorView weight;  // [dim]
    float eps = 1e-6f;

    std::size_t dim() const noexcept { return weight.shape[0]; }

    // x, out: [rows, dim]; out may alias x.
    void forward(const float* x, std::size_t rows, float* out) const noexcept {
        for (std::size_t r = 0; r < rows; ++r) kernels::rmsnorm(x + r * dim(), weight, eps, out + r * dim(), dim());
    }

    // Backward of forward() with an f32 weight: dx [rows, dim] from dout; adds the weight's gradient.
    void backward(const float* x, std::size_t rows, const float* dout, float* dx, const GradientOf& gradient_of,
                  std::vector<float>& scratch) const {
        if (weight.dtype != DType::f32) throw argument_error("RMSNorm backward needs an f32 weight");
        const float* w = reinterpret_cast<const float*>(weight.data);
        float* dweight = gradient_of(weight);
        scratch.resize(dim());
        for (std::size_t r = 0; r < rows; ++r) {
            kernels::rmsnorm_backward(x + r * dim(), w, eps, dout + r * dim(), dx + r * dim(), dweight, scratch.data(),
                                      dim());
        }
    }
};

}  // namespace loom::nn
