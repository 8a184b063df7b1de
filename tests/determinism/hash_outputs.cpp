// loom_hash_<level> OUTPUT: hashes of what Loom's kernels and tiny models compute, built
// once per SIMD level (scalar, sse2, avx2, avx512, native). Each line of OUTPUT is
// `name hash`, the hash an FNV-1a 64 over the raw bytes of one result; the CTest
// comparison then requires every level's file to be identical. The program also checks,
// within its own level, that thread count, batch composition and prefill chunking do not
// change any bit, and exits 1 if they do.
//
// main() is in cpu_gate.cpp, compiled for the x86-64 baseline: it checks the CPU before any
// code of this file (compiled with the level's -m flags) runs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/dtype.hpp"
#include "loom/core/random.hpp"
#include "loom/core/tensor.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/kernels/math.hpp"
#include "loom/kernels/matmul.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/kernels/reduce.hpp"
#include "loom/kernels/simd.hpp"
#include "loom/models/load.hpp"
#include "loom/models/synthetic.hpp"

#ifndef LOOM_HASH_LEVEL
#error "LOOM_HASH_LEVEL must name the SIMD level this program is built for"
#endif

// Read by cpu_gate.cpp before anything here runs; constant data, no code.
extern "C" const char loom_hash_level[] = LOOM_HASH_LEVEL;
extern "C" const char loom_hash_cpu_features[] = ""
#if defined(__SSE3__)
    " sse3"
#endif
#if defined(__SSSE3__)
    " ssse3"
#endif
#if defined(__SSE4_1__)
    " sse4.1"
#endif
#if defined(__SSE4_2__)
    " sse4.2"
#endif
#if defined(__POPCNT__)
    " popcnt"
#endif
#if defined(__AVX__)
    " avx"
#endif
#if defined(__AVX2__)
    " avx2"
#endif
#if defined(__FMA__)
    " fma"
#endif
#if defined(__F16C__)
    " f16c"
#endif
#if defined(__BMI__)
    " bmi"
#endif
#if defined(__BMI2__)
    " bmi2"
#endif
#if defined(__AVX512F__)
    " avx512f"
#endif
#if defined(__AVX512BW__)
    " avx512bw"
#endif
#if defined(__AVX512DQ__)
    " avx512dq"
#endif
#if defined(__AVX512VL__)
    " avx512vl"
#endif
#if defined(__AVX512CD__)
    " avx512cd"
#endif
#if defined(__AVX512IFMA__)
    " avx512ifma"
#endif
#if defined(__AVX512VBMI__)
    " avx512vbmi"
#endif
#if defined(__AVX512VBMI2__)
    " avx512vbmi2"
#endif
#if defined(__AVX512VNNI__)
    " avx512vnni"
#endif
#if defined(__AVX512BITALG__)
    " avx512bitalg"
#endif
#if defined(__AVX512VPOPCNTDQ__)
    " avx512vpopcntdq"
#endif
#if defined(__AVX512BF16__)
    " avx512bf16"
#endif
#if defined(__GFNI__)
    " gfni"
#endif
#if defined(__VPCLMULQDQ__)
    " vpclmulqdq"
#endif
    ;

namespace {

using loom::DType;
using loom::TensorView;

constexpr DType all_dtypes[] = {DType::f32, DType::bf16, DType::f16};

std::string dtype_label(DType dtype) {
    return dtype == DType::f32 ? "f32" : dtype == DType::bf16 ? "bf16" : "f16";
}

std::uint64_t fnv1a(const void* data, std::size_t size) {
    std::uint64_t hash = 14695981039346656037ull;
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
    return hash;
}

// The lines of the output file, in the order they are made (the same on every level).
class Hashes {
public:
    template <typename T>
    void add(const std::string& name, const std::vector<T>& values) {
        add_bytes(name, values.data(), values.size() * sizeof(T));
    }
    void add_bytes(const std::string& name, const void* data, std::size_t size) {
        lines_.push_back({name, fnv1a(data, size)});
    }
    std::size_t size() const noexcept { return lines_.size(); }

