// The serving engine without sockets: continuous batching gives every request the tokens
// it would get alone (and the ones the plain generator gives), slots free up when a
// client leaves, and full queues, long prompts and timeouts are refused or ended cleanly.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "loom/generate/generator.hpp"
#include "loom/generate/sampler.hpp"
#include "loom/models/load.hpp"
#include "loom/serve/engine.hpp"

namespace {

using loom::serve::CompletionRequest;
using loom::serve::Engine;
using loom::serve::EngineOptions;
using loom::serve::Event;
using loom::serve::EventKind;
using loom::serve::Job;

struct Outcome {
    std::vector<int> tokens;
    Event last;
};

// Follows a job to its end: the tokens it sent (a training run sends none) and its last event.
Outcome collect(Job& job) {
    Outcome outcome;
    while (true) {
        auto event = job.next_event(std::chrono::seconds(60));
        REQUIRE(event);
        if (event->ends_job()) {
            outcome.last = *event;
            return outcome;
        }
        if (event->kind == EventKind::token) outcome.tokens.push_back(event->token);
    }
}

CompletionRequest request_for(std::vector<int> prompt, std::size_t max_tokens, float temperature, std::uint64_t seed) {
    CompletionRequest request;
    request.prompt = std::move(prompt);
    request.max_tokens = max_tokens;
    request.sampling.temperature = temperature;
    request.sampling.top_p = 0.9f;
    request.sampling.seed = seed;
    return request;
}

const loom::models::LoadedModel& shared_model() {
    static const auto model = loom::models::load_default_model();
    return model;
}

// No end-of-sequence token: a request runs until its limit (2048 positions).
const loom::models::LoadedModel& endless_model() {
    static const auto model = [] {
        auto spec = loom::models::default_model_spec();
        spec.eos_token_ids.clear();
        return loom::models::load_synthetic_model(spec, "endless");
    }();
    return model;
}

// The reference: the request's tokens from generate() alone, on one thread.
std::vector<int> generated_alone(const loom::models::LoadedModel& model, const CompletionRequest& request) {
    loom::ThreadPool pool(1);
    loom::generate::GenerateOptions options;
    options.max_tokens = request.max_tokens;
    options.sampling = request.sampling;
    options.eos_token_ids = model.eos_token_ids();
    return loom::generate::generate(*model.network, request.prompt, options, pool).ids;
}

}  // namespace

TEST_CASE("serve: batched requests get the plain generator's tokens, whatever runs beside them", "[serve][batch][determinism]") {
    const auto& model = shared_model();
    std::vector<CompletionRequest> requests;
    for (int i = 0; i < 6; ++i) {
        std::vector<int> prompt;
        for (int t = 0; t < 3 + 17 * i; ++t) prompt.push_back((t * 31 + i * 7) % 250 + 1);
        requests.push_back(request_for(prompt, 12 + 3 * std::size_t(i), i % 2 ? 0.8f : 0.0f, std::uint64_t(i)));
    }
    std::vector<std::vector<int>> expected;
    for (const auto& request : requests) expected.push_back(generated_alone(model, request));

    for (const std::size_t slots : {1, 3, 8}) {
        EngineOptions options;
        options.slots = slots;
        options.threads = slots == 3 ? 2 : 1;
        options.prefill_chunk = 16;  // long prompts are prefilled over several steps, beside decoding
        Engine engine(model, nullptr, options);
        std::vector<std::shared_ptr<Job>> jobs;
        for (const auto& request : requests) {
            jobs.push_back(engine.submit(request));
            std::this_thread::sleep_for(std::chrono::microseconds(300));  // staggered arrivals
        }
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            const Outcome outcome = collect(*jobs[i]);
            INFO("slots " << slots << ", request " << i);
            REQUIRE(outcome.last.kind == EventKind::finished);
            CHECK(outcome.tokens == expected[i]);
            CHECK(outcome.last.timings.prompt_tokens == requests[i].prompt.size());
            CHECK(outcome.last.timings.generated_tokens == expected[i].size());
        }
        const auto stats = engine.stats();
        CHECK(stats.requests_finished == requests.size());
        CHECK(stats.busy_slots == 0);
    }

    // Longest first through one slot: each later request reuses the cache of an earlier one,
    // full of another sequence's positions.
    Engine one_slot(model, nullptr, EngineOptions{1, 0, 1});
    for (std::size_t i = requests.size(); i-- > 0;) {
        INFO("one slot, request " << i);
        const Outcome outcome = collect(*one_slot.submit(requests[i]));
        REQUIRE(outcome.last.kind == EventKind::finished);
        CHECK(outcome.tokens == expected[i]);
    }
    CHECK(one_slot.stats().caches_reused == requests.size() - 1);
}

