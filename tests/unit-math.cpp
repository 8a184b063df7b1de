// Math: the SIMD exp gives exp_f32's bits for every kind of input, exp_f64 still gives what
// it gave before it was split into templates, the error bounds of exp, log, sin and cos,
// and the vectorised element-wise kernels give the bits of the plain loops they replace.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "loom/core/dtype.hpp"
#include "loom/core/tensor.hpp"
#include "loom/kernels/math.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/reduce.hpp"
#include "test_support.hpp"

namespace {

using loom::kernels::exp_f32;
using loom::kernels::exp_f64;

std::uint32_t bits_of(float value) { return loom::f32_to_bits(value); }

std::uint64_t bits_of(double value) { return loom::kernels::detail::double_to_bits(value); }

double double_from_bits(std::uint64_t bits) { return loom::kernels::detail::bits_to_double(bits); }

// Same bits, or both NaN: NaN payloads are not part of the promise (WebAssembly does not
// keep them, and a compiler may swap the operands of a commutative operation).
bool same_result(float a, float b) { return bits_of(a) == bits_of(b) || (a != a && b != b); }

// Distance in representable values, across zero too (+0 and -0 are 0 apart).
std::int64_t ulp_distance(float a, float b) {
    auto ordered = [](float value) {
        const std::int64_t bits = std::int32_t(bits_of(value));
        return bits < 0 ? std::int64_t(std::numeric_limits<std::int32_t>::min()) - bits : bits;
    };
    return std::llabs(ordered(a) - ordered(b));
}

std::int64_t ulp_distance(double a, double b) {
    auto ordered = [](double value) {
        const std::int64_t bits = std::int64_t(bits_of(value));
        // Negative doubles map below zero in order; the subtraction cannot overflow for finite values.
        return bits < 0 ? std::numeric_limits<std::int64_t>::min() - bits : bits;
    };
    const std::int64_t x = ordered(a), y = ordered(b);
    return x > y ? x - y : y - x;
}

// exp_f64 exactly as it was written before the SIMD version shared its steps: the new one
// must give the same bits for every input.
double exp_f64_before_simd(double x) {
    if (x != x) return x;
    if (x > 709.78) return std::numeric_limits<double>::infinity();
    if (x < -745.2) return 0.0;
    constexpr double log2e = 1.4426950408889634074;
    constexpr double ln2_high = 6.93147180369123816490e-01;
    constexpr double ln2_low = 1.90821492927058770002e-10;
    auto round_to_integer = [](double t) { return double(std::int64_t(t + (t >= 0 ? 0.5 : -0.5))); };
    const double n = round_to_integer(x * log2e);
    const double r = (x - n * ln2_high) - n * ln2_low;
    double sum = 1.0 / 6227020800.0;
    constexpr double inverse_factorials[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                             1.0 / 362880.0,    1.0 / 40320.0,    1.0 / 5040.0,
                                             1.0 / 720.0,       1.0 / 120.0,      1.0 / 24.0,
                                             1.0 / 6.0,         0.5,              1.0,
                                             1.0};
    for (double coefficient : inverse_factorials) sum = sum * r + coefficient;
    const int exponent = int(n);
    auto power_of_two = [](int k) { return double_from_bits(std::uint64_t(k + 1023) << 52); };
    if (exponent < -1000) return sum * power_of_two(exponent + 1000) * power_of_two(-1000);
    if (exponent > 1000) return sum * power_of_two(exponent - 1000) * power_of_two(1000);
    return sum * power_of_two(exponent);
}

float float_from_bits(std::uint32_t bits) { return loom::bits_to_f32(bits); }

// Runs the array exp over `inputs` (at an odd offset, so the SIMD blocks and the scalar
// tail both see every kind of value) and counts results that differ from exp_f32 in any bit.
struct ExpComparison {
    std::size_t checked = 0;
    std::size_t mismatches = 0;
    float first_mismatch = 0;
};

void compare_array_exp(const std::vector<float>& inputs, ExpComparison& comparison) {
    std::vector<float> outputs(inputs.size());
    const std::size_t offset = inputs.size() > 3 ? 3 : 0;
    loom::kernels::exp_f32(inputs.data(), outputs.data(), offset);
    loom::kernels::exp_f32(inputs.data() + offset, outputs.data() + offset, inputs.size() - offset);
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (bits_of(outputs[i]) != bits_of(exp_f32(inputs[i]))) {
            if (comparison.mismatches++ == 0) comparison.first_mismatch = inputs[i];
        }
    }
    comparison.checked += inputs.size();
}

