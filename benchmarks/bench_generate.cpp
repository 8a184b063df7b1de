// Prefill and decode speed, time to first token and peak memory on full-size model shapes
// (SmolLM2-135M, Qwen2.5-0.5B) with synthetic weights, set against the machine's memory
// bandwidth (decode streams every weight once per token, so bandwidth bounds it) and,
// with --pytorch, against plain PyTorch (benchmarks/bench_pytorch.py) and, with
// --llama-bench, against llama.cpp (benchmarks/bench_llama_cpp.mjs) on the same
// checkpoints. Checkpoints are written once into --dir and read into memory as
// loom_generate reads them (or mapped, --mmap). See --help.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <loom/kernels/simd.hpp>
#include <loom/loom.hpp>

#include "bench_support.hpp"

namespace {

constexpr const char* usage =
    "usage: loom_bench_generate [--prompt-tokens N] [--new-tokens N] [--repetitions N] [--presets a,b]\n"
    "                           [--dtypes a,b] [--threads a,b] [--dir DIR] [--bandwidth-mib N] [--mmap]\n"
    "                           [--cache-type f32|f16] [--pytorch] [--llama-bench PATH]\n"
    "\n"
    "  --prompt-tokens  prompt length; prefill speed and TTFT are measured on it (default 128)\n"
    "  --new-tokens     greedy tokens generated after the prompt, at least 2 (default 128)\n"
    "  --repetitions    timed runs per model and thread count, after one warm-up run; speeds and\n"
    "                   TTFT are their means, as llama-bench's -r (default 5)\n"
    "  --presets        model shapes: smollm2-135m, qwen2.5-0.5b (default both), or a tiny test preset\n"
    "  --dtypes         stored weight types: bf16, f32, f16 (default bf16,f32)\n"
    "  --threads        thread counts to run each model at (default 1,2)\n"
    "  --dir            where the synthetic checkpoints are written once and reused\n"
    "                   (default: $TMPDIR/loom-bench-models)\n"
    "  --bandwidth-mib  buffer for the memory read-bandwidth measurement (default 512)\n"
    "  --mmap           map the checkpoints instead of reading them into memory (loom_generate --mmap)\n"
    "  --cache-type     KV cache elements, as loom_generate --cache-type (default f32; llama-bench's\n"
    "                   default is f16)\n"
    "  --pytorch        also run benchmarks/bench_pytorch.py (plain PyTorch, /usr/bin/python3)\n"
    "                   on the same checkpoints, prompt and thread counts\n"
    "  --llama-bench    also run llama.cpp's llama-bench at PATH through benchmarks/bench_llama_cpp.mjs\n"
    "                   (node; the checkpoints are converted to GGUF once) on the same workload\n";

constexpr const char* python = "/usr/bin/python3";
constexpr const char* pytorch_script = LOOM_SOURCE_DIR "/benchmarks/bench_pytorch.py";
constexpr int pytorch_missing_exit_code = 3;  // bench_pytorch.py: torch cannot be imported
constexpr const char* llama_cpp_script = LOOM_SOURCE_DIR "/benchmarks/bench_llama_cpp.mjs";
constexpr int bandwidth_repeats = 10;

struct Options {
    std::size_t prompt_tokens = 128;
    std::size_t new_tokens = 128;
    std::size_t repetitions = 5;
    std::vector<std::string> presets = {"smollm2-135m", "qwen2.5-0.5b"};
    std::vector<std::string> dtypes = {"bf16", "f32"};
    std::vector<std::size_t> threads = {1, 2};
    std::filesystem::path dir = std::filesystem::temp_directory_path() / "loom-bench-models";
    std::size_t bandwidth_mib = 512;
    bool pytorch = false;
    std::string llama_bench;  // path of llama.cpp's llama-bench, or empty
    loom::FileAccess weights = loom::FileAccess::read;
    loom::DType cache_dtype = loom::DType::f32;
    bool help = false;
};

Options parse_options(int argc, char** argv) {
    using loom::argument_error;
    Options options;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            options.help = true;
            continue;
        }
        if (flag == "--pytorch") {
            options.pytorch = true;
            continue;
        }
        if (flag == "--mmap") {
            options.weights = loom::FileAccess::map;
            continue;
        }
        if (flag.rfind("--", 0) != 0) throw argument_error("unexpected argument '" + flag + "' (see --help)");
        if (i + 1 >= argc) throw argument_error(flag + " needs a value");
        const std::string value = argv[++i];
        if (flag == "--prompt-tokens") options.prompt_tokens = loom_bench::parse_at_least(flag, value, 1);
        else if (flag == "--new-tokens") options.new_tokens = loom_bench::parse_at_least(flag, value, 2);  // decode starts after the first
        else if (flag == "--repetitions") options.repetitions = loom_bench::parse_at_least(flag, value, 1);
        else if (flag == "--bandwidth-mib") options.bandwidth_mib = loom_bench::parse_at_least(flag, value, 1);
        else if (flag == "--dir") options.dir = value;
        else if (flag == "--llama-bench") options.llama_bench = value;
        else if (flag == "--cache-type") options.cache_dtype = loom::nn::parse_cache_dtype(flag, value);
        else if (flag == "--presets") {
            options.presets = loom_bench::split(flag, value);
            for (const auto& preset : options.presets) loom::models::synthetic_preset(preset);  // throws if unknown
        } else if (flag == "--dtypes") {
            options.dtypes = loom_bench::split(flag, value);
            for (const auto& dtype : options.dtypes) loom::generate::detail::parse_weight_dtype(flag, dtype);
        } else if (flag == "--threads") {
            options.threads = loom_bench::parse_counts(flag, value, 1);
            for (const std::size_t threads : options.threads) {
                if (threads > 1024) throw argument_error("--threads: each must be in 1..1024");
            }
        } else throw argument_error("unknown option '" + flag + "' (see --help)");
    }
    return options;
}

