#pragma once
// The backward pass's products: dx = dout W and dW += dout^T x, for plain f32 matrices.
// Both have the form c[m, n] (+)= sum over k of a(m, k) * b[k, n], with b read by rows,
// and are computed as sums of outer products: a register tile of a few rows of c by a few
// SIMD vectors of columns, updated once per k from one broadcast a(m, k) per row and one
// row segment of b. Nothing is transposed or folded, and the depth is cut into blocks
// whose rows of b stay in the L1 cache, the tile's partial sums going through c between
// blocks.
//
// Each element of c is one plain sum in ascending k, starting from zero (or from c's
// value when accumulating), each product rounded before it is added (in native-fast
// mode, fused). Storing a partial sum in c and loading it back is exact, so neither the
// depth blocks, the tile shape, the SIMD width nor the thread count (threads own rows of
// c) changes a bit. This is not the 16-lane order of the forward products (matmul.hpp):
// a gradient is never compared with a forward result bit for bit.
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "loom/core/thread_pool.hpp"
#include "loom/kernels/simd.hpp"

namespace loom::kernels {

// a(m, k) = a[m * m_stride + k * k_stride]: rows of dout for dx, its columns for dW.
struct StridedMatrix {
    const float* data;
    std::size_t m_stride;
    std::size_t k_stride;
    float at(std::size_t m, std::size_t k) const noexcept { return data[m * m_stride + k * k_stride]; }
};

namespace detail {

// Rows of c x SIMD vectors of columns per register tile: 24 of the 32 AVX-512 registers
// hold sums, the others b's segment and the broadcast; 8 of 16 with AVX2 and SSE2.
inline constexpr std::size_t outer_tile_rows = simd::parts == 1 ? 6 : 4;
inline constexpr std::size_t outer_tile_vectors = simd::parts == 1 || simd::width == 1 ? 4 : 2;
inline constexpr std::size_t outer_tile_columns = outer_tile_vectors * simd::width;
// Depth per block: its rows of b for one tile's columns fill 64 KiB, about L1 (measured on
// Zen 5: 1.03-1.08x faster than 32 KiB, fewer passes of the tiles through c). When a's
// steps in depth are 4 KiB or more apart (dout^T x of the 49152-wide head), every step of
// a block reads a page of its own, and half that depth keeps them within the TLB (1.1x).
inline constexpr std::size_t outer_depth_block = 64 * 1024 / (outer_tile_columns * sizeof(float));
inline std::size_t depth_block(const StridedMatrix& a) noexcept {
    return a.k_stride * sizeof(float) >= 4096 ? outer_depth_block / 2 : outer_depth_block;
}
// Rows and depth of one pass over all columns (see sum_of_outer_products).
inline constexpr std::size_t pass_rows = 1024;
inline constexpr std::size_t pass_depth = 1024;

LOOM_ALWAYS_INLINE float scalar_multiply_add(float sum, float a, float b) noexcept {
#if defined(LOOM_USE_FMA)
    return std::fma(a, b, sum);
#else
    return sum + a * b;
#endif
}

LOOM_ALWAYS_INLINE void multiply_add(simd::Floats& sum, const simd::Floats& a, const simd::Floats& b) noexcept {
#if defined(LOOM_USE_FMA) && defined(LOOM_SIMD_X86_512)
    sum = _mm512_fmadd_ps(a, b, sum);
#elif defined(LOOM_USE_FMA) && defined(LOOM_SIMD_X86_256)
    sum = _mm256_fmadd_ps(a, b, sum);
#elif defined(LOOM_USE_FMA) && defined(LOOM_SIMD_X86_128)
    sum = _mm_fmadd_ps(a, b, sum);
#else
    sum = sum + a * b;
#endif
}

// c[m0 + r, n0 + v * width + lane] over k in [k0, k1) for R rows and V vectors; `resume`:
// the sums so far are in c, else they start at zero.
template <std::size_t R, std::size_t V>
void outer_tile(const StridedMatrix& a, std::size_t m0, const float* b, std::size_t b_stride, float* c,
                std::size_t c_stride, std::size_t n0, std::size_t k0, std::size_t k1, bool resume) noexcept {
    simd::Floats sums[R][V];
    LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
        LOOM_UNROLL for (std::size_t v = 0; v < V; ++v) {
            sums[r][v] = resume ? simd::load(c + (m0 + r) * c_stride + n0 + v * simd::width) : simd::broadcast(0.0f);
        }
    }
    const float* a_rows = a.data + m0 * a.m_stride;
    for (std::size_t k = k0; k < k1; ++k) {
        simd::Floats segment[V];
        LOOM_UNROLL for (std::size_t v = 0; v < V; ++v) segment[v] = simd::load(b + k * b_stride + n0 + v * simd::width);
        LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
            const simd::Floats factor = simd::broadcast(a_rows[r * a.m_stride + k * a.k_stride]);
            LOOM_UNROLL for (std::size_t v = 0; v < V; ++v) multiply_add(sums[r][v], factor, segment[v]);
        }
    }
    LOOM_UNROLL for (std::size_t r = 0; r < R; ++r) {
        LOOM_UNROLL for (std::size_t v = 0; v < V; ++v) simd::store(c + (m0 + r) * c_stride + n0 + v * simd::width, sums[r][v]);
    }
}

