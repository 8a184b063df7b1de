// The training pass against PyTorch autograd (tests/reference/training_reference.py, a
// plain-PyTorch model we did not derive from ours), as llm.c's test_gpt2.c checks GPT-2:
// the loss and every parameter gradient of tiny LLaMA, Qwen2 and Mistral checkpoints, then
// the losses of 10 AdamW steps with clipping.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "loom/io/safetensors.hpp"
#include "loom/models/synthetic.hpp"
#include "loom/train/llama.hpp"
#include "loom/train/optimizer.hpp"
#include "test_support.hpp"

namespace {

using loom::models::SyntheticModelSpec;

constexpr std::size_t adamw_steps = 10;
constexpr double learning_rate = 2e-3, weight_decay = 0.1, clip = 1.0;

// Two sequences of 9 tokens; a few targets ignored (prompt tokens), one sequence crossing
// the tiny Mistral's 8-token window.
loom::train::Batch reference_batch(std::size_t vocab) {
    loom::train::Batch batch{2, 9, {}, {}};
    for (std::size_t i = 0; i < 18; ++i) {
        batch.inputs.push_back(int((i * 41 + 7) % vocab));
        batch.targets.push_back(i == 0 || i == 1 || i == 10 ? loom::train::ignore_index : int((i * 41 + 48) % vocab));
    }
    return batch;
}

void write_batch(const loom::train::Batch& batch, const std::filesystem::path& file) {
    const auto as_floats = [](const std::vector<int>& ids) { return std::vector<float>(ids.begin(), ids.end()); };
    loom::io::write_safetensors(file, {{"inputs", loom::DType::f32, {batch.rows, batch.sequence_length}, as_floats(batch.inputs)},
                                       {"targets", loom::DType::f32, {batch.rows, batch.sequence_length}, as_floats(batch.targets)}});
}

double max_relative_difference(const float* ours, const loom::TensorView& reference) {
    double worst = 0.0, scale = 0.0;
    for (std::size_t i = 0; i < reference.numel(); ++i) {
        scale = std::max(scale, std::abs(double(reference.at(i))));
        worst = std::max(worst, std::abs(double(ours[i]) - double(reference.at(i))));
    }
    return scale > 0.0 ? worst / scale : worst;
}

}  // namespace

TEST_CASE("training against PyTorch autograd: loss, every gradient, 10 AdamW steps", "[train][reference][torch]") {
    if (!loom::testing::python_torch_available()) {
        WARN("python3 with torch is not available: skipped");
        return;
    }
    const char* preset = GENERATE("tiny-llama", "tiny-qwen2", "tiny-mistral");
    INFO(preset);
    SyntheticModelSpec spec = loom::models::synthetic_preset(preset);
    spec.weight_std = 0.1;
    spec.seed = 3;
    spec.dtype = loom::DType::bf16;  // trained as f32 master copies, as PyTorch upcasts them
    loom::testing::ScratchFolder folder("train-reference");
    loom::models::write_synthetic_model(folder / "model", spec);
    const loom::train::Batch batch = reference_batch(spec.vocab_size);
    write_batch(batch, folder / "batch.safetensors");
    const std::string command = std::string(LOOM_TEST_PYTHON) + " " +
                                loom::testing::source_path("tests/reference/training_reference.py") + " --model " +
                                (folder / "model").string() + " --batch " + (folder / "batch.safetensors").string() +
                                " --out " + (folder / "reference.safetensors").string() + " --steps " +
                                std::to_string(adamw_steps) + " --lr " + std::to_string(learning_rate) +
                                " --weight-decay " + std::to_string(weight_decay) + " --clip " + std::to_string(clip);
    REQUIRE(loom::testing::run_command(command) == 0);
    const auto reference = loom::io::TensorStore::open(folder / "reference.safetensors");

    const auto checkpoint = loom::io::TensorStore::open(folder / "model");
    loom::train::TrainableLlama model(loom::io::load_model_config(folder / "model" / "config.json"), checkpoint);
    loom::ThreadPool pool(2);
    loom::train::LlamaTraining training(*model.network, model.gradient_of());
    model.parameters.zero_gradients();
    const loom::train::Loss loss = training.forward_backward(batch, pool);
    const double reference_loss = reference.get("loss").at(0);
    CHECK(std::abs(loss.value - reference_loss) <= 1e-5 * reference_loss);
    for (const loom::train::Parameter& parameter : model.parameters.list()) {
        INFO(parameter.name);
        const loom::TensorView& expected = reference.get("grad." + parameter.name);
        REQUIRE(expected.shape == parameter.shape);
        CHECK(max_relative_difference(parameter.gradient, expected) < 1e-4);
    }

    loom::train::AdamW optimizer(model.parameters, {0.9, 0.999, 1e-8, weight_decay});
    const loom::TensorView& reference_losses = reference.get("step_losses");
    REQUIRE(reference_losses.numel() == adamw_steps);
    for (std::size_t step = 0; step < adamw_steps; ++step) {
        if (step > 0) {
            model.parameters.zero_gradients();
            const double value = training.forward_backward(batch, pool).value;
            INFO("step " << step << ": loss " << value << ", PyTorch " << reference_losses.at(step));
            // The reference's own float32 products round differently with each BLAS kernel, and
            // AdamW's normalised steps carry that into the loss: on an Intel Xeon, PyTorch's
            // loss at steps 2-5 came 1.0-1.5e-4 from Loom's with OpenBLAS's SkylakeX and
            // Prescott kernels and within 1e-4 with its Haswell and Zen ones (Loom's bits are
            // the same on every target); Debian's reference BLAS gave 1.2-1.3e-4. A wrong
            // AdamW detail moves these losses by far more (the learning rate 1% off: 0.7-1.3e-2).
            CHECK(std::abs(value - reference_losses.at(step)) < 3e-4);
        }
        loom::train::clip_gradient_norm(model.parameters, clip, &pool);
        optimizer.step(learning_rate, &pool);
    }
    CHECK(reference_losses.at(adamw_steps - 1) < reference_losses.at(0) - 0.05);  // the steps did move the model
}