    bool write(const std::filesystem::path& path, const std::string& header) const {
        if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
        std::ofstream out(path);
        out << "# " << header << "\n";
        char hex[17];
        for (const auto& [name, hash] : lines_) {
            std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
            out << name << ' ' << hex << '\n';
        }
        out.flush();
        return bool(out);
    }

private:
    std::vector<std::pair<std::string, std::uint64_t>> lines_;
};

// Failures of the checks within one level (threads, batching, chunking).
struct SelfCheck {
    std::vector<std::string> failures;
    void require(bool condition, const std::string& what) {
        if (!condition) failures.push_back(what);
    }
};

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// Uniform in [low, high); every 16th value (on average) an exact +0 or -0, since the sign
// of a zero sum is where reduction trees most easily disagree.
std::vector<float> uniform_floats(loom::Random& random, std::size_t count, double low, double high) {
    std::vector<float> values(count);
    for (float& value : values) {
        const std::uint64_t draw = random.next();
        if ((draw & 15) == 0) value = (draw & 16) ? -0.0f : 0.0f;
        else value = float(low + (high - low) * random.uniform());
    }
    return values;
}

// Magnitudes spread over 2^-20 .. 2^20 with random signs: sums of these depend on the
// order of the additions in almost every bit.
std::vector<float> wide_floats(loom::Random& random, std::size_t count) {
    std::vector<float> values(count);
    for (float& value : values) {
        // (Drawn in separate statements: the order in which a call's arguments are evaluated
        // is unspecified, and g++ and clang differ.)
        const double mantissa = 1.0 + random.uniform();
        const double magnitude = std::ldexp(mantissa, int(random.next() % 41) - 20);
        value = float((random.next() & 1) ? -magnitude : magnitude);
    }
    return values;
}

// `values` stored as `dtype` (rounded to nearest even), starting `dtype_size` bytes into the
// buffer so that the data is not 16-byte aligned, as in a memory-mapped checkpoint.
struct StoredTensor {
    std::vector<std::byte> bytes;
    TensorView view;
};

StoredTensor store_as(const std::vector<float>& values, DType dtype, loom::Shape shape) {
    StoredTensor stored;
    const std::size_t offset = loom::dtype_size(dtype);
    stored.bytes.resize(offset + values.size() * loom::dtype_size(dtype));
    std::byte* data = stored.bytes.data() + offset;
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (dtype == DType::f32) {
            std::memcpy(data + 4 * i, &values[i], 4);
        } else {
            const std::uint16_t half = dtype == DType::bf16 ? loom::f32_to_bf16(values[i]) : loom::f32_to_f16(values[i]);
            std::memcpy(data + 2 * i, &half, 2);
        }
    }
    stored.view = TensorView{dtype, std::move(shape), data};
    return stored;
}

// ---------------------------------------------------------------------------------------
// (a) kernels

// Consistent is not enough: every output must be within rounding of the exact sum. Each of
// the `in` additions rounds (2^-24 relative to the running magnitude); the native-fast bf16
// path also rounds the activations to bf16 (2^-9 relative to each product).
bool near_exact_products(const std::vector<float>& x, std::size_t rows, const TensorView& weight, const TensorView* bias,
                         const std::vector<float>& out) {
    const std::size_t out_features = weight.shape[0], in = weight.shape[1];
    const double input_rounding = loom::kernels::rounds_activations(weight.dtype) ? std::ldexp(1.0, -8) : 0.0;
    for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t o = 0; o < out_features; ++o) {
            double exact = bias ? double(bias->at(o)) : 0.0, magnitude = std::abs(exact);
            for (std::size_t i = 0; i < in; ++i) {
                const double product = double(x[r * in + i]) * double(weight.at(o * in + i));
                exact += product;
                magnitude += std::abs(product);
            }
            const double tolerance = magnitude * (input_rounding + double(in + 2) * std::ldexp(1.0, -23));
            if (!(std::abs(double(out[r * out_features + o]) - exact) <= tolerance)) return false;
        }
    }
    return true;
}

