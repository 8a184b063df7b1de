// Training data: packing a token stream into shifted windows, masking, the validation split,
// shuffled and resumable batches, and reading text / JSONL files with real tokenizers and
// chat templates (tests/data/tokenizers, tests/data/chat_templates, tests/data/train).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/chat/chat_template.hpp"
#include "loom/tokenizer/load.hpp"
#include "loom/train/data.hpp"
#include "test_support.hpp"

namespace {

using loom::testing::message_of;
using loom::train::ignore_index;
using nlohmann::ordered_json;

// tokens[i] = first + i, trained where `trained` says (all trained when it is empty).
loom::train::TokenStream counting_stream(std::size_t count, int first = 0, std::vector<std::uint8_t> trained = {}) {
    loom::train::TokenStream stream;
    stream.tokens.resize(count);
    std::iota(stream.tokens.begin(), stream.tokens.end(), first);
    stream.trained = trained.empty() ? std::vector<std::uint8_t>(count, 1) : trained;
    stream.documents = 1;
    return stream;
}

// The window a batch row came from, in a counting_stream from 0: its first input is window * T.
std::vector<std::size_t> row_windows(const loom::train::Batch& batch) {
    std::vector<std::size_t> windows;
    for (std::size_t row = 0; row < batch.rows; ++row)
        windows.push_back(std::size_t(batch.inputs[row * batch.sequence_length]) / batch.sequence_length);
    return windows;
}

std::vector<std::size_t> take_windows(loom::train::DataLoader& loader, int batches) {
    std::vector<std::size_t> windows;
    for (int i = 0; i < batches; ++i) {
        const auto rows = row_windows(loader.next_batch());
        windows.insert(windows.end(), rows.begin(), rows.end());
    }
    return windows;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
    std::ofstream file(path, std::ios::binary);
    file << text;
}

std::string tokenizer_data(const std::string& name) { return loom::testing::source_path("tests/data/tokenizers/" + name); }

const loom::tokenizer::Tokenizer& smollm2_tokenizer() {
    static const auto tokenizer = loom::tokenizer::load_tokenizer(tokenizer_data("smollm2-135m-instruct"));
    return *tokenizer;
}

// A model's tokenizer and chat template, as a trainer would set them up from its folder.
struct ModelText {
    std::unique_ptr<loom::tokenizer::Tokenizer> tokenizer;
    loom::train::DocumentEncoding encoding;
};

ModelText model_text(const std::string& tokenizer_folder, const std::string& template_folder, std::optional<int> end_of_sequence) {
    ModelText model{loom::tokenizer::load_tokenizer(tokenizer_folder), {}};
    model.encoding.tokenizer = model.tokenizer.get();
    model.encoding.end_of_sequence = end_of_sequence;
    model.encoding.chat_template = loom::chat::load_chat_template(template_folder);
    model.encoding.template_variables = loom::chat::chat_template_special_tokens(template_folder);
    return model;
}

loom::train::DocumentEncoding smollm2_encoding() {
    loom::train::DocumentEncoding encoding;
    encoding.tokenizer = &smollm2_tokenizer();
    encoding.end_of_sequence = 2;  // <|im_end|>
    encoding.chat_template = loom::chat::load_chat_template(loom::testing::source_path("tests/data/chat_templates/smollm2-1.7b-instruct"));
    return encoding;
}

// The stretches of consecutive tokens with the same trained flag, from `first` on.
struct Run {
    bool trained;
    std::vector<int> tokens;
};
std::vector<Run> runs(const loom::train::TokenStream& stream, std::size_t first, std::size_t end) {
    std::vector<Run> result;
    for (std::size_t i = first; i < end; ++i) {
        if (result.empty() || result.back().trained != bool(stream.trained[i])) result.push_back({bool(stream.trained[i]), {}});
        result.back().tokens.push_back(stream.tokens[i]);
    }
    return result;
}

}  // namespace

