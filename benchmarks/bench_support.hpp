#pragma once
// What the benchmarks share: reading their options, and the machine header every report
// starts with (the machine and how busy it was).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <numeric>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <loom/core/error.hpp>
#include <loom/core/thread_pool.hpp>
#include <loom/generate/command_line.hpp>
#include <loom/kernels/simd.hpp>

namespace loom_bench {

inline std::vector<std::string> split(const std::string& flag, const std::string& text) {
    std::vector<std::string> items;
    std::stringstream stream(text);
    for (std::string item; std::getline(stream, item, ',');) items.push_back(item);
    if (items.empty()) throw loom::argument_error(flag + ": expected a comma-separated list, got ''");
    return items;
}

inline std::size_t parse_at_least(const std::string& flag, const std::string& text, std::size_t minimum) {
    const auto value = loom::generate::detail::parse_integer<std::size_t>(flag, text);
    if (value < minimum) throw loom::argument_error(flag + " must be at least " + std::to_string(minimum));
    return value;
}

// Reads the command line's flags in turn: --help or -h prints `usage` and exits; a flag in
// `switches` takes no value, every other one the argument after it. on_flag(flag, value)
// (value empty for a switch) returns whether it knows the flag.
template <typename OnFlag>
void read_flags(int argc, char** argv, const char* usage, std::initializer_list<std::string_view> switches,
                OnFlag&& on_flag) {
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            std::fputs(usage, stdout);
            std::exit(0);
        }
        const bool is_switch = std::find(switches.begin(), switches.end(), flag) != switches.end();
        if (!is_switch && i + 1 >= argc) throw loom::argument_error(flag + " needs a value (see --help)");
        const std::string value = is_switch ? std::string() : std::string(argv[++i]);
        if (!on_flag(flag, value)) throw loom::argument_error("unknown option '" + flag + "' (see --help)");
    }
}

// A comma-separated list of whole numbers, each at least `minimum`, in the order given; a
// number given twice is kept once (each is a configuration measured in turn).
inline std::vector<std::size_t> parse_counts(const std::string& flag, const std::string& text, std::size_t minimum) {
    std::vector<std::size_t> counts;
    for (const std::string& item : split(flag, text)) {
        const std::size_t count = parse_at_least(flag, item, minimum);
        if (std::find(counts.begin(), counts.end(), count) == counts.end()) counts.push_back(count);
    }
    return counts;
}

// The default thread counts: 1, and every core when there are more.
inline std::vector<std::size_t> one_and_all_cores() {
    const std::size_t cores = loom::default_thread_count();
    if (cores > 1) return {1, cores};
    return {1};
}

// The mean of several timed runs, as llama-bench reports them.
inline double mean(const std::vector<double>& values) {
    return std::accumulate(values.begin(), values.end(), 0.0) / double(values.size());
}

// The middle value (the upper of the two middle ones for an even count): one slow run on a
// shared machine moves it less than the mean.
inline double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    return values[values.size() / 2];
}

inline std::string cpu_model_name() {
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);) {
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
        }
    }
    return "unknown CPU";
}

// Other work on the machine skews every figure, so the report records it.
inline std::string load_average() {
    std::ifstream loadavg("/proc/loadavg");
    std::string one_minute;
    return loadavg >> one_minute ? one_minute : "unknown";
}

// Peak resident memory since the last reset_peak_rss() (Linux).
inline double peak_rss_mib() {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);) {
        if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    }
    return 0.0;
}

inline void reset_peak_rss() {
    std::ofstream clear("/proc/self/clear_refs");
    clear << "5";
}

inline void print_machine() {
    std::printf("CPU: %s, %u logical cores, load average %s at start\n", cpu_model_name().c_str(),
                std::thread::hardware_concurrency(), load_average().c_str());
    std::printf("Loom kernels: %s, SIMD target %s\n", loom::kernels::simd::kernel_mode(),
                loom::kernels::simd::target_name());
}

}  // namespace loom_bench
