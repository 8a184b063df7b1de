#pragma once
// Matrix products against checkpoint weights. Every product in the model goes through
// here: out[r, o] = sum_i x[r, i] * W[o, i] (+ bias[o]), with W [out, in] as stored by
// PyTorch's nn.Linear, in its checkpoint dtype (bf16 and f16 are expanded on the fly).
//
// Each output element is one dot product in the fixed 16-lane order of reduce.hpp, whatever
// the tile it is computed in: a tile of R input rows x C weight rows only shares loads
// between its R*C independent accumulators. Threads own output columns (no split sums), so
// results do not depend on thread count, on how many rows are processed together, or on
// the SIMD target.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

#include "loom/core/aligned.hpp"
#include "loom/core/error.hpp"
#include "loom/core/tensor.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/reduce.hpp"
#include "loom/kernels/simd.hpp"

namespace loom::kernels {

// Whether products with weights of `dtype` round their input rows first (native-fast bf16):
// callers that bound the error of a product need to know.
constexpr bool rounds_activations([[maybe_unused]] DType dtype) noexcept {
#if defined(LOOM_USE_BF16_DOT)
    return dtype == DType::bf16;
#else
    return false;
#endif
}

namespace detail {

// Tile sizes per target: the R*C accumulators (each 16 lanes) must stay in registers:
// 32 registers of 16 lanes with AVX-512 (5 x 5 measured fastest on Zen 5), 16 of 8 lanes
// with AVX2, 16 of 4 with SSE2.
inline constexpr std::size_t tile_rows = simd::parts == 1 ? 5 : simd::parts == 2 ? 2 : 1;
inline constexpr std::size_t tile_columns = simd::parts == 1 ? 5 : simd::parts == 2 ? 3 : 3;

// Decoding reads each weight once: memory bound. The columns are split into this many
// contiguous parts read side by side, one row of each per step: a core keeps more reads
// in flight from several sequential streams than from one (measured on Zen 5: 26 GB/s
// with one stream, 42 GB/s with four). Each part is still read sequentially, which the
// prefetcher follows (rows interleaved within one part measured 2-3x slower).
inline constexpr std::size_t decode_streams = 4;
// A thread's share of 16-bit weights this large goes as two streams instead: measured on an
// Intel Xeon (2-vCPU VM), one row times 4864 x 896 and 151936 x 896 bf16 matrices read
// 1.0-1.08x faster on two threads, and single decode steps of Qwen2.5-0.5B bf16 came 5-7%
// faster on two threads (SmolLM2-135M bf16, whose head is its only share this large, 1-5%;
// whole benchmark runs moved less than their spread), while smaller shares (1536 x 576 on
// two threads: 885 KiB) and f32 weights are as fast or faster in four. Not measured on
// Zen 5. Which stream reads a column changes no result.
inline constexpr std::size_t two_stream_share_bytes = std::size_t(2) << 20;
// Up to this many rows, the streamed decode path (one tile of rows). Since the first band
// of the panel path prefetches too, panels are faster from 2 rows on (measured on Zen 5
// with the SmolLM2-135M shapes: 2 rows 1.1-1.4x, 3 rows 1.5x).
inline constexpr std::size_t decode_rows = 1;
// Up to this many rows (a few sequences decoding together), with 32 registers: one band of
// tall tiles reads the weights from memory for all the rows at once, rather than a first
// band from memory and one from L2 (measured on Zen 5, SmolLM2-135M bf16, 6-8 rows:
// 1.06-1.10x faster on one thread, 1.04-1.10x on two). Not for the native-fast bf16 tiles
// (activations rounded to bf16), which were not measured this way.
inline constexpr std::size_t one_band_rows = simd::parts == 1 ? 8 : 0;
inline constexpr std::size_t one_band_columns = 3;

// Tiles that read weights straight from memory (decoding, and the first band of a few
// rows) ask for each cache line 2 KiB before they load it: on Zen 5 this made decoding
// 1.2-1.3x faster and 4-12 rows 1.1-1.2x. Tiles over panels already in cache do not.
inline constexpr std::size_t prefetch_distance = 2048;

// out[r * out_stride + c * out_column_stride] = the folded sums[r][c].
template <std::size_t R, std::size_t C>
LOOM_ALWAYS_INLINE void store_tile(const simd::Lanes16 (&sums)[R][C], float* out, std::size_t out_stride,
                                   std::size_t out_column_stride) noexcept {
    float folded[R * C];
    simd::fold_each(sums, folded);
    LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
        LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) out[r * out_stride + c * out_column_stride] = folded[r * C + c];
    }
}

