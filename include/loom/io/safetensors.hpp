#pragma once
// Reading and writing safetensors checkpoints, single-file or sharded the way Hugging Face
// shards them (model-0000i-of-0000N.safetensors plus model.safetensors.index.json).
//
// Each file is read into memory once (or memory-mapped, FileAccess::map) and tensors are
// never copied after that: a TensorView points into the file's image (or the caller's
// buffer), so a bf16 checkpoint costs its file size and no conversion.
// Validation is deliberately as strict as the reference Rust implementation: a checkpoint
// that is truncated, overlapping or padded with stray bytes is rejected with a message
// naming the file, the tensor and the offset, instead of yielding garbage weights later.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <concepts>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/file_image.hpp"
#include "loom/core/tensor.hpp"

namespace loom::io {

struct SafetensorsImage {
    std::map<std::string, TensorView> tensors;
    std::map<std::string, std::string> metadata;
};

// A tensor to write, given as f32 values; narrowing to f16/bf16 rounds to nearest even.
struct TensorToWrite {
    std::string name;
    DType dtype = DType::f32;
    Shape shape;
    std::vector<float> values;
};

namespace detail {

using Json = nlohmann::json;

inline constexpr std::string_view index_file_name = "model.safetensors.index.json";
inline constexpr std::string_view single_file_name = "model.safetensors";
inline constexpr std::string_view metadata_key = "__metadata__";

inline std::string in_quotes(std::string_view text) {
    return "'" + std::string(text) + "'";
}

inline std::uint64_t read_u64_le(const std::byte* bytes) noexcept {
    std::uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | std::uint64_t(bytes[i]);
    return value;
}

// Where the data section starts: after the 8-byte header length and the header. Used only to
// place the tensors in memory (see WeightBuffer), so a length the parser will refuse does no
// harm here.
inline std::size_t data_section_offset(const std::byte* bytes, std::size_t size) noexcept {
    return size < 8 ? 0 : std::size_t(8 + read_u64_le(bytes));
}

inline std::size_t data_section_offset(const std::filesystem::path& path) {
    std::byte prefix[8] = {};
    std::ifstream file(path, std::ios::binary);
    file.read(reinterpret_cast<char*>(prefix), sizeof prefix);
    return data_section_offset(prefix, std::size_t(file.gcount()));
}

inline void write_u64_le(std::byte* out, std::uint64_t value) noexcept {
    for (int i = 0; i < 8; ++i) out[i] = std::byte((value >> (8 * i)) & 0xFFu);
}

// The product of the dimensions, or false if it does not fit in size_t. A zero
// dimension makes the tensor empty however large the others are.
inline bool checked_numel(const Shape& shape, std::size_t& numel) noexcept {
    if (std::find(shape.begin(), shape.end(), std::size_t(0)) != shape.end()) {
        numel = 0;
        return true;
    }
    std::size_t count = 1;
    for (std::size_t dim : shape) {
        if (count > std::numeric_limits<std::size_t>::max() / dim) return false;
        count *= dim;
    }
    numel = count;
    return true;
}

inline bool checked_nbytes(const Shape& shape, DType dtype, std::size_t& nbytes) noexcept {
    std::size_t numel = 0;
    if (!checked_numel(shape, numel)) return false;
    if (numel > std::numeric_limits<std::size_t>::max() / dtype_size(dtype)) return false;
    nbytes = numel * dtype_size(dtype);
    return true;
}

// Maps a safetensors dtype string to a Loom dtype. Spellings that safetensors defines
// but Loom cannot compute with are told apart from typos, so the user knows whether to
// convert the checkpoint or fix the file.
inline DType parse_dtype(const std::string& text, const std::string& where) {
    if (text == "F32") return DType::f32;
    if (text == "F16") return DType::f16;
    if (text == "BF16") return DType::bf16;
    static const std::set<std::string, std::less<>> other_safetensors_dtypes = {
        "BOOL", "U8",      "I8",      "U16",     "I16",     "U32",     "I32", "U64",
        "I64",  "F64",     "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
        "C64"};
    if (other_safetensors_dtypes.count(text)) {
        throw unsupported_error(where + ": dtype " + text +
                                " is not supported by Loom (supported: F32, F16, BF16); "
                                "convert the checkpoint to one of these");
    }
    throw format_error(where + ": unknown dtype \"" + text +
                       "\" (not a safetensors dtype; Loom supports F32, F16, BF16)");
}

// Reads a JSON number that must be a non-negative integer fitting in size_t.
inline std::size_t json_to_size(const Json& value, const std::string& where) {
    if (value.is_number_unsigned()) {
        const std::uint64_t number = value.get<std::uint64_t>();
        if (number > std::numeric_limits<std::size_t>::max()) {
            throw format_error(where + " = " + std::to_string(number) +
                               " exceeds the addressable size on this platform");
        }
        return std::size_t(number);
    }
    if (value.is_number_integer()) {
        throw format_error(where + " must be a non-negative integer, got " + value.dump());
    }
    if (value.is_number_float()) {
        throw format_error(where + " must be an integer, got " + value.dump());
    }
    throw format_error(where + " must be a non-negative integer, got a JSON " +
                       std::string(value.type_name()));
}

// Parses JSON text, rejecting repeated keys in any object. nlohmann keeps the last of
// duplicated keys silently; for a checkpoint that would mean one of two tensors with the
// same name is quietly dropped. `top_level_noun` names what the top-level keys are.
inline Json parse_json_strictly(const char* first, const char* last, const std::string& label,
                                std::string_view document, std::string_view top_level_noun,
                                std::size_t file_offset) {
    struct Frame {
        std::set<std::string> keys;
        std::string last_key;
    };
    std::vector<Frame> frames;
    std::string duplicate_key;
    std::string duplicate_parent;
    bool found_duplicate = false;
    std::size_t duplicate_depth = 0;
    Json::parser_callback_t watch_keys = [&](int, Json::parse_event_t event, Json& parsed) {
        switch (event) {
            case Json::parse_event_t::object_start: frames.emplace_back(); break;
            case Json::parse_event_t::object_end:
                if (!frames.empty()) frames.pop_back();
                break;
            case Json::parse_event_t::key: {
                if (frames.empty() || !parsed.is_string()) break;
                Frame& frame = frames.back();
                frame.last_key = parsed.get<std::string>();
                if (!frame.keys.insert(frame.last_key).second && !found_duplicate) {
                    found_duplicate = true;
                    duplicate_key = frame.last_key;
                    duplicate_depth = frames.size();
                    if (frames.size() >= 2) duplicate_parent = frames[frames.size() - 2].last_key;
                }
                break;
            }
            default: break;
        }
        return true;
    };
    Json value;
    try {
        value = Json::parse(first, last, watch_keys);
    } catch (const Json::parse_error& problem) {
        const std::size_t byte = problem.byte > 0 ? problem.byte - 1 : 0;
        throw format_error(label + ": " + std::string(document) + " is not valid JSON (near " + std::string(document) +
                           " byte " + std::to_string(byte) + ", file offset " +
                           std::to_string(file_offset + byte) + "): " + problem.what());
    }
    if (found_duplicate) {
        if (duplicate_depth == 1) {
            throw format_error(label + ": " + std::string(document) + " lists " +
                               std::string(top_level_noun) + " " + in_quotes(duplicate_key) +
                               " more than once");
        }
        throw format_error(label + ": " + std::string(document) + " repeats key " +
                           in_quotes(duplicate_key) + " inside " + in_quotes(duplicate_parent));
    }
    return value;
}

inline const Json& required_field(const Json& entry, const char* field, const std::string& where) {
    const auto found = entry.find(field);
    if (found == entry.end()) {
        throw format_error(where + ": missing \"" + field + "\" (each tensor needs dtype, shape and data_offsets)");
    }
    return *found;
}

inline std::map<std::string, std::string> parse_metadata(const Json& value, const std::string& label) {
    if (!value.is_object()) {
        throw format_error(label + ": __metadata__ must be a JSON object of strings, got a JSON " +
                           std::string(value.type_name()));
    }
    std::map<std::string, std::string> metadata;
    for (const auto& [key, item] : value.items()) {
        if (!item.is_string()) {
            throw format_error(label + ": __metadata__ value for key " + in_quotes(key) +
                               " must be a string, got " + item.dump());
        }
        metadata.emplace(key, item.get<std::string>());
    }
    return metadata;
}

struct Placement {
    std::size_t begin = 0;
    std::size_t end = 0;
    const std::string* name = nullptr;
};

// Tensors sorted by offset must tile the data section exactly: no overlap (two names
// aliasing the same weights is a corrupt writer) and no gap (bytes nobody owns are how
// a truncated or spliced file usually shows).
inline void check_tiling(std::vector<Placement> placements, std::size_t data_size,
                         std::size_t data_start, const std::string& label) {
    std::sort(placements.begin(), placements.end(), [](const Placement& a, const Placement& b) {
        return std::tie(a.begin, a.end, *a.name) < std::tie(b.begin, b.end, *b.name);
    });
    std::size_t covered = 0;
    const Placement* previous = nullptr;
    for (const Placement& placement : placements) {
        if (placement.begin < covered) {
            throw format_error(label + ": tensor " + in_quotes(*placement.name) + " at data_offsets [" +
                               std::to_string(placement.begin) + ", " + std::to_string(placement.end) +
                               "] overlaps tensor " + in_quotes(*previous->name) + " at [" +
                               std::to_string(previous->begin) + ", " + std::to_string(previous->end) +
                               "] (file offset " + std::to_string(data_start + placement.begin) + ")");
        }
        if (placement.begin > covered) {
            throw format_error(label + ": data section bytes [" + std::to_string(covered) + ", " +
                               std::to_string(placement.begin) + ") belong to no tensor (gap before tensor " +
                               in_quotes(*placement.name) + ", file offset " +
                               std::to_string(data_start + covered) + ")");
        }
        covered = placement.end;
        previous = &placement;
    }
    if (covered != data_size) {
        throw format_error(label + ": data section has " + std::to_string(data_size) +
                           " bytes but tensors cover only the first " + std::to_string(covered) + "; " +
                           std::to_string(data_size - covered) + " trailing bytes from file offset " +
                           std::to_string(data_start + covered) + " belong to no tensor");
    }
}

}  // namespace detail

// Parses one safetensors image held in memory; the returned views point into `bytes`.
inline SafetensorsImage parse_safetensors(const std::byte* bytes, std::size_t size, const std::string& label) {
    if (size < 8) {
        throw format_error(label + ": file is " + std::to_string(size) +
                           " bytes, shorter than the 8-byte header length that starts a safetensors file");
    }
    if (bytes == nullptr) throw argument_error(label + ": null buffer of " + std::to_string(size) + " bytes");
    const std::uint64_t header_length = detail::read_u64_le(bytes);
    const std::uint64_t after_prefix = size - 8;
    if (header_length > after_prefix) {
        throw format_error(label + ": header length " + std::to_string(header_length) +
                           " (first 8 bytes) exceeds the " + std::to_string(after_prefix) +
                           " bytes that follow it (file size " + std::to_string(size) +
                           "); the file is truncated or not safetensors");
    }
    const std::size_t data_start = 8 + std::size_t(header_length);
    const std::size_t data_size = size - data_start;
    const char* header_text = reinterpret_cast<const char*>(bytes + 8);
    const detail::Json header = detail::parse_json_strictly(
        header_text, header_text + header_length, label, "header", "tensor", 8);
    if (!header.is_object()) {
        throw format_error(label + ": header must be a JSON object mapping tensor names to entries, got a JSON " +
                           std::string(header.type_name()));
    }

    SafetensorsImage image;
    std::vector<detail::Placement> placements;
    const std::byte* data = bytes + data_start;
    for (const auto& [name, entry] : header.items()) {
        if (name == detail::metadata_key) {
            image.metadata = detail::parse_metadata(entry, label);
            continue;
        }
        const std::string where = label + ": tensor " + detail::in_quotes(name);
        if (!entry.is_object()) {
            throw format_error(where + ": entry must be a JSON object with dtype, shape and data_offsets, got " +
                               entry.dump());
        }
        const detail::Json& dtype_field = detail::required_field(entry, "dtype", where);
        const detail::Json& shape_field = detail::required_field(entry, "shape", where);
        const detail::Json& offsets_field = detail::required_field(entry, "data_offsets", where);
        if (!dtype_field.is_string()) {
            throw format_error(where + ": dtype must be a string, got " + dtype_field.dump());
        }
        const DType dtype = detail::parse_dtype(dtype_field.get<std::string>(), where);
        if (!shape_field.is_array()) {
            throw format_error(where + ": shape must be an array of integers, got " + shape_field.dump());
        }
        Shape shape;
        for (std::size_t i = 0; i < shape_field.size(); ++i) {
            shape.push_back(detail::json_to_size(shape_field[i], where + ": shape[" + std::to_string(i) + "]"));
        }
        if (!offsets_field.is_array() || offsets_field.size() != 2) {
            throw format_error(where + ": data_offsets must be an array [begin, end], got " + offsets_field.dump());
        }
        const std::size_t begin = detail::json_to_size(offsets_field[0], where + ": data_offsets[0]");
        const std::size_t end = detail::json_to_size(offsets_field[1], where + ": data_offsets[1]");
        std::size_t expected_bytes = 0;
        if (!detail::checked_nbytes(shape, dtype, expected_bytes)) {
            throw format_error(where + ": shape " + shape_to_string(shape) + " of " +
                               std::string(dtype_name(dtype)) + " has more bytes than size_t can count");
        }
        const std::string offsets_text = "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
        if (begin > end) {
            throw format_error(where + ": " + offsets_text + " begins after it ends (file offset " +
                               std::to_string(data_start + begin) + ")");
        }
        if (end > data_size) {
            throw format_error(where + ": " + offsets_text + " ends beyond the data section of " +
                               std::to_string(data_size) + " bytes (would end at file offset " +
                               std::to_string(data_start + end) + ", file size " + std::to_string(size) + ")");
        }
        if (end - begin != expected_bytes) {
            throw format_error(where + ": " + offsets_text + " span " + std::to_string(end - begin) +
                               " bytes but shape " + shape_to_string(shape) + " of " +
                               std::string(dtype_name(dtype)) + " needs " + std::to_string(expected_bytes) +
                               " (file offset " + std::to_string(data_start + begin) + ")");
        }
        const auto inserted = image.tensors.emplace(name, TensorView{dtype, std::move(shape), data + begin});
        placements.push_back({begin, end, &inserted.first->first});
    }
    detail::check_tiling(std::move(placements), data_size, data_start, label);
    return image;
}

// A set of named tensors backed by one or more files (read or mapped) or by caller buffers.
class TensorStore {
public:
    TensorStore() = default;

