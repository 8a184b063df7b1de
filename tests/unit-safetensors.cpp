// Tests of loom/io/safetensors.hpp and loom/core/file_image.hpp: exact round trips,
// zero-copy views, sharding, one test per validation rule (right exception type, message
// naming file/tensor/offset), and a cross-check against torch's own byte layout and rounding.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/io/safetensors.hpp"
#include "test_support.hpp"

#if defined(__unix__)
#include <unistd.h>
#endif

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using loom::DType;
using loom::Shape;
using loom::TensorView;
using loom::io::TensorStore;
using loom::io::TensorToWrite;

using loom::testing::message_of;
using loom::testing::python_torch_available;
using loom::testing::ScratchFolder;

float from_bits(std::uint32_t bits) { return loom::bits_to_f32(bits); }

std::uint16_t half_bits(const TensorView& view, std::size_t index) {
    std::uint16_t bits;
    std::memcpy(&bits, view.data + 2 * index, 2);
    return bits;
}

std::uint32_t float_bits(const TensorView& view, std::size_t index) {
    std::uint32_t bits;
    std::memcpy(&bits, view.data + 4 * index, 4);
    return bits;
}

// The header length a safetensors image starts with, read here rather than by the library.
std::uint64_t header_length_of(const std::vector<std::byte>& bytes) {
    REQUIRE(bytes.size() >= 8);
    std::uint64_t length = 0;
    for (int i = 7; i >= 0; --i) length = (length << 8) | std::uint64_t(bytes[i]);
    return length;
}

void write_bytes(const fs::path& path, const std::vector<std::byte>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    REQUIRE(out.good());
}

void write_text(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    REQUIRE(out.good());
}

std::vector<std::byte> read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> bytes(chars.size());
    std::memcpy(bytes.data(), chars.data(), chars.size());
    return bytes;
}

// A hand-made image: declared header length, header text, then `data_size` bytes of data.
std::vector<std::byte> raw_image(std::uint64_t declared_length, const std::string& header, std::size_t data_size) {
    std::vector<std::byte> bytes(8 + header.size() + data_size);
    for (int i = 0; i < 8; ++i) bytes[i] = std::byte((declared_length >> (8 * i)) & 0xFF);
    std::memcpy(bytes.data() + 8, header.data(), header.size());
    for (std::size_t i = 0; i < data_size; ++i) bytes[8 + header.size() + i] = std::byte(i * 7 + 1);
    return bytes;
}

std::vector<std::byte> raw_image(const std::string& header, std::size_t data_size) {
    return raw_image(header.size(), header, data_size);
}

// Writes `bytes` as `file_name` in `folder`, opens it, and returns the error message, which
// must name the file.
template <class Exception>
std::string open_error(const ScratchFolder& folder, const std::string& file_name, const std::vector<std::byte>& bytes) {
    write_bytes(folder / file_name, bytes);
    const std::string message = message_of<Exception>([&] { TensorStore::open(folder / file_name); });
    CHECK_THAT(message, Contains(file_name));
    return message;
}

template <class Exception>
std::string header_error(const std::string& header, std::size_t data_size) {
    ScratchFolder folder("safetensors");
    return open_error<Exception>(folder, "corrupt.safetensors", raw_image(header, data_size));
}

// Values chosen at rounding boundaries; paired with the bits each dtype must store.
struct Probe {
    std::uint32_t input;
    std::uint16_t bf16;
    std::uint16_t f16;
};

const std::vector<Probe>& rounding_probes() {
    static const std::vector<Probe> probes = {
        {0x3F800000u, 0x3F80, 0x3C00},  // 1.0
        {0x3F808000u, 0x3F80, 0x3C04},  // bf16 tie between 0x3F80 and 0x3F81: to even (down)
        {0x3F818000u, 0x3F82, 0x3C0C},  // bf16 tie between 0x3F81 and 0x3F82: to even (up)
        {0x3F808001u, 0x3F81, 0x3C04},  // just above the tie: up
        {0x3F807FFFu, 0x3F80, 0x3C04},  // just below the tie: down
        {0x80000000u, 0x8000, 0x8000},  // -0.0
        {0x33800000u, 0x3380, 0x0001},  // 2^-24: smallest f16 subnormal
        {0x33000000u, 0x3300, 0x0000},  // 2^-25: f16 tie between 0 and 1: to even (0)
        {0x33C00000u, 0x33C0, 0x0002},  // 3 * 2^-25: f16 tie between 1 and 2: to even (2)
        {0xB3800000u, 0xB380, 0x8001},  // -2^-24
        {0x38800000u, 0x3880, 0x0400},  // 2^-14: smallest normal f16
        {0x477FE000u, 0x4780, 0x7BFF},  // 65504: largest f16
        {0x477FF000u, 0x4780, 0x7C00},  // 65520: tie past the largest f16 rounds to inf
        {0x7F800000u, 0x7F80, 0x7C00},  // +inf
        {0xFF800000u, 0xFF80, 0xFC00},  // -inf
        {0x7F7FFFFFu, 0x7F80, 0x7C00},  // largest float: bf16 rounds it to inf
        {0x3DCCCCCDu, 0x3DCD, 0x2E66},  // 0.1
    };
    return probes;
}

std::vector<float> probe_inputs() {
    std::vector<float> values;
    for (const Probe& probe : rounding_probes()) values.push_back(from_bits(probe.input));
    return values;
}

std::vector<TensorToWrite> sample_tensors() {
    const std::vector<float> inputs = probe_inputs();
    const std::size_t count = inputs.size();
    return {
        {"model.layers.0.weight", DType::bf16, {count}, inputs},
        {"as_f16", DType::f16, {count}, inputs},
        {"as_f32", DType::f32, {count}, inputs},
        {"matrix", DType::f32, {2, 3}, {0.5f, 1.0f, 1.5f, 2.0f, 2.5f, 3.0f}},
        {"empty", DType::f16, {0, 4}, {}},
        {"scalar", DType::bf16, {}, {-3.0f}},
    };
}

