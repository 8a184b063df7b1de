#pragma once
// Continuous batching: one thread owns the model and runs steps. Each step is one
// batched forward over every running request — a decoding request contributes its last
// token, a new one a chunk of its prompt — so concurrent requests share each pass through
// the weights, and requests join and leave between steps. Since the kernels are batch
// invariant, a request's tokens are the same whatever else is running.
//
// Requests reach the engine through submit(); results come back as events on the Job,
// which the HTTP side waits on. Cancelling a Job (a client that went away) frees its slot
// at the next step.
//
// Training (submit_training) runs on the same thread between two steps, so it holds the
// weights alone: running requests pause, new ones wait for it (up to a limit). The first
// run swaps the model for a trainable f32 copy, which every later request then uses.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/generate/generator.hpp"
#include "loom/generate/sampler.hpp"
#include "loom/generate/text_stream.hpp"
#include "loom/kernels/math.hpp"
#include "loom/models/load.hpp"
#include "loom/tokenizer/tokenizer.hpp"
#include "loom/train/trainer.hpp"

namespace loom::serve {

using Clock = std::chrono::steady_clock;

// The queue is full: the HTTP side answers 503 with Retry-After.
class busy_error : public error {
public:
    using error::error;
};

struct CompletionRequest {
    std::vector<int> prompt;
    std::size_t max_tokens = 128;
    generate::SamplingOptions sampling;
    std::vector<std::string> stop;  // stop strings (needs a tokenizer)
    std::size_t top_logprobs = 0;   // alternatives reported per token when `logprobs`
    bool logprobs = false;
    std::chrono::milliseconds timeout{0};  // 0: the engine's default
};

// A few optimizer steps on one text, as the old demo's POST /api/train asks for.
struct TrainingRequest {
    std::vector<int> tokens;  // the text; the model learns to predict each token from the ones before
    std::size_t steps = 5;
    double learning_rate = 1e-3;
};

struct TokenLogprob {
    int id = 0;
    float logprob = 0.0f;
};

enum class EventKind { token, finished, failed, training_step };

struct Event {
    EventKind kind = EventKind::token;
    int token = 0;
    std::string text;  // token: the text it makes final (may be empty); finished: the held-back rest
    std::optional<TokenLogprob> logprob;
    std::vector<TokenLogprob> top_logprobs;
    generate::FinishReason finish_reason = generate::FinishReason::length;
    generate::Timings timings;
    std::string error;  // failed: why
    std::size_t step = 0;     // training_step: 1-based
    double loss = 0.0;        // training_step: the loss before this step's update
    double elapsed_ms = 0.0;  // training: since the run started (finished: the whole run)

    bool ends_job() const noexcept { return kind == EventKind::finished || kind == EventKind::failed; }
};

// One request as the HTTP side sees it: a queue of events, and a way to give up.
class Job {
public:
    // The next event, or nothing after `wait` without one.
    std::optional<Event> next_event(std::chrono::milliseconds wait) {
        std::unique_lock lock(mutex_);
        if (!ready_.wait_for(lock, wait, [&] { return !events_.empty(); })) return std::nullopt;
        Event event = std::move(events_.front());
        events_.pop_front();
        return event;
    }

    void cancel() noexcept { cancelled_.store(true); }
    bool cancelled() const noexcept { return cancelled_.load(); }

