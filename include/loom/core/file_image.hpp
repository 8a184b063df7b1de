#pragma once
// The bytes of a whole file, read-only, either read into memory the process owns or
// memory-mapped from the page cache; and WeightBuffer, the memory that holds them.
//
// Reading is the default for weights. A mapping starts faster and shares the page cache
// between processes, but its pages stay the kernel's: on a machine whose kernel samples
// page accesses (DAMON, on the 2-core VM of docs/performance.md) its samples of the
// mapped file made about one Qwen2.5-0.5B decode step in ten take 1.5 to 6 times as
// long; and a file truncated under a running process turns the next read of a weight
// into SIGBUS. Memory read once has neither problem. Where mmap does not exist
// (WebAssembly) the file is always read.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
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
    read,  // copied into a WeightBuffer: memory the process owns
    map,   // memory-mapped from the page cache: zero copy, shared, instant
};

// Memory for weights: 2 MiB-aligned anonymous memory, advised into huge pages when it
// spans one, or (map_file) a read-only mapping of a file. A decode step streams every
// weight, and huge pages spare it most TLB misses: decode steps of the SmolLM2-135M shape
// ran 1-8% faster than from 4 KiB pages, most with 8 sequences (docs/performance.md).
// Allocated memory is filled once, then made read-only by seal().
//
// A checkpoint's tensors start where its header ends, 8-byte aligned in safetensors files.
// The matrix products load 64 bytes at a time, and a load across two cache lines costs two:
// `aligned_offset` names the byte of the buffer to put on a 64-byte boundary (the start of
// the data section), so that tensors whose offsets are multiples of 64 (nearly all) are
// aligned. Measured on the 2-vCPU Intel Xeon of docs/performance.md, f32 products of 128
// rows by Qwen2.5-0.5B's 4864 x 896 weights: 61-64 GMAC/s aligned against 50-53 with the
// weights 56 bytes past a boundary.
class WeightBuffer {
public:
    static constexpr std::size_t alignment = 64;

    WeightBuffer() = default;

    // `what` names the contents in the error if the memory cannot be had.
    WeightBuffer(std::size_t size, const std::string& what, std::size_t aligned_offset = 0) : size_(size) {
        if (size == 0) return;
        const std::size_t lead = (alignment - aligned_offset % alignment) % alignment;
#if defined(LOOM_HAVE_MMAP)
        const std::size_t rounded = (lead + size + huge_page - 1) / huge_page * huge_page;
        region_size_ = rounded + huge_page;  // room to slide the start onto a 2 MiB boundary
        void* region = ::mmap(nullptr, region_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) {
            region_size_ = size_ = 0;
            throw error(what + ": cannot allocate " + std::to_string(size) + " bytes: " + std::strerror(errno));
        }
        region_ = region;
        const auto start = (reinterpret_cast<std::uintptr_t>(region) + huge_page - 1) / huge_page * huge_page;
        start_ = reinterpret_cast<std::byte*>(start);
        bytes_ = start_ + lead;
#if defined(MADV_HUGEPAGE)
        // Advice only, fine if refused; not for smaller buffers, which would get a whole
        // 2 MiB page each (tests build hundreds of tiny models).
        if (size >= huge_page) ::madvise(start_, rounded, MADV_HUGEPAGE);
#endif
#else
        (void)what;
        owned_.resize(alignment - 1 + lead + size);
        const auto start = (reinterpret_cast<std::uintptr_t>(owned_.data()) + alignment - 1) / alignment * alignment;
        bytes_ = reinterpret_cast<std::byte*>(start) + lead;
#endif
    }

#if defined(LOOM_HAVE_MMAP)
    // The `size` bytes of the open file `fd`, mapped and populated at once (the first
    // forward pass would otherwise take one page fault per 4 KiB of weights, about a third
    // of a small model's first prefill). `what` names the file in the error.
    static WeightBuffer map_file(int fd, std::size_t size, const std::string& what) {
        int flags = MAP_PRIVATE;
#if defined(MAP_POPULATE)
        flags |= MAP_POPULATE;
#endif
        void* address = ::mmap(nullptr, size, PROT_READ, flags, fd, 0);
        if (address == MAP_FAILED) throw error(what + ": cannot memory-map: " + std::strerror(errno));
        WeightBuffer mapping;
        mapping.region_ = address;
        mapping.region_size_ = mapping.size_ = size;
        mapping.bytes_ = mapping.start_ = static_cast<std::byte*>(address);
        return mapping;
    }
#endif

    WeightBuffer(const WeightBuffer&) = delete;
    WeightBuffer& operator=(const WeightBuffer&) = delete;
    WeightBuffer(WeightBuffer&& other) noexcept { swap(other); }
    WeightBuffer& operator=(WeightBuffer&& other) noexcept {
        if (this != &other) {
            release();
            swap(other);
        }
        return *this;
    }
    ~WeightBuffer() { release(); }

    std::byte* data() noexcept { return bytes_; }
    const std::byte* data() const noexcept { return bytes_; }
    std::size_t size() const noexcept { return size_; }