void check_sample(const TensorStore& store) {
    const auto& probes = rounding_probes();
    REQUIRE(store.names() ==
            std::vector<std::string>{"as_f16", "as_f32", "empty", "matrix", "model.layers.0.weight", "scalar"});
    const TensorView& bf16 = store.get("model.layers.0.weight");
    const TensorView& f16 = store.get("as_f16");
    const TensorView& f32 = store.get("as_f32");
    CHECK(bf16.dtype == DType::bf16);
    CHECK(f16.dtype == DType::f16);
    CHECK(f32.dtype == DType::f32);
    REQUIRE(bf16.shape == Shape{probes.size()});
    for (std::size_t i = 0; i < probes.size(); ++i) {
        INFO("probe " << i << " input bits " << std::hex << probes[i].input);
        CHECK(half_bits(bf16, i) == probes[i].bf16);
        CHECK(half_bits(f16, i) == probes[i].f16);
        CHECK(float_bits(f32, i) == probes[i].input);
        CHECK(loom::f32_to_bits(bf16.at(i)) == loom::f32_to_bits(loom::bf16_to_f32(probes[i].bf16)));
        CHECK(loom::f32_to_bits(f16.at(i)) == loom::f32_to_bits(loom::f16_to_f32(probes[i].f16)));
    }
    CHECK(store.get("matrix").shape == Shape{2, 3});
    CHECK(store.get("matrix").to_f32() == std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f, 2.5f, 3.0f});
    CHECK(store.get("empty").shape == Shape{0, 4});
    CHECK(store.get("empty").numel() == 0);
    CHECK(store.get("scalar").shape.empty());
    CHECK(store.get("scalar").at(0) == -3.0f);
    CHECK(store.metadata().at("format") == "pt");
}

// Runs a shell command and returns what it printed; `status` gets pclose's wait status.
// (loom::testing::run_command returns only the status; the python checks need the output.)
std::string run_capturing_output(const std::string& command, int& status) {
    std::string output;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) {
        status = -1;
        return output;
    }
    char buffer[4096];
    std::size_t got;
    while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, got);
    status = ::pclose(pipe);
    return output;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Round trips and the three ways of opening

TEST_CASE("safetensors: serialized layout is aligned, sorted and contiguous") {
    const auto bytes = loom::io::serialize_safetensors(sample_tensors(), {{"format", "pt"}});
    const std::uint64_t header_length = header_length_of(bytes);
    CHECK((8 + header_length) % 8 == 0);
    const std::string header(reinterpret_cast<const char*>(bytes.data()) + 8, header_length);
    const auto json = nlohmann::json::parse(header);
    CHECK(json["__metadata__"]["format"] == "pt");
    std::size_t expected_begin = 0;
    for (const auto& name : {"as_f16", "as_f32", "empty", "matrix", "model.layers.0.weight", "scalar"}) {
        const auto& offsets = json[name]["data_offsets"];
        CHECK(offsets[0].get<std::size_t>() == expected_begin);
        expected_begin = offsets[1].get<std::size_t>();
    }
    CHECK(expected_begin == bytes.size() - 8 - header_length);
    CHECK(json["model.layers.0.weight"]["dtype"] == "BF16");
    CHECK(json["scalar"]["shape"] == nlohmann::json::array());
    // Serialising is deterministic: same input, same bytes.
    CHECK(loom::io::serialize_safetensors(sample_tensors(), {{"format", "pt"}}) == bytes);
}

TEST_CASE("safetensors: round trip through a file, a caller buffer and owned bytes") {
    ScratchFolder folder("safetensors");
    const fs::path path = folder / "model.safetensors";
    loom::io::write_safetensors(path, sample_tensors(), {{"format", "pt"}});
    const auto bytes = read_bytes(path);
    CHECK(bytes == loom::io::serialize_safetensors(sample_tensors(), {{"format", "pt"}}));
    CHECK_FALSE(fs::exists(folder / "model.safetensors.partial"));

    SECTION("file") {
        const TensorStore store = TensorStore::open(path);
        check_sample(store);
        CHECK(store.backing_bytes() == fs::file_size(path));
        CHECK(store.source_of("as_f16") == path.string());
    }
    SECTION("folder holding model.safetensors") {
        const TensorStore store = TensorStore::open(folder.path());
        check_sample(store);
        CHECK(store.source_of("matrix") == path.string());
    }
    SECTION("caller buffer, zero copy") {
        const TensorStore store = TensorStore::from_buffer(bytes.data(), bytes.size(), "embedded");
        check_sample(store);
        const TensorView& view = store.get("model.layers.0.weight");
        CHECK(view.data > bytes.data());
        CHECK(view.data + view.nbytes() <= bytes.data() + bytes.size());
        CHECK(store.backing_bytes() == bytes.size());
        CHECK(store.source_of("as_f16") == "embedded");
    }
    SECTION("owned bytes, still valid after the store moves") {
        TensorStore original = TensorStore::from_bytes(bytes, "owned");
        const TensorStore store = std::move(original);
        check_sample(store);
        CHECK(store.backing_bytes() == bytes.size());
    }
}

TEST_CASE("safetensors: copying views writes identical bytes") {
    ScratchFolder folder("safetensors");
    const auto bytes = loom::io::serialize_safetensors(sample_tensors(), {{"format", "pt"}});
    const TensorStore store = TensorStore::from_buffer(bytes.data(), bytes.size(), "source");
    std::map<std::string, TensorView> views;
    for (const std::string& name : store.names()) views.emplace(name, store.get(name));
    CHECK(loom::io::serialize_safetensors(views, store.metadata()) == bytes);
    loom::io::write_safetensors(folder / "copy.safetensors", views, store.metadata());
    CHECK(read_bytes(folder / "copy.safetensors") == bytes);
}