// A tile's part of the depth (the `in` dimension): [begin, end), a multiple of 32 apart,
// continuing the 16-lane sums that `carried` (R * C of them) holds from the part before and
// leaving them there for the next. Each lane still adds its products in the order of i, and
// a sum stored and loaded back is the same float, so the results are those of one pass.
struct DepthSlice {
    std::size_t begin = 0;
    std::size_t end = std::numeric_limits<std::size_t>::max();
    simd::Lanes16* carried = nullptr;
};

// The tile's sums at the start of `slice`: zero, or those the slice before left.
template <std::size_t R, std::size_t C, typename Sum>
LOOM_ALWAYS_INLINE void start_slice(Sum (&sums)[R][C], const DepthSlice& slice, Sum zero) noexcept {
    LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
        LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) {
            if (slice.begin == 0) {
                sums[r][c] = zero;
            } else if constexpr (std::is_same_v<Sum, simd::Lanes16>) {
                sums[r][c] = slice.carried[r * C + c];
            } else {
                sums[r][c] = slice.carried[r * C + c].part[0];
            }
        }
    }
}

template <std::size_t R, std::size_t C, typename Sum>
LOOM_ALWAYS_INLINE void carry_slice(const Sum (&sums)[R][C], const DepthSlice& slice) noexcept {
    LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
        LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) {
            if constexpr (std::is_same_v<Sum, simd::Lanes16>) {
                slice.carried[r * C + c] = sums[r][c];
            } else {
                slice.carried[r * C + c].part[0] = sums[r][c];
            }
        }
    }
}

// out[r * out_stride + c * out_column_stride] = dot(x row r, weight row c) for R rows of x
// and C weight rows `weight_stride` bytes apart (or the part `slice` takes of those sums).
template <DType dtype, std::size_t R, std::size_t C, bool from_memory = false>
void dot_tile(const float* x, std::size_t x_stride, const std::byte* weight, std::size_t weight_stride,
              std::size_t in, float* out, std::size_t out_stride, std::size_t out_column_stride = 1,
              const DepthSlice& slice = {}) noexcept {
    constexpr std::size_t element = dtype_size(dtype);
    simd::Lanes16 sums[R][C];
    start_slice(sums, slice, simd::zero16());
    const std::size_t whole = in - in % reduction_lanes;
    const std::size_t end = std::min(slice.end, whole);
    for (std::size_t i = slice.begin; i < end; i += reduction_lanes) {
        simd::Lanes16 w[C];
        LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) {
            const std::byte* p = weight + c * weight_stride + i * element;
            if constexpr (from_memory) {
                if (i * element % 64 == 0) simd::prefetch(p + prefetch_distance);
            }
            w[c] = simd::load16_weights<dtype, from_memory>(p);
        }
        LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
            // Loaded once: left to itself the compiler reloads x for every product, R * C
            // loads instead of R (tiles of 8 x 3 ran at half speed on Zen 5). With 16
            // registers (AVX2, SSE2) the tiles need those loads folded into the products.
            simd::Lanes16 xs = simd::load16(x + r * x_stride + i);
            if constexpr (simd::parts == 1) simd::hold_in_register(xs.part[0]);
            LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) simd::multiply_add(sums[r][c], xs, w[c]);
        }
    }
    if (slice.end < in) return carry_slice(sums, slice);
    if (whole < in) {
        const std::size_t rest = in - whole;
        simd::Lanes16 w[C];
        LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) {
            w[c] = simd::load16_weights_tail<dtype>(weight + c * weight_stride + whole * element, rest);
        }
        LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
            const simd::Lanes16 xs = simd::load16_tail(x + r * x_stride + whole, rest);
            LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) simd::multiply_add(sums[r][c], xs, w[c]);
        }
    }
    store_tile(sums, out, out_stride, out_column_stride);
}