void hash_matmul(Hashes& hashes, SelfCheck& check, loom::ThreadPool& one, loom::ThreadPool& three) {
    loom::Random random(0x6d61746d756cull);
    for (DType dtype : all_dtypes) {
        // 1300 inputs: bf16/f16 tiles whose f32 operands would not fit L1 keep widening in
        // the tiles at any row count; 100 and 260 rows: past the row counts where the others
        // switch to f32 panels (bf16/f16, then f32).
        for (std::size_t in : {1, 15, 16, 17, 64, 100, 576, 1300}) {
            for (std::size_t out : {1, 3, 5, 17, 64}) {
                const double bound = 1.0 / std::sqrt(double(in));
                const auto weight = store_as(uniform_floats(random, out * in, -bound, bound), dtype, {out, in});
                const bool with_bias = out == 3 || out == 17;
                const auto bias = store_as(uniform_floats(random, out, -0.5, 0.5), dtype, {out});
                for (std::size_t rows : {1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 260}) {
                    const std::string name = "matmul/" + dtype_label(dtype) + "/in" + std::to_string(in) + "/out" +
                                             std::to_string(out) + "/rows" + std::to_string(rows) +
                                             (with_bias ? "/bias" : "");
                    const auto x = uniform_floats(random, rows * in, -1.0, 1.0);
                    std::vector<float> batched(rows * out);
                    loom::kernels::matmul(x.data(), rows, weight.view, with_bias ? &bias.view : nullptr,
                                          batched.data(), three);
                    // One row at a time on one thread: a different batch and thread split.
                    std::vector<float> row_by_row(rows * out);
                    for (std::size_t r = 0; r < rows; ++r) {
                        loom::kernels::matmul(x.data() + r * in, 1, weight.view, with_bias ? &bias.view : nullptr,
                                              row_by_row.data() + r * out, one);
                    }
                    check.require(same_bits(batched, row_by_row),
                                  name + ": 3 threads with all rows at once differ from 1 thread row by row");
                    check.require(near_exact_products(x, rows, weight.view, with_bias ? &bias.view : nullptr, batched),
                                  name + ": a product is further from the exact sum than rounding allows");
                    hashes.add(name, batched);
                }
            }
        }
    }
}

void hash_reductions(Hashes& hashes) {
    loom::Random random(0x726564756365ull);
    std::vector<std::size_t> lengths;
    for (std::size_t n = 0; n <= 40; ++n) lengths.push_back(n);
    for (std::size_t n : {47, 63, 64, 65, 100, 127, 128, 129, 576, 1000, 4099}) lengths.push_back(n);
    constexpr std::size_t trials = 8;  // half uniform, half of wide dynamic range
    for (std::size_t n : lengths) {
        for (DType dtype : all_dtypes) {
            std::vector<float> results;
            for (std::size_t trial = 0; trial < trials; ++trial) {
                const bool wide = trial >= trials / 2;
                const auto x = wide ? wide_floats(random, n) : uniform_floats(random, n, -1.0, 1.0);
                const auto w = store_as(wide ? wide_floats(random, n) : uniform_floats(random, n, -1.0, 1.0), dtype, {n});
                switch (dtype) {
                    case DType::f32: results.push_back(loom::kernels::dot<DType::f32>(x.data(), w.view.data, n)); break;
                    case DType::bf16: results.push_back(loom::kernels::dot<DType::bf16>(x.data(), w.view.data, n)); break;
                    case DType::f16: results.push_back(loom::kernels::dot<DType::f16>(x.data(), w.view.data, n)); break;
                }
            }
            hashes.add("dot/" + dtype_label(dtype) + "/n" + std::to_string(n), results);
        }
        std::vector<float> dots, sums, squares;
        for (std::size_t trial = 0; trial < trials; ++trial) {
            const bool wide = trial >= trials / 2;
            const auto x = wide ? wide_floats(random, n) : uniform_floats(random, n, -1.0, 1.0);
            const auto y = wide ? wide_floats(random, n) : uniform_floats(random, n, -1.0, 1.0);
            dots.push_back(loom::kernels::dot(x.data(), y.data(), n));
            sums.push_back(loom::kernels::sum(x.data(), n));
            squares.push_back(loom::kernels::sum_of_squares(x.data(), n));
        }
        hashes.add("dot/f32-pointers/n" + std::to_string(n), dots);
        hashes.add("sum/n" + std::to_string(n), sums);
        hashes.add("sum_of_squares/n" + std::to_string(n), squares);
    }
}