TEST_CASE("safetensors: f32 NaN and subnormals survive, empty checkpoint is valid") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float tiny = from_bits(0x00000001u);
    const auto bytes = loom::io::serialize_safetensors({{"x", DType::f32, {3}, {nan, tiny, -tiny}}});
    const TensorStore store = TensorStore::from_bytes(bytes, "nan");
    CHECK(std::isnan(store.get("x").at(0)));
    CHECK(loom::f32_to_bits(store.get("x").at(1)) == 0x00000001u);
    CHECK(loom::f32_to_bits(store.get("x").at(2)) == 0x80000001u);

    const auto empty = loom::io::serialize_safetensors({});
    CHECK(empty.size() % 8 == 0);
    const TensorStore nothing = TensorStore::from_bytes(empty, "empty");
    CHECK(nothing.names().empty());
    CHECK(nothing.metadata().empty());
}

#if defined(__linux__)
// Whether [address, address + bytes) lies in a mapping of `path` according to /proc/self/maps.
bool inside_mapping_of(const fs::path& path, const std::byte* address, std::size_t bytes) {
    const auto begin_of_view = reinterpret_cast<std::uintptr_t>(address);
    const std::string target = fs::canonical(path).string();
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
        std::istringstream fields(line);
        std::string range, permissions, offset, device, inode, file;
        fields >> range >> permissions >> offset >> device >> inode;
        std::getline(fields >> std::ws, file);
        const auto dash = range.find('-');
        const std::uintptr_t begin = std::stoull(range.substr(0, dash), nullptr, 16);
        const std::uintptr_t end = std::stoull(range.substr(dash + 1), nullptr, 16);
        if (file == target && begin_of_view >= begin && begin_of_view + bytes <= end) return true;
    }
    return false;
}
#endif

TEST_CASE("safetensors: a bf16 tensor is a view into the file's one image, read or mapped") {
    ScratchFolder folder("safetensors");
    const fs::path path = folder / "weights.safetensors";
    std::vector<float> values(1000);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = float(i % 256) * 0.25f;  // exact in bf16
    loom::io::write_safetensors(path, {{"weight", DType::bf16, {10, 100}, values}});
    const bool mapped = GENERATE(false, true);
    CAPTURE(mapped);
    const TensorStore store = TensorStore::open(path, mapped ? loom::FileAccess::map : loom::FileAccess::read);
    const TensorView& view = store.get("weight");
    CHECK(view.dtype == DType::bf16);
    CHECK(view.nbytes() == 2000);
    CHECK(store.backing_bytes() == fs::file_size(path));
    CHECK(view.at(999) == 57.75f);
#if defined(__linux__)
    // Mapped: the view's address lies in a mapping of this very file, so no copy was made.
    // Read: it lies in the process's own memory, which no later change to the file reaches.
    CHECK(inside_mapping_of(path, view.data, view.nbytes()) == mapped);
    if (!mapped) {
        fs::resize_file(path, 0);  // a mapped view would now raise SIGBUS on access
        CHECK(view.at(999) == 57.75f);
    }
#endif
}

TEST_CASE("safetensors: tensors read into memory start on 64-byte boundaries whatever the header's length") {
    // The products load 64 bytes at a time; the header's length decides where the data
    // section falls, 8-byte aligned in the file. Tensors 64 bytes long or a multiple of it.
    std::vector<float> values(64);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = float(i) - 20.5f;
    const std::vector<TensorToWrite> tensors = {
        {"a", DType::f32, {4, 16}, values}, {"b", DType::bf16, {2, 32}, values}, {"c", DType::f32, {64}, values}};
    ScratchFolder folder("safetensors");
    std::set<std::size_t> data_starts;  // modulo 64: every multiple of 8 should come up
    for (std::size_t note = 0; note < 64; ++note) {
        const auto bytes = loom::io::serialize_safetensors(tensors, {{"note", std::string(note, 'x')}});
        const std::size_t data_start = 8 + header_length_of(bytes);
        CHECK(loom::io::detail::data_section_offset(bytes.data(), bytes.size()) == data_start);
        data_starts.insert(data_start % 64);
        const fs::path path = folder / ("padded-" + std::to_string(note) + ".safetensors");
        write_bytes(path, bytes);
        CAPTURE(note, data_start);
        auto check_store = [&](const TensorStore& store, bool aligned) {
            for (const char* name : {"a", "b", "c"}) {
                const TensorView& view = store.get(name);
                const auto address = reinterpret_cast<std::uintptr_t>(view.data);
                CHECK(address % 64 == (aligned ? 0 : data_start % 64));
                CHECK(view.at(view.numel() - 1) == values[view.numel() - 1]);
            }
        };
        check_store(TensorStore::open(path), true);
        check_store(TensorStore::from_bytes(bytes, "owned"), true);
#if defined(LOOM_HAVE_MMAP)
        // A mapping keeps the file's own alignment (pages are 4096-byte aligned).
        check_store(TensorStore::open(path, loom::FileAccess::map), false);
#endif
    }
    CHECK(data_starts.size() == 8);
    CHECK(loom::io::detail::data_section_offset(folder / "absent.safetensors") == 0);
}

