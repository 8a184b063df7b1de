// The pre-tokenizer regex engine: each construct on its own, the real tokenizer.json patterns
// against node's RegExp as an independent reference, errors that name the offset, inputs long
// enough to break a recursive matcher, and progress after empty matches.
#include <catch2/catch.hpp>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/tokenizer/regex.hpp"
#include "loom/tokenizer/utf8.hpp"
#include "test_support.hpp"

namespace Catch {
template <>
struct StringMaker<std::pair<std::size_t, std::size_t>> {
    static std::string convert(const std::pair<std::size_t, std::size_t>& span) {
        return "[" + std::to_string(span.first) + "," + std::to_string(span.second) + ")";
    }
};
}  // namespace Catch

namespace {

using loom::tokenizer::Regex;
using Spans = std::vector<std::pair<std::size_t, std::size_t>>;

Spans spans(const std::string& pattern, const std::string& text) { return Regex(pattern).find_all(loom::utf8::decode(text)); }

// The matched texts, which read better in a failure report than offsets.
std::vector<std::string> pieces(const std::string& pattern, const std::string& text) {
    const std::u32string decoded = loom::utf8::decode(text);
    std::vector<std::string> result;
    for (const auto& [begin, end] : Regex(pattern).find_all(decoded)) result.push_back(loom::utf8::encode(decoded.substr(begin, end - begin)));
    return result;
}

using Pieces = std::vector<std::string>;

struct NamedPattern {
    std::string name;
    std::string pattern;
    std::string javascript;  // when the automatic translation cannot express the pattern
};

// Pre-tokenizer patterns as tokenizer.json files write them (after JSON unescaping).
const std::string gpt2_pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const std::string llama3_pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const std::string qwen2_pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<NamedPattern> real_patterns() {
    return {
        // ByteLevel's built-in pattern (use_regex: true): GPT-2, SmolLM2 and StarCoder (after
        // their Digits pre-tokenizer), Falcon.
        {"gpt2", gpt2_pattern, ""},
        // Llama-3 (also DeepSeek-R1-Distill-Llama), Split, Isolated.
        {"llama3", llama3_pattern, ""},
        // Qwen2, Qwen2.5, Qwen3.
        {"qwen2", qwen2_pattern, ""},
        // DeepSeek V3 / R1: three Splits in sequence.
        {"deepseek-v3 numbers", R"(\p{N}{1,3})", ""},
        {"deepseek-v3 cjk", "[一-龥぀-ゟ゠-ヿ]+", ""},
        {"deepseek-v3 main",
         R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
         ""},
        // DeepSeek LLM and V2: six Splits (the first with literal CR and LF characters). The
        // letter class lists cased letters by range; six of its characters are written as
        // escapes because Unicode normalization (which editors and web pages apply) replaces
        // them by canonical equivalents elsewhere in the alphabet, which breaks the ranges.
        {"deepseek-llm newlines", "[\r\n]", ""},
        {"deepseek-llm letters",
         "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1F7Dᾀ-ᾴᾶ-ᾼ\u1FBEῂ-ῄῆ-ῌῐ-\u1FD3ῖ-\u1FDBῠ-Ῥῲ-ῴῶ-"
         "ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212A-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
         ""},
        {"deepseek-llm punctuation", "\\s?[!-/:-~！-／：-～‘-‟　-。]+", ""},
        {"deepseek-llm trailing space", "\\s+$", ""},
        {"deepseek-llm cjk", "[一-龥ࠀ-一가-퟿]+", ""},
        {"deepseek-llm numbers", "\\p{N}+", ""},
        // DeepSeek Coder: five Splits.
        {"deepseek-coder letters", R"(\s?\p{L}+)", ""},
        {"deepseek-coder punctuation", R"(\s?\p{P}+)", ""},
        {"deepseek-coder digit", R"(\p{N})", ""},
        // Mistral NeMo / Tekken.
        {"tekken",
         R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
         ""},
        // GPT-4o's o200k, which tokenizer.json conversions of it carry.
        {"o200k",
         R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
         ""},
        // Falcon: three digits, after ByteLevel and Digits.
        {"falcon digits", "[0-9][0-9][0-9]", ""},
        // Bloom: Oniguruma reads the inner [...] as a nested class (a union); JavaScript
        // needs it flattened.
        {"bloom", R"( ?[^(\s|[.,!?…。，、।۔،])]+)", R"( ?[^(\p{White_Space}|.,!?…。，、।۔،)]+)"},
    };
}

// Small patterns whose meaning is the same in Oniguruma and JavaScript (after translation).
std::vector<std::string> construct_patterns() {
    return {
        "a|ab",
        "ab|a",
        "(?:a|ab)(?:c|bcd)",
        "a*",
        "a+?",
        "a{2,3}",
        "a{2,}?",
        "(?:ab)+",
        "(a|b)*c",
        "(?:a|b|)+?c",
        "x*y",
        "[^a-z]+",
        R"(\p{Lu}\p{Ll}+)",
        R"(\P{L}+)",
        R"([\p{L}\p{M}]+)",
        R"(\w+)",
        R"(\d+)",
        R"(\s+)",
        R"(\S+)",
        R"([^\s]+)",
        R"((?=\p{L})\w+)",
        R"(\s+(?!\S))",
        R"(.+)",
        R"(^\s*\S)",
        R"(\S+$)",
        R"(\p{N}{1,3})",
        R"([\x{4e00}-\x{9fa5}]+)",
        R"([\s\S]{3})",
        R"(\p{Nd}+|\p{No}|\p{Nl})",
        R"(\p{Mn}+)",
        R"(\p{So}+)",
        R"(\p{Sc}|\p{Sk}|\p{Sm})",
        R"(\p{Pd}|\p{Ps}|\p{Pe}|\p{Pi}|\p{Pf})",
        R"((?:\p{L}\p{M}*)+)",
        R"(\p{Zs}+)",
        R"(\p{Cc}+)",
        R"(\p{Cf})",
        R"(\p{Lo}{2})",
        R"(a??b)",
        R"((?i:hello|world|s|k))",
        R"((?!\p{N})\S{2,4})",
        R"(\s*[\r\n]+)",
        R"( ?[^\s\p{L}\p{N}]+[\r\n]*)",
        R"([\u00e0-\u00ff]+)",
        R"(\p{L}*)",
        R"((?:\s|\p{P})*?\p{N})",
        R"(\n|\r\n?)",
    };
}

// The same pattern for JavaScript's RegExp with the u flag: \s there is not White_Space (it
// adds U+FEFF and drops U+0085), \d and \w are ASCII, '.' also stops at \r, U+2028 and
// U+2029, ^ and $ are whole-text anchors, and there is no (?i:...).
std::string to_javascript(const std::string& pattern) {
    std::string out;
    std::size_t class_depth = 0;
    int case_insensitive_depth = -1;  // paren depth at which the (?i: group closes
    int paren_depth = 0;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        const char c = pattern[i];
        if (c == '\\' && i + 1 < pattern.size()) {
            const char next = pattern[++i];
            switch (next) {
                case 's': out += R"(\p{White_Space})"; break;
                case 'S': out += R"(\P{White_Space})"; break;
                case 'd': out += R"(\p{Nd})"; break;
                case 'D': out += R"(\P{Nd})"; break;
                case 'w': out += class_depth ? R"(\p{L}\p{M}\p{Nd}\p{Pc})" : R"([\p{L}\p{M}\p{Nd}\p{Pc}])"; break;
                case 'x':
                    if (i + 1 < pattern.size() && pattern[i + 1] == '{') {
                        out += "\\u";
                    } else {
                        out += "\\x";
                    }
                    break;
                default:
                    out += '\\';
                    out += next;
            }
            continue;
        }
        if (class_depth) {
            if (c == ']') --class_depth;
            if (c == '[') FAIL("nested class in " << pattern << ": give a JavaScript version");
            out += c;
            if (case_insensitive_depth >= 0 && std::isalpha(static_cast<unsigned char>(c))) {
                out += char(std::islower(static_cast<unsigned char>(c)) ? std::toupper(c) : std::tolower(c));
            }
            continue;
        }
        if (c == '[') {
            ++class_depth;
            out += c;
            if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
            continue;
        }
        if (pattern.compare(i, 4, "(?i:") == 0) {
            out += "(?:";
            ++paren_depth;
            case_insensitive_depth = paren_depth;
            i += 3;
            continue;
        }
        if (c == '(') ++paren_depth;
        if (c == ')') {
            if (paren_depth == case_insensitive_depth) case_insensitive_depth = -1;
            --paren_depth;
        }
        if (case_insensitive_depth >= 0 && std::isalpha(static_cast<unsigned char>(c))) {
            const char lower = char(std::tolower(c));
            out += '[';
            out += lower;
            out += char(std::toupper(c));
            if (lower == 's') out += "ſ";
            if (lower == 'k') out += "K";
            out += ']';
            continue;
        }
        if (c == '$') {
            out += R"((?![^\n]))";
        } else if (c == '^') {
            out += R"((?<![^\n]))";
        } else if (c == '.') {
            out += R"([^\n])";
        } else {
            out += c;
        }
    }
    return out;
}

