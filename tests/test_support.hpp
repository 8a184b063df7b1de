#pragma once
// Helpers shared by the unit tests: scratch folders, expected exceptions and running the
// PyTorch reference.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <sys/wait.h>  // WIFEXITED, WEXITSTATUS
#include <unistd.h>    // getpid

#include "loom/core/dtype.hpp"

// A reference a test compares against (PyTorch, node and the npm packages, SentencePiece's
// tools, Debian's Unicode data) is missing: a warning on a developer's machine, a failure
// in CI, where the README's test command installs every one of them.
#define LOOM_REFERENCE_MISSING(message)        \
    do {                                       \
        if (std::getenv("CI")) FAIL(message);  \
        WARN(message);                         \
    } while (false)

namespace loom::testing {

// A fresh folder under the system temp dir, removed when the object goes away.
class ScratchFolder {
public:
    explicit ScratchFolder(const std::string& label) {
        static std::atomic<unsigned> counter{0};
        path_ = std::filesystem::temp_directory_path() /
                ("loom-test-" + label + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~ScratchFolder() {
        // A test may have made the folder read-only; give it back so it can be removed.
        std::error_code ignored;
        std::filesystem::permissions(path_, std::filesystem::perms::owner_all, std::filesystem::perm_options::add,
                                     ignored);
        std::filesystem::remove_all(path_, ignored);
    }
    ScratchFolder(const ScratchFolder&) = delete;
    ScratchFolder& operator=(const ScratchFolder&) = delete;

    const std::filesystem::path& path() const noexcept { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

// The what() of the `Exception` that `action` throws; fails the test if `action` throws
// nothing or an exception of another type.
template <class Exception, class Action>
std::string message_of(Action&& action) {
    try {
        action();
    } catch (const Exception& thrown) {
        return thrown.what();
    } catch (const std::exception& other) {
        FAIL("threw the wrong exception type: " << other.what());
    }
    FAIL("expected an exception, none was thrown");
    return {};
}

// values stored as `dtype` (f32 as is, bf16/f16 rounded to nearest even), as a checkpoint holds them.
inline std::vector<std::byte> encode_weights(const std::vector<float>& values, DType dtype) {
    std::vector<std::byte> bytes(values.size() * dtype_size(dtype));
    for (std::size_t i = 0; i < values.size(); ++i) {
        if (dtype == DType::f32) {
            std::memcpy(bytes.data() + 4 * i, &values[i], 4);
        } else {
            const std::uint16_t half = dtype == DType::bf16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
            std::memcpy(bytes.data() + 2 * i, &half, 2);
        }
    }
    return bytes;
}

inline std::string source_path(const std::string& relative) { return std::string(LOOM_SOURCE_DIR) + "/" + relative; }

inline std::string read_file(const std::filesystem::path& path) {
    std::ifstream file(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(file), {});
}

// `text` as one word of a POSIX shell command.
inline std::string shell_quoted(const std::string& text) {
    std::string quoted = "'";
    for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return quoted + "'";
}

// Runs a shell command, returns its exit status.
inline int run_command(const std::string& command) {
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline bool python_torch_available() {
    static const bool available =
        run_command(std::string(LOOM_TEST_PYTHON) + " -c 'import torch' > /dev/null 2>&1") == 0;
    return available;
}

}  // namespace loom::testing