TEST_CASE("file image: reading and mapping give the same bytes; bad paths are named; weight buffers") {
    ScratchFolder folder("file-image");
    std::vector<std::byte> bytes(3 * (std::size_t(1) << 20) + 7);  // over a 2 MiB page, not a multiple of it
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::byte((i * 7919) >> 3);
    write_bytes(folder / "data.bin", bytes);
    const loom::FileImage read(folder / "data.bin", loom::FileAccess::read);
    const loom::FileImage mapped(folder / "data.bin", loom::FileAccess::map);
    REQUIRE(read.size() == bytes.size());
    REQUIRE(mapped.size() == bytes.size());
    CHECK(std::memcmp(read.data(), bytes.data(), bytes.size()) == 0);
    CHECK(std::memcmp(mapped.data(), bytes.data(), bytes.size()) == 0);
    // Read images start on a 2 MiB boundary, where the kernel can use huge pages.
    CHECK(reinterpret_cast<std::uintptr_t>(read.data()) % (std::size_t(2) << 20) == 0);

    loom::FileImage original(folder / "data.bin");
    const loom::FileImage moved = std::move(original);
    CHECK(original.size() == 0);
    CHECK(std::memcmp(moved.data(), bytes.data(), bytes.size()) == 0);

    loom::WeightBuffer buffer(bytes.size(), "test buffer");
    std::memcpy(buffer.data(), bytes.data(), bytes.size());
    buffer.seal();
    const loom::WeightBuffer kept = std::move(buffer);
    CHECK(buffer.size() == 0);
    REQUIRE(kept.size() == bytes.size());
    CHECK(reinterpret_cast<std::uintptr_t>(kept.data()) % (std::size_t(2) << 20) == 0);
    CHECK(std::memcmp(kept.data(), bytes.data(), bytes.size()) == 0);
    CHECK(loom::WeightBuffer(0, "empty").size() == 0);
    // The byte named by aligned_offset lands on a 64-byte boundary; the rest follows it.
    for (const std::size_t offset : {0, 1, 8, 56, 63, 64, 100, 3 << 20}) {
        CAPTURE(offset);
        loom::WeightBuffer shifted(std::max<std::size_t>(offset + 1, 5000), "shifted buffer", offset);
        CHECK((reinterpret_cast<std::uintptr_t>(shifted.data()) + offset) % 64 == 0);
        std::memset(shifted.data(), 0x5a, shifted.size());  // all of it is writable until sealed
        shifted.seal();
        CHECK(shifted.data()[shifted.size() - 1] == std::byte{0x5a});
    }

    write_bytes(folder / "empty.bin", {});
    for (const auto access : {loom::FileAccess::read, loom::FileAccess::map}) {
        CHECK(loom::FileImage(folder / "empty.bin", access).size() == 0);
        CHECK_THAT(message_of<loom::not_found_error>([&] { loom::FileImage(folder / "absent.bin", access); }),
                   Contains((folder / "absent.bin").string()));
        CHECK_THAT(message_of<loom::not_found_error>([&] { loom::FileImage(folder.path(), access); }),
                   Contains("is a directory"));
    }
}

TEST_CASE("safetensors: sharded write and read round trip") {
    ScratchFolder folder("safetensors");
    std::vector<TensorToWrite> tensors;
    for (int layer = 0; layer < 5; ++layer) {
        std::vector<float> values(64);
        for (std::size_t i = 0; i < values.size(); ++i) values[i] = float(int(i) - 32 + layer);  // exact in bf16
        tensors.push_back({"layers." + std::to_string(layer) + ".weight", DType::bf16, {8, 8}, values});  // 128 B
    }
    tensors.push_back({"huge", DType::f32, {100}, std::vector<float>(100, 1.25f)});  // 400 B: a shard alone
    loom::io::write_sharded_safetensors(folder.path(), tensors, 300, {{"format", "pt"}});


    // Name order: huge | layers.0, layers.1 | layers.2, layers.3 | layers.4
    const std::vector<std::string> shard_files = {
        "model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
        "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors"};
    for (const std::string& file : shard_files) CHECK(fs::exists(folder / file));
    CHECK_FALSE(fs::exists(folder / "model-00001-of-00005.safetensors"));
    const auto index = nlohmann::json::parse(loom::testing::read_file(folder / "model.safetensors.index.json"));
    CHECK(index["metadata"]["total_size"] == 400 + 5 * 128);
    CHECK(index["weight_map"].size() == 6);
    CHECK(index["weight_map"]["huge"] == shard_files[0]);
    CHECK(index["weight_map"]["layers.1.weight"] == shard_files[1]);
    CHECK(index["weight_map"]["layers.2.weight"] == shard_files[2]);
    CHECK(index["weight_map"]["layers.4.weight"] == shard_files[3]);

    for (const fs::path& opened : {folder.path(), folder / "model.safetensors.index.json"}) {
        const TensorStore store = TensorStore::open(opened);
        CHECK(store.names().size() == 6);
        CHECK(store.source_of("layers.3.weight") == (folder / shard_files[2]).string());
        CHECK(store.source_of("huge") == (folder / shard_files[0]).string());
        CHECK(store.metadata().at("format") == "pt");
        std::size_t total_files = 0;
        for (const std::string& file : shard_files) total_files += fs::file_size(folder / file);
        CHECK(store.backing_bytes() == total_files);
        for (const TensorToWrite& tensor : tensors) {
            const TensorView& view = store.get(tensor.name);
            CHECK(view.dtype == tensor.dtype);
            CHECK(view.shape == tensor.shape);
            CHECK(view.to_f32() == tensor.values);  // all values are exact in bf16
        }
    }
}

TEST_CASE("safetensors: a folder with both files prefers the index") {
    ScratchFolder folder("safetensors");
    loom::io::write_sharded_safetensors(folder.path(), {{"sharded", DType::f32, {1}, {1.0f}}}, 1 << 20);
    loom::io::write_safetensors(folder / "model.safetensors", {{"single", DType::f32, {1}, {2.0f}}});
    const TensorStore store = TensorStore::open(folder.path());
    CHECK(store.contains("sharded"));
    CHECK_FALSE(store.contains("single"));
    CHECK(TensorStore::open(folder / "model.safetensors").contains("single"));
}

TEST_CASE("safetensors: header padded with spaces and unaligned offsets are accepted") {
    const std::string header =
        R"({"__metadata__":{"note":"hand made"},"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},)"
        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}     )";
    auto bytes = raw_image(header, 6);
    const std::size_t data = 8 + header.size();
    const std::uint16_t a = loom::f32_to_bf16(-1.5f);
    std::memcpy(bytes.data() + data, &a, 2);
    const float b = 7.25f;
    std::memcpy(bytes.data() + data + 2, &b, 4);
    const TensorStore store = TensorStore::from_bytes(bytes, "hand made");
    CHECK(store.get("a").at(0) == -1.5f);
    CHECK(store.get("b").at(0) == 7.25f);
    CHECK(store.metadata().at("note") == "hand made");
}

// ---------------------------------------------------------------------------------------
// Validation: one test per rule, each checking the exception type and the message