#if defined(LOOM_USE_BF16_DOT)
// Native-fast bf16: the activations are rounded to bf16 (to nearest even) and multiplied
// with the stored bf16 weights by vdpbf16ps, which adds the products of elements 2j and
// 2j+1 of each block of 32 into lane j. Each output element still has one fixed order
// (blocks in turn, the same 16-lane fold), whatever the tile, row count or thread.
inline void round_to_bf16(const float* x, std::size_t count, std::uint16_t* out) noexcept {
    std::size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), __m256i(_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i))));
    }
    if (i < count) {
        const auto mask = __mmask16((1u << (count - i)) - 1);
        _mm256_mask_storeu_epi16(out + i, mask, __m256i(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, x + i))));
    }
}

template <std::size_t R, std::size_t C, bool from_memory, bool Tail>
LOOM_ALWAYS_INLINE void bf16_dot_block(__m512 (&sums)[R][C], const std::uint16_t* x, std::size_t x_stride,
                                       const std::byte* weight, std::size_t weight_stride, std::size_t i,
                                       __mmask32 mask) noexcept {
    __m512bh w[C];
    LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) {
        const std::byte* p = weight + c * weight_stride + i * 2;
        if constexpr (from_memory) simd::prefetch(p + prefetch_distance);
        if constexpr (Tail) {
            w[c] = __m512bh(_mm512_maskz_loadu_epi16(mask, p));
        } else if constexpr (from_memory) {  // 32-byte halves, see simd::load16_streamed
            w[c] = __m512bh(_mm512_castps_si512(simd::load_streamed(reinterpret_cast<const float*>(p))));
        } else {
            w[c] = __m512bh(_mm512_loadu_si512(p));
        }
    }
    LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
        const std::uint16_t* p = x + r * x_stride + i;
        __m512bh xs = __m512bh(Tail ? _mm512_maskz_loadu_epi16(mask, p) : _mm512_loadu_si512(p));
        asm("" : "+v"(xs));  // one load per row, not one folded into every product
        LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) sums[r][c] = _mm512_dpbf16_ps(sums[r][c], xs, w[c]);
    }
}

// The tile of the float version, for activations already rounded to bf16 (`x_stride` in
// elements).
template <DType dtype, std::size_t R, std::size_t C, bool from_memory = false>
void dot_tile(const std::uint16_t* x, std::size_t x_stride, const std::byte* weight, std::size_t weight_stride,
              std::size_t in, float* out, std::size_t out_stride, std::size_t out_column_stride = 1,
              const DepthSlice& slice = {}) noexcept {
    static_assert(dtype == DType::bf16, "bf16 activations pair with bf16 weights only");
    constexpr std::size_t block = 32;
    __m512 sums[R][C];
    start_slice(sums, slice, _mm512_setzero_ps());
    const std::size_t whole = in - in % block;
    const std::size_t end = std::min(slice.end, whole);
    for (std::size_t i = slice.begin; i < end; i += block) {
        bf16_dot_block<R, C, from_memory, false>(sums, x, x_stride, weight, weight_stride, i, 0);
    }
    if (slice.end < in) return carry_slice(sums, slice);
    if (whole < in) {
        const auto mask = __mmask32((1ull << (in - whole)) - 1);
        bf16_dot_block<R, C, from_memory, true>(sums, x, x_stride, weight, weight_stride, whole, mask);
    }
    simd::Lanes16 lanes[R][C];
    LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
        LOOM_UNROLL for (std::size_t c = 0; c < C; ++c) lanes[r][c].part[0] = sums[r][c];
    }
    store_tile(lanes, out, out_stride, out_column_stride);
}
#endif

