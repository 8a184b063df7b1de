#pragma once
// A persistent pool of worker threads. parallel_for splits an index range into one
// contiguous chunk per thread; each output element is computed by exactly one thread
// with the same arithmetic it would use alone, so results never depend on the thread
// count or on which thread ran which chunk (no split reductions, no atomics in the
// arithmetic).
//
// A decoding step of a small model is a few hundred parallel_for calls of a few
// microseconds each, so the hand-off must be cheap: workers spin on an atomic generation
// counter for a while after each task (about 100 us) before they sleep on it, and the
// caller spins for the workers to finish. Sleeping threads are woken through the same
// atomics (futex-based std::atomic::wait), which costs nothing when nobody sleeps.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "loom/core/error.hpp"

namespace loom {

namespace detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

// Spins until ready() or until `budget` has passed; true when ready() came true.
template <typename Ready>
bool spin_until(Ready&& ready, std::chrono::microseconds budget) {
    const auto deadline = std::chrono::steady_clock::now() + budget;
    for (;;) {
        for (int i = 0; i < 64; ++i) {
            if (ready()) return true;
            cpu_relax();
        }
        if (std::chrono::steady_clock::now() >= deadline) return ready();
    }
}

}  // namespace detail

class ThreadPool {
public:
    static constexpr std::size_t max_threads = 0xFFFF;  // chunk indices are 16 bits wide

    explicit ThreadPool(std::size_t thread_count = 1) {
        if (thread_count == 0 || thread_count > max_threads) {
            throw argument_error("thread count must be in 1.." + std::to_string(max_threads) + ", got " +
                                 std::to_string(thread_count));
        }
        // More threads than cores: a spinning thread would hold the core that the thread it
        // waits for needs, so hand off through the futex at once.
        const std::size_t cores = std::thread::hardware_concurrency();
        if (cores != 0 && thread_count > cores) spin_budget_ = std::chrono::microseconds(0);
        workers_.reserve(thread_count - 1);
        for (std::size_t index = 1; index < thread_count; ++index) {
            workers_.emplace_back([this] { worker_loop(); });
        }
    }

    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    ~ThreadPool() {
        stopping_.store(true);
        generation_.fetch_add(1);
        generation_.notify_all();
        for (auto& worker : workers_) worker.join();
    }

    std::size_t thread_count() const noexcept { return workers_.size() + 1; }

    // Calls body(begin, end) on disjoint chunks covering [0, count), one chunk per thread.
    // Chunks are claimed, not assigned: a worker the operating system has not scheduled
    // (another program on the core) leaves its chunk to whoever is free, usually the caller,
    // instead of stalling the call. Which thread runs a chunk never changes its results.
    // Exceptions thrown by a chunk are rethrown here. Several threads may share one pool:
    // their calls take turns.
    template <typename Body>
    void parallel_for(std::size_t count, Body&& body) {
        const std::size_t threads = std::min(thread_count(), count);
        if (threads <= 1) {
            if (count > 0) body(std::size_t(0), count);
            return;
        }
        std::lock_guard<std::mutex> one_call_at_a_time(call_mutex_);
        using BodyType = std::remove_reference_t<Body>;
        task_context_ = const_cast<void*>(static_cast<const void*>(&body));
        task_invoke_ = [](void* context, std::size_t begin, std::size_t end) {
            (*static_cast<BodyType*>(context))(begin, end);
        };
        task_count_.store(count, std::memory_order_relaxed);
        first_error_ = nullptr;
        done_.store(0, std::memory_order_relaxed);
        const std::uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
        next_chunk_.store(std::uint64_t(generation) << 32 | std::uint64_t(threads) << 16,
                          std::memory_order_release);  // publishes the task
        generation_.store(generation, std::memory_order_release);
        generation_.notify_all();

        run_chunks(generation);
        wait_until_done(std::uint32_t(threads));
        if (first_error_) std::rethrow_exception(first_error_);
    }

private:
    // Claims and runs chunks of task `generation` until none is left. The generation, the
    // task's chunk count and the next index live in one atomic word, so a claim checks all
    // three in one step: a late worker can neither take a chunk of a later task by mistake
    // nor read the later task's chunk count for its own (which once let a worker run an
    // extra chunk of a finished task and count it towards the next one's, so the caller
    // waited forever).
    void run_chunks(std::uint32_t generation) noexcept {
        std::uint64_t next = next_chunk_.load(std::memory_order_acquire);
        for (;;) {
            if (std::uint32_t(next >> 32) != generation) return;
            const std::uint32_t chunk = std::uint32_t(next & 0xFFFFu);
            const std::uint32_t chunks = std::uint32_t((next >> 16) & 0xFFFFu);
            if (chunk >= chunks) return;
            if (!next_chunk_.compare_exchange_weak(next, next + 1, std::memory_order_acq_rel)) continue;
            run_chunk(chunk, chunks);
            if (done_.fetch_add(1) + 1 == chunks) done_.notify_one();
            next = next_chunk_.load(std::memory_order_acquire);
        }
    }