// Quotes for /bin/sh only what needs it, so printed command lines stay readable.
std::string shell_quote(const std::string& text) {
    const bool plain = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("-_./,=:+@%").find(c) != std::string_view::npos;
    });
    if (plain) return text;
    std::string quoted = "'";
    for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return quoted + "'";
}

constexpr const char* compiler_name() {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "g++ " __VERSION__;
#else
    return "unknown compiler";
#endif
}

// Writes the checkpoint in a child process, so the memory used to build it never
// counts towards this process's peak RSS.
void write_checkpoint(const std::filesystem::path& folder, const loom::models::SyntheticModelSpec& spec) {
#if defined(__EMSCRIPTEN__)
    // WebAssembly has no processes: written here, the checkpoint counts towards the peak
    // RSS of the run that wrote it (later runs of the same --dir reuse it).
    loom::models::write_synthetic_model(folder, spec);
#else
    const pid_t child = fork();
    if (child == 0) {
        try {
            loom::models::write_synthetic_model(folder, spec);
            _exit(0);
        } catch (const std::exception& failure) {
            std::fprintf(stderr, "writing %s failed: %s\n", folder.c_str(), failure.what());
            _exit(1);
        }
    }
    int status = 0;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        throw loom::error("could not write the benchmark checkpoint " + folder.string());
    }
#endif
}

