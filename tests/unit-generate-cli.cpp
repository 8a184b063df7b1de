// loom_generate: the JSON report, stopping at EOS, reproducible sampling, --dump-logits,
// and a one-line error with a non-zero exit for every bad argument or model.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/generate/command_line.hpp"
#include "loom/models/synthetic.hpp"
#include "loom/chat/chat_template.hpp"
#include "loom/tokenizer/load.hpp"
#include "test_support.hpp"

namespace {

struct Run {
    int exit_code;
    std::string out, err;
};

Run generate(const std::vector<std::string>& arguments) {
    std::ostringstream out, err;
    const int code = loom::generate::run_generate(arguments, out, err);
    return {code, out.str(), err.str()};
}

nlohmann::json generate_json(const std::string& model, const std::string& ids, std::vector<std::string> extra = {}) {
    std::vector<std::string> arguments = {"--model", model, "--ids", ids, "--format", "json"};
    arguments.insert(arguments.end(), extra.begin(), extra.end());
    const Run run = generate(arguments);
    INFO(run.err);
    REQUIRE(run.exit_code == 0);
    return nlohmann::json::parse(run.out);
}

loom::models::SyntheticModelSpec cli_spec() {
    auto spec = loom::models::synthetic_preset("tiny-qwen2");
    spec.weight_std = 0.25;
    spec.eos_token_ids = {300};  // one id these weights never choose in the runs below (their lengths check it)
    spec.vocab_size = 320;
    return spec;
}

}  // namespace

TEST_CASE("loom_generate: --format json reports ids, finish reason and timings", "[cli]") {
    loom::testing::ScratchFolder folder("cli-json");
    loom::models::write_synthetic_model(folder.path(), cli_spec());
    const auto report = generate_json(folder.path().string(), "5, 6,7", {"--max-tokens", "12"});
    CHECK(report["prompt_ids"] == nlohmann::json({5, 6, 7}));
    CHECK(report["ids"].size() == 12);
    CHECK(report["finish_reason"] == "length");
    CHECK(report["prompt_tokens"] == 3);
    for (const char* key : {"prefill_tokens_per_second", "decode_tokens_per_second", "time_to_first_token_ms"}) {
        INFO(key);
        CHECK(report[key].get<double>() > 0.0);
    }
    // The summary goes to stderr so stdout stays machine-readable.
    const Run text = generate({"--model", folder.path().string(), "--ids", "5,6,7", "--max-tokens", "3"});
    CHECK(text.err.find("prefill:") != std::string::npos);
    CHECK(text.err.find("decode:") != std::string::npos);
    CHECK(text.err.find("time to first token:") != std::string::npos);
}

TEST_CASE("loom_generate: stops at any EOS id from config.json or generation_config.json", "[cli]") {
    loom::testing::ScratchFolder folder("cli-eos");
    auto spec = cli_spec();
    loom::models::write_synthetic_model(folder.path(), spec);
    const auto free_run = generate_json(folder.path().string(), "5,6,7", {"--max-tokens", "10"});
    const int third = free_run["ids"][2];
    const bool third_is_new = free_run["ids"][0] != third && free_run["ids"][1] != third;
    if (!third_is_new) {
        WARN("third greedy token repeats an earlier one; EOS placement check skipped");
        return;
    }
    std::ofstream(folder / "generation_config.json") << nlohmann::json({{"eos_token_id", {300, third}}}).dump();
    const auto stopped = generate_json(folder.path().string(), "5,6,7", {"--max-tokens", "10"});
    CHECK(stopped["finish_reason"] == "stop");
    CHECK(stopped["ids"].size() == 3);
    CHECK(stopped["ids"].back() == third);
}