// Every float whose bit pattern lies in [first, last] and is a multiple of `stride` away
// from `first`, fed through the array exp in batches.
void compare_bit_range(std::uint64_t first, std::uint64_t last, std::uint64_t stride, ExpComparison& comparison) {
    std::vector<float> batch;
    batch.reserve(1 << 20);
    for (std::uint64_t bits = first; bits <= last; bits += stride) {
        batch.push_back(float_from_bits(std::uint32_t(bits)));
        if (batch.size() == batch.capacity()) {
            compare_array_exp(batch, comparison);
            batch.clear();
        }
    }
    if (!batch.empty()) compare_array_exp(batch, comparison);
}

// Every `stride`-th float in [low, high], walking the bit patterns: negative floats from
// the smallest magnitude up (their patterns grow with magnitude), then positive ones.
void compare_value_range(float low, float high, std::uint64_t stride, ExpComparison& comparison) {
    if (low < 0) compare_bit_range(high < 0 ? bits_of(high) : bits_of(-0.0f), bits_of(low), stride, comparison);
    if (high >= 0) compare_bit_range(low > 0 ? bits_of(low) : 0, bits_of(high), stride, comparison);
}

std::vector<float> special_floats() {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> values = {0.0f, -0.0f, inf, -inf,
                                 std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                                 std::numeric_limits<float>::min(), -std::numeric_limits<float>::min(),
                                 std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(),
                                 -104.0f, 89.0f, 88.72283f, 88.7228394f, -103.972076f, -103.97208f, -87.33654f,
                                 float_from_bits(0x7FC00000u), float_from_bits(0xFFC00000u),  // quiet NaNs
                                 float_from_bits(0x7F800001u), float_from_bits(0xFF812345u),  // signalling NaNs
                                 float_from_bits(0x7FFFFFFFu), float_from_bits(0x7FC01234u)};
    for (float edge : {-104.0f, 89.0f, 88.7228394f, -103.97208f, 0.0f}) {
        float below = edge, above = edge;
        for (int step = 0; step < 8; ++step) {
            below = std::nextafter(below, -inf);
            above = std::nextafter(above, inf);
            values.push_back(below);
            values.push_back(above);
        }
    }
    return values;
}

// Inputs for the element-wise kernels: mostly moderate, with negatives, tiny and huge
// magnitudes, and exact zeros of both signs mixed in.
std::vector<float> mixed_values(std::size_t count, std::uint32_t seed) {
    std::mt19937 generator(seed);
    std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
    std::uniform_int_distribution<int> kind(0, 19);
    std::vector<float> values(count);
    for (float& value : values) {
        switch (kind(generator)) {
            case 0: value = unit(generator) * 1e30f; break;
            case 1: value = unit(generator) * 1e4f; break;
            case 2: value = unit(generator) * 100.0f; break;
            case 3: value = unit(generator) * 1e-30f; break;
            case 4: value = unit(generator) > 0 ? 0.0f : -0.0f; break;
            default: value = unit(generator) * 8.0f;
        }
    }
    return values;
}

// The scalar loops ops.hpp had before it was vectorised.
namespace scalar_reference {

void rmsnorm(const float* x, const loom::TensorView& weight, float eps, float* out, std::size_t dim) {
    const float mean_square = loom::kernels::sum_of_squares(x, dim) / float(dim);
    const float inverse_rms = 1.0f / std::sqrt(mean_square + eps);
    for (std::size_t i = 0; i < dim; ++i) out[i] = weight.at(i) * (x[i] * inverse_rms);
}

void softmax(float* values, std::size_t n) {
    float maximum = values[0];
    for (std::size_t i = 1; i < n; ++i) maximum = values[i] > maximum ? values[i] : maximum;
    for (std::size_t i = 0; i < n; ++i) values[i] = exp_f32(values[i] - maximum);
    const float total = loom::kernels::sum(values, n);
    for (std::size_t i = 0; i < n; ++i) values[i] = values[i] / total;
}

void silu_multiply(float* gate, const float* up, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        const float sigmoid = 1.0f / (1.0f + exp_f32(-gate[i]));
        gate[i] = (gate[i] * sigmoid) * up[i];
    }
}

void silu_multiply_backward(const float* gate, const float* up, const float* dout, float* dgate, float* dup,
                            std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        const float sigmoid = 1.0f / (1.0f + exp_f32(-gate[i]));
        dup[i] = dout[i] * (gate[i] * sigmoid);
        dgate[i] = (dout[i] * up[i]) * (sigmoid * (1.0f + gate[i] * (1.0f - sigmoid)));
    }
}

