#pragma once
// The SIMD layer under every kernel. Loom's reductions keep 16 partial sums (element i of
// a dot product goes to lane i % 16) and fold them in one fixed tree; `Lanes16` holds those
// 16 lanes in whatever registers the target has: one AVX-512 register, two AVX2, four SSE2,
// or 16 plain floats. The arithmetic per lane is the same on every target (separate
// multiply and add, no FMA), so a kernel written on Lanes16 gives the same bits everywhere.
//
// The target is chosen at compile time from the compiler's flags (xsimd's default_arch):
// -march=native, -mavx2 -mfma -mf16c, or the x86-64 baseline (SSE2). LOOM_SIMD_SCALAR forces
// plain C++. xsimd 8.1 has no WebAssembly support, so WebAssembly builds with -msimd128 use
// four-lane registers written with <wasm_simd128.h>, and without it plain C++.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "loom/core/config.hpp"
#include "loom/core/dtype.hpp"

#if !defined(LOOM_SIMD_SCALAR) && defined(__wasm_simd128__)
#include <wasm_simd128.h>
#define LOOM_SIMD_WASM128 1
#elif !defined(LOOM_SIMD_SCALAR) && !defined(__EMSCRIPTEN__)
#include <xsimd/xsimd.hpp>
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
#define LOOM_SIMD_XSIMD 1
#endif
#endif
// Whether simd::Floats is a register of several lanes rather than one float.
#if defined(LOOM_SIMD_XSIMD) || defined(LOOM_SIMD_WASM128)
#define LOOM_SIMD_REGISTERS 1
#endif

// Which x86 register width xsimd picked, for the few steps written with intrinsics
// (lane folding, bf16/f16 expansion) where xsimd 8.1 has no portable equivalent.
#if defined(LOOM_SIMD_XSIMD) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#if XSIMD_WITH_AVX512F
#define LOOM_SIMD_X86_512 1
#elif XSIMD_WITH_AVX2
#define LOOM_SIMD_X86_256 1
#elif XSIMD_WITH_SSE2 && !XSIMD_WITH_AVX
#define LOOM_SIMD_X86_128 1
#endif
#endif

// Loops over a tile's registers must be unrolled, or the accumulators live in memory.
#if defined(__clang__)
#define LOOM_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define LOOM_UNROLL _Pragma("GCC unroll 16")
#else
#define LOOM_UNROLL
#endif

// For the small helpers of the kernels' inner loops: a call there spills the registers.
#if defined(__GNUC__) || defined(__clang__)
#define LOOM_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define LOOM_ALWAYS_INLINE inline
#endif

