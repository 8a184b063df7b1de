// Kernels: our own math functions against long double, the fixed reduction order, and
// results that do not depend on thread count or on how many rows are batched together.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <mutex>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "loom/core/random.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/attention.hpp"
#include "loom/kernels/math.hpp"
#include "loom/kernels/matmul.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/products.hpp"
#include "loom/kernels/reduce.hpp"
#include "test_support.hpp"

namespace {

std::int64_t ulp_distance(float a, float b) {
    std::int32_t x, y;
    std::memcpy(&x, &a, 4);
    std::memcpy(&y, &b, 4);
    if (x < 0) x = std::numeric_limits<std::int32_t>::min() - x;
    if (y < 0) y = std::numeric_limits<std::int32_t>::min() - y;
    return std::llabs(std::int64_t(x) - std::int64_t(y));
}

std::vector<float> random_values(std::size_t count, std::uint64_t seed, double scale = 1.0) {
    loom::Random random(seed);
    std::vector<float> values(count);
    for (float& value : values) value = float((2.0 * random.uniform() - 1.0) * scale);
    return values;
}

// A product's element against the plain double-precision sum of x . weight row o (+ bias):
// the product is right, not just repeatable. (Native-fast kernels round x to bf16 for bf16
// weights: 2^-9 of each product.)
void check_against_double_sum(float got, const float* x, const loom::TensorView& weight, std::size_t o,
                              double bias = 0.0) {
    const std::size_t in = weight.shape[1];
    double sum = bias, magnitude = 0.0;
    for (std::size_t i = 0; i < in; ++i) {
        sum += double(x[i]) * double(weight.at(o * in + i));
        magnitude += std::abs(double(x[i]) * double(weight.at(o * in + i)));
    }
    const double input_rounding = loom::kernels::rounds_activations(weight.dtype) ? std::ldexp(1.0, -8) : 0.0;
    CHECK(got == Approx(sum).margin(1e-5 + magnitude * input_rounding));
}

}  // namespace