    // `path` is a .safetensors file, a model.safetensors.index.json, or a folder holding
    // one of those two (the index wins if both exist, as a sharded save may leave an old
    // single file behind).
    static TensorStore open(const std::filesystem::path& path, FileAccess access = FileAccess::read) {
        namespace fs = std::filesystem;
        std::error_code status;
        if (fs::is_directory(path, status)) {
            const fs::path index = path / detail::index_file_name;
            if (fs::exists(index, status)) return open_index(index, access);
            const fs::path single = path / detail::single_file_name;
            if (fs::exists(single, status)) return open_file(single, access);
            throw not_found_error(path.string() + ": folder has neither " + std::string(detail::index_file_name) +
                                  " nor " + std::string(detail::single_file_name) + describe_candidates(path));
        }
        if (!fs::exists(path, status)) {
            throw not_found_error(path.string() + ": no such file or folder (expected a .safetensors file, a " +
                                  std::string(detail::index_file_name) + " or a folder holding one)");
        }
        if (path.extension() == ".json") return open_index(path, access);
        return open_file(path, access);
    }

    // Views into a caller's buffer, which must outlive the store (embedding, browser build).
    static TensorStore from_buffer(const std::byte* bytes, std::size_t size, std::string label) {
        if (bytes == nullptr && size > 0) throw argument_error(label + ": null buffer of " + std::to_string(size) + " bytes");
        TensorStore store;
        store.label_ = label;
        Backing backing;
        backing.label = std::move(label);
        backing.data = bytes;
        backing.size = size;
        store.add_image(std::move(backing));
        return store;
    }