namespace loom::kernels {

inline constexpr std::size_t reduction_lanes = 16;

// (l0+l8, l1+l9, ...), then the same on 8, 4, 2 lanes: the one fold every target follows.
inline float fold_lanes(float* lanes) noexcept {
    for (std::size_t width = reduction_lanes / 2; width >= 1; width /= 2) {
        for (std::size_t lane = 0; lane < width; ++lane) lanes[lane] = lanes[lane] + lanes[lane + width];
    }
    return lanes[0];
}

namespace simd {

enum class CacheLevel { l1, l2 };

// Asks for the cache line at p ahead of its use, into L1 or (data needed later) only as far
// as L2. A hint: it never changes results and never faults, so it may point past the end of
// a buffer.
LOOM_ALWAYS_INLINE void prefetch(const void* p, CacheLevel level = CacheLevel::l1) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    if (level == CacheLevel::l1) __builtin_prefetch(p, 0, 3);
    else __builtin_prefetch(p, 0, 2);
#else
    (void)p;
    (void)level;
#endif
}

#if defined(LOOM_SIMD_XSIMD)
using Floats = xsimd::batch<float>;
inline constexpr std::size_t width = Floats::size;
LOOM_ALWAYS_INLINE Floats load(const float* p) noexcept { return Floats::load_unaligned(p); }
inline void store(float* p, const Floats& v) noexcept { v.store_unaligned(p); }
inline Floats broadcast(float value) noexcept { return Floats(value); }
inline bool any_equal(const Floats& v, float value) noexcept { return xsimd::any(v == Floats(value)); }
inline const char* target_name() noexcept { return xsimd::default_arch::name(); }
#elif defined(LOOM_SIMD_WASM128)
// Four floats; + - * / are WebAssembly's f32x4 operations, the same correctly rounded IEEE
// ones lane by lane. (A class, not v128_t itself: v128_t's operators act on integers.)
struct Floats {
    v128_t bits;
    Floats() = default;
    explicit Floats(float value) noexcept : bits(wasm_f32x4_splat(value)) {}
    explicit Floats(v128_t raw) noexcept : bits(raw) {}
};
LOOM_ALWAYS_INLINE Floats operator+(Floats a, Floats b) noexcept { return Floats(wasm_f32x4_add(a.bits, b.bits)); }
LOOM_ALWAYS_INLINE Floats operator-(Floats a, Floats b) noexcept { return Floats(wasm_f32x4_sub(a.bits, b.bits)); }
LOOM_ALWAYS_INLINE Floats operator*(Floats a, Floats b) noexcept { return Floats(wasm_f32x4_mul(a.bits, b.bits)); }
LOOM_ALWAYS_INLINE Floats operator/(Floats a, Floats b) noexcept { return Floats(wasm_f32x4_div(a.bits, b.bits)); }
LOOM_ALWAYS_INLINE Floats operator-(Floats a) noexcept { return Floats(wasm_f32x4_neg(a.bits)); }
inline constexpr std::size_t width = 4;
LOOM_ALWAYS_INLINE Floats load(const float* p) noexcept { return Floats(wasm_v128_load(p)); }
inline void store(float* p, const Floats& v) noexcept { wasm_v128_store(p, v.bits); }
inline Floats broadcast(float value) noexcept { return Floats(value); }
inline bool any_equal(const Floats& v, float value) noexcept {
    return wasm_v128_any_true(wasm_f32x4_eq(v.bits, wasm_f32x4_splat(value)));
}
inline const char* target_name() noexcept { return "wasm-simd128"; }

// Four f16 values, each in the high half of its lane (h << 16), as f32: the bits of
// f16_to_f32. Exponent and mantissa move into place and are rebiased; infinities and NaNs
// get the top exponent, and NaNs the quiet bit; a subnormal becomes 2^-14 + m 2^-24, from
// which subtracting 2^-14 leaves m 2^-24 exactly.
inline Floats f16_high_halves_to_f32(v128_t halves) noexcept {
    const v128_t exponent_mask = wasm_i32x4_splat(0x1f << 23);
    v128_t bits = wasm_u32x4_shr(wasm_v128_and(halves, wasm_i32x4_splat(0x7fff0000)), 3);
    const v128_t exponent = wasm_v128_and(bits, exponent_mask);
    const v128_t infinite_or_nan = wasm_i32x4_eq(exponent, exponent_mask);
    const v128_t nan = wasm_v128_andnot(infinite_or_nan,
                                        wasm_i32x4_eq(wasm_v128_and(bits, wasm_i32x4_splat(0x7fffff)), wasm_i32x4_splat(0)));
    bits = wasm_i32x4_add(bits, wasm_i32x4_splat((127 - 15) << 23));
    bits = wasm_i32x4_add(bits, wasm_v128_and(infinite_or_nan, wasm_i32x4_splat((128 - 16) << 23)));
    bits = wasm_v128_or(bits, wasm_v128_and(nan, wasm_i32x4_splat(0x400000)));
    const v128_t two_to_minus_14 = wasm_i32x4_splat((127 - 14) << 23);
    const v128_t subnormal = wasm_f32x4_sub(wasm_i32x4_add(bits, wasm_i32x4_splat(1 << 23)), two_to_minus_14);
    bits = wasm_v128_bitselect(subnormal, bits, wasm_i32x4_eq(exponent, wasm_i32x4_splat(0)));
    return Floats(wasm_v128_or(bits, wasm_v128_and(halves, wasm_i32x4_splat(std::int32_t(0x80000000u)))));
}
#else
using Floats = float;
inline constexpr std::size_t width = 1;
inline Floats load(const float* p) noexcept { return *p; }
inline void store(float* p, const Floats& v) noexcept { *p = v; }
inline Floats broadcast(float value) noexcept { return value; }
inline bool any_equal(const Floats& v, float value) noexcept { return v == value; }
inline const char* target_name() noexcept { return "scalar"; }
#endif

// Keeps a loaded register as it is. A value loaded once and used by several products may
// otherwise have its load folded into each of them, one load per use, and a loop that was
// meant to wait on its arithmetic then waits on the load ports. Changes no result.
LOOM_ALWAYS_INLINE void hold_in_register([[maybe_unused]] Floats& value) noexcept {
#if defined(__GNUC__) && (defined(LOOM_SIMD_X86_512) || defined(LOOM_SIMD_X86_256) || defined(LOOM_SIMD_X86_128))
#if defined(LOOM_SIMD_X86_512)
    __m512 raw = value;
#elif defined(LOOM_SIMD_X86_256)
    __m256 raw = value;
#else
    __m128 raw = value;
#endif
    asm("" : "+v"(raw));
    value = raw;
#endif
}

// K registers that element-wise code treats as one value, operation by operation over
// the registers in turn. For loops whose steps are long chains of dependent operations
// (exp): the K chains are independent, and written side by side the core overlaps them
// where one register's chain alone waits on every step's latency.
template <std::size_t K>
struct Registers {
    static constexpr std::size_t count = K;
    Floats part[K];
    Registers() = default;
    explicit Registers(float value) noexcept {
        LOOM_UNROLL for (auto& p : part) p = broadcast(value);
    }
};

template <typename T>
inline constexpr bool is_registers = false;
template <std::size_t K>
inline constexpr bool is_registers<Registers<K>> = true;

template <std::size_t K, typename Op>
LOOM_ALWAYS_INLINE Registers<K> each_register(const Registers<K>& a, const Registers<K>& b, Op op) noexcept {
    Registers<K> result;
    LOOM_UNROLL for (std::size_t k = 0; k < K; ++k) result.part[k] = op(a.part[k], b.part[k]);
    return result;
}
template <std::size_t K>
LOOM_ALWAYS_INLINE Registers<K> operator+(const Registers<K>& a, const Registers<K>& b) noexcept {
    return each_register(a, b, [](const Floats& x, const Floats& y) { return x + y; });
}
template <std::size_t K>
LOOM_ALWAYS_INLINE Registers<K> operator-(const Registers<K>& a, const Registers<K>& b) noexcept {
    return each_register(a, b, [](const Floats& x, const Floats& y) { return x - y; });
}
template <std::size_t K>
LOOM_ALWAYS_INLINE Registers<K> operator*(const Registers<K>& a, const Registers<K>& b) noexcept {
    return each_register(a, b, [](const Floats& x, const Floats& y) { return x * y; });
}
template <std::size_t K>
LOOM_ALWAYS_INLINE Registers<K> operator/(const Registers<K>& a, const Registers<K>& b) noexcept {
    return each_register(a, b, [](const Floats& x, const Floats& y) { return x / y; });
}
template <std::size_t K>
LOOM_ALWAYS_INLINE Registers<K> operator-(const Registers<K>& a) noexcept {
    return each_register(a, a, [](const Floats& x, const Floats&) { return -x; });
}

// Element-wise loops written once for registers and for a single float (`T` is Registers,
// Floats or float): every operation is the same correctly rounded IEEE one lane by lane,
// so an element's result does not depend on whether it fell in a register or in the tail.
template <typename T>
LOOM_ALWAYS_INLINE T load_as(const float* p) noexcept {
    if constexpr (std::is_same_v<T, float>) {
        return *p;
    } else if constexpr (is_registers<T>) {
        T result;
        LOOM_UNROLL for (std::size_t k = 0; k < T::count; ++k) result.part[k] = load(p + k * width);
        return result;
    } else {
        return load(p);
    }
}
template <typename T>
LOOM_ALWAYS_INLINE void store_as(float* p, const T& v) noexcept {
    if constexpr (std::is_same_v<T, float>) {
        *p = v;
    } else if constexpr (is_registers<T>) {
        LOOM_UNROLL for (std::size_t k = 0; k < T::count; ++k) store(p + k * width, v.part[k]);
    } else {
        store(p, v);
    }
}
template <typename T>
LOOM_ALWAYS_INLINE T square_root(const T& v) noexcept {
#if defined(LOOM_SIMD_X86_512)
    if constexpr (!std::is_same_v<T, float>) {
        return _mm512_maskz_sqrt_ps(0xffff, v);  // xsimd's sqrt: the non-masking form, see low_half
    } else
#elif defined(LOOM_SIMD_XSIMD)
    if constexpr (!std::is_same_v<T, float>) {
        return xsimd::sqrt(v);
    } else
#elif defined(LOOM_SIMD_WASM128)
    if constexpr (!std::is_same_v<T, float>) {
        return Floats(wasm_f32x4_sqrt(v.bits));
    } else
#endif
    {
        return std::sqrt(v);
    }
}
// body(i, Registers<K>{}) for each whole block of K registers of [begin, end) (K > 1), then
// body(i, Floats{}) for each whole register, then body(i, float{}).
template <std::size_t K = 1, typename Body>
LOOM_ALWAYS_INLINE void elementwise(std::size_t begin, std::size_t end, Body&& body) {
    std::size_t i = begin;
    if constexpr (K > 1) {
        for (; i + K * width <= end; i += K * width) body(i, Registers<K>{});
    }
    for (; i + width <= end; i += width) body(i, Floats{});
    for (; i < end; ++i) body(i, float{});
}

inline constexpr std::size_t parts = reduction_lanes / width;
static_assert(parts * width == reduction_lanes, "SIMD width must divide 16");

// 16 partial sums, lane l in part[l / width] at position l % width.
struct Lanes16 {
    Floats part[parts];
};

LOOM_ALWAYS_INLINE Lanes16 zero16() noexcept {
    Lanes16 result;
    LOOM_UNROLL for (auto& p : result.part) p = broadcast(0.0f);
    return result;
}

LOOM_ALWAYS_INLINE Lanes16 load16(const float* p) noexcept {
    Lanes16 result;
    LOOM_UNROLL for (std::size_t i = 0; i < parts; ++i) result.part[i] = load(p + i * width);
    return result;
}

// load16 for data read from memory rather than from cache, as two 32-byte loads: on Zen 5,
// streaming reads of 64 bytes per load ran 1.4x slower than of 32 (a matrix-vector product
// over f32 weights: 1.1-1.2x). The same values as load16.
LOOM_ALWAYS_INLINE Floats load_streamed(const float* p) noexcept {
#if defined(LOOM_SIMD_X86_512)
    // (The 64-bit insert: the 32-bit one needs AVX512DQ, the rest of this path only AVX512F.)
    const __m512d low = _mm512_castps_pd(_mm512_zextps256_ps512(_mm256_loadu_ps(p)));
    return _mm512_castpd_ps(_mm512_maskz_insertf64x4(0xff, low, _mm256_castps_pd(_mm256_loadu_ps(p + 8)), 1));
#else
    return load(p);
#endif
}
LOOM_ALWAYS_INLINE Lanes16 load16_streamed(const float* p) noexcept {
    Lanes16 result;
    LOOM_UNROLL for (std::size_t i = 0; i < parts; ++i) result.part[i] = load_streamed(p + i * width);
    return result;
}

LOOM_ALWAYS_INLINE void store16(float* p, const Lanes16& v) noexcept {
    LOOM_UNROLL for (std::size_t i = 0; i < parts; ++i) store(p + i * width, v.part[i]);
}

// acc += a * b, rounded after the multiply and after the add; in native-fast mode one fused
// multiply-add, rounded once.
LOOM_ALWAYS_INLINE void multiply_add(Lanes16& acc, const Lanes16& a, const Lanes16& b) noexcept {
#if defined(LOOM_USE_FMA) && defined(LOOM_SIMD_X86_512)  // (xsimd 8.1's fma is a * b + c here, not fused)
    acc.part[0] = _mm512_fmadd_ps(a.part[0], b.part[0], acc.part[0]);
#elif defined(LOOM_USE_FMA) && defined(LOOM_SIMD_X86_256)
    LOOM_UNROLL for (std::size_t i = 0; i < parts; ++i) acc.part[i] = _mm256_fmadd_ps(a.part[i], b.part[i], acc.part[i]);
#elif defined(LOOM_USE_FMA) && defined(LOOM_SIMD_X86_128)
    LOOM_UNROLL for (std::size_t i = 0; i < parts; ++i) acc.part[i] = _mm_fmadd_ps(a.part[i], b.part[i], acc.part[i]);
#else
    LOOM_UNROLL for (std::size_t i = 0; i < parts; ++i) acc.part[i] = acc.part[i] + a.part[i] * b.part[i];
#endif
}

// Which arithmetic the kernels use, for benchmark headers and logs.
inline const char* kernel_mode() noexcept {
#if defined(LOOM_USE_BF16_DOT)
    return "native-fast (FMA, AVX-512 bf16 dot products)";
#elif defined(LOOM_USE_FMA)
    return "native-fast (FMA)";
#else
    return "portable (separate multiply and add)";
#endif
}

#if defined(LOOM_SIMD_X86_512)
// Lanes 0-7 and 8-15 of a 16-lane register. (The zero-masking forms: GCC 12's plain ones
// start from a deliberately uninitialised register and warn at every use.)
LOOM_ALWAYS_INLINE __m256 low_half(__m512 v) noexcept {
    return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, _mm512_castps_pd(v), 0));
}
LOOM_ALWAYS_INLINE __m256 high_half(__m512 v) noexcept {
    return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, _mm512_castps_pd(v), 1));
}
#endif

