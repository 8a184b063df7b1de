#pragma once
// NumPy .npy files (format versions 1, 2 and 3): what PyTorch-side dumps are written in.
// Little-endian f32, f16 and f64 arrays in C order are read (as f32); anything else is an
// error naming the file and what is wrong. Written files are version 1.0, '<f4', C order.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/file_image.hpp"
#include "loom/core/tensor.hpp"

namespace loom::io {

struct NpyArray {
    Shape shape;
    std::vector<float> values;
    std::string descr;  // the file's dtype, e.g. "<f4"
};

namespace detail {

inline constexpr std::string_view npy_magic = "\x93NUMPY";

// A value of the header dictionary: the text after `'key':` up to the value's end.
inline std::string_view npy_header_value(std::string_view header, std::string_view key, const std::string& label) {
    for (const char quote : {'\'', '"'}) {
        const std::string quoted = std::string(1, quote) + std::string(key) + quote;
        const std::size_t at = header.find(quoted);
        if (at == std::string_view::npos) continue;
        std::size_t start = header.find(':', at + quoted.size());
        if (start == std::string_view::npos) break;
        ++start;
        while (start < header.size() && header[start] == ' ') ++start;
        std::size_t end = start;
        if (end < header.size() && header[end] == '(') {
            end = header.find(')', end);
            if (end == std::string_view::npos) break;
            return header.substr(start, end + 1 - start);
        }
        if (end < header.size() && (header[end] == '\'' || header[end] == '"')) {
            const std::size_t close = header.find(header[end], end + 1);
            if (close == std::string_view::npos) break;
            return header.substr(start, close + 1 - start);
        }
        while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
        return header.substr(start, end - start);
    }
    throw format_error(label + ": .npy header has no valid '" + std::string(key) + "' entry: " + std::string(header));
}

inline Shape parse_npy_shape(std::string_view text, const std::string& label) {
    if (text.size() < 2 || text.front() != '(' || text.back() != ')') {
        throw format_error(label + ": .npy shape is not a tuple: " + std::string(text));
    }
    Shape shape;
    std::size_t value = 0;
    bool in_number = false;
    for (char c : text.substr(1, text.size() - 2)) {
        if (c >= '0' && c <= '9') {
            if (value > std::numeric_limits<std::size_t>::max() / 16) throw format_error(label + ": .npy shape dimension too large: " + std::string(text));
            value = value * 10 + std::size_t(c - '0');
            in_number = true;
        } else if (c == ',' || c == ' ' || c == 'L') {
            if (c == ',' && in_number) {
                shape.push_back(value);
                value = 0;
                in_number = false;
            }
        } else {
            throw format_error(label + ": .npy shape is not a tuple of integers: " + std::string(text));
        }
    }
    if (in_number) shape.push_back(value);
    return shape;
}

}  // namespace detail

inline NpyArray parse_npy(const std::byte* bytes, std::size_t size, const std::string& label) {
    const auto* text = reinterpret_cast<const char*>(bytes);
    if (size < 10 || std::string_view(text, 6) != detail::npy_magic) {
        throw format_error(label + ": not a NumPy .npy file (bad magic bytes)");
    }
    const int major = std::uint8_t(text[6]);
    if (major < 1 || major > 3) throw format_error(label + ": unsupported .npy format version " + std::to_string(major));
    std::size_t header_length = 0, preamble = 0;
    if (major == 1) {
        header_length = std::uint8_t(text[8]) | (std::size_t(std::uint8_t(text[9])) << 8);
        preamble = 10;
    } else {
        if (size < 12) throw format_error(label + ": truncated .npy preamble");
        for (int i = 0; i < 4; ++i) header_length |= std::size_t(std::uint8_t(text[8 + i])) << (8 * i);
        preamble = 12;
    }
    if (header_length > size - preamble) {
        throw format_error(label + ": .npy header length " + std::to_string(header_length) + " runs past the end of the file (" +
                           std::to_string(size) + " bytes)");
    }
    const std::string_view header(text + preamble, header_length);
    const std::string_view descr_quoted = detail::npy_header_value(header, "descr", label);
    const std::string descr(descr_quoted.substr(1, descr_quoted.size() - 2));
    const std::string_view fortran = detail::npy_header_value(header, "fortran_order", label);
    if (fortran.rfind("True", 0) == 0) {
        throw format_error(label + ": .npy array is in Fortran (column-major) order; save it in C order (np.ascontiguousarray)");
    }
    if (fortran.rfind("False", 0) != 0) throw format_error(label + ": .npy fortran_order is neither True nor False");
    NpyArray array;
    array.shape = detail::parse_npy_shape(detail::npy_header_value(header, "shape", label), label);
    array.descr = descr;

    std::size_t item_size = 0;
    if (descr.size() == 3 && (descr[0] == '<' || descr[0] == '|') && descr[1] == 'f') item_size = std::size_t(descr[2] - '0');
    if (descr.size() == 3 && descr[0] == '>') {
        throw format_error(label + ": .npy data is big-endian ('" + descr + "'); only little-endian arrays are read");
    }
    if (item_size != 2 && item_size != 4 && item_size != 8) {
        throw format_error(label + ": .npy dtype '" + descr + "' is not supported (little-endian f2, f4 or f8: '<f2', '<f4', '<f8')");
    }
    const std::size_t count = shape_numel(array.shape);
    const std::size_t data_offset = preamble + header_length;
    const std::size_t available = size - data_offset;
    if (count > available / item_size || count * item_size != available) {
        throw format_error(label + ": .npy data holds " + std::to_string(available) + " bytes, but shape " +
                           shape_to_string(array.shape) + " of '" + descr + "' needs " + std::to_string(count * item_size) +
                           (count * item_size > available ? " (truncated file?)" : ""));
    }
    array.values.resize(count);
    const std::byte* data = bytes + data_offset;
    for (std::size_t i = 0; i < count; ++i) {
        if (item_size == 4) {
            array.values[i] = load_as_f32(data, DType::f32, i);
        } else if (item_size == 2) {
            array.values[i] = load_as_f32(data, DType::f16, i);
        } else {
            double value;
            std::memcpy(&value, data + i * 8, 8);
            array.values[i] = float(value);
        }
    }
    return array;
}

inline NpyArray read_npy(const std::filesystem::path& path) {
    const FileImage file(path);
    return parse_npy(file.data(), file.size(), path.string());
}

// Version 1.0, '<f4', C order; the header is padded so the data starts at a multiple of 64.
inline void write_npy(const std::filesystem::path& path, const float* values, const Shape& shape) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
    for (std::size_t i = 0; i < shape.size(); ++i) header += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? ", " : "");
    if (!shape.empty()) header.erase(header.size() - (shape.size() == 1 ? 1 : 0));
    header += "), }";
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::ofstream out(path, std::ios::binary);
    out.write(detail::npy_magic.data(), std::streamsize(detail::npy_magic.size()));
    const char version[2] = {1, 0};
    out.write(version, 2);
    const char length[2] = {char(header.size() & 0xFF), char(header.size() >> 8)};
    out.write(length, 2);
    out << header;
    out.write(reinterpret_cast<const char*>(values), std::streamsize(shape_numel(shape) * sizeof(float)));
    if (!out) throw error(path.string() + ": write failed");
}

}  // namespace loom::io