    // Read-only from here on: weights are never written, and a stray write should fault.
    // From the data to the end of the region, so no huge page is split.
    void seal() noexcept {
#if defined(LOOM_HAVE_MMAP)
        if (region_) ::mprotect(start_, std::size_t(static_cast<std::byte*>(region_) + region_size_ - start_), PROT_READ);
#endif
    }

private:
    void release() noexcept {
#if defined(LOOM_HAVE_MMAP)
        if (region_) ::munmap(region_, region_size_);
        region_ = nullptr;
        start_ = nullptr;
        region_size_ = 0;
#else
        owned_.clear();
#endif
        bytes_ = nullptr;
        size_ = 0;
    }

    void swap(WeightBuffer& other) noexcept {
        std::swap(bytes_, other.bytes_);
        std::swap(size_, other.size_);
#if defined(LOOM_HAVE_MMAP)
        std::swap(region_, other.region_);
        std::swap(start_, other.start_);
        std::swap(region_size_, other.region_size_);
#else
        std::swap(owned_, other.owned_);
#endif
    }

    std::byte* bytes_ = nullptr;
    std::size_t size_ = 0;
#if defined(LOOM_HAVE_MMAP)
    static constexpr std::size_t huge_page = std::size_t(2) << 20;
    void* region_ = nullptr;     // the whole reservation or mapping, for munmap
    std::byte* start_ = nullptr;  // its first page in use, for mprotect (the data may start later)
    std::size_t region_size_ = 0;
#else
    std::vector<std::byte> owned_;
#endif
};

class FileImage {
public:
    FileImage() = default;

    // `aligned_offset`: the byte of the file to place on a 64-byte boundary when it is read
    // (see WeightBuffer); a mapping keeps the file's own alignment.
    explicit FileImage(const std::filesystem::path& path, FileAccess access = FileAccess::read,
                       std::size_t aligned_offset = 0)
        : path_(path) {
#if defined(LOOM_HAVE_MMAP)
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw_os_error("cannot open");
        try {
            struct stat info {};
            if (::fstat(fd, &info) != 0) throw_os_error("cannot stat");
            if (S_ISDIR(info.st_mode)) throw not_found_error(path_.string() + ": is a directory, expected a file");
            const auto size = std::size_t(info.st_size);
            if (size > 0 && access == FileAccess::map) buffer_ = WeightBuffer::map_file(fd, size, path_.string());
            if (size > 0 && access == FileAccess::read) read(fd, size, aligned_offset);
        } catch (...) {
            ::close(fd);
            throw;
        }
        ::close(fd);
#else
        (void)access;
        std::ifstream stream(path, std::ios::binary);
        if (!stream) throw not_found_error(path_.string() + ": cannot open");
        stream.seekg(0, std::ios::end);
        const auto file_size = static_cast<std::uint64_t>(stream.tellg());
        // The read below takes a signed std::streamsize: 2 GiB at most in a 32-bit build
        // (WebAssembly), half of all the memory such a build can have.
        if (file_size > std::uint64_t(std::numeric_limits<std::streamsize>::max())) {
            throw format_error(path_.string() + ": " + std::to_string(file_size) +
                               " bytes do not fit in this build's address space");
        }
        buffer_ = WeightBuffer(std::size_t(file_size), path_.string(), aligned_offset);
        stream.seekg(0);
        stream.read(reinterpret_cast<char*>(buffer_.data()), std::streamsize(buffer_.size()));
        if (!stream) throw format_error(path_.string() + ": read failed");
#endif
    }

    const std::byte* data() const noexcept { return buffer_.data(); }
    std::size_t size() const noexcept { return buffer_.size(); }
    const std::filesystem::path& path() const noexcept { return path_; }

private:
#if defined(LOOM_HAVE_MMAP)
    // The pages are faulted in by the copy itself: populating them first costs a second pass.
    void read(int fd, std::size_t size, std::size_t aligned_offset) {
        WeightBuffer buffer(size, path_.string(), aligned_offset);
        constexpr std::size_t chunk = std::size_t(64) << 20;
        for (std::size_t done = 0; done < size;) {
            const ssize_t got = ::pread(fd, buffer.data() + done, std::min(chunk, size - done), off_t(done));
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) throw_os_error(("read failed at byte " + std::to_string(done)).c_str());
            if (got == 0) {
                throw format_error(path_.string() + ": the file ended at byte " + std::to_string(done) + " of the " +
                                   std::to_string(size) + " it had when opened (truncated while being read?)");
            }
            done += std::size_t(got);
        }
        buffer.seal();
        buffer_ = std::move(buffer);
    }
#endif

    [[noreturn]] void throw_os_error(const char* what) const {
        const int code = errno;
        const std::string message = path_.string() + ": " + what + ": " + std::strerror(code);
        if (code == ENOENT) throw not_found_error(message);
        throw error(message);
    }

    std::filesystem::path path_;
    WeightBuffer buffer_;  // read into, or mapped
};

}  // namespace loom