LOOM_ALWAYS_INLINE float fold(const Lanes16& acc) noexcept {
#if defined(LOOM_SIMD_X86_512)
    const __m256 eight = _mm256_add_ps(low_half(acc.part[0]), high_half(acc.part[0]));
    const __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
#elif defined(LOOM_SIMD_X86_256)
    const __m256 eight = _mm256_add_ps(acc.part[0], acc.part[1]);
    const __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
#elif defined(LOOM_SIMD_X86_128)
    const __m128 four = _mm_add_ps(_mm_add_ps(acc.part[0], acc.part[2]), _mm_add_ps(acc.part[1], acc.part[3]));
#endif
#if defined(LOOM_SIMD_X86_512) || defined(LOOM_SIMD_X86_256) || defined(LOOM_SIMD_X86_128)
    const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
#else
    alignas(64) float lanes[reduction_lanes];
    store16(lanes, acc);
    return fold_lanes(lanes);
#endif
}

// fold(acc[r][c]) into out[r * C + c], with the same additions in the same order. On
// AVX-512, sixteen accumulators share each level of the tree: two registers' halves are
// gathered into one and added, so a level costs two shuffles and an add per pair of
// registers instead of a shuffle and an add per accumulator (a 5 x 5 tile over 576 inputs:
// about 1.06x faster). The gathered tree costs the same whatever the number of real
// accumulators in it, so fewer than 6 left over are cheaper folded one by one.
template <std::size_t R, std::size_t C>
LOOM_ALWAYS_INLINE void fold_each(const Lanes16 (&acc)[R][C], float* out) noexcept {
    constexpr std::size_t N = R * C;
    std::size_t first = 0;
#if defined(LOOM_SIMD_X86_512)
    LOOM_UNROLL for (; first + 6 <= N; first += 16) {
        const std::size_t count = std::min<std::size_t>(16, N - first);
        __m512 level[16];
        LOOM_UNROLL for (std::size_t i = 0; i < 16; ++i) {
            level[i] = i < count ? __m512(acc[(first + i) / C][(first + i) % C].part[0]) : _mm512_setzero_ps();
        }
        // Lane l += lane l + 8: accumulator 2i in the low half of register i, 2i + 1 in the high.
        LOOM_UNROLL for (std::size_t i = 0; i < 8; ++i) {
            level[i] = _mm512_add_ps(_mm512_shuffle_f32x4(level[2 * i], level[2 * i + 1], 0x44),
                                     _mm512_shuffle_f32x4(level[2 * i], level[2 * i + 1], 0xee));
        }
        // Lane l += lane l + 4: accumulator 4i + j in 128-bit block j of register i.
        LOOM_UNROLL for (std::size_t i = 0; i < 4; ++i) {
            level[i] = _mm512_add_ps(_mm512_shuffle_f32x4(level[2 * i], level[2 * i + 1], 0x88),
                                     _mm512_shuffle_f32x4(level[2 * i], level[2 * i + 1], 0xdd));
        }
        // Lane l += lane l + 2: block j of register i holds accumulators 8i + j and 8i + 4 + j.
        LOOM_UNROLL for (std::size_t i = 0; i < 2; ++i) {
            level[i] = _mm512_add_ps(_mm512_shuffle_ps(level[2 * i], level[2 * i + 1], 0x44),
                                     _mm512_shuffle_ps(level[2 * i], level[2 * i + 1], 0xee));
        }
        // Lane 0 += lane 1: block j holds accumulators j, 4 + j, 8 + j, 12 + j.
        const __m512 folded = _mm512_add_ps(_mm512_shuffle_ps(level[0], level[1], 0x88),
                                            _mm512_shuffle_ps(level[0], level[1], 0xdd));
        const __m512i in_order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        alignas(64) float results[16];
        _mm512_store_ps(results, _mm512_permutexvar_ps(in_order, folded));
        LOOM_UNROLL for (std::size_t i = 0; i < count; ++i) out[first + i] = results[i];
    }
#endif
    LOOM_UNROLL for (; first < N; ++first) out[first] = fold(acc[first / C][first % C]);
}