// A sample hashed in `parts` consecutive pieces, so a difference points to an input range.
template <typename T>
void add_in_parts(Hashes& hashes, const std::string& name, const std::vector<T>& values, std::size_t parts) {
    for (std::size_t part = 0; part < parts; ++part) {
        const std::size_t begin = values.size() * part / parts;
        const std::size_t end = values.size() * (part + 1) / parts;
        hashes.add_bytes(name + "/part" + std::to_string(part), values.data() + begin, (end - begin) * sizeof(T));
    }
}

float float_from_bits(std::uint32_t bits) { return loom::bits_to_f32(bits); }

double double_from_bits(std::uint64_t bits) { return loom::kernels::detail::bits_to_double(bits); }

void hash_math(Hashes& hashes) {
    using namespace loom::kernels;
    loom::Random random(0x6d617468ull);
    constexpr std::size_t parts = 8;

    {  // exp_f32 on a dense grid over its whole useful range, then on random bit patterns
        constexpr std::size_t count = std::size_t(1) << 20;
        std::vector<float> out(count);
        for (std::size_t i = 0; i < count; ++i) out[i] = exp_f32(float(-110.0 + 200.0 * double(i) / double(count)));
        add_in_parts(hashes, "exp_f32/grid-110..90", out, parts);
        std::vector<float> bits_out(std::size_t(1) << 18);
        for (float& value : bits_out) value = exp_f32(float_from_bits(std::uint32_t(random.next())));
        add_in_parts(hashes, "exp_f32/random-bits", bits_out, parts);
        const float specials[] = {0.0f, -0.0f, 1.0f, -1.0f, 88.72f, 88.73f, -87.33f, -103.97f, -104.0f,
                                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min(),
                                  std::numeric_limits<float>::max(), std::numeric_limits<float>::lowest()};
        std::vector<float> special_out;
        for (float x : specials) special_out.push_back(exp_f32(x));
        hashes.add("exp_f32/specials", special_out);

        // The array form, on the same inputs, in calls of 1 to 37 elements so that every
        // split between its SIMD blocks and its element-by-element tail occurs.
        auto exp_array = [](const std::vector<float>& in) {
            std::vector<float> out(in.size());
            for (std::size_t begin = 0, length = 1; begin < in.size(); begin += length, length = length % 37 + 1) {
                exp_f32(in.data() + begin, out.data() + begin, std::min(length, in.size() - begin));
            }
            return out;
        };
        std::vector<float> grid_in(count);
        for (std::size_t i = 0; i < count; ++i) grid_in[i] = float(-110.0 + 200.0 * double(i) / double(count));
        add_in_parts(hashes, "exp_f32-array/grid-110..90", exp_array(grid_in), parts);
        std::vector<float> bits_in(std::size_t(1) << 18);
        for (float& value : bits_in) value = float_from_bits(std::uint32_t(random.next()));
        add_in_parts(hashes, "exp_f32-array/random-bits", exp_array(bits_in), parts);
        hashes.add("exp_f32-array/specials", exp_array(std::vector<float>(std::begin(specials), std::end(specials))));
    }
    {  // exp_f64 and pow_positive_f64, used by RoPE frequency tables
        std::vector<double> out(std::size_t(1) << 18);
        for (double& value : out) value = exp_f64(-750.0 + 1465.0 * random.uniform());
        add_in_parts(hashes, "exp_f64/uniform-750..715", out, parts);
        std::vector<double> powers;
        for (double theta : {10000.0, 100000.0, 500000.0, 1000000.0}) {
            for (std::size_t head_dim : {32, 64, 80, 128}) {
                for (std::size_t i = 0; i < head_dim; i += 2) powers.push_back(pow_positive_f64(theta, -double(i) / double(head_dim)));
            }
        }
        hashes.add("pow_positive_f64/rope-frequencies", powers);
    }
    {  // sin and cos: uniform angles up to 1e6, and RoPE's position * frequency angles
        constexpr std::size_t count = std::size_t(1) << 19;
        std::vector<double> angles(count);
        for (double& angle : angles) angle = -1e6 + 2e6 * random.uniform();
        std::vector<double> sines(count), cosines(count);
        for (std::size_t i = 0; i < count; ++i) {
            sines[i] = sin_f64(angles[i]);
            cosines[i] = cos_f64(angles[i]);
        }
        add_in_parts(hashes, "sin_f64/uniform-1e6", sines, parts);
        add_in_parts(hashes, "cos_f64/uniform-1e6", cosines, parts);
        std::vector<double> rope_sines, rope_cosines;
        constexpr std::size_t head_dim = 64;
        for (std::size_t position = 0; position < 8192; ++position) {
            for (std::size_t i = 0; i < head_dim; i += 2) {
                const double angle = double(position) * pow_positive_f64(10000.0, -double(i) / double(head_dim));
                rope_sines.push_back(sin_f64(angle));
                rope_cosines.push_back(cos_f64(angle));
            }
        }
        add_in_parts(hashes, "sin_f64/rope-angles", rope_sines, parts);
        add_in_parts(hashes, "cos_f64/rope-angles", rope_cosines, parts);
    }
    {  // log: random positive bit patterns (subnormals to infinity), and 1e-3 .. 1e3
        std::vector<double> from_bits(std::size_t(1) << 18);
        for (double& value : from_bits) value = log_f64(double_from_bits(random.next() >> 1));
        add_in_parts(hashes, "log_f64/random-positive-bits", from_bits, parts);
        std::vector<double> uniform(std::size_t(1) << 18);
        for (double& value : uniform) value = log_f64(exp_f64(-6.9 + 13.8 * random.uniform()));
        add_in_parts(hashes, "log_f64/1e-3..1e3", uniform, parts);
    }
}