    void post(Event event) {
        {
            std::lock_guard lock(mutex_);
            events_.push_back(std::move(event));
        }
        ready_.notify_all();
    }

private:
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<Event> events_;
    std::atomic<bool> cancelled_{false};
};

struct EngineOptions {
    std::size_t slots = 4;            // requests decoded together
    std::size_t context = 0;          // positions per request; 0: the model's
    std::size_t queue_limit = 64;     // requests waiting for a slot, beyond which submit() refuses
    std::size_t threads = 1;
    std::size_t prefill_chunk = 512;  // prompt tokens per step, so running requests keep streaming
    std::chrono::milliseconds timeout{std::chrono::minutes(10)};
    bool training = true;                                              // accept submit_training()
    std::chrono::milliseconds training_wait{std::chrono::seconds(30)};  // longest a request waits for training
    // A new prompt starts from the longest prefix of it that a kept cache holds (a chat's
    // earlier turns, a shared system prompt), as llama.cpp's server does by default. The
    // tokens are the same either way: benchmarks of prefill turn it off.
    bool prompt_cache = true;
};

// Counters for /metrics, read without stopping the engine.
struct EngineStats {
    std::size_t slots = 0;
    std::size_t busy_slots = 0;
    std::size_t queued = 0;
    std::uint64_t requests_finished = 0;
    std::uint64_t requests_failed = 0;
    std::uint64_t requests_cancelled = 0;
    std::uint64_t caches_reused = 0;  // requests that started in a finished request's KV cache
    std::uint64_t prompt_tokens = 0;         // run through the model
    std::uint64_t prompt_tokens_cached = 0;  // found in a kept cache instead
    std::uint64_t generated_tokens = 0;
    std::uint64_t steps = 0;
    std::uint64_t training_runs = 0;
    std::uint64_t training_steps = 0;
    double prompt_seconds = 0.0;    // step time spent on prompt tokens (split by token share)
    double generate_seconds = 0.0;  // step time spent on generated tokens
};

class Engine {
public:
    Engine(const models::LoadedModel& model, const tokenizer::Tokenizer* text_tokenizer, EngineOptions options)
        : model_(model), network_(model.network.get()), tokenizer_(text_tokenizer), options_(options),
          pool_(options.threads) {
        if (options_.slots == 0) throw argument_error("the engine needs at least one slot");
        if (options_.prefill_chunk == 0) throw argument_error("prefill chunk must be at least 1 token");
        const std::size_t positions = model_.config().max_position_embeddings;
        if (options_.context == 0 || options_.context > positions) options_.context = positions;
        eos_ = model_.eos_token_ids();
        spare_sequences_.reserve(options_.slots);  // keep_cache() then never allocates
        worker_ = std::thread([this] { run(); });
    }

    ~Engine() { stop(); }
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    std::size_t context() const noexcept { return options_.context; }
    const EngineOptions& options() const noexcept { return options_; }

    // Queues a request. Throws argument_error for a request that can never run, busy_error
    // when the queue is full or the engine is stopping.
    std::shared_ptr<Job> submit(CompletionRequest request) {
        validate(request);
        auto job = std::make_shared<Job>();
        {
            std::unique_lock lock(mutex_);
            if (!training_done_.wait_for(lock, options_.training_wait, [&] { return !training_ || stopping_; })) {
                throw busy_error("the model is training (POST /api/train) and did not finish within " +
                                 std::to_string(options_.training_wait.count()) + " ms; retry later");
            }
            if (stopping_) throw busy_error("the server is shutting down");
            if (waiting_.size() >= options_.queue_limit) {
                throw busy_error("all " + std::to_string(options_.slots) + " slots are busy and " +
                                 std::to_string(waiting_.size()) + " requests are queued; retry later");
            }
            const auto timeout = request.timeout.count() > 0 ? request.timeout : options_.timeout;
            waiting_.push_back(std::make_unique<Running>(std::move(request), job, Clock::now(), timeout));
        }
        wake_.notify_all();
        return job;
    }

    // Queues a training run; its job gets a training_step event per step, then finished
    // (or failed). Throws unsupported_error when training is off, argument_error for a
    // request that cannot run, busy_error while another run is queued or running.
    std::shared_ptr<Job> submit_training(TrainingRequest request) {
        if (!options_.training) throw unsupported_error("training is disabled on this server (--no-train)");
        if (request.tokens.size() < 2) {
            throw argument_error("the text has " + std::to_string(request.tokens.size()) +
                                 " token(s); training needs at least 2 (one to read, one to predict)");
        }
        if (request.tokens.size() > options_.context) {
            throw argument_error("the text has " + std::to_string(request.tokens.size()) + " tokens; the context holds " +
                                 std::to_string(options_.context));
        }
        if (request.steps == 0) throw argument_error("training needs at least 1 step");
        auto job = std::make_shared<Job>();
        {
            std::lock_guard lock(mutex_);
            if (stopping_) throw busy_error("the server is shutting down");
            if (training_) throw busy_error("a training run is already in progress; retry when it finishes");
            training_ = true;
            pending_training_.emplace(PendingTraining{std::move(request), job});
        }
        wake_.notify_all();
        return job;
    }

