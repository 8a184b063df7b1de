#pragma once
// A read-only view of a whole file. On POSIX systems the file is memory-mapped, so
// checkpoint bytes are paged in on demand and shared with the page cache (zero copy).
// Where mmap does not exist (WebAssembly) the file is read into an owned buffer.
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "loom/core/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#if !defined(__EMSCRIPTEN__)
#define LOOM_HAVE_MMAP 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif
#endif

namespace loom {

class MappedFile {
public:
    MappedFile() = default;

    explicit MappedFile(const std::filesystem::path& path) : path_(path) {
#if defined(LOOM_HAVE_MMAP)
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw_os_error("cannot open");
        struct stat info {};
        if (::fstat(fd, &info) != 0) {
            ::close(fd);
            throw_os_error("cannot stat");
        }
        if (S_ISDIR(info.st_mode)) {
            ::close(fd);
            throw not_found_error(path_.string() + ": is a directory, expected a file");
        }
        size_ = std::size_t(info.st_size);
        if (size_ > 0) {
            // Populated at once: the first forward pass would otherwise take one page fault
            // per 4 KiB of weights (about a third of a small model's first prefill).
            int flags = MAP_PRIVATE;
#if defined(MAP_POPULATE)
            flags |= MAP_POPULATE;
#endif
            void* address = ::mmap(nullptr, size_, PROT_READ, flags, fd, 0);
            if (address == MAP_FAILED) {
                ::close(fd);
                throw_os_error("cannot memory-map");
            }
            mapping_ = static_cast<const std::byte*>(address);
        }
        ::close(fd);
#else
        std::ifstream stream(path, std::ios::binary);
        if (!stream) throw not_found_error(path_.string() + ": cannot open");
        stream.seekg(0, std::ios::end);
        owned_.resize(std::size_t(stream.tellg()));
        stream.seekg(0);
        stream.read(reinterpret_cast<char*>(owned_.data()), std::streamsize(owned_.size()));
        if (!stream) throw format_error(path_.string() + ": read failed");
        size_ = owned_.size();
#endif
    }

    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    MappedFile(MappedFile&& other) noexcept { swap(other); }
    MappedFile& operator=(MappedFile&& other) noexcept {
        if (this != &other) {
            release();
            swap(other);
        }
        return *this;
    }
    ~MappedFile() { release(); }

    const std::byte* data() const noexcept {
#if defined(LOOM_HAVE_MMAP)
        return mapping_;
#else
        return owned_.data();
#endif
    }
    std::size_t size() const noexcept { return size_; }
    const std::filesystem::path& path() const noexcept { return path_; }

private:
    [[noreturn]] void throw_os_error(const char* what) const {
        const int code = errno;
        const std::string message = path_.string() + ": " + what + ": " + std::strerror(code);
        if (code == ENOENT) throw not_found_error(message);
        throw error(message);
    }

    void release() noexcept {
#if defined(LOOM_HAVE_MMAP)
        if (mapping_) ::munmap(const_cast<std::byte*>(mapping_), size_);
        mapping_ = nullptr;
#else
        owned_.clear();
#endif
        size_ = 0;
    }

    void swap(MappedFile& other) noexcept {
        std::swap(path_, other.path_);
        std::swap(size_, other.size_);
#if defined(LOOM_HAVE_MMAP)
        std::swap(mapping_, other.mapping_);
#else
        std::swap(owned_, other.owned_);
#endif
    }

    std::filesystem::path path_;
    std::size_t size_ = 0;
#if defined(LOOM_HAVE_MMAP)
    const std::byte* mapping_ = nullptr;
#else
    std::vector<std::byte> owned_;
#endif
};

}  // namespace loom
