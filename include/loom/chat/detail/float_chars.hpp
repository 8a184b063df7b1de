#pragma once
// Doubles to and from decimal text whatever the locale. std::to_chars and std::from_chars
// do it where the standard library has them for floating point (__cpp_lib_to_chars);
// libc++ before 17, and so Emscripten's, has them for integers only, and there the C
// library converts, with the locale's decimal point swapped for '.' on the way.
#include <cerrno>
#include <charconv>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <system_error>

namespace loom::chat::detail {

inline char c_library_decimal_point() {
    const char* point = std::localeconv()->decimal_point;
    return point != nullptr && point[0] != '\0' ? point[0] : '.';
}

inline bool starts_as_decimal(std::string_view text) {
    return !text.empty() && ((text[0] >= '0' && text[0] <= '9') || text[0] == '.');
}

// Digits with an optional point and exponent ("1.5", "2e-3", ".5"), as from_chars reads
// them in its general format; no sign, no whitespace, no hexadecimal, no inf or nan.
// std::errc() when all of `text` is one such number, result_out_of_range when it is but its
// value overflows a double or underflows to zero, invalid_argument otherwise.
inline std::errc decimal_to_double_c_library(std::string_view text, double& number) {
    if (!starts_as_decimal(text)) return std::errc::invalid_argument;
    std::string local(text);
    for (char& c : local) {
        const bool allowed = (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-';
        if (!allowed) return std::errc::invalid_argument;
        if (c == '.') c = c_library_decimal_point();
    }
    char* end = nullptr;
    errno = 0;
    const double value = std::strtod(local.c_str(), &end);
    if (end != local.c_str() + local.size()) return std::errc::invalid_argument;
    // (strtod also reports ERANGE for a subnormal result, which from_chars returns.)
    if (errno == ERANGE && (value == 0.0 || std::isinf(value))) return std::errc::result_out_of_range;
    number = value;
    return std::errc();
}

inline std::errc decimal_to_double(std::string_view text, double& number) {
#if defined(__cpp_lib_to_chars)
    if (!starts_as_decimal(text)) return std::errc::invalid_argument;  // from_chars takes '-', inf and nan
    const char* const end = text.data() + text.size();
    const auto result = std::from_chars(text.data(), end, number, std::chars_format::general);
    if (result.ptr != end) return std::errc::invalid_argument;
    return result.ec;
#else
    return decimal_to_double_c_library(text, number);
#endif
}

// A finite `number` in scientific notation with the fewest significant digits that read
// back to it ("1.5e+00"). printf rounds correctly, so the first precision that reads back
// gives the digits to_chars gives, the closest of the shortest.
inline std::string shortest_scientific_c_library(double number) {
    char buffer[64];
    for (int precision = 0;; ++precision) {
        std::snprintf(buffer, sizeof buffer, "%.*e", precision, number);
        if (precision >= 16 || std::strtod(buffer, nullptr) == number) break;
    }
    std::string text(buffer);
    const char point = c_library_decimal_point();
    for (char& c : text)
        if (c == point) c = '.';
    return text;
}

inline std::string shortest_scientific(double number) {
#if defined(__cpp_lib_to_chars)
    char buffer[64];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, number, std::chars_format::scientific);
    return std::string(buffer, result.ptr);
#else
    return shortest_scientific_c_library(number);
#endif
}

}  // namespace loom::chat::detail
