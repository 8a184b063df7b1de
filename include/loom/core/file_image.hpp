#pragma once
// The bytes of a whole file, read-only, either read into memory the process owns or
// memory-mapped from the page cache.
//
// Reading is the default for weights. A mapping starts faster and shares the page cache
// between processes, but its pages stay the kernel's: on a machine whose kernel samples
// page accesses (DAMON, on the 2-core VM of docs/performance.md) its samples of the
// mapped file made about one Qwen2.5-0.5B decode step in ten take 1.5 to 5 times as
// long; and a file truncated under a running process turns the next read of a weight
// into SIGBUS. Memory read once has neither problem. Where mmap does not exist (WebAssembly) the file is always read.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
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

enum class FileAccess {
    read,  // copied into memory the process owns (2 MiB pages where the kernel grants them)
    map,   // memory-mapped from the page cache: zero copy, shared, instant
};

class FileImage {
public:
    FileImage() = default;

    explicit FileImage(const std::filesystem::path& path, FileAccess access = FileAccess::read) : path_(path) {
#if defined(LOOM_HAVE_MMAP)
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw_os_error("cannot open");
        try {
            struct stat info {};
            if (::fstat(fd, &info) != 0) throw_os_error("cannot stat");
            if (S_ISDIR(info.st_mode)) throw not_found_error(path_.string() + ": is a directory, expected a file");
            size_ = std::size_t(info.st_size);
            if (size_ > 0 && access == FileAccess::map) map(fd);
            if (size_ > 0 && access == FileAccess::read) read(fd);
        } catch (...) {
            release();
            ::close(fd);
            throw;
        }
        ::close(fd);
#else
        (void)access;
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

    FileImage(const FileImage&) = delete;
    FileImage& operator=(const FileImage&) = delete;
    FileImage(FileImage&& other) noexcept { swap(other); }
    FileImage& operator=(FileImage&& other) noexcept {
        if (this != &other) {
            release();
            swap(other);
        }
        return *this;
    }
    ~FileImage() { release(); }

    const std::byte* data() const noexcept {
#if defined(LOOM_HAVE_MMAP)
        return bytes_;
#else
        return owned_.data();
#endif
    }
    std::size_t size() const noexcept { return size_; }
    const std::filesystem::path& path() const noexcept { return path_; }

private:
#if defined(LOOM_HAVE_MMAP)
    static constexpr std::size_t huge_page = std::size_t(2) << 20;

    void map(int fd) {
        // Populated at once: the first forward pass would otherwise take one page fault
        // per 4 KiB of weights (about a third of a small model's first prefill).
        int flags = MAP_PRIVATE;
#if defined(MAP_POPULATE)
        flags |= MAP_POPULATE;
#endif
        void* address = ::mmap(nullptr, size_, PROT_READ, flags, fd, 0);
        if (address == MAP_FAILED) throw_os_error("cannot memory-map");
        region_ = address;
        region_size_ = size_;
        bytes_ = static_cast<const std::byte*>(address);
    }

    // Anonymous memory aligned to 2 MiB, so that the kernel can back it with huge pages
    // (fewer TLB misses while decoding streams every weight), filled by pread. The pages
    // are faulted in by the copy itself: populating them first costs a second pass.
    void read(int fd) {
        region_size_ = (size_ + huge_page - 1) / huge_page * huge_page + huge_page;
        void* region = ::mmap(nullptr, region_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) {
            region_size_ = 0;
            throw error(path_.string() + ": cannot allocate " + std::to_string(size_) + " bytes to read the file into: " +
                        std::strerror(errno));
        }
        region_ = region;
        const auto start = (reinterpret_cast<std::uintptr_t>(region) + huge_page - 1) / huge_page * huge_page;
        auto* bytes = reinterpret_cast<std::byte*>(start);
#if defined(MADV_HUGEPAGE)
        ::madvise(bytes, region_size_ - huge_page, MADV_HUGEPAGE);  // advice only: fine if refused
#endif
        constexpr std::size_t chunk = std::size_t(64) << 20;
        for (std::size_t done = 0; done < size_;) {
            const ssize_t got = ::pread(fd, bytes + done, std::min(chunk, size_ - done), off_t(done));
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) throw_os_error(("read failed at byte " + std::to_string(done)).c_str());
            if (got == 0) {
                throw format_error(path_.string() + ": the file ended at byte " + std::to_string(done) + " of the " +
                                   std::to_string(size_) + " it had when opened (truncated while being read?)");
            }
            done += std::size_t(got);
        }
        ::mprotect(bytes, region_size_ - huge_page, PROT_READ);  // weights are never written
        bytes_ = bytes;
    }
#endif

    [[noreturn]] void throw_os_error(const char* what) const {
        const int code = errno;
        const std::string message = path_.string() + ": " + what + ": " + std::strerror(code);
        if (code == ENOENT) throw not_found_error(message);
        throw error(message);
    }

    void release() noexcept {
#if defined(LOOM_HAVE_MMAP)
        if (region_) ::munmap(region_, region_size_);
        region_ = nullptr;
        region_size_ = 0;
        bytes_ = nullptr;
#else
        owned_.clear();
#endif
        size_ = 0;
    }

    void swap(FileImage& other) noexcept {
        std::swap(path_, other.path_);
        std::swap(size_, other.size_);
#if defined(LOOM_HAVE_MMAP)
        std::swap(region_, other.region_);
        std::swap(region_size_, other.region_size_);
        std::swap(bytes_, other.bytes_);
#else
        std::swap(owned_, other.owned_);
#endif
    }

    std::filesystem::path path_;
    std::size_t size_ = 0;
#if defined(LOOM_HAVE_MMAP)
    void* region_ = nullptr;  // what munmap releases: the mapping, or the whole anonymous reservation
    std::size_t region_size_ = 0;
    const std::byte* bytes_ = nullptr;
#else
    std::vector<std::byte> owned_;
#endif
};

}  // namespace loom
