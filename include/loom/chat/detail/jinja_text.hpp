#pragma once
// Python's string semantics over UTF-8: chat templates index, strip, split and case-map
// strings the way CPython does, and the rendered prompt must match byte for byte.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/chat/detail/float_chars.hpp"

namespace loom::chat::detail {

inline constexpr char32_t replacement_character = 0xFFFD;

// Decodes the code point at `offset` and moves past it. A malformed byte decodes as
// U+FFFD on its own, so that every input byte is accounted for.
inline char32_t decode_utf8(std::string_view text, std::size_t& offset) {
    const auto lead = static_cast<unsigned char>(text[offset]);
    if (lead < 0x80) {
        ++offset;
        return lead;
    }
    std::size_t length = 0;
    char32_t code_point = 0;
    if ((lead & 0xE0) == 0xC0) {
        length = 2;
        code_point = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
        length = 3;
        code_point = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
        length = 4;
        code_point = lead & 0x07;
    } else {
        ++offset;
        return replacement_character;
    }
    if (offset + length > text.size()) {
        ++offset;
        return replacement_character;
    }
    for (std::size_t index = 1; index < length; ++index) {
        const auto continuation = static_cast<unsigned char>(text[offset + index]);
        if ((continuation & 0xC0) != 0x80) {
            ++offset;
            return replacement_character;
        }
        code_point = (code_point << 6) | (continuation & 0x3F);
    }
    offset += length;
    return code_point;
}

inline void append_utf8(std::string& out, char32_t code_point) {
    if (code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) code_point = replacement_character;
    if (code_point < 0x80) {
        out.push_back(static_cast<char>(code_point));
    } else if (code_point < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
        out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    } else if (code_point < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
        out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
        out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
    }
}

inline std::u32string to_code_points(std::string_view text) {
    std::u32string code_points;
    code_points.reserve(text.size());
    for (std::size_t offset = 0; offset < text.size();) code_points.push_back(decode_utf8(text, offset));
    return code_points;
}

inline std::string to_utf8(std::u32string_view code_points) {
    std::string text;
    text.reserve(code_points.size());
    for (const char32_t code_point : code_points) append_utf8(text, code_point);
    return text;
}

inline std::size_t code_point_count(std::string_view text) {
    std::size_t count = 0;
    for (std::size_t offset = 0; offset < text.size(); ++count) decode_utf8(text, offset);
    return count;
}

// str.isspace(): also what str.strip(), str.split() and the Jinja lexer's \s treat as blank.
inline bool is_python_space(char32_t c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

// Line boundaries of str.splitlines().
inline bool is_python_line_break(char32_t c) {
    return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) || c == 0x85 ||
           c == 0x2028 || c == 0x2029;
}

// A decimal float in Python's syntax without sign or underscores ("1.5", "2e-3", ".5"),
// parsed independently of the locale. Like Python, a value too large for a double is
// infinity and one too small is zero (from_chars reports both as out of range).
inline std::optional<double> parse_decimal_double(std::string_view text) {
    double number = 0.0;
    const std::errc error = decimal_to_double(text, number);
    if (error == std::errc()) return number;
    if (error != std::errc::result_out_of_range) return std::nullopt;
    // Decimal magnitude of the leading significant digit decides overflow from underflow.
    std::int64_t magnitude = 0;
    bool point = false;
    bool significant = false;
    std::size_t index = 0;
    for (; index < text.size() && text[index] != 'e' && text[index] != 'E'; ++index) {
        const char c = text[index];
        if (c == '.') {
            point = true;
        } else if (!point) {
            if (significant || c != '0') {
                significant = true;
                ++magnitude;
            }
        } else if (!significant) {
            if (c == '0') --magnitude;
            else significant = true;
        }
    }
    if (!significant) return 0.0;
    std::int64_t exponent = 0;
    bool negative_exponent = false;
    if (index < text.size()) ++index;
    if (index < text.size() && (text[index] == '+' || text[index] == '-')) negative_exponent = text[index++] == '-';
    for (; index < text.size(); ++index)
        if (exponent < 1000000000) exponent = exponent * 10 + (text[index] - '0');
    if (negative_exponent) exponent = -exponent;
    return magnitude + exponent > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

enum class StripSide { both, left, right };

// str.strip / lstrip / rstrip. Without `characters`, strips Python whitespace.
inline std::string python_strip(std::string_view text, StripSide side, const std::u32string* characters = nullptr) {
    const std::u32string code_points = to_code_points(text);
    const auto strippable = [&](char32_t c) {
        return characters == nullptr ? is_python_space(c) : characters->find(c) != std::u32string::npos;
    };
    std::size_t begin = 0;
    std::size_t end = code_points.size();
    if (side != StripSide::right)
        while (begin < end && strippable(code_points[begin])) ++begin;
    if (side != StripSide::left)
        while (end > begin && strippable(code_points[end - 1])) --end;
    return to_utf8(std::u32string_view(code_points).substr(begin, end - begin));
}

// Simple case mappings for the scripts chat messages commonly carry (Latin, Greek,
// Cyrillic). Other cased scripts keep their letters unchanged.
inline char32_t simple_upper(char32_t c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c < 0x80) return c;
    if (c == 0xB5) return 0x39C;
    if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c >= 0x100 && c <= 0x17F) {
        if (c == 0x131) return 'I';
        if (c == 0x17F) return 'S';
        const bool odd_is_lower = (c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177);
        const bool even_is_lower = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
        if (odd_is_lower && (c % 2 == 1)) return c - 1;
        if (even_is_lower && (c % 2 == 0)) return c - 1;
        return c;
    }
    if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
    if (c == 0x3C2) return 0x3A3;
    if (c >= 0x3AC && c <= 0x3CE) {
        switch (c) {
            case 0x3AC: return 0x386;
            case 0x3AD: return 0x388;
            case 0x3AE: return 0x389;
            case 0x3AF: return 0x38A;
            case 0x3CC: return 0x38C;
            case 0x3CD: return 0x38E;
            case 0x3CE: return 0x38F;
            default: return c;
        }
    }
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    return c;
}

