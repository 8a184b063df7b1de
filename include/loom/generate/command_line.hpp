#pragma once
// loom_generate's logic: argument parsing and the run, kept here so tests can reach it.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/chat/chat_template.hpp"
#include "loom/core/dtype.hpp"
#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/generate/generator.hpp"
#include "loom/generate/text_stream.hpp"
#include "loom/models/load.hpp"
#include "loom/tokenizer/load.hpp"

namespace loom::generate {

enum class OutputFormat { text, ids, json };

struct GenerateCommand {
    std::string model;  // empty: the built-in default model
    std::optional<std::string> prompt;
    std::optional<std::vector<int>> ids;
    bool chat = false;                  // wrap the prompt in the model's chat template
    std::optional<std::string> system;  // system message for --chat
    std::size_t max_tokens = 128;
    std::optional<float> temperature, top_p, min_p, repeat_penalty;
    std::optional<std::size_t> top_k;
    std::uint64_t seed = 0;
    std::vector<std::string> stop;
    std::size_t threads = default_thread_count();
    OutputFormat format = OutputFormat::text;
    std::string dump_logits;  // file for raw f32 logits, one vocabulary row per step
    FileAccess weights = FileAccess::read;
    DType cache_dtype = DType::f32;
    bool help = false;
};

inline const char* generate_usage() {
    return "usage: loom_generate [--model DIR|Org/Name] (--prompt TEXT [--chat [--system TEXT]] | --ids \"1,2,3\")\n"
           "                     [--max-tokens N]\n"
           "                     [--temperature T] [--top-k K] [--top-p P] [--min-p M] [--repeat-penalty R]\n"
           "                     [--seed S] [--stop STR] [--threads N] [--format text|ids|json]\n"
           "                     [--dump-logits FILE] [--mmap] [--cache-type f32|f16]\n"
           "\n"
           "  --model        a model folder (config.json, model.safetensors) or an Org/Name id in the\n"
           "                 Hugging Face cache; without it, a small built-in model with synthetic weights\n"
           "  --prompt       text to continue, encoded as Hugging Face's tokenizer(text) does\n"
           "  --chat         send the prompt as a user message through the model's chat template\n"
           "  --system       a system message for --chat\n"
           "  --ids          the prompt as comma-separated token ids\n"
           "  --max-tokens   new tokens at most (default 128)\n"
           "  --temperature  0 for greedy decoding; default from generation_config.json, else 0\n"
           "  --top-k, --top-p, --min-p, --repeat-penalty   sampling filters (off by default)\n"
           "  --seed         sampling seed (default 0); the same seed gives the same tokens\n"
           "  --stop         stop before the generated text would contain STR (repeatable)\n"
           "  --threads      worker threads (default: all cores); results do not depend on it\n"
           "  --format       text (stream as generated), ids, or json (one object at the end)\n"
           "  --dump-logits  write each step's logits (little-endian f32, vocabulary-sized rows)\n"
           "  --mmap         map the weight files instead of reading them into memory: starts at once and\n"
           "                 shares the page cache, but decoding may be less steady (docs/performance.md)\n"
           "  --cache-type   KV cache elements: f32 (default, PyTorch's f32 arithmetic) or f16 (half the\n"
           "                 memory and cache reads; each key and value rounded once, still deterministic)\n";
}

namespace detail {

template <typename Integer>
Integer parse_integer(std::string_view flag, std::string_view text) {
    Integer value{};
    const auto [end, status] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (status != std::errc() || end != text.data() + text.size()) {
        throw argument_error(std::string(flag) + ": expected a whole number, got '" + std::string(text) + "'");
    }
    return value;
}

inline float parse_float(std::string_view flag, std::string_view text) {
    const std::string copy(text);
    char* end = nullptr;
    const float value = std::strtof(copy.c_str(), &end);
    if (copy.empty() || end != copy.c_str() + copy.size() || !std::isfinite(value)) {
        throw argument_error(std::string(flag) + ": expected a number, got '" + copy + "'");
    }
    return value;
}

// A stored weight type as the command lines spell it.
inline DType parse_weight_dtype(std::string_view flag, std::string_view text) {
    if (text == "f32") return DType::f32;
    if (text == "bf16") return DType::bf16;
    if (text == "f16") return DType::f16;
    throw argument_error(std::string(flag) + ": must be f32, bf16 or f16, got '" + std::string(text) + "'");
}

inline std::vector<int> parse_id_list(std::string_view text) {
    std::vector<int> ids;
    std::size_t start = 0;
    while (start <= text.size()) {
        std::size_t comma = text.find(',', start);
        if (comma == std::string_view::npos) comma = text.size();
        std::string_view item = text.substr(start, comma - start);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (item.empty()) throw argument_error("--ids: empty item in '" + std::string(text) + "'");
        const int id = parse_integer<int>("--ids", item);
        if (id < 0) throw argument_error("--ids: token ids are non-negative, got " + std::to_string(id));
        ids.push_back(id);
        start = comma + 1;
    }
    return ids;
}

}  // namespace detail

inline GenerateCommand parse_generate_arguments(const std::vector<std::string>& arguments) {
    GenerateCommand command;
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        const std::string& flag = arguments[i];
        if (flag == "--help" || flag == "-h") {
            command.help = true;
            continue;
        }
        if (flag == "--chat") {
            command.chat = true;
            continue;
        }
        if (flag == "--mmap") {
            command.weights = FileAccess::map;
            continue;
        }
        if (flag.rfind("--", 0) != 0) throw argument_error("unexpected argument '" + flag + "'");
        if (i + 1 >= arguments.size()) throw argument_error(flag + " needs a value");
        const std::string& value = arguments[++i];
        if (flag == "--model") command.model = value;
        else if (flag == "--prompt") command.prompt = value;
        else if (flag == "--system") command.system = value;
        else if (flag == "--ids") command.ids = detail::parse_id_list(value);
        else if (flag == "--max-tokens") command.max_tokens = detail::parse_integer<std::size_t>(flag, value);
        else if (flag == "--temperature") command.temperature = detail::parse_float(flag, value);
        else if (flag == "--top-k") command.top_k = detail::parse_integer<std::size_t>(flag, value);
        else if (flag == "--top-p") command.top_p = detail::parse_float(flag, value);
        else if (flag == "--min-p") command.min_p = detail::parse_float(flag, value);
        else if (flag == "--repeat-penalty") command.repeat_penalty = detail::parse_float(flag, value);
        else if (flag == "--seed") command.seed = detail::parse_integer<std::uint64_t>(flag, value);
        else if (flag == "--stop") command.stop.push_back(value);
        else if (flag == "--threads") {
            command.threads = detail::parse_integer<std::size_t>(flag, value);
            if (command.threads == 0 || command.threads > 1024) throw argument_error("--threads must be in 1..1024");
        } else if (flag == "--format") {
            if (value == "text") command.format = OutputFormat::text;
            else if (value == "ids") command.format = OutputFormat::ids;
            else if (value == "json") command.format = OutputFormat::json;
            else throw argument_error("--format must be text, ids or json, got '" + value + "'");
        } else if (flag == "--dump-logits") command.dump_logits = value;
        else if (flag == "--cache-type") command.cache_dtype = nn::parse_cache_dtype(flag, value);
        else throw argument_error("unknown option '" + flag + "' (see --help)");
    }
    if (command.help) return command;
    if (command.prompt && command.ids) throw argument_error("give either --prompt or --ids, not both");
    if (!command.prompt && !command.ids) throw argument_error("give a prompt: --prompt TEXT or --ids \"1,2,3\"");
    if ((command.chat || command.system) && !command.prompt) throw argument_error("--chat and --system need --prompt");
    if (command.system && !command.chat) throw argument_error("--system needs --chat");
    return command;
}

