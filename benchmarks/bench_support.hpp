#pragma once
// What every benchmark report starts with: the machine and how busy it was.
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

namespace loom_bench {

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

inline void print_machine() {
    std::printf("CPU: %s, %u logical cores, load average %s at start\n", cpu_model_name().c_str(),
                std::thread::hardware_concurrency(), load_average().c_str());
}

}  // namespace loom_bench