// Best-of-N streaming read speed in GB/s, each thread reading its own contiguous part as
// `streams` sequential streams side by side (one core keeps more reads in flight from
// several streams; Loom's decode reads four), optionally asking for each line 2 KiB ahead
// as Loom's decode does. The loop sums 64-bit integers: integer adds may be reordered, so
// it is vectorised and memory-bound; a float sum would stay one serial chain of adds
// without -ffast-math.
double read_bandwidth_gb_per_s(std::span<const std::uint64_t> words, std::size_t threads, std::size_t streams,
                               bool prefetch) {
    loom::ThreadPool pool(threads);
    std::atomic<std::uint64_t> sink{0};  // keeps the sums, hence the reads, alive
    double best_seconds = std::numeric_limits<double>::infinity();
    for (int repeat = 0; repeat < bandwidth_repeats; ++repeat) {
        const auto start = std::chrono::steady_clock::now();
        pool.parallel_for(words.size(), [&](std::size_t begin, std::size_t end) {
            constexpr std::size_t line = 8;  // 64-bit words per cache line: one vector per stream and step
            constexpr std::size_t prefetch_words = loom::kernels::detail::prefetch_distance / sizeof(std::uint64_t);
            const std::size_t part = (end - begin) / streams / line * line;
            std::uint64_t sum = 0;
            for (std::size_t i = begin; i < begin + part; i += line) {
                for (std::size_t stream = 0; stream < streams; ++stream) {
                    const std::uint64_t* block = words.data() + i + stream * part;
                    if (prefetch) loom::kernels::simd::prefetch(block + prefetch_words);
                    for (std::size_t j = 0; j < line; ++j) sum += block[j];
                }
            }
            for (std::size_t i = begin + part * streams; i < end; ++i) sum += words[i];
            sink += sum;
        });
        best_seconds = std::min(best_seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return double(words.size() * sizeof(std::uint64_t)) / best_seconds / 1e9;
}

struct Bandwidth {
    double one_stream = 0.0, four_streams = 0.0, prefetched = 0.0;  // GB/s
    // The bound uses the fastest way of reading, so it is never flattering.
    double fastest() const { return std::max({one_stream, four_streams, prefetched}); }
};

// Freed before returning: a row's peak RSS must not include the buffer.
Bandwidth measure_bandwidth(std::size_t mib, std::size_t threads) {
    // The same kind of memory as the weights (2 MiB pages where the system gives them), so
    // that decode and the bound it is held to read alike. Written first: untouched pages all
    // map the one zero page, which reads from cache.
    loom::WeightBuffer buffer(mib << 20, "the bandwidth buffer");
    const std::span<std::uint64_t> words(reinterpret_cast<std::uint64_t*>(buffer.data()),
                                         buffer.size() / sizeof(std::uint64_t));
    std::iota(words.begin(), words.end(), std::uint64_t(1));
    return {read_bandwidth_gb_per_s(words, threads, 1, false), read_bandwidth_gb_per_s(words, threads, 4, false),
            read_bandwidth_gb_per_s(words, threads, 4, true)};
}

// Weight bytes one decode step reads: every tensor once, as stored. The embedding table
// is streamed only as the head of a tied model; with a separate lm_head, one row of it is read.
std::size_t weight_bytes_per_token(const loom::io::TensorStore& store) {
    const bool separate_head = store.contains("lm_head.weight");
    std::size_t bytes = 0;
    for (const std::string& name : store.names()) {
        const loom::TensorView& tensor = store.get(name);
        const bool row_lookup = separate_head && name.ends_with("embed_tokens.weight");
        bytes += row_lookup ? tensor.nbytes() / tensor.shape[0] : tensor.nbytes();
    }
    return bytes;
}

std::string threads_label(std::size_t threads) {
    return std::to_string(threads) + (threads == 1 ? " thread" : " threads");
}

struct LoomRun {
    std::vector<double> prefill_tokens_per_second, decode_tokens_per_second, time_to_first_token_ms;  // per run
    std::vector<double> bandwidth_gb_per_s;  // per run: the faster of the reads just before and just after it
    std::size_t weight_bytes_per_token = 0;
    double peak_rss_mib = 0.0;  // from loading to the last token, without the bandwidth reads

    // Each run's decode speed over its own bound, averaged.
    double fraction_of_bound() const {
        std::vector<double> fractions;
        for (std::size_t i = 0; i < decode_tokens_per_second.size(); ++i) {
            const double bound = bandwidth_gb_per_s[i] * 1e9 / double(weight_bytes_per_token);
            fractions.push_back(decode_tokens_per_second[i] / bound);
        }
        return loom_bench::mean(fractions);
    }
};

// `measure_bandwidth` is called before every timed run and after the last: the machine's
// bandwidth drifts (by a third within a minute on a shared VM), so each run is held to
// reads taken on either side of it, seconds apart.
template <typename MeasureBandwidth>
LoomRun run_loom(const std::filesystem::path& folder, loom::FileAccess weights, loom::DType cache_dtype,
                 const std::vector<int>& prompt,
                 std::size_t new_tokens, std::size_t threads, std::size_t repetitions,
                 MeasureBandwidth&& measure_bandwidth) {
    LoomRun run;
    loom_bench::reset_peak_rss();
    const auto model = loom::models::load_model(folder.string(), weights);
    model.network->set_cache_dtype(cache_dtype);
    run.weight_bytes_per_token = weight_bytes_per_token(model.network->weights());
    loom::ThreadPool pool(threads);
    loom::generate::GenerateOptions options;
    // A warm-up run of the same prompt first, as llama-bench does: thread start-up and
    // first-touch page faults of the cache and scratch buffers are not what prefill and
    // decode speeds measure. The runs share one sequence's buffers, as llama-bench's share
    // one context. Then, also as llama-bench does, the mean of several timed runs.
    loom::models::SequenceState sequence;
    options.max_tokens = new_tokens;  // no EOS: always the full count
    loom::generate::generate(*model.network, prompt, options, pool, sequence);
    // The bandwidth buffer is freed before each run; the high-water mark is read before
    // each measurement and reset after it, so the buffer never counts.
    auto bandwidth_outside_peak = [&] {
        run.peak_rss_mib = std::max(run.peak_rss_mib, loom_bench::peak_rss_mib());
        const double bandwidth = measure_bandwidth();
        loom_bench::reset_peak_rss();
        return bandwidth;
    };
    double bandwidth_before = bandwidth_outside_peak();
    for (std::size_t repetition = 0; repetition < repetitions; ++repetition) {
        const auto timings = loom::generate::generate(*model.network, prompt, options, pool, sequence).timings;
        run.prefill_tokens_per_second.push_back(timings.prefill_tokens_per_second());
        run.decode_tokens_per_second.push_back(timings.decode_tokens_per_second());
        run.time_to_first_token_ms.push_back(timings.time_to_first_token_ms);
        const double bandwidth_after = bandwidth_outside_peak();
        run.bandwidth_gb_per_s.push_back(std::max(bandwidth_before, bandwidth_after));
        bandwidth_before = bandwidth_after;
    }
    run.peak_rss_mib = std::max(run.peak_rss_mib, loom_bench::peak_rss_mib());
    return run;
}

// A reference program's run (bench_pytorch.py, bench_llama_cpp.mjs).
struct ReferenceRun {
    int exit_code = -1;
    std::optional<nlohmann::json> result;  // the JSON line it printed
    std::string messages;                  // everything else it printed (warnings, errors)
};

ReferenceRun run_reference(const std::string& command_line) {
    const std::string command = command_line + " 2>&1";
    ReferenceRun run;
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) {
        run.messages = "could not start " + command_line + "\n";
        return run;
    }
    std::string output;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, pipe)) output += buffer;
    const int status = pclose(pipe);
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::istringstream lines(output);
    for (std::string line; std::getline(lines, line);) {
        if (line.starts_with("{")) run.result = nlohmann::json::parse(line, nullptr, false);
        else run.messages += line + "\n";
    }
    if (run.result && run.result->is_discarded()) run.result.reset();
    return run;
}