// Picks the instantiation for a partial tile at the edge of the matrix.
template <DType dtype, std::size_t R = tile_rows, std::size_t C = tile_columns, bool from_memory = false,
          typename Input>
void dot_tile_upto(std::size_t rows, std::size_t columns, const Input* x, std::size_t x_stride,
                   const std::byte* weight, std::size_t weight_stride, std::size_t in, float* out,
                   std::size_t out_stride, std::size_t out_column_stride = 1, const DepthSlice& slice = {}) noexcept {
    if constexpr (R > 1) {
        if (rows < R) {
            dot_tile_upto<dtype, R - 1, C, from_memory>(rows, columns, x, x_stride, weight, weight_stride, in, out,
                                                        out_stride, out_column_stride, slice);
            return;
        }
    }
    if constexpr (C > 1) {
        if (columns < C) {
            dot_tile_upto<dtype, R, C - 1, from_memory>(rows, columns, x, x_stride, weight, weight_stride, in, out,
                                                        out_stride, out_column_stride, slice);
            return;
        }
    }
    dot_tile<dtype, R, C, from_memory>(x, x_stride, weight, weight_stride, in, out, out_stride, out_column_stride, slice);
}

// The rows of x and the f32 panel of weights they are multiplied with should share the
// core's L2 cache (1 MiB on Zen 4/5, 2 MiB on recent Intel cores).
inline constexpr std::size_t cached_input_bytes = 640 * 1024;
inline constexpr std::size_t cached_panel_bytes = 256 * 1024;

// Up to this many rows (a few sequences decoding together, short prompts) the panels are
// used as stored, the first band of rows reading them from memory with prefetches and the
// others from cache. More rows go through f32 panels: bf16/f16 ones widened once into a
// copy rather than in every tile, f32 ones read in a different order. Measured on Zen 5
// with the SmolLM2-135M shapes: bf16 at 8-64 rows 1.05-1.5x faster as stored, at 96 rows
// and more 1.02-1.1x faster in f32 panels; f32 at 96-128 rows 1.08x faster as stored, even
// at 256, and 1.1x faster in panels at 1024.
inline constexpr std::size_t expand_from_rows = 96;
inline constexpr std::size_t f32_panels_from_rows = 256;
// Widening in the tiles still wins when the f32 tiles' operands, a band of input rows and a
// band of weight rows, would not fit the core's L1 data cache together (48 KiB on Zen 5):
// bf16 weights with 1536 inputs (a down projection) ran 1.15x faster as stored at 128 rows.
inline constexpr std::size_t cached_tile_bytes = 48 * 1024;

template <DType dtype>
bool uses_f32_panels(std::size_t rows, std::size_t in) noexcept {
    if constexpr (dtype == DType::f32) {
        return rows >= f32_panels_from_rows;
    } else {
        return rows >= expand_from_rows && (tile_rows + tile_columns) * in * sizeof(float) <= cached_tile_bytes;
    }
}

// A band of input rows longer than this (a down projection's 4864 inputs: 95 KiB in f32)
// leaves the L1 cache before the panel's next tile reads it again, so the tiles take the
// depth a slice at a time, each slice of the band staying in L1 across the panel's columns.
inline constexpr std::size_t cached_band_bytes = 24 * 1024;

template <typename Input>
std::size_t band_depth_slice(std::size_t in) noexcept {
    constexpr std::size_t step = 32;  // whole blocks of either tile kind
    const std::size_t slice = std::max(step, cached_band_bytes / (tile_rows * sizeof(Input)) / step * step);
    return slice >= in ? in : slice;
}

