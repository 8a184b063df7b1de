#pragma once
// Rotary position embedding in Hugging Face's rotate-half layout: dimension i of a head
// is paired with dimension i + head_dim/2 (not with its neighbour, as in the original
// paper), and rotated by position * inverse_frequency[i].
#include <cstddef>
#include <string>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/kernels/math.hpp"

namespace loom::nn {

enum class RopeScaling { none, linear, llama3 };

struct RopeParameters {
    std::size_t head_dim = 0;
    double theta = 10000.0;
    RopeScaling scaling = RopeScaling::none;
    double factor = 1.0;
    double low_freq_factor = 1.0;
    double high_freq_factor = 4.0;
    double original_max_position_embeddings = 8192.0;
};

// inverse_frequency[i] = 1 / theta^(2i / head_dim), in f32 as transformers computes it,
// then adjusted by the scaling rule. Our own pow keeps the table identical on every target.
inline std::vector<float> rope_inverse_frequencies(const RopeParameters& parameters) {
    if (parameters.head_dim == 0 || parameters.head_dim % 2 != 0) {
        throw argument_error("rope: head_dim must be even and positive, got " + std::to_string(parameters.head_dim));
    }
    const std::size_t half = parameters.head_dim / 2;
    std::vector<float> inverse(half);
    for (std::size_t i = 0; i < half; ++i) {
        const float exponent = float(2 * i) / float(parameters.head_dim);
        const float power = float(kernels::pow_positive_f64(parameters.theta, double(exponent)));
        inverse[i] = 1.0f / power;
    }
    if (parameters.scaling == RopeScaling::linear) {
        for (float& value : inverse) value = value / float(parameters.factor);
    } else if (parameters.scaling == RopeScaling::llama3) {
        // Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
        const float factor = float(parameters.factor);
        const float low = float(parameters.low_freq_factor);
        const float high = float(parameters.high_freq_factor);
        const float old_context = float(parameters.original_max_position_embeddings);
        const float low_freq_wavelen = old_context / low;
        const float high_freq_wavelen = old_context / high;
        constexpr float two_pi = float(2.0 * 3.14159265358979323846);
        for (float& value : inverse) {
            const float wavelen = two_pi / value;
            if (wavelen > low_freq_wavelen) {
                value = value / factor;
            } else if (wavelen >= high_freq_wavelen) {
                const float smooth = (old_context / wavelen - low) / (high - low);
                value = (1.0f - smooth) * value / factor + smooth * value;
            }
        }
    }
    return inverse;
}

struct RotaryEmbedding {
    std::vector<float> inverse_frequencies;  // [head_dim / 2]

    std::size_t head_dim() const noexcept { return inverse_frequencies.size() * 2; }
    std::size_t half() const noexcept { return inverse_frequencies.size(); }

    // cosines[i], sines[i] of position * inverse_frequency[i] (head_dim / 2 each). Every
    // layer rotates by the same angles, so a forward pass computes them once per token.
    void angles(std::size_t position, float* cosines, float* sines) const noexcept {
        for (std::size_t i = 0; i < half(); ++i) {
            const float angle = float(position) * inverse_frequencies[i];  // f32 product, as transformers forms it
            cosines[i] = float(kernels::cos_f64(double(angle)));
            sines[i] = float(kernels::sin_f64(double(angle)));
        }
    }

    // x: [tokens, heads, head_dim]; token t is rotated by row t of cosines and sines
    // ([tokens, head_dim / 2] each, from angles()).
    void apply(float* x, std::size_t tokens, std::size_t heads, const float* cosines, const float* sines) const noexcept {
        rotate(x, tokens, heads, cosines, sines, false);
    }

    // Backward of apply(): the gradient rotates back by the same angle (the transpose of a rotation).
    void apply_backward(float* dx, std::size_t tokens, std::size_t heads, const float* cosines,
                        const float* sines) const noexcept {
        rotate(dx, tokens, heads, cosines, sines, true);
    }

private:
    // Negating a sine is exact, so the forward rotation's bits do not depend on this sharing.
    void rotate(float* x, std::size_t tokens, std::size_t heads, const float* cosines, const float* sines,
                bool backwards) const noexcept {
        const std::size_t h2 = half();
        for (std::size_t t = 0; t < tokens; ++t) {
            const float* cos_row = cosines + t * h2;
            const float* sin_row = sines + t * h2;
            for (std::size_t h = 0; h < heads; ++h) {
                float* vector = x + (t * heads + h) * head_dim();
                for (std::size_t i = 0; i < h2; ++i) {
                    const float first = vector[i];
                    const float second = vector[i + h2];
                    const float sine = backwards ? -sin_row[i] : sin_row[i];
                    vector[i] = first * cos_row[i] - second * sine;
                    vector[i + h2] = second * cos_row[i] + first * sine;
                }
            }
        }
    }
};

}  // namespace loom::nn