// Every bf16 and f16 bit pattern widened to f32 as the kernels widen weights (16 at a
// time) and f16 cache values (a register at a time): exact, so the bits of the scalar
// conversions, NaN payloads included.
void hash_widening(Hashes& hashes, SelfCheck& check) {
    std::vector<std::uint16_t> patterns(std::size_t(1) << 16);
    for (std::size_t i = 0; i < patterns.size(); ++i) patterns[i] = std::uint16_t(i);
    const auto* stored = reinterpret_cast<const std::byte*>(patterns.data());
    std::vector<float> expected(patterns.size()), widened(patterns.size());
    for (DType dtype : {DType::bf16, DType::f16}) {
        for (std::size_t i = 0; i < patterns.size(); ++i) expected[i] = loom::load_as_f32(stored, dtype, i);
        if (dtype == DType::bf16) loom::kernels::simd::expand_weights<DType::bf16>(stored, patterns.size(), widened.data());
        else loom::kernels::simd::expand_weights<DType::f16>(stored, patterns.size(), widened.data());
        check.require(same_bits(widened, expected), "widen/" + dtype_label(dtype) + ": weights widen to other bits than the scalar conversion");
        hashes.add("widen/" + dtype_label(dtype) + "/weights", widened);
    }
    using loom::kernels::simd::width;
    for (std::size_t i = 0; i < patterns.size(); i += width) {
        loom::kernels::simd::store(widened.data() + i, loom::kernels::simd::load_widened<DType::f16>(stored + 2 * i));
    }
    check.require(same_bits(widened, expected), "widen/f16: cache values widen to other bits than the scalar conversion");
    hashes.add("widen/f16/cache-values", widened);
}