TEST_CASE("loom_generate: sampling is reproducible for a seed and independent of --threads and --mmap", "[cli][determinism]") {
    loom::testing::ScratchFolder folder("cli-seed");
    loom::models::write_synthetic_model(folder.path(), cli_spec());
    const std::string model = folder.path().string();
    const std::vector<std::string> sampling = {"--max-tokens", "24", "--temperature", "0.9", "--top-k", "40",
                                               "--top-p", "0.95", "--min-p", "0.01", "--repeat-penalty", "1.1"};
    auto with = [&](std::vector<std::string> extra) {
        extra.insert(extra.end(), sampling.begin(), sampling.end());
        return extra;
    };
    const auto one = generate_json(model, "9,8,7", with({"--seed", "5", "--threads", "1", "--dump-logits", (folder / "a.bin").string()}));
    // --mmap maps the weights instead of reading them: the same bytes, so the same logits.
    const auto two = generate_json(model, "9,8,7",
                                   with({"--seed", "5", "--threads", "2", "--mmap", "--dump-logits", (folder / "b.bin").string()}));
    const auto other = generate_json(model, "9,8,7", with({"--seed", "6"}));
    CHECK(one["ids"] == two["ids"]);
    CHECK(one["ids"] != other["ids"]);

    // --dump-logits: one f32 row of the vocabulary per generated token, identical bytes across thread counts.
    const auto read = loom::testing::read_file;
    const std::string a = read(folder / "a.bin");
    CHECK(a.size() == 24 * cli_spec().vocab_size * sizeof(float));
    CHECK(a == read(folder / "b.bin"));

    // --cache-type f16: other logits (the cache holds rounded keys and values), the same ones
    // for any thread count.
    const auto f16_one = generate_json(
        model, "9,8,7", with({"--seed", "5", "--threads", "1", "--cache-type", "f16", "--dump-logits", (folder / "c.bin").string()}));
    const auto f16_two = generate_json(
        model, "9,8,7", with({"--seed", "5", "--threads", "2", "--cache-type", "f16", "--dump-logits", (folder / "d.bin").string()}));
    CHECK(f16_one["ids"] == f16_two["ids"]);
    const std::string c = read(folder / "c.bin");
    CHECK(c.size() == a.size());
    CHECK(c != a);
    CHECK(c == read(folder / "d.bin"));
    CHECK(generate_json(model, "9,8,7", with({"--seed", "5", "--cache-type", "f32"}))["ids"] == one["ids"]);
}

TEST_CASE("loom_generate: the built-in default model runs without --model", "[cli]") {
    const Run run = generate({"--ids", "1,2,3", "--max-tokens", "8", "--format", "ids"});
    CHECK(run.exit_code == 0);
    std::istringstream ids(run.out);
    int count = 0;
    for (int id; ids >> id;) ++count;
    CHECK(count == 8);
}

TEST_CASE("loom_generate: bad arguments and bad models give one line and a non-zero exit", "[cli][errors]") {
    loom::testing::ScratchFolder folder("cli-errors");
    loom::models::write_synthetic_model(folder.path(), cli_spec());
    const std::string model = folder.path().string();
    struct Case {
        std::vector<std::string> arguments;
        int exit_code;
        const char* fragment;
    };
    const std::vector<Case> cases = {
        {{}, 2, "give a prompt"},
        {{"--ids", "1,,2"}, 2, "empty item"},
        {{"--ids", "1,-2"}, 2, "non-negative"},
        {{"--ids", "1", "--max-tokens", "ten"}, 2, "--max-tokens"},
        {{"--ids", "1", "--temperature", "hot"}, 2, "--temperature"},
        {{"--ids", "1", "--temperature", "-1"}, 2, "temperature must be >= 0"},
        {{"--ids", "1", "--top-p", "0"}, 2, "top_p"},
        {{"--ids", "1", "--threads", "0"}, 2, "--threads"},
        {{"--ids", "1", "--format", "xml"}, 2, "--format"},
        {{"--ids", "1", "--cache-type", "bf16"}, 2, "--cache-type must be f32 or f16, got 'bf16'"},
        {{"--ids", "1", "--bogus", "1"}, 2, "unknown option '--bogus'"},
        {{"--ids", "1", "--prompt", "hi"}, 2, "not both"},
        {{"--ids"}, 2, "--ids needs a value"},
        {{"--model", model, "--ids", "1,999"}, 2, "token id 999"},
        {{"--model", (folder / "absent").string(), "--ids", "1"}, 1, "absent"},
        {{"--model", "NoSuchOrg/NoSuchModel", "--ids", "1"}, 1, "models--NoSuchOrg--NoSuchModel"},
    };
    for (const Case& c : cases) {
        std::vector<std::string> arguments = c.arguments;
        const Run run = generate(arguments);
        INFO("arguments: " << nlohmann::json(arguments).dump() << "\nstderr: " << run.err);
        CHECK(run.exit_code == c.exit_code);
        CHECK(run.err.find(c.fragment) != std::string::npos);
        CHECK(run.err.rfind("loom_generate: error: ", 0) == 0);
        CHECK(std::count(run.err.begin(), run.err.end(), '\n') == 1);
    }
}