// Strings that trip pre-tokenizers: contractions in both cases, code, long numbers, emoji
// sequences, scripts without spaces, combining marks, unusual spaces and line breaks.
std::vector<std::string> tricky_texts() {
    return {
        "",
        " ",
        "Hello world",
        "I'm sure it's fine, isn't it? We'll see; they'd've known. You're right, I've got it.",
        "I'M SURE IT'S FINE, ISN'T IT? WE'LL SEE; THEY'D'VE KNOWN. YOU'RE RIGHT, I'VE GOT IT.",
        "Mixed 'S 'T 'Re 'vE 'M 'Ll 'D and 'x 'sa 'll",
        "\tdef main():\n\t\treturn 42  # answer\n\n\n    if x  ==  y:\n        pass\r\n\r\n",
        "for (int i = 0; i < n; ++i) {\n    total += values[i] * 3.14159;\n}\n",
        "   leading and trailing spaces   ",
        "a  b   c    d\n\ne \n f\t \tg",
        "1234567890123 12 1 123 1234 0.5 -42 3,000,000 ½ Ⅻ ٣٤٥ ４５６",
        "Emoji: 👍🏽 👩‍💻 🏳️‍🌈 ❤️ done!! 🎉🎉🎉",
        "中文测试：你好，世界！这是一个句子。日本語のテキスト、カタカナ。한국어 문장입니다.",
        "العربية: مرحبا بالعالم، كيف حالك؟ ١٢٣",
        "हिन्दी पाठ: नमस्ते दुनिया। क्षत्रिय",
        "Combining: e\u0301te\u0301 n\u0303 a\u030A\u0323 x\u20DD",
        "Zero\u200Bwidth\u200Djoin\u00ADsoft\uFEFFbom",
        "Spaces:\u00A0nbsp\u3000ideographic\u2003em\u2028line\u2029para\u0085nel",
        "ſ and K and 'ſ 'K",
        "Ελληνικά κείμενα και Кириллица тоже. Ünïcödé àçćéñtś",
        "https://example.com/path?query=1&x=2#frag user@example.org",
        "<|endoftext|> <s> </s> [INST] {\"json\": [1, 2, 3]}",
        "...!!!?? ?---___***///\\\\\\|||",
        "\n\n\n",
        "\r\n\r\n  \r\n",
        "x\n",
        "tab\there\t\t",
        "CamelCaseWordsAndHTTPServer XMLHttpRequest iPhone",
        "ǅungla ǈ ǋ ᾈ",
        "ʰʲ ˈstress",
        std::string("a\0b\x01" "c\x7F", 6),
    };
}