void add_in_place(float* x, const float* y, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) x[i] = x[i] + y[i];
}

std::size_t argmax(const float* values, std::size_t n) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < n; ++i) {
        if (values[i] > values[best]) best = i;
    }
    return best;
}

}  // namespace scalar_reference

std::size_t count_differences(const std::vector<float>& a, const std::vector<float>& b) {
    std::size_t differences = 0;
    for (std::size_t i = 0; i < a.size(); ++i) differences += same_result(a[i], b[i]) ? 0 : 1;
    return differences;
}

std::vector<std::size_t> kernel_lengths() {
    std::vector<std::size_t> lengths;
    for (std::size_t n = 1; n <= 100; ++n) lengths.push_back(n);
    for (std::size_t n : {255u, 256u, 511u, 512u, 513u, 1000u, 4099u, 46080u}) lengths.push_back(n);
    return lengths;
}

}  // namespace

TEST_CASE("math: exp_f64 gives the bits of its pre-SIMD formula for every kind of double", "[math][kernels]") {
    std::size_t checked = 0, mismatches = 0;
    auto check = [&](double x) {
        ++checked;
        if (bits_of(exp_f64(x)) != bits_of(exp_f64_before_simd(x)) && mismatches++ == 0) {
            FAIL_CHECK("first mismatch at x = " << x);
        }
    };
    // Every 97th float, widened: all float exponents, specials included.
    for (std::uint64_t bits = 0; bits <= 0xFFFFFFFFu; bits += 97) check(double(float_from_bits(std::uint32_t(bits))));
    std::mt19937_64 generator(11);
    std::uniform_real_distribution<double> whole_range(-760.0, 720.0);
    std::uniform_real_distribution<double> subnormal_results(-745.3, -708.0);
    std::uniform_real_distribution<double> near_overflow(700.0, 709.9);
    for (int i = 0; i < 1000000; ++i) {
        check(whole_range(generator));
        check(subnormal_results(generator));
        check(near_overflow(generator));
        check(double_from_bits(generator()));  // any bit pattern
    }
    // Where the cut-offs and the rounding of x / ln 2 to an integer change.
    for (double edge : {709.78, -745.2, 0.5 / 1.4426950408889634074, -0.5 / 1.4426950408889634074}) {
        double below = edge, above = edge;
        for (int step = 0; step < 64; ++step) {
            check(below = std::nextafter(below, -1e300));
            check(above = std::nextafter(above, 1e300));
        }
    }
    INFO(checked << " inputs");
    CHECK(mismatches == 0);
}

TEST_CASE("math: the array exp gives exp_f32's bits for every float it is given", "[math][kernels]") {
    ExpComparison comparison;
    // Every 211th bit pattern: all exponents, both signs, NaNs and infinities (~20.4M).
    compare_bit_range(0, 0xFFFFFFFFu, 211, comparison);
    // Densely over the range whose results are neither 0 nor inf (~21M)...
    compare_value_range(-104.0f, 89.0f, 101, comparison);
    // ...and every single float where results become subnormal, zero or infinite.
    compare_value_range(-104.0f, -87.0f, 1, comparison);
    compare_value_range(88.0f, 89.0f, 1, comparison);
    compare_array_exp(special_floats(), comparison);
    CHECK(comparison.checked > 40000000);
    INFO(comparison.mismatches << " of " << comparison.checked << " differ, the first at x = " << comparison.first_mismatch);
    CHECK(comparison.mismatches == 0);
}

TEST_CASE("math: the array exp runs on SIMD lanes wherever xsimd has double lanes", "[math][kernels]") {
    // Otherwise the bit-for-bit tests above would only compare the scalar loop with itself.
#if defined(LOOM_SIMD_XSIMD) && (defined(__x86_64__) || defined(__i386__) || defined(__aarch64__))
#if defined(LOOM_SIMD_EXP_IN_DOUBLES)
    SUCCEED("SIMD exp on " << loom::kernels::simd::target_name());
#else
    FAIL("the array exp fell back to the scalar loop on " << loom::kernels::simd::target_name());
#endif
#else
    SUCCEED("no SIMD double lanes: the array exp is the scalar loop");
#endif
}

