// The matrix products of a decode step alone: every weight matrix of a model shape (each
// layer's q, k, v, o, gate, up and down projections, then the head) multiplied with R
// input rows, in that order, as a step of R sequences decoding together runs them. Nothing
// else the model does (norms, attention, sampling) is timed, so the figures show how close
// the kernels come to the machine (GMAC/s, and the weight bytes read per second) and how
// much of a decode or serve figure the rest of the step takes. See --help.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <loom/loom.hpp>

#include "bench_support.hpp"

namespace {

constexpr const char* usage =
    "usage: loom_bench_products [--preset NAME] [--dtype bf16|f16|f32] [--rows a,b,c] [--threads a,b]\n"
    "                           [--passes N]\n"
    "\n"
    "  --preset   model shape (default smollm2-135m; weights synthetic, held in memory)\n"
    "  --dtype    stored weight type (default bf16)\n"
    "  --rows     input rows per product: sequences decoding together (default 1,2,4,8,16)\n"
    "  --threads  thread counts, each measured in turn (default: 1 and all cores)\n"
    "  --passes   timed passes over all the weights per row count, taken in turns (1, 2, 4, ...,\n"
    "             1, 2, 4, ...); the table gives their median (default 15)\n";

struct Options {
    std::string preset = "smollm2-135m";
    loom::DType dtype = loom::DType::bf16;
    std::vector<std::size_t> rows = {1, 2, 4, 8, 16};
    std::vector<std::size_t> threads = loom_bench::one_and_all_cores();
    std::size_t passes = 15;
};

Options parse(int argc, char** argv) {
    Options options;
    loom_bench::read_flags(argc, argv, usage, {}, [&](const std::string& flag, const std::string& value) {
        if (flag == "--preset") {
            loom::models::synthetic_preset(value);  // throws if unknown
            options.preset = value;
        } else if (flag == "--dtype") {
            options.dtype = loom::generate::detail::parse_weight_dtype(flag, value);
        } else if (flag == "--rows") {
            options.rows = loom_bench::parse_counts(flag, value, 1);
        } else if (flag == "--threads") {
            options.threads = loom_bench::parse_counts(flag, value, 1);
        } else if (flag == "--passes") {
            options.passes = loom_bench::parse_at_least(flag, value, 1);
        } else {
            return false;
        }
        return true;
    });
    return options;
}

// One pass: the weight matrices in the order a decode step multiplies with them, and their sizes.
struct Pass {
    std::vector<const loom::TensorView*> weights;
    std::size_t widest_in = 0, widest_out = 0;
    double weights_per_row = 0.0;  // multiply-adds per input row
    double weight_bytes = 0.0;
};

Pass decode_step_pass(const loom::io::TensorStore& store, const loom::models::SyntheticModelSpec& spec) {
    Pass pass;
    for (std::size_t layer = 0; layer < spec.num_hidden_layers; ++layer) {
        for (const char* projection : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
            pass.weights.push_back(&store.get("model.layers." + std::to_string(layer) + "." + projection + ".weight"));
        }
    }
    pass.weights.push_back(&store.get(spec.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"));
    for (const loom::TensorView* weight : pass.weights) {
        pass.widest_out = std::max(pass.widest_out, weight->shape[0]);
        pass.widest_in = std::max(pass.widest_in, weight->shape[1]);
        pass.weights_per_row += double(weight->shape[0]) * double(weight->shape[1]);
        pass.weight_bytes += double(weight->nbytes());
    }
    return pass;
}

void run(const Pass& step, const Options& options, std::size_t threads) {
    const std::size_t most_rows = *std::max_element(options.rows.begin(), options.rows.end());
    loom::AlignedVector<float> x(most_rows * step.widest_in), out(most_rows * step.widest_out);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = float((i * 7919) % 1000) * 1e-3f - 0.5f;

    loom::ThreadPool pool(threads);
    auto time_pass = [&](std::size_t rows) {
        const auto start = std::chrono::steady_clock::now();
        for (const loom::TensorView* weight : step.weights) loom::kernels::matmul(x.data(), rows, *weight, nullptr, out.data(), pool);
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    for (const std::size_t rows : options.rows) time_pass(rows);  // warm-up: page in, size the buffers

    // Passes go round the row counts, so a drift of the machine's speed weighs on all alike.
    std::vector<std::vector<double>> seconds(options.rows.size());
    for (std::size_t p = 0; p < options.passes; ++p) {
        for (std::size_t i = 0; i < options.rows.size(); ++i) seconds[i].push_back(time_pass(options.rows[i]));
    }
    for (std::size_t i = 0; i < options.rows.size(); ++i) {
        const double median = loom_bench::median(seconds[i]);
        std::printf("| %4zu | %7zu | %6.1f | %11.1f | %11.3f |\n", options.rows[i], threads,
                    step.weights_per_row * double(options.rows[i]) / median / 1e9, step.weight_bytes / median / 1e9, median * 1e3);
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options options = parse(argc, argv);
        auto spec = loom::models::synthetic_preset(options.preset);
        spec.dtype = options.dtype;
        const auto store = loom::models::synthetic_store(spec, options.preset);
        const Pass step = decode_step_pass(store, spec);

        loom_bench::print_machine();
        std::printf("weights: %s shape, %s, %zu matrices, %.1f MB read per pass; median of %zu passes\n\n",
                    options.preset.c_str(), std::string(loom::dtype_name(options.dtype)).c_str(), step.weights.size(),
                    step.weight_bytes / 1e6, options.passes);
        std::printf("| rows | threads | GMAC/s | weight GB/s | ms per pass |\n");
        std::printf("|-----:|--------:|-------:|------------:|------------:|\n");
        for (const std::size_t threads : options.threads) run(step, options, threads);
        std::printf("\nweight GB/s: the weight bytes of one pass over its time; a decode step reads each weight "
                    "once, so at 1 row this is the bandwidth the products reach\n");
        return 0;
    } catch (const std::exception& failure) {
        std::fprintf(stderr, "loom_bench_products: error: %s\n", failure.what());
        return 1;
    }
}
