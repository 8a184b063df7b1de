#pragma once
// A persistent pool of worker threads. parallel_for splits an index range into one
// contiguous chunk per thread, sized by the threads' measured speeds; each output element
// is computed by exactly one thread with the same arithmetic it would use alone, so
// results never depend on the thread count, on the chunks' sizes or on which thread ran
// which chunk (no split reductions, no atomics in the arithmetic).
//
// A decoding step of a small model is a few hundred parallel_for calls of a few
// microseconds each, so the hand-off must be cheap: workers spin on an atomic generation
// counter for a while after each task (about 100 us) before they sleep on it, and the
// caller spins for the workers to finish. Sleeping threads are woken through the same
// atomics (futex-based std::atomic::wait), which costs nothing when nobody sleeps.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <span>
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

// One step of the pool's balancing: each thread's share of a call's work moves a tenth of
// the way to the split at which threads of the measured speeds (work per second) would
// finish together, kept within half and one and a half times an equal share so that one
// stalled chunk cannot starve a thread; the shares stay a partition of 1.
inline void rebalance_shares(std::span<double> shares, std::span<const double> speeds) noexcept {
    double total_speed = 0.0;
    for (double speed : speeds) total_speed += speed;
    const double equal = 1.0 / double(shares.size());
    double total_share = 0.0;
    for (std::size_t index = 0; index < shares.size(); ++index) {
        const double balanced = std::clamp(speeds[index] / total_speed, 0.5 * equal, 1.5 * equal);
        shares[index] = 0.9 * shares[index] + 0.1 * balanced;
        total_share += shares[index];
    }
    for (double& share : shares) share /= total_share;
}

// An address unique to type T in the program.
template <typename T>
const void* type_key() noexcept {
    static const char key = 0;
    return &key;
}

}  // namespace detail

class ThreadPool {
public:
    static constexpr std::size_t max_threads = 0xFFFF;