TEST_CASE("math: the array exp handles every length, offset and in-place use", "[math][kernels]") {
    const auto specials = special_floats();
    std::vector<float> inputs = mixed_values(200, 5);
    for (std::size_t i = 0; i < specials.size(); ++i) inputs[3 * i % inputs.size()] = specials[i];
    for (std::size_t offset = 0; offset < 4; ++offset) {
        for (std::size_t n = 0; n + offset <= inputs.size(); n += n < 40 ? 1 : 37) {
            std::vector<float> out(n), in_place(inputs.begin() + offset, inputs.begin() + offset + n);
            loom::kernels::exp_f32(inputs.data() + offset, out.data(), n);
            loom::kernels::exp_f32(in_place.data(), in_place.data(), n);
            std::size_t mismatches = 0;
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint32_t expected = bits_of(exp_f32(inputs[offset + i]));
                mismatches += (bits_of(out[i]) != expected) + (bits_of(in_place[i]) != expected);
            }
            INFO("offset " << offset << ", n = " << n);
            CHECK(mismatches == 0);
        }
    }
    CHECK(exp_f32(-104.0f) == 0.0f);
    CHECK(bits_of(exp_f32(-1000.0f)) == 0);  // +0, not -0
    for (std::uint32_t nan : {0x7F800001u, 0xFF812345u, 0x7FC01234u}) CHECK(bits_of(exp_f32(float_from_bits(nan))) == nan);
    CHECK(std::isinf(exp_f32(89.0f)));
    CHECK(exp_f32(-103.97f) > 0.0f);  // still the smallest subnormal
    CHECK(std::isfinite(exp_f32(88.72283f)));
}

TEST_CASE("math: exp_f32 is within 1 ulp of e^x on [-104, 89], subnormal results included", "[math][kernels]") {
    std::vector<float> inputs;
    std::mt19937 generator(3);
    std::uniform_real_distribution<float> by_value(-104.0f, 89.0f);
    std::uniform_real_distribution<float> subnormal_results(-104.0f, -87.0f);
    std::uniform_int_distribution<std::uint32_t> by_bits(0, bits_of(89.0f));
    for (int i = 0; i < 1000000; ++i) {
        inputs.push_back(by_value(generator));
        inputs.push_back(subnormal_results(generator));
        const float small_or_large = float_from_bits(by_bits(generator));  // uniform over exponents
        inputs.push_back(small_or_large);
        if (small_or_large <= 104.0f) inputs.push_back(-small_or_large);
    }
    std::vector<float> results(inputs.size());
    loom::kernels::exp_f32(inputs.data(), results.data(), inputs.size());
    std::int64_t worst = 0;
    float worst_input = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        const float exact = float(std::exp(static_cast<long double>(inputs[i])));
        const std::int64_t distance = ulp_distance(results[i], exact);
        if (distance > worst) worst = distance, worst_input = inputs[i];
    }
    INFO("worst: " << worst << " ulp at x = " << worst_input << " over " << inputs.size() << " inputs");
    CHECK(worst <= 1);
}

TEST_CASE("math: exp_f64 is within 1 ulp of e^x over its whole finite range", "[math][kernels]") {
    std::mt19937_64 generator(4);
    std::uniform_real_distribution<double> range(-708.0, 709.7);
    std::int64_t worst = 0;
    for (int i = 0; i < 1000000; ++i) {
        const double x = range(generator);
        worst = std::max(worst, ulp_distance(exp_f64(x), double(std::exp(static_cast<long double>(x)))));
    }
    INFO("worst: " << worst << " ulp");
    CHECK(worst <= 1);
    CHECK(exp_f64(0.0) == 1.0);
    CHECK(exp_f64(-745.0) == std::numeric_limits<double>::denorm_min());
    CHECK(exp_f64(-746.0) == 0.0);
    CHECK(std::isinf(exp_f64(710.0)));
}

TEST_CASE("math: log_f64 is within 3 ulp over every exponent, subnormals included", "[math][kernels]") {
    std::mt19937_64 generator(5);
    std::int64_t worst = 0;
    double worst_input = 0;
    for (int i = 0; i < 2000000; ++i) {
        // Any positive finite double, uniform over bit patterns: every binade equally.
        const double x = double_from_bits(generator() % 0x7FF0000000000000ull + 1);
        const double exact = double(std::log(static_cast<long double>(x)));
        const std::int64_t distance = ulp_distance(loom::kernels::log_f64(x), exact);
        if (distance > worst) worst = distance, worst_input = x;
    }
    // 20M samples found 3 ulp at worst (near x = 1.28), 1 ulp for all but ~1 in 50000.
    INFO("worst: " << worst << " ulp at x = " << worst_input);
    CHECK(worst <= 3);
    const double inf = std::numeric_limits<double>::infinity();
    CHECK(loom::kernels::log_f64(1.0) == 0.0);
    CHECK(loom::kernels::log_f64(0.0) == -inf);
    CHECK(loom::kernels::log_f64(inf) == inf);
    CHECK(std::isnan(loom::kernels::log_f64(-1.0)));
    CHECK(std::isnan(loom::kernels::log_f64(std::numeric_limits<double>::quiet_NaN())));
    CHECK(loom::kernels::log_f64(std::numeric_limits<double>::denorm_min()) == Approx(-744.4400719213812));
}