TEST_CASE("kernels: exp_f32 is within 1 ulp of the exactly rounded value on the range softmax and silu use", "[kernels][math]") {
    std::mt19937 generator(1);
    std::uniform_real_distribution<float> range(-103.0f, 88.7f);
    std::int64_t worst = 0;
    for (int i = 0; i < 200000; ++i) {
        const float x = range(generator);
        const float exact = float(std::exp(static_cast<long double>(x)));
        worst = std::max(worst, ulp_distance(loom::kernels::exp_f32(x), exact));
    }
    CHECK(worst <= 1);
    CHECK(loom::kernels::exp_f32(0.0f) == 1.0f);
    CHECK(loom::kernels::exp_f32(-200.0f) == 0.0f);
    CHECK(std::isinf(loom::kernels::exp_f32(100.0f)));
    CHECK(std::isnan(loom::kernels::exp_f32(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("kernels: sin, cos and log in double agree with long double to 1e-15 on RoPE-sized angles", "[kernels][math]") {
    std::mt19937_64 generator(2);
    std::uniform_real_distribution<double> angles(-200000.0, 200000.0);
    std::uniform_real_distribution<double> positives(1e-6, 1e7);
    double sin_error = 0, cos_error = 0, log_error = 0;
    for (int i = 0; i < 200000; ++i) {
        const double x = angles(generator);
        sin_error = std::max(sin_error, double(std::fabs(loom::kernels::sin_f64(x) - std::sin(static_cast<long double>(x)))));
        cos_error = std::max(cos_error, double(std::fabs(loom::kernels::cos_f64(x) - std::cos(static_cast<long double>(x)))));
        const double y = positives(generator);
        const long double exact = std::log(static_cast<long double>(y));
        log_error = std::max(log_error, double(std::fabs((loom::kernels::log_f64(y) - exact) / exact)));
    }
    CHECK(sin_error < 1e-15);
    CHECK(cos_error < 1e-15);
    CHECK(log_error < 1e-15);
    CHECK(loom::kernels::pow_positive_f64(10000.0, 0.5) == Approx(100.0).epsilon(1e-15));
}

TEST_CASE("kernels: dot accumulates in 16 lanes folded in a fixed tree", "[kernels][reduce]") {
    for (std::size_t n : {1u, 15u, 16u, 17u, 64u, 100u, 577u}) {
        const auto x = random_values(n, 10 + n);
        const auto y = random_values(n, 20 + n);
        float lanes[16] = {};
        for (std::size_t i = 0; i < n; ++i) {
#if defined(LOOM_USE_FMA)
            lanes[i % 16] = std::fma(x[i], y[i], lanes[i % 16]);  // native-fast: one rounding
#else
            lanes[i % 16] = lanes[i % 16] + x[i] * y[i];
#endif
        }
        for (std::size_t width = 8; width >= 1; width /= 2) {
            for (std::size_t lane = 0; lane < width; ++lane) lanes[lane] = lanes[lane] + lanes[lane + width];
        }
        INFO("n = " << n);
        CHECK(loom::kernels::dot(x.data(), y.data(), n) == lanes[0]);
    }
}

// fold_each's gathered tree must add exactly what fold() adds: compared bit for bit, with
// values whose sums depend on the order and signed zeros. (NaN payloads are not part of
// the contract: the compiler may swap the operands of a scalar addition. A NaN must stay
// a NaN.)
template <std::size_t N>
void check_fold_each_matches_fold(std::uint64_t seed) {
    loom::Random random(seed);
    alignas(64) float lanes[N][loom::kernels::reduction_lanes];
    for (auto& accumulator : lanes) {
        for (float& lane : accumulator) {
            const double pick = random.uniform();
            lane = pick < 0.05   ? -0.0f
                   : pick < 0.1  ? 0.0f
                   : pick < 0.12 ? std::bit_cast<float>(0x7fc00000u | std::uint32_t(random.uniform() * 0x3fffff))
                   : pick < 0.14 ? std::bit_cast<float>(0xffc00000u | std::uint32_t(random.uniform() * 0x3fffff))
                                 : float(std::ldexp(2.0 * random.uniform() - 1.0, int(random.uniform() * 60) - 30));
        }
    }
    // Shaped like a tile: rows of 5 or 4 where N allows, else one row.
    constexpr std::size_t columns = N % 5 == 0 ? 5 : N % 4 == 0 ? 4 : N;
    loom::kernels::simd::Lanes16 accumulators[N / columns][columns];
    for (std::size_t i = 0; i < N; ++i) accumulators[i / columns][i % columns] = loom::kernels::simd::load16(lanes[i]);
    float folded[N];
    loom::kernels::simd::fold_each(accumulators, folded);
    for (std::size_t i = 0; i < N; ++i) {
        float expected_lanes[loom::kernels::reduction_lanes];
        std::copy(std::begin(lanes[i]), std::end(lanes[i]), expected_lanes);
        const float expected = loom::kernels::fold_lanes(expected_lanes);
        INFO(N << " accumulators, number " << i);
        for (const float result : {folded[i], loom::kernels::simd::fold(accumulators[i / columns][i % columns])}) {
            if (std::isnan(expected)) {
                CHECK(std::isnan(result));
            } else {
                CHECK(std::bit_cast<std::uint32_t>(result) == std::bit_cast<std::uint32_t>(expected));
            }
        }
    }
}

TEST_CASE("kernels: folding many accumulators at once gives each one's fold bit for bit", "[kernels][reduce]") {
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        check_fold_each_matches_fold<1>(seed);
        check_fold_each_matches_fold<4>(seed);
        check_fold_each_matches_fold<6>(seed);
        check_fold_each_matches_fold<15>(seed);
        check_fold_each_matches_fold<16>(seed);
        check_fold_each_matches_fold<21>(seed);
        check_fold_each_matches_fold<25>(seed);
        check_fold_each_matches_fold<40>(seed);
    }
}

TEST_CASE("kernels: bf16 and f16 weights widen to the scalar conversion's exact f32, for every 16-bit pattern", "[kernels][determinism]") {
    // Every pattern once, one element off 32-byte alignment (as in a memory-mapped
    // checkpoint) and with a few left past the last whole register, through the SIMD
    // widening the products use; the scalar conversion is what every target must give.
    const std::size_t patterns = 65536, offset = 1, n = patterns + 5;
    std::vector<std::uint16_t> stored(offset + n);
    for (std::size_t i = 0; i < n; ++i) stored[offset + i] = std::uint16_t(i * 40503u);  // odd: every pattern
    std::vector<float> widened(n);
    for (loom::DType dtype : {loom::DType::bf16, loom::DType::f16}) {
        const auto* bytes = reinterpret_cast<const std::byte*>(stored.data() + offset);
        if (dtype == loom::DType::bf16) {
            loom::kernels::simd::expand_weights<loom::DType::bf16>(bytes, n, widened.data());
        } else {
            loom::kernels::simd::expand_weights<loom::DType::f16>(bytes, n, widened.data());
        }
        std::size_t mismatches = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint16_t half = stored[offset + i];
            const float expected = loom::load_as_f32(bytes, dtype, i);
            // bf16 is a shift, so even NaN payloads match; F16C quiets a signalling f16 NaN.
            const bool same = std::bit_cast<std::uint32_t>(widened[i]) == std::bit_cast<std::uint32_t>(expected) ||
                              (dtype == loom::DType::f16 && std::isnan(expected) && std::isnan(widened[i]));
            if (!same && mismatches++ < 5) {
                UNSCOPED_INFO(loom::dtype_name(dtype) << " pattern 0x" << std::hex << half << ": "
                                                      << std::bit_cast<std::uint32_t>(widened[i]) << " instead of "
                                                      << std::bit_cast<std::uint32_t>(expected));
            }
        }
        CHECK(mismatches == 0);
    }
}

TEST_CASE("kernels: matmul gives the same bits for any thread count and any number of rows at once", "[kernels][determinism]") {
    // Row counts through every path: one streamed row, one band from memory (up to 5 rows,
    // and 6-8 in the taller tiles of AVX-512), a light first band and one from L2 (6-9),
    // several bands, and the widened f32 panels of prefill.
    const std::size_t rows = 100, in = 83, out = 37;
    const auto x = random_values(rows * in, 3);
    const auto weights = random_values(out * in, 4);
    const auto bias_values = random_values(out, 5);
    for (loom::DType dtype : {loom::DType::f32, loom::DType::bf16, loom::DType::f16}) {
        const auto weight_bytes = loom::testing::encode_weights(weights, dtype);
        const auto bias_bytes = loom::testing::encode_weights(bias_values, dtype);
        const loom::TensorView weight{dtype, {out, in}, weight_bytes.data()};
        const loom::TensorView bias{dtype, {out}, bias_bytes.data()};

        // Each row alone on one thread: what every other way of computing it must give.
        loom::ThreadPool single(1);
        std::vector<float> expected(rows * out);
        for (std::size_t r = 0; r < rows; ++r) {
            loom::kernels::matmul(x.data() + r * in, 1, weight, &bias, expected.data() + r * out, single);
        }
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t o = 0; o < out; ++o) {
                check_against_double_sum(expected[r * out + o], x.data() + r * in, weight, o, bias.at(o));
            }
        }
        for (std::size_t threads : {1u, 2u, 3u, 4u, 8u}) {
            loom::ThreadPool pool(threads);
            for (std::size_t count : {1u, 2u, 3u, 5u, 6u, 7u, 8u, 9u, 10u, 12u, 13u, 100u}) {
                std::vector<float> batched(count * out);
                loom::kernels::matmul(x.data(), count, weight, &bias, batched.data(), pool);
                INFO(loom::dtype_name(dtype) << ", " << count << " rows, " << threads << " threads");
                CHECK(std::memcmp(batched.data(), expected.data(), batched.size() * 4) == 0);
            }
        }
    }
}