// Rows of x times one panel of weight rows (stored as `dtype`, `panel_stride` bytes apart),
// tile by tile: every band of rows for one group of columns, then the next group, over the
// depth at once or (long rows) a slice at a time.
// `ahead`: bytes to prefetch meanwhile into the cache level `hint`, a few cache lines after
// each tile (see row_products and panel_products).
template <DType dtype, typename Input>
void panel_tiles(const Input* x, std::size_t rows, std::size_t in, const std::byte* panel_weights, std::size_t panel_stride,
                 std::size_t panel_columns, float* out, std::size_t out_stride,
                 std::span<const std::byte> ahead = {}, simd::CacheLevel hint = simd::CacheLevel::l1) {
    constexpr std::size_t line = 64;
    constexpr std::size_t tile_sums = tile_rows * tile_columns;
    const std::size_t slice = band_depth_slice<Input>(in);
    const std::size_t slices = (in + slice - 1) / slice;
    const std::size_t groups = (panel_columns + tile_columns - 1) / tile_columns;
    const std::size_t bands = (rows + tile_rows - 1) / tile_rows;
    const std::size_t tiles = groups * bands * slices;
    const std::size_t lines = (ahead.size() + line - 1) / line;
    const std::size_t lines_per_tile = tiles == 0 ? 0 : (lines + tiles - 1) / tiles;
    thread_local AlignedVector<simd::Lanes16> carried;
    if (slices > 1) carried.resize(groups * bands * tile_sums);
    std::size_t prefetched = 0;
    for (std::size_t k = 0; k < in; k += slice) {
        for (std::size_t group = 0; group < groups; ++group) {
            const std::size_t c = group * tile_columns;
            const std::size_t columns = std::min(tile_columns, panel_columns - c);
            for (std::size_t band = 0; band < bands; ++band) {
                const std::size_t r = band * tile_rows;
                DepthSlice depth;
                if (slices > 1) depth = {k, k + slice, carried.data() + (group * bands + band) * tile_sums};
                dot_tile_upto<dtype>(std::min(tile_rows, rows - r), columns, x + r * in, in, panel_weights + c * panel_stride,
                                     panel_stride, in, out + r * out_stride + c, out_stride, 1, depth);
                for (std::size_t n = 0; n < lines_per_tile && prefetched < ahead.size(); ++n, prefetched += line) {
                    simd::prefetch(ahead.data() + prefetched, hint);
                }
            }
        }
    }
}

// Columns [begin, end) read as `Streams` sequential streams side by side: tile column k of
// step o is column begin + o + k * part. One core keeps more reads in flight from a few
// long streams than from many short ones. Up to Rows rows; the columns left over go
// through ordinary tiles.
template <DType dtype, std::size_t Streams, std::size_t Rows = tile_rows, typename Input>
void strided_products(const Input* x, std::size_t rows, std::size_t in, const std::byte* weight, float* out,
                      std::size_t out_stride, std::size_t begin, std::size_t end) {
    const std::size_t weight_stride = in * dtype_size(dtype);
    const std::size_t part = (end - begin) / Streams;
    for (std::size_t o = begin; o < begin + part; ++o) {
        dot_tile_upto<dtype, Rows, Streams, true>(rows, Streams, x, in, weight + o * weight_stride,
                                                  part * weight_stride, in, out + o, out_stride, part);
    }
    const std::size_t done = begin + part * Streams;
    panel_tiles<dtype>(x, rows, in, weight + done * weight_stride, weight_stride, end - done, out + done, out_stride);
}