TEST_CASE("math: sin_f64 and cos_f64 are within 2 ulp on [-2 pi, 2 pi] and keep small angles exact", "[math][kernels]") {
    std::mt19937_64 generator(6);
    std::uniform_real_distribution<double> angles(-6.283185307179586, 6.283185307179586);
    std::int64_t worst_sin = 0, worst_cos = 0;
    for (int i = 0; i < 1000000; ++i) {
        const double x = angles(generator);
        const long double wide = x;
        worst_sin = std::max(worst_sin, ulp_distance(loom::kernels::sin_f64(x), double(std::sin(wide))));
        worst_cos = std::max(worst_cos, ulp_distance(loom::kernels::cos_f64(x), double(std::cos(wide))));
    }
    INFO("worst: sin " << worst_sin << " ulp, cos " << worst_cos << " ulp");
    // 20M samples found 2 ulp at worst (3 ulp for |x| up to 2e5, where RoPE angles live).
    CHECK(worst_sin <= 2);
    CHECK(worst_cos <= 2);
    for (double tiny : {1e-300, 1e-10, -1e-8}) {
        CHECK(loom::kernels::sin_f64(tiny) == tiny);
        CHECK(loom::kernels::cos_f64(tiny) == 1.0);
    }
    CHECK(bits_of(loom::kernels::sin_f64(-0.0)) == bits_of(-0.0));
}

TEST_CASE("math: rmsnorm, softmax, silu_multiply (and backward), add_in_place and argmax give the bits of plain loops",
          "[math][kernels]") {
    std::uint32_t seed = 100;
    for (std::size_t n : kernel_lengths()) {
        INFO("n = " << n);
        const auto x = mixed_values(n, ++seed);
        const auto y = mixed_values(n, ++seed);

        auto probabilities = x, expected_probabilities = x;
        loom::kernels::softmax(probabilities.data(), n);
        scalar_reference::softmax(expected_probabilities.data(), n);
        CHECK(count_differences(probabilities, expected_probabilities) == 0);

        // Moderate scores too, where most probabilities are neither 0 nor 1.
        std::vector<float> scores(n);
        for (std::size_t i = 0; i < n; ++i) scores[i] = x[i] > 100.0f || x[i] < -100.0f ? x[i] * 1e-30f : x[i];
        auto expected_scores = scores;
        loom::kernels::softmax(scores.data(), n);
        scalar_reference::softmax(expected_scores.data(), n);
        CHECK(count_differences(scores, expected_scores) == 0);

        auto gate = x, expected_gate = x;
        loom::kernels::silu_multiply(gate.data(), y.data(), n);
        scalar_reference::silu_multiply(expected_gate.data(), y.data(), n);
        CHECK(count_differences(gate, expected_gate) == 0);

        const auto dout = mixed_values(n, ++seed);
        std::vector<float> dgate(n), dup(n), expected_dgate(n), expected_dup(n);
        loom::kernels::silu_multiply_backward(x.data(), y.data(), dout.data(), dgate.data(), dup.data(), n);
        scalar_reference::silu_multiply_backward(x.data(), y.data(), dout.data(), expected_dgate.data(),
                                                 expected_dup.data(), n);
        CHECK(count_differences(dgate, expected_dgate) == 0);
        CHECK(count_differences(dup, expected_dup) == 0);

        CHECK(loom::kernels::argmax(x.data(), n) == scalar_reference::argmax(x.data(), n));
        CHECK(loom::kernels::argmax(scores.data(), n) == scalar_reference::argmax(scores.data(), n));

        auto sum = x, expected_sum = x;
        loom::kernels::add_in_place(sum.data(), y.data(), n);
        scalar_reference::add_in_place(expected_sum.data(), y.data(), n);
        CHECK(count_differences(sum, expected_sum) == 0);

        // Rows with all the mixed magnitudes overflow x^2; moderate ones exercise the normal path.
        std::vector<float> row(n);
        for (std::size_t i = 0; i < n; ++i) row[i] = std::fabs(x[i]) > 1e4f ? x[i] * 1e-28f : x[i];
        for (const auto& input : {row, x}) {
            for (loom::DType dtype : {loom::DType::f32, loom::DType::bf16, loom::DType::f16}) {
                const auto weight_bytes = loom::testing::encode_weights(y, dtype);
                const loom::TensorView weight{dtype, {n}, weight_bytes.data()};
                std::vector<float> out(n), expected_out(n);
                loom::kernels::rmsnorm(input.data(), weight, 1e-5f, out.data(), n);
                scalar_reference::rmsnorm(input.data(), weight, 1e-5f, expected_out.data(), n);
                INFO(loom::dtype_name(dtype));
                CHECK(count_differences(out, expected_out) == 0);
            }
        }
    }
}