    // A copy of the bytes in a WeightBuffer, where weights get huge pages as read files do.
    static TensorStore from_bytes(const std::vector<std::byte>& bytes, std::string label) {
        TensorStore store;
        store.label_ = label;
        Backing backing;
        backing.label = std::move(label);
        backing.owned = WeightBuffer(bytes.size(), backing.label, detail::data_section_offset(bytes.data(), bytes.size()));
        if (!bytes.empty()) std::memcpy(backing.owned.data(), bytes.data(), bytes.size());
        backing.owned.seal();
        backing.data = backing.owned.data();  // a moved buffer keeps its address, so views stay valid
        backing.size = backing.owned.size();
        store.add_image(std::move(backing));
        return store;
    }

    bool contains(const std::string& name) const { return entries_.count(name) != 0; }

    const TensorView& get(const std::string& name) const {
        const auto found = entries_.find(name);
        if (found == entries_.end()) {
            throw not_found_error(label_ + ": no tensor " + detail::in_quotes(name) + " (the checkpoint has " +
                                  std::to_string(entries_.size()) + " tensors)");
        }
        return found->second.view;
    }

    std::vector<std::string> names() const {
        std::vector<std::string> result;
        result.reserve(entries_.size());
        for (const auto& entry : entries_) result.push_back(entry.first);
        return result;
    }