// A few rows: panels of the stored weights, widened in the tiles, one band of rows across
// the whole panel after another. The first band streams the panel into L2 and the others
// reuse it (measured on Zen 5: 10 rows 1.6x faster than column group by column group; the
// expanded f32 panels of prefill are faster column group by column group). The first band's
// tiles take their columns from `tile_columns` far-apart parts of the panel, so memory is
// read as a few long sequential streams rather than many short ones (8 rows: about 1.2x).
//
// The band from memory streams faster the fewer rows it multiplies, so when one band from
// L2 follows, the first takes only what that band leaves, but at least light_first_band
// rows (a band of 1 or 2 reads no faster and leaves more rows for L2). Measured on Zen 5
// with the SmolLM2-135M shape on one thread, whole decode steps: 6, 7 and 8 rows as 3 + 3,
// 3 + 4 and 3 + 5 rows about 3% faster than 5 + 1, 5 + 2 and 5 + 3; 9 rows as 4 + 5, 2.5%;
// two threads, 8 rows: the same speed. (In portable mode with 32 registers, 6 to 8 rows
// take one band of taller tiles instead: see one_band_rows.)
inline constexpr std::size_t light_first_band = 3;

inline std::size_t first_band_rows(std::size_t rows) noexcept {
    if (light_first_band >= tile_rows || rows <= tile_rows || rows >= 2 * tile_rows) return std::min(rows, tile_rows);
    return std::max(light_first_band, rows - tile_rows);
}

// Rows of x long enough to be taken a depth slice at a time (a down projection's) stay in
// L1 for a slice but come from L3 for every panel, so their panels are wider. Measured on
// the Intel Xeon, 128 rows by Qwen2.5-0.5B's 896 x 4864 f32 weights, native-fast, GMAC/s:
// the whole depth at once with 256 KiB panels 45.8-50.2, in slices 49.3-49.8, in slices
// with 768 KiB panels 55.0-57.6 (512 KiB about 4% slower than 768, 1 MiB the same). Not
// measured on Zen 5, whose L2 holds 1 MiB.
inline constexpr std::size_t sliced_panel_bytes = 768 * 1024;

// From this many rows the panels' bands prefetch the next panel. Measured on the Intel Xeon
// with Qwen2.5-0.5B's products on one thread (GMAC/s without and with, f32 weights): 128
// rows 66.2-66.9 → 72.2-72.9 native-fast, 47.7-49.4 → 51.6-52.3 portable; 192 rows
// 70.4 → 80.2; 96 rows 68.2 → 69.5. Fewer rows have fewer bands to spread the prefetches
// over, and the bursts slowed them: 16 rows 37.6 → 30.4, 64 rows 62.1 → 58.7.
inline constexpr std::size_t prefetch_next_panel_rows = 96;

template <DType dtype, typename Input>
void panel_products(const Input* x, std::size_t rows, std::size_t in, const std::byte* weight, float* out,
                    std::size_t out_stride, std::size_t begin, std::size_t end) {
    const std::size_t weight_stride = in * dtype_size(dtype);
    const std::size_t panel_bytes = band_depth_slice<Input>(in) < in ? sliced_panel_bytes : cached_panel_bytes;
    const std::size_t panel = std::max(tile_columns, panel_bytes / weight_stride / tile_columns * tile_columns);
    const std::size_t first_band = first_band_rows(rows);
    const std::size_t bands = (rows - first_band + tile_rows - 1) / tile_rows;
    for (std::size_t p0 = begin; p0 < end; p0 += panel) {
        const std::size_t panel_columns = std::min(panel, end - p0);
        strided_products<dtype, tile_columns>(x, first_band, in, weight, out, out_stride, p0, p0 + panel_columns);
        // Many bands: they prefetch the next panel into L2 between them, so that its first
        // band finds it there rather than waiting on memory.
        std::span<const std::byte> next_panel;
        if (rows >= prefetch_next_panel_rows && p0 + panel < end) {
            next_panel = {weight + (p0 + panel) * weight_stride, std::min(panel, end - p0 - panel) * weight_stride};
        }
        const std::size_t band_bytes = bands == 0 ? 0 : (next_panel.size() / bands + 63) / 64 * 64;
        for (std::size_t r = first_band, band = 0; r < rows; r += tile_rows, ++band) {
            const std::size_t from = std::min(next_panel.size(), band * band_bytes);
            panel_tiles<dtype>(x + r * in, std::min(tile_rows, rows - r), in, weight + p0 * weight_stride, weight_stride,
                               panel_columns, out + r * out_stride + p0, out_stride,
                               next_panel.subspan(from, std::min(band_bytes, next_panel.size() - from)),
                               simd::CacheLevel::l2);
        }
    }
}

