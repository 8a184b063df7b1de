#pragma once
// Loom's own exp, log, sin and cos. libm differs between glibc, musl and emscripten, so
// results computed with it would differ between a native build and the browser build.
// These use only IEEE basic operations (+ - * / and exact bit manipulation) in double,
// which every target rounds identically when FMA contraction is off
// (-ffp-contract=off), so the same input gives the same bits everywhere.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "loom/kernels/simd.hpp"

#if defined(LOOM_SIMD_XSIMD) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define LOOM_EXP_X86 1
#endif

namespace loom::kernels {

namespace detail {

inline double bits_to_double(std::uint64_t bits) noexcept {
    double value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

inline std::uint64_t double_to_bits(double value) noexcept {
    std::uint64_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

// Round to nearest integer, halves away from zero; |x| is small here (< 2^31).
inline double round_to_integer(double x) noexcept {
    return double(std::int64_t(x + (x >= 0 ? 0.5 : -0.5)));
}

// 2^n as a double for n in the normal range [-1022, 1023].
inline double power_of_two(int n) noexcept {
    return bits_to_double(std::uint64_t(n + 1023) << 52);
}

// e^x = 2^n * e^r with n = round(x / ln 2) and r = x - n ln 2, |r| <= 0.347. The steps
// below are templates so that the scalar exp_f64 and the SIMD exp over double lanes run
// the very same IEEE operations on the very same constants.
inline constexpr double log2e = 1.4426950408889634074;
// ln 2 split so that n * ln2_high is exact for |n| < 2^20 (ln2_high has 32 bits).
inline constexpr double ln2_high = 6.93147180369123816490e-01;
inline constexpr double ln2_low = 1.90821492927058770002e-10;

template <class Real>
inline Real exp_remainder(const Real& x, const Real& n) noexcept {
    return (x - n * ln2_high) - n * ln2_low;
}

// Taylor series of e^r to degree 13: truncation error < 0.347^14/14! ~ 4e-18. Evaluated
// for M values step by step side by side, whose chains of dependent steps the core overlaps.
template <class Real, std::size_t M>
inline void exp_taylor(const Real (&r)[M], Real (&sum)[M]) noexcept {
    constexpr double inverse_factorials[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                             1.0 / 362880.0,    1.0 / 40320.0,    1.0 / 5040.0,
                                             1.0 / 720.0,       1.0 / 120.0,      1.0 / 24.0,
                                             1.0 / 6.0,         0.5,              1.0,
                                             1.0};
    LOOM_UNROLL for (Real& value : sum) value = Real(1.0 / 6227020800.0);  // 1/13!
    for (double coefficient : inverse_factorials) {
        LOOM_UNROLL for (std::size_t m = 0; m < M; ++m) sum[m] = sum[m] * r[m] + Real(coefficient);
    }
}

template <class Real>
inline Real exp_taylor(const Real& r) noexcept {
    const Real values[1] = {r};
    Real sum[1];
    exp_taylor(values, sum);
    return sum[0];
}

}  // namespace detail

// e^x in double; relative error about 2e-16 on the whole range.
inline double exp_f64(double x) noexcept {
    if (x != x) return x;
    if (x > 709.78) return std::numeric_limits<double>::infinity();
    if (x < -745.2) return 0.0;
    const double n = detail::round_to_integer(x * detail::log2e);
    const double sum = detail::exp_taylor(detail::exp_remainder(x, n));
    const int exponent = int(n);
    // Split the scaling so that results in the subnormal range are still produced.
    if (exponent < -1000) return sum * detail::power_of_two(exponent + 1000) * detail::power_of_two(-1000);
    if (exponent > 1000) return sum * detail::power_of_two(exponent - 1000) * detail::power_of_two(1000);
    return sum * detail::power_of_two(exponent);
}

// e^x in float: the double result rounded once, so within 1 ulp (almost always correctly
// rounded). A NaN comes back as it is, bit for bit, without a round trip through double.
inline float exp_f32(float x) noexcept {
    if (x != x) return x;
    return float(exp_f64(double(x)));
}

// The array exp below runs exp_f32 on SIMD lanes: floats widened to double lanes go
// through exp_f64's own steps. It needs double lanes: x86 (SSE2 and up) and ARM64 have
// them. On x86 the float <-> double conversions use intrinsics, chosen by the register
// width xsimd picked; elsewhere xsimd converts through memory.
#if defined(LOOM_SIMD_XSIMD) && (defined(LOOM_EXP_X86) || XSIMD_WITH_NEON64)
#define LOOM_SIMD_EXP_IN_DOUBLES 1
namespace detail {

using Doubles = xsimd::batch<double>;
static_assert(simd::width == 2 * Doubles::size, "a float register widens to two double registers");

// The low and high halves of a float register, widened exactly.
inline void widen(const simd::Floats& x, Doubles& low, Doubles& high) noexcept {
#if defined(LOOM_EXP_X86) && XSIMD_WITH_AVX512F
    // (Zero-masking forms with every lane kept: see simd::low_half.)
    const __m512 v = x;
    low = _mm512_maskz_cvtps_pd(0xff, simd::low_half(v));
    high = _mm512_maskz_cvtps_pd(0xff, simd::high_half(v));
#elif defined(LOOM_EXP_X86) && XSIMD_WITH_AVX
    const __m256 v = x;
    low = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    high = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
#elif defined(LOOM_EXP_X86)
    const __m128 v = x;
    low = _mm_cvtps_pd(v);
    high = _mm_cvtps_pd(_mm_movehl_ps(v, v));
#else
    alignas(64) float lanes[simd::width];
    x.store_aligned(lanes);
    low = Doubles::load_unaligned(lanes);
    high = Doubles::load_unaligned(lanes + Doubles::size);
#endif
}

// Each lane rounded to float once (to nearest even, as float(double) does), low half first.
inline simd::Floats narrow(const Doubles& low, const Doubles& high) noexcept {
#if defined(LOOM_EXP_X86) && XSIMD_WITH_AVX512F
    const __m512d joined =
        _mm512_maskz_insertf64x4(0xff, _mm512_castpd256_pd512(_mm256_castps_pd(_mm512_maskz_cvtpd_ps(0xff, low))),
                                 _mm256_castps_pd(_mm512_maskz_cvtpd_ps(0xff, high)), 1);
    return _mm512_castpd_ps(joined);
#elif defined(LOOM_EXP_X86) && XSIMD_WITH_AVX
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(low)), _mm256_cvtpd_ps(high), 1);
#elif defined(LOOM_EXP_X86)
    return _mm_movelh_ps(_mm_cvtpd_ps(low), _mm_cvtpd_ps(high));
#else
    alignas(64) float lanes[simd::width];
    low.store_unaligned(lanes);
    high.store_unaligned(lanes + Doubles::size);
    return simd::Floats::load_aligned(lanes);
#endif
}

// What double(std::int64_t(x)) gives for |x| < 2^51: truncation toward zero, and +0.0
// rather than -0.0 for -1 < x < 0. Only exact operations, so every architecture agrees.
inline Doubles truncate_toward_zero(const Doubles& x) noexcept {
#if defined(LOOM_EXP_X86) && (XSIMD_WITH_AVX512F || XSIMD_WITH_AVX)
    // One rounding instruction where the target has it (exact, as the steps below); adding
    // +0.0 turns the -0.0 it gives for -1 < x < 0 into +0.0.
#if XSIMD_WITH_AVX512F
    const Doubles truncated = _mm512_maskz_roundscale_pd(0xff, x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
#else
    const Doubles truncated = _mm256_round_pd(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
#endif
    return truncated + Doubles(0.0);
#else
    const Doubles two_to_52(4503599627370496.0);
    const Doubles magnitude = xsimd::abs(x);
    const Doubles nearest = (magnitude + two_to_52) - two_to_52;  // |x| rounded to an integer
    const Doubles floor = xsimd::select(nearest > magnitude, nearest - Doubles(1.0), nearest);
    return xsimd::select(x < Doubles(0.0), Doubles(0.0) - floor, floor);
#endif
}

// The scalar round_to_integer: x + 0.5 or x - 0.5 (rounded), then truncated.
inline Doubles round_to_integer(const Doubles& x) noexcept {
    const Doubles half = xsimd::select(x >= Doubles(0.0), Doubles(0.5), Doubles(-0.5));
    return truncate_toward_zero(x + half);
}

// 2^n for integer-valued n in [-1022, 1023]: adding 2^52 + 1023 puts n + 1023 in the low
// mantissa bits, and shifting them up into the exponent field drops everything else.
inline Doubles power_of_two(const Doubles& n) noexcept {
    const Doubles biased = n + Doubles(4503599627370496.0 + 1023.0);
    return xsimd::bitwise_cast<Doubles>(xsimd::bitwise_cast<xsimd::batch<std::uint64_t>>(biased) << 52);
}

// exp_f32 gives +0.0f for every float below -104 (e^-104 < 2^-150, half the smallest
// subnormal) and +inf for every float above 89 (e^89 > FLT_MAX). Clamping there changes no
// float result (checked for every float) and keeps n in [-150, 129], where exp_f64 scales
// by 2^n in one step and the product is exact in double.
inline constexpr double exp_f32_lowest = -104.0;
inline constexpr double exp_f32_highest = 89.0;

// exp_f64 of non-NaN widened floats, for the lanes exp_f32 rounds to a float, M registers
// side by side.
template <std::size_t M>
LOOM_ALWAYS_INLINE void exp_of_widened_floats(Doubles (&x)[M]) noexcept {
    Doubles n[M], remainder[M], sum[M];
    LOOM_UNROLL for (std::size_t m = 0; m < M; ++m) {
        const Doubles clamped = xsimd::min(xsimd::max(x[m], Doubles(exp_f32_lowest)), Doubles(exp_f32_highest));
        n[m] = round_to_integer(clamped * Doubles(log2e));
        remainder[m] = exp_remainder(clamped, n[m]);
    }
    exp_taylor(remainder, sum);
    LOOM_UNROLL for (std::size_t m = 0; m < M; ++m) x[m] = sum[m] * power_of_two(n[m]);
}

// exp_f32 of every lane of K float registers, in place.
template <std::size_t K>
LOOM_ALWAYS_INLINE void exp_of_floats(simd::Floats (&x)[K]) noexcept {
    Doubles widened[2 * K];
    LOOM_UNROLL for (std::size_t k = 0; k < K; ++k) widen(x[k], widened[2 * k], widened[2 * k + 1]);
    exp_of_widened_floats(widened);
    LOOM_UNROLL for (std::size_t k = 0; k < K; ++k) {
        const simd::Floats result = narrow(widened[2 * k], widened[2 * k + 1]);
        // NaN lanes get the input back, as exp_f32 does. (x == x, not x != x: xsimd 8.1
        // compiles != to an ordered compare on AVX, which is false for NaN.)
        x[k] = xsimd::select(x[k] == x[k], result, x[k]);
    }
}

}  // namespace detail
#endif

// exp_f32 of every lane of K SIMD registers, bit for bit.
template <std::size_t K>
inline simd::Registers<K> exp_f32_lanes(simd::Registers<K> x) noexcept {
#if defined(LOOM_SIMD_EXP_IN_DOUBLES)
    detail::exp_of_floats(x.part);
#elif defined(LOOM_SIMD_REGISTERS)
    alignas(64) float lanes[K * simd::width];
    simd::store_as(lanes, x);
    for (float& lane : lanes) lane = exp_f32(lane);
    x = simd::load_as<simd::Registers<K>>(lanes);
#else
    for (float& lane : x.part) lane = exp_f32(lane);
#endif
    return x;
}

// exp_f32 of Registers, a register or one float, for simd::elementwise loops.
template <typename T>
LOOM_ALWAYS_INLINE T exp_f32_any(const T& x) noexcept {
    if constexpr (std::is_same_v<T, float>) {
        return exp_f32(x);
    } else if constexpr (simd::is_registers<T>) {
        return exp_f32_lanes(x);
    } else {
        simd::Registers<1> one;
        one.part[0] = x;
        return exp_f32_lanes(one).part[0];
    }
}

// Element-wise loops that call exp take this many registers at a time (see simd::Registers;
// measured on Zen 5: SiLU 2x faster with 4 than with 1, no faster with 8).
inline constexpr std::size_t exp_registers = 4;

// out[i] = exp_f32(in[i]), bit for bit. `in` and `out` are the same array or do not overlap.
inline void exp_f32(const float* in, float* out, std::size_t n) noexcept {
    simd::elementwise<exp_registers>(0, n, [&](std::size_t i, auto type) {
        simd::store_as(out + i, exp_f32_any(simd::load_as<decltype(type)>(in + i)));
    });
}

// Natural logarithm in double for finite x > 0; NaN for x < 0, -inf for 0.
inline double log_f64(double x) noexcept {
    if (x != x || x < 0) return std::numeric_limits<double>::quiet_NaN();
    if (x == 0) return -std::numeric_limits<double>::infinity();
    if (x == std::numeric_limits<double>::infinity()) return x;
    int exponent_adjust = 0;
    if (x < 2.2250738585072014e-308) {  // subnormal: scale into the normal range first
        x *= 18014398509481984.0;  // 2^54
        exponent_adjust = -54;
    }
    std::uint64_t bits = detail::double_to_bits(x);
    int exponent = int((bits >> 52) & 0x7FF) - 1023 + exponent_adjust;
    bits = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;  // mantissa in [1, 2)
    double mantissa = detail::bits_to_double(bits);
    if (mantissa > 1.4142135623730951) {  // keep the series argument small: m in [0.707, 1.414]
        mantissa *= 0.5;
        ++exponent;
    }
    // log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716.
    const double s = (mantissa - 1.0) / (mantissa + 1.0);
    const double s2 = s * s;
    double series = 1.0 / 25.0;
    for (int k = 23; k >= 1; k -= 2) series = series * s2 + 1.0 / double(k);
    constexpr double ln2_high = 6.93147180369123816490e-01;
    constexpr double ln2_low = 1.90821492927058770002e-10;
    return (double(exponent) * ln2_high + 2.0 * s * series) + double(exponent) * ln2_low;
}

// x^y for x > 0 (what RoPE frequency tables need).
inline double pow_positive_f64(double x, double y) noexcept { return exp_f64(y * log_f64(x)); }

namespace detail {

// Reduces x to r in [-pi/4, pi/4] with x = r + quadrant * pi/2. The three-part split of
// pi/2 keeps r accurate for |x| up to about 2^20 * pi/2, beyond any RoPE angle we form.
inline double reduce_half_pi(double x, int& quadrant) noexcept {
    constexpr double two_over_pi = 6.36619772367581382433e-01;
    constexpr double half_pi_1 = 1.57079632673412561417e+00;   // first 33 bits of pi/2
    constexpr double half_pi_2 = 6.07710050630396597660e-11;   // next 33 bits
    constexpr double half_pi_3 = 2.02226624879595063154e-21;   // the rest
    const double n = round_to_integer(x * two_over_pi);
    quadrant = int(std::int64_t(n) & 3);
    return ((x - n * half_pi_1) - n * half_pi_2) - n * half_pi_3;
}

// Taylor kernels on [-pi/4, pi/4]; truncation error < (pi/4)^19 / 19! ~ 1e-19.
inline double sin_kernel(double r) noexcept {
    const double r2 = r * r;
    double sum = -1.0 / 121645100408832000.0;  // -1/19!
    constexpr double coefficients[] = {1.0 / 355687428096000.0, -1.0 / 1307674368000.0,
                                       1.0 / 6227020800.0,      -1.0 / 39916800.0,
                                       1.0 / 362880.0,          -1.0 / 5040.0,
                                       1.0 / 120.0,             -1.0 / 6.0,
                                       1.0};
    for (double coefficient : coefficients) sum = sum * r2 + coefficient;
    return sum * r;
}

inline double cos_kernel(double r) noexcept {
    const double r2 = r * r;
    double sum = -1.0 / 6402373705728000.0;  // -1/18!
    constexpr double coefficients[] = {1.0 / 20922789888000.0, -1.0 / 87178291200.0,
                                       1.0 / 479001600.0,      -1.0 / 3628800.0,
                                       1.0 / 40320.0,          -1.0 / 720.0,
                                       1.0 / 24.0,             -0.5,
                                       1.0};
    for (double coefficient : coefficients) sum = sum * r2 + coefficient;
    return sum;
}

}  // namespace detail

inline double sin_f64(double x) noexcept {
    int quadrant = 0;
    const double r = detail::reduce_half_pi(x, quadrant);
    switch (quadrant) {
        case 0: return detail::sin_kernel(r);
        case 1: return detail::cos_kernel(r);
        case 2: return -detail::sin_kernel(r);
        default: return -detail::cos_kernel(r);
    }
}

inline double cos_f64(double x) noexcept {
    int quadrant = 0;
    const double r = detail::reduce_half_pi(x, quadrant);
    switch (quadrant) {
        case 0: return detail::cos_kernel(r);
        case 1: return -detail::sin_kernel(r);
        case 2: return -detail::cos_kernel(r);
        default: return detail::sin_kernel(r);
    }
}

}  // namespace loom::kernels
