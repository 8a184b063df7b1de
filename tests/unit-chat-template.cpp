// Chat templates: Loom's Jinja engine against the real templates of Hugging Face models,
// Python Jinja's semantics (the expected strings come from jinja2 3.1 configured as
// transformers configures it) and the @huggingface/jinja reference (tests/js).
#include <catch2/catch.hpp>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/chat/chat_template.hpp"
#include "loom/chat/jinja.hpp"
#include "test_support.hpp"

namespace {

using nlohmann::ordered_json;

std::filesystem::path chat_data(const std::string& relative) {
    return loom::testing::source_path("tests/data/chat_templates/" + relative);
}

// The clock every test pins: 2024-09-05 13:07 local time (a Thursday, day 249).
loom::chat::RenderOptions pinned_clock() {
    loom::chat::RenderOptions options;
    options.now = [] {
        std::tm time{};
        time.tm_year = 2024 - 1900;
        time.tm_mon = 8;
        time.tm_mday = 5;
        time.tm_hour = 13;
        time.tm_min = 7;
        return time;
    };
    return options;
}

const ordered_json pinned_now_for_reference = {{"year", 2024}, {"month", 9}, {"day", 5}, {"hour", 13}, {"minute", 7}};

ordered_json message(const std::string& role, const std::string& content) {
    return {{"role", role}, {"content", content}};
}

// The conversations every real template is rendered with.
std::vector<std::pair<std::string, ordered_json>> conversations() {
    return {
        {"single user turn", ordered_json::array({message("user", "Hello!")})},
        {"system and user", ordered_json::array({message("system", "You are terse."), message("user", "What is 2+2?")})},
        {"multi-turn", ordered_json::array({message("user", "Hi"), message("assistant", "Hello! How can I help?"),
                                            message("user", "Tell me a joke.")})},
        {"system and multi-turn with padding",
         ordered_json::array({message("system", "  Be nice.  "), message("user", " Hi "), message("assistant", " Hey there "),
                              message("user", "Bye")})},
        {"unicode", ordered_json::array({message("user", "Grüße, 世界! 🚀 ñ\u00a0é\ttab"), message("assistant", "Ça va — très bien ✓"),
                                         message("user", "日本語")})},
        {"jinja-looking content", ordered_json::array({message("user", "{{ x }} {% if y %}z{% endif %} {# c #}"),
                                                       message("assistant", "{% raw %}"), message("user", "}} {{")})},
        {"empty content", ordered_json::array({message("user", "")})},
        {"ends with the assistant", ordered_json::array({message("user", "Q"), message("assistant", "A")})},
    };
}

ordered_json conversation(const std::string& label) {
    for (const auto& [name, messages] : conversations())
        if (name == label) return messages;
    FAIL("no conversation labelled " << label);
    return {};
}

ordered_json weather_tools() {
    return ordered_json::parse(R"([{"type": "function", "function": {"name": "get_weather",
        "description": "Get the weather, in °C", "parameters": {"type": "object", "properties":
        {"city": {"type": "string", "description": "City name"}, "days": {"type": "integer"}}, "required": ["city"]}}}])");
}

// A tool-calling exchange, for the templates that support tools.
ordered_json tool_conversation() {
    return ordered_json::parse(R"([{"role": "system", "content": "sys"}, {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather",
        "arguments": {"city": "Paris", "days": 2}}}]}, {"role": "tool", "content": "{\"temp\": 21.5}"},
        {"role": "tool", "content": "ok"}, {"role": "assistant", "content": "It is 21.5 °C."}])");
}

struct ModelTemplate {
    std::string name;
    std::string source;
    ordered_json special_tokens;
    bool with_tools = false;
};

ModelTemplate model_template(const std::string& folder, bool with_tools) {
    const auto source = loom::chat::load_chat_template(chat_data(folder));
    REQUIRE(source.has_value());
    return {folder, *source, ordered_json::parse(loom::chat::chat_template_special_tokens(chat_data(folder)).dump()), with_tools};
}

// The seven model folders and the 37 templates of ollama's index (which carry no special
// tokens of their own, so they get Llama-style ones).
std::vector<ModelTemplate> real_templates() {
    std::vector<ModelTemplate> templates = {
        model_template("smollm2-1.7b-instruct", false),   model_template("qwen2.5-0.5b-instruct", true),
        model_template("llama-3.2-3b-instruct", true),    model_template("mistral-7b-instruct-v0.2", false),
        model_template("tinyllama-1.1b-chat-v1.0", false), model_template("phi-3-mini-4k-instruct", false),
        model_template("gemma-it", false),
    };
    std::ifstream index_file(chat_data("ollama-template-index.json"));
    const ordered_json index = ordered_json::parse(index_file);
    REQUIRE(index.size() == 37);
    for (std::size_t position = 0; position < index.size(); ++position) {
        const auto& entry = index[position];
        templates.push_back({"ollama #" + std::to_string(position) + " " + entry["name"].get<std::string>(),
                             entry["template"].get<std::string>(), {{"bos_token", "<s>"}, {"eos_token", "</s>"}},
                             entry["template"].get<std::string>().find("tool_call") != std::string::npos});
    }
    return templates;
}

// The variables transformers' apply_chat_template gives a template.
ordered_json transformers_context(const ordered_json& messages, bool add_generation_prompt, const ordered_json& extra) {
    ordered_json context = {{"messages", messages}, {"tools", nullptr}, {"documents", nullptr},
                            {"add_generation_prompt", add_generation_prompt}};
    for (auto entry = extra.begin(); entry != extra.end(); ++entry) context[entry.key()] = entry.value();
    return context;
}

template <typename Action>
std::string message_of(Action&& action) {
    try {
        action();
    } catch (const std::exception& failure) {
        return failure.what();
    }
    return "(no exception)";
}

std::string render(const std::string& source, const ordered_json& context = ordered_json::object()) {
    return loom::chat::Template(source).render(context, pinned_clock());
}