// The instantiation for a partial tile at the bottom or right edge.
template <std::size_t R = outer_tile_rows, std::size_t V = outer_tile_vectors>
void outer_tile_upto(std::size_t rows, std::size_t vectors, const StridedMatrix& a, std::size_t m0, const float* b,
                     std::size_t b_stride, float* c, std::size_t c_stride, std::size_t n0, std::size_t k0,
                     std::size_t k1, bool resume) noexcept {
    if constexpr (R > 1) {
        if (rows < R) return outer_tile_upto<R - 1, V>(rows, vectors, a, m0, b, b_stride, c, c_stride, n0, k0, k1, resume);
    }
    if constexpr (V > 1) {
        if (vectors < V) return outer_tile_upto<R, V - 1>(rows, vectors, a, m0, b, b_stride, c, c_stride, n0, k0, k1, resume);
    }
    outer_tile<R, V>(a, m0, b, b_stride, c, c_stride, n0, k0, k1, resume);
}

}  // namespace detail

namespace detail {

// sum_of_outer_products below for one pass of at most pass_rows rows and pass_depth depth.
inline void outer_products_pass(const StridedMatrix& a, const float* b, std::size_t b_stride, std::size_t rows,
                                std::size_t columns, std::size_t depth, float* c, std::size_t c_stride,
                                bool accumulate, ThreadPool& pool) {
    constexpr std::size_t tile_rows = outer_tile_rows;
    const std::size_t vector_columns = columns - columns % simd::width, block = depth_block(a);
    pool.parallel_for((rows + tile_rows - 1) / tile_rows, [&](std::size_t first, std::size_t last) {
        const std::size_t m_end = std::min(rows, last * tile_rows);
        // Column panels one tile wide: the panel's rows of b for one depth block stay in L1
        // while every tile of rows goes through them.
        for (std::size_t n0 = 0; n0 < vector_columns; n0 += outer_tile_columns) {
            const std::size_t vectors = std::min(outer_tile_columns, vector_columns - n0) / simd::width;
            for (std::size_t k0 = 0; k0 < depth; k0 += block) {
                const std::size_t k1 = std::min(depth, k0 + block);
                const bool resume = k0 > 0 || accumulate;
                for (std::size_t m0 = first * tile_rows; m0 < m_end; m0 += tile_rows) {
                    outer_tile_upto(std::min(tile_rows, m_end - m0), vectors, a, m0, b, b_stride, c, c_stride, n0, k0,
                                    k1, resume);
                }
            }
        }
        // Columns past the last whole vector: the same sums, one element at a time.
        for (std::size_t m = first * tile_rows; m < m_end; ++m) {
            for (std::size_t n = vector_columns; n < columns; ++n) {
                float sum = accumulate ? c[m * c_stride + n] : 0.0f;
                for (std::size_t k = 0; k < depth; ++k) sum = scalar_multiply_add(sum, a.at(m, k), b[k * b_stride + n]);
                c[m * c_stride + n] = sum;
            }
        }
    });
}

}  // namespace detail

// c[m, n] = (accumulate ? c[m, n] : 0) + sum over k < depth of a(m, k) * b[k * b_stride + n],
// for m < rows, n < columns; c rows c_stride apart.
inline void sum_of_outer_products(const StridedMatrix& a, const float* b, std::size_t b_stride, std::size_t rows,
                                  std::size_t columns, std::size_t depth, float* c, std::size_t c_stride,
                                  bool accumulate, ThreadPool& pool) {
    if (depth == 0) {  // an empty sum
        if (!accumulate) {
            for (std::size_t m = 0; m < rows; ++m) std::fill_n(c + m * c_stride, columns, 0.0f);
        }
        return;
    }
    // Each column panel reads all of a's rows and depth, so a large a (the gradient of the
    // logits: tokens x vocabulary) is cut into passes whose part of a stays in the L3 cache
    // across the panels. Measured on Zen 5 with the 49152-wide head of SmolLM2-135M: 1.4x
    // (dout W) and 1.7x (dout^T x) faster than one pass.
    for (std::size_t m0 = 0; m0 < rows; m0 += detail::pass_rows) {
        for (std::size_t k0 = 0; k0 < depth; k0 += detail::pass_depth) {
            const StridedMatrix part{a.data + m0 * a.m_stride + k0 * a.k_stride, a.m_stride, a.k_stride};
            detail::outer_products_pass(part, b + k0 * b_stride, b_stride, std::min(detail::pass_rows, rows - m0), columns,
                                        std::min(detail::pass_depth, depth - k0), c + m0 * c_stride, c_stride,
                                        accumulate || k0 > 0, pool);
        }
    }
}

}  // namespace loom::kernels
