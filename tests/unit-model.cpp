// The model beyond its numerics: bit-identical logits for any thread count and any way
// of feeding the prompt, zero-copy bf16 weights, sharded and cached checkpoints, and a
// clear error for each way a checkpoint can disagree with its config.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <thread>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "loom/generate/generator.hpp"
#include "loom/models/load.hpp"
#include "loom/models/synthetic.hpp"
#include "test_support.hpp"

namespace {

using loom::models::LogitRows;
using loom::models::SyntheticModelSpec;

SyntheticModelSpec small_spec(const char* preset, loom::DType dtype) {
    SyntheticModelSpec spec = loom::models::synthetic_preset(preset);
    spec.dtype = dtype;
    spec.weight_std = 0.25;
    return spec;
}

// All logits of `prompt`, fed in chunks of `chunk` tokens.
std::vector<float> all_logits(const loom::models::Llama& model, const std::vector<int>& prompt, std::size_t chunk,
                              std::size_t threads) {
    loom::ThreadPool pool(threads);
    auto sequence = model.new_sequence(prompt.size());
    xt::xtensor<float, 2> logits;
    std::vector<float> collected;
    for (std::size_t position = 0; position < prompt.size(); position += chunk) {
        const std::size_t count = std::min(chunk, prompt.size() - position);
        model.forward(std::span<const int>(prompt.data() + position, count), sequence, LogitRows::all, logits, pool);
        collected.insert(collected.end(), logits.begin(), logits.end());
    }
    return collected;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<int> long_prompt(std::size_t vocab, std::size_t length) {
    std::vector<int> prompt;
    for (std::size_t i = 0; i < length; ++i) prompt.push_back(int((i * 101 + 7) % vocab));
    return prompt;
}

// Writes a model whose tensors have been edited by `edit` (config stays as `spec`).
void write_edited_model(const std::filesystem::path& folder, const SyntheticModelSpec& spec,
                        const std::function<void(std::vector<loom::io::TensorToWrite>&)>& edit) {
    loom::models::write_synthetic_model(folder, spec);
    auto tensors = loom::models::synthetic_tensors(spec);
    edit(tensors);
    loom::io::write_safetensors(folder / "model.safetensors", tensors);
}

}  // namespace

TEST_CASE("model: logits are bit-identical for 1-4 threads, prefill or token by token, any chunking", "[model][determinism]") {
    const char* preset = GENERATE("tiny-llama", "tiny-qwen2", "tiny-mistral");
    const loom::DType cache = GENERATE(loom::DType::f32, loom::DType::f16);
    const SyntheticModelSpec spec = small_spec(preset, loom::DType::bf16);
    const auto model = loom::models::load_synthetic_model(spec);
    model.network->set_cache_dtype(cache);
    const auto prompt = long_prompt(spec.vocab_size, 21);  // crosses the tiny Mistral's 8-token window
    const auto expected = all_logits(*model.network, prompt, prompt.size(), 1);
    for (std::size_t threads : {1u, 2u, 3u, 4u}) {
        for (std::size_t chunk : {std::size_t(1), std::size_t(5), prompt.size()}) {
            INFO(preset << ", " << loom::dtype_name(cache) << " cache: " << threads << " threads, chunks of " << chunk);
            CHECK(same_bits(all_logits(*model.network, prompt, chunk, threads), expected));
        }
    }
}

TEST_CASE("model: a bf16 checkpoint stays bf16 in memory, viewed straight from the mapped file", "[model][memory]") {
    loom::testing::ScratchFolder folder("bf16");
    const SyntheticModelSpec spec = small_spec("tiny-llama", loom::DType::bf16);
    loom::models::write_synthetic_model(folder.path(), spec);
    const auto model = loom::models::load_model(folder.path().string());
    const auto& store = model.network->weights();
    const auto file_size = std::filesystem::file_size(folder / "model.safetensors");
    CHECK(store.backing_bytes() == file_size);
    std::size_t weight_bytes = 0;
    for (const auto& name : store.names()) {
        CHECK(store.get(name).dtype == loom::DType::bf16);
        weight_bytes += store.get(name).nbytes();
    }
    CHECK(weight_bytes <= file_size);  // the file image holds every weight: no f32 copy was made
}

TEST_CASE("model: sharded checkpoints and Hugging Face cache ids load the same model", "[model][io]") {
    loom::testing::ScratchFolder folder("shards");
    const SyntheticModelSpec spec = small_spec("tiny-qwen2", loom::DType::f32);
    loom::models::write_synthetic_model(folder / "single", spec);
    loom::models::write_synthetic_model(folder / "sharded", spec, 40000);
    REQUIRE(std::filesystem::exists(folder / "sharded" / "model.safetensors.index.json"));
    REQUIRE(!std::filesystem::exists(folder / "sharded" / "model.safetensors"));

    // A cache laid out as huggingface_hub leaves it.
    const auto repo = folder / "hub" / "models--Loom--tiny-qwen2";
    const std::string commit = "0123456789abcdef0123456789abcdef01234567";
    std::filesystem::create_directories(repo / "refs");
    std::filesystem::create_directories(repo / "snapshots");
    std::ofstream(repo / "refs" / "main") << commit;
    std::filesystem::copy(folder / "sharded", repo / "snapshots" / commit, std::filesystem::copy_options::recursive);
    ::setenv("HF_HUB_CACHE", (folder / "hub").c_str(), 1);
    const auto cached = loom::models::load_model("Loom/tiny-qwen2");
    ::unsetenv("HF_HUB_CACHE");
    CHECK(cached.folder == repo / "snapshots" / commit);

    const auto prompt = long_prompt(spec.vocab_size, 9);
    const auto expected = all_logits(*loom::models::load_model((folder / "single").string()).network, prompt, 9, 2);
    CHECK(same_bits(all_logits(*loom::models::load_model((folder / "sharded").string()).network, prompt, 9, 2), expected));
    const auto mapped = loom::models::load_model((folder / "sharded").string(), loom::FileAccess::map);
    CHECK(same_bits(all_logits(*mapped.network, prompt, 9, 2), expected));
    CHECK(same_bits(all_logits(*cached.network, prompt, 9, 2), expected));
}

TEST_CASE("model: a checkpoint that disagrees with its config is refused, naming the tensor", "[model][errors]") {
    loom::testing::ScratchFolder folder("mismatch");
    const SyntheticModelSpec spec = small_spec("tiny-llama", loom::DType::f32);
    auto refuses = [&](const std::function<void(std::vector<loom::io::TensorToWrite>&)>& edit, const std::string& fragment) {
        write_edited_model(folder.path(), spec, edit);
        CHECK_THROWS_AS(loom::models::load_model(folder.path().string()), loom::format_error);
        CHECK_THROWS_WITH(loom::models::load_model(folder.path().string()), Catch::Contains(fragment));
    };
    SECTION("missing tensor") {
        refuses([](auto& tensors) { tensors.erase(tensors.begin() + 3); }, "missing tensor");
        refuses([](auto& tensors) { tensors.erase(tensors.begin() + 3); }, "model.layers.0");
    }
    SECTION("wrong shape") {
        refuses(
            [](auto& tensors) {
                for (auto& tensor : tensors) {
                    if (tensor.name == "model.layers.1.mlp.up_proj.weight") {
                        tensor.shape = {tensor.shape[1], tensor.shape[0]};
                    }
                }
            },
            "model.layers.1.mlp.up_proj.weight' has shape [64, 160], but config.json implies [160, 64]");
    }
    SECTION("extra tensor: a third layer the config does not have") {
        refuses([](auto& tensors) { tensors.push_back({"model.layers.2.input_layernorm.weight", loom::DType::f32, {64}, std::vector<float>(64, 1.0f)}); },
                "unexpected tensor 'model.layers.2.input_layernorm.weight'");
    }
    SECTION("untied model without lm_head.weight") {
        SyntheticModelSpec untied = spec;
        untied.tie_word_embeddings = false;
        write_edited_model(folder.path(), untied, [](auto& tensors) { tensors.pop_back(); });
        CHECK_THROWS_WITH(loom::models::load_model(folder.path().string()), Catch::Contains("lm_head.weight"));
    }
    SECTION("ignorable rotary buffers from older exporters are accepted") {
        write_edited_model(folder.path(), spec, [](auto& tensors) {
            tensors.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", loom::DType::f32, {8}, std::vector<float>(8, 1.0f)});
        });
        CHECK_NOTHROW(loom::models::load_model(folder.path().string()));
    }
}

TEST_CASE("model: corrupt and truncated checkpoints fail with the file named, never with zeros", "[model][errors]") {
    loom::testing::ScratchFolder folder("corrupt");
    const SyntheticModelSpec spec = small_spec("tiny-llama", loom::DType::bf16);
    loom::models::write_synthetic_model(folder.path(), spec);
    const auto weights = folder / "model.safetensors";
    SECTION("truncated download") {
        std::filesystem::resize_file(weights, std::filesystem::file_size(weights) - 100);
        CHECK_THROWS_WITH(loom::models::load_model(folder.path().string()), Catch::Contains("model.safetensors"));
    }
    SECTION("header overwritten") {
        std::fstream file(weights, std::ios::in | std::ios::out | std::ios::binary);
        file.seekp(8);
        file.write("{{{{", 4);
        file.close();
        CHECK_THROWS_AS(loom::models::load_model(folder.path().string()), loom::format_error);
    }
    SECTION("config.json malformed") {
        std::ofstream(folder / "config.json") << "{\"architectures\": [\"LlamaForCausalLM\"], ";
        CHECK_THROWS_WITH(loom::models::load_model(folder.path().string()), Catch::Contains("config.json"));
    }
    SECTION("no weights at all") {
        std::filesystem::remove(weights);
        CHECK_THROWS_AS(loom::models::load_model(folder.path().string()), loom::not_found_error);
    }
}

TEST_CASE("model: overflowing weights stop generation with a clear error", "[model][errors]") {
    loom::testing::ScratchFolder folder("overflow");
    const SyntheticModelSpec spec = small_spec("tiny-llama", loom::DType::f32);
    write_edited_model(folder.path(), spec, [](auto& tensors) {
        for (auto& tensor : tensors) {
            if (tensor.name == "model.norm.weight") tensor.values.assign(tensor.values.size(), 3e38f);
        }
    });
    const auto model = loom::models::load_model(folder.path().string());
    loom::ThreadPool pool(1);
    const std::vector<int> prompt = {1, 2, 3};
    CHECK_THROWS_WITH(loom::generate::generate(*model.network, prompt, {}, pool), Catch::Contains("non-finite logit"));
}

TEST_CASE("model: context and vocabulary limits are checked before any work", "[model][errors]") {
    const SyntheticModelSpec spec = small_spec("tiny-llama", loom::DType::f32);
    const auto model = loom::models::load_synthetic_model(spec);
    loom::ThreadPool pool(1);
    auto sequence = model.network->new_sequence(4);
    xt::xtensor<float, 2> logits;
    const std::vector<int> five = {1, 2, 3, 4, 5};
    CHECK_THROWS_WITH(model.network->forward(five, sequence, LogitRows::last, logits, pool), Catch::Contains("context full"));
    CHECK(sequence.position() == 0);
    const std::vector<int> out_of_range = {1, 256};
    CHECK_THROWS_WITH(model.network->forward(out_of_range, sequence, LogitRows::last, logits, pool),
                      Catch::Contains("token id 256"));
}

TEST_CASE("model: absurd sizes in config.json are refused before anything is allocated", "[model][errors]") {
    auto config = loom::models::synthetic_config_json(small_spec("tiny-llama", loom::DType::f32));
    config["num_attention_heads"] = std::uint64_t(1) << 62;
    config["num_key_value_heads"] = std::uint64_t(1) << 62;
    config["head_dim"] = 4;
    CHECK_THROWS_WITH(loom::io::parse_model_config(config, "config.json"),
                      Catch::Contains("num_attention_heads") && Catch::Contains("beyond any supported model"));
    config = loom::models::synthetic_config_json(small_spec("tiny-llama", loom::DType::f32));
    config["max_position_embeddings"] = std::uint64_t(1) << 59;
    CHECK_THROWS_WITH(loom::io::parse_model_config(config, "config.json"), Catch::Contains("max_position_embeddings"));
}

TEST_CASE("model: generation stops at the context length whatever max_tokens says", "[model]") {
    SyntheticModelSpec spec = small_spec("tiny-llama", loom::DType::f32);
    spec.max_position_embeddings = 32;
    spec.eos_token_ids = {};
    const auto model = loom::models::load_synthetic_model(spec);
    loom::ThreadPool pool(1);
    loom::generate::GenerateOptions options;
    options.max_tokens = std::numeric_limits<std::size_t>::max();
    const std::vector<int> prompt = {1, 2, 3};
    const auto result = loom::generate::generate(*model.network, prompt, options, pool);
    CHECK(result.ids.size() == 29);
    CHECK(result.finish_reason == loom::generate::FinishReason::length);
}

TEST_CASE("model: a reused sequence gives the bits of a fresh one, keeping buffers that are large enough", "[model][determinism]") {
    const auto model = loom::models::load_synthetic_model(small_spec("tiny-llama", loom::DType::f32));
    const auto& network = *model.network;
    loom::ThreadPool pool(2);
    auto run = [&](const std::vector<int>& prompt, std::size_t max_tokens, loom::models::SequenceState* reused) {
        loom::generate::GenerateOptions options;
        options.max_tokens = max_tokens;
        options.eos_token_ids = {};
        std::vector<float> logits;
        options.on_logits = [&](std::span<const float> row) { logits.insert(logits.end(), row.begin(), row.end()); };
        const auto ids = reused ? loom::generate::generate(network, prompt, options, pool, *reused).ids
                                : loom::generate::generate(network, prompt, options, pool).ids;
        return std::pair(ids, logits);
    };
    // Longest first, so the later runs find a cache full of another sequence's positions.
    loom::models::SequenceState sequence;
    const std::vector<std::pair<std::vector<int>, std::size_t>> runs = {
        {long_prompt(network.config().vocab_size, 40), 24}, {{5, 6, 7}, 9}, {long_prompt(network.config().vocab_size, 19), 5}};
    for (const auto& [prompt, max_tokens] : runs) {
        INFO("prompt of " << prompt.size() << " tokens");
        const auto fresh = run(prompt, max_tokens, nullptr);
        const auto reused = run(prompt, max_tokens, &sequence);
        CHECK(reused.first == fresh.first);
        CHECK(same_bits(reused.second, fresh.second));
        CHECK(sequence.cache.capacity() == 64);  // the first run's, kept
        CHECK(sequence.position() == prompt.size() + max_tokens - 1);
    }
    network.restart(sequence, 100);  // too small: replaced
    CHECK(sequence.cache.capacity() == 100);
    CHECK(sequence.position() == 0);
    CHECK_THROWS_WITH(network.restart(sequence, 0), Catch::Contains("context size must be at least 1"));
    CHECK(sequence.cache.capacity() == 100);  // a refused restart keeps the cache it had
    model.network->set_cache_dtype(loom::DType::f16);  // another element type: replaced
    network.restart(sequence, 50);
    CHECK(sequence.cache.dtype() == loom::DType::f16);
    CHECK(sequence.cache.capacity() == 50);
}

TEST_CASE("model: an f16 KV cache takes half the memory and stays close to the f32 one", "[model][kv-cache]") {
    const char* preset = GENERATE("tiny-llama", "tiny-qwen2", "tiny-mistral");
    const SyntheticModelSpec spec = small_spec(preset, loom::DType::f32);
    const auto model = loom::models::load_synthetic_model(spec);
    const auto prompt = long_prompt(spec.vocab_size, 21);
    const auto exact = all_logits(*model.network, prompt, 4, 2);
    CHECK(model.network->new_sequence(64).cache.dtype() == loom::DType::f32);
    const std::size_t f32_bytes = model.network->new_sequence(64).cache.bytes();

    model.network->set_cache_dtype(loom::DType::f16);
    CHECK(model.network->new_sequence(64).cache.bytes() * 2 == f32_bytes);
    const auto rounded = all_logits(*model.network, prompt, 4, 2);
    REQUIRE(rounded.size() == exact.size());
    CHECK_FALSE(same_bits(rounded, exact));  // the cache really holds f16
    // Keys and values rounded to 11 significant bits move each logit by a small fraction of
    // the logits' spread.
    float largest = 0.0f, spread = 0.0f;
    for (std::size_t i = 0; i < exact.size(); ++i) {
        largest = std::max(largest, std::abs(rounded[i] - exact[i]));
        spread = std::max(spread, std::abs(exact[i]));
    }
    INFO(preset << ": largest difference " << largest << ", largest logit " << spread);
    CHECK(largest < 0.01f * spread);

    CHECK_THROWS_WITH(model.network->set_cache_dtype(loom::DType::bf16), Catch::Contains("F32 or F16 values, not BF16"));
    CHECK(model.network->cache_dtype() == loom::DType::f16);  // a refused type changes nothing
}

TEST_CASE("model: threads sharing one model and one pool get the single-thread logits", "[model][determinism]") {
    const SyntheticModelSpec spec = small_spec("tiny-qwen2", loom::DType::bf16);
    const auto model = loom::models::load_synthetic_model(spec);
    const auto prompt = long_prompt(spec.vocab_size, 13);
    const auto expected = all_logits(*model.network, prompt, prompt.size(), 1);
    loom::ThreadPool shared(2);
    std::vector<std::vector<float>> results(4);
    std::vector<std::thread> callers;
    for (std::size_t t = 0; t < results.size(); ++t) {
        callers.emplace_back([&, t] {
            auto sequence = model.network->new_sequence(prompt.size());
            xt::xtensor<float, 2> logits;
            for (std::size_t position = 0; position < prompt.size(); ++position) {
                model.network->forward(std::span<const int>(&prompt[position], 1), sequence, LogitRows::all, logits, shared);
                results[t].insert(results[t].end(), logits.begin(), logits.end());
            }
        });
    }
    for (auto& caller : callers) caller.join();
    for (const auto& result : results) CHECK(same_bits(result, expected));
}

TEST_CASE("model: a sequence's logits do not change when other sequences share its batch", "[model][determinism][batch]") {
    using loom::models::BatchEntry;
    const char* preset = GENERATE("tiny-llama", "tiny-qwen2", "tiny-mistral");
    const loom::DType dtype = GENERATE(loom::DType::f32, loom::DType::bf16, loom::DType::f16);
    const loom::DType cache = GENERATE(loom::DType::f32, loom::DType::f16);
    const SyntheticModelSpec spec = small_spec(preset, dtype);
    const auto model = loom::models::load_synthetic_model(spec);
    model.network->set_cache_dtype(cache);
    const loom::models::Llama& network = *model.network;

    // Three prompts of different lengths, each followed by 6 fixed decode tokens.
    const std::vector<std::vector<int>> prompts = {long_prompt(spec.vocab_size, 7), long_prompt(spec.vocab_size, 13),
                                                   long_prompt(spec.vocab_size, 21)};
    const std::vector<int> continuation = {3, 1, 4, 1, 5, 9};
    const std::size_t context = 21 + continuation.size();

    // Alone: prefill (every row's logits), then one token at a time.
    std::vector<std::vector<float>> alone(prompts.size());
    loom::ThreadPool single(1);
    for (std::size_t s = 0; s < prompts.size(); ++s) {
        auto sequence = network.new_sequence(context);
        xt::xtensor<float, 2> logits;
        network.forward(prompts[s], sequence, LogitRows::all, logits, single);
        alone[s].assign(logits.begin(), logits.end());
        for (int token : continuation) {
            network.forward(std::span<const int>(&token, 1), sequence, LogitRows::last, logits, single);
            alone[s].insert(alone[s].end(), logits.begin(), logits.end());
        }
    }

    // Together: sequence s joins at step s (its prefill runs beside the others' decoding),
    // then all decode in one batch per step.
    const std::size_t threads = GENERATE(1u, 3u);
    loom::ThreadPool pool(threads);
    std::vector<loom::models::SequenceState> sequences;
    for (std::size_t s = 0; s < prompts.size(); ++s) sequences.push_back(network.new_sequence(context));
    std::vector<std::vector<float>> together(prompts.size());
    std::vector<std::size_t> decoded(prompts.size(), 0);
    loom::models::ForwardScratch scratch;
    xt::xtensor<float, 2> logits;
    for (std::size_t step = 0; step < prompts.size() + continuation.size(); ++step) {
        std::vector<BatchEntry> batch;
        std::vector<std::size_t> members;
        for (std::size_t s = 0; s < prompts.size() && s <= step; ++s) {
            if (s == step) {
                batch.push_back({prompts[s], &sequences[s], LogitRows::all});
            } else if (decoded[s] < continuation.size()) {
                batch.push_back({std::span<const int>(&continuation[decoded[s]++], 1), &sequences[s], LogitRows::last});
            } else {
                continue;
            }
            members.push_back(s);
        }
        network.forward(batch, scratch, logits, pool);
        std::size_t row = 0;
        for (std::size_t i = 0; i < members.size(); ++i) {
            const std::size_t rows = batch[i].rows == LogitRows::all ? batch[i].tokens.size() : 1;
            together[members[i]].insert(together[members[i]].end(), logits.begin() + row * spec.vocab_size,
                                        logits.begin() + (row + rows) * spec.vocab_size);
            row += rows;
        }
    }
    for (std::size_t s = 0; s < prompts.size(); ++s) {
        INFO(preset << ", " << loom::dtype_name(cache) << " cache, sequence " << s << ", " << threads << " threads");
        CHECK(same_bits(together[s], alone[s]));
    }
}

TEST_CASE("model: a batch that names one sequence twice is refused", "[model][batch][errors]") {
    const SyntheticModelSpec spec = small_spec("tiny-llama", loom::DType::f32);
    const auto model = loom::models::load_synthetic_model(spec);
    auto sequence = model.network->new_sequence(8);
    const std::vector<int> tokens = {1, 2};
    const loom::models::BatchEntry twice[] = {{tokens, &sequence, LogitRows::last}, {tokens, &sequence, LogitRows::last}};
    loom::models::ForwardScratch scratch;
    xt::xtensor<float, 2> logits;
    loom::ThreadPool pool(1);
    CHECK_THROWS_WITH(model.network->forward(twice, scratch, logits, pool),
                      Catch::Contains("a sequence can appear only once in a batch"));
    CHECK(sequence.position() == 0);
}
