#pragma once
// The SwiGLU feed-forward block: down(silu(gate(x)) * up(x)).
#include <cstddef>
#include <vector>

#include "loom/core/thread_pool.hpp"
#include "loom/kernels/matmul.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/nn/linear.hpp"

namespace loom::nn {

struct MlpScratch {
    std::vector<float> gate, up;  // [tokens, intermediate]
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
};

}  // namespace loom::nn
