// Training speed and memory: AdamW steps (cross-entropy, backward through every layer,
// clipping) on the SmolLM2-135M shape with synthetic weights, batch 4 x 256 tokens, at
// each thread count in a process of its own (so each peak RSS is its own), and with
// --pytorch the same model and step in PyTorch (benchmarks/bench_train_pytorch.py) in the
// same run. See --help.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <loom/loom.hpp>
#include <loom/train/trainer.hpp>

#include "bench_support.hpp"

namespace {

constexpr const char* usage =
    "usage: loom_bench_train [--preset NAME] [--layers N] [--batch N] [--seq-len N] [--steps N] [--threads a,b]\n"
    "                        [--dtype bf16|f32] [--recompute] [--pytorch]\n"
    "\n"
    "  --preset     model shape (default smollm2-135m)\n"
    "  --layers     decoder layers (default: the preset's)\n"
    "  --batch      sequences per step (default 4)\n"
    "  --seq-len    tokens per sequence (default 256)\n"
    "  --steps      timed AdamW steps after one warm-up step (default 3)\n"
    "  --threads    thread counts, each in its own process (default 1 and all cores)\n"
    "  --dtype      the checkpoint's weight type; training always keeps f32 master weights (default bf16)\n"
    "  --recompute  recompute activations in the backward pass (less memory)\n"
    "  --pytorch    also run benchmarks/bench_train_pytorch.py on the same shape and print the ratio\n";

constexpr const char* pytorch_script = LOOM_SOURCE_DIR "/benchmarks/bench_train_pytorch.py";

struct Options {
    std::string preset = "smollm2-135m";
    std::size_t layers = 0;
    std::size_t batch = 4;
    std::size_t sequence_length = 256;
    std::size_t steps = 3;
    std::vector<std::size_t> threads;
    loom::DType dtype = loom::DType::bf16;
    bool recompute = false;
    bool pytorch = false;
};

Options parse(int argc, char** argv) {
    Options options;
    options.threads = loom_bench::one_and_all_cores();
    loom_bench::read_flags(argc, argv, usage, {"--recompute", "--pytorch"}, [&](const std::string& flag, const std::string& value) {
        if (flag == "--recompute") options.recompute = true;
        else if (flag == "--pytorch") options.pytorch = true;
        else if (flag == "--preset") options.preset = value;
        else if (flag == "--layers") options.layers = loom_bench::parse_at_least(flag, value, 1);
        else if (flag == "--batch") options.batch = loom_bench::parse_at_least(flag, value, 1);
        else if (flag == "--seq-len") options.sequence_length = loom_bench::parse_at_least(flag, value, 2);
        else if (flag == "--steps") options.steps = loom_bench::parse_at_least(flag, value, 1);
        else if (flag == "--threads") options.threads = loom_bench::parse_counts(flag, value, 1);
        else if (flag == "--dtype") {
            if (value != "bf16" && value != "f32") throw loom::argument_error("--dtype must be bf16 or f32");
            options.dtype = value == "bf16" ? loom::DType::bf16 : loom::DType::f32;
        } else return false;
        return true;
    });
    return options;
}

loom::models::SyntheticModelSpec model_spec(const Options& options) {
    loom::models::SyntheticModelSpec spec = loom::models::synthetic_preset(options.preset);
    if (options.layers) spec.num_hidden_layers = options.layers;
    spec.dtype = options.dtype;
    return spec;
}

struct Measurement {
    double tokens_per_second = 0.0;
    double step_seconds = 0.0;
    double peak_rss_mib = 0.0;
    double activation_mib = 0.0;
    double first_loss = 0.0, last_loss = 0.0;
};

// One thread count, in this process: parameters from an in-memory checkpoint, random
// tokens, one warm-up step, then `steps` timed ones.
Measurement measure(const Options& options, std::size_t threads) {
    const loom::models::SyntheticModelSpec spec = model_spec(options);
    std::unique_ptr<loom::train::TrainableLlama> model;
    {
        const auto checkpoint = loom::models::synthetic_store(spec, "synthetic checkpoint");
        model = std::make_unique<loom::train::TrainableLlama>(
            loom::io::parse_model_config(loom::models::synthetic_config_json(spec), "config.json"), checkpoint);
    }
    loom::train::TokenStream stream;
    loom::Random random(1);
    std::vector<int> tokens((options.steps + 2) * options.batch * (options.sequence_length + 1));
    for (int& token : tokens) token = int(random.next() % spec.vocab_size);
    stream.append(tokens, true);
    stream.documents = 1;
    const loom::train::PackedDataset data(std::move(stream), options.sequence_length, 0.0);
    loom::train::TrainingOptions training;
    training.steps = options.steps + 1;
    training.batch_size = options.batch;
    training.sequence_length = options.sequence_length;
    training.validation_fraction = 0.0;
    training.recompute = options.recompute;
    loom::ThreadPool pool(threads);
    loom::train::Trainer trainer(*model, data, training, pool);
    loom_bench::reset_peak_rss();  // from here: parameters, gradients, moments, activations
    Measurement result;
    result.first_loss = trainer.step().loss;
    double seconds = 0.0;
    std::size_t processed = 0;
    while (!trainer.finished()) {
        const loom::train::StepReport report = trainer.step();
        seconds += report.seconds;
        processed += report.tokens;
        result.last_loss = report.loss;
    }
    result.tokens_per_second = double(processed) / seconds;
    result.step_seconds = seconds / double(options.steps);
    result.peak_rss_mib = loom_bench::peak_rss_mib();
    result.activation_mib = double(trainer.activation_bytes()) / (1024.0 * 1024.0);
    return result;
}

// measure() in a child process; the result comes back through a pipe.
Measurement measure_in_child(const Options& options, std::size_t threads) {
    int channel[2];
    if (pipe(channel) != 0) throw loom::error("pipe failed");
    const pid_t child = fork();
    if (child == 0) {
        close(channel[0]);
        int code = 0;
        try {
            const Measurement result = measure(options, threads);
            if (write(channel[1], &result, sizeof result) != sizeof result) code = 1;
        } catch (const std::exception& failure) {
            std::fprintf(stderr, "loom_bench_train: %s\n", failure.what());
            code = 1;
        }
        _exit(code);
    }
    close(channel[1]);
    Measurement result;
    const bool received = read(channel[0], &result, sizeof result) == sizeof result;
    close(channel[0]);
    int status = 0;
    waitpid(child, &status, 0);
    if (!received || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        throw loom::error("the measurement at " + std::to_string(threads) + " threads failed");
    }
    return result;
}

// bench_train_pytorch.py's `pytorch_train key=value ...` line for one thread count.
std::map<std::string, std::string> run_pytorch(const Options& options, std::size_t threads) {
    const loom::models::SyntheticModelSpec spec = model_spec(options);
    const std::string command = "/usr/bin/python3 " + std::string(pytorch_script) + " --preset " + options.preset +
                                " --layers " + std::to_string(spec.num_hidden_layers) + " --batch " +
                                std::to_string(options.batch) + " --seq-len " + std::to_string(options.sequence_length) +
                                " --steps " + std::to_string(options.steps) + " --threads " + std::to_string(threads) +
                                " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    std::map<std::string, std::string> fields;
    if (!pipe) return fields;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, pipe)) {
        const std::string line = buffer;
        if (line.rfind("pytorch_train ", 0) != 0) continue;
        std::istringstream words(line.substr(14));
        for (std::string word; words >> word;) {
            const auto equals = word.find('=');
            if (equals != std::string::npos) fields[word.substr(0, equals)] = word.substr(equals + 1);
        }
    }
    pclose(pipe);
    return fields;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options options = parse(argc, argv);
        const loom::models::SyntheticModelSpec spec = model_spec(options);
        loom_bench::print_machine();
        std::printf("Model: %s shape, %zu layers, %s checkpoint trained as f32; AdamW, clip 1.0; batch %zu x %zu tokens; "
                    "%zu timed steps after 1 warm-up%s\n\n",
                    options.preset.c_str(), spec.num_hidden_layers, options.dtype == loom::DType::bf16 ? "bf16" : "f32",
                    options.batch, options.sequence_length, options.steps, options.recompute ? "; recomputation on" : "");
        std::printf("| threads | Loom tok/s | Loom step s | Loom peak RSS MiB | activations MiB |%s\n",
                    options.pytorch ? " PyTorch tok/s | PyTorch peak RSS MB | Loom/PyTorch speed |" : "");
        std::printf("|---|---|---|---|---|%s\n", options.pytorch ? "---|---|---|" : "");
        for (std::size_t threads : options.threads) {
            const Measurement loom_run = measure_in_child(options, threads);
            std::printf("| %zu | %.1f | %.2f | %.0f | %.0f |", threads, loom_run.tokens_per_second, loom_run.step_seconds,
                        loom_run.peak_rss_mib, loom_run.activation_mib);
            if (options.pytorch) {
                const auto torch = run_pytorch(options, threads);
                if (torch.count("tokens_per_s")) {
                    const double torch_speed = std::stod(torch.at("tokens_per_s"));
                    std::printf(" %.1f | %s | %.2fx |", torch_speed, torch.count("peak_rss_mb") ? torch.at("peak_rss_mb").c_str() : "?",
                                loom_run.tokens_per_second / torch_speed);
                } else {
                    std::printf(" failed (run %s by hand) | | |", pytorch_script);
                }
            }
            std::printf("\n");
            std::fflush(stdout);
        }
        return 0;
    } catch (const std::exception& failure) {
        std::fprintf(stderr, "loom_bench_train: %s\n", failure.what());
        return 2;
    }
}