TEST_CASE("kernels: rows too long for L1, multiplied a depth slice at a time, give the bits of one pass",
          "[kernels][determinism]") {
    // Long rows (a down projection's) go through the tiles in depth slices whose sums are
    // carried between them; the depths end inside the last slice and right at its start
    // (only the tail after the last 16 left). 170 outputs make several panels, 100 or more
    // rows prefetch the next panel between bands, and 260 take f32 weights through the
    // panels of many rows.
    const std::size_t rows = 260, out = 170;
    for (const std::size_t in : {2500u, 2440u}) {
        REQUIRE(loom::kernels::detail::band_depth_slice<float>(in) < in);
        const auto x = random_values(rows * in, 8);
        const auto weights = random_values(out * in, 9);
        for (loom::DType dtype : {loom::DType::f32, loom::DType::bf16, loom::DType::f16}) {
            const auto weight_bytes = loom::testing::encode_weights(weights, dtype);
            const loom::TensorView weight{dtype, {out, in}, weight_bytes.data()};
            loom::ThreadPool single(1);
            std::vector<float> expected(rows * out);
            for (std::size_t r = 0; r < rows; ++r) {
                loom::kernels::matmul(x.data() + r * in, 1, weight, nullptr, expected.data() + r * out, single);
            }
            for (std::size_t r = 0; r < rows; r += 87) {
                for (std::size_t o = 0; o < out; o += 13) check_against_double_sum(expected[r * out + o], x.data() + r * in, weight, o);
            }
            for (std::size_t threads : {1u, 3u}) {
                loom::ThreadPool pool(threads);
                for (std::size_t count : {7u, 12u, 100u, 130u, 260u}) {
                    std::vector<float> batched(count * out);
                    loom::kernels::matmul(x.data(), count, weight, nullptr, batched.data(), pool);
                    INFO(loom::dtype_name(dtype) << ", in " << in << ", " << count << " rows, " << threads << " threads");
                    CHECK(std::memcmp(batched.data(), expected.data(), batched.size() * 4) == 0);
                }
            }
        }
    }
}