// x is f32, or (native-fast bf16) already rounded to bf16.
template <DType dtype, typename Input>
void row_products(const Input* x, std::size_t rows, std::size_t in, const std::byte* weight, float* out,
                  std::size_t out_stride, std::size_t begin, std::size_t end) {
    constexpr std::size_t element = dtype_size(dtype);
    const std::size_t weight_stride = in * element;
    // Decoding: each weight is read once, widened in registers.
    if (rows <= decode_rows) {
        if constexpr (element == 2) {
            if ((end - begin) * weight_stride >= two_stream_share_bytes) {
                return strided_products<dtype, 2>(x, rows, in, weight, out, out_stride, begin, end);
            }
        }
        return strided_products<dtype, decode_streams>(x, rows, in, weight, out, out_stride, begin, end);
    }
    if constexpr (one_band_rows > tile_rows && std::is_same_v<Input, float>) {
        if (rows > tile_rows && rows <= one_band_rows) {
            return strided_products<dtype, one_band_columns, one_band_rows>(x, rows, in, weight, out, out_stride, begin, end);
        }
    }
    // bf16 activations use the stored panels as they are, for any number of rows (measured
    // on Zen 5: 1.1x faster than the f32 layout below at 128 rows, 1.5x at 20).
    if constexpr (!std::is_same_v<Input, float>) {
        return panel_products<dtype>(x, rows, in, weight, out, out_stride, begin, end);
    } else {
        if (!uses_f32_panels<dtype>(rows, in)) {
            return panel_products<dtype>(x, rows, in, weight, out, out_stride, begin, end);
        }
        // Many rows (prefill, training): a panel of weight rows, sized to share the L2 cache
        // with the rows of x, is reused for every row of x, expanded to f32 once; the
        // expansion is exact, so the sums are the same as above. A panel is one long
        // sequential read (short reads interleaved with compute left the expansion waiting
        // on memory), and the tiles of one panel prefetch the next, so that the expansion
        // finds it in cache (measured on Zen 5 with the SmolLM2-135M shapes at 128 rows:
        // the products widened this way 1.03-1.04x faster).
        thread_local AlignedVector<float> expanded;
        const std::size_t row_block = std::max(tile_rows, cached_input_bytes / (in * sizeof(float)) / tile_rows * tile_rows);
        const std::size_t panel = std::max(tile_columns, cached_panel_bytes / (in * sizeof(float)) / tile_columns * tile_columns);
        for (std::size_t r0 = 0; r0 < rows; r0 += row_block) {
            const std::size_t block_rows = std::min(row_block, rows - r0);
            for (std::size_t p0 = begin; p0 < end; p0 += panel) {
                const std::size_t panel_columns = std::min(panel, end - p0);
                const std::byte* panel_weights = weight + p0 * weight_stride;
                std::size_t panel_stride = weight_stride;
                if constexpr (dtype != DType::f32) {
                    expanded.resize(panel * in);
                    simd::expand_weights<dtype>(panel_weights, panel_columns * in, expanded.data());
                    panel_weights = reinterpret_cast<const std::byte*>(expanded.data());
                    panel_stride = in * sizeof(float);
                }
                std::span<const std::byte> next_panel;
                if (dtype != DType::f32 && p0 + panel < end) {
                    next_panel = {weight + (p0 + panel) * weight_stride, std::min(panel, end - p0 - panel) * weight_stride};
                }
                panel_tiles<DType::f32>(x + r0 * in, block_rows, in, panel_weights, panel_stride, panel_columns,
                                        out + r0 * out_stride + p0, out_stride, next_panel);
            }
        }
    }
}