ReferenceRun run_pytorch_script(const std::string& arguments) {
    return run_reference(std::string(python) + " " + shell_quote(pytorch_script) + " " + arguments);
}

// The row's figures next to Loom's, or "failed" cells and the reason on stderr.
void print_reference_columns(const ReferenceRun& reference, const char* name, const std::filesystem::path& folder,
                             double prefill, double decode) {
    if (reference.exit_code == 0 && reference.result) {
        const double their_prefill = (*reference.result)["prefill_tokens_per_second"].get<double>();
        const double their_decode = (*reference.result)["decode_tokens_per_second"].get<double>();
        std::printf(" %.1f | %.2f | %.2fx | %.2fx |", their_prefill, their_decode, prefill / their_prefill,
                    decode / their_decode);
    } else {
        std::printf(" failed | failed | | |");
        std::fprintf(stderr, "%s on %s failed (exit %d): %s", name, folder.c_str(), reference.exit_code,
                     reference.messages.c_str());
    }
}

// Prints torch's version and matmul speed at each thread count, or why PyTorch is left out;
// returns whether it can run.
bool print_pytorch_setup(const std::vector<std::size_t>& thread_counts) {
    std::string version, speeds;
    for (const std::size_t threads : thread_counts) {
        const ReferenceRun probe = run_pytorch_script("--probe --threads " + std::to_string(threads));
        if (probe.exit_code == pytorch_missing_exit_code) {
            std::printf("PyTorch: not run, torch is not importable by %s\n", python);
            return false;
        }
        if (probe.exit_code != 0 || !probe.result) {
            std::printf("PyTorch: not run, %s --probe failed (exit %d): %s\n", pytorch_script, probe.exit_code,
                        probe.messages.substr(0, probe.messages.find('\n')).c_str());
            return false;
        }
        std::fputs(probe.messages.c_str(), stdout);  // a slow-BLAS warning belongs in the report
        version = (*probe.result)["torch_version"].get<std::string>();
        char speed[96];
        std::snprintf(speed, sizeof speed, "%s%.0f GFLOP/s at %s", speeds.empty() ? "" : ", ",
                      (*probe.result)["matmul_gflops"].get<double>(), threads_label(threads).c_str());
        speeds += speed;
    }
    std::printf("PyTorch: torch %s, float32 with a KV cache; 1024x1024 matmul %s (BLAS threads = Loom threads)\n", version.c_str(), speeds.c_str());
    return true;
}