    EngineStats stats() const {
        std::lock_guard lock(mutex_);
        EngineStats copy = stats_;
        copy.slots = options_.slots;
        copy.busy_slots = busy_;
        copy.queued = waiting_.size();
        return copy;
    }

    // Ends every request (each gets a `failed` event) and joins the engine thread.
    void stop() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        training_done_.notify_all();
        if (worker_.joinable()) worker_.join();
    }

private:
    // A request from admission to its last event.
    struct Running {
        Running(CompletionRequest r, std::shared_ptr<Job> j, Clock::time_point now, std::chrono::milliseconds timeout)
            : request(std::move(r)), job(std::move(j)), sampler(request.sampling), submitted(now), deadline(now + timeout) {}

        CompletionRequest request;
        std::shared_ptr<Job> job;
        generate::Sampler sampler;
        std::optional<generate::TextStream> text;
        models::SequenceState sequence;
        std::vector<int> history;  // prompt, then generated tokens
        std::size_t prompt_fed = 0;
        std::size_t generated = 0;
        std::size_t budget = 0;  // new tokens allowed
        bool started = false;    // has a slot
        Clock::time_point submitted, deadline, admitted, first_token;
        std::uint64_t weights_version = 0;  // of the weights its cache's first positions were run with
        generate::Timings timings;

