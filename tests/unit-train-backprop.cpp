// The training pass (train/llama.hpp): its forward equals inference bit for bit, its
// gradients do not depend on thread count or on activation recomputation, and they are
// the derivative of the loss (central differences through the whole model).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "loom/core/random.hpp"
#include "loom/models/synthetic.hpp"
#include "loom/train/llama.hpp"
#include "test_support.hpp"

namespace {

using loom::models::SyntheticModelSpec;

std::unique_ptr<loom::train::TrainableLlama> trainable(const SyntheticModelSpec& spec) {
    const auto checkpoint = loom::models::synthetic_store(spec, "memory");
    return std::make_unique<loom::train::TrainableLlama>(
        loom::io::parse_model_config(loom::models::synthetic_config_json(spec), "config.json"), checkpoint);
}

SyntheticModelSpec small_spec(const char* preset) {
    SyntheticModelSpec spec = loom::models::synthetic_preset(preset);
    spec.weight_std = 0.2;
    spec.seed = 7;
    return spec;
}

// Every fifth target ignored, as prompt tokens would be.
loom::train::Batch make_batch(std::size_t vocab, std::size_t sequences, std::size_t length) {
    loom::train::Batch batch{sequences, length, {}, {}};
    for (std::size_t i = 0; i < sequences * length; ++i) {
        batch.inputs.push_back(int((i * 29 + 3) % vocab));
        batch.targets.push_back(i % 5 == 4 ? loom::train::ignore_index : int((i * 29 + 32) % vocab));
    }
    return batch;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("training forward: logits equal inference's bit for bit", "[train][backprop]") {
    const char* preset = GENERATE("tiny-llama", "tiny-qwen2", "tiny-mistral");
    INFO(preset);
    const auto model = trainable(small_spec(preset));
    const loom::train::Batch batch = make_batch(model->network->config().vocab_size, 2, 13);  // past Mistral's window of 8
    loom::ThreadPool pool(2);
    loom::train::LlamaTraining training(*model->network, model->gradient_of());
    training.evaluate(batch, pool);
    const std::size_t vocab = model->network->config().vocab_size;
    for (std::size_t s = 0; s < batch.rows; ++s) {
        auto sequence = model->network->new_sequence(batch.sequence_length);
        xt::xtensor<float, 2> logits;
        model->network->forward(std::span<const int>(batch.inputs).subspan(s * batch.sequence_length, batch.sequence_length), sequence,
                                loom::models::LogitRows::all, logits, pool);
        CHECK(same_bits(std::span<const float>(logits.data(), logits.size()),
                        training.logits().subspan(s * batch.sequence_length * vocab, batch.sequence_length * vocab)));
    }
}

TEST_CASE("training backward: gradients are bit-identical for 1-4 threads and with recomputation", "[train][backprop][determinism]") {
    const char* preset = GENERATE("tiny-llama", "tiny-qwen2", "tiny-mistral");
    INFO(preset);
    const auto model = trainable(small_spec(preset));
    const loom::train::Batch batch = make_batch(model->network->config().vocab_size, 3, 11);
    std::vector<float> expected;
    double expected_loss = 0.0;
    for (bool recompute : {false, true}) {
        for (std::size_t threads : {1u, 2u, 3u, 4u}) {
            INFO(threads << " threads, recompute " << recompute);
            loom::ThreadPool pool(threads);
            model->parameters.zero_gradients();
            loom::train::LlamaTraining training(*model->network, model->gradient_of(), recompute);
            const loom::train::Loss loss = training.forward_backward(batch, pool);
            const auto gradients = model->parameters.gradients();
            if (expected.empty()) {
                expected.assign(gradients.begin(), gradients.end());
                expected_loss = loss.value;
                CHECK(loss.targets == 3 * 11 - (3 * 11) / 5);
                continue;
            }
            CHECK(loss.value == expected_loss);
            CHECK(same_bits(gradients, expected));
        }
    }
}

TEST_CASE("training backward: gradients match central differences of the loss", "[train][backprop]") {
    const char* preset = GENERATE("tiny-llama", "tiny-qwen2", "tiny-mistral");
    INFO(preset);
    const auto model = trainable(small_spec(preset));
    const loom::train::Batch batch = make_batch(model->network->config().vocab_size, 2, 10);
    loom::ThreadPool pool(2);
    loom::train::LlamaTraining training(*model->network, model->gradient_of());
    model->parameters.zero_gradients();
    training.forward_backward(batch, pool);
    // A few entries of every tensor: f32 forward, so a step of 1e-2 and a loose bound.
    for (loom::train::Parameter& parameter : model->parameters.list()) {
        for (std::size_t k = 0; k < 3; ++k) {
            const std::size_t index = (k * 7919 + 13) % parameter.size;
            const float original = parameter.value[index];
            const float step = 1e-2f;
            parameter.value[index] = original + step;
            const double plus = training.evaluate(batch, pool).value;
            parameter.value[index] = original - step;
            const double minus = training.evaluate(batch, pool).value;
            parameter.value[index] = original;
            const double numeric = (plus - minus) / (2.0 * step);
            INFO(parameter.name << "[" << index << "]: analytic " << parameter.gradient[index] << ", numeric " << numeric);
            CHECK(std::abs(parameter.gradient[index] - numeric) <= 2e-3 * std::max(1.0, std::abs(numeric)) + 2e-4);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Each layer's backward against central differences of an f64 reimplementation of its
// forward: the objective is sum(output * projection) for a fixed random projection, whose
// gradient the f32 backward computes from dout = projection.
namespace {

using Reals = std::vector<double>;
using ReferenceForward = std::function<Reals(const Reals&)>;

std::vector<float> pseudo_random(std::size_t count, std::uint64_t seed, float scale = 1.0f) {
    loom::Random random(seed);
    std::vector<float> values(count);
    for (float& value : values) value = float(random.uniform() * 2.0 - 1.0) * scale;
    return values;
}

Reals widen(std::initializer_list<const std::vector<float>*> parts) {
    Reals all;
    for (const auto* part : parts) all.insert(all.end(), part->begin(), part->end());
    return all;
}

void check_against_differences(const ReferenceForward& forward, Reals point, const std::vector<float>& projection,
                               const std::vector<float>& analytic) {
    REQUIRE(analytic.size() == point.size());
    const auto objective = [&](const Reals& at) {
        const Reals out = forward(at);
        REQUIRE(out.size() == projection.size());
        double total = 0.0;
        for (std::size_t i = 0; i < out.size(); ++i) total += out[i] * double(projection[i]);
        return total;
    };
    double scale = 0.0;
    Reals numeric(point.size());
    for (std::size_t i = 0; i < point.size(); ++i) {
        const double original = point[i], step = 1e-6 * std::max(1.0, std::abs(original));
        point[i] = original + step;
        const double plus = objective(point);
        point[i] = original - step;
        const double minus = objective(point);
        point[i] = original;
        numeric[i] = (plus - minus) / (2.0 * step);
        scale = std::max(scale, std::abs(numeric[i]));
    }
    REQUIRE(scale > 0.0);
    for (std::size_t i = 0; i < point.size(); ++i) {
        INFO("input " << i << ": analytic " << analytic[i] << ", numeric " << numeric[i]);
        CHECK(std::abs(double(analytic[i]) - numeric[i]) <= 1e-4 * scale);
    }
}

loom::TensorView f32_view(const std::vector<float>& values, loom::Shape shape) {
    return {loom::DType::f32, std::move(shape), reinterpret_cast<const std::byte*>(values.data())};
}

// Routes a backward pass's parameter gradients to the given buffers by weight address.
loom::nn::GradientOf gradients_into(std::vector<std::pair<const std::vector<float>*, std::vector<float>*>> routes) {
    return [routes](const loom::TensorView& view) -> float* {
        for (const auto& [weight, gradient] : routes) {
            if (view.data == reinterpret_cast<const std::byte*>(weight->data())) return gradient->data();
        }
        return nullptr;
    };
}

std::vector<float> concatenate(std::initializer_list<const std::vector<float>*> parts) {
    std::vector<float> all;
    for (const auto* part : parts) all.insert(all.end(), part->begin(), part->end());
    return all;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

}  // namespace

TEST_CASE("layer backward: linear with bias", "[train][backprop][layers]") {
    constexpr std::size_t rows = 3, in = 21, out = 4;  // in > 16: the kernel's lane tail is crossed
    const auto x = pseudo_random(rows * in, 1), weight = pseudo_random(out * in, 2), bias = pseudo_random(out, 3);
    const auto projection = pseudo_random(rows * out, 4);
    loom::nn::Linear linear{f32_view(weight, {out, in}), f32_view(bias, {out})};
    std::vector<float> dx(rows * in), dweight(out * in), dbias(out);
    loom::ThreadPool pool(2);
    linear.backward(x.data(), rows, projection.data(), dx.data(), gradients_into({{&weight, &dweight}, {&bias, &dbias}}),
                    pool);
    const ReferenceForward reference = [&](const Reals& p) {
        Reals y(rows * out);
        for (std::size_t r = 0; r < rows; ++r) {
            for (std::size_t o = 0; o < out; ++o) {
                double sum = p[rows * in + out * in + o];
                for (std::size_t i = 0; i < in; ++i) sum += p[r * in + i] * p[rows * in + o * in + i];
                y[r * out + o] = sum;
            }
        }
        return y;
    };
    check_against_differences(reference, widen({&x, &weight, &bias}), projection, concatenate({&dx, &dweight, &dbias}));
}

TEST_CASE("layer backward: RMSNorm", "[train][backprop][layers]") {
    constexpr std::size_t rows = 3, dim = 19;
    constexpr float eps = 1e-5f;
    const auto x = pseudo_random(rows * dim, 5), weight = pseudo_random(dim, 6);
    const auto projection = pseudo_random(rows * dim, 7);
    const loom::nn::RMSNorm norm{f32_view(weight, {dim}), eps};
    std::vector<float> dx(rows * dim), dweight(dim), scratch;
    norm.backward(x.data(), rows, projection.data(), dx.data(), gradients_into({{&weight, &dweight}}), scratch);
    const ReferenceForward reference = [&](const Reals& p) {
        Reals y(rows * dim);
        for (std::size_t r = 0; r < rows; ++r) {
            double squares = 0.0;
            for (std::size_t i = 0; i < dim; ++i) squares += p[r * dim + i] * p[r * dim + i];
            const double inverse = 1.0 / std::sqrt(squares / double(dim) + double(eps));
            for (std::size_t i = 0; i < dim; ++i) y[r * dim + i] = p[rows * dim + i] * p[r * dim + i] * inverse;
        }
        return y;
    };
    check_against_differences(reference, widen({&x, &weight}), projection, concatenate({&dx, &dweight}));
}

TEST_CASE("layer backward: rotary embedding", "[train][backprop][layers]") {
    constexpr std::size_t tokens = 3, heads = 2, head_dim = 8;
    loom::nn::RotaryEmbedding rope;
    rope.inverse_frequencies = loom::nn::rope_inverse_frequencies({head_dim, 10000.0});
    const std::size_t half = rope.half();
    std::vector<float> cosines(tokens * half), sines(tokens * half);
    for (std::size_t t = 0; t < tokens; ++t) rope.angles(t + 5, cosines.data() + t * half, sines.data() + t * half);
    const auto x = pseudo_random(tokens * heads * head_dim, 8), projection = pseudo_random(x.size(), 9);
    std::vector<float> dx = projection;
    rope.apply_backward(dx.data(), tokens, heads, cosines.data(), sines.data());
    const ReferenceForward reference = [&](const Reals& p) {
        Reals y(p.size());
        for (std::size_t t = 0; t < tokens; ++t) {
            for (std::size_t h = 0; h < heads; ++h) {
                const std::size_t base = (t * heads + h) * head_dim;
                for (std::size_t i = 0; i < half; ++i) {
                    const double c = cosines[t * half + i], s = sines[t * half + i];
                    y[base + i] = p[base + i] * c - p[base + i + half] * s;
                    y[base + i + half] = p[base + i + half] * c + p[base + i] * s;
                }
            }
        }
        return y;
    };
    check_against_differences(reference, widen({&x}), projection, dx);
}

TEST_CASE("layer backward: causal grouped-query attention", "[train][backprop][layers]") {
    const std::size_t window = GENERATE(0u, 2u);
    // Heads of 5 go one float at a time; heads of 20 through SIMD registers and a tail, in
    // groups of 5 query heads (4 computed together, then 1).
    const bool wide = GENERATE(false, true);
    INFO("sliding window " << window << ", wide " << wide);
    const loom::kernels::AttentionShape shape = wide ? loom::kernels::AttentionShape{10, 2, 20, window}
                                                     : loom::kernels::AttentionShape{4, 2, 5, window};
    const std::vector<loom::kernels::TrainingSequence> sequences{{0, 4}, {4, 3}};
    constexpr std::size_t rows = 7;
    const std::size_t q_size = rows * shape.query_heads * shape.head_dim, kv_size = rows * shape.kv_heads * shape.head_dim;
    const auto queries = pseudo_random(q_size, 10, 2.0f), keys = pseudo_random(kv_size, 11, 2.0f);
    const auto values = pseudo_random(kv_size, 12), projection = pseudo_random(q_size, 13);
    std::vector<float> weights(loom::kernels::attention_weight_offsets(sequences, shape.query_heads).back());
    std::vector<float> out(q_size), dqueries(q_size), dkeys(kv_size), dvalues(kv_size);
    loom::ThreadPool pool(2);
    loom::kernels::causal_attention_keeping(sequences, shape, queries.data(), keys.data(), values.data(),
                                            weights.data(), out.data(), pool);
    loom::kernels::causal_attention_backward(sequences, shape, queries.data(), keys.data(), values.data(),
                                             weights.data(), projection.data(), dqueries.data(), dkeys.data(),
                                             dvalues.data(), pool);
    const ReferenceForward reference = [&](const Reals& p) {
        const double* q = p.data();
        const double* k = q + q_size;
        const double* v = k + kv_size;
        const std::size_t d = shape.head_dim, group = shape.query_heads / shape.kv_heads;
        Reals y(q_size, 0.0);
        for (const auto& sequence : sequences) {
            for (std::size_t h = 0; h < shape.query_heads; ++h) {
                const std::size_t g = h / group;
                for (std::size_t t = 0; t < sequence.tokens; ++t) {
                    const std::size_t first = window && t + 1 > window ? t + 1 - window : 0;
                    const double* query = q + ((sequence.first_row + t) * shape.query_heads + h) * d;
                    Reals scores;
                    for (std::size_t s = first; s <= t; ++s) {
                        const double* key = k + ((sequence.first_row + s) * shape.kv_heads + g) * d;
                        double dot = 0.0;
                        for (std::size_t i = 0; i < d; ++i) dot += query[i] * key[i];
                        scores.push_back(dot / std::sqrt(double(d)));
                    }
                    const double largest = *std::max_element(scores.begin(), scores.end());
                    double total = 0.0;
                    for (double& score : scores) total += (score = std::exp(score - largest));
                    double* result = y.data() + ((sequence.first_row + t) * shape.query_heads + h) * d;
                    for (std::size_t s = first; s <= t; ++s) {
                        const double* value = v + ((sequence.first_row + s) * shape.kv_heads + g) * d;
                        for (std::size_t i = 0; i < d; ++i) result[i] += scores[s - first] / total * value[i];
                    }
                }
            }
        }
        return y;
    };
    check_against_differences(reference, widen({&queries, &keys, &values}), projection,
                              concatenate({&dqueries, &dkeys, &dvalues}));
}

TEST_CASE("layer backward: SiLU gate times up", "[train][backprop][layers]") {
    constexpr std::size_t n = 37;
    const auto gate = pseudo_random(n, 14, 4.0f), up = pseudo_random(n, 15), projection = pseudo_random(n, 16);
    std::vector<float> dgate(n), dup(n);
    loom::kernels::silu_multiply_backward(gate.data(), up.data(), projection.data(), dgate.data(), dup.data(), n);
    const ReferenceForward reference = [&](const Reals& p) {
        Reals y(n);
        for (std::size_t i = 0; i < n; ++i) y[i] = p[i] * sigmoid(p[i]) * p[n + i];
        return y;
    };
    check_against_differences(reference, widen({&gate, &up}), projection, concatenate({&dgate, &dup}));
}

TEST_CASE("layer backward: embedding rows of repeated tokens add up", "[train][backprop][layers]") {
    constexpr std::size_t vocab = 5, dim = 3;
    const auto table = pseudo_random(vocab * dim, 17);
    const std::vector<int> ids{1, 3, 1, 4};
    const auto projection = pseudo_random(ids.size() * dim, 18);
    const loom::nn::Embedding embedding{f32_view(table, {vocab, dim})};
    std::vector<float> dtable(vocab * dim);
    embedding.backward(ids.data(), ids.size(), projection.data(), gradients_into({{&table, &dtable}}));
    const ReferenceForward reference = [&](const Reals& p) {
        Reals y;
        for (int id : ids) y.insert(y.end(), p.begin() + id * dim, p.begin() + (id + 1) * dim);
        return y;
    };
    check_against_differences(reference, widen({&table}), projection, dtable);
}

TEST_CASE("layer backward: cross-entropy with ignored targets", "[train][backprop][layers]") {
    constexpr std::size_t rows = 4, vocab = 23;
    auto logits = pseudo_random(rows * vocab, 19, 3.0f);
    const std::vector<int> targets{2, loom::train::ignore_index, 22, 0};
    const Reals point = widen({&logits});
    loom::ThreadPool pool(2);
    const loom::train::Loss loss = loom::train::cross_entropy(logits.data(), rows, vocab, targets, true, 1.0f, pool);
    const ReferenceForward reference = [&](const Reals& p) {
        double total = 0.0;
        for (std::size_t r = 0; r < rows; ++r) {
            if (targets[r] == loom::train::ignore_index) continue;
            double sum = 0.0;
            for (std::size_t i = 0; i < vocab; ++i) sum += std::exp(p[r * vocab + i]);
            total += std::log(sum) - p[r * vocab + std::size_t(targets[r])];
        }
        return Reals{total / 3.0};
    };
    CHECK(loss.targets == 3);
    CHECK(std::abs(loss.value - reference(point)[0]) <= 1e-6 * reference(point)[0]);
    check_against_differences(reference, point, {1.0f}, logits);
    CHECK_THROWS_WITH(loom::train::cross_entropy(logits.data(), rows, vocab, std::vector<int>{1, 2, 23, 0}, false, 1.0f, pool),
                      Catch::Contains("target 23 at row 2 is outside the vocabulary"));
}