inline char32_t simple_lower(char32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c < 0x80) return c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c == 0x178) return 0xFF;
    if (c >= 0x100 && c <= 0x17F) {
        if (c == 0x130) return 'i';
        const bool even_is_upper = (c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177);
        const bool odd_is_upper = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
        if (even_is_upper && (c % 2 == 0)) return c + 1;
        if (odd_is_upper && (c % 2 == 1)) return c + 1;
        return c;
    }
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    switch (c) {
        case 0x386: return 0x3AC;
        case 0x388: return 0x3AD;
        case 0x389: return 0x3AE;
        case 0x38A: return 0x3AF;
        case 0x38C: return 0x3CC;
        case 0x38E: return 0x3CD;
        case 0x38F: return 0x3CE;
        default: break;
    }
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}

inline bool is_lower_letter(char32_t c) { return simple_upper(c) != c || c == 0xDF; }
inline bool is_upper_letter(char32_t c) { return simple_lower(c) != c; }
inline bool is_cased(char32_t c) { return is_lower_letter(c) || is_upper_letter(c); }

// Full upper-casing differs from the simple mapping for a few letters (ß becomes SS).
inline void append_upper(std::u32string& out, char32_t c) {
    if (c == 0xDF) {
        out += U"SS";
        return;
    }
    out.push_back(simple_upper(c));
}

inline std::string python_upper(std::string_view text) {
    std::u32string out;
    for (const char32_t c : to_code_points(text)) append_upper(out, c);
    return to_utf8(out);
}

// Full lower-casing: İ gains a combining dot, and a capital sigma that ends a word becomes
// the final form ς.
inline std::string python_lower(std::string_view text) {
    const std::u32string code_points = to_code_points(text);
    std::u32string out;
    for (std::size_t index = 0; index < code_points.size(); ++index) {
        const char32_t c = code_points[index];
        if (c == 0x130) {
            out += U"i\u0307";
        } else if (c == 0x3A3) {
            const bool after_letter = index > 0 && is_cased(code_points[index - 1]);
            const bool before_letter = index + 1 < code_points.size() && is_cased(code_points[index + 1]);
            out.push_back(after_letter && !before_letter ? char32_t{0x3C2} : char32_t{0x3C3});
        } else {
            out.push_back(simple_lower(c));
        }
    }
    return to_utf8(out);
}

