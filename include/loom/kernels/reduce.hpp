#pragma once
// Fixed-order reductions. Every dot product and sum in Loom accumulates element i into
// lane i % 16 and then folds the 16 lanes in one fixed tree (simd.hpp). The order does not
// depend on SIMD width, thread count or batch size, which is what makes logits
// bit-identical across builds. A row whose length is not a multiple of 16 ends with a
// zero-padded block.
#include <cstddef>

#include "loom/core/config.hpp"
#include "loom/core/dtype.hpp"
#include "loom/kernels/simd.hpp"

namespace loom::kernels {

// sum_i x[i] * w[i] over n elements, w stored as `dtype`.
template <DType dtype>
inline float dot(const float* x, const std::byte* w, std::size_t n) noexcept {
    simd::Lanes16 lanes = simd::zero16();
    const std::size_t whole = n - n % reduction_lanes;
    for (std::size_t i = 0; i < whole; i += reduction_lanes) {
        simd::multiply_add(lanes, simd::load16(x + i), simd::load16_weights<dtype>(w + i * dtype_size(dtype)));
    }
    if (whole < n) {
        simd::multiply_add(lanes, simd::load16_tail(x + whole, n - whole),
                           simd::load16_weights_tail<dtype>(w + whole * dtype_size(dtype), n - whole));
    }
    return simd::fold(lanes);
}

inline float dot(const float* x, const float* y, std::size_t n) noexcept {
    return dot<DType::f32>(x, reinterpret_cast<const std::byte*>(y), n);
}

inline float sum(const float* x, std::size_t n) noexcept {
    simd::Lanes16 lanes = simd::zero16();
    const std::size_t whole = n - n % reduction_lanes;
    for (std::size_t i = 0; i < whole; i += reduction_lanes) {
        const simd::Lanes16 block = simd::load16(x + i);
        for (std::size_t p = 0; p < simd::parts; ++p) lanes.part[p] = lanes.part[p] + block.part[p];
    }
    if (whole < n) {
        const simd::Lanes16 block = simd::load16_tail(x + whole, n - whole);
        for (std::size_t p = 0; p < simd::parts; ++p) lanes.part[p] = lanes.part[p] + block.part[p];
    }
    return simd::fold(lanes);
}

inline float sum_of_squares(const float* x, std::size_t n) noexcept { return dot(x, x, n); }

}  // namespace loom::kernels
