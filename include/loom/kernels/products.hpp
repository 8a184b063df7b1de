#pragma once
// Products of two plain f32 matrices whose rows share a length (the backward pass's
// dout W and dout^T x), through the forward kernel of matmul.hpp. That kernel keeps its
// input rows in cache and streams the weight rows, so the smaller operand becomes the
// input, and a long shared length (the vocabulary, in the head's backward) is cut into
// fixed blocks whose products are added in block order. Every element thus has one
// summation order that depends on the shapes only, never on the thread count.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "loom/core/tensor.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/matmul.hpp"
#include "loom/kernels/ops.hpp"

namespace loom::kernels {

struct ProductScratch {
    std::vector<float> input_block, weight_block, partial, total;
};

namespace detail {

inline constexpr std::size_t product_depth_block = 2048;

// Columns [first, first + width) of `rows` rows `stride` apart, packed.
inline const float* depth_slice(const float* matrix, std::size_t rows, std::size_t stride, std::size_t first,
                                std::size_t width, std::vector<float>& packed) {
    if (width == stride) return matrix;
    packed.resize(rows * width);
    for (std::size_t r = 0; r < rows; ++r) {
        std::copy(matrix + r * stride + first, matrix + r * stride + first + width, packed.data() + r * width);
    }
    return packed.data();
}

}  // namespace detail

// out[i, j] (+)= sum_k a[i, k] * b[j, k] for a [a_rows, depth], b [b_rows, depth] and
// out [a_rows, b_rows]; `accumulate` adds to out instead of overwriting it.
inline void product_of_rows(const float* a, std::size_t a_rows, const float* b, std::size_t b_rows, std::size_t depth,
                            float* out, bool accumulate, ProductScratch& scratch, ThreadPool& pool) {
    const bool swapped = b_rows < a_rows;  // the result comes out transposed
    const float* input = swapped ? b : a;
    const float* weights = swapped ? a : b;
    const std::size_t input_rows = swapped ? b_rows : a_rows, weight_rows = swapped ? a_rows : b_rows;
    const std::size_t size = a_rows * b_rows;
    const bool direct = !swapped && !accumulate && depth <= detail::product_depth_block;
    float* total = direct ? out : (scratch.total.resize(size), scratch.total.data());
    for (std::size_t first = 0; first < depth; first += detail::product_depth_block) {
        const std::size_t width = std::min(detail::product_depth_block, depth - first);
        const float* input_block = detail::depth_slice(input, input_rows, depth, first, width, scratch.input_block);
        const float* weight_block = detail::depth_slice(weights, weight_rows, depth, first, width, scratch.weight_block);
        const TensorView weight_view{DType::f32, {weight_rows, width}, reinterpret_cast<const std::byte*>(weight_block)};
        if (first == 0) {
            matmul(input_block, input_rows, weight_view, nullptr, total, pool);
        } else {
            scratch.partial.resize(size);
            matmul(input_block, input_rows, weight_view, nullptr, scratch.partial.data(), pool);
            add_in_place(total, scratch.partial.data(), size);
        }
    }
    if (direct) return;
    if (swapped) {
        transpose(total, input_rows, weight_rows, out, pool, accumulate);
    } else if (accumulate) {
        add_in_place(out, total, size);
    } else {
        std::copy(total, total + size, out);
    }
}

}  // namespace loom::kernels