// Sampling settings: explicit flags win, then generation_config.json, then greedy.
inline SamplingOptions resolve_sampling(const GenerateCommand& command, const io::GenerationDefaults& defaults) {
    SamplingOptions options;
    const bool model_samples = defaults.do_sample.value_or(false);
    options.temperature = command.temperature.value_or(model_samples ? float(defaults.temperature.value_or(1.0)) : 0.0f);
    options.top_k = command.top_k.value_or(model_samples ? std::size_t(defaults.top_k.value_or(50)) : 0);
    options.top_p = command.top_p.value_or(model_samples ? float(defaults.top_p.value_or(1.0)) : 1.0f);
    options.min_p = command.min_p.value_or(model_samples ? float(defaults.min_p.value_or(0.0)) : 0.0f);
    options.repeat_penalty = command.repeat_penalty.value_or(float(defaults.repetition_penalty.value_or(1.0)));
    options.seed = command.seed;
    return options;
}

// The prompt as Hugging Face encodes it: tokenizer(text) for plain text (special tokens
// from the post-processor), or the chat template's text encoded without adding any
// (the template writes them itself), as apply_chat_template(tokenize=True) does.
inline std::vector<int> encode_prompt(const tokenizer::Tokenizer& text_tokenizer, const std::filesystem::path& folder,
                                      const std::string& prompt, bool chat, const std::optional<std::string>& system) {
    if (!chat) return text_tokenizer.encode(prompt);
    const auto source = chat::load_chat_template(folder);
    if (!source) throw argument_error("--chat: " + folder.string() + " has no chat template (tokenizer_config.json or chat_template.jinja)");
    nlohmann::json messages = nlohmann::json::array();
    if (system) messages.push_back({{"role", "system"}, {"content", *system}});
    messages.push_back({{"role", "user"}, {"content", prompt}});
    const std::string rendered = chat::apply_chat_template(*source, messages, true, chat::chat_template_special_tokens(folder));
    return text_tokenizer.encode(rendered, tokenizer::EncodeOptions{false, true});
}