    explicit ThreadPool(std::size_t thread_count = 1) {
        if (thread_count == 0 || thread_count > max_threads) {
            throw argument_error("thread count must be in 1.." + std::to_string(max_threads) + ", got " +
                                 std::to_string(thread_count));
        }
        if (thread_count <= balanced_threads) {
            sites_.assign(balanced_sites, Site{nullptr, std::vector<double>(thread_count, 1.0 / double(thread_count))});
        }
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

    // Calls body(begin, end) on disjoint chunks covering [0, count), normally one chunk per
    // thread. Chunks are claimed, not assigned: a worker the operating system has not
    // scheduled (another program on the core) leaves its share to whoever is free, usually
    // the caller, instead of stalling the call. Which thread runs which indices never changes
    // a result. Exceptions thrown by a chunk are rethrown here. Several threads may share
    // one pool: their calls take turns.
    //
    // The shares follow the threads' measured speeds, per call site: cores of one machine
    // do not always run alike (measured on a 2-core VM: one core streamed memory at 36 GB/s,
    // the other at 29, and which one was slower changed within minutes), and with equal
    // halves the faster thread waits at every one of a decoding step's few hundred calls.
    template <typename Body>
    void parallel_for(std::size_t count, Body&& body) {
        if (count == 0) return;
        if (thread_count() == 1 || count == 1) {
            body(std::size_t(0), count);
            return;
        }
        std::lock_guard<std::mutex> one_call_at_a_time(call_mutex_);
        using BodyType = std::remove_reference_t<Body>;
        task_context_ = const_cast<void*>(static_cast<const void*>(&body));
        task_invoke_ = [](void* context, std::size_t begin, std::size_t end) {
            (*static_cast<BodyType*>(context))(begin, end);
        };
        element_count_ = count;
        unit_ = (count + max_units - 1) / max_units;
        const auto units = std::uint32_t((count + unit_ - 1) / unit_);
        // A body type is a call site, whose chunks cost alike from call to call.
        Site* site = sites_.empty() ? nullptr : &site_of(detail::type_key<BodyType>());
        for (std::size_t index = 0; site && index < thread_count(); ++index) {
            const double wanted = std::round(site->shares[index] * double(units));
            claims_.takes[index].store(std::uint32_t(std::max(1.0, wanted)), std::memory_order_relaxed);
        }
        first_error_ = nullptr;
        completion_.done.store(0, std::memory_order_relaxed);
        const std::uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
        claims_.cursor.store(pack(generation, units, 0), std::memory_order_release);  // publishes the task
        generation_.store(generation, std::memory_order_release);
        generation_.notify_all();

        run_chunks(0, generation);
        wait_until_done(units);
        if (site) learn_shares(*site, generation);
        if (first_error_) std::rethrow_exception(first_error_);
    }

private:
    // The claim cursor packs the task's generation, its size in units and the next unit
    // into one atomic word, so a claim checks all three in one step: a late worker can
    // neither take a chunk of a later task by mistake nor read the later task's size for
    // its own (which once let a worker run an extra chunk of a finished task and count it
    // towards the next one's, so the caller waited forever). A unit is one index, or
    // several for ranges of 2^24 indices and more.
    static constexpr std::uint64_t max_units = (std::uint64_t(1) << 24) - 1;  // what 24 bits hold
    static constexpr std::uint64_t pack(std::uint32_t generation, std::uint32_t units, std::uint32_t next) noexcept {
        return std::uint64_t(generation & 0xFFFFu) << 48 | std::uint64_t(units) << 24 | next;
    }
    static constexpr std::uint32_t generation_of(std::uint64_t cursor) noexcept { return std::uint32_t(cursor >> 48); }
    static constexpr std::uint32_t units_of(std::uint64_t cursor) noexcept { return std::uint32_t(cursor >> 24) & 0xFFFFFFu; }
    static constexpr std::uint32_t next_of(std::uint64_t cursor) noexcept { return std::uint32_t(cursor) & 0xFFFFFFu; }

    // Claims and runs chunks of task `generation` until none is left: thread `index` takes
    // its share of the units at a time, or all that is left when the rest would be a sliver.
    void run_chunks(std::size_t index, std::uint32_t generation) noexcept {
        std::uint64_t cursor = claims_.cursor.load(std::memory_order_acquire);
        for (;;) {
            if (generation_of(cursor) != (generation & 0xFFFFu)) return;
            const std::uint32_t units = units_of(cursor), next = next_of(cursor);
            if (next >= units) return;
            const std::uint32_t left = units - next;
            const std::uint32_t share = sites_.empty() ? std::uint32_t((units + thread_count() - 1) / thread_count())
                                                       : claims_.takes[index].load(std::memory_order_relaxed);
            std::uint32_t take = std::min(left, share);
            if (left - take <= take / 4) take = left;
            if (!claims_.cursor.compare_exchange_weak(cursor, cursor + take, std::memory_order_acq_rel)) continue;
            run_chunk(index, generation, next, next + take);
            if (completion_.done.fetch_add(take) + take == units) completion_.done.notify_one();
            cursor = claims_.cursor.load(std::memory_order_acquire);
        }
    }

    // Read only after a claim: the task cannot end, and the caller cannot start the next,
    // before this chunk is counted done.
    void run_chunk(std::size_t index, std::uint32_t generation, std::uint32_t first_unit, std::uint32_t end_unit) noexcept {
        const std::size_t begin = first_unit * unit_;
        const std::size_t end = std::min(std::size_t(end_unit) * unit_, element_count_);
        const bool timed = !sites_.empty();  // an equal split has nothing to learn
        const auto start = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
        try {
            task_invoke_(task_context_, begin, end);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex_);
            if (!first_error_) first_error_ = std::current_exception();
        }
        if (!timed) return;
        Record& record = completion_.records[index];
        if (record.generation != std::uint16_t(generation)) record = Record{std::uint16_t(generation), 0, 0.0f, 0};
        record.seconds += std::chrono::duration<float>(std::chrono::steady_clock::now() - start).count();
        record.units += end_unit - first_unit;
        ++record.chunks;
    }