TEST_CASE("safetensors: file shorter than 8 bytes") {
    ScratchFolder folder("safetensors");
    const std::string message = open_error<loom::format_error>(folder, "short.safetensors", std::vector<std::byte>(5));
    CHECK_THAT(message, Contains("5 bytes") && Contains("8-byte"));
    CHECK_THAT(message_of<loom::format_error>([] { loom::io::parse_safetensors(nullptr, 0, "nothing.bin"); }),
               Contains("nothing.bin") && Contains("0 bytes"));
}

TEST_CASE("safetensors: header length beyond the file size") {
    ScratchFolder folder("safetensors");
    const std::string message =
        open_error<loom::format_error>(folder, "long.safetensors", raw_image(1000, "{}", 18));
    CHECK_THAT(message, Contains("1000") && Contains("20 bytes") && Contains("28"));
}

TEST_CASE("safetensors: header that is not valid JSON") {
    const std::string message = header_error<loom::format_error>(R"({"w": {"dtype": "F32",)", 0);
    CHECK_THAT(message, Contains("not valid JSON") && Contains("parse error") && Contains("byte"));
    // Invalid UTF-8 inside a string is a JSON error too.
    CHECK_THAT(header_error<loom::format_error>("{\"\xff\": 1}", 0), Contains("not valid JSON"));
}

TEST_CASE("safetensors: header that is not an object") {
    CHECK_THAT(header_error<loom::format_error>("[1, 2, 3]", 0), Contains("JSON object") && Contains("array"));
    CHECK_THAT(header_error<loom::format_error>("42", 0), Contains("JSON object") && Contains("number"));
}

TEST_CASE("safetensors: tensor entry missing dtype, shape or data_offsets") {
    CHECK_THAT(header_error<loom::format_error>(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 4),
               Contains("'w'") && Contains("missing \"dtype\""));
    CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4),
               Contains("'w'") && Contains("missing \"shape\""));
    CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": "F32", "shape": [1]}})", 4),
               Contains("'w'") && Contains("missing \"data_offsets\""));
}

TEST_CASE("safetensors: tensor entry with wrong JSON types") {
    SECTION("entry not an object") {
        CHECK_THAT(header_error<loom::format_error>(R"({"w": 5})", 0), Contains("'w'") && Contains("JSON object"));
    }
    SECTION("dtype not a string") {
        CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": 32, "shape": [1], "data_offsets": [0, 4]}})", 4),
                   Contains("'w'") && Contains("dtype must be a string"));
    }
    SECTION("shape not an array") {
        CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}})", 16),
                   Contains("'w'") && Contains("shape must be an array"));
    }
    SECTION("negative dimension") {
        CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}})", 8),
                   Contains("'w'") && Contains("shape[1]") && Contains("non-negative") && Contains("-1"));
    }
    SECTION("fractional dimension") {
        CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", 8),
                   Contains("'w'") && Contains("shape[0]") && Contains("integer") && Contains("2.5"));
    }
    SECTION("dimension as a string") {
        CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", 8),
                   Contains("'w'") && Contains("shape[0]") && Contains("string"));
    }
    SECTION("data_offsets of the wrong length") {
        CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4),
                   Contains("'w'") && Contains("data_offsets must be an array [begin, end]"));
    }
    SECTION("negative offset") {
        CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 4),
                   Contains("'w'") && Contains("data_offsets[0]") && Contains("non-negative"));
    }
    SECTION("fractional offset") {
        CHECK_THAT(header_error<loom::format_error>(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4.0]}})", 4),
                   Contains("'w'") && Contains("data_offsets[1]") && Contains("integer"));
    }
    SECTION("offset too large for 64 bits") {
        CHECK_THAT(header_error<loom::format_error>(
                       R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 99999999999999999999999]}})", 4),
                   Contains("'w'") && Contains("data_offsets[1]") && Contains("integer"));
    }
}

TEST_CASE("safetensors: unknown dtype") {
    const std::string message =
        header_error<loom::format_error>(R"({"w": {"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}})", 4);
    CHECK_THAT(message, Contains("'w'") && Contains("unknown dtype") && Contains("F17"));
}

TEST_CASE("safetensors: known dtype that Loom does not support") {
    for (const std::string dtype : {"F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "U16", "U32", "U64"}) {
        INFO(dtype);
        const std::string message = header_error<loom::unsupported_error>(
            R"({"w": {"dtype": ")" + dtype + R"(", "shape": [1], "data_offsets": [0, 1]}})", 1);
        CHECK_THAT(message, Contains("'w'") && Contains(dtype) && Contains("F32, F16, BF16"));
    }
}

TEST_CASE("safetensors: data_offsets that begin after they end") {
    const std::string message = header_error<loom::format_error>(
        R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8);
    CHECK_THAT(message, Contains("'w'") && Contains("[8, 4]") && Contains("begins after it ends") && Contains("file offset"));
}

TEST_CASE("safetensors: data_offsets ending beyond the data section") {
    const std::string header = R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})";
    const std::string message = header_error<loom::format_error>(header, 8);
    CHECK_THAT(message, Contains("'w'") && Contains("[0, 16]") && Contains("beyond the data section of 8 bytes") &&
                            Contains("file offset " + std::to_string(8 + header.size() + 16)));
}

TEST_CASE("safetensors: byte span that does not match shape and dtype") {
    const std::string message = header_error<loom::format_error>(
        R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 8]}})", 8);
    CHECK_THAT(message, Contains("'w'") && Contains("span 8 bytes") && Contains("needs 12") && Contains("[2, 3]") &&
                            Contains("BF16"));
}

TEST_CASE("safetensors: overlapping tensors") {
    const std::string message = header_error<loom::format_error>(
        R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
        12);
    CHECK_THAT(message, Contains("'a'") && Contains("'b'") && Contains("overlaps") && Contains("[4, 12]"));
}