    // The file (or buffer label) the tensor came from.
    const std::string& source_of(const std::string& name) const {
        const auto found = entries_.find(name);
        if (found == entries_.end()) {
            throw not_found_error(label_ + ": no tensor " + detail::in_quotes(name));
        }
        return backings_[found->second.backing].label;
    }

    // For a sharded checkpoint, the union of the shards' metadata (first shard wins).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    // The bytes of every file and buffer behind the store, headers included.
    std::size_t backing_bytes() const {
        std::size_t total = 0;
        for (const Backing& backing : backings_) total += backing.size;
        return total;
    }

    // What the store was opened from: a file, an index file or a buffer label.
    const std::string& label() const { return label_; }

private:
    struct Backing {
        std::string label;
        FileImage file;
        WeightBuffer owned;
        const std::byte* data = nullptr;
        std::size_t size = 0;
    };
    struct Entry {
        TensorView view;
        std::size_t backing = 0;
    };

    static std::string describe_candidates(const std::filesystem::path& folder) {
        std::vector<std::string> found;
        std::error_code status;
        for (std::filesystem::directory_iterator it(folder, status), end; !status && it != end; it.increment(status)) {
            const std::string file = it->path().filename().string();
            if (file.ends_with(".safetensors") || file.ends_with(".index.json")) {
                found.push_back(file);
            }
        }
        if (found.empty()) return " (and no other .safetensors files)";
        std::sort(found.begin(), found.end());
        std::string text = " (it does contain:";
        for (std::size_t i = 0; i < found.size() && i < 5; ++i) text += " " + found[i];
        if (found.size() > 5) text += " ...";
        return text + ")";
    }