inline std::string python_swapcase(std::string_view text) {
    std::u32string out;
    for (const char32_t c : to_code_points(text)) {
        if (is_upper_letter(c))
            out.push_back(simple_lower(c));
        else
            append_upper(out, c);
    }
    return to_utf8(out);
}

// Title case for the first letter: ß titles as "Ss", everything else as its upper case.
inline void append_title(std::u32string& out, char32_t c) {
    if (c == 0xDF) {
        out += U"Ss";
        return;
    }
    out.push_back(simple_upper(c));
}

// str.title(): a letter starts a word when the character before it is not cased.
inline std::string python_title(std::string_view text) {
    std::u32string out;
    bool previous_cased = false;
    for (const char32_t c : to_code_points(text)) {
        if (previous_cased)
            out.push_back(simple_lower(c));
        else
            append_title(out, c);
        previous_cased = is_cased(c);
    }
    return to_utf8(out);
}

// str.capitalize(): first character in title case, the rest lower case.
inline std::string python_capitalize(std::string_view text) {
    const std::u32string code_points = to_code_points(text);
    std::u32string out;
    for (std::size_t index = 0; index < code_points.size(); ++index) {
        if (index == 0)
            append_title(out, code_points[index]);
        else
            out.push_back(simple_lower(code_points[index]));
    }
    return to_utf8(out);
}

// Code points that str.isprintable() rejects beyond the ASCII controls: Python's repr
// escapes them. Covers the separators and format characters; unassigned code points
// would need the Unicode database.
inline bool is_python_unprintable(char32_t c) {
    if (c < 0x20 || c == 0x7F) return true;
    if (c < 0x80) return false;
    return (c >= 0x80 && c <= 0xA0) || c == 0xAD || (c >= 0x600 && c <= 0x605) || c == 0x61C || c == 0x6DD ||
           c == 0x70F || c == 0x1680 || c == 0x180E || (c >= 0x2000 && c <= 0x200F) ||
           (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x206F) || c == 0x3000 ||
           (c >= 0xD800 && c <= 0xF8FF) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFB) || c == 0xFFFE ||
           c == 0xFFFF || (c >= 0xE0000 && c <= 0xE007F) || c >= 0xF0000;
}

inline void append_hex(std::string& out, std::uint32_t value, int digits) {
    static constexpr char hex_digits[] = "0123456789abcdef";
    for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) out.push_back(hex_digits[(value >> shift) & 0xF]);
}

// repr() of a str: single quotes unless the text holds a single quote and no double quote.
inline std::string python_string_repr(std::string_view text) {
    const bool has_single = text.find('\'') != std::string_view::npos;
    const bool has_double = text.find('"') != std::string_view::npos;
    const char quote = has_single && !has_double ? '"' : '\'';
    std::string out(1, quote);
    for (std::size_t offset = 0; offset < text.size();) {
        const char32_t c = decode_utf8(text, offset);
        if (c == static_cast<char32_t>(quote) || c == '\\') {
            out.push_back('\\');
            out.push_back(static_cast<char>(c));
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (is_python_unprintable(c)) {
            if (c <= 0xFF) {
                out += "\\x";
                append_hex(out, c, 2);
            } else if (c <= 0xFFFF) {
                out += "\\u";
                append_hex(out, c, 4);
            } else {
                out += "\\U";
                append_hex(out, c, 8);
            }
        } else {
            append_utf8(out, c);
        }
    }
    out.push_back(quote);
    return out;
}

// A JSON string as Python's json.dumps writes it (lower-case \u escapes; non-ASCII kept
// as is unless ensure_ascii asks for escapes).
inline std::string json_string(std::string_view text, bool ensure_ascii) {
    std::string out = "\"";
    for (std::size_t offset = 0; offset < text.size();) {
        const char32_t c = decode_utf8(text, offset);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20 || (ensure_ascii && c > 0x7E)) {
                    if (c > 0xFFFF) {
                        const char32_t reduced = c - 0x10000;
                        out += "\\u";
                        append_hex(out, 0xD800 + (reduced >> 10), 4);
                        out += "\\u";
                        append_hex(out, 0xDC00 + (reduced & 0x3FF), 4);
                    } else {
                        out += "\\u";
                        append_hex(out, c, 4);
                    }
                } else {
                    append_utf8(out, c);
                }
        }
    }
    out.push_back('"');
    return out;
}