TEST_CASE("safetensors: gaps between tensors and unused trailing bytes") {
    SECTION("gap") {
        const std::string message = header_error<loom::format_error>(
            R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})",
            20);
        CHECK_THAT(message, Contains("[8, 12)") && Contains("'b'") && Contains("belong to no tensor") && Contains("file offset"));
    }
    SECTION("gap at the start") {
        const std::string message =
            header_error<loom::format_error>(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8);
        CHECK_THAT(message, Contains("[0, 4)") && Contains("'a'"));
    }
    SECTION("trailing bytes") {
        const std::string message =
            header_error<loom::format_error>(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 12);
        CHECK_THAT(message, Contains("12 bytes") && Contains("4 trailing bytes") && Contains("file offset"));
    }
}

TEST_CASE("safetensors: duplicate tensor names and keys") {
    SECTION("same tensor twice") {
        const std::string message = header_error<loom::format_error>(
            R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
            8);
        CHECK_THAT(message, Contains("tensor 'w'") && Contains("more than once"));
    }
    SECTION("same field twice in one entry") {
        const std::string message = header_error<loom::format_error>(
            R"({"w": {"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]}})", 4);
        CHECK_THAT(message, Contains("'dtype'") && Contains("inside 'w'"));
    }
}

TEST_CASE("safetensors: __metadata__ values that are not strings") {
    CHECK_THAT(header_error<loom::format_error>(R"({"__metadata__": {"format": "pt", "step": 100}})", 0),
               Contains("__metadata__") && Contains("'step'") && Contains("must be a string"));
    CHECK_THAT(header_error<loom::format_error>(R"({"__metadata__": ["pt"]})", 0),
               Contains("__metadata__") && Contains("object"));
}

TEST_CASE("safetensors: shape whose element count overflows") {
    const std::string message = header_error<loom::format_error>(
        R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4], "data_offsets": [0, 0]}})", 0);
    CHECK_THAT(message, Contains("'w'") && Contains("size_t"));
    // Element count fits, byte count does not.
    CHECK_THAT(header_error<loom::format_error>(
                   R"({"w": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0),
               Contains("'w'") && Contains("size_t"));
    // A zero dimension makes the tensor empty, however large the others are.
    const auto bytes = raw_image(R"({"w": {"dtype": "F32", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}})", 0);
    CHECK(TensorStore::from_bytes(bytes, "zero").get("w").numel() == 0);
}

// ---------------------------------------------------------------------------------------
// Sharded index validation

namespace {

// Two valid shards ("a" in the first, "b" in the second) and a matching index, which each
// test then breaks in one way.
struct ShardedFixture {
    ScratchFolder folder{"safetensors"};
    ShardedFixture() {
        loom::io::write_safetensors(folder / "one.safetensors", {{"a", DType::f32, {1}, {1.0f}}});
        loom::io::write_safetensors(folder / "two.safetensors", {{"b", DType::bf16, {2}, {2.0f, 3.0f}}});
    }
    fs::path write_index(const std::string& text) {
        const fs::path path = folder / "model.safetensors.index.json";
        write_text(path, text);
        return path;
    }
    template <class Exception>
    std::string index_error(const std::string& text) {
        const fs::path path = write_index(text);
        const std::string message = message_of<Exception>([&] { TensorStore::open(folder.path()); });
        CHECK_THAT(message, Contains(path.string()));
        return message;
    }
};

}  // namespace

TEST_CASE("safetensors: hand-written index opens") {
    ShardedFixture fixture;
    fixture.write_index(R"({"metadata": {"total_size": 8}, "weight_map": {"a": "one.safetensors", "b": "two.safetensors"}})");
    const TensorStore store = TensorStore::open(fixture.folder.path());
    CHECK(store.get("b").to_f32() == std::vector<float>{2.0f, 3.0f});
    CHECK(store.source_of("a") == (fixture.folder / "one.safetensors").string());
}

TEST_CASE("safetensors: index that is not valid JSON") {
    ShardedFixture fixture;
    CHECK_THAT(fixture.index_error<loom::format_error>(R"({"weight_map": {"a": "one.safetensors",)"),
               Contains("not valid JSON") && Contains("parse error"));
    CHECK_THAT(fixture.index_error<loom::format_error>(""), Contains("not valid JSON"));
    CHECK_THAT(fixture.index_error<loom::format_error>("[]"), Contains("JSON object"));
}

TEST_CASE("safetensors: index without weight_map") {
    ShardedFixture fixture;
    CHECK_THAT(fixture.index_error<loom::format_error>(R"({"metadata": {"total_size": 8}})"), Contains("weight_map"));
    CHECK_THAT(fixture.index_error<loom::format_error>(R"({"weight_map": ["one.safetensors"]})"),
               Contains("weight_map must be an object"));
    CHECK_THAT(fixture.index_error<loom::format_error>(R"({"weight_map": {"a": 1}})"),
               Contains("'a'") && Contains("shard file name"));
}

TEST_CASE("safetensors: index naming a shard file that does not exist") {
    ShardedFixture fixture;
    const std::string message = fixture.index_error<loom::not_found_error>(
        R"({"weight_map": {"a": "one.safetensors", "b": "model-00002-of-00002.safetensors"}})");
    CHECK_THAT(message, Contains("model-00002-of-00002.safetensors") && Contains("'b'") && Contains("does not exist"));
}

TEST_CASE("safetensors: tensor listed in the index but absent from its shard") {
    ShardedFixture fixture;
    const std::string message = fixture.index_error<loom::format_error>(
        R"({"weight_map": {"a": "one.safetensors", "b": "two.safetensors", "c": "two.safetensors"}})");
    CHECK_THAT(message, Contains("'c'") && Contains("two.safetensors") && Contains("does not contain"));
}

TEST_CASE("safetensors: tensor listed under a different shard than holds it") {
    ShardedFixture fixture;
    loom::io::write_safetensors(fixture.folder / "three.safetensors", {{"c", DType::f32, {1}, {4.0f}}});
    const std::string message = fixture.index_error<loom::format_error>(
        R"({"weight_map": {"a": "one.safetensors", "b": "three.safetensors", "c": "three.safetensors", "d": "two.safetensors"}})");
    CHECK_THAT(message, Contains("'b'") && Contains("two.safetensors"));
}