    static Backing load_file(const std::filesystem::path& path, FileAccess access) {
        Backing backing;
        backing.label = path.string();
        backing.file = FileImage(path, access, detail::data_section_offset(path));
        backing.data = backing.file.data();
        backing.size = backing.file.size();
        return backing;
    }

    static TensorStore open_file(const std::filesystem::path& path, FileAccess access) {
        TensorStore store;
        store.label_ = path.string();
        store.add_image(load_file(path, access));
        return store;
    }

    // Parses a backing and takes its tensors; returns the names it added.
    std::vector<std::string> add_image(Backing backing) {
        SafetensorsImage image = parse_safetensors(backing.data, backing.size, backing.label);
        const std::size_t index = backings_.size();
        backings_.push_back(std::move(backing));
        std::vector<std::string> added;
        for (auto& [name, view] : image.tensors) {
            const auto inserted = entries_.emplace(name, Entry{std::move(view), index});
            if (!inserted.second) {
                throw format_error(label_ + ": tensor " + detail::in_quotes(name) + " is stored in both " +
                                   backings_[inserted.first->second.backing].label + " and " +
                                   backings_[index].label);
            }
            added.push_back(name);
        }
        for (auto& [key, value] : image.metadata) metadata_.emplace(key, std::move(value));
        return added;
    }

    // Shard names come from a downloaded file; one reaching outside the checkpoint folder
    // would let a hostile index make us read arbitrary files.
    static void check_shard_name(const std::string& shard, const std::string& tensor, const std::string& label) {
        const std::filesystem::path relative(shard);
        bool escapes = shard.empty() || relative.is_absolute() || relative.has_root_path();
        for (const auto& part : relative) escapes = escapes || part == "..";
        if (escapes) {
            throw format_error(label + ": weight_map entry for tensor " + detail::in_quotes(tensor) + " names shard " +
                               detail::in_quotes(shard) + ", which is not a relative path inside the checkpoint folder");
        }
    }