// Renders `cases` ({name, template, context, now}) with @huggingface/jinja. nullopt (after a
// warning) when node or tests/js/node_modules is not installed.
std::optional<ordered_json> reference_render(const ordered_json& cases) {
    const std::filesystem::path package = loom::testing::source_path("tests/js/node_modules/@huggingface/jinja/package.json");
    if (!std::filesystem::exists(package) || loom::testing::run_command("node --version > /dev/null 2>&1") != 0) {
        LOOM_REFERENCE_MISSING("@huggingface/jinja reference skipped: node or tests/js/node_modules is missing (npm ci --prefix tests/js)");
        return std::nullopt;
    }
    loom::testing::ScratchFolder scratch("chat-reference");
    const auto input = scratch / "cases.json";
    const auto output = scratch / "results.json";
    std::ofstream(input) << cases.dump();
    // LC_ALL=C: the reference takes month names from the default locale.
    const std::string command = "cd '" + std::string(LOOM_SOURCE_DIR) + "' && LC_ALL=C node tests/js/render_chat_template.mjs '" +
                                input.string() + "' > '" + output.string() + "'";
    REQUIRE(loom::testing::run_command(command) == 0);
    std::ifstream results(output);
    ordered_json parsed = ordered_json::parse(results);
    REQUIRE(parsed.size() == cases.size());
    return parsed;
}

}  // namespace

TEST_CASE("chat template: SmolLM2-Instruct renders ChatML with its default system prompt") {
    const auto source = loom::chat::load_chat_template(chat_data("smollm2-1.7b-instruct"));
    REQUIRE(source.has_value());
    const ordered_json tokens = ordered_json::parse(loom::chat::chat_template_special_tokens(chat_data("smollm2-1.7b-instruct")).dump());

    CHECK(loom::chat::apply_chat_template(*source, ordered_json::array({message("user", "Hello!")}), true, tokens) ==
          "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
    CHECK(loom::chat::apply_chat_template(
              *source, ordered_json::array({message("system", "You are terse."), message("user", "What is 2+2?")}), false, tokens) ==
          "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
    // Message text that looks like Jinja is data, never evaluated.
    CHECK(loom::chat::apply_chat_template(*source, conversation("jinja-looking content"), false, tokens) ==
          "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\n{{ x }} {% if y %}z{% endif %} {# c #}<|im_end|>\n<|im_start|>assistant\n{% raw %}<|im_end|>\n"
          "<|im_start|>user\n}} {{<|im_end|>\n");
}

TEST_CASE("chat template: Qwen2.5-Instruct with its default system prompt and with tools") {
    const auto qwen = model_template("qwen2.5-0.5b-instruct", true);
    CHECK(loom::chat::apply_chat_template(qwen.source, ordered_json::array({message("user", "")}), true, qwen.special_tokens) ==
          "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
          "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n");
    CHECK(loom::chat::apply_chat_template(
              qwen.source, ordered_json::array({message("system", "You are terse."), message("user", "What is 2+2?")}), true,
              qwen.special_tokens) ==
          "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");

    ordered_json extra = qwen.special_tokens;
    extra["tools"] = weather_tools();
    CHECK(loom::chat::apply_chat_template(qwen.source, tool_conversation(), true, extra) ==
          R"(<|im_start|>system
sys

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{"type": "function", "function": {"name": "get_weather", "description": "Get the weather, in °C", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}, "days": {"type": "integer"}}, "required": ["city"]}}}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
<|im_start|>user
Weather in Paris?<|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
{"temp": 21.5}
</tool_response>
<tool_response>
ok
</tool_response><|im_end|>
<|im_start|>assistant
It is 21.5 °C.<|im_end|>
<|im_start|>assistant
)");
}

TEST_CASE("chat template: Llama-3.2-Instruct dates its system prompt with strftime_now") {
    const auto llama = model_template("llama-3.2-3b-instruct", true);
    const std::string expected_single =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 05 Sep 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n";
    CHECK(loom::chat::apply_chat_template(llama.source, ordered_json::array({message("user", "Hello!")}), true,
                                          llama.special_tokens, pinned_clock()) == expected_single);

    // A date_string given by the caller wins over the clock.
    ordered_json dated = llama.special_tokens;
    dated["date_string"] = "26 Jul 2024";
    const std::string rendered = loom::chat::apply_chat_template(llama.source, ordered_json::array({message("user", "Hello!")}),
                                                                 true, dated, pinned_clock());
    CHECK(rendered.find("Today Date: 26 Jul 2024\n") != std::string::npos);

    // Tools go into the first user message, a string tool result is JSON-quoted (a str is
    // `iterable` in Jinja) and tojson(indent=4) matches Python's json.dumps.
    ordered_json extra = llama.special_tokens;
    extra["tools"] = weather_tools();
    CHECK(loom::chat::apply_chat_template(llama.source, tool_conversation(), false, extra, pinned_clock()) ==
          R"(<|begin_of_text|><|start_header_id|>system<|end_header_id|>

Environment: ipython
Cutting Knowledge Date: December 2023
Today Date: 05 Sep 2024

sys<|eot_id|><|start_header_id|>user<|end_header_id|>

Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.

{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather, in °C",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string",
                    "description": "City name"
                },
                "days": {
                    "type": "integer"
                }
            },
            "required": [
                "city"
            ]
        }
    }
}

Weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

{"name": "get_weather", "parameters": {"city": "Paris", "days": 2}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

"{\"temp\": 21.5}"<|eot_id|><|start_header_id|>ipython<|end_header_id|>

"ok"<|eot_id|><|start_header_id|>assistant<|end_header_id|>

It is 21.5 °C.<|eot_id|>)");
}