void hash_ops(Hashes& hashes) {
    loom::Random random(0x6f7073ull);
    constexpr std::size_t rows = 4;
    for (DType dtype : all_dtypes) {
        for (std::size_t dim : {1, 15, 16, 17, 64, 100, 576, 896}) {
            for (float eps : {1e-5f, 1e-6f}) {
                const auto weight = store_as(uniform_floats(random, dim, 0.5, 1.5), dtype, {dim});
                std::vector<float> x = uniform_floats(random, rows * dim, -3.0, 3.0);
                const auto wide = wide_floats(random, dim);
                std::copy(wide.begin(), wide.end(), x.begin() + dim);  // one row of wide dynamic range
                std::vector<float> out(rows * dim);
                for (std::size_t r = 0; r < rows; ++r) loom::kernels::rmsnorm(x.data() + r * dim, weight.view, eps, out.data() + r * dim, dim);
                hashes.add("rmsnorm/" + dtype_label(dtype) + "/dim" + std::to_string(dim) + (eps == 1e-5f ? "/eps1e-5" : "/eps1e-6"), out);
            }
        }
    }
    for (std::size_t n : {1, 2, 3, 15, 16, 17, 31, 64, 100, 256, 1000, 4099}) {
        std::vector<float> all;
        for (int trial = 0; trial < 5; ++trial) {
            std::vector<float> values = trial == 0 ? uniform_floats(random, n, -1.0, 1.0)
                                      : trial == 1 ? uniform_floats(random, n, -80.0, 80.0)
                                                   : uniform_floats(random, n, -10.0, 10.0);
            if (trial == 3) {  // masked positions, as a causal mask would write them
                for (std::size_t i = 1; i < n; i += 3) values[i] = -std::numeric_limits<float>::infinity();
            }
            if (trial == 4) {  // a maximum of zero, reached by +0 and -0 alike
                for (std::size_t i = 0; i < n; ++i) values[i] = i % 4 == 1 ? 0.0f : i % 4 == 3 ? -0.0f : -std::fabs(values[i]);
            }
            loom::kernels::softmax(values.data(), n);
            all.insert(all.end(), values.begin(), values.end());
        }
        hashes.add("softmax/n" + std::to_string(n), all);
    }
    for (std::size_t n : {1, 15, 16, 17, 64, 100, 576, 4096}) {
        std::vector<float> gate = uniform_floats(random, n, -20.0, 20.0);
        const std::vector<float> up = uniform_floats(random, n, -3.0, 3.0);
        const float specials[] = {-100.0f, 100.0f, -0.0f, 0.0f, -88.0f, 1e-30f};
        for (std::size_t i = 0; i < std::min<std::size_t>(n, 6); ++i) gate[i * n / 6] = specials[i];
        loom::kernels::silu_multiply(gate.data(), up.data(), n);
        hashes.add("silu_multiply/n" + std::to_string(n), gate);
    }
    for (std::size_t n : {1, 15, 16, 17, 64, 100, 576}) {
        std::vector<float> x = wide_floats(random, n);
        loom::kernels::add_in_place(x.data(), wide_floats(random, n).data(), n);
        hashes.add("add_in_place/n" + std::to_string(n), x);
    }
}

// ---------------------------------------------------------------------------------------
// (b) whole models

struct Run {
    std::vector<float> prefill_logits;  // [prompt, vocab]
    std::vector<float> decode_logits;   // [decode steps, vocab]
    std::vector<int> tokens;            // greedy choices: after the prompt, then after each step
};

int argmax(const float* row, std::size_t n) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < n; ++i) {
        if (row[i] > row[best]) best = i;  // the lowest id wins a tie
    }
    return int(best);
}

Run run_model(const loom::models::Llama& model, const std::vector<int>& prompt, std::size_t chunk,
              std::size_t decode_steps, loom::ThreadPool& pool) {
    using loom::models::LogitRows;
    const std::size_t vocab = model.config().vocab_size;
    Run run;
    auto sequence = model.new_sequence(prompt.size() + decode_steps);
    xt::xtensor<float, 2> logits;
    for (std::size_t position = 0; position < prompt.size(); position += chunk) {
        const std::size_t count = std::min(chunk, prompt.size() - position);
        model.forward(std::span<const int>(prompt.data() + position, count), sequence, LogitRows::all, logits, pool);
        run.prefill_logits.insert(run.prefill_logits.end(), logits.begin(), logits.end());
    }
    run.tokens.push_back(argmax(run.prefill_logits.data() + (prompt.size() - 1) * vocab, vocab));
    for (std::size_t step = 0; step < decode_steps; ++step) {
        const int token = run.tokens.back();
        model.forward(std::span<const int>(&token, 1), sequence, LogitRows::last, logits, pool);
        run.decode_logits.insert(run.decode_logits.end(), logits.begin(), logits.end());
        run.tokens.push_back(argmax(logits.data(), vocab));
    }
    return run;
}