TEST_CASE("serve: a prompt starts from the longest start a kept cache holds, with the same tokens", "[serve][batch][determinism]") {
    const auto& model = shared_model();
    std::vector<int> first_prompt;
    for (int t = 0; t < 20; ++t) first_prompt.push_back((t * 37 + 11) % 250 + 1);
    const CompletionRequest first = request_for(first_prompt, 10, 0.0f, 1);
    const std::vector<int> first_reply = generated_alone(model, first);
    REQUIRE(first_reply.size() >= 6);
    // A chat's next turn: the first prompt, part of its reply (the cache holds every reply
    // token but the last), then new tokens.
    std::vector<int> next_turn = first_prompt;
    next_turn.insert(next_turn.end(), first_reply.begin(), first_reply.begin() + 5);
    for (int extra : {7, 8, 9}) next_turn.push_back(first_reply[5] == 7 ? extra + 1 : extra);
    std::vector<int> unrelated = first_prompt;
    unrelated[0] = first_prompt[0] + 1;
    // What each request finds cached: nothing; the first prompt and 5 reply tokens; the
    // same prompt, all but the last token (its logits choose the first new token); nothing.
    const std::vector<CompletionRequest> requests = {first, request_for(next_turn, 8, 0.8f, 2),
                                                     request_for(first_prompt, 6, 0.7f, 3), request_for(unrelated, 6, 0.0f, 4)};
    const std::vector<std::size_t> cached = {0, 25, 19, 0};
    std::vector<std::vector<int>> expected;
    for (const auto& request : requests) expected.push_back(generated_alone(model, request));

    for (const bool prompt_cache : {true, false}) {
        for (const std::size_t threads : {1, 2}) {
            EngineOptions options;
            options.slots = 2;
            options.threads = threads;
            options.prompt_cache = prompt_cache;
            Engine engine(model, nullptr, options);
            std::size_t prompt_tokens = 0, cached_tokens = 0;
            for (std::size_t i = 0; i < requests.size(); ++i) {
                INFO("prompt cache " << prompt_cache << ", threads " << threads << ", request " << i);
                const Outcome outcome = collect(*engine.submit(requests[i]));
                REQUIRE(outcome.last.kind == EventKind::finished);
                CHECK(outcome.tokens == expected[i]);
                const std::size_t expected_cached = prompt_cache ? cached[i] : 0;
                CHECK(outcome.last.timings.prompt_tokens == requests[i].prompt.size());
                CHECK(outcome.last.timings.cached_prompt_tokens == expected_cached);
                CHECK(outcome.last.timings.evaluated_prompt_tokens() == requests[i].prompt.size() - expected_cached);
                prompt_tokens += requests[i].prompt.size() - expected_cached;
                cached_tokens += expected_cached;
            }
            const auto stats = engine.stats();
            CHECK(stats.prompt_tokens == prompt_tokens);
            CHECK(stats.prompt_tokens_cached == cached_tokens);
        }
    }
}