        bool prefilling() const noexcept { return prompt_fed < request.prompt.size(); }
        std::string timeout_text() const {
            return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - submitted).count()) + " ms";
        }
    };

    void validate(CompletionRequest& request) const {
        if (request.prompt.empty()) throw argument_error("the prompt is empty: at least one token is needed");
        const std::size_t vocab = model_.config().vocab_size;
        for (int id : request.prompt) {
            if (id < 0 || std::size_t(id) >= vocab) {
                throw argument_error("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                     std::to_string(vocab) + ")");
            }
        }
        if (request.prompt.size() >= options_.context) {
            throw argument_error("the prompt has " + std::to_string(request.prompt.size()) +
                                 " tokens; the context holds " + std::to_string(options_.context) +
                                 " (prompt and generated tokens together)");
        }
        if (!request.stop.empty() && !tokenizer_) throw argument_error("stop strings need a tokenizer; the model has none");
        request.sampling.validate();
    }

    void run() {
        std::vector<std::unique_ptr<Running>> active;
        models::ForwardScratch scratch;
        xt::xtensor<float, 2> logits;
        std::vector<models::BatchEntry> batch;
        std::vector<Running*> in_batch;
        while (true) {
            {
                std::unique_lock lock(mutex_);
                busy_ = active.size();
                wake_.wait(lock, [&] { return stopping_ || pending_training_ || !waiting_.empty() || !active.empty(); });
                if (stopping_ && pending_training_) {
                    post_failure(*pending_training_->job, "the server is shutting down");
                    pending_training_.reset();
                }
                if (stopping_) {
                    for (auto& running : waiting_) active.push_back(std::move(running));
                    waiting_.clear();
                    lock.unlock();
                    for (auto& running : active) fail(*running, "the server is shutting down");
                    std::lock_guard relock(mutex_);
                    busy_ = 0;
                    return;
                }
                if (pending_training_) {
                    PendingTraining training = std::move(*pending_training_);
                    pending_training_.reset();
                    lock.unlock();
                    run_training(training);  // running requests pause until it is done
                    lock.lock();
                    training_ = false;
                    training_done_.notify_all();
                    continue;
                }
                drop_expired_waiting();
                while (active.size() < options_.slots && !waiting_.empty()) {
                    active.push_back(std::move(waiting_.front()));
                    waiting_.pop_front();
                }
                busy_ = active.size();
            }
            // Requests whose client left or whose time ran out leave before the step. The
            // caches, kept or in use, stay at most one per slot.
            std::size_t caches_in_use = std::size_t(std::count_if(
                active.begin(), active.end(), [](const std::unique_ptr<Running>& running) { return running->started; }));
            std::erase_if(active, [&](const std::unique_ptr<Running>& running) {
                bool leaves = false;
                if (!running->started) {
                    leaves = !admit(*running, spare_sequences_.size() + caches_in_use < options_.slots);
                    ++caches_in_use;
                }
                leaves = leaves || leaves_early(*running);
                if (leaves) {
                    keep_cache(*running);
                    --caches_in_use;
                }
                return leaves;
            });
            if (active.empty()) continue;

            batch.clear();
            in_batch.clear();
            std::size_t prompt_budget = options_.prefill_chunk, prompt_tokens = 0, generated_tokens = 0;
            bool prompts_finish = true;  // every prompt in this step is fed to its end
            for (auto& running : active) {
                if (!running->prefilling() || prompt_budget == 0) continue;
                const std::size_t left = running->request.prompt.size() - running->prompt_fed;
                const std::size_t take = std::min(prompt_budget, left);
                batch.push_back({std::span<const int>(running->request.prompt).subspan(running->prompt_fed, take),
                                 &running->sequence, models::LogitRows::last});
                in_batch.push_back(running.get());
                prompt_budget -= take;
                prompt_tokens += take;
                prompts_finish = prompts_finish && take == left;
            }
            // Prompts that end in this step run without the decoding rows, so a new request's
            // first token waits for its prompt alone (loom_bench_serve, 1 thread, 8 streams
            // decoding: time to first token 1.6-1.75x the idle figure mixed, 1.45x alone; in
            // native-fast mode 1.9-2.05x and 1.6x). The decoding rows lose little: bound by
            // arithmetic, a mixed step lasts about as long as the two apart. The chunks before
            // a long prompt's last share their steps, so the streams never stall for long.
            const bool decode_rows = prompt_tokens == 0 || !prompts_finish;
            for (auto& running : active) {
                if (running->prefilling() || !decode_rows) continue;
                batch.push_back({std::span<const int>(&running->history.back(), 1), &running->sequence,
                                 models::LogitRows::last});
                in_batch.push_back(running.get());
                ++generated_tokens;
            }
            const auto step_start = Clock::now();
            try {
                network_->forward(batch, scratch, logits, pool_);
            } catch (const std::exception& failure) {
                for (auto& running : active) fail(*running, failure.what());
                active.clear();
                continue;
            }
            const auto step_end = Clock::now();

            std::size_t sampled = 0;
            for (std::size_t i = 0; i < in_batch.size(); ++i) {
                Running& running = *in_batch[i];
                if (running.prefilling()) {
                    running.prompt_fed += batch[i].tokens.size();
                    if (running.prefilling()) continue;
                    running.timings.prefill_seconds = std::chrono::duration<double>(step_end - running.admitted).count();
                }
                const std::size_t vocab = logits.shape()[1];
                try {
                    advance(running, std::span<const float>(logits.data() + i * vocab, vocab));
                    ++sampled;
                } catch (const std::exception& failure) {
                    if (running.job) fail(running, failure.what());
                }
            }
            record_step(step_end - step_start, prompt_tokens, generated_tokens, sampled);
            std::erase_if(active, [&](const std::unique_ptr<Running>& running) {
                if (running->job != nullptr) return false;
                keep_cache(*running);
                return true;
            });
        }
    }

    // A slot opens for a waiting request: its cache and text stream are made.
    // `room`: a new cache would not make more than one per slot.
    bool admit(Running& running, bool room) {
        running.started = true;
        running.admitted = Clock::now();
        const std::size_t prompt = running.request.prompt.size();
        running.budget = std::min(running.request.max_tokens, options_.context - prompt);
        running.timings.prompt_tokens = prompt;
        try {
            const std::size_t context = prompt + std::max<std::size_t>(running.budget, 1);
            running.weights_version = weights_version_;
            const SpareChoice spare = take_spare_cache(running.sequence, context, running.request.prompt, room);
            // The last prompt token runs in any case: its logits choose the first new token.
            const std::size_t kept = network_->restart(running.sequence, context, std::min(spare.shared_tokens, prompt - 1));
            running.prompt_fed = kept;
            running.timings.cached_prompt_tokens = kept;
            {
                std::lock_guard lock(mutex_);
                if (spare.holds) ++stats_.caches_reused;
                stats_.prompt_tokens_cached += kept;
            }
            running.history = running.request.prompt;
            if (tokenizer_) running.text.emplace(*tokenizer_, running.request.prompt, running.request.stop);
        } catch (const std::exception& failure) {
            fail(running, failure.what());
            return false;
        }
        return true;
    }

    // A request that leaves hands its cache to a later one, which then writes into memory
    // the process already holds instead of taking page faults during its prompt (see
    // Llama::restart), and may start from the tokens it shares with this one. Up to one
    // cache per slot is kept: what a full engine holds anyway, and what an idle one now
    // keeps (each as large as the largest request it served).
    void keep_cache(Running& running) {
        if (!running.started || spare_sequences_.size() >= options_.slots) return;
        // The cache holds the tokens that were run: the prompt, then every generated token
        // but the last (chosen, never run). A forward that failed did not advance it.
        // A request that ran across a training run holds keys and values of both weights.
        SpareSequence spare{std::move(running.sequence), std::move(running.history)};
        const bool reusable = options_.prompt_cache && running.weights_version == weights_version_;
        spare.tokens.resize(reusable ? std::min(spare.state.cache.length(), spare.tokens.size()) : 0);
        spare_sequences_.push_back(std::move(spare));
    }

    struct SpareChoice {
        bool holds = false;             // the cache took `context` positions as it was
        std::size_t shared_tokens = 0;  // leading prompt tokens its positions hold
    };

    // Moves into `sequence` the spare cache whose positions share the longest start with
    // `prompt` (Llama::restart keeps those, in larger buffers if need be); among equals, the
    // one that holds `context` positions most tightly, else the largest. When it shares half
    // the prompt or less, another request's conversation is worth more than those tokens,
    // as in llama.cpp's choice of a slot: a spare holding no tokens is taken instead, else
    // (`room`) none, the request making a cache of its own, else the spare kept longest ago.
    SpareChoice take_spare_cache(models::SequenceState& sequence, std::size_t context, std::span<const int> prompt,
                                 bool room) {
        if (spare_sequences_.empty()) return {};
        auto shared = [&](const SpareSequence& spare) {
            const std::size_t length = std::min(spare.tokens.size(), prompt.size());
            return std::size_t(std::mismatch(prompt.begin(), prompt.begin() + std::ptrdiff_t(length), spare.tokens.begin()).first -
                               prompt.begin());
        };
        auto holds = [&](const SpareSequence& spare) { return spare.state.cache.capacity() >= context; };
        auto fits_better = [&](const SpareSequence& a, const SpareSequence& b) {
            const std::size_t a_capacity = a.state.cache.capacity(), b_capacity = b.state.cache.capacity();
            return holds(a) ? !holds(b) || a_capacity < b_capacity : !holds(b) && a_capacity > b_capacity;
        };
        auto best = spare_sequences_.end(), empty = spare_sequences_.end();
        std::size_t best_shared = 0;
        for (auto spare = spare_sequences_.begin(); spare != spare_sequences_.end(); ++spare) {
            const std::size_t spare_shared = shared(*spare);
            if (best == spare_sequences_.end() || spare_shared > best_shared ||
                (spare_shared == best_shared && fits_better(*spare, *best))) {
                best = spare;
                best_shared = spare_shared;
            }
            if (spare->tokens.empty() && (empty == spare_sequences_.end() || fits_better(*spare, *empty))) empty = spare;
        }
        if (2 * best_shared <= prompt.size()) {
            if (empty != spare_sequences_.end()) best = empty;
            else if (room) return {};
            else best = spare_sequences_.begin();
            best_shared = shared(*best);
        }
        const SpareChoice choice{holds(*best), best_shared};
        sequence = std::move(best->state);
        spare_sequences_.erase(best);
        return choice;
    }

    bool leaves_early(Running& running) {
        if (running.job->cancelled()) {
            std::lock_guard lock(mutex_);
            ++stats_.requests_cancelled;
            if (busy_ > 0) --busy_;
            return true;
        }
        if (Clock::now() > running.deadline) {
            fail(running, "the request timed out after " + running.timeout_text());
            return true;
        }
        if (running.budget == 0) {  // max_tokens 0: nothing to generate, as OpenAI answers it
            finish(running, generate::FinishReason::length);
            return true;
        }
        return false;
    }

    struct PendingTraining {
        TrainingRequest request;
        std::shared_ptr<Job> job;
    };

    // A fresh AdamW (constant learning rate, no weight decay, gradients clipped at 1) over
    // the whole text as one sequence, on the trainable copy of the weights.
    void run_training(PendingTraining& pending) {
        const auto start = Clock::now();
        const auto elapsed_ms = [&] { return std::chrono::duration<double, std::milli>(Clock::now() - start).count(); };
        try {
            // The weights change: the kept caches' keys and values are no longer theirs, nor
            // are those of the requests running now (they go on with the new weights).
            for (SpareSequence& spare : spare_sequences_) spare.tokens.clear();
            ++weights_version_;
            if (!trainable_) {
                trainable_ = std::make_unique<train::TrainableLlama>(model_.config(), model_.network->weights());
                trainable_->network->set_cache_dtype(model_.network->cache_dtype());
                network_ = trainable_->network.get();
            }
            train::TokenStream stream;
            stream.append(pending.request.tokens, true);
            stream.documents = 1;
            const train::PackedDataset data(std::move(stream), pending.request.tokens.size() - 1, 0.0, "the request's text");
            train::TrainingOptions options;
            options.steps = pending.request.steps;
            options.batch_size = 1;
            options.sequence_length = data.sequence_length();
            options.learning_rate = pending.request.learning_rate;
            options.schedule = train::Schedule::constant;
            options.adamw.weight_decay = 0.0;
            options.validation_fraction = 0.0;
            train::Trainer trainer(*trainable_, data, options, pool_);
            {
                std::lock_guard lock(mutex_);
                ++stats_.training_runs;
            }
            while (!trainer.finished()) {
                if (pending.job->cancelled()) return;  // the steps taken so far stay in the weights
                {
                    std::lock_guard lock(mutex_);
                    if (stopping_) throw error("the server is shutting down");
                }
                const train::StepReport report = trainer.step();
                {
                    std::lock_guard lock(mutex_);
                    ++stats_.training_steps;
                }
                Event event;
                event.kind = EventKind::training_step;
                event.step = report.step;
                event.loss = report.loss;
                event.elapsed_ms = elapsed_ms();
                pending.job->post(std::move(event));
            }
            Event done;
            done.kind = EventKind::finished;
            done.step = trainer.steps_taken();
            done.elapsed_ms = elapsed_ms();
            pending.job->post(std::move(done));
        } catch (const std::exception& failure) {
            post_failure(*pending.job, failure.what());
        }
    }

    static void post_failure(Job& job, const std::string& message) {
        Event event;
        event.kind = EventKind::failed;
        event.error = message;
        job.post(std::move(event));
    }

    // Called with the lock held.
    void drop_expired_waiting() {
        const auto now = Clock::now();
        for (auto it = waiting_.begin(); it != waiting_.end();) {
            Running& running = **it;
            if (running.job->cancelled()) {
                ++stats_.requests_cancelled;
            } else if (now > running.deadline) {
                ++stats_.requests_failed;
                post_failure(*running.job, "the request timed out after " + running.timeout_text() + " waiting for a slot");
            } else {
                ++it;
                continue;
            }
            it = waiting_.erase(it);
        }
    }

    // One new token for `running` from its row of logits.
    void advance(Running& running, std::span<const float> row) {
        generate::require_finite(row, running.generated);  // a throw fails the request
        const int token = running.sampler.sample(row, running.history, running.request.prompt.size());
        const auto now = Clock::now();
        if (running.generated == 0) {
            running.first_token = now;
            running.timings.time_to_first_token_ms = std::chrono::duration<double, std::milli>(now - running.submitted).count();
        }
        ++running.generated;
        running.history.push_back(token);

        Event event;
        event.token = token;
        if (running.request.logprobs) add_logprobs(event, row, token, running.request.top_logprobs);
        if (running.text) event.text = running.text->push(token);
        const bool stopped_by_text = running.text && running.text->stopped();
        running.job->post(std::move(event));

        const bool end_of_sequence = std::find(eos_.begin(), eos_.end(), token) != eos_.end();
        if (stopped_by_text || end_of_sequence) finish(running, generate::FinishReason::stop);
        else if (running.generated >= running.budget) finish(running, generate::FinishReason::length);
    }

    // Natural log-probabilities of the model's distribution (before penalties and temperature).
    static void add_logprobs(Event& event, std::span<const float> row, int token, std::size_t top) {
        const float maximum = *std::max_element(row.begin(), row.end());
        double total = 0.0;
        for (float value : row) total += kernels::exp_f64(double(value) - double(maximum));
        const double log_total = kernels::log_f64(total);
        auto logprob_of = [&](int id) { return float(double(row[std::size_t(id)]) - double(maximum) - log_total); };
        event.logprob = TokenLogprob{token, logprob_of(token)};
        if (top == 0) return;
        std::vector<int> ids(row.size());
        for (std::size_t id = 0; id < ids.size(); ++id) ids[id] = int(id);
        top = std::min(top, ids.size());
        std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(top), ids.end(), [&](int a, int b) {
            return row[std::size_t(a)] != row[std::size_t(b)] ? row[std::size_t(a)] > row[std::size_t(b)] : a < b;
        });
        for (std::size_t i = 0; i < top; ++i) event.top_logprobs.push_back({ids[i], logprob_of(ids[i])});
    }

    void finish(Running& running, generate::FinishReason reason) {
        Event event;
        event.kind = EventKind::finished;
        event.finish_reason = reason;
        if (running.text) event.text = running.text->finish();
        running.timings.generated_tokens = running.generated;
        if (running.generated > 0) {
            running.timings.decode_seconds = std::chrono::duration<double>(Clock::now() - running.first_token).count();
        }
        event.timings = running.timings;
        end(running, std::move(event), stats_.requests_finished);
    }

    void fail(Running& running, const std::string& message) {
        Event event;
        event.kind = EventKind::failed;
        event.error = message;
        end(running, std::move(event), stats_.requests_failed);
    }

    // The counters change before the last event is posted: a client that has its answer
    // sees the slot free and the request counted.
    void end(Running& running, Event last, std::uint64_t& counter) {
        {
            std::lock_guard lock(mutex_);
            ++counter;
            if (running.started && busy_ > 0) --busy_;
        }
        running.job->post(std::move(last));
        running.job = nullptr;
    }

    // prompt_rows/generated_rows: the step's input rows of each kind; sampled: new tokens.
    void record_step(Clock::duration elapsed, std::size_t prompt_rows, std::size_t generated_rows, std::size_t sampled) {
        const double seconds = std::chrono::duration<double>(elapsed).count();
        const double all = double(prompt_rows + generated_rows);
        std::lock_guard lock(mutex_);
        ++stats_.steps;
        stats_.prompt_tokens += prompt_rows;
        stats_.generated_tokens += sampled;
        stats_.prompt_seconds += seconds * double(prompt_rows) / all;
        stats_.generate_seconds += seconds * double(generated_rows) / all;
    }

    const models::LoadedModel& model_;
    const models::Llama* network_;                    // the model's, until training swaps in trainable_'s
    std::unique_ptr<train::TrainableLlama> trainable_;  // made by the first training run
    const tokenizer::Tokenizer* tokenizer_;
    EngineOptions options_;
    ThreadPool pool_;
    std::vector<int> eos_;
    // A finished request's state and the tokens whose keys and values its cache holds.
    struct SpareSequence {
        models::SequenceState state;
        std::vector<int> tokens;
    };
    std::vector<SpareSequence> spare_sequences_;  // of finished requests; the engine's thread only
    std::uint64_t weights_version_ = 0;           // training runs so far; the engine's thread only

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::unique_ptr<Running>> waiting_;
    std::size_t busy_ = 0;
    bool stopping_ = false;
    bool training_ = false;  // a run is queued or running
    std::optional<PendingTraining> pending_training_;
    std::condition_variable training_done_;
    EngineStats stats_;
    std::thread worker_;
};

}  // namespace loom::serve