// The same run with company: the prompt is prefilled in one batch with another prompt,
// and every decode step shares its batch with that sequence's decoding and, from step 3
// on, with a third sequence (its prefill first). Only the first sequence's logits are kept.
Run run_model_in_batch(const loom::models::Llama& model, const std::vector<int>& prompt, std::size_t decode_steps,
                       loom::ThreadPool& pool) {
    using loom::models::BatchEntry;
    using loom::models::LogitRows;
    const std::size_t vocab = model.config().vocab_size;
    const std::vector<int> second_prompt(prompt.rbegin(), prompt.rbegin() + 11);
    const std::vector<int> third_prompt(prompt.begin() + 3, prompt.begin() + 20);
    const std::size_t context = prompt.size() + decode_steps;
    auto first = model.new_sequence(context), second = model.new_sequence(context), third = model.new_sequence(context);
    loom::models::ForwardScratch scratch;
    xt::xtensor<float, 2> logits;
    Run run;
    const BatchEntry prefill[] = {{prompt, &first, LogitRows::all}, {second_prompt, &second, LogitRows::last}};
    model.forward(prefill, scratch, logits, pool);
    run.prefill_logits.assign(logits.begin(), logits.begin() + prompt.size() * vocab);
    run.tokens.push_back(argmax(run.prefill_logits.data() + (prompt.size() - 1) * vocab, vocab));
    int second_token = argmax(logits.data() + prompt.size() * vocab, vocab), third_token = 0;
    for (std::size_t step = 0; step < decode_steps; ++step) {
        const int token = run.tokens.back();
        std::vector<BatchEntry> batch = {{std::span<const int>(&token, 1), &first, LogitRows::last},
                                         {std::span<const int>(&second_token, 1), &second, LogitRows::last}};
        if (step == 3) batch.push_back({third_prompt, &third, LogitRows::last});
        if (step > 3) batch.push_back({std::span<const int>(&third_token, 1), &third, LogitRows::last});
        model.forward(batch, scratch, logits, pool);
        run.decode_logits.insert(run.decode_logits.end(), logits.begin(), logits.begin() + vocab);
        run.tokens.push_back(argmax(logits.data(), vocab));
        second_token = argmax(logits.data() + vocab, vocab);
        if (step >= 3) third_token = argmax(logits.data() + 2 * vocab, vocab);
    }
    return run;
}