// 16 consecutive weights stored as `dtype` (possibly unaligned: memory-mapped checkpoints),
// expanded to f32. bf16 -> f32 is a 16-bit shift and f16 -> f32 is exact, so every
// target sees the same values.
// `streamed`: read from memory (see load16_streamed; the 16-bit types load 32 bytes anyway).
template <DType dtype, bool streamed = false>
LOOM_ALWAYS_INLINE Lanes16 load16_weights(const std::byte* p) noexcept {
    if constexpr (dtype == DType::f32) {
        if constexpr (streamed) {
            return load16_streamed(reinterpret_cast<const float*>(p));
        } else {
            return load16(reinterpret_cast<const float*>(p));
        }
    } else {
#if defined(LOOM_SIMD_X86_512)
        {
            // (Zero-masking forms with every lane kept: see low_half.)
            const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
            if constexpr (dtype == DType::bf16) {
#if defined(__AVX512BW__)
                // One shuffle instead of a widening and a shift: stored weight j moves to the
                // high half of lane j, the low halves are zeroed (the index reads only the 32
                // loaded bytes). On Zen 5 the 8 x 3 tile in L1 went from 61-77 to 78-83
                // GMAC/s: the widening shares its execution ports with the multiplies and adds.
                const __m512i to_high_halves =
                    _mm512_set_epi16(15, 0, 14, 0, 13, 0, 12, 0, 11, 0, 10, 0, 9, 0, 8, 0, 7, 0, 6, 0, 5, 0, 4, 0, 3, 0, 2,
                                     0, 1, 0, 0, 0);
                return {_mm512_castsi512_ps(
                    _mm512_maskz_permutexvar_epi16(0xaaaaaaaau, to_high_halves, _mm512_castsi256_si512(halves)))};
#else
                return {_mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, _mm512_maskz_cvtepu16_epi32(0xffff, halves), 16))};
#endif
            } else {
                return {_mm512_maskz_cvtph_ps(0xffff, halves)};
            }
        }