// Random strings over pieces that exercise every class the patterns use.
std::vector<std::string> random_texts(std::size_t count) {
    const std::vector<std::string> units = {
        "a", "Z", "the", "The", "HTTP", "x", " ", " ", "  ", "   ", "\t", "\n", "\r", "\r\n", "'", "'s", "'S", "'ll", "'LL", "'Re",
        "'ve", "'m", "'D", "'t", "0", "7", "123", "45678", ".", ",", "!", "?", "-", "/", "(", ")", "[", "]", "{", "}", "\"", "#",
        "$", "%", "&", "*", "+", "=", "<", ">", "@", "\\", "^", "_", "`", "|", "~", "é", "e\u0301", "\u0301", "ß", "Ω", "ж", "Ж",
        "中", "文", "龥", "ぁ", "カ", "ー", "한", "\u3000", "\u00A0", "\u2003", "\u0085", "\u2028", "\uFEFF", "\u200D", "👍", "🏽",
        "👩‍💻", "😀", "٣", "ع", "न", "ि", "्", "½", "Ⅻ", "４", "ſ", "K", "ǅ", "ʰ", "…", "。", "，", "、", "।", "€", "©", "\u0007",
        "𐐀", "𝔘", "ℕ"};
    std::mt19937 random(20240601);
    std::uniform_int_distribution<std::size_t> length(0, 24), pick(0, units.size() - 1);
    std::vector<std::string> texts;
    for (std::size_t i = 0; i < count; ++i) {
        std::string text;
        for (std::size_t n = length(random); n > 0; --n) text += units[pick(random)];
        texts.push_back(text);
    }
    return texts;
}

const char* const node_script = R"js(
const fs = require('fs');
const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const output = input.patterns.map((pattern) => {
  let regex;
  try {
    regex = new RegExp(pattern, 'gu');
  } catch (error) {
    return { error: String(error) };
  }
  return {
    matches: input.texts.map((text) => {
      // UTF-16 index -> code point offset.
      const offsets = new Array(text.length + 1);
      let count = 0;
      for (let i = 0; i < text.length; ) {
        offsets[i] = count;
        const width = text.codePointAt(i) > 0xffff ? 2 : 1;
        if (width === 2) offsets[i + 1] = count;
        i += width;
        ++count;
      }
      offsets[text.length] = count;
      const result = [];
      let lastEnd = -1;
      for (const match of text.matchAll(regex)) {
        const begin = offsets[match.index];
        const end = offsets[match.index + match[0].length];
        // Rust's find_iter skips an empty match where the previous match ended.
        if (begin === end && end === lastEnd) continue;
        result.push([begin, end]);
        lastEnd = end;
      }
      return result;
    }),
  };
});
fs.writeFileSync(process.argv[3], JSON.stringify(output));
)js";

bool node_available() {
    static const bool available = loom::testing::run_command("node --version > /dev/null 2>&1") == 0;
    return available;
}

