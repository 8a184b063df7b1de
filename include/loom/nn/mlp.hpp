#pragma once
// The SwiGLU feed-forward block: down(silu(gate(x)) * up(x)).
#include <algorithm>
#include <cstddef>
#include <vector>

#include "loom/core/aligned.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/matmul.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/nn/linear.hpp"

namespace loom::nn {

struct MlpScratch {
    AlignedVector<float> gate, up;  // [tokens, intermediate]
};

// What a training forward keeps for the backward pass, [tokens, intermediate] each.
struct MlpActivations {
    AlignedVector<float> gate, up;  // the two projections
    AlignedVector<float> hidden;    // silu(gate) * up, the input of down
};

struct MlpBackwardScratch {
    AlignedVector<float> dhidden, dgate, dup, dx_up;
};

struct SwiGLU {
    Linear gate, up, down;

    // x: [tokens, hidden] -> out: [tokens, hidden]
    void forward(const float* x, std::size_t tokens, MlpScratch& scratch, float* out, ThreadPool& pool) const {
        const std::size_t intermediate = gate.out_features();
        scratch.gate.resize(tokens * intermediate);
        scratch.up.resize(tokens * intermediate);
        float* gated = scratch.gate.data();
        float* up_values = scratch.up.data();
        // Gate, up and the SiLU product in one pass: a thread owns the same columns of all three.
        kernels::for_column_blocks(pool, intermediate, [&](std::size_t begin, std::size_t end) {
            gate.forward_columns(x, tokens, gated, begin, end);
            up.forward_columns(x, tokens, up_values, begin, end);
            for (std::size_t t = 0; t < tokens; ++t) {
                kernels::silu_multiply(gated + t * intermediate + begin, up_values + t * intermediate + begin,
                                       end - begin);
            }
        });
        down.forward(gated, tokens, out, pool);
    }

    // forward(), keeping the activations backward() needs.
    void forward_keeping(const float* x, std::size_t tokens, MlpActivations& saved, float* out, ThreadPool& pool) const {
        const std::size_t size = tokens * gate.out_features();
        saved.gate.resize(size);
        saved.up.resize(size);
        saved.hidden.resize(size);
        gate.forward(x, tokens, saved.gate.data(), pool);
        up.forward(x, tokens, saved.up.data(), pool);
        std::copy(saved.gate.begin(), saved.gate.end(), saved.hidden.begin());
        kernels::silu_multiply(saved.hidden.data(), saved.up.data(), size);
        down.forward(saved.hidden.data(), tokens, out, pool);
    }

    // Backward of forward_keeping(): dx [tokens, hidden] from dout [tokens, hidden].
    void backward(const float* x, std::size_t tokens, const MlpActivations& saved, const float* dout, float* dx,
                  const GradientOf& gradient_of, MlpBackwardScratch& scratch,
                  ThreadPool& pool) const {
        const std::size_t size = tokens * gate.out_features();
        scratch.dhidden.resize(size);
        scratch.dgate.resize(size);
        scratch.dup.resize(size);
        scratch.dx_up.resize(tokens * gate.in_features());
        down.backward(saved.hidden.data(), tokens, dout, scratch.dhidden.data(), gradient_of, pool);
        kernels::silu_multiply_backward(saved.gate.data(), saved.up.data(), scratch.dhidden.data(), scratch.dgate.data(),
                                        scratch.dup.data(), size);
        gate.backward(x, tokens, scratch.dgate.data(), dx, gradient_of, pool);
        up.backward(x, tokens, scratch.dup.data(), scratch.dx_up.data(), gradient_of, pool);
        kernels::add_in_place(dx, scratch.dx_up.data(), tokens * gate.in_features());
    }
};

}  // namespace loom::nn