TEST_CASE("kernels: a row times a matrix read as two streams gives the bits of the four-stream and batched paths",
          "[kernels][determinism]") {
    // Large enough that one thread's share goes as two streams and two threads' halves as
    // four; the second row's path (panels) is a third way to the same sums.
    const std::size_t in = 1000, out = 1100;
    const auto x = random_values(2 * in, 6);
    const auto weights = random_values(out * in, 7);
    for (loom::DType dtype : {loom::DType::bf16, loom::DType::f16}) {
        const auto weight_bytes = loom::testing::encode_weights(weights, dtype);
        const loom::TensorView weight{dtype, {out, in}, weight_bytes.data()};
        REQUIRE(weight_bytes.size() >= loom::kernels::detail::two_stream_share_bytes);
        REQUIRE(weight_bytes.size() / 2 < loom::kernels::detail::two_stream_share_bytes);

        loom::ThreadPool single(1);
        std::vector<float> two_streams(out), batched(2 * out);
        loom::kernels::matmul(x.data(), 1, weight, nullptr, two_streams.data(), single);
        loom::kernels::matmul(x.data(), 2, weight, nullptr, batched.data(), single);
        CHECK(std::memcmp(two_streams.data(), batched.data(), out * 4) == 0);
        for (std::size_t threads : {2u, 3u}) {
            loom::ThreadPool pool(threads);
            std::vector<float> shared(out);
            loom::kernels::matmul(x.data(), 1, weight, nullptr, shared.data(), pool);
            INFO(loom::dtype_name(dtype) << ", " << threads << " threads");
            CHECK(std::memcmp(shared.data(), two_streams.data(), out * 4) == 0);
        }
        for (std::size_t o = 0; o < out; o += 97) check_against_double_sum(two_streams[o], x.data(), weight, o);
    }
}

TEST_CASE("kernels: rmsnorm and softmax match a double-precision reference", "[kernels]") {
    const std::size_t dim = 50;
    const auto x = random_values(dim, 6, 3.0);
    const auto weights = random_values(dim, 7);
    const loom::TensorView weight{loom::DType::f32, {dim}, reinterpret_cast<const std::byte*>(weights.data())};
    std::vector<float> out(dim);
    loom::kernels::rmsnorm(x.data(), weight, 1e-5f, out.data(), dim);
    double mean_square = 0;
    for (float v : x) mean_square += double(v) * v;
    mean_square /= dim;
    for (std::size_t i = 0; i < dim; ++i) {
        CHECK(out[i] == Approx(weights[i] * x[i] / std::sqrt(mean_square + 1e-5)).epsilon(1e-5));
    }

    auto probabilities = x;
    loom::kernels::softmax(probabilities.data(), dim);
    double total = 0;
    for (float v : x) total += std::exp(double(v));
    for (std::size_t i = 0; i < dim; ++i) CHECK(probabilities[i] == Approx(std::exp(double(x[i])) / total).epsilon(1e-5));

    // With room past the values the last ones go through a whole register: the same bits,
    // and nothing written past the room.
    for (std::size_t n = 1; n <= 40; ++n) {
        std::vector<float> expected(x.begin(), x.begin() + n);
        loom::kernels::softmax(expected.data(), n);
        for (std::size_t room = n; room <= n + 17; ++room) {
            std::vector<float> padded(room + 1, -7.0f);
            std::copy_n(x.begin(), n, padded.begin());
            loom::kernels::softmax(padded.data(), n, room);
            INFO(n << " values, room for " << room);
            CHECK(std::memcmp(padded.data(), expected.data(), n * sizeof(float)) == 0);
            CHECK(padded[room] == -7.0f);
        }
    }
}