// str.split(): without a separator, splits on runs of whitespace and drops empty ends.
// `limit` < 0 means no limit; `from_right` gives rsplit.
inline std::vector<std::string> python_split_whitespace(std::string_view text, long long limit, bool from_right) {
    std::u32string code_points = to_code_points(text);
    if (from_right) std::u32string(code_points.rbegin(), code_points.rend()).swap(code_points);
    std::vector<std::u32string> pieces;
    std::size_t index = 0;
    while (true) {
        while (index < code_points.size() && is_python_space(code_points[index])) ++index;
        if (index >= code_points.size()) break;
        if (limit >= 0 && static_cast<long long>(pieces.size()) == limit) {
            std::size_t end = code_points.size();
            while (end > index && is_python_space(code_points[end - 1])) --end;
            pieces.push_back(code_points.substr(index, end - index));
            break;
        }
        const std::size_t start = index;
        while (index < code_points.size() && !is_python_space(code_points[index])) ++index;
        pieces.push_back(code_points.substr(start, index - start));
    }
    std::vector<std::string> out;
    for (auto& piece : pieces) {
        if (from_right) std::u32string(piece.rbegin(), piece.rend()).swap(piece);
        out.push_back(to_utf8(piece));
    }
    if (from_right) std::vector<std::string>(out.rbegin(), out.rend()).swap(out);
    return out;
}

inline std::vector<std::string> python_split(std::string_view text, std::string_view separator, long long limit,
                                             bool from_right) {
    std::vector<std::string> pieces;
    if (!from_right) {
        std::size_t start = 0;
        while (limit < 0 || static_cast<long long>(pieces.size()) < limit) {
            const std::size_t found = text.find(separator, start);
            if (found == std::string_view::npos) break;
            pieces.emplace_back(text.substr(start, found - start));
            start = found + separator.size();
        }
        pieces.emplace_back(text.substr(start));
        return pieces;
    }
    std::size_t end = text.size();
    while (limit < 0 || static_cast<long long>(pieces.size()) < limit) {
        if (end < separator.size()) break;
        const std::size_t found = text.rfind(separator, end - separator.size());
        if (found == std::string_view::npos) break;
        pieces.emplace_back(text.substr(found + separator.size(), end - found - separator.size()));
        end = found;
    }
    pieces.emplace_back(text.substr(0, end));
    return std::vector<std::string>(pieces.rbegin(), pieces.rend());
}

inline std::vector<std::string> python_splitlines(std::string_view text, bool keep_ends) {
    const std::u32string code_points = to_code_points(text);
    std::vector<std::string> lines;
    std::size_t start = 0;
    for (std::size_t index = 0; index < code_points.size(); ++index) {
        if (!is_python_line_break(code_points[index])) continue;
        std::size_t end_of_break = index + 1;
        if (code_points[index] == '\r' && end_of_break < code_points.size() && code_points[end_of_break] == '\n')
            ++end_of_break;
        const std::size_t end = keep_ends ? end_of_break : index;
        lines.push_back(to_utf8(std::u32string_view(code_points).substr(start, end - start)));
        start = end_of_break;
        index = end_of_break - 1;
    }
    if (start < code_points.size()) lines.push_back(to_utf8(std::u32string_view(code_points).substr(start)));
    return lines;
}

inline std::string python_replace(std::string_view text, std::string_view old_text, std::string_view new_text,
                                  long long count) {
    std::string out;
    if (old_text.empty()) {
        // Python inserts the replacement between every code point and at both ends.
        long long done = 0;
        std::size_t offset = 0;
        while (true) {
            if (count < 0 || done < count) {
                out += new_text;
                ++done;
            }
            if (offset >= text.size()) break;
            const std::size_t start = offset;
            decode_utf8(text, offset);
            out += text.substr(start, offset - start);
        }
        return out;
    }
    std::size_t start = 0;
    long long done = 0;
    while (count < 0 || done < count) {
        const std::size_t found = text.find(old_text, start);
        if (found == std::string_view::npos) break;
        out += text.substr(start, found - start);
        out += new_text;
        start = found + old_text.size();
        ++done;
    }
    out += text.substr(start);
    return out;
}

}  // namespace loom::chat::detail
