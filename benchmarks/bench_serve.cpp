// Continuous batching on the SmolLM2-135M shape (bf16, synthetic weights, no end-of-
// sequence token so every stream runs to its limit): aggregate decode speed with 1, 4
// and 8 concurrent streams, and a new request's time to first token on an idle server
// and while 8 streams decode; then the time to first token of a long prompt whose start a
// kept KV cache holds (a conversation's next turn). It drives serve::Engine, the scheduler loom_serve runs,
// in-process, so the figures are the engine's and not the HTTP stack's. See --help.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <loom/loom.hpp>
#include <loom/serve/engine.hpp>

#include "bench_support.hpp"

namespace {

constexpr const char* usage =
    "usage: loom_bench_serve [--threads a,b] [--streams a,b,c] [--prompt-tokens N] [--new-tokens N]\n"
    "                        [--repetitions N] [--preset NAME] [--temperature T] [--top-p P]\n"
    "\n"
    "  --threads        model thread counts, each measured in turn (default: 1 and all cores)\n"
    "  --streams        concurrent stream counts (default 1,4,8)\n"
    "  --prompt-tokens  prompt length of each stream and of the TTFT probe (default 32)\n"
    "  --new-tokens     tokens each stream generates (default 128)\n"
    "  --repetitions    runs per stream count, taken in turns (1, 4, 8, 1, 4, 8, ...); the table gives\n"
    "                   the mean speed, as llama-bench's -r (default 3)\n"
    "  --preset         model shape (default smollm2-135m)\n"
    "  --temperature    sampling temperature of every stream (default 0: greedy); each stream has\n"
    "                   its own seed. Sampling runs between steps, so it shows in the wall time\n"
    "  --top-p          nucleus sampling with temperature > 0 (default 1: off)\n";

struct Options {
    std::vector<std::size_t> threads = loom_bench::one_and_all_cores();
    std::vector<std::size_t> streams = {1, 4, 8};
    std::size_t prompt_tokens = 32;
    std::size_t new_tokens = 128;
    std::size_t repetitions = 3;
    std::string preset = "smollm2-135m";
    loom::generate::SamplingOptions sampling;  // greedy unless --temperature
};

Options parse(int argc, char** argv) {
    using loom_bench::parse_at_least;
    using loom_bench::parse_counts;
    Options options;
    loom_bench::read_flags(argc, argv, usage, {}, [&](const std::string& flag, const std::string& value) {
        if (flag == "--threads") options.threads = parse_counts(flag, value, 1);
        else if (flag == "--prompt-tokens") options.prompt_tokens = parse_at_least(flag, value, 1);
        else if (flag == "--new-tokens") options.new_tokens = parse_at_least(flag, value, 2);
        else if (flag == "--preset") options.preset = value;
        else if (flag == "--repetitions") options.repetitions = parse_at_least(flag, value, 1);
        else if (flag == "--streams") options.streams = parse_counts(flag, value, 1);
        else if (flag == "--temperature") options.sampling.temperature = loom::generate::detail::parse_float(flag, value);
        else if (flag == "--top-p") options.sampling.top_p = loom::generate::detail::parse_float(flag, value);
        else return false;
        return true;
    });
    options.sampling.validate();
    return options;
}

// Prompt ids spread over the vocabulary (the first 40001 ids of a large one), different per index.
loom::serve::CompletionRequest make_request(const Options& options, std::size_t vocab_size, std::size_t index,
                                            std::size_t new_tokens) {
    loom::serve::CompletionRequest request;
    const std::size_t spread = std::min<std::size_t>(40000, vocab_size - 1);
    for (std::size_t t = 0; t < options.prompt_tokens; ++t) request.prompt.push_back(int((t * 7919 + index * 104729) % spread + 1));
    request.max_tokens = new_tokens;
    request.sampling = options.sampling;
    request.sampling.seed = index;
    return request;
}

// Waits for the job's last event; returns its timings.
loom::generate::Timings finish(loom::serve::Job& job) {
    while (true) {
        auto event = job.next_event(std::chrono::minutes(10));
        if (!event) throw loom::error("a stream made no progress for 10 minutes");
        if (event->kind == loom::serve::EventKind::failed) throw loom::error("a stream failed: " + event->error);
        if (event->kind == loom::serve::EventKind::finished) return event->timings;
    }
}

// One table: every stream count at `threads` model threads.
void run(const loom::models::LoadedModel& model, const Options& options, std::size_t threads) {
    const std::size_t most_streams = *std::max_element(options.streams.begin(), options.streams.end());
    std::printf("\n%zu thread%s\n\n", threads, threads == 1 ? "" : "s");

    loom::serve::EngineOptions engine_options;
    engine_options.slots = most_streams + 1;  // room for the TTFT probe beside the streams
    engine_options.threads = threads;
    // Every prompt runs in full: the streams of each repetition and the probes repeat their
    // prompts, which a kept cache would otherwise hold.
    engine_options.prompt_cache = false;
    loom::serve::Engine engine(model, nullptr, engine_options);
    const std::size_t vocab_size = model.config().vocab_size;
    // Warm-up, as llama-bench's: every slot serves one request of the measured size, so the
    // weights are paged in and each slot holds a KV cache that later requests reuse, as in a
    // server past its first requests. A fresh cache takes its pages from the operating system
    // during the decode steps it shares with the other streams (measured on the 2-core VM,
    // 8 streams: attention about 1.3 ms slower per step in the round that made the caches).
    std::vector<std::shared_ptr<loom::serve::Job>> warm_up;
    for (std::size_t slot = 0; slot < engine_options.slots; ++slot) {
        warm_up.push_back(engine.submit(make_request(options, vocab_size, 900 + slot, options.new_tokens)));
    }
    for (auto& job : warm_up) finish(*job);

    std::vector<double> idle_ttft;
    for (int i = 0; i < 5; ++i) idle_ttft.push_back(finish(*engine.submit(make_request(options, vocab_size, 100 + std::size_t(i), 1))).time_to_first_token_ms);
    const double idle = loom_bench::median(idle_ttft);

    // Repetitions go round the stream counts (1, 4, 8, 1, 4, 8, ...) rather than one count
    // after another, so a drift of the machine's speed during the run weighs on every count
    // alike and not on their ratios.
    std::vector<std::vector<double>> aggregates(options.streams.size()), walls(options.streams.size());
    std::vector<double> busy_ttft;
    for (std::size_t repetition = 0; repetition < options.repetitions; ++repetition) {
        for (std::size_t i = 0; i < options.streams.size(); ++i) {
            const std::size_t streams = options.streams[i];
            const auto before = engine.stats();
            const auto start = std::chrono::steady_clock::now();
            std::vector<std::shared_ptr<loom::serve::Job>> jobs;
            std::size_t first_tokens = streams;  // sampled from prompt rows, not decode rows
            for (std::size_t s = 0; s < streams; ++s) jobs.push_back(engine.submit(make_request(options, vocab_size, s, options.new_tokens)));
            if (streams == most_streams) {
                // The probes arrive once every stream is decoding.
                std::this_thread::sleep_for(std::chrono::milliseconds(300));
                for (int probe = 0; probe < 5; ++probe) {
                    busy_ttft.push_back(finish(*engine.submit(make_request(options, vocab_size, 200 + std::size_t(probe), 1))).time_to_first_token_ms);
                }
                first_tokens += 5;
            }
            for (auto& job : jobs) finish(*job);
            walls[i].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
            const auto after = engine.stats();
            // Decode throughput: tokens sampled from decode rows over the step time spent on them.
            const double decoded = double(after.generated_tokens - before.generated_tokens - first_tokens);
            aggregates[i].push_back(decoded / (after.generate_seconds - before.generate_seconds));
        }
    }

    std::printf("| streams | aggregate decode tok/s | per stream tok/s | vs 1 stream | wall s |\n");
    std::printf("|--------:|-----------------------:|-----------------:|------------:|-------:|\n");
    const auto one_stream = std::find(options.streams.begin(), options.streams.end(), std::size_t(1));
    const double single = one_stream == options.streams.end() ? 0.0 : loom_bench::mean(aggregates[std::size_t(one_stream - options.streams.begin())]);
    for (std::size_t i = 0; i < options.streams.size(); ++i) {
        const std::size_t streams = options.streams[i];
        const double aggregate = loom_bench::mean(aggregates[i]), wall = loom_bench::mean(walls[i]);
        std::printf("| %7zu | %22.1f | %16.1f | %10.2fx | %6.2f |\n", streams, aggregate, aggregate / double(streams),
                    single > 0 ? aggregate / single : 0.0, wall);
    }
    const double busy = loom_bench::median(busy_ttft);
    std::printf("\ntime to first token (%zu-token prompt): idle %.1f ms (median of 5), while %zu streams decode %.1f ms "
                "(median of %zu, %.2fx)\n",
                options.prompt_tokens, idle, most_streams, busy, busy_ttft.size(), idle > 0 ? busy / idle : 0.0);
}

// Time to first token of a long prompt run in full, and of the same length as the next turn
// of a conversation whose earlier part a finished request's KV cache holds.
void run_prompt_cache(const loom::models::LoadedModel& model, const Options& options, std::size_t threads) {
    constexpr std::size_t conversation = 512, turn = 16;
    loom::serve::EngineOptions engine_options;
    engine_options.slots = 1;
    engine_options.threads = threads;
    loom::serve::Engine engine(model, nullptr, engine_options);
    const std::size_t vocab_size = model.config().vocab_size;
    Options earlier = options, whole = options;
    earlier.prompt_tokens = conversation - turn;
    whole.prompt_tokens = conversation;
    std::vector<double> full, next;
    std::size_t cached = 0;
    for (std::size_t i = 0; i < 5; ++i) {
        full.push_back(finish(*engine.submit(make_request(whole, vocab_size, 300 + i, 1))).time_to_first_token_ms);
        loom::serve::CompletionRequest request = make_request(earlier, vocab_size, 400 + i, 1);
        finish(*engine.submit(request));
        for (std::size_t t = 0; t < turn; ++t) request.prompt.push_back(int(t + 1));
        const loom::generate::Timings timings = finish(*engine.submit(request));
        next.push_back(timings.time_to_first_token_ms);
        cached = timings.cached_prompt_tokens;
    }
    std::printf("time to first token of a %zu-token prompt, %zu thread%s: %.1f ms run in full, %.1f ms as the next %zu "
                "tokens of a conversation in a kept cache (%zu tokens cached; medians of 5)\n",
                conversation, threads, threads == 1 ? "" : "s", loom_bench::median(full), loom_bench::median(next), turn,
                cached);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options options = parse(argc, argv);
        auto spec = loom::models::synthetic_preset(options.preset);
        spec.dtype = loom::DType::bf16;
        spec.eos_token_ids.clear();
        const auto model = loom::models::load_synthetic_model(spec, options.preset);
        const std::size_t most_streams = *std::max_element(options.streams.begin(), options.streams.end());

        loom_bench::print_machine();
        char sampling[64] = "greedy";
        if (options.sampling.temperature != 0.0f) {
            std::snprintf(sampling, sizeof sampling, "temperature %g, top-p %g", double(options.sampling.temperature),
                          double(options.sampling.top_p));
        }
        std::printf("model: %s shape, bf16; %zu-token prompts, %zu new tokens per stream (%s); speeds are means of %zu runs\n",
                    options.preset.c_str(), options.prompt_tokens, options.new_tokens, sampling, options.repetitions);
        for (const std::size_t threads : options.threads) run(model, options, threads);
        std::printf("\n");
        for (const std::size_t threads : options.threads) run_prompt_cache(model, options, threads);
        return 0;
    } catch (const std::exception& failure) {
        std::fprintf(stderr, "loom_bench_serve: error: %s\n", failure.what());
        return 1;
    }
}
