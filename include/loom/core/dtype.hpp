#pragma once
// Element types of checkpoint tensors and exact conversions between them.
// bf16 -> f32 and f16 -> f32 are exact; f32 -> bf16/f16 round to nearest, ties to even.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "loom/core/error.hpp"

namespace loom {

enum class DType : std::uint8_t { f32, f16, bf16 };

constexpr std::size_t dtype_size(DType dtype) noexcept {
    return dtype == DType::f32 ? 4 : 2;
}

// The spelling used by safetensors headers.
constexpr std::string_view dtype_name(DType dtype) noexcept {
    switch (dtype) {
        case DType::f32: return "F32";
        case DType::f16: return "F16";
        case DType::bf16: return "BF16";
    }
    return "?";
}

inline float bits_to_f32(std::uint32_t bits) noexcept {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

inline std::uint32_t f32_to_bits(float value) noexcept {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

inline float bf16_to_f32(std::uint16_t half) noexcept {
    return bits_to_f32(std::uint32_t(half) << 16);
}

inline std::uint16_t f32_to_bf16(float value) noexcept {
    std::uint32_t bits = f32_to_bits(value);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {  // NaN: keep sign, force a quiet payload bit
        return std::uint16_t((bits >> 16) | 0x0040u);
    }
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return std::uint16_t(bits >> 16);
}

// Exact, as F16C's and AVX-512's conversions, which also quiet a signalling NaN (payload
// kept): every target widens f16 through this or through them, with the same bits.
inline float f16_to_f32(std::uint16_t half) noexcept {
    const std::uint32_t sign = std::uint32_t(half & 0x8000u) << 16;
    const std::uint32_t exponent = (half >> 10) & 0x1Fu;
    std::uint32_t mantissa = half & 0x3FFu;
    if (exponent == 0x1F) {  // inf or NaN
        const std::uint32_t quiet = mantissa != 0 ? 0x00400000u : 0u;
        return bits_to_f32(sign | 0x7F800000u | quiet | (mantissa << 13));
    }
    if (exponent != 0) {
        return bits_to_f32(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    }
    if (mantissa == 0) return bits_to_f32(sign);
    // Subnormal f16: normalise into an f32 exponent.
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        ++shift;
    }
    mantissa &= 0x3FFu;
    return bits_to_f32(sign | (std::uint32_t(113 - shift) << 23) | (mantissa << 13));
}

inline std::uint16_t f32_to_f16(float value) noexcept {
    const std::uint32_t bits = f32_to_bits(value);
    const std::uint16_t sign = std::uint16_t((bits >> 16) & 0x8000u);
    const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
    if (magnitude > 0x7F800000u) return std::uint16_t(sign | 0x7E00u);  // NaN
    if (magnitude >= 0x477FF000u) return std::uint16_t(sign | 0x7C00u);  // rounds past 65504: inf
    if (magnitude >= 0x38800000u) {  // normal f16 range
        std::uint32_t rounded = magnitude + 0xFFFu + ((magnitude >> 13) & 1u);
        return std::uint16_t(sign | ((rounded - 0x38000000u) >> 13));
    }
    if (magnitude < 0x33000000u) return sign;  // below half the smallest subnormal: zero
    // Subnormal f16: shift the implicit-one mantissa into place, rounding to nearest even.
    const std::uint32_t exponent = magnitude >> 23;
    const std::uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126u - exponent;  // 14..24
    const std::uint32_t halfway = 1u << (shift - 1);
    const std::uint32_t remainder = mantissa & ((1u << shift) - 1u);
    std::uint32_t result = mantissa >> shift;
    if (remainder > halfway || (remainder == halfway && (result & 1u))) ++result;
    return std::uint16_t(sign | result);
}

// Reads element `index` of a buffer of `dtype` as f32. The buffer may be unaligned
// (safetensors offsets need not be), hence memcpy rather than a typed pointer.
inline float load_as_f32(const std::byte* data, DType dtype, std::size_t index) noexcept {
    if (dtype == DType::f32) {
        float value;
        std::memcpy(&value, data + index * 4, 4);
        return value;
    }
    std::uint16_t half;
    std::memcpy(&half, data + index * 2, 2);
    return dtype == DType::bf16 ? bf16_to_f32(half) : f16_to_f32(half);
}

}  // namespace loom