namespace {

// The attention order the kernels document, one head and one sum at a time: each score a
// plain sum over d, the softmax of ops.hpp, each output a plain sum over ascending keys.
struct AttentionCase {
    loom::kernels::AttentionShape shape;
    std::size_t first_position, tokens;
};

std::vector<float> attention_by_definition(const AttentionCase& c, const std::vector<float>& queries,
                                           const std::vector<float>& keys, const std::vector<float>& values) {
    const auto& shape = c.shape;
    const std::size_t head_dim = shape.head_dim, group = shape.query_heads / shape.kv_heads;
    const std::size_t kv_stride = shape.kv_heads * head_dim;
    const float scale = float(1.0 / std::sqrt(double(head_dim)));
    std::vector<float> out(c.tokens * shape.query_heads * head_dim);
    for (std::size_t t = 0; t < c.tokens; ++t) {
        for (std::size_t head = 0; head < shape.query_heads; ++head) {
            const float* query = queries.data() + (t * shape.query_heads + head) * head_dim;
            const std::size_t kv = head / group, position = c.first_position + t;
            const std::size_t first = shape.sliding_window && position + 1 > shape.sliding_window
                                          ? position + 1 - shape.sliding_window
                                          : 0;
            std::vector<float> weights;
            for (std::size_t k = first; k <= position; ++k) {
                float sum = 0.0f;
                for (std::size_t d = 0; d < head_dim; ++d) sum = sum + query[d] * keys[k * kv_stride + kv * head_dim + d];
                weights.push_back(sum * scale);
            }
            loom::kernels::softmax(weights.data(), weights.size());
            for (std::size_t d = 0; d < head_dim; ++d) {
                float sum = 0.0f;
                for (std::size_t k = first; k <= position; ++k) {
                    sum = sum + weights[k - first] * values[k * kv_stride + kv * head_dim + d];
                }
                out[(t * shape.query_heads + head) * head_dim + d] = sum;
            }
        }
    }
    return out;
}

}  // namespace