#elif defined(LOOM_SIMD_X86_256)
        {
            Lanes16 result;
            for (std::size_t i = 0; i < 2; ++i) {
                const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p) + i);
                if constexpr (dtype == DType::bf16) {
                    result.part[i] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
                } else {
#if defined(__F16C__)
                    result.part[i] = _mm256_cvtph_ps(halves);
#else
                    alignas(32) float expanded[8];
                    std::uint16_t raw[8];
                    std::memcpy(raw, p + i * 16, sizeof raw);
                    for (std::size_t lane = 0; lane < 8; ++lane) expanded[lane] = f16_to_f32(raw[lane]);
                    result.part[i] = load(expanded);
#endif
                }
            }
            return result;
        }
#elif defined(LOOM_SIMD_X86_128)
        if constexpr (dtype == DType::bf16) {
            Lanes16 result;
            const __m128i zero = _mm_setzero_si128();
            for (std::size_t i = 0; i < 2; ++i) {
                const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p) + i);
                // (0, h) pairs read as little-endian u32 are h << 16: the bf16 value as f32.
                result.part[2 * i] = _mm_castsi128_ps(_mm_unpacklo_epi16(zero, halves));
                result.part[2 * i + 1] = _mm_castsi128_ps(_mm_unpackhi_epi16(zero, halves));
            }
            return result;
        }