TEST_CASE("loom_generate: the installed binary streams ids and exits non-zero on errors", "[cli]") {
    loom::testing::ScratchFolder folder("cli-binary");
    loom::models::write_synthetic_model(folder.path(), cli_spec());
    const std::string binary = LOOM_GENERATE_BINARY;
    CHECK(loom::testing::run_command(binary + " --model " + folder.path().string() +
                                     " --ids 1,2,3 --max-tokens 4 > " + (folder / "out.txt").string() + " 2>&1") == 0);
    CHECK(loom::testing::run_command(binary + " --ids 1,x > /dev/null 2>&1") == 2);
    CHECK(loom::testing::run_command(binary + " --help > /dev/null") == 0);
}

namespace {

// A tiny model with TinyLlama's real tokenizer files (32000 tokens, Zephyr chat template).
std::filesystem::path model_with_tokenizer(const loom::testing::ScratchFolder& folder, bool sentencepiece_only = false,
                                           loom::DType dtype = loom::DType::f32) {
    auto spec = loom::models::synthetic_preset("tiny-llama");
    spec.dtype = dtype;
    spec.vocab_size = 32000;
    spec.weight_std = 0.25;
    spec.eos_token_ids = {2};
    loom::models::write_synthetic_model(folder.path(), spec);
    const std::string data = loom::testing::source_path("tests/data/tokenizers/tinyllama-1.1b-chat-v1.0/");
    for (const char* name : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"}) {
        if (sentencepiece_only && std::string(name) == "tokenizer.json") continue;
        std::filesystem::copy_file(data + name, folder / name);
    }
    return folder.path();
}

}  // namespace

TEST_CASE("loom_generate: --prompt encodes as tokenizer(text) and streams decoded text", "[cli][tokenizer]") {
    loom::testing::ScratchFolder folder("cli-prompt");
    const auto model = model_with_tokenizer(folder).string();
    const auto tokenizer = loom::tokenizer::load_tokenizer(model);
    const std::string prompt = "Once upon a time, in a land of 1234 rivers";

    const Run json_run = generate({"--model", model, "--prompt", prompt, "--max-tokens", "16", "--format", "json"});
    INFO(json_run.err);
    REQUIRE(json_run.exit_code == 0);
    const auto report = nlohmann::json::parse(json_run.out);
    const auto prompt_ids = report["prompt_ids"].get<std::vector<int>>();
    CHECK(prompt_ids == tokenizer->encode(prompt));
    CHECK(prompt_ids.front() == 1);  // <s> from the post-processor, as tokenizer(text) adds it
    // "text" is what follows the prompt: decoding the new ids alone would drop the leading
    // space a SentencePiece-style decoder strips from a first token.
    auto all_ids = prompt_ids;
    const auto ids = report["ids"].get<std::vector<int>>();
    all_ids.insert(all_ids.end(), ids.begin(), ids.end());
    const std::string prompt_text = tokenizer->decode(prompt_ids, true);
    const std::string full_text = tokenizer->decode(all_ids, true);
    REQUIRE(full_text.compare(0, prompt_text.size(), prompt_text) == 0);
    CHECK(report["text"] == full_text.substr(prompt_text.size()));

    // The streamed text is the same text, printed as it is generated.
    const Run text_run = generate({"--model", model, "--prompt", prompt, "--max-tokens", "16"});
    CHECK(text_run.out == report["text"].get<std::string>() + "\n");

    // A folder with only tokenizer.model (SentencePiece) gives the same prompt ids here.
    if (loom::tokenizer::sentencepiece_available) {
        loom::testing::ScratchFolder spm_folder("cli-prompt-spm");
        const Run spm_run = generate({"--model", model_with_tokenizer(spm_folder, true).string(), "--prompt", prompt,
                                      "--max-tokens", "4", "--format", "json"});
        INFO(spm_run.err);
        REQUIRE(spm_run.exit_code == 0);
        CHECK(nlohmann::json::parse(spm_run.out)["prompt_ids"].get<std::vector<int>>() == prompt_ids);
    }
}