TEST_CASE("safetensors: tensor present in a shard but missing from the index") {
    ShardedFixture fixture;
    const std::string message =
        fixture.index_error<loom::format_error>(R"({"weight_map": {"b": "two.safetensors", "x": "one.safetensors"}})");
    CHECK_THAT(message, Contains("'a'") && Contains("one.safetensors") && Contains("does not list it"));
}

TEST_CASE("safetensors: same tensor stored in two shards") {
    ShardedFixture fixture;
    loom::io::write_safetensors(fixture.folder / "three.safetensors", {{"a", DType::f32, {1}, {5.0f}}});
    const std::string message = fixture.index_error<loom::format_error>(
        R"({"weight_map": {"a": "one.safetensors", "b": "two.safetensors", "c": "three.safetensors"}})");
    CHECK_THAT(message, Contains("'a'") && Contains("one.safetensors") && Contains("three.safetensors") &&
                            Contains("both"));
}

TEST_CASE("safetensors: same tensor listed twice in the index") {
    ShardedFixture fixture;
    const std::string message = fixture.index_error<loom::format_error>(
        R"({"weight_map": {"a": "one.safetensors", "b": "two.safetensors", "a": "two.safetensors"}})");
    CHECK_THAT(message, Contains("'a'") && Contains("weight_map"));
}

TEST_CASE("safetensors: shard names escaping the checkpoint folder") {
    ShardedFixture fixture;
    const std::string absolute = (fixture.folder / "one.safetensors").string();
    CHECK_THAT(fixture.index_error<loom::format_error>(R"({"weight_map": {"a": ")" + absolute + R"(", "b": "two.safetensors"}})"),
               Contains("'a'") && Contains("not a relative path inside"));
    CHECK_THAT(fixture.index_error<loom::format_error>(
                   R"({"weight_map": {"a": "../one.safetensors", "b": "two.safetensors"}})"),
               Contains("../one.safetensors") && Contains("not a relative path inside"));
    CHECK_THAT(fixture.index_error<loom::format_error>(
                   R"({"weight_map": {"a": "sub/../../one.safetensors", "b": "two.safetensors"}})"),
               Contains("not a relative path inside"));
    CHECK_THAT(fixture.index_error<loom::format_error>(R"({"weight_map": {"a": "", "b": "two.safetensors"}})"),
               Contains("not a relative path inside"));
}

// ---------------------------------------------------------------------------------------
// Lookup and opening errors

TEST_CASE("safetensors: missing files, folders and tensors") {
    ScratchFolder folder("safetensors");
    SECTION("folder with neither file") {
        write_text(folder / "pytorch_model.bin", "not ours");
        loom::io::write_safetensors(folder / "adapter.safetensors", {});
        const std::string message = message_of<loom::not_found_error>([&] { TensorStore::open(folder.path()); });
        CHECK_THAT(message, Contains(folder.path().string()) && Contains("model.safetensors.index.json") &&
                                Contains("model.safetensors") && Contains("adapter.safetensors"));
    }
    SECTION("path that does not exist") {
        const std::string message =
            message_of<loom::not_found_error>([&] { TensorStore::open(folder / "absent.safetensors"); });
        CHECK_THAT(message, Contains("absent.safetensors"));
    }
    SECTION("tensor that is not there") {
        loom::io::write_safetensors(folder / "model.safetensors", {{"present", DType::f32, {1}, {1.0f}}});
        const TensorStore store = TensorStore::open(folder.path());
        CHECK_FALSE(store.contains("absent"));
        CHECK_THAT(message_of<loom::not_found_error>([&] { store.get("lm_head.weight"); }),
                   Contains("'lm_head.weight'") && Contains((folder / "model.safetensors").string()));
        CHECK_THAT(message_of<loom::not_found_error>([&] { store.source_of("lm_head.weight"); }),
                   Contains("'lm_head.weight'"));
    }
}

// ---------------------------------------------------------------------------------------
// Writer errors

TEST_CASE("safetensors: writer rejects bad tensors before touching the disk") {
    ScratchFolder folder("safetensors");
    const fs::path path = folder / "bad.safetensors";
    CHECK_THAT(message_of<loom::argument_error>(
                   [&] { loom::io::write_safetensors(path, {{"w", DType::f32, {2, 2}, {1.0f, 2.0f, 3.0f}}}); }),
               Contains("'w'") && Contains("4 elements") && Contains("3 values"));
    CHECK_THAT(message_of<loom::argument_error>([&] {
                   loom::io::write_safetensors(path, {{"w", DType::f32, {1}, {1.0f}}, {"w", DType::f16, {1}, {1.0f}}});
               }),
               Contains("'w'") && Contains("more than once"));
    CHECK_THAT(message_of<loom::argument_error>(
                   [&] { loom::io::write_safetensors(path, {{"__metadata__", DType::f32, {1}, {1.0f}}}); }),
               Contains("__metadata__"));
    CHECK_THAT(message_of<loom::argument_error>(
                   [&] { loom::io::write_sharded_safetensors(folder.path(), {{"w", DType::f32, {1}, {1.0f}}}, 0); }),
               Contains("max_shard_bytes"));
    CHECK_FALSE(fs::exists(path));
}