    void wait_until_done(std::uint32_t units) {
        auto done = [&] { return completion_.done.load(std::memory_order_acquire) == units; };
        if (detail::spin_until(done, spin_budget_)) return;
        for (std::uint32_t finished = completion_.done.load(); finished != units; finished = completion_.done.load()) {
            completion_.done.wait(finished);
        }
    }

    void worker_loop(std::size_t index) {
        std::uint32_t seen = 0;
        for (;;) {
            auto published = [&] { return generation_.load(std::memory_order_acquire) != seen; };
            if (!detail::spin_until(published, spin_budget_)) generation_.wait(seen);
            seen = generation_.load();
            if (stopping_.load()) return;
            run_chunks(index, seen);
        }
    }

    // A call site's shares: each thread's fraction of a call's units.
    struct Site {
        const void* key;
        std::vector<double> shares;
    };
    static constexpr std::size_t balanced_sites = 32;

    Site& site_of(const void* key) noexcept {
        for (Site& site : sites_) {
            if (site.key == key) return site;
        }
        // A new site takes the next entry in turn, starting from equal shares.
        Site& site = sites_[next_site_++ % sites_.size()];
        site.key = key;
        std::fill(site.shares.begin(), site.shares.end(), 1.0 / double(site.shares.size()));
        return site;
    }

    // Learns only from calls in which every thread ran one chunk: a late or idle thread's
    // speed is unknown.
    void learn_shares(Site& site, std::uint32_t generation) noexcept {
        const std::size_t threads = thread_count();
        double speeds[balanced_threads];
        for (std::size_t index = 0; index < threads; ++index) {
            const Record& record = completion_.records[index];
            if (record.generation != std::uint16_t(generation) || record.chunks != 1 || !(record.seconds > 0.0f)) return;
            speeds[index] = double(record.units) / double(record.seconds);
        }
        detail::rebalance_shares(site.shares, std::span<const double>(speeds, threads));
    }

    // Shares are kept for pools of up to balanced_threads threads (larger ones split equally),
    // so that what a call hands over fits the two cache lines every call moves between the
    // threads anyway: the claim cursor with each thread's units per claim, and the count of
    // finished units with what each thread did (each thread writes its own record only; the
    // caller reads them once every chunk is done).
    static constexpr std::size_t balanced_threads = 4;
    struct Record {
        std::uint16_t generation;  // the low bits of the call's, as in the cursor
        std::uint16_t chunks;
        float seconds;
        std::uint32_t units;
    };
    struct alignas(64) Claims {
        std::atomic<std::uint64_t> cursor{0};  // see pack()
        std::atomic<std::uint32_t> takes[balanced_threads] = {};  // a late reader only sizes a claim that then fails
    };
    struct alignas(64) Completion {
        std::atomic<std::uint32_t> done{0};  // units finished; 32-bit: the width a futex waits on directly
        Record records[balanced_threads] = {};
    };
    static_assert(sizeof(Claims) == 64 && sizeof(Completion) == 64, "one cache line each");

    std::chrono::microseconds spin_budget_{100};
    std::vector<std::thread> workers_;
    std::mutex call_mutex_;
    std::mutex error_mutex_;
    // 32-bit: the width a futex waits on directly.
    std::atomic<std::uint32_t> generation_{0};
    Claims claims_;
    Completion completion_;
    std::atomic<bool> stopping_{false};
    // Written by the caller before claims_.cursor publishes the task, read after a claim.
    void* task_context_ = nullptr;
    void (*task_invoke_)(void*, std::size_t, std::size_t) = nullptr;
    std::size_t element_count_ = 0;
    std::size_t unit_ = 1;
    std::exception_ptr first_error_;
    std::vector<Site> sites_;  // empty beyond balanced_threads
    std::size_t next_site_ = 0;
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