TEST_CASE("loom_generate: --chat renders the model's chat template, --system included", "[cli][tokenizer]") {
    loom::testing::ScratchFolder folder("cli-chat");
    const auto model = model_with_tokenizer(folder).string();
    const auto tokenizer = loom::tokenizer::load_tokenizer(model);
    const Run run = generate({"--model", model, "--prompt", "What is 2+2?", "--chat", "--system", "Be brief.",
                              "--max-tokens", "4", "--format", "json"});
    INFO(run.err);
    REQUIRE(run.exit_code == 0);
    const auto prompt_ids = nlohmann::json::parse(run.out)["prompt_ids"].get<std::vector<int>>();
    // TinyLlama's Zephyr template, rendered by hand.
    const std::string expected = "<|system|>\nBe brief.</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n";
    const auto source = loom::chat::load_chat_template(model);
    REQUIRE(source);
    const nlohmann::json messages = {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "What is 2+2?"}}};
    CHECK(loom::chat::apply_chat_template(*source, messages, true, loom::chat::chat_template_special_tokens(model)) == expected);
    // Encoded without adding special tokens: the template writes them itself.
    CHECK(prompt_ids == tokenizer->encode(expected, loom::tokenizer::EncodeOptions{false, true}));

    const Run system_without_chat = generate({"--model", model, "--prompt", "x", "--system", "y"});
    CHECK(system_without_chat.exit_code == 2);
    CHECK(system_without_chat.err.find("--system needs --chat") != std::string::npos);
}

TEST_CASE("loom_generate: --stop ends generation before the stop string, which is not printed", "[cli][tokenizer]") {
    loom::testing::ScratchFolder folder("cli-stop");
    const auto model = model_with_tokenizer(folder).string();
    const std::string prompt = "The quick brown fox";
    const Run free_run = generate({"--model", model, "--prompt", prompt, "--max-tokens", "24", "--format", "json"});
    REQUIRE(free_run.exit_code == 0);
    const std::string free_text = nlohmann::json::parse(free_run.out)["text"];
    REQUIRE(free_text.size() > 12);
    // A stop string from the middle of what the model writes anyway.
    const std::size_t cut = free_text.size() / 2;
    const std::string stop = free_text.substr(cut, 3);
    const std::size_t first = free_text.find(stop);
    const Run stopped = generate({"--model", model, "--prompt", prompt, "--max-tokens", "24", "--stop", stop, "--format", "json"});
    REQUIRE(stopped.exit_code == 0);
    const auto report = nlohmann::json::parse(stopped.out);
    CHECK(report["finish_reason"] == "stop");
    CHECK(report["text"] == free_text.substr(0, first));
    const Run streamed = generate({"--model", model, "--prompt", prompt, "--max-tokens", "24", "--stop", stop});
    CHECK(streamed.out == free_text.substr(0, first) + "\n");
}

TEST_CASE("loom_generate: --prompt without a tokenizer is a clear error", "[cli][errors]") {
    const Run run = generate({"--prompt", "hello"});
    CHECK(run.exit_code == 2);
    CHECK(run.err.find("needs a tokenizer") != std::string::npos);
}