template <DType dtype>
void matmul_columns(const float* x, std::size_t rows, std::size_t in, const std::byte* weight, float* out,
                    std::size_t out_stride, std::size_t begin, std::size_t end) {
#if defined(LOOM_USE_BF16_DOT)
    if constexpr (dtype == DType::bf16) {
        thread_local AlignedVector<std::uint16_t> rounded;
        rounded.resize(rows * in);
        round_to_bf16(x, rows * in, rounded.data());
        return row_products<dtype>(rounded.data(), rows, in, weight, out, out_stride, begin, end);
    }
#endif
    row_products<dtype>(x, rows, in, weight, out, out_stride, begin, end);
}

}  // namespace detail

// Columns [begin, end) of out = x W^T (+ bias), for x: [rows, in] f32, weight: [out, in],
// out rows `out_stride` floats apart. The unit of work that threads split between them.
inline void matmul_columns(const float* x, std::size_t rows, const TensorView& weight, const TensorView* bias,
                           float* out, std::size_t out_stride, std::size_t begin, std::size_t end) {
    const std::size_t in = weight.shape[1];
    switch (weight.dtype) {
        case DType::f32: detail::matmul_columns<DType::f32>(x, rows, in, weight.data, out, out_stride, begin, end); break;
        case DType::bf16: detail::matmul_columns<DType::bf16>(x, rows, in, weight.data, out, out_stride, begin, end); break;
        case DType::f16: detail::matmul_columns<DType::f16>(x, rows, in, weight.data, out, out_stride, begin, end); break;
    }
    if (bias) {
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t o = begin; o < end; ++o) out[r * out_stride + o] = out[r * out_stride + o] + bias->at(o);
        }
    }
}

// Splits `columns` output columns between the pool's threads in blocks of 16 (whole tiles
// and cache lines per thread) and calls body(begin, end) for each share.
template <typename Body>
void for_column_blocks(ThreadPool& pool, std::size_t columns, Body&& body) {
    constexpr std::size_t block = 16;
    pool.parallel_for((columns + block - 1) / block, [&](std::size_t first, std::size_t last) {
        body(first * block, std::min(columns, last * block));
    });
}

inline void check_matmul_weight(const TensorView& weight) {
    if (weight.shape.size() != 2) throw argument_error("matmul: weight must be 2-D, got " + shape_to_string(weight.shape));
}

// x: [rows, in] f32; weight: [out, in]; out: [rows, out]; bias: [out] or null.
inline void matmul(const float* x, std::size_t rows, const TensorView& weight, const TensorView* bias,
                   float* out, ThreadPool& pool) {
    check_matmul_weight(weight);
    const std::size_t out_features = weight.shape[0];
    for_column_blocks(pool, out_features, [&](std::size_t begin, std::size_t end) {
        matmul_columns(x, rows, weight, bias, out, out_features, begin, end);
    });
}

// One product of a group that reads the same input (e.g. the query, key and value projections).
struct Product {
    const TensorView* weight;
    const TensorView* bias;  // or null
    float* out;              // [rows, weight->shape[0]]
};

// Several products of the same x in one parallel pass: the threads share the concatenated
// output columns, so there is one hand-off instead of one per product.
inline void matmul_group(const float* x, std::size_t rows, std::span<const Product> products, ThreadPool& pool) {
    std::size_t total = 0;
    for (const Product& product : products) {
        check_matmul_weight(*product.weight);
        total += product.weight->shape[0];
    }
    for_column_blocks(pool, total, [&](std::size_t begin, std::size_t end) {
        std::size_t offset = 0;
        for (const Product& product : products) {
            const std::size_t width = product.weight->shape[0];
            const std::size_t first = std::max(begin, offset), last = std::min(end, offset + width);
            if (first < last) {
                matmul_columns(x, rows, *product.weight, product.bias, product.out, width, first - offset, last - offset);
            }
            offset += width;
        }
    });
}

}  // namespace loom::kernels