// Compares our matches with node's for every pattern on every text.
void check_against_node(const std::vector<NamedPattern>& patterns, const std::vector<std::string>& texts) {
    if (!node_available()) {
        LOOM_REFERENCE_MISSING("node is not installed: skipping the comparison with JavaScript's RegExp");
        return;
    }
    loom::testing::ScratchFolder folder("regex-node");
    nlohmann::json input;
    input["texts"] = texts;
    input["patterns"] = nlohmann::json::array();
    for (const NamedPattern& named : patterns) {
        input["patterns"].push_back(named.javascript.empty() ? to_javascript(named.pattern) : named.javascript);
    }
    std::ofstream(folder / "script.js") << node_script;
    std::ofstream(folder / "input.json") << input.dump();
    const std::string command = "node " + (folder / "script.js").string() + " " + (folder / "input.json").string() + " " +
                                (folder / "output.json").string();
    REQUIRE(loom::testing::run_command(command) == 0);
    std::ifstream output_file(folder / "output.json");
    const nlohmann::json output = nlohmann::json::parse(output_file);
    REQUIRE(output.size() == patterns.size());

    std::size_t compared = 0;
    for (std::size_t p = 0; p < patterns.size(); ++p) {
        INFO("pattern " << patterns[p].name << ": " << patterns[p].pattern << "\n  as JavaScript: " << input["patterns"][p].get<std::string>());
        REQUIRE_FALSE(output[p].contains("error"));
        const Regex regex(patterns[p].pattern);
        std::size_t mismatches = 0;
        for (std::size_t t = 0; t < texts.size(); ++t) {
            Spans expected;
            for (const auto& span : output[p]["matches"][t]) expected.emplace_back(span[0].get<std::size_t>(), span[1].get<std::size_t>());
            const Spans actual = regex.find_all(loom::utf8::decode(texts[t]));
            ++compared;
            if (actual == expected) continue;
            // Report a few mismatches per pattern, not hundreds.
            if (++mismatches > 3) continue;
            INFO("text: \"" << texts[t] << "\"");
            CHECK(actual == expected);
        }
        CHECK(mismatches == 0);
    }
    CHECK(compared == patterns.size() * texts.size());
}

}  // namespace

TEST_CASE("regex: literals, including non-ASCII, match themselves") {
    CHECK(pieces("ab", "abcabab") == Pieces{"ab", "ab", "ab"});
    CHECK(pieces("héllo", "héllo hello héllo") == Pieces{"héllo", "héllo"});
    CHECK(pieces("中文", "中文中文") == Pieces{"中文", "中文"});
    CHECK(pieces("👍🏽", "a👍🏽b👍") == Pieces{"👍🏽"});
    CHECK(spans("é", "aéé") == Spans{{1, 2}, {2, 3}});  // code-point offsets, not bytes
    CHECK(pieces("]}", "a]}b") == Pieces{"]}"});
    CHECK(pieces("a{", "a{") == Pieces{"a{"});  // not an interval: a literal brace
    CHECK(pieces("a{,", "a{,") == Pieces{"a{,"});
}