    static TensorStore open_index(const std::filesystem::path& index_path, FileAccess access) {
        const std::string label = index_path.string();
        const FileImage index_file(index_path);
        // An empty file maps to no address; parse an empty range from a real pointer instead.
        const char* text = index_file.size() ? reinterpret_cast<const char*>(index_file.data()) : "";
        const detail::Json index =
            detail::parse_json_strictly(text, text + index_file.size(), label, "index", "key", 0);
        if (!index.is_object()) {
            throw format_error(label + ": index must be a JSON object with a weight_map, got a JSON " +
                               std::string(index.type_name()));
        }
        const auto weight_map = index.find("weight_map");
        if (weight_map == index.end()) throw format_error(label + ": index has no \"weight_map\"");
        if (!weight_map->is_object()) {
            throw format_error(label + ": weight_map must be an object mapping tensor names to shard files, got a JSON " +
                               std::string(weight_map->type_name()));
        }

        std::map<std::string, std::string> shard_of;   // tensor -> shard file name
        std::map<std::string, std::string> first_user;  // shard file name -> a tensor naming it
        for (const auto& [tensor, shard] : weight_map->items()) {
            if (!shard.is_string()) {
                throw format_error(label + ": weight_map entry for tensor " + detail::in_quotes(tensor) +
                                   " must be a shard file name string, got " + shard.dump());
            }
            const std::string file = shard.get<std::string>();
            check_shard_name(file, tensor, label);
            shard_of.emplace(tensor, file);
            first_user.emplace(file, tensor);
        }

        const std::filesystem::path folder = index_path.parent_path();
        TensorStore store;
        store.label_ = label;
        std::map<std::string, std::string> backing_to_shard;  // backing label -> shard file name
        for (const auto& [file, tensor] : first_user) {
            const std::filesystem::path shard_path = folder / file;
            std::error_code status;
            if (!std::filesystem::is_regular_file(shard_path, status)) {
                throw not_found_error(label + ": shard " + detail::in_quotes(file) + " (listed for tensor " +
                                      detail::in_quotes(tensor) + ") does not exist at " + shard_path.string());
            }
            Backing backing = load_file(shard_path, access);
            const std::string shard_label = backing.label;
            for (const std::string& name : store.add_image(std::move(backing))) {
                const auto listed = shard_of.find(name);
                if (listed == shard_of.end()) {
                    throw format_error(label + ": tensor " + detail::in_quotes(name) + " is stored in shard " +
                                       shard_label + " but the index's weight_map does not list it");
                }
            }
            backing_to_shard.emplace(shard_label, file);
        }
        for (const auto& [tensor, file] : shard_of) {
            const auto found = store.entries_.find(tensor);
            if (found == store.entries_.end()) {
                throw format_error(label + ": tensor " + detail::in_quotes(tensor) + " is listed in the weight_map under shard " +
                                   detail::in_quotes(file) + " but that shard does not contain it");
            }
            const std::string& actual = backing_to_shard.at(store.backings_[found->second.backing].label);
            if (actual != file) {
                throw format_error(label + ": tensor " + detail::in_quotes(tensor) + " is listed under shard " +
                                   detail::in_quotes(file) + " but is stored in shard " + detail::in_quotes(actual));
            }
        }
        return store;
    }