TEST_CASE("train data: windows share one token and the targets are the inputs shifted by one", "[train][data]") {
    // 11 tokens, T = 4: windows [100..104] and [104..108]; 109 and 110 are a dropped tail.
    const loom::train::PackedDataset data(counting_stream(11, 100), 4, 0.0);
    CHECK(data.train_windows() == std::vector<std::size_t>{0, 1});
    CHECK(data.validation_windows().empty());
    const std::vector<std::size_t> both = {0, 1};
    const auto batch = data.batch(both);
    CHECK(batch.rows == 2);
    CHECK(batch.sequence_length == 4);
    CHECK(batch.inputs == std::vector<int>{100, 101, 102, 103, 104, 105, 106, 107});
    CHECK(batch.targets == std::vector<int>{101, 102, 103, 104, 105, 106, 107, 108});
    const std::vector<std::size_t> reversed = {1, 0};
    CHECK(data.batch(reversed).inputs == std::vector<int>{104, 105, 106, 107, 100, 101, 102, 103});

    const auto& statistics = data.statistics();
    CHECK(statistics.documents == 1);
    CHECK(statistics.tokens == 11);
    CHECK(statistics.train_windows == 2);
    CHECK(statistics.validation_windows == 0);
    CHECK(statistics.train_targets == 8);
    CHECK(statistics.dropped_tokens == 2);
}

TEST_CASE("train data: untrained targets become the ignore index", "[train][data]") {
    // The stream's first token is never a target, whatever its flag.
    const loom::train::PackedDataset data(counting_stream(9, 0, {0, 0, 0, 1, 1, 0, 1, 1, 0}), 4, 0.0);
    const std::vector<std::size_t> both = {0, 1};
    const auto batch = data.batch(both);
    CHECK(batch.inputs == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7});
    CHECK(batch.targets == std::vector<int>{ignore_index, ignore_index, 3, 4, ignore_index, 6, 7, ignore_index});
    CHECK(ignore_index == -100);
    CHECK(data.statistics().train_targets == 4);
    CHECK(data.statistics().dropped_tokens == 0);
}

TEST_CASE("train data: the tail too short for a window is dropped and counted", "[train][data]") {
    CHECK(loom::train::window_count(0, 4) == 0);
    CHECK(loom::train::window_count(4, 4) == 0);
    CHECK(loom::train::window_count(5, 4) == 1);
    CHECK(loom::train::window_count(8, 4) == 1);
    CHECK(loom::train::window_count(9, 4) == 2);
    for (std::size_t tokens = 5; tokens <= 30; ++tokens) {
        const loom::train::PackedDataset data(counting_stream(tokens), 4, 0.0);
        const std::size_t windows = (tokens - 1) / 4;
        CHECK(data.statistics().train_windows == windows);
        CHECK(data.statistics().dropped_tokens == tokens - (windows * 4 + 1));
        CHECK(data.statistics().train_targets == windows * 4);
    }
    const std::string message = message_of<loom::argument_error>([] { loom::train::PackedDataset(counting_stream(4), 4, 0.0, "tiny.txt"); });
    CHECK_THAT(message, Catch::StartsWith("tiny.txt: 4 tokens in 1 documents") && Catch::Contains("sequence length of 4") &&
                            Catch::Contains("at least 5 tokens"));
    CHECK_THROWS_AS(loom::train::PackedDataset(counting_stream(10), 0, 0.0), loom::argument_error);
    auto mismatched = counting_stream(10);
    mismatched.trained.pop_back();
    CHECK_THROWS_AS(loom::train::PackedDataset(mismatched, 4, 0.0), loom::argument_error);
}