TEST_CASE("regex: escapes") {
    CHECK(pieces(R"(\t\n\r\f\v)", "x\t\n\r\f\vy") == Pieces{"\t\n\r\f\v"});
    CHECK(pieces(R"(\\\.\-\'\"\/\(\)\[\]\{\}\|\*\+\?\^\$)", R"(\.-'"/()[]{}|*+?^$)") == Pieces{R"(\.-'"/()[]{}|*+?^$)"});
    CHECK(pieces(R"(\x41\x{42}\x{1F44D}\u00e9\u4E2D)", "AB👍é中") == Pieces{"AB👍é中"});
    CHECK(pieces(R"(\a\e)", "\a\x1B") == Pieces{"\a\x1B"});
    CHECK(pieces(R"(\中)", "中") == Pieces{"中"});
}

TEST_CASE("regex: dot matches anything but a newline") {
    CHECK(pieces(".+", "ab\ncd\r\n中") == Pieces{"ab", "cd\r", "中"});
    CHECK(pieces(".", "\u2028\u0085") == Pieces{"\u2028", "\u0085"});
}

TEST_CASE("regex: ^ and $ are line anchors, \\A \\z \\Z text anchors") {
    CHECK(pieces("^a", "aa\na") == Pieces{"a", "a"});
    CHECK(pieces("a$", "aa\naa") == Pieces{"a", "a"});
    CHECK(spans(R"(\s+$)", "x  \ny  ") == Spans{{1, 3}, {5, 7}});
    CHECK(pieces(R"(\Aa)", "aa\na") == Pieces{"a"});
    CHECK(spans(R"(a\z)", "a\na") == Spans{{2, 3}});
    CHECK(spans(R"(a\Z)", "a\na\n") == Spans{{2, 3}});
    CHECK(spans(R"(a\Z)", "a\na\n\n").empty());
    CHECK(spans("$", "ab") == Spans{{2, 2}});
    CHECK(spans("^", "a\nb") == Spans{{0, 0}, {2, 2}});
}

TEST_CASE("regex: character classes") {
    CHECK(pieces("[a-c]+", "abcdcba") == Pieces{"abc", "cba"});
    CHECK(pieces("[^a-c]+", "abcdcba") == Pieces{"d"});
    CHECK(pieces("[-a]+", "a-b-") == Pieces{"a-", "-"});
    CHECK(pieces("[a-]+", "a-b-") == Pieces{"a-", "-"});
    CHECK(pieces(R"([\]\\\-]+)", R"(x]\-y)") == Pieces{R"(]\-)"});
    CHECK(pieces("[]a]+", "]a]b") == Pieces{"]a]"});  // ']' first is a literal
    CHECK(pieces("[一-龥]+", "中文abc汉字") == Pieces{"中文", "汉字"});
    CHECK(pieces(R"([\x{1F600}-\x{1F64F}]+)", "a😀😃b") == Pieces{"😀😃"});
    CHECK(pieces(R"([\p{L}\p{N}]+)", "ab12 中3,x") == Pieces{"ab12", "中3", "x"});
    CHECK(pieces(R"([^\s\p{L}]+)", "ab, 12!x") == Pieces{",", "12!"});
    CHECK(pieces(R"([\P{L}]+)", "ab, 12!x") == Pieces{", 12!"});
    CHECK(pieces(R"([\S]+)", "a b") == Pieces{"a", "b"});
    CHECK(pieces(R"([^\S\n]+)", "a \t\nb") == Pieces{" \t"});
    CHECK(pieces(R"([\b])", "a\bb") == Pieces{"\b"});
    // A nested class is a union (Bloom's pattern).
    CHECK(pieces("[a[bc]]+", "abcd") == Pieces{"abc"});
    CHECK(pieces(R"( ?[^(\s|[.,!?…。，、।۔،])]+)", "Hello, world! How are you…fine。") ==
          Pieces{"Hello", " world", " How", " are", " you", "fine"});
}

TEST_CASE("regex: \\s \\d \\w and their negations have Unicode meanings") {
    // \s is White_Space: U+0085, U+00A0, U+2028 and U+3000 are in, U+200B and U+FEFF are not.
    CHECK(pieces(R"(\s+)", "a \t\n\r\f\v\u0085\u00A0\u2028\u3000b\u200B\uFEFFc") == Pieces{" \t\n\r\f\v\u0085\u00A0\u2028\u3000"});
    CHECK(pieces(R"(\S+)", "a\u200B\uFEFF b") == Pieces{"a\u200B\uFEFF", "b"});
    CHECK(pieces(R"(\d+)", "12 ٣٤ ４ ½ Ⅻ") == Pieces{"12", "٣٤", "４"});
    CHECK(pieces(R"(\D+)", "1a½2") == Pieces{"a½"});
    CHECK(pieces(R"(\w+)", "héllo_wörld e\u0301 ٣x-中") == Pieces{"héllo_wörld", "e\u0301", "٣x", "中"});
    CHECK(pieces(R"(\W+)", "a, b") == Pieces{", "});
}

TEST_CASE("regex: Unicode properties") {
    CHECK(pieces(R"(\p{L}+)", "héllo wörld 中文 ǅx ʰ 12") == Pieces{"héllo", "wörld", "中文", "ǅx", "ʰ"});
    CHECK(pieces(R"(\p{N}+)", "a12½Ⅻ٣ b") == Pieces{"12½Ⅻ٣"});
    CHECK(pieces(R"(\p{Lu}+)", "HeLLo ÀÉ") == Pieces{"H", "LL", "ÀÉ"});
    CHECK(pieces(R"(\p{Ll}+)", "HeLLo àé") == Pieces{"e", "o", "àé"});
    CHECK(pieces(R"(\p{Lt})", "ǅ ǈ D") == Pieces{"ǅ", "ǈ"});
    CHECK(pieces(R"(\p{M}+)", "e\u0301\u0323x") == Pieces{"\u0301\u0323"});
    CHECK(pieces(R"(\p{P}+)", "a,.!?-()b…。") == Pieces{",.!?-()", "…。"});
    CHECK(pieces(R"(\p{S}+)", "a+$^`|~<>€©b") == Pieces{"+$^`|~<>€©"});
    CHECK(pieces(R"(\P{L}+)", "ab12cd") == Pieces{"12"});
    CHECK(pieces(R"(\p{^L}+)", "ab12cd") == Pieces{"12"});
    CHECK(pieces(R"(\P{^L}+)", "ab12cd") == Pieces{"ab", "cd"});
    CHECK(pieces(R"(\p{Letter}+)", "ab12") == Pieces{"ab"});
    CHECK(pieces(R"(\p{White_Space}+)", "a \u3000b") == Pieces{" \u3000"});
}

TEST_CASE("regex: alternation takes the first alternative that lets the pattern match") {
    CHECK(pieces("a|ab", "ab") == Pieces{"a"});
    CHECK(pieces("ab|a", "ab") == Pieces{"ab"});
    CHECK(pieces("(?:a|ab)c", "abc") == Pieces{"abc"});  // backtracks into the second alternative
    CHECK(pieces("x|", "axb") == Pieces{"", "x", ""});   // empty match after 'x' is skipped
    CHECK(pieces("(a)(b)|c", "abc") == Pieces{"ab", "c"});
    CHECK(pieces("(?<name>a)b", "ab") == Pieces{"ab"});
}

TEST_CASE("regex: quantifiers, greedy, lazy and possessive") {
    CHECK(pieces("a*", "aaa") == Pieces{"aaa"});
    CHECK(pieces("a+", "baaab") == Pieces{"aaa"});
    CHECK(pieces("ab?", "aab") == Pieces{"a", "ab"});
    CHECK(pieces("a{2}", "aaaaa") == Pieces{"aa", "aa"});
    CHECK(pieces("a{2,}", "aaaaa") == Pieces{"aaaaa"});
    CHECK(pieces("a{,2}b", "aaab") == Pieces{"aab"});
    CHECK(pieces("a{1,3}", "aaaaa") == Pieces{"aaa", "aa"});
    CHECK(pieces(R"(\p{N}{1,3})", "1234567") == Pieces{"123", "456", "7"});
    CHECK(pieces("a+?", "aaa") == Pieces{"a", "a", "a"});
    CHECK(pieces("a*?b", "aab") == Pieces{"aab"});
    CHECK(pieces("a{2,3}?", "aaaaa") == Pieces{"aa", "aa"});
    CHECK(pieces("<.+?>", "<a><b>") == Pieces{"<a>", "<b>"});
    CHECK(pieces("<.+>", "<a><b>") == Pieces{"<a><b>"});
    CHECK(pieces("a??b", "ab b") == Pieces{"ab", "b"});
    CHECK(pieces("(?:ab)+", "ababab abx") == Pieces{"ababab", "ab"});
    CHECK(pieces("(?:ab){2}", "ababab") == Pieces{"abab"});
    CHECK(pieces("(?:a|bc)*d", "abcabcd") == Pieces{"abcabcd"});
    CHECK(pieces("(?:a|bc)*?d", "abcd") == Pieces{"abcd"});
    // Possessive and atomic: no giving back.
    CHECK(pieces("a*+a", "aaa").empty());
    CHECK(pieces("a++b", "aab") == Pieces{"aab"});
    CHECK(pieces("a?+a", "a").empty());
    CHECK(pieces("(?>a|ab)c", "abc").empty());
    CHECK(pieces("(?>ab|a)c", "abc") == Pieces{"abc"});
    CHECK(pieces("(?>a+)b", "aab") == Pieces{"aab"});
    // Repetitions of a repetition are allowed, as in Oniguruma.
    CHECK(pieces("(?:a{2})*", "aaaaa") == Pieces{"aaaa", ""});
    CHECK(pieces("a**", "aab") == Pieces{"aa", ""});
    CHECK(pieces("(?:a+)+b", "aab") == Pieces{"aab"});
}

TEST_CASE("regex: case-insensitive groups fold ASCII letters") {
    const std::string contractions = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
    CHECK(pieces(contractions, "'s 'S 'Re 'rE 'VE 'M 'lL 'D 'x") == Pieces{"'s", "'S", "'Re", "'rE", "'VE", "'M", "'lL", "'D"});
    // Simple case folding maps U+017F (long s) to s and U+212A (Kelvin) to k.
    CHECK(pieces(contractions, "'ſ") == Pieces{"'ſ"});
    CHECK(pieces("(?i:k)", "kKK") == Pieces{"k", "K", "K"});
    CHECK(pieces("(?i:[a-c]+)x", "AbCx abcX") == Pieces{"AbCx"});
    CHECK(pieces("(?i:[^a]+)", "aAbB") == Pieces{"bB"});
    CHECK(pieces("(?i)ab|cd", "AB CD") == Pieces{"AB", "CD"});
    CHECK(pieces("(?:(?i)ab)c", "ABc ABC") == Pieces{"ABc"});
    CHECK(pieces("(?i:a(?-i:b))", "Ab AB") == Pieces{"Ab"});
    CHECK(pieces("(?i:\\p{L}+)", "AbC") == Pieces{"AbC"});
    CHECK(pieces("(?i:1-€)", "1-€") == Pieces{"1-€"});  // no case, so allowed
}

TEST_CASE("regex: lookahead") {
    CHECK(pieces(R"(\s+(?!\S))", "a   b") == Pieces{"  "});
    CHECK(pieces(R"(\s+(?!\S)|\s+)", "a   b  ") == Pieces{"  ", " ", "  "});
    CHECK(pieces(R"(\w+(?=,))", "ab, cd; ef,") == Pieces{"ab", "ef"});
    CHECK(pieces(R"((?=\p{Lu})\p{L}+)", "abc Def GHi") == Pieces{"Def", "GHi"});
    CHECK(pieces(R"((?!a)\w)", "abc") == Pieces{"b", "c"});
    CHECK(pieces(R"(a(?=b|c)\w)", "ab ac ad") == Pieces{"ab", "ac"});
    CHECK(pieces(R"((?:(?!ab).)+)", "xxabyyab") == Pieces{"xx", "byy", "b"});
}

TEST_CASE("regex: empty matches advance one code point, and none is reported where a match ended") {
    CHECK(spans("a*", "baaac") == Spans{{0, 0}, {1, 4}, {5, 5}});
    CHECK(spans("", "ab") == Spans{{0, 0}, {1, 1}, {2, 2}});
    CHECK(spans("", "") == Spans{{0, 0}});
    CHECK(spans(R"(\p{L}*)", "中😀x") == Spans{{0, 1}, {2, 3}});
    CHECK(spans("(?:)", "é") == Spans{{0, 0}, {1, 1}});
    // Loops whose body can match nothing still end.
    CHECK(pieces("(?:a|)*b", "aab") == Pieces{"aab"});
    CHECK(pieces("(?:a*)*b", "aab b") == Pieces{"aab", "b"});
    CHECK(pieces("(?:a?)+?b", "ab") == Pieces{"ab"});
    CHECK(pieces("(?:(?=a))*a", "a") == Pieces{"a"});
    CHECK(spans("(?:$|a)*", "ab") == Spans{{0, 1}, {2, 2}});
}

TEST_CASE("regex: the pattern is kept") {
    CHECK(Regex(gpt2_pattern).pattern() == gpt2_pattern);
    const Regex copy = Regex("a+");
    CHECK(copy.find_all(U"baa") == Spans{{1, 3}});
}

TEST_CASE("regex: unsupported constructs throw unsupported_error naming the offset") {
    using loom::testing::message_of;
    const auto unsupported = [](const std::string& pattern) { return message_of<loom::unsupported_error>([&] { Regex{pattern}; }); };
    CHECK_THAT(unsupported("ab(?<=a)"), Catch::Contains("lookbehind") && Catch::Contains("offset 2") && Catch::Contains("\"ab(?<=a)\""));
    CHECK_THAT(unsupported("(?<!a)b"), Catch::Contains("lookbehind") && Catch::Contains("offset 0"));
    CHECK_THAT(unsupported("(a)\\1"), Catch::Contains("backreference") && Catch::Contains("offset 3"));
    CHECK_THAT(unsupported("a\\bc"), Catch::Contains("\\b") && Catch::Contains("offset 1"));
    CHECK_THAT(unsupported("x\\p{Han}+"), Catch::Contains("\\p{Han}") && Catch::Contains("offset 1"));
    CHECK_THAT(unsupported("[\\p{Greek}]"), Catch::Contains("\\p{Greek}") && Catch::Contains("offset 1"));
    CHECK_THAT(unsupported("(?i:é)"), Catch::Contains("case-insensitive") && Catch::Contains("offset 4"));
    CHECK_THAT(unsupported("(?i:[à-ÿ])"), Catch::Contains("case-insensitive") && Catch::Contains("offset 5"));
    CHECK_THAT(unsupported("(?i:\\p{Lu})"), Catch::Contains("case-insensitive") && Catch::Contains("offset 4"));
    CHECK_THAT(unsupported("[[:alpha:]]"), Catch::Contains("POSIX") && Catch::Contains("offset 1"));
    CHECK_THAT(unsupported("[a-z&&[^aeiou]]"), Catch::Contains("&&") && Catch::Contains("offset 4"));
    CHECK_THAT(unsupported("(?m:a.b)"), Catch::Contains("'m'") && Catch::Contains("offset 2"));
    CHECK_THAT(unsupported("a(?i)b"), Catch::Contains("(?i)") && Catch::Contains("offset 1"));
    CHECK_THAT(unsupported("a{2}?"), Catch::Contains("{n}?") && Catch::Contains("offset 1"));
    CHECK_THAT(unsupported("a{2,3}+"), Catch::Contains("{n,m}+") && Catch::Contains("offset 1"));
    CHECK_THAT(unsupported("\\xE9"), Catch::Contains("\\xE9") && Catch::Contains("offset 0"));
    CHECK_THAT(unsupported("\\q"), Catch::Contains("\\q") && Catch::Contains("offset 0"));
    CHECK_THAT(unsupported("(?:abcdefgh){99999}"), Catch::Contains("instructions"));
    CHECK_THAT(unsupported(std::string(300, '(') + std::string(300, ')')), Catch::Contains("deeper than 200"));
    CHECK_THAT(unsupported("a" + std::string(9, '*')), Catch::Contains("quantifiers") && Catch::Contains("offset 9"));
}

TEST_CASE("regex: malformed patterns throw format_error naming the offset") {
    using loom::testing::message_of;
    const auto malformed = [](const std::string& pattern) { return message_of<loom::format_error>([&] { Regex{pattern}; }); };
    CHECK_THAT(malformed("ab(cd"), Catch::Contains("missing ')'") && Catch::Contains("offset 2"));
    CHECK_THAT(malformed("ab)cd"), Catch::Contains("unmatched ')'") && Catch::Contains("offset 2"));
    CHECK_THAT(malformed("x[abc"), Catch::Contains("char-class") && Catch::Contains("offset 1"));
    CHECK_THAT(malformed("*a"), Catch::Contains("target of repeat") && Catch::Contains("offset 0"));
    CHECK_THAT(malformed("a|+"), Catch::Contains("target of repeat") && Catch::Contains("offset 2"));
    CHECK_THAT(malformed("{2}"), Catch::Contains("target of repeat") && Catch::Contains("offset 0"));
    CHECK_THAT(malformed("^*"), Catch::Contains("target of repeat operator is invalid") && Catch::Contains("offset 1"));
    CHECK_THAT(malformed("a{3,2}"), Catch::Contains("upper bound") && Catch::Contains("offset 1"));
    CHECK_THAT(malformed("a{100001}"), Catch::Contains("100000") && Catch::Contains("offset 2"));
    CHECK_THAT(malformed("[z-a]"), Catch::Contains("empty range") && Catch::Contains("offset 1"));
    CHECK_THAT(malformed("[a-\\d]"), Catch::Contains("range") && Catch::Contains("offset 3"));
    CHECK_THAT(malformed("ab\\"), Catch::Contains("escape") && Catch::Contains("offset 2"));
    CHECK_THAT(malformed("\\x{110000}"), Catch::Contains("code point") && Catch::Contains("offset 0"));
    CHECK_THAT(malformed("\\x{D800}"), Catch::Contains("code point") && Catch::Contains("offset 0"));
    CHECK_THAT(malformed("\\u12"), Catch::Contains("code point") && Catch::Contains("offset 0"));
    CHECK_THAT(malformed("a\\p{L"), Catch::Contains("property") && Catch::Contains("offset 1"));
    CHECK_THAT(malformed("a\\pL"), Catch::Contains("property") && Catch::Contains("offset 1"));
    CHECK_THAT(malformed("a\\p{}"), Catch::Contains("property") && Catch::Contains("offset 1"));
    CHECK_THAT(malformed("(?z)"), Catch::Contains("group option") && Catch::Contains("offset 2"));
    CHECK_THAT(malformed("(?<>a)"), Catch::Contains("group name") && Catch::Contains("offset 3"));
    CHECK_THAT(malformed("a\xFF"), Catch::Contains("UTF-8") && Catch::Contains("offset 1"));
}

TEST_CASE("regex: long inputs do not exhaust the stack") {
    constexpr std::size_t length = 100000;
    const Regex gpt2(gpt2_pattern), llama3(llama3_pattern);
    const std::u32string spaces(length, U' ');
    CHECK(gpt2.find_all(spaces) == Spans{{0, length}});
    CHECK(llama3.find_all(spaces) == Spans{{0, length}});
    CHECK(gpt2.find_all(spaces + U"x") == Spans{{0, length - 1}, {length - 1, length + 1}});
    CHECK(llama3.find_all(spaces + U"x") == Spans{{0, length - 1}, {length - 1, length + 1}});
    const std::u32string letters(length, U'é');
    CHECK(gpt2.find_all(letters) == Spans{{0, length}});
    CHECK(llama3.find_all(U" " + letters) == Spans{{0, length + 1}});
    CHECK(gpt2.find_all(std::u32string(length, U'!')) == Spans{{0, length}});
    CHECK(llama3.find_all(std::u32string(length, U'7')).size() == (length + 2) / 3);
    CHECK(llama3.find_all(std::u32string(length, U'\n')) == Spans{{0, length}});

    // Loops over groups keep one backtracking entry per iteration, on the heap.
    std::u32string abab;
    for (std::size_t i = 0; i < length / 2; ++i) abab += U"ab";
    CHECK(Regex("(?:ab)+").find_all(abab) == Spans{{0, length}});
    CHECK(Regex("(?:a|b)*c").find_all(abab + U"c") == Spans{{0, length + 1}});
    CHECK(Regex("(?:a|b)*?c").find_all(abab + U"c") == Spans{{0, length + 1}});
    CHECK(Regex("(?:(?!c).)+").find_all(abab) == Spans{{0, length}});
    CHECK(Regex("(?:a|b|)*").find_all(abab) == Spans{{0, length}});
}

TEST_CASE("regex: real pre-tokenizer patterns split as expected") {
    CHECK(pieces(gpt2_pattern, "Hello world's   12345 !!  x  ") ==
          Pieces{"Hello", " world", "'s", "  ", " 12345", " !!", " ", " x", "  "});
    CHECK(pieces(llama3_pattern, "I'M fine\n\n  1234567 ...\r\n") ==
          Pieces{"I", "'M", " fine", "\n\n", " ", " ", "123", "456", "7", " ...\r\n"});
    CHECK(pieces(qwen2_pattern, "x=1234;") == Pieces{"x", "=", "1", "2", "3", "4", ";"});
}

TEST_CASE("regex: real pre-tokenizer patterns agree with JavaScript's RegExp") {
    std::vector<std::string> texts = tricky_texts();
    for (std::string& text : random_texts(400)) texts.push_back(std::move(text));
    check_against_node(real_patterns(), texts);
}

TEST_CASE("regex: single constructs agree with JavaScript's RegExp") {
    std::vector<std::string> texts = tricky_texts();
    for (std::string& text : random_texts(150)) texts.push_back(std::move(text));
    std::vector<NamedPattern> patterns;
    for (const std::string& pattern : construct_patterns()) patterns.push_back({pattern, pattern, ""});
    check_against_node(patterns, texts);
}

// Not run by default: prints the throughput of the GPT-2 and Llama-3 patterns on English.
TEST_CASE("regex: throughput on English text", "[.performance]") {
    std::string english;
    for (const char* path : {"/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0", "/usr/share/common-licenses/GFDL-1.3"}) {
        english += loom::testing::read_file(path);
    }
    for (const char* relative : {"README.md", "docs/architecture.md", "docs/models.md", "docs/performance.md"}) {
        english += loom::testing::read_file(loom::testing::source_path(relative));
    }
    REQUIRE(english.size() > 10000);
    std::string text;
    while (text.size() < 5'000'000) text += english;
    const std::u32string decoded = loom::utf8::decode_lossy(text);
    for (const auto& [name, pattern] : {std::pair{"gpt2", gpt2_pattern}, std::pair{"llama3", llama3_pattern}, std::pair{"qwen2", qwen2_pattern}}) {
        const Regex regex(pattern);
        const auto start = std::chrono::steady_clock::now();
        const std::size_t count = regex.find_all(decoded).size();
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        WARN(name << ": " << text.size() / 1e6 << " MB, " << count << " matches in " << seconds << " s ("
                  << text.size() / 1e6 / seconds << " MB/s)");
    }
}