TEST_CASE("kernels: attention follows its documented order for every head grouping, thread count and window",
          "[kernels][attention][determinism]") {
    using loom::kernels::AttentionShape;
    const AttentionCase cases[] = {
        {AttentionShape{9, 3, 64, 0}, 0, 37},    // SmolLM2: groups of 3, a prompt from position 0
        {AttentionShape{9, 3, 64, 0}, 40, 1},    // one decoding step
        {AttentionShape{9, 3, 64, 0}, 0, 1},     // the first token, decoded alone
        {AttentionShape{14, 2, 64, 0}, 5, 19},   // Qwen2.5-0.5B: groups of 7 (4 + 3)
        {AttentionShape{8, 1, 24, 0}, 16, 3},    // one kv head for 8 query heads; head_dim not a multiple of 16
        {AttentionShape{4, 4, 20, 0}, 3, 30},    // no grouping
        {AttentionShape{4, 2, 128, 7}, 20, 13},  // sliding window of 7
        {AttentionShape{4, 2, 128, 7}, 33, 1},   // decoding in a sliding window
        {AttentionShape{6, 2, 32, 5}, 0, 21},    // sliding window from position 0
        // Rows of many key blocks, scored as two halves side by side (and a last odd block):
        {AttentionShape{9, 3, 64, 0}, 200, 1},    // a decoding step at position 200 (13 blocks)
        {AttentionShape{14, 2, 64, 0}, 90, 3},    // groups of 7 over 6 blocks
        {AttentionShape{4, 4, 20, 0}, 70, 2},     // one head per kv head: 2 blocks per run, 5 blocks
        {AttentionShape{4, 2, 128, 40}, 100, 1},  // a window of 40 starting inside block 3
    };
    for (const AttentionCase& c : cases) {
        const auto& shape = c.shape;
        CAPTURE(shape.query_heads, shape.kv_heads, shape.head_dim, shape.sliding_window, c.first_position, c.tokens);
        const std::size_t positions = c.first_position + c.tokens, kv_stride = shape.kv_heads * shape.head_dim;
        const auto queries = random_values(c.tokens * shape.query_heads * shape.head_dim, 31, 2.0);
        const auto keys = random_values(positions * kv_stride, 32, 2.0);
        const auto values = random_values(positions * kv_stride, 33);
        const auto expected = attention_by_definition(c, queries, keys, values);

        // The cache's layout, with NaN in the positions of the last key block nobody filled:
        // they are computed in whole blocks and must not reach any output. An f16 cache gives
        // the definition's result on its keys and values rounded to f16, to the bit.
        const std::size_t key_blocks = (positions + 15) / 16 + 1;
        auto check_cache = [&](auto cache_dtype, loom::ThreadPool& pool) {
            constexpr loom::DType Cache = decltype(cache_dtype)::value;
            using Element = loom::kernels::CacheElement<Cache>;
            CAPTURE(loom::dtype_name(Cache));
            auto rounded = [](std::vector<float> x) {
                for (float& value : x) value = loom::f16_to_f32(loom::f32_to_f16(value));
                return x;
            };
            const auto cached_keys = Cache == loom::DType::f16 ? rounded(keys) : keys;
            const auto cached_values = Cache == loom::DType::f16 ? rounded(values) : values;
            const auto cache_expected = attention_by_definition(c, queries, cached_keys, cached_values);
            const Element nan = loom::kernels::to_cache_element<Cache>(std::numeric_limits<float>::quiet_NaN());
            std::vector<Element> cache_keys(shape.kv_heads * key_blocks * shape.head_dim * 16, nan);
            std::vector<Element> cache_values(positions * kv_stride);
            for (std::size_t k = 0; k < positions; ++k) {
                for (std::size_t kv = 0; kv < shape.kv_heads; ++kv) {
                    loom::kernels::store_position<Cache>(cache_keys.data() + kv * key_blocks * shape.head_dim * 16,
                                                         cache_values.data() + kv * shape.head_dim, kv_stride, k,
                                                         keys.data() + k * kv_stride + kv * shape.head_dim,
                                                         values.data() + k * kv_stride + kv * shape.head_dim,
                                                         shape.head_dim);
                }
            }
            auto bytes = [](std::vector<Element>& x) { return reinterpret_cast<std::byte*>(x.data()); };
            std::vector<float> out(expected.size());
            const loom::kernels::AttentionSequence sequence{queries.data(), c.tokens, c.first_position, bytes(cache_keys),
                                                            bytes(cache_values), Cache, key_blocks, out.data()};
            loom::kernels::causal_attention({&sequence, 1}, shape, pool);
            CHECK(std::memcmp(out.data(), cache_expected.data(), out.size() * sizeof(float)) == 0);

            if (c.tokens == 1) {  // decoding: the token's own key and value stored by the kernel
                auto pending_keys = cache_keys, pending_values = cache_values;
                const std::size_t last = c.first_position;
                for (std::size_t kv = 0; kv < shape.kv_heads; ++kv) {
                    std::vector<float> unset(shape.head_dim, std::numeric_limits<float>::quiet_NaN());
                    loom::kernels::store_key_in_blocks<Cache>(pending_keys.data() + kv * key_blocks * shape.head_dim * 16,
                                                              last, unset.data(), shape.head_dim);
                }
                std::fill_n(pending_values.data() + last * kv_stride, kv_stride, nan);
                std::vector<float> decoded(expected.size());
                loom::kernels::AttentionSequence pending{queries.data(), 1, last, bytes(pending_keys),
                                                         bytes(pending_values), Cache, key_blocks, decoded.data()};
                pending.new_key = keys.data() + last * kv_stride;
                pending.new_value = values.data() + last * kv_stride;
                loom::kernels::causal_attention({&pending, 1}, shape, pool);
                CHECK(std::memcmp(decoded.data(), cache_expected.data(), decoded.size() * sizeof(float)) == 0);
                // Position `last` held NaN: equal bytes mean the kernel stored the key and value there.
                CHECK(std::memcmp(pending_keys.data(), cache_keys.data(), cache_keys.size() * sizeof(Element)) == 0);
                CHECK(std::memcmp(pending_values.data(), cache_values.data(), cache_values.size() * sizeof(Element)) == 0);
                // Only a single token's key can be stored by the items, and only with its value.
                pending.new_value = nullptr;
                CHECK_THROWS_WITH(loom::kernels::causal_attention({&pending, 1}, shape, pool),
                                  Catch::Contains("exactly one token"));
                pending.new_value = values.data() + last * kv_stride;
                pending.tokens = 2;
                CHECK_THROWS_WITH(loom::kernels::causal_attention({&pending, 1}, shape, pool),
                                  Catch::Contains("got 2 tokens"));
                // A cache of any other element type is refused before any work.
                pending.tokens = 1;
                pending.cache_dtype = loom::DType::bf16;
                CHECK_THROWS_WITH(loom::kernels::causal_attention({&pending, 1}, shape, pool),
                                  Catch::Contains("F32 or F16 values, not BF16"));
            }
        };
        for (const std::size_t threads : {1, 3}) {
            loom::ThreadPool pool(threads);
            check_cache(std::integral_constant<loom::DType, loom::DType::f32>{}, pool);
            check_cache(std::integral_constant<loom::DType, loom::DType::f16>{}, pool);

            if (c.first_position == 0) {  // training's forward: whole sequences, weights kept
                const loom::kernels::TrainingSequence whole{0, c.tokens};
                std::vector<float> kept(expected.size()), weights(shape.query_heads * c.tokens * c.tokens, -1.0f);
                loom::kernels::causal_attention_keeping({&whole, 1}, shape, queries.data(), keys.data(), values.data(),
                                                        weights.data(), kept.data(), pool);
                CHECK(std::memcmp(kept.data(), expected.data(), kept.size() * sizeof(float)) == 0);
                for (std::size_t head = 0; head < shape.query_heads; ++head) {
                    for (std::size_t t = 0; t < c.tokens; ++t) {
                        const float* row = weights.data() + (head * c.tokens + t) * c.tokens;
                        float total = 0.0f;
                        for (std::size_t k = 0; k < c.tokens; ++k) {
                            const bool outside = k > t || (shape.sliding_window && k + shape.sliding_window <= t);
                            if (outside) CHECK(row[k] == 0.0f);
                            total += row[k];
                        }
                        CHECK(total == Approx(1.0f).epsilon(1e-5));
                    }
                }
            }
        }
    }
}