TEST_CASE("train data: the validation split is deterministic, spread out and never empties a side", "[train][data]") {
    CHECK(loom::train::split_windows(10, 0.3).validation == std::vector<std::size_t>{3, 6, 9});
    CHECK(loom::train::split_windows(10, 0.3).train == std::vector<std::size_t>{0, 1, 2, 4, 5, 7, 8});
    CHECK(loom::train::split_windows(10, 0.0).validation.empty());
    CHECK(loom::train::split_windows(1, 0.0).train == std::vector<std::size_t>{0});
    for (double fraction : {0.001, 0.1, 0.25, 0.5, 0.9, 0.999}) {
        for (std::size_t windows = 2; windows <= 60; ++windows) {
            const auto split = loom::train::split_windows(windows, fraction);
            CHECK(split.validation == loom::train::split_windows(windows, fraction).validation);
            CHECK_FALSE(split.train.empty());
            CHECK_FALSE(split.validation.empty());
            // Together they are every window once.
            std::vector<std::size_t> all = split.train;
            all.insert(all.end(), split.validation.begin(), split.validation.end());
            std::sort(all.begin(), all.end());
            std::vector<std::size_t> expected(windows);
            std::iota(expected.begin(), expected.end(), std::size_t(0));
            CHECK(all == expected);
            const auto rounded = std::size_t(fraction * double(windows) + 0.5);
            CHECK(split.validation.size() == std::clamp<std::size_t>(rounded, 1, windows - 1));
        }
    }
    const std::string one = message_of<loom::argument_error>([] { loom::train::split_windows(1, 0.1, "one.txt"); });
    CHECK_THAT(one, Catch::StartsWith("one.txt: ") && Catch::Contains("at least 2 windows") && Catch::Contains("makes 1"));
    CHECK_THROWS_AS(loom::train::split_windows(10, 1.0), loom::argument_error);
    CHECK_THROWS_AS(loom::train::split_windows(10, -0.1), loom::argument_error);
    // Through the dataset, with its statistics.
    const loom::train::PackedDataset data(counting_stream(21), 2, 0.3);
    CHECK(data.validation_windows() == std::vector<std::size_t>{3, 6, 9});
    CHECK(data.statistics().train_windows == 7);
    CHECK(data.statistics().validation_windows == 3);
    CHECK(data.statistics().train_targets == 14);
    CHECK(data.statistics().validation_targets == 6);
}

TEST_CASE("train data: each epoch is a new permutation, set by the seed", "[train][data]") {
    std::vector<std::size_t> windows(50);
    std::iota(windows.begin(), windows.end(), std::size_t(0));
    const auto order = loom::train::epoch_order(windows, 7, 0);
    std::vector<std::size_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    CHECK(sorted == windows);
    CHECK(order != windows);
    CHECK(order == loom::train::epoch_order(windows, 7, 0));
    CHECK(order != loom::train::epoch_order(windows, 7, 1));
    CHECK(order != loom::train::epoch_order(windows, 8, 0));

    // A loader hands out every training window once per epoch, in that epoch's order.
    const loom::train::PackedDataset data(counting_stream(21), 2, 0.0);  // windows 0..9
    loom::train::DataLoader loader(data, 5, 7);
    const auto first_epoch = take_windows(loader, 2);
    CHECK(first_epoch == loom::train::epoch_order(data.train_windows(), 7, 0));
    CHECK(loader.epoch() == 0);
    CHECK(loader.position() == 10);
    const auto second_epoch = take_windows(loader, 2);
    CHECK(loader.epoch() == 1);
    CHECK(second_epoch == loom::train::epoch_order(data.train_windows(), 7, 1));
    CHECK(second_epoch != first_epoch);
    loom::train::DataLoader other_seed(data, 5, 8);
    CHECK(take_windows(other_seed, 2) != first_epoch);
    // A batch that reaches the end of an epoch is filled from the next.
    loom::train::DataLoader threes(data, 3, 7);
    const auto rows = take_windows(threes, 4);
    std::vector<std::size_t> expected = loom::train::epoch_order(data.train_windows(), 7, 0);
    const auto next_epoch = loom::train::epoch_order(data.train_windows(), 7, 1);
    expected.insert(expected.end(), next_epoch.begin(), next_epoch.begin() + 2);
    CHECK(rows == expected);
    CHECK(threes.epoch() == 1);
    CHECK(threes.position() == 2);
    // Targets stay the inputs shifted by one in shuffled batches.
    loom::train::DataLoader check(data, 4, 3);
    const auto batch = check.next_batch();
    for (std::size_t i = 0; i < batch.inputs.size(); ++i) CHECK(batch.targets[i] == batch.inputs[i] + 1);

    CHECK_THROWS_AS(loom::train::DataLoader(data, 0, 1), loom::argument_error);
    CHECK_THAT(message_of<loom::argument_error>([&] { loom::train::DataLoader(data, 11, 1); }),
               Catch::Contains("batch size 11") && Catch::Contains("10 training windows"));
}