TEST_CASE("chat template: Mistral-7B-Instruct-v0.2 refuses a system message with the template's own message") {
    const auto mistral = model_template("mistral-7b-instruct-v0.2", false);
    CHECK(loom::chat::apply_chat_template(mistral.source, conversation("multi-turn"), true, mistral.special_tokens) ==
          "<s>[INST] Hi [/INST]Hello! How can I help?</s>[INST] Tell me a joke. [/INST]");

    const auto system_first = ordered_json::array({message("system", "You are terse."), message("user", "Hi")});
    CHECK_THROWS_AS(loom::chat::apply_chat_template(mistral.source, system_first, true, mistral.special_tokens),
                    loom::chat::template_error);
    CHECK(message_of([&] { loom::chat::apply_chat_template(mistral.source, system_first, true, mistral.special_tokens); }) ==
          "Conversation roles must alternate user/assistant/user/assistant/...");
    const auto system_second = ordered_json::array({message("user", "Hi"), message("system", "You are terse.")});
    CHECK(message_of([&] { loom::chat::apply_chat_template(mistral.source, system_second, true, mistral.special_tokens); }) ==
          "Only user and assistant roles are supported!");
}

TEST_CASE("chat template: TinyLlama-Chat, Phi-3-mini and Gemma-it") {
    const auto tinyllama = model_template("tinyllama-1.1b-chat-v1.0", false);
    CHECK(loom::chat::apply_chat_template(tinyllama.source, conversation("system and multi-turn with padding"), true, tinyllama.special_tokens) ==
          "<|system|>\n  Be nice.  </s>\n<|user|>\n Hi </s>\n<|assistant|>\n Hey there </s>\n<|user|>\nBye</s>\n<|assistant|>\n");

    const auto phi = model_template("phi-3-mini-4k-instruct", false);
    CHECK(loom::chat::apply_chat_template(phi.source, conversation("multi-turn"), false, phi.special_tokens) ==
          "<|user|>\nHi<|end|>\n<|assistant|>\nHello! How can I help?<|end|>\n<|user|>\nTell me a joke.<|end|>\n<|endoftext|>");

    const auto gemma = model_template("gemma-it", false);
    CHECK(loom::chat::apply_chat_template(gemma.source, conversation("multi-turn"), true, gemma.special_tokens) ==
          "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
          "<start_of_turn>user\nTell me a joke.<end_of_turn>\n<start_of_turn>model\n");
    // `| trim` strips Python whitespace only: the no-break space and the tab stay inside.
    CHECK(loom::chat::apply_chat_template(gemma.source, conversation("unicode"), false, gemma.special_tokens) ==
          "<bos><start_of_turn>user\nGrüße, 世界! 🚀 ñ\u00a0é\ttab<end_of_turn>\n<start_of_turn>model\nÇa va — très bien ✓<end_of_turn>\n"
          "<start_of_turn>user\n日本語<end_of_turn>\n");
    CHECK(message_of([&] { loom::chat::apply_chat_template(gemma.source, conversation("system and user"), true, gemma.special_tokens); }) ==
          "System role not supported");
}

TEST_CASE("chat template: every real template renders byte for byte as @huggingface/jinja does") {
    ordered_json cases = ordered_json::array();
    std::vector<std::pair<const ModelTemplate*, ordered_json>> inputs;
    const std::vector<ModelTemplate> templates = real_templates();
    for (const ModelTemplate& model : templates) {
        std::vector<std::pair<std::string, ordered_json>> exchanges = conversations();
        ordered_json extra = model.special_tokens;
        for (const auto& [label, messages] : exchanges) {
            for (const bool add_generation_prompt : {true, false}) {
                const std::string name = model.name + " / " + label + (add_generation_prompt ? " / generation prompt" : "");
                cases.push_back({{"name", name}, {"template", model.source},
                                 {"context", transformers_context(messages, add_generation_prompt, extra)},
                                 {"now", pinned_now_for_reference}});
            }
        }
        if (model.with_tools) {
            extra["tools"] = weather_tools();
            for (const bool add_generation_prompt : {true, false})
                cases.push_back({{"name", model.name + " / tools" + (add_generation_prompt ? " / generation prompt" : "")},
                                 {"template", model.source},
                                 {"context", transformers_context(tool_conversation(), add_generation_prompt, extra)},
                                 {"now", pinned_now_for_reference}});
        }
    }
    INFO(cases.size() << " renderings of " << templates.size() << " templates");
    REQUIRE(templates.size() == 44);

    // Ours first, so that the test still checks that every template renders (or refuses
    // the conversation with its own message) when the reference is not installed.
    std::vector<std::pair<bool, std::string>> ours;
    for (const auto& entry : cases) {
        try {
            ours.emplace_back(true, loom::chat::Template(entry["template"].get<std::string>()).render(entry["context"], pinned_clock()));
        } catch (const loom::chat::template_error& refusal) {
            ours.emplace_back(false, refusal.what());
        }
    }
    const auto reference = reference_render(cases);
    if (!reference) return;
    std::size_t refused = 0;
    for (std::size_t index = 0; index < cases.size(); ++index) {
        const ordered_json& expected = (*reference)[index];
        INFO(cases[index]["name"].get<std::string>());
        if (expected.contains("error")) {
            ++refused;
            CHECK_FALSE(ours[index].first);
            CHECK(ours[index].second == expected["error"].get<std::string>());
        } else {
            CHECK(ours[index].first);
            CHECK(ours[index].second == expected["output"].get<std::string>());
        }
    }
    CHECK(refused > 0);
}