TEST_CASE("safetensors: writer reports files it cannot create") {
    ScratchFolder folder("safetensors");
    const std::vector<TensorToWrite> tensors = {{"w", DType::f32, {1}, {1.0f}}};
    SECTION("parent is a regular file") {
        write_text(folder / "blocker", "a file, not a folder");
        const fs::path path = folder / "blocker" / "model.safetensors";
        const std::string message = message_of<loom::error>([&] { loom::io::write_safetensors(path, tensors); });
        CHECK_THAT(message, Contains(path.string()));
        CHECK_THAT(message_of<loom::error>([&] { loom::io::write_sharded_safetensors(folder / "blocker" / "shards", tensors, 100); }),
                   Contains("blocker"));
    }
#if defined(__unix__)
    SECTION("read-only folder") {
        if (::geteuid() == 0) {
            WARN("running as root: permissions do not stop writes, read-only check skipped");
            return;
        }
        fs::permissions(folder.path(), fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
        const fs::path path = folder / "model.safetensors";
        const std::string message = message_of<loom::error>([&] { loom::io::write_safetensors(path, tensors); });
        CHECK_THAT(message, Contains(path.string()));
    }
#endif
}

// ---------------------------------------------------------------------------------------
// Cross-check with an independent implementation: torch in Debian's python3

TEST_CASE("safetensors: python reads what Loom writes, bit for bit as torch rounds") {
    if (!python_torch_available()) {
        LOOM_REFERENCE_MISSING(LOOM_TEST_PYTHON " cannot import torch: python cross-check skipped");
        return;
    }
    ScratchFolder folder("safetensors");
    const fs::path path = folder / "for_python.safetensors";
    std::vector<float> inputs = probe_inputs();
    inputs.push_back(std::numeric_limits<float>::quiet_NaN());
    loom::io::write_safetensors(path,
                                {{"source", DType::f32, {inputs.size()}, inputs},
                                 {"as_bf16", DType::bf16, {inputs.size()}, inputs},
                                 {"as_f16", DType::f16, {inputs.size()}, inputs},
                                 {"matrix", DType::f32, {2, 3}, {0.5f, 1.0f, 1.5f, 2.0f, 2.5f, 3.0f}}},
                                {{"format", "pt"}});
    // The script parses the header by hand (no safetensors package) and compares our
    // narrowed tensors with torch's own f32 -> bf16/f16 conversion of the f32 source.
    const std::string script = R"(
import json, struct, sys, torch
data = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", data[:8])
assert (8 + n) % 8 == 0, "data section not 8-byte aligned"
header = json.loads(data[8:8 + n].decode("utf-8"))
assert header.pop("__metadata__") == {"format": "pt"}
body = data[8 + n:]
kinds = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
def load(name):
    entry = header[name]
    begin, end = entry["data_offsets"]
    return torch.frombuffer(bytearray(body[begin:end]), dtype=kinds[entry["dtype"]]).reshape(entry["shape"])
source = load("source")
for name, dtype in (("as_bf16", torch.bfloat16), ("as_f16", torch.float16)):
    mine = load(name)
    assert mine.dtype == dtype, name
    # NaN payloads are not part of the contract (torch 1.13 makes bf16 NaN 0xFFFF).
    nan = torch.isnan(source)
    assert bool(torch.isnan(mine[nan]).all()), name
    mine_bits = mine[~nan].view(torch.int16).tolist()
    torch_bits = source[~nan].to(dtype).view(torch.int16).tolist()
    assert mine_bits == torch_bits, (name, mine_bits, torch_bits)
assert load("matrix").tolist() == [[0.5, 1.0, 1.5], [2.0, 2.5, 3.0]]
position = 0
for begin, end in sorted(tuple(entry["data_offsets"]) for entry in header.values()):
    assert begin == position, (begin, position)
    position = end
assert position == len(body)
print("OK")
)";
    int status = 0;
    const std::string output = run_capturing_output(
        std::string(LOOM_TEST_PYTHON) + " -c '" + script + "' '" + path.string() + "' 2>&1", status);
    INFO(output);
    CHECK(status == 0);
    CHECK_THAT(output, Contains("OK"));
}

TEST_CASE("safetensors: Loom reads what python writes by hand") {
    if (!python_torch_available()) {
        LOOM_REFERENCE_MISSING(LOOM_TEST_PYTHON " cannot import torch: python cross-check skipped");
        return;
    }
    ScratchFolder folder("safetensors");
    const fs::path path = folder / "from_python.safetensors";
    std::string bits_list;
    for (const Probe& probe : rounding_probes()) bits_list += std::to_string(probe.input) + ", ";
    // No padding after the header, so the 2-byte tensors land at odd file offsets.
    const std::string script = R"(
import json, struct, sys, torch
bits = [)" + bits_list + R"(]
source = torch.tensor(struct.unpack("<%df" % len(bits), struct.pack("<%dI" % len(bits), *bits)), dtype=torch.float32)
tensors = [
    ("grid", "F32", torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4),
    ("as_bf16", "BF16", source.to(torch.bfloat16)),
    ("as_f16", "F16", source.to(torch.float16)),
    ("source", "F32", source),
]
header = {"__metadata__": {"format": "pt", "writer": "python"}}
blobs = []
offset = 0
for name, dtype, tensor in tensors:
    blob = (tensor.view(torch.int16) if dtype == "BF16" else tensor).numpy().tobytes()
    header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
text = json.dumps(header).encode("utf-8")
open(sys.argv[1], "wb").write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
print("OK")
)";
    int status = 0;
    const std::string output = run_capturing_output(
        std::string(LOOM_TEST_PYTHON) + " -c '" + script + "' '" + path.string() + "' 2>&1", status);
    INFO(output);
    REQUIRE(status == 0);

    const TensorStore store = TensorStore::open(path);
    CHECK(store.metadata().at("writer") == "python");
    CHECK(store.get("grid").shape == Shape{2, 3});
    CHECK(store.get("grid").to_f32() == std::vector<float>{0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f});
    const TensorView& source = store.get("source");
    const TensorView& bf16 = store.get("as_bf16");
    const TensorView& f16 = store.get("as_f16");
    CHECK(bf16.dtype == DType::bf16);
    CHECK(f16.dtype == DType::f16);
    const auto& probes = rounding_probes();
    REQUIRE(source.numel() == probes.size());
    for (std::size_t i = 0; i < probes.size(); ++i) {
        INFO("probe " << i);
        CHECK(float_bits(source, i) == probes[i].input);
        CHECK(half_bits(bf16, i) == probes[i].bf16);
        CHECK(half_bits(f16, i) == probes[i].f16);
        CHECK(half_bits(bf16, i) == loom::f32_to_bf16(source.at(i)));
        CHECK(half_bits(f16, i) == loom::f32_to_f16(source.at(i)));
    }
}