TEST_CASE("train data: a restored loader continues exactly where the saved one was", "[train][data]") {
    const loom::train::PackedDataset data(counting_stream(21), 2, 0.0);  // 10 windows; 7 batches of 3 cross two epochs
    loom::train::DataLoader uninterrupted(data, 3, 42);
    const auto expected = take_windows(uninterrupted, 7);

    loom::train::DataLoader before(data, 3, 42);
    auto windows = take_windows(before, 3);
    const std::string saved = before.state().dump();
    loom::train::DataLoader after(data, 3, 999);  // the seed comes from the state
    after.restore(nlohmann::json::parse(saved));
    CHECK(after.epoch() == before.epoch());
    CHECK(after.position() == before.position());
    const auto rest = take_windows(after, 4);
    windows.insert(windows.end(), rest.begin(), rest.end());
    CHECK(windows == expected);
    CHECK(after.state() == uninterrupted.state());

    // Saved exactly at an epoch's end (10 windows in batches of 5), it goes on into the next.
    loom::train::DataLoader fives(data, 5, 1);
    const auto fives_expected = take_windows(fives, 4);
    loom::train::DataLoader first_half(data, 5, 1);
    auto fives_windows = take_windows(first_half, 2);
    loom::train::DataLoader second_half(data, 5, 1);
    second_half.restore(first_half.state());
    const auto fives_rest = take_windows(second_half, 2);
    fives_windows.insert(fives_windows.end(), fives_rest.begin(), fives_rest.end());
    CHECK(fives_windows == fives_expected);

    // A state from other data, or a broken one, is refused.
    const loom::train::PackedDataset other(counting_stream(21, 1), 2, 0.0);
    loom::train::DataLoader other_loader(other, 3, 42);
    CHECK_THAT(message_of<loom::argument_error>([&] { other_loader.restore(before.state()); }), Catch::Contains("other training data"));
    const loom::train::PackedDataset resplit(counting_stream(21), 2, 0.2);
    loom::train::DataLoader resplit_loader(resplit, 3, 42);
    CHECK_THROWS_AS(resplit_loader.restore(before.state()), loom::argument_error);
    nlohmann::json broken = before.state();
    broken.erase("epoch");
    CHECK_THAT(message_of<loom::argument_error>([&] { after.restore(broken); }), Catch::Contains("\"epoch\""));
    broken = before.state();
    broken["position"] = 11;
    CHECK_THAT(message_of<loom::argument_error>([&] { after.restore(broken); }), Catch::Contains("position 11"));
    broken["position"] = -1;
    CHECK_THROWS_AS(after.restore(broken), loom::argument_error);
    CHECK_THROWS_AS(after.restore(nlohmann::json::array()), loom::argument_error);
}

TEST_CASE("train data: validation batches go through the held-out windows in order", "[train][data]") {
    const loom::train::PackedDataset data(counting_stream(21), 2, 0.3);  // validation windows 3, 6, 9
    loom::train::DataLoader loader(data, 2, 5);
    REQUIRE(loader.validation_batch_count() == 2);
    const auto first = loader.validation_batch(0);
    CHECK(first.rows == 2);
    CHECK(first.inputs == std::vector<int>{6, 7, 12, 13});
    CHECK(first.targets == std::vector<int>{7, 8, 13, 14});
    const auto last = loader.validation_batch(1);
    CHECK(last.rows == 1);
    CHECK(last.inputs == std::vector<int>{18, 19});
    CHECK(last.targets == std::vector<int>{19, 20});
    CHECK_THROWS_AS(loader.validation_batch(2), loom::argument_error);
    // Training batches never use a validation window.
    for (std::size_t window : take_windows(loader, 20)) CHECK((window != 3 && window != 6 && window != 9));

    const loom::train::PackedDataset no_validation(counting_stream(21), 2, 0.0);
    CHECK(loom::train::DataLoader(no_validation, 2, 5).validation_batch_count() == 0);
}