TEST_CASE("serve: conversations that share a system prompt keep their caches while the slots allow", "[serve][batch]") {
    const auto& model = shared_model();
    std::vector<int> system;
    for (int t = 0; t < 10; ++t) system.push_back(t * 17 % 240 + 5);
    auto with_system = [&](int user) {
        std::vector<int> prompt = system;
        for (int t = 0; t < 10; ++t) prompt.push_back((t * 29 + user * 61) % 240 + 5);
        return prompt;
    };
    EngineOptions options;
    options.slots = 2;
    Engine engine(model, nullptr, options);
    auto run = [&](const std::vector<int>& prompt, std::size_t expected_cached) {
        const CompletionRequest request = request_for(prompt, 6, 0.0f, 0);
        const Outcome outcome = collect(*engine.submit(request));
        REQUIRE(outcome.last.kind == EventKind::finished);
        CHECK(outcome.tokens == generated_alone(model, request));
        CHECK(outcome.last.timings.cached_prompt_tokens == expected_cached);
        return outcome.tokens;
    };
    const std::vector<int> first_a = with_system(1);
    const std::vector<int> reply_a = run(first_a, 0);
    REQUIRE(reply_a.size() >= 4);
    // B shares only the system prompt with A's cache: it makes a cache of its own, since
    // the two slots have room for both, rather than take A's.
    run(with_system(2), 0);
    std::vector<int> second_a = first_a;
    second_a.insert(second_a.end(), reply_a.begin(), reply_a.begin() + 3);
    for (int extra : {1, 2, 3, 4}) second_a.push_back(reply_a[3] == 1 ? extra + 1 : extra);
    run(second_a, first_a.size() + 3);
    // Two caches kept, one per slot: C takes the one kept longest ago (B's) and starts from
    // the system prompt it holds.
    run(with_system(3), system.size());
}

TEST_CASE("serve: a training run leaves no kept cache to start from", "[serve][train]") {
    EngineOptions options;
    options.slots = 1;
    Engine engine(endless_model(), nullptr, options);
    std::vector<int> prompt;
    for (int t = 0; t < 12; ++t) prompt.push_back(t * 13 % 200 + 3);
    REQUIRE(collect(*engine.submit(request_for(prompt, 4, 0.0f, 0))).last.kind == EventKind::finished);
    const Outcome again = collect(*engine.submit(request_for(prompt, 4, 0.0f, 0)));
    CHECK(again.last.timings.cached_prompt_tokens == prompt.size() - 1);

    loom::serve::TrainingRequest training;
    training.tokens = prompt;
    training.steps = 1;
    auto train = [&] { REQUIRE(collect(*engine.submit_training(training)).last.kind == EventKind::finished); };
    train();
    // The weights changed: keys and values from before the run are not what they give now.
    const Outcome after = collect(*engine.submit(request_for(prompt, 4, 0.0f, 0)));
    REQUIRE(after.last.kind == EventKind::finished);
    CHECK(after.last.timings.cached_prompt_tokens == 0);
    CHECK(engine.stats().prompt_tokens_cached == prompt.size() - 1);

    // Nor is the cache of a request that was running when a run started: it goes on with the
    // new weights, after positions run with the old ones.
    auto across = engine.submit(request_for(prompt, 1 << 20, 0.0f, 0));
    REQUIRE(across->next_event(std::chrono::seconds(60)));
    train();
    across->cancel();
    const Outcome later = collect(*engine.submit(request_for(prompt, 4, 0.0f, 0)));
    REQUIRE(later.last.kind == EventKind::finished);
    CHECK(later.last.timings.cached_prompt_tokens == 0);
}

TEST_CASE("serve: a cancelled job frees its slot for the next request", "[serve]") {
    EngineOptions options;
    options.slots = 1;
    Engine engine(endless_model(), nullptr, options);
    auto endless = engine.submit(request_for({1, 2, 3}, 1 << 20, 0.0f, 0));
    REQUIRE(endless->next_event(std::chrono::seconds(30)));
    auto waiting = engine.submit(request_for({4, 5}, 3, 0.0f, 0));
    CHECK(engine.stats().queued == 1);
    endless->cancel();
    const Outcome outcome = collect(*waiting);
    CHECK(outcome.tokens.size() == 3);
    CHECK(engine.stats().requests_cancelled == 1);
}