    std::string label_;
    std::vector<Backing> backings_;
    std::map<std::string, Entry> entries_;
    std::map<std::string, std::string> metadata_;
};

namespace detail {

using NamedView = std::pair<const std::string, TensorView>;

inline const std::string& name_of(const TensorToWrite& tensor) { return tensor.name; }
inline const std::string& name_of(const NamedView& tensor) { return tensor.first; }
inline DType dtype_of(const TensorToWrite& tensor) { return tensor.dtype; }
inline DType dtype_of(const NamedView& tensor) { return tensor.second.dtype; }
inline const Shape& shape_of(const TensorToWrite& tensor) { return tensor.shape; }
inline const Shape& shape_of(const NamedView& tensor) { return tensor.second.shape; }

// Encodes f32 values as little-endian `dtype` bytes regardless of the host's byte order.
inline void encode_values(const TensorToWrite& tensor, std::byte* out) {
    for (std::size_t i = 0; i < tensor.values.size(); ++i) {
        if (tensor.dtype == DType::f32) {
            const std::uint32_t bits = f32_to_bits(tensor.values[i]);
            for (int b = 0; b < 4; ++b) out[4 * i + b] = std::byte((bits >> (8 * b)) & 0xFFu);
        } else {
            const std::uint16_t half =
                tensor.dtype == DType::bf16 ? f32_to_bf16(tensor.values[i]) : f32_to_f16(tensor.values[i]);
            out[2 * i] = std::byte(half & 0xFFu);
            out[2 * i + 1] = std::byte(half >> 8);
        }
    }
}

// What goes into a file before any tensor byte: the tensors in name order, their sizes,
// and the length-prefixed header padded so the data section starts 8-byte aligned.
template <class Tensor>
struct Layout {
    std::vector<const Tensor*> tensors;
    std::vector<std::size_t> sizes;
    std::string prefix_and_header;
    std::size_t data_size = 0;
};

template <class Tensor>
Layout<Tensor> plan_layout(std::vector<const Tensor*> tensors, const std::map<std::string, std::string>& metadata) {
    std::sort(tensors.begin(), tensors.end(),
              [](const Tensor* a, const Tensor* b) { return name_of(*a) < name_of(*b); });
    Layout<Tensor> layout;
    Json header = Json::object();
    if (!metadata.empty()) header[std::string(metadata_key)] = metadata;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        const Tensor& tensor = *tensors[i];
        const std::string& name = name_of(tensor);
        if (i > 0 && name == name_of(*tensors[i - 1])) {
            throw argument_error("cannot write safetensors: tensor " + in_quotes(name) + " given more than once");
        }
        if (name == metadata_key) {
            throw argument_error("cannot write safetensors: a tensor may not be named __metadata__");
        }
        std::size_t nbytes = 0;
        if (!checked_nbytes(shape_of(tensor), dtype_of(tensor), nbytes)) {
            throw argument_error("cannot write safetensors: tensor " + in_quotes(name) + " shape " +
                                 shape_to_string(shape_of(tensor)) + " has more elements than size_t can count");
        }
        if constexpr (std::is_same_v<Tensor, TensorToWrite>) {
            if (tensor.values.size() != nbytes / dtype_size(tensor.dtype)) {
                throw argument_error("cannot write safetensors: tensor " + in_quotes(name) + " has shape " +
                                     shape_to_string(tensor.shape) + " (" + std::to_string(nbytes / dtype_size(tensor.dtype)) +
                                     " elements) but " + std::to_string(tensor.values.size()) + " values");
            }
        } else {
            if (tensor.second.data == nullptr && nbytes > 0) {
                throw argument_error("cannot write safetensors: tensor " + in_quotes(name) + " has no data");
            }
        }
        header[name] = {{"dtype", std::string(dtype_name(dtype_of(tensor)))},
                        {"shape", shape_of(tensor)},
                        {"data_offsets", {layout.data_size, layout.data_size + nbytes}}};
        layout.sizes.push_back(nbytes);
        layout.data_size += nbytes;
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const Json::exception& problem) {
        throw argument_error(std::string("cannot write safetensors: a tensor name or metadata string is not valid UTF-8: ") +
                             problem.what());
    }
    text.append((8 - (8 + text.size()) % 8) % 8, ' ');
    layout.prefix_and_header.assign(8, '\0');
    write_u64_le(reinterpret_cast<std::byte*>(layout.prefix_and_header.data()), text.size());
    layout.prefix_and_header += text;
    layout.tensors = std::move(tensors);
    return layout;
}

template <class Tensor>
void emit_tensor(const Tensor& tensor, std::size_t nbytes, std::byte* out) {
    if constexpr (std::is_same_v<Tensor, TensorToWrite>) {
        encode_values(tensor, out);
    } else if (nbytes > 0) {
        std::memcpy(out, tensor.second.data, nbytes);
    }
}

template <class Tensor>
std::vector<std::byte> serialize_layout(const Layout<Tensor>& layout) {
    std::vector<std::byte> bytes(layout.prefix_and_header.size() + layout.data_size);
    std::memcpy(bytes.data(), layout.prefix_and_header.data(), layout.prefix_and_header.size());
    std::size_t offset = layout.prefix_and_header.size();
    for (std::size_t i = 0; i < layout.tensors.size(); ++i) {
        emit_tensor(*layout.tensors[i], layout.sizes[i], bytes.data() + offset);
        offset += layout.sizes[i];
    }
    return bytes;
}

// Writes through a sibling temporary file renamed into place, so a crash or full disk
// never leaves a truncated checkpoint under the final name.
inline void write_file(const std::filesystem::path& path, const std::function<void(std::ostream&)>& fill) {
    std::filesystem::path temporary = path;
    temporary += ".partial";
    const auto fail = [&](const std::string& what, int code) {
        std::error_code ignored;
        std::filesystem::remove(temporary, ignored);
        throw error(path.string() + ": " + what + (code ? std::string(": ") + std::strerror(code) : std::string()));
    };
    {
        errno = 0;
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        if (!out) fail("cannot open for writing (" + temporary.string() + ")", errno);
        try {
            fill(out);
        } catch (...) {
            out.close();
            std::error_code ignored;
            std::filesystem::remove(temporary, ignored);
            throw;
        }
        errno = 0;
        out.flush();
        if (!out) fail("write failed", errno);
        out.close();
        if (!out) fail("closing after writing failed", errno);
    }
    std::error_code status;
    std::filesystem::rename(temporary, path, status);
    if (status) fail("cannot move " + temporary.string() + " into place: " + status.message(), 0);
}

template <class Tensor>
void write_layout(const std::filesystem::path& path, const Layout<Tensor>& layout) {
    write_file(path, [&](std::ostream& out) {
        out.write(layout.prefix_and_header.data(), std::streamsize(layout.prefix_and_header.size()));
        std::vector<std::byte> buffer;
        for (std::size_t i = 0; i < layout.tensors.size() && out; ++i) {
            const Tensor& tensor = *layout.tensors[i];
            const char* bytes = nullptr;
            if constexpr (std::is_same_v<Tensor, TensorToWrite>) {
                buffer.resize(layout.sizes[i]);
                encode_values(tensor, buffer.data());
                bytes = reinterpret_cast<const char*>(buffer.data());
            } else {
                bytes = reinterpret_cast<const char*>(tensor.second.data);
            }
            if (layout.sizes[i] > 0) out.write(bytes, std::streamsize(layout.sizes[i]));
        }
    });
}

template <class Container>
auto pointers_to(const Container& tensors) {
    std::vector<const typename Container::value_type*> pointers;
    pointers.reserve(tensors.size());
    for (const auto& tensor : tensors) pointers.push_back(&tensor);
    return pointers;
}

// Hugging Face's scheme: greedily fill each shard in name order until the next tensor
// would exceed the limit; a tensor larger than the limit gets a shard of its own.
template <class Container>
void write_shards(const std::filesystem::path& folder, const Container& tensors, std::size_t max_shard_bytes,
                  const std::map<std::string, std::string>& metadata) {
    using Tensor = typename Container::value_type;
    if (max_shard_bytes == 0) throw argument_error("write_sharded_safetensors: max_shard_bytes must be positive");
    // Validates every tensor (names, sizes) before anything touches the disk.
    const Layout<Tensor> whole = plan_layout(pointers_to(tensors), {});
    std::vector<std::vector<const Tensor*>> shards;
    std::size_t current = 0;
    for (std::size_t i = 0; i < whole.tensors.size(); ++i) {
        if (shards.empty() || (current > 0 && current + whole.sizes[i] > max_shard_bytes)) {
            shards.emplace_back();
            current = 0;
        }
        shards.back().push_back(whole.tensors[i]);
        current += whole.sizes[i];
    }
    if (shards.empty()) shards.emplace_back();

    std::error_code status;
    std::filesystem::create_directories(folder, status);
    if (status) throw error(folder.string() + ": cannot create folder: " + status.message());

    Json weight_map = Json::object();
    const auto number = [](std::size_t value) {
        char text[32];
        std::snprintf(text, sizeof text, "%05zu", value);
        return std::string(text);
    };
    for (std::size_t s = 0; s < shards.size(); ++s) {
        const std::string file = "model-" + number(s + 1) + "-of-" + number(shards.size()) + ".safetensors";
        for (const Tensor* tensor : shards[s]) weight_map[name_of(*tensor)] = file;
        write_layout(folder / file, plan_layout(shards[s], metadata));
    }
    const Json index = {{"metadata", {{"total_size", whole.data_size}}}, {"weight_map", weight_map}};
    const std::string text = index.dump(2) + "\n";
    write_file(folder / std::string(index_file_name),
               [&](std::ostream& out) { out.write(text.data(), std::streamsize(text.size())); });
}

}  // namespace detail