TEST_CASE("train data: text documents are tokenized as tokenizer(text) and end with the given id", "[train][data]") {
    loom::testing::ScratchFolder folder("train-data-text");
    write_file(folder / "a.txt", "Once upon a time\nthere was a fox.\n");
    write_file(folder / "b.md", "# Title\n\nPlain text, whatever the extension.");
    const auto& tokenizer = smollm2_tokenizer();
    auto encoding = smollm2_encoding();

    loom::train::TokenStream stream;
    loom::train::read_data_file(stream, folder / "a.txt", encoding);
    loom::train::read_data_file(stream, folder / "b.md", encoding);
    std::vector<int> expected = tokenizer.encode("Once upon a time\nthere was a fox.\n");
    expected.push_back(2);
    const auto second = tokenizer.encode("# Title\n\nPlain text, whatever the extension.");
    expected.insert(expected.end(), second.begin(), second.end());
    expected.push_back(2);
    CHECK(stream.tokens == expected);
    CHECK(stream.documents == 2);
    CHECK(std::all_of(stream.trained.begin(), stream.trained.end(), [](std::uint8_t flag) { return flag == 1; }));

    // Without an end-of-sequence id the documents simply follow each other.
    encoding.end_of_sequence.reset();
    loom::train::TokenStream plain;
    loom::train::read_data_file(plain, folder / "a.txt", encoding);
    CHECK(plain.tokens == tokenizer.encode("Once upon a time\nthere was a fox.\n"));

    // TinyLlama's tokenizer adds BOS, as tokenizer(text) does.
    const auto tinyllama = loom::tokenizer::load_tokenizer(tokenizer_data("tinyllama-1.1b-chat-v1.0"));
    encoding.tokenizer = tinyllama.get();
    encoding.end_of_sequence = 2;
    loom::train::TokenStream with_bos;
    loom::train::read_data_file(with_bos, folder / "a.txt", encoding);
    CHECK(with_bos.tokens.front() == 1);
    CHECK(with_bos.tokens.back() == 2);
}

TEST_CASE("train data: conversations train on the assistant's parts only (SmolLM2, Qwen2.5)", "[train][data]") {
    const std::string smollm2_template = loom::testing::source_path("tests/data/chat_templates/smollm2-1.7b-instruct");
    struct Model {
        std::string name, tokenizer_folder, template_folder;
    };
    for (const Model& model : {Model{"SmolLM2", tokenizer_data("smollm2-135m-instruct"), smollm2_template},
                               Model{"Qwen2.5", tokenizer_data("qwen2.5-0.5b-instruct"), tokenizer_data("qwen2.5-0.5b-instruct")}}) {
        INFO(model.name);
        ModelText text = model_text(model.tokenizer_folder, model.template_folder, std::nullopt);
        const auto& tokenizer = *text.tokenizer;
        text.encoding.end_of_sequence = tokenizer.token_to_id("<|im_end|>");
        loom::train::TokenStream stream;
        loom::train::read_data_file(stream, loom::testing::source_path("tests/data/train/conversations.jsonl"), text.encoding);
        CHECK(stream.documents == 4);

        // Line 1, a text document: all trained.
        std::vector<int> first_text = tokenizer.encode("The quick brown fox jumps over the lazy dog.");
        first_text.push_back(*tokenizer.token_to_id("<|im_end|>"));
        REQUIRE(stream.tokens.size() > first_text.size());
        CHECK(std::equal(first_text.begin(), first_text.end(), stream.tokens.begin()));

        // Line 2: what is trained is exactly each answer and its end-of-turn markup; the rest
        // (the default or given system prompt, the user turns, the assistant headers) is not.
        const ordered_json conversation = ordered_json::parse(
            R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}])");
        const std::string rendered = loom::chat::apply_chat_template(*text.encoding.chat_template, conversation, false,
                                                                     ordered_json(text.encoding.template_variables));
        const std::vector<int> whole = tokenizer.encode(rendered, {false, true});
        const std::size_t start = first_text.size(), end = start + whole.size();
        REQUIRE(stream.tokens.size() >= end);
        CHECK(std::equal(whole.begin(), whole.end(), stream.tokens.begin() + std::ptrdiff_t(start)));
        const auto parts = runs(stream, start, end);
        REQUIRE(parts.size() == 4);
        CHECK_FALSE(parts[0].trained);
        CHECK(tokenizer.decode(parts[0].tokens) ==
              rendered.substr(0, rendered.find("Hello! How")));  // system, user, "<|im_start|>assistant\n"
        CHECK_THAT(tokenizer.decode(parts[0].tokens), Catch::Contains("Be brief.") && Catch::Contains("Hi there") &&
                                                          Catch::EndsWith("<|im_start|>assistant\n"));
        CHECK(parts[1].trained);
        CHECK(tokenizer.decode(parts[1].tokens) == "Hello! How can I help?<|im_end|>\n");
        CHECK_FALSE(parts[2].trained);
        CHECK(tokenizer.decode(parts[2].tokens) == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
        CHECK(parts[3].trained);
        CHECK(tokenizer.decode(parts[3].tokens) == "4.<|im_end|>\n");

        // Line 5, the last text document, closes the stream.
        std::vector<int> last_text = tokenizer.encode("Second text document: héllo wörld, 1234.");
        last_text.push_back(*tokenizer.token_to_id("<|im_end|>"));
        REQUIRE(stream.tokens.size() >= end + last_text.size());
        CHECK(std::equal(last_text.begin(), last_text.end(), stream.tokens.end() - std::ptrdiff_t(last_text.size())));
        // Line 4 (line 3 is blank): the user turn after the last answer is left out.
        const auto colour = runs(stream, end, stream.tokens.size() - last_text.size());
        REQUIRE(colour.size() == 2);
        CHECK_THAT(tokenizer.decode(colour[0].tokens), Catch::EndsWith("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"));
        CHECK(colour[1].trained);
        CHECK(tokenizer.decode(colour[1].tokens) == "Blue, like the sky.<|im_end|>\n");

        // Through the dataset: every untrained target is ignore_index, the others are the stream's.
        const loom::train::PackedDataset data(stream, 8, 0.0);
        std::size_t trained_targets = 0;
        for (std::size_t window : data.train_windows()) {
            const std::vector<std::size_t> one = {window};
            const auto batch = data.batch(one);
            for (std::size_t t = 0; t < 8; ++t) {
                const std::size_t next = window * 8 + t + 1;
                CHECK(batch.targets[t] == (stream.trained[next] ? stream.tokens[next] : ignore_index));
                trained_targets += stream.trained[next];
            }
        }
        CHECK(data.statistics().train_targets == trained_targets);
        CHECK(trained_targets < stream.tokens.size() - 8);
    }
}

