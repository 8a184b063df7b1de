// The training loop (train/trainer.hpp) on tiny generated models: it learns (overfits a
// short text and then recites it greedily), it is deterministic across thread counts,
// a resumed run equals an uninterrupted one bit for bit, saved folders load back, and
// bad runs stop with a clear message.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "loom/generate/generator.hpp"
#include "loom/models/load.hpp"
#include "loom/models/synthetic.hpp"
#include "loom/train/trainer.hpp"
#include "test_support.hpp"

namespace {

using loom::models::SyntheticModelSpec;

SyntheticModelSpec tiny_spec(const char* preset = "tiny-llama") {
    SyntheticModelSpec spec = loom::models::synthetic_preset(preset);
    spec.vocab_size = 64;
    spec.hidden_size = 32;
    spec.intermediate_size = 64;
    spec.num_attention_heads = 4;
    spec.num_key_value_heads = 2;
    spec.max_position_embeddings = 64;
    spec.weight_std = 0.1;
    spec.seed = 11;
    return spec;
}

std::unique_ptr<loom::train::TrainableLlama> trainable(const SyntheticModelSpec& spec) {
    const auto checkpoint = loom::models::synthetic_store(spec, "memory");
    return std::make_unique<loom::train::TrainableLlama>(
        loom::io::parse_model_config(loom::models::synthetic_config_json(spec), "config.json"), checkpoint);
}

// A token stream with some structure (a repeated phrase with variations), every token trained.
loom::train::TokenStream token_stream(std::size_t tokens, std::size_t vocab) {
    loom::train::TokenStream stream;
    std::vector<int> ids;
    for (std::size_t i = 0; i < tokens; ++i) ids.push_back(int((i * i * 7 + i * 3 + 1) % vocab));
    stream.append(ids, true);
    stream.documents = 1;
    return stream;
}

loom::train::TrainingOptions small_options() {
    loom::train::TrainingOptions options;
    options.steps = 6;
    options.batch_size = 2;
    options.sequence_length = 12;
    options.gradient_accumulation = 2;
    options.learning_rate = 3e-3;
    options.warmup_steps = 2;
    options.schedule = loom::train::Schedule::cosine;
    options.clip = 1.0;
    options.seed = 5;
    options.validation_fraction = 0.2;
    return options;
}

std::vector<float> values_of(const loom::train::TrainableLlama& model) {
    const auto values = model.parameters.values();
    return {values.begin(), values.end()};
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("training: a tiny model overfits a short text and then recites it greedily", "[train][trainer]") {
    const SyntheticModelSpec spec = tiny_spec();
    auto model = trainable(spec);
    // 25 distinct tokens: each one determines the next, so the text can be learnt exactly.
    std::vector<int> text;
    for (int i = 0; i < 25; ++i) text.push_back((i * 17 + 4) % 64);
    loom::train::TokenStream stream;
    stream.append(text, true);
    stream.documents = 1;
    const loom::train::PackedDataset data(std::move(stream), 24, 0.0);
    loom::train::TrainingOptions options;
    options.steps = 150;
    options.batch_size = 1;
    options.sequence_length = 24;
    options.learning_rate = 1e-2;
    options.schedule = loom::train::Schedule::constant;
    options.adamw.weight_decay = 0.0;
    options.validation_fraction = 0.0;
    loom::ThreadPool pool(2);
    loom::train::Trainer trainer(*model, data, options, pool);
    double first = 0.0, last = 0.0;
    while (!trainer.finished()) {
        const loom::train::StepReport report = trainer.step();
        if (report.step == 1) first = report.loss;
        last = report.loss;
    }
    INFO("loss " << first << " -> " << last);
    CHECK(first > 3.0);
    CHECK(last < 0.05);

    loom::generate::GenerateOptions generation;
    generation.max_tokens = text.size() - 1;
    const auto result = loom::generate::generate(*model->network, std::span<const int>(text).first(1), generation, pool);
    CHECK(result.ids == std::vector<int>(text.begin() + 1, text.end()));
}

TEST_CASE("training: weights after several steps are bit-identical for 1, 2 and 3 threads", "[train][trainer][determinism]") {
    const char* preset = GENERATE("tiny-llama", "tiny-qwen2");
    INFO(preset);
    const SyntheticModelSpec spec = tiny_spec(preset);
    const loom::train::PackedDataset data(token_stream(200, spec.vocab_size), 12, 0.2);
    std::vector<float> expected;
    for (std::size_t threads : {1u, 2u, 3u}) {
        INFO(threads << " threads");
        auto model = trainable(spec);
        loom::ThreadPool pool(threads);
        loom::train::Trainer trainer(*model, data, small_options(), pool);
        while (!trainer.finished()) trainer.step();
        if (expected.empty()) expected = values_of(*model);
        else CHECK(same_bits(values_of(*model), expected));
    }
}

TEST_CASE("training: a resumed run equals an uninterrupted one bit for bit", "[train][trainer][resume]") {
    const SyntheticModelSpec spec = tiny_spec();
    const loom::train::PackedDataset data(token_stream(200, spec.vocab_size), 12, 0.2);
    loom::testing::ScratchFolder folder("train-resume");
    const nlohmann::json config = loom::models::synthetic_config_json(spec);
    loom::ThreadPool pool(2);
    const auto optimizer = GENERATE(loom::train::OptimizerKind::adamw, loom::train::OptimizerKind::sgd);
    loom::train::TrainingOptions options = small_options();
    options.optimizer = optimizer;
    options.sgd.momentum = 0.9;

    auto straight = trainable(spec);
    std::vector<double> straight_losses;
    {
        loom::train::Trainer trainer(*straight, data, options, pool);
        while (!trainer.finished()) straight_losses.push_back(trainer.step().loss);
    }

    std::vector<double> resumed_losses;
    {
        auto first_half = trainable(spec);
        loom::train::Trainer trainer(*first_half, data, options, pool);
        for (int i = 0; i < 3; ++i) resumed_losses.push_back(trainer.step().loss);
        trainer.save(folder / "checkpoint", config, {}, loom::train::SaveDtype::original);
    }
    auto second_half = trainable(spec);  // fresh weights: resume must bring back the trained ones
    loom::train::Trainer trainer(*second_half, data, options, pool);
    trainer.resume(folder / "checkpoint");
    CHECK(trainer.steps_taken() == 3);
    while (!trainer.finished()) resumed_losses.push_back(trainer.step().loss);
    CHECK(resumed_losses == straight_losses);
    CHECK(same_bits(values_of(*second_half), values_of(*straight)));

    SECTION("resuming with other options is refused") {
        loom::train::TrainingOptions other = options;
        other.learning_rate = 1e-3;
        auto model = trainable(spec);
        loom::train::Trainer different(*model, data, other, pool);
        CHECK_THROWS_WITH(different.resume(folder / "checkpoint"),
                          Catch::Contains("option \"learning_rate\"") && Catch::Contains("resume with the same options"));
    }
}

TEST_CASE("training: a saved folder loads back for inference", "[train][trainer][checkpoint]") {
    SyntheticModelSpec spec = tiny_spec();
    spec.dtype = loom::DType::bf16;
    loom::testing::ScratchFolder folder("train-save");
    loom::models::write_synthetic_model(folder / "source", spec);
    { std::ofstream(folder / "source" / "tokenizer.json") << "{}"; }  // copied along, whatever it holds
    auto model = trainable(spec);
    const loom::train::PackedDataset data(token_stream(200, spec.vocab_size), 12, 0.2);
    loom::ThreadPool pool(2);
    loom::train::Trainer trainer(*model, data, small_options(), pool);
    trainer.step();
    const nlohmann::json config = loom::models::synthetic_config_json(spec);
    trainer.save(folder / "f32", config, folder / "source", loom::train::SaveDtype::f32);
    trainer.save(folder / "bf16", config, folder / "source", loom::train::SaveDtype::original);
    CHECK(std::filesystem::exists(folder / "bf16" / "tokenizer.json"));
    CHECK(std::filesystem::exists(folder / "bf16" / "generation_config.json"));

    const std::vector<int> prompt{3, 9, 27, 17};
    loom::generate::GenerateOptions generation;
    generation.max_tokens = 8;
    std::vector<std::vector<float>> expected;
    generation.on_logits = [&](std::span<const float> row) { expected.emplace_back(row.begin(), row.end()); };
    loom::generate::generate(*model->network, prompt, generation, pool);

    const auto reloaded = loom::models::load_model((folder / "f32").string());
    CHECK(reloaded.config().torch_dtype == "float32");
    std::size_t step = 0;
    bool identical = true;
    generation.on_logits = [&](std::span<const float> row) {
        identical = identical && step < expected.size() &&
                    std::memcmp(row.data(), expected[step].data(), row.size() * sizeof(float)) == 0;
        ++step;
    };
    loom::generate::generate(*reloaded.network, prompt, generation, pool);
    CHECK(identical);

    const auto narrowed = loom::models::load_model((folder / "bf16").string());
    CHECK(narrowed.config().torch_dtype == "bfloat16");
    const auto& weight = narrowed.network->weights().get("model.layers.0.mlp.up_proj.weight");
    CHECK(weight.dtype == loom::DType::bf16);
    const auto& master = model->parameters.get("model.layers.0.mlp.up_proj.weight");
    for (std::size_t i = 0; i < master.size; i += 97) {
        CHECK(weight.at(i) == loom::bf16_to_f32(loom::f32_to_bf16(master.value[i])));
    }
}

TEST_CASE("training: bad runs stop with a clear message", "[train][trainer][errors]") {
    const SyntheticModelSpec spec = tiny_spec();
    loom::ThreadPool pool(1);
    SECTION("a sequence longer than the model's context") {
        auto model = trainable(spec);
        const loom::train::PackedDataset data(token_stream(400, spec.vocab_size), 65, 0.0);
        loom::train::TrainingOptions options = small_options();
        options.batch_size = 1;
        CHECK_THROWS_WITH(loom::train::Trainer(*model, data, options, pool),
                          Catch::Contains("sequence length 65 exceeds the model's context of 64"));
    }
    SECTION("a non-finite loss stops before the update and keeps the weights") {
        auto model = trainable(spec);
        const loom::train::PackedDataset data(token_stream(200, spec.vocab_size), 12, 0.2);
        loom::train::Trainer trainer(*model, data, small_options(), pool);
        trainer.step();
        model->parameters.get("model.norm.weight").value[3] = std::numeric_limits<float>::infinity();
        const std::vector<float> before = values_of(*model);
        CHECK_THROWS_AS(trainer.step(), loom::train::non_finite_error);
        CHECK_THROWS_WITH(trainer.step(), Catch::Contains("is not finite") && Catch::Contains("not applied"));
        CHECK(same_bits(values_of(*model), before));
        CHECK(trainer.steps_taken() == 1);
    }
    SECTION("an output folder that cannot be created") {
        auto model = trainable(spec);
        const loom::train::PackedDataset data(token_stream(200, spec.vocab_size), 12, 0.2);
        loom::train::Trainer trainer(*model, data, small_options(), pool);
        loom::testing::ScratchFolder folder("train-unwritable");
        { std::ofstream(folder / "a-file") << "x"; }
        CHECK_THROWS_WITH(trainer.save(folder / "a-file" / "out", loom::models::synthetic_config_json(spec), {},
                                       loom::train::SaveDtype::original),
                          Catch::Contains("cannot create the output folder"));
    }
}
