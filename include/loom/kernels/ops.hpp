#pragma once
// Element-wise and row-wise kernels of the forward and backward passes. Reductions use the fixed lane
// order of reduce.hpp and transcendental functions come from math.hpp, so the same input
// gives the same bits on every target. The SIMD loops run the same IEEE operation on each
// element as a plain loop would (no FMA, no reciprocal in place of a division), so their
// results equal the scalar formulas given in each comment bit for bit.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "loom/core/dtype.hpp"
#include "loom/core/tensor.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/math.hpp"
#include "loom/kernels/reduce.hpp"
#include "loom/kernels/simd.hpp"

namespace loom::kernels {

namespace detail {

// `candidate > current ? candidate : current`: a NaN candidate never wins, and a NaN
// current value is never replaced.
inline float larger(float candidate, float current) noexcept { return candidate > current ? candidate : current; }

#if defined(LOOM_SIMD_XSIMD)
inline simd::Floats larger(const simd::Floats& candidate, const simd::Floats& current) noexcept {
    return xsimd::select(candidate > current, candidate, current);
}
#elif defined(LOOM_SIMD_WASM128)
inline simd::Floats larger(const simd::Floats& candidate, const simd::Floats& current) noexcept {
    const v128_t pick = wasm_f32x4_gt(candidate.bits, current.bits);
    return simd::Floats(wasm_v128_bitselect(candidate.bits, current.bits, pick));
}
#endif

// The maximum the scalar loop `m = values[0]; m = larger(values[i], m)` finds: NaN if
// values[0] is NaN, else the largest non-NaN value. Lanes that all start at values[0]
// find the same value. Only a zero maximum can differ, and only in sign (ties keep the
// first zero a lane saw); softmax cannot tell: v - (+0) and v - (-0) differ only for a
// zero v, and only in the sign of a zero that exp maps to 1 either way.
inline float maximum(const float* values, std::size_t n) noexcept {
    simd::Floats lanes = simd::broadcast(values[0]);
    std::size_t i = 0;
    for (; i + simd::width <= n; i += simd::width) lanes = larger(simd::load(values + i), lanes);
    float lane_values[simd::width];
    simd::store(lane_values, lanes);
    float result = values[0];
    for (float lane : lane_values) result = larger(lane, result);
    for (; i < n; ++i) result = larger(values[i], result);
    return result;
}

// values[i] = exp_f32(values[i] - subtrahend) for i < n. The array has room for `room` >= n
// values: when that reaches past the last whole register, the last few values go through
// one more register (the values after n come out as garbage) instead of one at a time
// through the scalar exp, which costs about ten times as much per value. Each lane gets
// the scalar exp's bits either way.
inline void exp_of_difference(float* values, float subtrahend, std::size_t n, std::size_t room) noexcept {
    const std::size_t registers_end = (n + simd::width - 1) / simd::width * simd::width;
    const std::size_t end = registers_end <= room ? registers_end : n;
    simd::elementwise<exp_registers>(0, end, [&](std::size_t i, auto type) {
        using T = decltype(type);
        simd::store_as(values + i, exp_f32_any(simd::load_as<T>(values + i) - T(subtrahend)));
    });
}

// values[i] = values[i] / divisor (a true division: a reciprocal would round differently)
inline void divide_in_place(float* values, float divisor, std::size_t n) noexcept {
    simd::elementwise(0, n, [&](std::size_t i, auto type) {
        using T = decltype(type);
        simd::store_as(values + i, simd::load_as<T>(values + i) / T(divisor));
    });
}

// out[i] = weight[i] * (x[i] * inverse_rms), the weight stored as `dtype`.
template <DType dtype>
inline void scale_by_weight(const float* x, const std::byte* weight, float inverse_rms, float* out,
                            std::size_t n) noexcept {
    const simd::Floats scale = simd::broadcast(inverse_rms);
    std::size_t i = 0;
    for (; i + reduction_lanes <= n; i += reduction_lanes) {
        const simd::Lanes16 w = simd::load16_weights<dtype>(weight + i * dtype_size(dtype));
        simd::Lanes16 values = simd::load16(x + i);
        for (std::size_t p = 0; p < simd::parts; ++p) values.part[p] = w.part[p] * (values.part[p] * scale);
        simd::store16(out + i, values);
    }
    for (; i < n; ++i) out[i] = load_as_f32(weight, dtype, i) * (x[i] * inverse_rms);
}

}  // namespace detail

// out = weight * (x / sqrt(mean(x^2) + eps)) over one row of `dim` (Hugging Face's
// LlamaRMSNorm: normalise first, then scale by the weight):
// out[i] = weight.at(i) * (x[i] * inverse_rms).
inline float inverse_rms(const float* x, float eps, std::size_t dim) noexcept {
    const float mean_square = sum_of_squares(x, dim) / float(dim);
    return 1.0f / std::sqrt(mean_square + eps);  // sqrt is exactly rounded on every target
}

inline void rmsnorm(const float* x, const TensorView& weight, float eps, float* out, std::size_t dim) noexcept {
    const float inverse_rms = kernels::inverse_rms(x, eps, dim);
    switch (weight.dtype) {
        case DType::f32: return detail::scale_by_weight<DType::f32>(x, weight.data, inverse_rms, out, dim);
        case DType::bf16: return detail::scale_by_weight<DType::bf16>(x, weight.data, inverse_rms, out, dim);
        case DType::f16: return detail::scale_by_weight<DType::f16>(x, weight.data, inverse_rms, out, dim);
    }
}

// Backward of rmsnorm() for one row, weights in f32. With r = inverse_rms(x) and
// g = dout * weight:  dx = r * g - x * (r^3 / dim) * sum(g * x);  dweight += dout * x * r.
// scratch: [dim]. dweight may be null (a frozen weight).
inline void rmsnorm_backward(const float* x, const float* weight, float eps, const float* dout, float* dx,
                             float* dweight, float* scratch, std::size_t dim) noexcept {
    const float r = inverse_rms(x, eps, dim);
    for (std::size_t i = 0; i < dim; ++i) scratch[i] = dout[i] * weight[i];
    const float projection = dot(scratch, x, dim) * (r * r * r / float(dim));
    for (std::size_t i = 0; i < dim; ++i) dx[i] = r * scratch[i] - x[i] * projection;
    if (dweight) {
        for (std::size_t i = 0; i < dim; ++i) dweight[i] = dweight[i] + dout[i] * (x[i] * r);
    }
}

// The index the scalar loop `best = 0; if (values[i] > values[best]) best = i` finds: the
// first position of the largest value, 0 if values[0] is NaN (NaN never wins a comparison).
inline std::size_t argmax(const float* values, std::size_t n) noexcept {
    if (n == 0) return 0;
    const float largest = detail::maximum(values, n);
    if (largest != largest) return 0;
    std::size_t i = 0;
    for (; i + simd::width <= n; i += simd::width) {
        if (simd::any_equal(simd::load(values + i), largest)) break;
    }
    while (!(values[i] == largest)) ++i;
    return i;
}

// Whether no value is infinite or NaN: v - v is 0 for a finite v and NaN otherwise, and a
// NaN stays in the lane's sum. A scan of the logits per generated token, so one register's
// worth of values per step rather than a branch per value.
inline bool all_finite(const float* values, std::size_t n) noexcept {
    simd::Floats nonzero_if_not_finite = simd::broadcast(0.0f);
    std::size_t i = 0;
    for (; i + simd::width <= n; i += simd::width) {
        const simd::Floats v = simd::load(values + i);
        nonzero_if_not_finite = nonzero_if_not_finite + (v - v);
    }
    float lanes[simd::width];
    simd::store(lanes, nonzero_if_not_finite);
    for (float lane : lanes) {
        if (!(lane == 0.0f)) return false;
    }
    for (; i < n; ++i) {
        if (!(values[i] - values[i] == 0.0f)) return false;
    }
    return true;
}

// In-place softmax over n values: values[i] = exp_f32(values[i] - max) / sum(...), the
// sum in reduce.hpp's fixed order.
// `room` >= n: the values the array has room for, which may be overwritten after n (see
// exp_of_difference; the softmax rows of attention are padded to whole blocks of keys).
inline void softmax(float* values, std::size_t n, std::size_t room) noexcept {
    if (n == 0) return;
    detail::exp_of_difference(values, detail::maximum(values, n), n, room);
    detail::divide_in_place(values, sum(values, n), n);
}
inline void softmax(float* values, std::size_t n) noexcept { softmax(values, n, n); }

// gate[i] = silu(gate[i]) * up[i], with silu(x) = x * (1 / (1 + e^-x)) as PyTorch computes it.
inline void silu_multiply(float* gate, const float* up, std::size_t n) noexcept {
    simd::elementwise<exp_registers>(0, n, [&](std::size_t i, auto type) {
        using T = decltype(type);
        const T x = simd::load_as<T>(gate + i), one(1.0f);
        const T sigmoid = one / (one + exp_f32_any(-x));
        simd::store_as(gate + i, (x * sigmoid) * simd::load_as<T>(up + i));
    });
}

// Backward of silu_multiply() given its inputs gate and up and the gradient of its output:
// d/dgate of silu(g) * u = u * s * (1 + g * (1 - s)) with s = sigmoid(g), as PyTorch's silu backward.
inline void silu_multiply_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                                   std::size_t n) noexcept {
    simd::elementwise<exp_registers>(0, n, [&](std::size_t i, auto type) {
        using T = decltype(type);
        const T g = simd::load_as<T>(gate + i), d = simd::load_as<T>(dout + i), one(1.0f);
        const T sigmoid = one / (one + exp_f32_any(-g));
        simd::store_as(dup + i, d * (g * sigmoid));
        simd::store_as(dgate + i, (d * simd::load_as<T>(up + i)) * (sigmoid * (one + g * (one - sigmoid))));
    });
}

// x += y
inline void add_in_place(float* x, const float* y, std::size_t n) noexcept {
    simd::elementwise(0, n, [&](std::size_t i, auto type) {
        using T = decltype(type);
        simd::store_as(x + i, simd::load_as<T>(x + i) + simd::load_as<T>(y + i));
    });
}

}  // namespace loom::kernels