TEST_CASE("train data: SentencePiece-style tokenizers keep whole-text tokens in conversations (TinyLlama, Mistral)", "[train][data]") {
    // Tokenized alone, "Hello</s>" would start with "▁Hello"; in the rendered conversation it
    // follows "\n" and is "Hello". The stream holds apply_chat_template(tokenize=True)'s tokens.
    const ordered_json conversation = ordered_json::parse(
        R"([{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}])");
    for (const char* name : {"tinyllama-1.1b-chat-v1.0", "mistral-7b-instruct-v0.2"}) {
        INFO(name);
        const ModelText text = model_text(tokenizer_data(name), tokenizer_data(name), 2);
        loom::train::TokenStream stream;
        loom::train::append_conversation(stream, conversation, text.encoding, "memory:1");
        const ordered_json variables(text.encoding.template_variables);
        const auto render = [&](std::size_t count, bool prompt) {
            return loom::chat::apply_chat_template(*text.encoding.chat_template, ordered_json(conversation.begin(), conversation.begin() + std::ptrdiff_t(count)),
                                                   prompt, variables);
        };
        const auto tokens = [&](const std::string& rendered) { return text.tokenizer->encode(rendered, {false, true}); };
        CHECK(stream.tokens == tokens(render(4, false)));
        // Untrained up to each prompt's end, trained from there to the answer's end.
        const std::size_t prompt_one = tokens(render(1, true)).size(), answer_one = tokens(render(2, false)).size();
        const std::size_t prompt_two = tokens(render(3, true)).size();
        for (std::size_t i = 0; i < stream.tokens.size(); ++i) {
            const bool answer = (i >= prompt_one && i < answer_one) || i >= prompt_two;
            CHECK(bool(stream.trained[i]) == answer);
        }
        CHECK(std::count(stream.tokens.begin(), stream.tokens.end(), 1) == (std::string(name) == "mistral-7b-instruct-v0.2" ? 1 : 0));
    }
}