#elif defined(LOOM_SIMD_WASM128)
        {
            Lanes16 result;
            const v128_t zero = wasm_i16x8_splat(0);
            for (std::size_t i = 0; i < 2; ++i) {
                const v128_t stored = wasm_v128_load(p + 16 * i);
                // (0, h) pairs read as little-endian u32 are h << 16: the bf16 value as f32.
                // (Widening, then shifting by 16, made SmolLM2-135M bf16 decode 1.6x slower
                // under Node.js 20.)
                const v128_t low = wasm_i16x8_shuffle(zero, stored, 0, 8, 1, 9, 2, 10, 3, 11);
                const v128_t high = wasm_i16x8_shuffle(zero, stored, 4, 12, 5, 13, 6, 14, 7, 15);
                if constexpr (dtype == DType::bf16) {
                    result.part[2 * i] = Floats(low);
                    result.part[2 * i + 1] = Floats(high);
                } else {
                    result.part[2 * i] = f16_high_halves_to_f32(low);
                    result.part[2 * i + 1] = f16_high_halves_to_f32(high);
                }
            }
            return result;
        }
#endif
        std::uint16_t raw[reduction_lanes];
        std::memcpy(raw, p, sizeof raw);
        alignas(64) float expanded[reduction_lanes];
        for (std::size_t lane = 0; lane < reduction_lanes; ++lane) {
            expanded[lane] = dtype == DType::bf16 ? bf16_to_f32(raw[lane]) : f16_to_f32(raw[lane]);
        }
        return load16(expanded);
    }
}