TEST_CASE("serve: full queues, impossible prompts and timeouts are refused or ended with a reason", "[serve][errors]") {
    EngineOptions options;
    options.slots = 1;
    options.queue_limit = 1;
    options.context = 32;
    Engine engine(endless_model(), nullptr, options);
    CHECK_THROWS_WITH(engine.submit(request_for(std::vector<int>(32, 1), 4, 0.0f, 0)), Catch::Contains("the context holds 32"));
    CHECK_THROWS_WITH(engine.submit(request_for({}, 4, 0.0f, 0)), Catch::Contains("prompt is empty"));
    CHECK_THROWS_WITH(engine.submit(request_for({1, 100000}, 4, 0.0f, 0)), Catch::Contains("outside the vocabulary"));
    auto bad_sampling = request_for({1}, 4, -1.0f, 0);
    CHECK_THROWS_WITH(engine.submit(bad_sampling), Catch::Contains("temperature"));
    auto stop_without_tokenizer = request_for({1}, 4, 0.0f, 0);
    stop_without_tokenizer.stop = {"x"};
    CHECK_THROWS_WITH(engine.submit(stop_without_tokenizer), Catch::Contains("need a tokenizer"));

    // The reply ends at the context: 32 positions minus a 30-token prompt leave 2.
    const Outcome short_reply = collect(*engine.submit(request_for(std::vector<int>(30, 7), 100, 0.0f, 0)));
    CHECK(short_reply.tokens.size() == 2);
    CHECK(short_reply.last.finish_reason == loom::generate::FinishReason::length);

    // 2000 tokens take far longer than 10 ms.
    Engine roomy(endless_model(), nullptr, EngineOptions{1, 0, 1});
    auto slow = request_for({1, 2}, 2000, 0.0f, 0);
    slow.timeout = std::chrono::milliseconds(10);
    auto running = roomy.submit(slow);
    REQUIRE(running->next_event(std::chrono::seconds(30)));
    auto queued = roomy.submit(request_for({3}, 2, 0.0f, 0));
    CHECK_THROWS_AS(roomy.submit(request_for({4}, 2, 0.0f, 0)), loom::serve::busy_error);
    const Outcome timed_out = collect(*running);
    CHECK(timed_out.last.kind == EventKind::failed);
    CHECK_THAT(timed_out.last.error, Catch::Contains("timed out after 10 ms"));
    CHECK(collect(*queued).tokens.size() == 2);

    // Stopping ends what is still running (2000 tokens outlast the few steps before stop()).
    auto last = roomy.submit(request_for({1}, 2000, 0.0f, 0));
    REQUIRE(last->next_event(std::chrono::seconds(30)));
    roomy.stop();
    const Outcome stopped = collect(*last);
    CHECK(stopped.last.kind == EventKind::failed);
    CHECK_THAT(stopped.last.error, Catch::Contains("shutting down"));
    CHECK_THROWS_AS(roomy.submit(request_for({1}, 1, 0.0f, 0)), loom::serve::busy_error);
}

TEST_CASE("serve: logprobs are the log-softmax of the logits, the chosen token's first when greedy", "[serve]") {
    Engine engine(shared_model(), nullptr, EngineOptions{});
    auto request = request_for({5, 6, 7}, 3, 0.0f, 0);
    request.logprobs = true;
    request.top_logprobs = 4;
    auto job = engine.submit(request);
    for (int step = 0; step < 3; ++step) {
        auto event = job->next_event(std::chrono::seconds(30));
        REQUIRE(event);
        REQUIRE(event->logprob);
        REQUIRE(event->top_logprobs.size() == 4);
        CHECK(event->top_logprobs[0].id == event->token);
        CHECK(event->top_logprobs[0].logprob == event->logprob->logprob);
        CHECK(event->logprob->logprob <= 0.0f);
        for (std::size_t i = 1; i < 4; ++i) CHECK(event->top_logprobs[i - 1].logprob >= event->top_logprobs[i].logprob);
    }
}

TEST_CASE("sampler: presence and frequency penalties count generated tokens only", "[sampler]") {
    const std::vector<float> logits = {2.0f, 1.9f, 1.0f};
    loom::generate::SamplingOptions options;
    options.frequency_penalty = 0.2f;
    loom::generate::Sampler sampler(options);
    // Token 0 appears in the prompt only: no penalty, it stays the argmax.
    CHECK(sampler.sample(logits, std::vector<int>{0, 0, 0}, 3) == 0);
    // Generated once: 2.0 - 0.2 = 1.8 < 1.9.
    CHECK(sampler.sample(logits, std::vector<int>{0, 0, 0, 0}, 3) == 1);
    options.frequency_penalty = 0.0f;
    options.presence_penalty = 0.05f;
    loom::generate::Sampler presence(options);
    // Presence counts once however often: 2.0 - 0.05 = 1.95 > 1.9.
    CHECK(presence.sample(logits, std::vector<int>{0, 0, 0, 0}, 1) == 0);
    options.presence_penalty = 3.0f;
    CHECK_THROWS_WITH(loom::generate::Sampler(options), Catch::Contains("presence_penalty must be in [-2, 2]"));
}