TEST_CASE("kernels: sums of outer products are plain sums in ascending depth for any tile, block and thread count",
          "[kernels][products][determinism]") {
    struct Shape {
        std::size_t rows, columns, depth;
    };
    // Edges of every kind: partial row tiles, partial vectors, columns past the last vector,
    // depths across several blocks and passes, rows across passes, a depth of one.
    const Shape shapes[] = {{13, 37, 300}, {1, 64, 1},   {7, 16, 1100}, {100, 130, 129},
                            {6, 3, 40},    {25, 200, 2}, {1030, 20, 3}, {5, 40, 2100}};
    for (const Shape& shape : shapes) {
        for (const bool columns_of_a : {false, true}) {  // a(m, k) from rows (dx = dout W) or columns (dW = dout^T x)
            for (const bool accumulate : {false, true}) {
                CAPTURE(shape.rows, shape.columns, shape.depth, columns_of_a, accumulate);
                const auto a_values = random_values(shape.rows * shape.depth, 41, 2.0);
                const auto b = random_values(shape.depth * shape.columns, 42);
                const auto start = random_values(shape.rows * shape.columns, 43);
                const loom::kernels::StridedMatrix a = columns_of_a
                                                           ? loom::kernels::StridedMatrix{a_values.data(), 1, shape.rows}
                                                           : loom::kernels::StridedMatrix{a_values.data(), shape.depth, 1};
                std::vector<float> expected(shape.rows * shape.columns);
                for (std::size_t m = 0; m < shape.rows; ++m) {
                    for (std::size_t n = 0; n < shape.columns; ++n) {
                        float sum = accumulate ? start[m * shape.columns + n] : 0.0f;
                        for (std::size_t k = 0; k < shape.depth; ++k) {
#if defined(LOOM_USE_FMA)
                            sum = std::fma(a.at(m, k), b[k * shape.columns + n], sum);
#else
                            sum = sum + a.at(m, k) * b[k * shape.columns + n];
#endif
                        }
                        expected[m * shape.columns + n] = sum;
                    }
                }
                for (const std::size_t threads : {1, 2, 3}) {
                    loom::ThreadPool pool(threads);
                    // c rows wider than the product: columns past it must stay untouched.
                    const std::size_t stride = shape.columns + 5;
                    std::vector<float> c(shape.rows * stride, 7.0f);
                    for (std::size_t m = 0; m < shape.rows; ++m) {
                        std::copy_n(start.data() + m * shape.columns, shape.columns, c.data() + m * stride);
                    }
                    loom::kernels::sum_of_outer_products(a, b.data(), shape.columns, shape.rows, shape.columns,
                                                         shape.depth, c.data(), stride, accumulate, pool);
                    bool same = true, untouched = true;
                    for (std::size_t m = 0; m < shape.rows; ++m) {
                        same = same && std::memcmp(c.data() + m * stride, expected.data() + m * shape.columns,
                                                   shape.columns * sizeof(float)) == 0;
                        for (std::size_t n = shape.columns; n < stride; ++n) untouched = untouched && c[m * stride + n] == 7.0f;
                    }
                    CHECK(same);
                    CHECK(untouched);
                }
            }
        }
    }
}

