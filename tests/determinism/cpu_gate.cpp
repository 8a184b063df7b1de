// main() of the loom_hash_<level> programs. This file is compiled for the x86-64 baseline,
// without the level's -m flags, so it runs on any CPU: it checks that the CPU has every
// instruction-set extension the rest of the program was compiled for, before any of that
// code runs, and exits with 77 (CTest's skip code) when one is missing. The extensions
// come from hash_outputs.cpp as constant data (no code of that file runs before the check).
//
// Only C library functions and functions of this file (internal linkage) are used here:
// an inline C++ library function (std::string's, say) is also instantiated in
// hash_outputs.cpp with the level's flags, and the linker may keep that copy for both.
#include <cstdio>
#include <cstring>

#include <unistd.h>  // unlink

extern "C" const char loom_hash_level[];         // "scalar", "sse2", "avx2", "avx512", "native"
extern "C" const char loom_hash_cpu_features[];  // space-separated, in __builtin_cpu_supports spelling
int loom_hash_main(int argc, char** argv);        // the real program, compiled for the level

namespace {

// -1: a name this check does not know (it is then not checked), else 0 or 1.
int cpu_supports(const char* name) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
#define LOOM_CPU_FEATURE(spelling) \
    if (std::strcmp(name, spelling) == 0) return __builtin_cpu_supports(spelling) ? 1 : 0;
    LOOM_CPU_FEATURE("sse3")
    LOOM_CPU_FEATURE("ssse3")
    LOOM_CPU_FEATURE("sse4.1")
    LOOM_CPU_FEATURE("sse4.2")
    LOOM_CPU_FEATURE("popcnt")
    LOOM_CPU_FEATURE("avx")
    LOOM_CPU_FEATURE("avx2")
    LOOM_CPU_FEATURE("fma")
    LOOM_CPU_FEATURE("f16c")
    LOOM_CPU_FEATURE("bmi")
    LOOM_CPU_FEATURE("bmi2")
    LOOM_CPU_FEATURE("avx512f")
    LOOM_CPU_FEATURE("avx512bw")
    LOOM_CPU_FEATURE("avx512dq")
    LOOM_CPU_FEATURE("avx512vl")
    LOOM_CPU_FEATURE("avx512cd")
    LOOM_CPU_FEATURE("avx512ifma")
    LOOM_CPU_FEATURE("avx512vbmi")
    LOOM_CPU_FEATURE("avx512vbmi2")
    LOOM_CPU_FEATURE("avx512vnni")
    LOOM_CPU_FEATURE("avx512bitalg")
    LOOM_CPU_FEATURE("avx512vpopcntdq")
    LOOM_CPU_FEATURE("avx512bf16")
    LOOM_CPU_FEATURE("gfni")
    LOOM_CPU_FEATURE("vpclmulqdq")
#undef LOOM_CPU_FEATURE
#else
    (void)name;
#endif
    return -1;
}

}  // namespace

int main(int argc, char** argv) {
    // The output file of an earlier run must not outlive a skipped or failed run: the
    // comparison reads whatever files are there.
    if (argc >= 2 && argv[1][0] != '-') ::unlink(argv[1]);

    char missing[512] = "";
    const char* cursor = loom_hash_cpu_features;
    while (*cursor) {
        while (*cursor == ' ') ++cursor;
        char feature[64];
        std::size_t length = 0;
        while (cursor[length] && cursor[length] != ' ' && length + 1 < sizeof feature) ++length;
        std::memcpy(feature, cursor, length);
        feature[length] = '\0';
        cursor += length;
        while (*cursor && *cursor != ' ') ++cursor;
        if (length > 0 && cpu_supports(feature) == 0) {
            if (missing[0]) std::strncat(missing, ", ", sizeof missing - std::strlen(missing) - 1);
            std::strncat(missing, feature, sizeof missing - std::strlen(missing) - 1);
        }
    }
    if (missing[0]) {
        std::printf("skipped: CPU lacks %s (needed by loom_hash_%s)\n", missing, loom_hash_level);
        std::fflush(stdout);
        return 77;
    }
    return loom_hash_main(argc, argv);
}