// One register of `width` consecutive values stored as f32 or f16, as f32 (exact, as
// load16_weights): a KV cache's value rows.
template <DType dtype>
LOOM_ALWAYS_INLINE Floats load_widened(const std::byte* p) noexcept {
    static_assert(dtype == DType::f32 || dtype == DType::f16, "KV caches hold f32 or f16");
    if constexpr (dtype == DType::f32) {
        return load(reinterpret_cast<const float*>(p));
    } else {
#if defined(LOOM_SIMD_X86_512)
        return _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(LOOM_SIMD_X86_256) && defined(__F16C__)
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif defined(LOOM_SIMD_WASM128)
        const v128_t stored = wasm_v128_load64_zero(p);
        return f16_high_halves_to_f32(wasm_i16x8_shuffle(wasm_i16x8_splat(0), stored, 0, 8, 1, 9, 2, 10, 3, 11));
#else
        alignas(64) float expanded[width];
        for (std::size_t lane = 0; lane < width; ++lane) expanded[lane] = load_as_f32(p, dtype, lane);
        return load(expanded);
#endif
    }
}

// The last n < 16 elements of a row, zero-padded to 16 (a zero product leaves a lane as
// it is, up to the sign of a zero sum, identically on every target).
inline Lanes16 load16_tail(const float* p, std::size_t n) noexcept {
    alignas(64) float padded[reduction_lanes] = {};
    std::memcpy(padded, p, n * sizeof(float));
    return load16(padded);
}

template <DType dtype>
inline Lanes16 load16_weights_tail(const std::byte* p, std::size_t n) noexcept {
    alignas(64) float padded[reduction_lanes] = {};
    for (std::size_t i = 0; i < n; ++i) padded[i] = load_as_f32(p, dtype, i);
    return load16(padded);
}

// n weights stored as `dtype` expanded to f32 (exact).
template <DType dtype>
inline void expand_weights(const std::byte* p, std::size_t n, float* out) noexcept {
    const std::size_t whole = n - n % reduction_lanes;
    for (std::size_t i = 0; i < whole; i += reduction_lanes) {
        store16(out + i, load16_weights<dtype>(p + i * dtype_size(dtype)));
    }
    for (std::size_t i = whole; i < n; ++i) out[i] = load_as_f32(p, dtype, i);
}

}  // namespace simd
}  // namespace loom::kernels