// Runs loom_generate; returns the exit code. Errors are one line on `err`.
inline int run_generate(const std::vector<std::string>& arguments, std::ostream& out, std::ostream& err) {
    try {
        const GenerateCommand command = parse_generate_arguments(arguments);
        if (command.help) {
            out << generate_usage();
            return 0;
        }
        models::LoadedModel model =
            command.model.empty() ? models::load_default_model() : models::load_model(command.model, command.weights);
        model.network->set_cache_dtype(command.cache_dtype);
        std::unique_ptr<tokenizer::Tokenizer> text_tokenizer;
        if (!model.folder.empty() && tokenizer::has_tokenizer(model.folder)) text_tokenizer = tokenizer::load_tokenizer(model.folder);
        if (!text_tokenizer && (command.prompt || !command.stop.empty())) {
            throw argument_error(std::string(command.prompt ? "--prompt" : "--stop") + " needs a tokenizer, and " +
                                 (model.folder.empty() ? std::string("the built-in model has none")
                                                       : model.folder.string() + " has none (tokenizer.json, vocab.json + merges.txt or tokenizer.model)") +
                                 "; pass token ids with --ids");
        }
        const std::vector<int> prompt =
            command.ids ? *command.ids : encode_prompt(*text_tokenizer, model.folder, *command.prompt, command.chat, command.system);
        if (prompt.empty()) throw argument_error("the prompt encodes to no tokens");

        GenerateOptions options;
        options.max_tokens = command.max_tokens;  // generate() stops at the model's context length
        options.sampling = resolve_sampling(command, model.generation);
        options.eos_token_ids = model.eos_token_ids();

        std::ofstream logits_file;
        if (!command.dump_logits.empty()) {
            logits_file.open(command.dump_logits, std::ios::binary);
            if (!logits_file) throw error(command.dump_logits + ": cannot open for writing");
            options.on_logits = [&](std::span<const float> logits) {
                logits_file.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size_bytes()));
            };
        }

        ThreadPool pool(command.threads);
        std::optional<TextStream> text;
        if (text_tokenizer) text.emplace(*text_tokenizer, prompt, command.stop);
        bool first = true;
        const bool stream = command.format != OutputFormat::json;
        GenerationResult result = generate(*model.network, prompt, options, pool, [&](int token) {
            if (text) {
                const std::string piece = text->push(token);
                if (command.format == OutputFormat::text) out << piece << std::flush;
            }
            if (stream && (!text || command.format == OutputFormat::ids)) {
                out << (first ? "" : " ") << token << std::flush;
                first = false;
            }
            return !(text && text->stopped());
        });
        if (text) {
            const std::string rest = text->finish();
            if (command.format == OutputFormat::text) out << rest;
        }
        if (logits_file.is_open() && !logits_file.flush()) throw error(command.dump_logits + ": write failed");

        const Timings& timings = result.timings;
        if (command.format == OutputFormat::json) {
            nlohmann::json report = {
                {"model", command.model.empty() ? "built-in" : command.model},
                {"prompt_ids", prompt},
                {"ids", result.ids},
                {"text", text ? nlohmann::json(text->text()) : nlohmann::json(nullptr)},  // null without a tokenizer
                {"finish_reason", finish_reason_name(result.finish_reason)},
                {"prompt_tokens", timings.prompt_tokens},
                {"generated_tokens", timings.generated_tokens},
                {"prefill_tokens_per_second", timings.prefill_tokens_per_second()},
                {"decode_tokens_per_second", timings.decode_tokens_per_second()},
                {"time_to_first_token_ms", timings.time_to_first_token_ms},
            };
            out << report.dump() << "\n";
        } else {
            out << "\n";
        }
        out.flush();  // the generated tokens before the summary, when both go to a terminal
        char summary[256];
        std::snprintf(summary, sizeof summary,
                      "prompt tokens: %zu | prefill: %.1f tok/s | decode: %.1f tok/s | time to first token: %.1f ms | "
                      "generated: %zu (%s) | threads: %zu\n",
                      timings.prompt_tokens, timings.prefill_tokens_per_second(), timings.decode_tokens_per_second(),
                      timings.time_to_first_token_ms, timings.generated_tokens, finish_reason_name(result.finish_reason),
                      command.threads);
        err << summary;
        return 0;
    } catch (const argument_error& failure) {
        err << "loom_generate: error: " << failure.what() << "\n";
        return 2;
    } catch (const std::exception& failure) {
        err << "loom_generate: error: " << failure.what() << "\n";
        return 1;
    }
}

}  // namespace loom::generate