TEST_CASE("chat template: the engine follows Python Jinja's semantics") {
    // Each expected string is what jinja2 3.1 renders with transformers' environment.
    struct Case {
        const char* description;
        const char* source;
        const char* expected;
    };
    const Case cases[] = {
        {"python printing of values",
         R"py({{ [1, 'two', none, true, 2.5] }}|{{ {'a': 1} }}|{{ (1,) }}|{{ 1.0 }}|{{ 1e20 }}|{{ 0.1 + 0.2 }}|{{ 10 / 4 }})py",
         R"py([1, 'two', None, True, 2.5]|{'a': 1}|(1,)|1.0|1e+20|0.30000000000000004|2.5)py"},
        {"string repr picks quotes like Python",
         R"py({{ ["it's", 'say "hi"', 'tab\there'] }})py",
         R"py(["it's", 'say "hi"', 'tab\there'])py"},
        {"arithmetic follows Python",
         R"py({{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 // 2.0 }} {{ 'ab' * 3 }} {{ [1] + [2] }} {{ 1 + true }})py",
         R"py(-4 2 1024 3.0 ababab [1, 2] 2)py"},
        {"filters bind tighter than operators",
         R"py({{ 'a' + 'b' | upper }} {{ ('a' + 'b') | upper }} {{ 1 ~ 2 ~ none }} {{ -3 | abs }})py",
         R"py(aB AB 12None 3)py"},
        {"comparisons chain and mix numbers",
         R"py({{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'b' > 'a' }} {{ [1, 2] == [1, 2] }} {{ 'ell' in 'hello' }} {{ 'z' not in items }})py",
         R"py(True False True True True True True)py"},
        {"and/or return operands",
         R"py({{ 1 and 'x' }}|{{ 0 or '' }}|{{ none or 'fallback' }}|{{ not empty }})py",
         R"py(x||fallback|True)py"},
        {"slicing",
         R"py({{ items[::-1] }} {{ 'hello'[1:3] }} {{ items[-2:] }} {{ 'Grüße'[::-1] }} {{ items[10] }}|{{ 'abc'[-1] }})py",
         R"py([2, 1, 3] el [1, 2] eßürG |c)py"},
        {"loop variables",
         R"py({% for x in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %})py",
         R"py(1032TrueFalse31;2121FalseFalse332;3210FalseTrue31;)py"},
        {"loop else, filters on the iterable and inline if",
         R"py({% for x in [] %}x{% else %}empty{% endfor %} {% for x in items | sort %}{{ x }}{% endfor %} {% for x in items if x > 1 %}{{ loop.index }}/{{ loop.length }} {% endfor %})py",
         R"py(empty 123 1/2 2/2 )py"},
        {"break and continue",
         R"py({% for x in range(10) %}{% if x == 1 %}{% continue %}{% endif %}{% if x > 3 %}{% break %}{% endif %}{{ x }}{% endfor %})py",
         R"py(023)py"},
        {"dict iteration",
         R"py({% for k, v in user.items() %}{{ k }}={{ v }};{% endfor %}{% for k in {'b': 1, 'a': 2} %}{{ k }}{% endfor %})py",
         R"py(name=Ada;tags=['x', 'y'];ba)py"},
        {"scoping: loop sets stay in the iteration, namespace carries out",
         R"py({% set x = 'outer' %}{% set ns = namespace(count=0) %}{% for i in items %}{{ x }}{% set x = i %}{{ x }}{% set ns.count = ns.count + i %}{% endfor %}|{{ x }}|{{ ns.count }})py",
         R"py(outer3outer1outer2|outer|6)py"},
        {"set in if leaks, block set and with",
         R"py({% if true %}{% set y = 'leaks' %}{% endif %}{{ y }}|{% set block | upper %}  inner {{ 1 }}  {% endset %}[{{ block }}]|{% with a = 1, b = 2 %}{{ a + b }}{% endwith %})py",
         R"py(leaks|[  INNER 1  ]|3)py"},
        {"macros and call blocks",
         R"py({% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}{{ caller() if caller is defined else '' }}!{% endmacro %}{{ greet('Ada') }} {{ greet('Bob', greeting='Hi') }} {% call greet('Cy') %} (called){% endcall %})py",
         R"py(Hello, Ada! Hi, Bob! Hello, Cy (called)!)py"},
        {"string methods",
         R"py({{ text.strip() }}|{{ text.lstrip() }}|{{ text.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'Hello'.startswith('He') }}{{ 'Hello'.endswith(('x', 'lo')) }}|{{ 'MiXed'.upper() }}{{ 'MiXed'.lower() }}|{{ "hello world's".title() }}|{{ 'a-b'.replace('-', '+') }})py",
         R"py(Grüße, Welt!|Grüße, Welt!  |  Grüße, Welt!|['a', 'b', '', 'c']|['a', 'b']|TrueTrue|MIXEDmixed|Hello World'S|a+b)py"},
        {"dict methods",
         R"py({{ user.get('name') }} {{ user.get('age', 36) }} {{ user.get('age') }} {{ user.keys() | list }} {{ user.values() | list | length }})py",
         R"py(Ada 36 None ['name', 'tags'] 2)py"},
        {"text filters",
         R"py([{{ text | trim }}] {{ 'hello world' | capitalize }} {{ "hello world's x-y" | title }} {{ 'Grüße' | upper }} {{ 'Grüße' | length }} {{ 'abc' | replace('b', 'B') }} {{ 'abc' | reverse }} {{ 'a\nb' | indent(2) }} {{ 'a\nb' | indent(2, true) }})py",
         R"py([Grüße, Welt!] Hello world Hello World's X-Y GRÜSSE 5 aBc cba a
  b   a
  b)py"},
        {"sequence filters",
         R"py({{ items | first }}{{ items | last }} {{ items | join('-') }} {{ items | sort(reverse=true) }} {{ items | max }}{{ items | min }}{{ items | sum }} {{ [1, 1, 2] | unique | list }} {{ 'ab' | list }} {{ items | reverse | list }} {{ user | length }})py",
         R"py(32 3-1-2 [3, 2, 1] 316 [1, 2] ['a', 'b'] [2, 1, 3] 2)py"},
        {"conversion filters",
         R"py({{ '42' | int + 1 }} {{ '3.9' | int }} {{ 'x' | int(7) }} {{ 2 | float }} {{ 2.5 | round }} {{ 3 | round }} {{ 3.14159 | round(2) }} {{ 2.5 | round(0, 'floor') }} {{ 42 | string ~ '!' }} {{ none | default('dflt') }}{{ missing | default('dflt') }}{{ missing | d('d2') }}{{ '' | default('e', true) }})py",
         R"py(43 3 7 2.0 2.0 3 3.14 2.0 42! Nonedfltd2e)py"},
        {"attribute filters",
         R"py({{ [{'n': 'a', 'on': true}, {'n': 'b'}] | selectattr('on') | map(attribute='n') | list }} {{ [{'n': 'a', 'on': true}, {'n': 'b'}] | rejectattr('on') | map(attribute='n') | join }} {{ ['a', 'code_interpreter'] | reject('equalto', 'code_interpreter') | join(', ') }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ {'b': 1, 'a': 2} | dictsort }} {{ {'x': 1} | items | list }})py",
         R"py(['a'] b a [1, 3] [('a', 2), ('b', 1)] [('x', 1)])py"},
        {"tojson like transformers",
         R"py({{ user | tojson }} {{ 'é"\n' | tojson }} {{ {'a': [1, {'b': none}]} | tojson(indent=2) }} {{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }} {{ 'é' | tojson(ensure_ascii=true) }} {{ [] | tojson(indent=2) }})py",
         R"py({"name": "Ada", "tags": ["x", "y"]} "é\"\n" {
  "a": [
    1,
    {
      "b": null
    }
  ]
} {"a": 2, "b": 1} "\u00e9" [])py"},
        {"tests",
         R"py({{ missing is defined }}{{ missing is undefined }}{{ nothing is none }}{{ 'a' is string }}{{ 1 is number }}{{ 1 is integer }}{{ 1.5 is integer }}{{ true is boolean }}{{ user is mapping }}{{ items is iterable }}{{ text is sequence }}{{ true is true }}{{ 0 is false }}{{ 'a' is equalto 'a' }}{{ 3 is eq 3 }}{{ 3 is odd }}{{ 3 is even }}{{ 9 is divisibleby 3 }}{{ 'x' is in ['x'] }}{{ missing is iterable }})py",
         R"py(FalseTrueTrueTrueTrueTrueFalseTrueTrueTrueTrueTrueFalseTrueTrueTrueFalseTrueTrueTrue)py"},
        {"undefined values print as nothing and are falsy",
         R"py([{{ missing }}]{{ 'yes' if missing else 'no' }}{{ user.missing is defined }}[{{ user.missing }}]{{ missing | length }}{% for x in missing %}x{% endfor %}[{{ missing ~ 'x' }}][{{ missing | trim }}])py",
         R"py([]noFalse[]0[x][])py"},
        {"globals",
         R"py({{ range(3) | list }} {{ range(1, 6, 2) | list }} {{ dict(a=1, b='x') }} {{ namespace(a=1).a }})py",
         R"py([0, 1, 2] [1, 3, 5] {'a': 1, 'b': 'x'} 1)py"},
        {"whitespace control and trim/lstrip blocks",
         R"py(a
  {% if true %}
  b
  {% endif %}
c
{%- if true -%}
   d   
{%- endif %}
  {# comment #}
e {{- ' f ' -}} g
{%+ if true %}h{% endif +%}
i)py",
         R"py(a
  b
cde f g
h
i)py"},
        {"raw blocks and string literals",
         R"py({% raw %}{{ not evaluated }}{% endraw %} {{ '{{ x }}' }} {{ "a\tb\u00e9\x41" }} {{ 'adjacent' ' strings' }})py",
         R"py({{ not evaluated }} {{ x }} a	béA adjacent strings)py"},
    };
    const ordered_json context = ordered_json::parse(
        R"({"user": {"name": "Ada", "tags": ["x", "y"]}, "items": [3, 1, 2], "text": "  Grüße, Welt!  ", "empty": "", "nothing": null})");
    for (const Case& entry : cases) {
        INFO(entry.description << "\n" << entry.source);
        CHECK(render(entry.source, context) == entry.expected);
    }
    // transformers' extension tag: the body is rendered as is.
    CHECK(render("{% generation %}kept {{ 1 }}{% endgeneration %}") == "kept 1");
}

TEST_CASE("chat template: where @huggingface/jinja departs from Python Jinja, Loom follows Python") {
    // transformers renders with Python's jinja2, so its output is the contract; the
    // reference's output is recorded to notice when it changes.
    struct Difference {
        const char* source;
        const char* python;
        const char* reference;  // output, or "error: ..." for a failure
    };
    const Difference differences[] = {
        // Printed containers are Python reprs, not JSON.
        {"{{ [1, 'x', none] }}", "[1, 'x', None]", "[1, \"x\", null]"},
        {"{{ messages[0] }}", "{'role': 'user', 'content': 'hi'}", "{\"role\": \"user\", \"content\": \"hi\"}"},
        {"{{ {'b': 1, 'a': 2} | dictsort }}", "[('a', 2), ('b', 1)]", "[[\"a\", 2], [\"b\", 1]]"},
        // Python's True/None spellings, and a float keeps its ".0".
        {"{{ true }} {{ none }}", "True None", "true "},
        {"{{ number }}", "1.0", "1"},
        // str.title() starts words after uncased characters only, so accented letters do not split words.
        {"{{ 'héllo wörld'.title() }}", "Héllo Wörld", "HéLlo WöRld"},
        // Each loop iteration starts from the enclosing scope.
        {"{% for i in [1, 2] %}{% if i == 2 %}[{{ x }}]{% endif %}{% set x = i %}{% endfor %}", "[]", "[1]"},
        // strftime_now is Python's datetime.strftime.
        {"{{ strftime_now('%a %A %j') }}", "Thu Thursday 249", "%a %A %j"},
    };
    const ordered_json context = {{"messages", ordered_json::array({message("user", "hi")})}, {"number", 1.0}};
    ordered_json cases = ordered_json::array();
    for (const Difference& difference : differences) {
        INFO(difference.source);
        CHECK(render(difference.source, context) == difference.python);
        cases.push_back({{"name", difference.source}, {"template", difference.source}, {"context", context}, {"now", pinned_now_for_reference}});
    }
    // Python fails where the reference carries on.
    CHECK_THROWS_AS(render("{{ 'a' + 1 }}"), loom::chat::render_error);
    CHECK_THROWS_AS(render("{{ undefined_variable.attribute }}"), loom::chat::render_error);
    cases.push_back({{"name", "str + int"}, {"template", "{{ 'a' + 1 }}"}, {"context", context}});
    cases.push_back({{"name", "attribute of undefined"}, {"template", "{{ undefined_variable.attribute }}"}, {"context", context}});

    const auto reference = reference_render(cases);
    if (!reference) return;
    for (std::size_t index = 0; index < std::size(differences); ++index) {
        INFO(differences[index].source);
        CHECK((*reference)[index].value("output", "") == differences[index].reference);
    }
    CHECK((*reference)[std::size(differences)].value("output", "") == "a1");
    CHECK((*reference)[std::size(differences) + 1].value("output", "(error)") == "");
}

TEST_CASE("chat template: errors name the construct and its line:column") {
    using loom::chat::Template;
    CHECK_THROWS_AS(Template("{{ messages | frobnicate }}"), loom::unsupported_error);
    CHECK(message_of([] { Template("{{ messages | frobnicate }}"); }) == "chat template at 1:15: unsupported filter 'frobnicate'");
    CHECK(message_of([] { Template("{% if x is shiny %}{% endif %}"); }) == "chat template at 1:12: unsupported test 'shiny'");
    CHECK_THROWS_AS(Template("line one\n  {% include 'other.jinja' %}"), loom::unsupported_error);
    CHECK(message_of([] { Template("line one\n  {% include 'other.jinja' %}"); }) == "chat template at 2:6: unsupported tag 'include'");
    CHECK(message_of([] { Template("{% frobnicate %}"); }) == "chat template at 1:4: unsupported tag 'frobnicate'");

    CHECK_THROWS_AS(Template("{% if x %}\n{{ 'a' }"), loom::format_error);
    CHECK(message_of([] { Template("{% if x %}\n{{ 'a' }"); }) == "chat template at 2:8: syntax error: unexpected '}'");
    CHECK(message_of([] { Template("{% for m in messages %}\n{{ m }}\n{% endif %}"); }) ==
          "chat template at 3:4: syntax error: encountered unknown tag 'endif'; was looking for 'endfor' or 'else'");
    CHECK(message_of([] { Template("{% if x %}open"); }) ==
          "chat template at 1:15: syntax error: unexpected end of template; was looking for 'elif' or 'else' or 'endif' to close "
          "'if' opened at 1:4");
    CHECK(message_of([] { Template("{{ 'unterminated }}"); }) == "chat template at 1:4: syntax error: unterminated string literal");
    CHECK(message_of([] { Template("{{ a $ b }}"); }) == "chat template at 1:6: syntax error: unexpected char '$'");
    CHECK(message_of([] { Template("{# never closed"); }) == "chat template at 1:1: syntax error: missing end of comment tag");
    CHECK(message_of([] { Template("{% break %}"); }) == "chat template at 1:4: syntax error: 'break' outside loop");
    // Columns count characters, not bytes.
    CHECK(message_of([] { Template("日本 {{ x | nope }}"); }) == "chat template at 1:11: unsupported filter 'nope'");

    // Failures while rendering are render_error, at the operator or call that failed.
    CHECK_THROWS_AS(render("{{ 'a' + 1 }}"), loom::chat::render_error);
    CHECK(message_of([] { render("first\n{{ 'a' + 1 }}"); }) ==
          "chat template at 2:8: can only concatenate str (not \"int\") to str");
    CHECK(message_of([] { render("{{ [1].append(2) }}"); }) ==
          "chat template at 1:14: access to attribute 'append' of 'list' object is unsafe.");
    CHECK(message_of([] { render("{% for x in none %}{% endfor %}"); }) == "chat template at 1:13: 'NoneType' object is not iterable");
    CHECK_THROWS_AS(render("{{ 'x'.zfill(3) }}"), loom::unsupported_error);

    // raise_exception() is the template speaking: exactly its message.
    CHECK_THROWS_AS(render("{{ raise_exception('Bad roles') }}"), loom::chat::template_error);
    CHECK(message_of([] { render("{{ raise_exception('Bad roles') }}"); }) == "Bad roles");
}

TEST_CASE("chat template: int64 limits, huge strides and deliberate size limits") {
    // Slices and range() with strides near the int64 limits stop where Python stops, without overflow.
    CHECK(render("{{ [1,2,3][1::9223372036854775807] }}") == "[2]");
    CHECK(render("{{ [1,2,3][::-9223372036854775807] }}") == "[3]");
    CHECK(render("{{ 'abc'[1::9223372036854775807] }}") == "b");
    CHECK(render("{{ 'abc'[::-9223372036854775807-1] }}") == "c");
    CHECK(render("{{ [1,2,3][-9223372036854775807-1:9223372036854775807] }}") == "[1, 2, 3]");
    CHECK(render("{{ range(5, 10, 9223372036854775807)|list }}") == "[5]");
    CHECK(render("{{ range(9223372036854775807, -9223372036854775807-1, -9223372036854775807-1)|list }}") ==
          "[9223372036854775807, -1]");
    CHECK(render("{{ range(-9223372036854775807-1, 9223372036854775807, 9223372036854775807)|list }}") ==
          "[-9223372036854775808, -1, 9223372036854775806]");

    // |int follows jinja2's do_int: NaN gives the default, infinity fails (OverflowError), and a
    // float beyond 64 bits is refused like any integer beyond 64 bits.
    CHECK(render("{{ 'nan'|int }}{{ ('nan'|float)|int(7) }}{{ 1e18|int }}{{ '-2.5e3'|int }}") == "071000000000000000000-2500");
    CHECK_THROWS_AS(render("{{ 1e300|int }}"), loom::unsupported_error);
    CHECK(message_of([] { render("{{ 1e300|int }}"); }) ==
          "chat template at 1:10: unsupported integer beyond 64 bits in filter 'int' (1e+300)");
    CHECK(message_of([] { render("{{ '1e300'|int }}"); }) ==
          "chat template at 1:12: unsupported integer beyond 64 bits in filter 'int' (1e+300)");
    CHECK(message_of([] { render("{{ '99999999999999999999'|int }}"); }) ==
          "chat template at 1:27: unsupported integer beyond 64 bits in filter 'int'");
    CHECK_THROWS_AS(render("{{ 1e999|int }}"), loom::chat::render_error);
    CHECK(message_of([] { render("{{ 'inf'|int }}"); }) == "chat template at 1:10: cannot convert float infinity to integer");

    // Float literals and |float beyond the double range are inf and 0.0, as in Python.
    CHECK(render("{{ 1e999 }} {{ 1e-400 }} {{ '1e999'|float }} {{ '-1e999'|float }} {{ '1e-400'|float }}") ==
          "inf 0.0 inf -inf 0.0");
    // One sign at most, as Python's float() takes it.
    CHECK(render("{{ '--5'|float(1.5) }} {{ '-+5'|float }} {{ '-5'|float }} {{ '+5'|float }}") == "1.5 0.0 -5.0 5.0");
    // An attribute path index beyond 64 bits is refused with the engine's error, not std::stoll's.
    CHECK_THROWS_AS(render("{{ ['x']|map(attribute='99999999999999999999')|list }}"), loom::unsupported_error);
    CHECK(message_of([] { render("{{ ['x']|map(attribute='99999999999999999999')|list }}"); }) ==
          "chat template at 1:10: unsupported integer beyond 64 bits in attribute path '99999999999999999999'");
    CHECK(message_of([] { loom::chat::Template("{{ '\\U00110000' }}"); }) ==
          "chat template at 1:5: syntax error: illegal Unicode character in string literal");

    // Deliberate limits: repetition is capped at 64 MiB for strings and 16M items for lists.
    CHECK(render("{{ ('ab' * 3) ~ ('' * 9223372036854775807) ~ ('x' * -5) }}{{ [1] * 2 }}{{ [] * 9223372036854775807 }}") ==
          "ababab[1, 1][]");
    CHECK(render("{{ ('a' * 67108864)|length }}") == "67108864");
    CHECK_THROWS_AS(render("{{ 'a' * 10**10 }}"), loom::chat::render_error);
    CHECK(message_of([] { render("{{ 'a' * 10**10 }}"); }) ==
          "chat template at 1:8: repeated string would exceed the 64 MiB limit (1 bytes * 10000000000)");
    CHECK(message_of([] { render("{{ 'a' * 67108865 }}"); }) ==
          "chat template at 1:8: repeated string would exceed the 64 MiB limit (1 bytes * 67108865)");
    CHECK_THROWS_AS(render("{{ [0] * 16777217 }}"), loom::chat::render_error);
    CHECK(message_of([] { render("{{ [1, 2] * 9223372036854775807 }}"); }) ==
          "chat template at 1:11: repeated list would exceed the 16777216 item limit (2 items * 9223372036854775807)");
}

TEST_CASE("chat template: undefined values behave like Jinja's default Undefined") {
    CHECK(render("[{{ missing }}][{{ missing | trim }}][{{ missing ~ 'x' }}]{{ missing is defined }}{{ missing | length }}") ==
          "[][][x]False0");
    CHECK(render("{% for x in missing %}x{% else %}none{% endfor %}{{ 'y' if missing else 'n' }}{{ missing == missing }}") ==
          "nonenTrue");
    // A missing key of a dict is undefined too, but anything more than looking at an undefined
    // value fails, as in Jinja: its attributes, arithmetic, calls, JSON.
    const ordered_json context = {{"message", {{"role", "user"}}}};
    CHECK(render("[{{ message.content }}]{{ message.content is defined }}{{ message['content'] | default('none') }}", context) ==
          "[]Falsenone");
    CHECK(message_of([] { render("{{ missing.attribute }}"); }) == "chat template at 1:11: 'missing' is undefined");
    CHECK(message_of([&] { render("{{ message.content.strip() }}", context); }) ==
          "chat template at 1:19: 'dict object' has no attribute 'content'");
    CHECK(message_of([] { render("{{ missing + 1 }}"); }) == "chat template at 1:12: 'missing' is undefined");
    CHECK(message_of([] { render("{{ missing() }}"); }) == "chat template at 1:11: 'missing' is undefined");
    CHECK(message_of([] { render("{{ missing | tojson }}"); }) ==
          "chat template at 1:14: Object of type Undefined is not JSON serializable");
}

TEST_CASE("chat template: strftime_now formats the injected clock, or the local clock") {
    CHECK(render("{{ strftime_now('%Y-%m-%d %H:%M %a %A %b %B %j') }}") == "2024-09-05 13:07 Thu Thursday Sep September 249");
    CHECK(render("{{ strftime_now('') }}|{{ strftime_now('%%') }}") == "|%");

    const auto year_now = [] {
        const std::time_t now = std::time(nullptr);
        std::tm local{};
        localtime_r(&now, &local);
        return std::to_string(local.tm_year + 1900);
    };
    const std::string before = year_now();
    const std::string rendered = loom::chat::Template("{{ strftime_now('%Y') }}").render(nlohmann::json::object());
    CHECK((rendered == before || rendered == year_now()));
}

TEST_CASE("chat template: load_chat_template reads chat_template.jinja, then tokenizer_config.json") {
    std::ifstream jinja_file(chat_data("smollm2-1.7b-instruct/chat_template.jinja"), std::ios::binary);
    std::ostringstream jinja_text;
    jinja_text << jinja_file.rdbuf();
    CHECK(loom::chat::load_chat_template(chat_data("smollm2-1.7b-instruct")) == jinja_text.str());

    const auto qwen = loom::chat::load_chat_template(chat_data("qwen2.5-0.5b-instruct"));
    REQUIRE(qwen.has_value());
    CHECK(qwen->rfind("{%- if tools %}", 0) == 0);

    loom::testing::ScratchFolder folder("chat-template-load");
    const auto write = [&](const std::string& name, const std::string& text) { std::ofstream(folder / name, std::ios::binary) << text; };
    CHECK_FALSE(loom::chat::load_chat_template(folder.path()).has_value());
    write("tokenizer_config.json", R"({"bos_token": "<s>"})");
    CHECK_FALSE(loom::chat::load_chat_template(folder.path()).has_value());
    write("tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
    CHECK(loom::chat::load_chat_template(folder.path()) == "D");
    write("tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "rag", "template": "R"}]})");
    CHECK_THROWS_AS(loom::chat::load_chat_template(folder.path()), loom::not_found_error);
    CHECK_THAT(message_of([&] { loom::chat::load_chat_template(folder.path()); }),
               Catch::Matchers::Contains("'tool_use', 'rag'") && Catch::Matchers::Contains("'default'"));
    write("tokenizer_config.json", R"({"chat_template": 42})");
    CHECK_THROWS_AS(loom::chat::load_chat_template(folder.path()), loom::format_error);
    write("tokenizer_config.json", R"({"chat_template": )");
    CHECK_THROWS_AS(loom::chat::load_chat_template(folder.path()), loom::format_error);
    // chat_template.jinja wins over tokenizer_config.json, byte for byte.
    write("chat_template.jinja", "{{ bos_token }}\r\n");
    CHECK(loom::chat::load_chat_template(folder.path()) == "{{ bos_token }}\r\n");
    CHECK_THROWS_AS(loom::chat::load_chat_template(folder / "absent"), loom::not_found_error);
}

TEST_CASE("chat template: chat_template_special_tokens reads strings and AddedToken objects") {
    const nlohmann::json smollm = loom::chat::chat_template_special_tokens(chat_data("smollm2-1.7b-instruct"));
    CHECK(smollm["bos_token"] == "<|im_start|>");
    CHECK(smollm["eos_token"] == "<|im_end|>");
    CHECK(smollm["additional_special_tokens"] == nlohmann::json::array({"<|im_start|>", "<|im_end|>"}));
    const nlohmann::json qwen = loom::chat::chat_template_special_tokens(chat_data("qwen2.5-0.5b-instruct"));
    CHECK_FALSE(qwen.contains("bos_token"));
    CHECK(qwen["eos_token"] == "<|im_end|>");
    CHECK(loom::chat::chat_template_special_tokens(chat_data("mistral-7b-instruct-v0.2"))["bos_token"] == "<s>");

    loom::testing::ScratchFolder folder("chat-template-tokens");
    std::ofstream(folder / "tokenizer_config.json")
        << R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": null, "additional_special_tokens": []})";
    std::ofstream(folder / "special_tokens_map.json") << R"({"bos_token": "<ignored>", "eos_token": {"content": "</s>"}, "unk_token": "<unk>"})";
    CHECK(loom::chat::chat_template_special_tokens(folder.path()) ==
          nlohmann::json({{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}}));
    std::ofstream(folder / "tokenizer_config.json") << R"({"bos_token": 7})";
    CHECK_THROWS_AS(loom::chat::chat_template_special_tokens(folder.path()), loom::format_error);
}

TEST_CASE("chat template: apply_chat_template gives the template what transformers gives it") {
    const std::string probe = "{{ tools is defined }}{{ tools is none }}{{ documents is none }}{{ add_generation_prompt }}{{ messages | length }}";
    CHECK(loom::chat::apply_chat_template(probe, nlohmann::json::array(), false) == "TrueTrueTrueFalse0");
    CHECK(loom::chat::apply_chat_template(probe, nlohmann::json::array({{{"role", "user"}}}), true) == "TrueTrueTrueTrue1");
    CHECK_THROWS_AS(loom::chat::apply_chat_template(probe, nlohmann::json::object(), true), loom::argument_error);
    CHECK_THROWS_AS(loom::chat::apply_chat_template(probe, nlohmann::json::array(), true, {{"messages", 1}}), loom::argument_error);

    // nlohmann::json sorts object members; ordered_json keeps the document's order, as Python does.
    const std::string dump = "{{ tools | tojson }}";
    const std::string tool = R"([{"name": "f", "description": "d"}])";
    CHECK(loom::chat::apply_chat_template(dump, nlohmann::json::array(), false, {{"tools", nlohmann::json::parse(tool)}}) ==
          R"([{"description": "d", "name": "f"}])");
    CHECK(loom::chat::apply_chat_template(dump, ordered_json::array(), false, ordered_json{{"tools", ordered_json::parse(tool)}}) ==
          R"([{"name": "f", "description": "d"}])");
}

// Where the standard library has no floating-point to_chars/from_chars (Emscripten's libc++),
// templates print and read floats through the C library. Both ways must give to_chars's
// and from_chars's results; here, where both exist, they are compared directly.
TEST_CASE("jinja: float text through the C library matches to_chars and from_chars", "[chat][jinja]") {
    using loom::chat::detail::decimal_to_double;
    using loom::chat::detail::decimal_to_double_c_library;
    using loom::chat::detail::shortest_scientific;
    using loom::chat::detail::shortest_scientific_c_library;
    std::mt19937_64 random(20261125);
    std::vector<double> numbers = {0.0, -0.0, 1.0, 0.1, 0.3, 1.0 / 3.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                                   123456789012345678.0, 9007199254740993.0, 1e23, 2.5, -7.25e-5};
    for (int i = 0; i < 20000; ++i) {
        const double number = std::bit_cast<double>(random());
        if (std::isfinite(number)) numbers.push_back(number);
        numbers.push_back(double(std::int64_t(random() % 2000001) - 1000000) / 1000.0);  // short decimals
    }
    std::size_t mismatches = 0;
    for (const double number : numbers) {
        const std::string expected = shortest_scientific(number);
        const std::string text = shortest_scientific_c_library(number);
        if (text != expected && ++mismatches <= 5) FAIL_CHECK(text << " != " << expected);
        std::string fixed = expected.substr(expected[0] == '-' ? 1 : 0);  // decimal_to_double reads no sign
        double parsed = 0.0;
        CHECK(decimal_to_double_c_library(fixed, parsed) == std::errc());
        CHECK(parsed == std::abs(number));
    }
    CHECK(mismatches == 0);

    for (const char* text : {"1.5", ".5", "5.", "2e-3", "2E+3", "007", "1e400", "1e-400", "4.9e-324", "1e-320", "",
                             "1e", "e5", "+1", "-1", " 1", "1 ", "0x10", "inf", "nan", "1.2.3", "1e5.5", ".", "1,5"}) {
        INFO('"' << text << '"');
        double from_charconv = -1.0, from_c_library = -1.0;
        const std::errc expected = decimal_to_double(text, from_charconv);
        CHECK(decimal_to_double_c_library(text, from_c_library) == expected);
        if (expected == std::errc()) CHECK(from_c_library == from_charconv);
    }
}
