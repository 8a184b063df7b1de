#pragma once
// A persistent pool of worker threads. parallel_for splits an index range into one
// contiguous chunk per thread; each output element is computed by exactly one thread
// with the same arithmetic it would use alone, so results never depend on the thread
// count (no split reductions, no atomics in the arithmetic).
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
    explicit ThreadPool(std::size_t thread_count = 1) {
        if (thread_count == 0) throw argument_error("thread count must be at least 1");
        // More threads than cores: a spinning thread would hold the core that the thread it
        // waits for needs, so hand off through the futex at once.
        const std::size_t cores = std::thread::hardware_concurrency();
        if (cores != 0 && thread_count > cores) spin_budget_ = std::chrono::microseconds(0);
        workers_.reserve(thread_count - 1);
        for (std::size_t index = 1; index < thread_count; ++index) {
            workers_.emplace_back([this, index] { worker_loop(index); });
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

    // Calls body(begin, end) on disjoint chunks covering [0, count); the calling thread
    // takes chunk 0. Exceptions thrown by a chunk are rethrown here. Several threads may
    // share one pool: their calls take turns.
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
        task_count_ = count;
        active_chunks_ = threads;
        first_error_ = nullptr;
        // Every worker acknowledges every task, even one with no chunk for it, so none can
        // still be reading this task's parameters when the next call overwrites them.
        pending_.store(std::uint32_t(workers_.size()));
        generation_.fetch_add(1);  // publishes the task to the workers
        generation_.notify_all();

        run_chunk(0);
        wait_for_workers();
        if (first_error_) std::rethrow_exception(first_error_);
    }

private:

    void run_chunk(std::size_t chunk) noexcept {
        const std::size_t begin = task_count_ * chunk / active_chunks_;
        const std::size_t end = task_count_ * (chunk + 1) / active_chunks_;
        try {
            if (begin < end) task_invoke_(task_context_, begin, end);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex_);
            if (!first_error_) first_error_ = std::current_exception();
        }
    }

    void wait_for_workers() {
        auto done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
        if (detail::spin_until(done, spin_budget_)) return;
        for (std::uint32_t left = pending_.load(); left != 0; left = pending_.load()) pending_.wait(left);
    }

    void worker_loop(std::size_t index) {
        std::uint32_t seen = 0;
        for (;;) {
            auto published = [&] { return generation_.load(std::memory_order_acquire) != seen; };
            if (!detail::spin_until(published, spin_budget_)) generation_.wait(seen);
            seen = generation_.load();
            if (stopping_.load()) return;
            if (index < active_chunks_) run_chunk(index);
            if (pending_.fetch_sub(1) == 1) pending_.notify_one();
        }
    }

    std::chrono::microseconds spin_budget_{100};
    std::vector<std::thread> workers_;
    std::mutex call_mutex_;
    std::mutex error_mutex_;
    // 32-bit: the width a futex waits on directly.
    std::atomic<std::uint32_t> generation_{0};
    std::atomic<std::uint32_t> pending_{0};
    std::atomic<bool> stopping_{false};
    // Written by the caller before generation_ is bumped, read by workers after they see it.
    void* task_context_ = nullptr;
    void (*task_invoke_)(void*, std::size_t, std::size_t) = nullptr;
    std::size_t task_count_ = 0;
    std::size_t active_chunks_ = 0;
    std::exception_ptr first_error_;
};

}  // namespace loom