std::string join(const std::vector<int>& ids) {
    std::string text;
    for (int id : ids) text += (text.empty() ? "" : ",") + std::to_string(id);
    return text;
}

int run(const Options& options, int argc, char** argv) {
    std::string command_line;
    for (int i = 0; i < argc; ++i) command_line += (i ? " " : "") + shell_quote(argv[i]);
    std::printf("command: %s\n", command_line.c_str());
    loom_bench::print_machine();
    std::printf("Loom: %s, %s build\n", compiler_name(), LOOM_BUILD_CONFIG);
    std::printf("workload: %zu-token prompt, then %zu greedy tokens; one warm-up run, then the mean of %zu timed runs; "
                "synthetic checkpoints in %s, %s; %s KV cache\n",
                options.prompt_tokens, options.new_tokens, options.repetitions, options.dir.c_str(),
                options.weights == loom::FileAccess::map ? "memory-mapped" : "read into memory",
                options.cache_dtype == loom::DType::f16 ? "f16" : "f32");
    std::fflush(stdout);

    for (const std::size_t threads : options.threads) {
        const Bandwidth measured = measure_bandwidth(options.bandwidth_mib, threads);
        std::printf("memory read bandwidth, %s: %.1f GB/s with one stream per thread, %.1f GB/s with four, "
                    "%.1f GB/s with four and prefetches (%zu MiB buffer, best of %d)\n",
                    threads_label(threads).c_str(), measured.one_stream, measured.four_streams, measured.prefetched,
                    options.bandwidth_mib, bandwidth_repeats);
    }

    const bool pytorch = options.pytorch && print_pytorch_setup(options.threads);
    std::fflush(stdout);

    const bool llama_cpp = !options.llama_bench.empty();
    std::printf("\n| model | weights | file MB | threads | prefill tok/s | decode tok/s | TTFT ms | peak RSS MiB "
                "| weight MB/token | bandwidth GB/s | bound tok/s | of bound |%s%s\n",
                pytorch ? " PyTorch prefill tok/s | PyTorch decode tok/s | Loom/PyTorch prefill | Loom/PyTorch decode |" : "",
                llama_cpp ? " llama.cpp prefill tok/s | llama.cpp decode tok/s | Loom/llama.cpp prefill | Loom/llama.cpp decode |" : "");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|%s%s\n", pytorch ? "---|---|---|---|" : "",
                llama_cpp ? "---|---|---|---|" : "");
    std::string llama_cpp_build;  // as the first successful llama.cpp run describes it
    std::fflush(stdout);
    for (const std::string& preset : options.presets) {
        for (const std::string& dtype : options.dtypes) {
            auto spec = loom::models::synthetic_preset(preset);
            spec.dtype = loom::generate::detail::parse_weight_dtype("--dtypes", dtype);
            const auto folder = options.dir / (preset + "-" + dtype);
            if (!std::filesystem::exists(folder / "model.safetensors")) write_checkpoint(folder, spec);
            const double file_mb = double(std::filesystem::file_size(folder / "model.safetensors")) / 1e6;
            std::vector<int> prompt;
            for (std::size_t i = 0; i < options.prompt_tokens; ++i) prompt.push_back(int((i * 7919 + 13) % spec.vocab_size));

            for (const std::size_t threads : options.threads) {
                const LoomRun loom_run = run_loom(folder, options.weights, options.cache_dtype, prompt, options.new_tokens, threads,
                                                  options.repetitions, [&] {
                                                      return measure_bandwidth(options.bandwidth_mib, threads).fastest();
                                                  });
                const double prefill = loom_bench::mean(loom_run.prefill_tokens_per_second);
                const double decode = loom_bench::mean(loom_run.decode_tokens_per_second);
                const double bandwidth = loom_bench::mean(loom_run.bandwidth_gb_per_s);
                const double bound = bandwidth * 1e9 / double(loom_run.weight_bytes_per_token);
                std::printf("| %s | %s | %.0f | %zu | %.1f | %.2f | %.0f | %.0f | %.1f | %.1f | %.1f | %.0f%% |",
                            preset.c_str(), dtype.c_str(), file_mb, threads, prefill, decode,
                            loom_bench::mean(loom_run.time_to_first_token_ms), loom_run.peak_rss_mib,
                            double(loom_run.weight_bytes_per_token) / 1e6, bandwidth, bound,
                            100.0 * loom_run.fraction_of_bound());
                if (pytorch) {
                    const ReferenceRun reference = run_pytorch_script(
                        "--model " + shell_quote(folder.string()) + " --ids " + join(prompt) + " --new-tokens " +
                        std::to_string(options.new_tokens) + " --threads " + std::to_string(threads) +
                        " --repetitions " + std::to_string(options.repetitions));
                    print_reference_columns(reference, "bench_pytorch.py", folder, prefill, decode);
                }
                if (llama_cpp) {
                    const ReferenceRun reference = run_reference(
                        "node " + shell_quote(llama_cpp_script) + " --llama-bench " + shell_quote(options.llama_bench) +
                        " --model " + shell_quote(folder.string()) + " --prompt-tokens " +
                        std::to_string(options.prompt_tokens) + " --new-tokens " + std::to_string(options.new_tokens) +
                        " --threads " + std::to_string(threads) + " --repetitions " + std::to_string(options.repetitions));
                    print_reference_columns(reference, "bench_llama_cpp.mjs", folder, prefill, decode);
                    if (llama_cpp_build.empty() && reference.exit_code == 0 && reference.result) {
                        llama_cpp_build = (*reference.result)["llama_cpp"].get<std::string>();
                    }
                }
                std::printf("\n");
                std::fflush(stdout);
            }
        }
    }
    std::printf("\nbandwidth: the fastest of the three memory reads at that thread count, measured before every "
                "timed run and after the last; each run takes the faster of the reads on either side of it, and the "
                "row gives their mean; bound tok/s: that bandwidth / weight bytes per token (the KV cache's reads are "
                "left out); of bound: the mean over the runs of each run's decode tok/s / its own bound.\n");
    if (!llama_cpp_build.empty()) {
        std::printf("llama.cpp: %s; llama-bench -p %zu -n 0 for prefill, -p 0 -n %zu -d %zu for decode, -r %zu, "
                    "each with flash attention off and on (-fa 0,1) and the faster counted, its defaults otherwise "
                    "(f16 KV cache)\n",
                    llama_cpp_build.c_str(), options.prompt_tokens, options.new_tokens, options.prompt_tokens,
                    options.repetitions);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options options = parse_options(argc, argv);
        if (options.help) {
            std::fputs(usage, stdout);
            return 0;
        }
        return run(options, argc, argv);
    } catch (const loom::argument_error& failure) {
        std::fprintf(stderr, "loom_bench_generate: error: %s\n", failure.what());
        return 2;
    } catch (const std::exception& failure) {
        std::fprintf(stderr, "loom_bench_generate: error: %s\n", failure.what());
        return 1;
    }
}