TEST_CASE("kernels: the thread pool covers the range once and rethrows a chunk's exception", "[kernels][threads]") {
    loom::ThreadPool pool(3);
    for (std::size_t count : {0u, 1u, 2u, 3u, 10u, 1001u}) {
        std::vector<int> visits(count, 0);
        pool.parallel_for(count, [&](std::size_t begin, std::size_t end) {
            for (std::size_t i = begin; i < end; ++i) ++visits[i];
        });
        CHECK(std::count(visits.begin(), visits.end(), 1) == std::ptrdiff_t(count));
    }
    CHECK_THROWS_WITH(pool.parallel_for(10, [](std::size_t begin, std::size_t) {
                          if (begin > 0) throw std::runtime_error("chunk failed");
                      }),
                      "chunk failed");
    // The pool still works after a failure.
    std::size_t total = 0;
    std::mutex mutex;
    pool.parallel_for(100, [&](std::size_t begin, std::size_t end) {
        std::lock_guard<std::mutex> lock(mutex);
        total += end - begin;
    });
    CHECK(total == 100);
    CHECK_THROWS_AS(loom::ThreadPool(0), loom::argument_error);
}

TEST_CASE("kernels: the thread pool covers ranges of 2^24 indices and more once, for pools split by speed and equally",
          "[kernels][threads]") {
    // Pools of up to 4 threads size their chunks by measured speed, larger ones split equally;
    // ranges of 2^24 indices and more are claimed in units of several (a 2^26-word buffer
    // once came to exactly 2^24 units, which the claim word's 24 bits read as none: a hang).
    for (std::size_t threads : {2u, 3u, 5u}) {
        loom::ThreadPool pool(threads);
        for (std::size_t count : {std::size_t(7), (std::size_t(1) << 24) - 1, std::size_t(1) << 24,
                                  (std::size_t(1) << 24) + 5, std::size_t(1) << 26, (std::size_t(1) << 26) + 3}) {
            std::vector<std::pair<std::size_t, std::size_t>> chunks;
            std::mutex mutex;
            pool.parallel_for(count, [&](std::size_t begin, std::size_t end) {
                std::lock_guard<std::mutex> lock(mutex);
                chunks.emplace_back(begin, end);
            });
            std::sort(chunks.begin(), chunks.end());
            std::size_t covered = 0;
            for (const auto& [begin, end] : chunks) {
                CHECK(begin == covered);
                CHECK(end > begin);
                covered = end;
            }
            CHECK(covered == count);
        }
    }
}

TEST_CASE("kernels: the thread pool's shares move towards the threads' speeds, within bounds", "[kernels][threads]") {
    // Two threads, the second 4x slower: from equal halves towards 0.8 / 0.2, held at the
    // bound of 1.5 / 0.5 times an equal share.
    std::vector<double> shares = {0.5, 0.5};
    const std::vector<double> speeds = {4.0, 1.0};
    loom::detail::rebalance_shares(shares, speeds);
    CHECK(shares[0] == Approx(0.525));
    CHECK(shares[1] == Approx(0.475));
    for (int call = 0; call < 100; ++call) loom::detail::rebalance_shares(shares, speeds);
    CHECK(shares[0] == Approx(0.75).margin(1e-4));
    CHECK(shares[1] == Approx(0.25).margin(1e-4));
    // Equal speeds lead back to equal shares; three threads keep a partition of 1.
    for (int call = 0; call < 200; ++call) loom::detail::rebalance_shares(shares, std::vector<double>{2.0, 2.0});
    CHECK(shares[0] == Approx(0.5).margin(1e-6));
    std::vector<double> three = {1.0 / 3, 1.0 / 3, 1.0 / 3};
    for (int call = 0; call < 100; ++call) loom::detail::rebalance_shares(three, std::vector<double>{1.0, 2.0, 3.0});
    CHECK(three[0] + three[1] + three[2] == Approx(1.0));
    CHECK(three[0] < three[1]);
    CHECK(three[1] < three[2]);
    CHECK(three[0] == Approx(1.0 / 6).margin(0.01));  // at its floor before normalising: half an equal share
}

TEST_CASE("kernels: tasks of 2 and 3 chunks in turn never hang the pool or visit an index twice", "[kernels][threads]") {
    // A worker late from a 2-chunk task once read the next task's chunk count, ran a third
    // chunk of the old task and counted it towards the new one: the caller then waited forever.
    loom::ThreadPool pool(3);
    std::atomic<std::size_t> visited{0};
    std::size_t expected = 0;
    for (int round = 0; round < 20000; ++round) {
        const std::size_t count = 2 + round % 2;
        expected += count;
        pool.parallel_for(count, [&](std::size_t begin, std::size_t end) { visited += end - begin; });
    }
    CHECK(visited.load() == expected);
}