TEST_CASE("math: softmax and argmax match the plain loops on infinities, NaN, ties and signed zeros",
          "[math][kernels]") {
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<std::vector<float>> rows = {
        {-0.0f, 0.0f, -1.0f, -0.0f, -3.0f, 0.0f, -0.0f, -2.0f, -0.0f, 0.0f, -5.0f, -0.0f, 0.0f, -1.0f, -0.0f, -0.0f, 0.0f, -7.0f},
        {0.0f, -0.0f, -1.0f, -0.0f, -3.0f, 0.0f, -0.0f, -2.0f, -0.0f, 0.0f, -5.0f, -0.0f, 0.0f, -1.0f, -0.0f, -0.0f, 0.0f, -7.0f},
        {1.0f, -inf, 2.0f, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, 3.0f, -inf},
        {-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf},
        {nan, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f, 16.0f},
        {1.0f, 2.0f, 3.0f, nan, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f, 16.0f, 17.0f, 18.0f},
        {1.0f, 2.0f, inf, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f, 16.0f},
        {-100.0f, -200.0f, -300.0f, 1e38f, -1e38f, 3e38f, -3e38f, 0.0f, -0.0f, 42.0f, -42.0f, 87.0f, -87.0f, 88.0f, 89.0f, 1e-40f, -1e-40f},
        {-1.0f, -2.0f, 5.0f, -3.0f, -4.0f, -5.0f, -6.0f, -7.0f, -8.0f, -9.0f, -1.0f, -2.0f, -3.0f, -4.0f, -5.0f, -6.0f, -7.0f, 5.0f, 5.0f},
        {-1.0f, -2.0f, -3.0f, -4.0f, -5.0f, -6.0f, -7.0f, -8.0f, -9.0f, -1.0f, -2.0f, -3.0f, -4.0f, -5.0f, -6.0f, -7.0f, 2.0f, -1.0f, 2.0f},
    };
    for (const auto& row : rows) {
        for (std::size_t n = 1; n <= row.size(); ++n) {
            std::vector<float> values(row.begin(), row.begin() + n), expected = values;
            loom::kernels::softmax(values.data(), n);
            scalar_reference::softmax(expected.data(), n);
            INFO("row starting " << row[0] << ", n = " << n);
            CHECK(count_differences(values, expected) == 0);
            CHECK(loom::kernels::argmax(row.data(), n) == scalar_reference::argmax(row.data(), n));
            CHECK(loom::kernels::all_finite(row.data(), n) ==
                  std::all_of(row.begin(), row.begin() + n, [](float v) { return std::isfinite(v); }));
        }
    }
}

TEST_CASE("math: all_finite finds one infinity or NaN at any position, in whole registers and the tail",
          "[math][kernels]") {
    const float specials[] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN()};
    for (std::size_t n = 0; n <= 70; ++n) {
        // Finite extremes around the special value: their differences are exact zeros.
        std::vector<float> row(n);
        for (std::size_t i = 0; i < n; ++i) {
            row[i] = i % 3 == 0 ? std::numeric_limits<float>::max() : i % 3 == 1 ? -1e-45f : -0.0f;
        }
        CHECK(loom::kernels::all_finite(row.data(), n));
        for (std::size_t at = 0; at < n; ++at) {
            for (float special : specials) {
                std::vector<float> with = row;
                with[at] = special;
                INFO("n = " << n << ", value " << special << " at " << at);
                CHECK_FALSE(loom::kernels::all_finite(with.data(), n));
            }
        }
    }
}