TEST_CASE("train data: a malformed JSONL line is an error naming the file and line", "[train][data]") {
    loom::testing::ScratchFolder folder("train-data-errors");
    const auto encoding = smollm2_encoding();
    const std::string good = R"({"text": "fine"})";
    struct Case {
        std::string line, message;
    };
    const std::vector<Case> cases = {
        {R"({"text": "unterminated)", "invalid JSON"},
        {R"(["text", "a list"])", "expected a JSON object, got array"},
        {R"({"content": "neither"})", "needs \"text\" (a string) or \"messages\" (a list)"},
        {R"({"text": "a", "messages": []})", "has both \"text\" and \"messages\""},
        {R"({"text": 42})", "\"text\" must be a string, got number"},
        {R"({"messages": "hello"})", "\"messages\" must be a non-empty list"},
        {R"({"messages": []})", "\"messages\" must be a non-empty list"},
        {R"({"messages": ["hello"]})", "messages[0] must be an object"},
        {R"({"messages": [{"role": "user", "content": "a"}, {"content": "b"}]})", "messages[1] has no \"role\""},
        {R"({"messages": [{"role": "assistant"}]})", "messages[0] has no \"content\""},
        {R"({"messages": [{"role": "assistant", "content": null}]})", "messages[0]: \"content\" must be a string, got null"},
        {R"({"messages": [{"role": 1, "content": "a"}]})", "messages[0]: \"role\" must be a string, got number"},
        {R"({"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]})", "no assistant message"},
    };
    for (const Case& bad : cases) {
        INFO(bad.line);
        write_file(folder / "bad.jsonl", good + "\n\n" + bad.line + "\n" + good + "\n");
        loom::train::TokenStream stream;
        const std::string message = message_of<loom::format_error>([&] { loom::train::read_data_file(stream, folder / "bad.jsonl", encoding); });
        CHECK_THAT(message, Catch::StartsWith((folder / "bad.jsonl").string() + ":3: ") && Catch::Contains(bad.message));
    }
    // Windows line ends and blank lines of spaces are fine.
    write_file(folder / "crlf.jsonl", good + "\r\n  \r\n" + good + "\r\n");
    loom::train::TokenStream stream;
    loom::train::read_data_file(stream, folder / "crlf.jsonl", encoding);
    CHECK(stream.documents == 2);
}

TEST_CASE("train data: chat template problems name the file and line", "[train][data]") {
    loom::testing::ScratchFolder folder("train-data-template");
    const std::string conversation =
        R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]})";
    write_file(folder / "chat.jsonl", R"({"text": "first"})" "\n" + conversation + "\n");
    auto encoding = smollm2_encoding();
    loom::train::TokenStream stream;

    // Phi-3's template ends a conversation with eos_token unless a generation prompt follows,
    // so the text through the first answer is not where the next prompt begins.
    const ModelText phi = model_text(tokenizer_data("phi-3-mini-4k-instruct"), tokenizer_data("phi-3-mini-4k-instruct"), std::nullopt);
    CHECK_THAT(message_of<loom::format_error>([&] { loom::train::read_data_file(stream, folder / "chat.jsonl", phi.encoding); }),
               Catch::StartsWith((folder / "chat.jsonl").string() + ":2: messages[3]: ") &&
                   Catch::Contains("chat template does not render conversations incrementally"));

    encoding.chat_template = "{{ messages | length }}{% for message in messages %}|{{ message.content }}{% endfor %}";
    CHECK_THAT(message_of<loom::format_error>([&] { loom::train::read_data_file(stream, folder / "chat.jsonl", encoding); }),
               Catch::StartsWith((folder / "chat.jsonl").string() + ":2: messages[1]: ") &&
                   Catch::Contains("does not render conversations incrementally"));

    // The prompt ends in " Assist" and the answer is "ant": " Assistant" is one token.
    encoding.chat_template = "{% for message in messages %}{% if message.role == 'assistant' %} Assist{% endif %}{{ message.content }}"
                             "{% endfor %}{% if add_generation_prompt %} Assist{% endif %}";
    write_file(folder / "merge.jsonl", R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "ant"}]})" "\n");
    CHECK_THAT(message_of<loom::format_error>([&] { loom::train::read_data_file(stream, folder / "merge.jsonl", encoding); }),
               Catch::StartsWith((folder / "merge.jsonl").string() + ":1: messages[1]: ") && Catch::Contains("a token spans the boundary"));

    encoding.chat_template = "{{ raise_exception('roles must alternate') }}";
    CHECK_THAT(message_of<loom::format_error>([&] { loom::train::read_data_file(stream, folder / "chat.jsonl", encoding); }),
               Catch::StartsWith((folder / "chat.jsonl").string() + ":2: chat template: ") && Catch::Contains("roles must alternate"));

    encoding.chat_template.reset();
    CHECK_THAT(message_of<loom::argument_error>([&] { loom::train::read_data_file(stream, folder / "chat.jsonl", encoding); }),
               Catch::StartsWith((folder / "chat.jsonl").string() + ":2: ") && Catch::Contains("needs the model's chat template"));
}