// Tensors are stored in name order, contiguous, after a header padded to 8-byte alignment.
inline std::vector<std::byte> serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                                    const std::map<std::string, std::string>& metadata = {}) {
    return detail::serialize_layout(detail::plan_layout(detail::pointers_to(tensors), metadata));
}

// Views of already-encoded tensors (e.g. of another checkpoint), written byte for byte.
// The view overloads are templates only so that a bare `{}` argument is not ambiguous.
template <class Views>
    requires std::same_as<Views, std::map<std::string, TensorView>>
std::vector<std::byte> serialize_safetensors(const Views& tensors, const std::map<std::string, std::string>& metadata = {}) {
    return detail::serialize_layout(detail::plan_layout(detail::pointers_to(tensors), metadata));
}

inline void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    detail::write_layout(path, detail::plan_layout(detail::pointers_to(tensors), metadata));
}

template <class Views>
    requires std::same_as<Views, std::map<std::string, TensorView>>
void write_safetensors(const std::filesystem::path& path, const Views& tensors,
                       const std::map<std::string, std::string>& metadata = {}) {
    detail::write_layout(path, detail::plan_layout(detail::pointers_to(tensors), metadata));
}

// Writes model-0000i-of-0000N.safetensors shards of at most `max_shard_bytes` tensor bytes
// each (a larger single tensor gets its own shard) and model.safetensors.index.json, into
// `folder` (created if missing). The index is written last, so it only ever lists complete
// shards. `metadata` goes into every shard's header.
inline void write_sharded_safetensors(const std::filesystem::path& folder, const std::vector<TensorToWrite>& tensors,
                                      std::size_t max_shard_bytes,
                                      const std::map<std::string, std::string>& metadata = {}) {
    detail::write_shards(folder, tensors, max_shard_bytes, metadata);
}

template <class Views>
    requires std::same_as<Views, std::map<std::string, TensorView>>
void write_sharded_safetensors(const std::filesystem::path& folder, const Views& tensors, std::size_t max_shard_bytes,
                               const std::map<std::string, std::string>& metadata = {}) {
    detail::write_shards(folder, tensors, max_shard_bytes, metadata);
}

}  // namespace loom::io