    void run_chunk(std::size_t chunk, std::size_t chunks) noexcept {
        const std::size_t count = task_count_.load(std::memory_order_relaxed);
        const std::size_t begin = count * chunk / chunks;
        const std::size_t end = count * (chunk + 1) / chunks;
        try {
            if (begin < end) task_invoke_(task_context_, begin, end);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex_);
            if (!first_error_) first_error_ = std::current_exception();
        }
    }

    void wait_until_done(std::uint32_t chunks) {
        auto done = [&] { return done_.load(std::memory_order_acquire) == chunks; };
        if (detail::spin_until(done, spin_budget_)) return;
        for (std::uint32_t finished = done_.load(); finished != chunks; finished = done_.load()) done_.wait(finished);
    }

    void worker_loop() {
        std::uint32_t seen = 0;
        for (;;) {
            auto published = [&] { return generation_.load(std::memory_order_acquire) != seen; };
            if (!detail::spin_until(published, spin_budget_)) generation_.wait(seen);
            seen = generation_.load();
            if (stopping_.load()) return;
            run_chunks(seen);
        }
    }

    std::chrono::microseconds spin_budget_{100};
    std::vector<std::thread> workers_;
    std::mutex call_mutex_;
    std::mutex error_mutex_;
    // 32-bit: the width a futex waits on directly.
    std::atomic<std::uint32_t> generation_{0};
    std::atomic<std::uint32_t> done_{0};
    std::atomic<std::uint64_t> next_chunk_{0};  // generation << 32 | chunks << 16 | next chunk index
    std::atomic<std::size_t> task_count_{0};
    std::atomic<bool> stopping_{false};
    // Written by the caller before next_chunk_ publishes the task, read after a claim.
    void* task_context_ = nullptr;
    void (*task_invoke_)(void*, std::size_t, std::size_t) = nullptr;
    std::exception_ptr first_error_;
};

// The thread count the command-line programs default to: one per core the system reports
// (at least one, since hardware_concurrency() may not know and return 0).
inline std::size_t default_thread_count() noexcept {
    return std::max<std::size_t>(1, std::thread::hardware_concurrency());
}

// From how many rows a row-by-row step of the model is worth splitting between threads: a
// norm of one 576-wide row takes a fraction of a microsecond, a hand-off about one.
inline constexpr std::size_t parallel_row_steps_from = 32;

// body(begin, end) over the rows [0, rows) of a row-by-row step (a norm, a residual add, a
// rotation): split between the pool's threads from `min_rows` rows on (a prompt), run by
// the caller below that (decoding, where the hand-off would cost more than the step).
// Rows are independent, so the split changes no result.
template <typename Body>
void for_row_blocks(ThreadPool& pool, std::size_t rows, std::size_t min_rows, Body&& body) {
    if (rows < min_rows) {
        if (rows > 0) body(std::size_t(0), rows);
        return;
    }
    pool.parallel_for(rows, body);
}

}  // namespace loom
