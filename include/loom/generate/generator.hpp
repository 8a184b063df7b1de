#pragma once
// The generation loop: the prompt goes through the model as one batch (prefill), then
// one token per step against the KV cache (decode), until an end-of-sequence token, the
// token limit, or the caller asks to stop.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/generate/sampler.hpp"
#include "loom/kernels/ops.hpp"
#include "loom/models/llama.hpp"

namespace loom::generate {

struct GenerateOptions {
    std::size_t max_tokens = 128;
    SamplingOptions sampling;
    std::vector<int> eos_token_ids;  // any of these ends generation (and is part of the output)
    // Sees the logits each token is chosen from (before penalties and temperature).
    std::function<void(std::span<const float>)> on_logits;
};

enum class FinishReason { stop, length };

inline const char* finish_reason_name(FinishReason reason) noexcept {
    return reason == FinishReason::stop ? "stop" : "length";
}

struct Timings {
    std::size_t prompt_tokens = 0;
    std::size_t cached_prompt_tokens = 0;   // of those, found in a kept KV cache, not run again
    std::size_t generated_tokens = 0;
    double prefill_seconds = 0.0;           // prompt forward pass
    double time_to_first_token_ms = 0.0;    // prefill + choosing the first token
    double decode_seconds = 0.0;            // every step after the first token

    std::size_t evaluated_prompt_tokens() const noexcept { return prompt_tokens - cached_prompt_tokens; }
    double prefill_tokens_per_second() const noexcept {
        return prefill_seconds > 0 ? double(evaluated_prompt_tokens()) / prefill_seconds : 0.0;
    }
    // Tokens after the first, over the time spent producing them.
    double decode_tokens_per_second() const noexcept {
        return decode_seconds > 0 && generated_tokens > 1 ? double(generated_tokens - 1) / decode_seconds : 0.0;
    }
};

struct GenerationResult {
    std::vector<int> ids;  // new tokens only
    FinishReason finish_reason = FinishReason::length;
    Timings timings;
};

// Called with each new token as soon as it is chosen; return false to stop (finish reason "stop").
using TokenCallback = std::function<bool(int token)>;

inline void require_finite(std::span<const float> logits, std::size_t step) {
    if (!kernels::all_finite(logits.data(), logits.size())) {
        throw format_error("the model produced a non-finite logit at generation step " + std::to_string(step) +
                           " (corrupt or overflowing weights?)");
    }
}

// Generates in `sequence`'s buffers, restarted first (models::Llama::restart): a caller
// that generates again and again keeps one SequenceState, as a server keeps its slots, and
// its prompts skip the page faults of fresh buffers.
inline GenerationResult generate(const models::Llama& model, std::span<const int> prompt,
                                 const GenerateOptions& options, ThreadPool& pool, models::SequenceState& sequence,
                                 const TokenCallback& on_token = {}) {
    using clock = std::chrono::steady_clock;
    auto seconds_since = [](clock::time_point start) {
        return std::chrono::duration<double>(clock::now() - start).count();
    };
    if (prompt.empty()) throw argument_error("the prompt is empty: at least one token is needed");
    GenerationResult result;
    result.timings.prompt_tokens = prompt.size();

    const std::size_t positions = model.config().max_position_embeddings;
    if (prompt.size() > positions) {
        throw argument_error("the prompt has " + std::to_string(prompt.size()) + " tokens, more than the model's " +
                             std::to_string(positions) + " positions");
    }
    // Generation ends at the model's context length at the latest (finish reason "length").
    const std::size_t max_tokens = std::min(options.max_tokens, positions - prompt.size());
    Sampler sampler(options.sampling);
    model.restart(sequence, prompt.size() + max_tokens);
    std::vector<int> history(prompt.begin(), prompt.end());
    xt::xtensor<float, 2> logits;

    const auto start = clock::now();
    model.forward(prompt, sequence, models::LogitRows::last, logits, pool);
    result.timings.prefill_seconds = seconds_since(start);

    clock::time_point decode_start;
    for (std::size_t step = 0; step < max_tokens; ++step) {
        if (step > 0) {
            const int previous = result.ids.back();
            model.forward(std::span<const int>(&previous, 1), sequence, models::LogitRows::last, logits, pool);
        }
        const std::span<const float> row(logits.data(), logits.size());
        require_finite(row, step);
        if (options.on_logits) options.on_logits(row);
        const int token = sampler.sample(row, history, prompt.size());
        if (step == 0) {
            result.timings.time_to_first_token_ms = seconds_since(start) * 1000.0;
            decode_start = clock::now();
        }
        result.ids.push_back(token);
        history.push_back(token);
        const bool keep_going = on_token ? on_token(token) : true;
        const bool end_of_sequence =
            std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), token) != options.eos_token_ids.end();
        if (!keep_going || end_of_sequence) {
            result.finish_reason = FinishReason::stop;
            break;
        }
    }
    result.timings.generated_tokens = result.ids.size();
    if (!result.ids.empty()) result.timings.decode_seconds = seconds_since(decode_start);
    return result;
}

// The same in buffers of its own.
inline GenerationResult generate(const models::Llama& model, std::span<const int> prompt,
                                 const GenerateOptions& options, ThreadPool& pool,
                                 const TokenCallback& on_token = {}) {
    models::SequenceState sequence;
    return generate(model, prompt, options, pool, sequence, on_token);
}

}  // namespace loom::generate