#if defined(LOOM_GENERATE_WASM)
// loom_generate compiled by em++ for WebAssembly SIMD128 and run by Node.js
// (cmake/LoomWasm.cmake) against this build's own: the same prompt ids, tokens and text,
// and every step's logits bit for bit, at other thread counts. Once on the built-in model,
// once on bf16 weights with TinyLlama's tokenizer and chat template, sampled with a seed.
TEST_CASE("loom_generate: the WebAssembly build gives the native program's tokens and logits", "[cli][wasm][determinism]") {
    using loom::testing::read_file;
    loom::testing::ScratchFolder folder("cli-wasm");
    // `node loom_generate.js arguments...`, its output through files in the scratch folder.
    const auto generate_wasm = [&](const std::vector<std::string>& arguments) {
        std::string command = std::string(LOOM_WASM_NODE) + " " + loom::testing::shell_quoted(LOOM_GENERATE_WASM);
        for (const auto& argument : arguments) command += " " + loom::testing::shell_quoted(argument);
        const auto out = folder / "wasm-out.txt", err = folder / "wasm-err.txt";
        const int code = loom::testing::run_command(command + " > " + loom::testing::shell_quoted(out.string()) + " 2> " +
                                                    loom::testing::shell_quoted(err.string()));
        return Run{code, read_file(out), command + "\n" + read_file(err)};
    };
    const std::string model = model_with_tokenizer(folder, false, loom::DType::bf16).string();
    const std::vector<std::vector<std::string>> workloads = {
        {"--ids", "1,2,3", "--max-tokens", "32"},
        {"--model", model, "--prompt", "What is 2+2?", "--chat", "--system", "Be brief.", "--max-tokens", "24",
         "--temperature", "0.8", "--top-p", "0.9", "--seed", "7"},
    };
    const auto arguments = [](std::vector<std::string> workload, const std::string& threads, const std::filesystem::path& logits) {
        for (const std::string& extra : {std::string("--format"), std::string("json"), std::string("--threads"), threads,
                                         std::string("--dump-logits"), logits.string()}) {
            workload.push_back(extra);
        }
        return workload;
    };
    int index = 0;
    for (const auto& workload : workloads) {
        const auto native_logits = folder / ("native-" + std::to_string(index) + ".f32");
        const Run native = generate(arguments(workload, "2", native_logits));
        INFO(native.err);
        REQUIRE(native.exit_code == 0);
        const auto expected = nlohmann::json::parse(native.out);
        const std::string expected_logits = read_file(native_logits);
        REQUIRE(expected["ids"].size() >= 16);
        REQUIRE(expected_logits.size() % (expected["ids"].size() * 4) == 0);

        for (const char* threads : {"1", "3"}) {
            const auto wasm_logits = folder / ("wasm-" + std::to_string(index) + "-" + threads + ".f32");
            const Run run = generate_wasm(arguments(workload, threads, wasm_logits));
            INFO(run.err);
            REQUIRE(run.exit_code == 0);
            const auto report = nlohmann::json::parse(run.out);
            for (const char* field : {"prompt_ids", "ids", "text", "finish_reason"}) {
                INFO(field);
                CHECK(report[field] == expected[field]);
            }
            CHECK(read_file(wasm_logits) == expected_logits);
        }
        ++index;
    }

    // A weight file over 2 GiB, more than a 32-bit build can read at once, is refused by
    // name before any read (a sparse file: its 3 GiB take no disk space).
    loom::testing::ScratchFolder large("cli-wasm-large");
    std::filesystem::copy_file(std::filesystem::path(model) / "config.json", large.path() / "config.json");
    const auto weights = large.path() / "model.safetensors";
    std::ofstream(weights, std::ios::binary).put('\0');
    std::filesystem::resize_file(weights, std::uintmax_t(3) << 30);
    const Run refused = generate_wasm({"--model", large.path().string(), "--ids", "1,2", "--max-tokens", "2"});
    CHECK(refused.exit_code == 1);
    CHECK(refused.err.find(weights.string() + ": 3221225472 bytes do not fit in this build's address space") !=
          std::string::npos);
}
#endif