TEST_CASE("train data: missing, empty and too short files are clear errors", "[train][data]") {
    loom::testing::ScratchFolder folder("train-data-files");
    const auto encoding = smollm2_encoding();
    loom::train::TokenStream stream;
    CHECK_THAT(message_of<loom::argument_error>([&] { loom::train::read_data_file(stream, folder / "absent.txt", encoding); }),
               Catch::Contains((folder / "absent.txt").string()) && Catch::Contains("does not exist"));
    CHECK_THAT(message_of<loom::argument_error>([&] { loom::train::read_data_file(stream, folder.path(), encoding); }),
               Catch::Contains("is a folder"));
    write_file(folder / "empty.txt", "");
    CHECK(message_of<loom::format_error>([&] { loom::train::read_data_file(stream, folder / "empty.txt", encoding); }) ==
          (folder / "empty.txt").string() + ": empty file");
    write_file(folder / "blank.jsonl", "\n  \n\n");
    CHECK(message_of<loom::format_error>([&] { loom::train::read_data_file(stream, folder / "blank.jsonl", encoding); }) ==
          (folder / "blank.jsonl").string() + ": no documents, only blank lines");
    auto without_tokenizer = encoding;
    without_tokenizer.tokenizer = nullptr;
    CHECK_THROWS_AS(loom::train::read_data_file(stream, folder / "empty.txt", without_tokenizer), loom::argument_error);

    // "Hello world" is 2 tokens, plus the end-of-sequence id.
    write_file(folder / "short.txt", "Hello world");
    write_file(folder / "short.jsonl", R"({"text": "Hello world"})" "\n");
    const std::vector<std::filesystem::path> files = {folder / "short.txt", folder / "short.jsonl"};
    CHECK(message_of<loom::argument_error>([&] { loom::train::load_dataset(files, encoding, 6, 0.0); }) ==
          (folder / "short.txt").string() + ", " + (folder / "short.jsonl").string() +
              ": 6 tokens in 2 documents make no training sequence: a sequence length of 6 needs at least 7 tokens");
    // Enough for one window, but not for a validation window too.
    CHECK_THAT(message_of<loom::argument_error>([&] { loom::train::load_dataset(files, encoding, 5, 0.1); }),
               Catch::StartsWith((folder / "short.txt").string() + ", ") && Catch::Contains("needs at least 2 windows, the data makes 1"));
    const auto data = loom::train::load_dataset(files, encoding, 5, 0.0);
    CHECK(data.statistics().documents == 2);
    CHECK(data.statistics().tokens == 6);
    CHECK(data.statistics().train_windows == 1);
    CHECK(data.statistics().dropped_tokens == 0);
    CHECK_THROWS_AS(loom::train::load_dataset({}, encoding, 5, 0.0), loom::argument_error);
}

TEST_CASE("train data: load_dataset reports what a training log prints", "[train][data]") {
    const ModelText text = model_text(tokenizer_data("smollm2-135m-instruct"),
                                      loom::testing::source_path("tests/data/chat_templates/smollm2-1.7b-instruct"), 2);
    const std::filesystem::path file = loom::testing::source_path("tests/data/train/conversations.jsonl");
    loom::train::TokenStream stream;
    loom::train::read_data_file(stream, file, text.encoding);
    const auto data = loom::train::load_dataset({file}, text.encoding, 16, 0.25);
    const auto& statistics = data.statistics();
    CHECK(statistics.documents == 4);
    CHECK(statistics.tokens == stream.tokens.size());
    const std::size_t windows = (stream.tokens.size() - 1) / 16;
    CHECK(statistics.train_windows + statistics.validation_windows == windows);
    CHECK(statistics.validation_windows == std::size_t(0.25 * double(windows) + 0.5));
    CHECK(statistics.dropped_tokens == stream.tokens.size() - (windows * 16 + 1));
    std::size_t trained = 0;
    for (std::size_t i = 1; i < windows * 16 + 1; ++i) trained += stream.trained[i];
    CHECK(statistics.train_targets + statistics.validation_targets == trained);
}