void hash_models(Hashes& hashes, SelfCheck& check, loom::ThreadPool& one, loom::ThreadPool& three) {
    constexpr std::size_t prompt_length = 37;  // crosses the tiny Mistral's 8-token window
    constexpr std::size_t decode_steps = 24;
    // Every weight type with the f32 cache, and bf16 weights with the f16 cache as well (its
    // rounding and widening run on every target).
    struct Setting {
        DType weights, cache;
    };
    const Setting settings[] = {
        {DType::f32, DType::f32}, {DType::bf16, DType::f32}, {DType::f16, DType::f32}, {DType::bf16, DType::f16}};
    for (const char* preset : {"tiny-llama", "tiny-qwen2", "tiny-mistral"}) {
        for (const Setting& setting : settings) {
            loom::models::SyntheticModelSpec spec = loom::models::synthetic_preset(preset);
            spec.dtype = setting.weights;
            spec.weight_std = 0.25;  // wide enough that greedy decoding does not repeat one token
            const auto model = loom::models::load_synthetic_model(spec, "memory");
            model.network->set_cache_dtype(setting.cache);
            std::vector<int> prompt;
            for (std::size_t i = 0; i < prompt_length; ++i) prompt.push_back(int((i * 101 + 7) % spec.vocab_size));

            const std::string name = std::string("model/") + preset + "/" + dtype_label(setting.weights) +
                                     (setting.cache == DType::f16 ? "/f16-cache" : "");
            const Run reference = run_model(*model.network, prompt, prompt_length, decode_steps, one);
            const struct {
                std::size_t chunk;
                loom::ThreadPool* pool;
                const char* what;
            } variants[] = {{prompt_length, &three, "3 threads"},
                            {5, &one, "1 thread, prompt in chunks of 5"},
                            {1, &one, "1 thread, prompt token by token"}};
            const Run batched = run_model_in_batch(*model.network, prompt, decode_steps, three);
            const std::string batch_label = name + ": batched with other sequences differs from alone in ";
            check.require(same_bits(batched.prefill_logits, reference.prefill_logits), batch_label + "the prompt's logits");
            check.require(same_bits(batched.decode_logits, reference.decode_logits), batch_label + "the decode logits");
            check.require(batched.tokens == reference.tokens, batch_label + "the greedy tokens");
            for (const auto& variant : variants) {
                const Run other = run_model(*model.network, prompt, variant.chunk, decode_steps, *variant.pool);
                const std::string label = name + ": " + variant.what + " differ from 1 thread, prompt at once, in ";
                check.require(same_bits(other.prefill_logits, reference.prefill_logits), label + "the prompt's logits");
                check.require(same_bits(other.decode_logits, reference.decode_logits), label + "the decode logits");
                check.require(other.tokens == reference.tokens, label + "the greedy tokens");
            }
            hashes.add(name + "/prefill-logits", reference.prefill_logits);
            hashes.add(name + "/decode-logits", reference.decode_logits);
            hashes.add(name + "/greedy-tokens", reference.tokens);
        }
    }
}

}  // namespace

int loom_hash_main(int argc, char** argv) {
    if (argc != 2 || argv[1][0] == '-') {
        std::fprintf(stderr, "usage: loom_hash_%s OUTPUT_FILE\n", loom_hash_level);
        return 2;
    }
    const auto start = std::chrono::steady_clock::now();
    try {
        loom::ThreadPool one(1);
        loom::ThreadPool three(3);
        Hashes hashes;
        SelfCheck check;
        std::string timings;
        auto timed = [&](const char* label, auto&& section) {
            const auto begin = std::chrono::steady_clock::now();
            section();
            char text[64];
            std::snprintf(text, sizeof text, "%s%s %.2f s", timings.empty() ? "" : ", ", label,
                          std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count());
            timings += text;
        };
        timed("matmul", [&] { hash_matmul(hashes, check, one, three); });
        timed("reductions", [&] { hash_reductions(hashes); });
        timed("math", [&] { hash_math(hashes); });
        timed("ops", [&] { hash_ops(hashes); });
        timed("widening", [&] { hash_widening(hashes, check); });
        timed("models", [&] { hash_models(hashes, check, one, three); });

        const std::string header = std::string("loom_hash_") + loom_hash_level + ", SIMD target " +
                                   loom::kernels::simd::target_name() + ", " + loom::kernels::simd::kernel_mode() +
                                   " kernels, CPU features:" + loom_hash_cpu_features;
        if (!hashes.write(argv[1], header)) {
            std::fprintf(stderr, "loom_hash_%s: cannot write %s\n", loom_hash_level, argv[1]);
            return 1;
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::printf("%s\n%zu hashes in %.2f s (%s) -> %s\n", header.c_str(), hashes.size(), seconds, timings.c_str(),
                    argv[1]);
        if (!check.failures.empty()) {
            for (const auto& failure : check.failures) std::printf("FAIL %s\n", failure.c_str());
            std::printf("%zu self-checks failed: results depend on threads or batching, or are inexact\n",
                        check.failures.size());
            std::error_code ignored;
            std::filesystem::remove(argv[1], ignored);  // a failed level must not take part in the comparison
            return 1;
        }
        return 0;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "loom_hash_%s: %s\n", loom_hash_level, error.what());
        return 1;
    }
}
