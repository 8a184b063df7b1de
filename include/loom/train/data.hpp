#pragma once
// Training data, in the order it flows:
//   files (.txt: one document; .jsonl: {"text"} or {"messages"} per line)
//   -> TokenStream: every document's tokens, each flagged "train on this" or not
//   -> PackedDataset: windows of sequence_length + 1 tokens, split into train / validation
//   -> DataLoader: shuffled training batches and in-order validation batches.
// Everything below the file reader works on plain token vectors, so it can be used and
// tested without a tokenizer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/chat/chat_template.hpp"
#include "loom/core/error.hpp"
#include "loom/core/random.hpp"
#include "loom/tokenizer/tokenizer.hpp"
#include "loom/train/batch.hpp"  // Batch, ignore_index

namespace loom::train {

// Every document's tokens, one after another.
struct TokenStream {
    std::vector<int> tokens;
    std::vector<std::uint8_t> trained;  // [tokens.size()]; 1: the model learns to predict this token
    std::size_t documents = 0;

    void append(std::span<const int> ids, bool train) {
        tokens.insert(tokens.end(), ids.begin(), ids.end());
        trained.insert(trained.end(), ids.size(), std::uint8_t(train ? 1 : 0));
    }
};

// What a training log prints about its data.
struct DataStatistics {
    std::size_t documents = 0;
    std::size_t tokens = 0;              // in the stream, before it is cut into windows
    std::size_t train_windows = 0;
    std::size_t validation_windows = 0;
    std::size_t train_targets = 0;       // targets of training windows that are not ignore_index
    std::size_t validation_targets = 0;  // the same over the validation windows
    std::size_t dropped_tokens = 0;      // the stream's tail, too short for one more window
};

// Window k is tokens [k*T, k*T + T], T + 1 tokens: inputs are its first T, targets its last
// T. Its last token is window k+1's first, so every token but the stream's first is a target
// exactly once.
inline std::size_t window_count(std::size_t tokens, std::size_t sequence_length) {
    return tokens == 0 ? 0 : (tokens - 1) / sequence_length;
}

struct WindowSplit {
    std::vector<std::size_t> train;       // window numbers, ascending
    std::vector<std::size_t> validation;  // window numbers, ascending
};

// Holds out round(fraction * windows) windows, at least one and at most all but one, spread
// evenly over the stream (window i when floor((i+1)v/W) > floor(iv/W)), so the validation
// text comes from every part of the data rather than only from its last file. It depends on
// the two numbers alone, never on threads. `origin` names the data in error messages.
inline WindowSplit split_windows(std::size_t windows, double validation_fraction, const std::string& origin = "the data") {
    if (!(validation_fraction >= 0.0 && validation_fraction < 1.0))
        throw argument_error("validation fraction " + nlohmann::json(validation_fraction).dump() + " is not in [0, 1)");
    WindowSplit split;
    std::size_t held_out = 0;
    if (validation_fraction > 0.0) {
        if (windows < 2)
            throw argument_error(origin + ": a validation fraction of " + nlohmann::json(validation_fraction).dump() + " needs at least 2 windows, the data makes " +
                                 std::to_string(windows) + "; give more data, a shorter sequence length, or a validation fraction of 0");
        held_out = std::size_t(validation_fraction * double(windows) + 0.5);
        held_out = std::min(std::max<std::size_t>(held_out, 1), windows - 1);
    }
    for (std::size_t i = 0; i < windows; ++i) {
        const bool validation = (i + 1) * held_out / windows > i * held_out / windows;
        (validation ? split.validation : split.train).push_back(i);
    }
    return split;
}

// A token stream cut into windows and split into training and validation windows.
class PackedDataset {
public:
    PackedDataset(TokenStream stream, std::size_t sequence_length, double validation_fraction,
                  const std::string& origin = "the token stream")
        : stream_(std::move(stream)), sequence_length_(sequence_length) {
        if (sequence_length_ == 0) throw argument_error("sequence length must be at least 1");
        if (stream_.trained.size() != stream_.tokens.size())
            throw argument_error("token stream has " + std::to_string(stream_.tokens.size()) + " tokens but " +
                                 std::to_string(stream_.trained.size()) + " trained flags");
        const std::size_t windows = window_count(stream_.tokens.size(), sequence_length_);
        if (windows == 0)
            throw argument_error(origin + ": " + std::to_string(stream_.tokens.size()) + " tokens in " + std::to_string(stream_.documents) +
                                 " documents make no training sequence: a sequence length of " + std::to_string(sequence_length_) +
                                 " needs at least " + std::to_string(sequence_length_ + 1) + " tokens");
        split_ = split_windows(windows, validation_fraction, origin);
        statistics_.documents = stream_.documents;
        statistics_.tokens = stream_.tokens.size();
        statistics_.train_windows = split_.train.size();
        statistics_.validation_windows = split_.validation.size();
        statistics_.train_targets = trained_targets(split_.train);
        statistics_.validation_targets = trained_targets(split_.validation);
        statistics_.dropped_tokens = stream_.tokens.size() - (windows * sequence_length_ + 1);
        fingerprint_ = compute_fingerprint();
    }

    std::size_t sequence_length() const noexcept { return sequence_length_; }
    const std::vector<std::size_t>& train_windows() const noexcept { return split_.train; }
    const std::vector<std::size_t>& validation_windows() const noexcept { return split_.validation; }
    const DataStatistics& statistics() const noexcept { return statistics_; }
    // Identifies the training windows' contents, so a loader state is not restored onto other data.
    std::uint64_t fingerprint() const noexcept { return fingerprint_; }

    // Window `window`'s inputs and targets, sequence_length() values each.
    void write_window(std::size_t window, int* inputs, int* targets) const {
        const std::size_t start = window * sequence_length_;
        for (std::size_t t = 0; t < sequence_length_; ++t) {
            inputs[t] = stream_.tokens[start + t];
            targets[t] = stream_.trained[start + t + 1] ? stream_.tokens[start + t + 1] : ignore_index;
        }
    }

    // The given windows as the rows of one batch, in that order.
    Batch batch(std::span<const std::size_t> windows) const {
        Batch batch{windows.size(), sequence_length_, std::vector<int>(windows.size() * sequence_length_),
                    std::vector<int>(windows.size() * sequence_length_)};
        for (std::size_t row = 0; row < windows.size(); ++row)
            write_window(windows[row], batch.inputs.data() + row * sequence_length_, batch.targets.data() + row * sequence_length_);
        return batch;
    }

private:
    std::size_t trained_targets(const std::vector<std::size_t>& windows) const {
        std::size_t count = 0;
        for (std::size_t window : windows)
            for (std::size_t t = 1; t <= sequence_length_; ++t) count += stream_.trained[window * sequence_length_ + t];
        return count;
    }

    // FNV-1a over the sequence length and each training window's tokens and flags.
    std::uint64_t compute_fingerprint() const {
        std::uint64_t hash = 0xcbf29ce484222325ull;
        const auto mix = [&](std::uint64_t value) {
            for (int byte = 0; byte < 8; ++byte) hash = (hash ^ ((value >> (8 * byte)) & 0xff)) * 0x100000001b3ull;
        };
        mix(sequence_length_);
        for (std::size_t window : split_.train) {
            for (std::size_t t = 0; t <= sequence_length_; ++t) {
                mix(std::uint32_t(stream_.tokens[window * sequence_length_ + t]));
                mix(stream_.trained[window * sequence_length_ + t]);
            }
        }
        return hash;
    }

    TokenStream stream_;
    std::size_t sequence_length_;
    WindowSplit split_;
    DataStatistics statistics_;
    std::uint64_t fingerprint_ = 0;
};

// The order of `windows` in `epoch`: a Fisher-Yates shuffle driven by a Random seeded from
// (seed, epoch) alone, so a resumed loader recomputes it from those two numbers, whatever
// happened before.
inline std::vector<std::size_t> epoch_order(std::span<const std::size_t> windows, std::uint64_t seed, std::uint64_t epoch) {
    std::uint64_t seed_state = seed;
    Random random(splitmix64(seed_state) ^ epoch);
    std::vector<std::size_t> order(windows.begin(), windows.end());
    for (std::size_t i = order.size(); i > 1; --i) {
        // The modulo's bias is below 2^-40 for any realistic window count.
        const std::size_t j = std::size_t(random.next() % i);
        std::swap(order[i - 1], order[j]);
    }
    return order;
}

// Training batches of `batch_size` windows, reshuffled every epoch, epochs without end (the
// trainer decides when to stop): a batch that reaches the end of an epoch is filled from the
// next one, so every batch is full. Holds a pointer to `data`, which must outlive it.
class DataLoader {
public:
    DataLoader(const PackedDataset& data, std::size_t batch_size, std::uint64_t seed)
        : data_(&data), batch_size_(batch_size), seed_(seed) {
        if (batch_size_ == 0) throw argument_error("batch size must be at least 1");
        if (batch_size_ > data.train_windows().size())
            throw argument_error("batch size " + std::to_string(batch_size_) + " is more than the " +
                                 std::to_string(data.train_windows().size()) + " training windows; use a smaller batch or sequence length, or more data");
        order_ = epoch_order(data_->train_windows(), seed_, epoch_);
    }

    Batch next_batch() {
        std::vector<std::size_t> windows(batch_size_);
        for (std::size_t& window : windows) {
            if (position_ == order_.size()) {
                ++epoch_;
                position_ = 0;
                order_ = epoch_order(data_->train_windows(), seed_, epoch_);
            }
            window = order_[position_++];
        }
        return data_->batch(windows);
    }

    std::uint64_t epoch() const noexcept { return epoch_; }
    std::size_t position() const noexcept { return position_; }  // windows of this epoch handed out
    std::size_t batch_size() const noexcept { return batch_size_; }

    // Everything that decides the batches still to come. The order of an epoch follows from
    // the seed and the epoch number, so no generator state needs saving.
    nlohmann::json state() const {
        return {{"seed", seed_}, {"epoch", epoch_}, {"position", position_}, {"data_fingerprint", data_->fingerprint()}};
    }

    // Continues from a state() taken on the same data (any batch size may follow).
    void restore(const nlohmann::json& state) {
        const auto number = [&](const char* key) {
            const bool valid = state.is_object() && state.contains(key) && state.at(key).is_number_integer() &&
                               (state.at(key).is_number_unsigned() || state.at(key).get<std::int64_t>() >= 0);
            if (!valid)
                throw argument_error("data loader state: \"" + std::string(key) + "\" must be a non-negative integer, got " +
                                     (state.is_object() && state.contains(key) ? state.at(key).dump() : std::string("nothing")));
            return state.at(key).get<std::uint64_t>();
        };
        const std::uint64_t fingerprint = number("data_fingerprint");
        if (fingerprint != data_->fingerprint())
            throw argument_error("data loader state was saved for other training data (fingerprint " + std::to_string(fingerprint) +
                                 ", this data has " + std::to_string(data_->fingerprint()) +
                                 "); the files, tokenizer, sequence length or validation fraction changed");
        const std::uint64_t position = number("position");
        if (position > data_->train_windows().size())
            throw argument_error("data loader state: position " + std::to_string(position) + " is past the " +
                                 std::to_string(data_->train_windows().size()) + " training windows");
        seed_ = number("seed");
        epoch_ = number("epoch");
        position_ = std::size_t(position);
        order_ = epoch_order(data_->train_windows(), seed_, epoch_);
    }

    // The validation windows in stream order, batch_size at a time; the last batch may be smaller.
    std::size_t validation_batch_count() const noexcept {
        return (data_->validation_windows().size() + batch_size_ - 1) / batch_size_;
    }
    Batch validation_batch(std::size_t index) const {
        if (index >= validation_batch_count())
            throw argument_error("validation batch " + std::to_string(index) + " does not exist (there are " +
                                 std::to_string(validation_batch_count()) + ")");
        const std::span<const std::size_t> windows(data_->validation_windows());
        const std::size_t first = index * batch_size_;
        return data_->batch(windows.subspan(first, std::min(batch_size_, windows.size() - first)));
    }

private:
    const PackedDataset* data_;
    std::size_t batch_size_;
    std::uint64_t seed_;
    std::uint64_t epoch_ = 0;
    std::size_t position_ = 0;  // into order_
    std::vector<std::size_t> order_;
};

// ---- Reading files: documents to tokens ----

// How documents become tokens: the model's tokenizer and, for conversations, its chat template.
struct DocumentEncoding {
    const tokenizer::Tokenizer* tokenizer = nullptr;  // must outlive the reading
    std::optional<int> end_of_sequence;               // appended after each text document; none: documents simply follow each other
    std::optional<std::string> chat_template;         // chat::load_chat_template(model folder); needed by {"messages"} lines
    nlohmann::json template_variables = nlohmann::json::object();  // chat::chat_template_special_tokens(model folder)
    chat::RenderOptions render_options;  // pin `now` so a template that prints today's date gives the same tokens every day
};

// A text document as Hugging Face's tokenizer(text) encodes it (with its BOS, if it adds one),
// then the end-of-sequence id; every token is trained.
inline void append_text(TokenStream& stream, std::string_view text, const DocumentEncoding& encoding) {
    stream.append(encoding.tokenizer->encode(text), true);
    if (encoding.end_of_sequence) {
        const int end[] = {*encoding.end_of_sequence};
        stream.append(end, true);
    }
    ++stream.documents;
}

// A conversation rendered with the chat template, trained on the assistant's parts only. For
// assistant message i, the text the template adds between messages[0..i) with the generation
// prompt and messages[0..i] is the answer plus its end-of-turn markup, which the model must
// learn to emit. Messages after the last assistant message teach nothing and are left out.
// The tokens are those of the whole rendered text, without added special tokens, as
// transformers' apply_chat_template(tokenize=True) gives them (the template writes any BOS
// itself): each rendering is tokenized whole and must begin with the previous one's tokens,
// and the new tokens are the piece. Tokenizing each piece alone would differ for SentencePiece
// style tokenizers, which put a "▁" before the start of every piece. `where` (file:line)
// begins every error message.
inline void append_conversation(TokenStream& stream, const nlohmann::ordered_json& messages, const DocumentEncoding& encoding,
                                const std::string& where) {
    if (!messages.is_array() || messages.empty())
        throw format_error(where + ": \"messages\" must be a non-empty list, got " + messages.dump());
    std::size_t last_assistant = messages.size();
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const auto& message = messages[i];
        const std::string name = where + ": messages[" + std::to_string(i) + "]";
        if (!message.is_object()) throw format_error(name + " must be an object, got " + message.dump());
        for (const char* key : {"role", "content"}) {
            if (!message.contains(key)) throw format_error(name + " has no \"" + key + "\"");
            if (!message.at(key).is_string())
                throw format_error(name + ": \"" + key + "\" must be a string, got " + std::string(message.at(key).type_name()));
        }
        if (message.at("role") == "assistant") last_assistant = i;
    }
    if (last_assistant == messages.size()) throw format_error(where + ": the conversation has no assistant message, so nothing to train on");
    if (!encoding.chat_template) throw argument_error(where + ": a conversation needs the model's chat template, and none was given");

    const nlohmann::ordered_json variables(encoding.template_variables);
    const auto render = [&](std::size_t count, bool add_generation_prompt) {
        try {
            const auto first = messages.begin();
            return chat::apply_chat_template(*encoding.chat_template, nlohmann::ordered_json(first, first + std::ptrdiff_t(count)),
                                             add_generation_prompt, variables, encoding.render_options);
        } catch (const loom::error& failure) {
            throw format_error(where + ": chat template: " + failure.what());
        }
    };
    tokenizer::EncodeOptions template_text;
    template_text.add_special_tokens = false;
    std::string rendered;     // the conversation's text already in the stream
    std::vector<int> tokens;  // its tokens
    const auto extend = [&](const std::string& text, bool train, std::size_t message) {
        const std::string at = where + ": messages[" + std::to_string(message) + "]: ";
        if (text.compare(0, rendered.size(), rendered) != 0)
            throw format_error(at + "chat template does not render conversations incrementally (the text through this message "
                               "does not begin with the text before it), so the assistant's part cannot be told apart");
        std::vector<int> longer = encoding.tokenizer->encode(text, template_text);
        if (longer.size() < tokens.size() || !std::equal(tokens.begin(), tokens.end(), longer.begin()))
            throw format_error(at + "a token spans the boundary between the prompt and the assistant's part, so they cannot be "
                               "told apart; the chat template should end the prompt with markup that stays a token of its own");
        stream.append(std::span<const int>(longer).subspan(tokens.size()), train);
        rendered = text;
        tokens = std::move(longer);
    };
    for (std::size_t i = 0; i <= last_assistant; ++i) {
        if (messages[i].at("role") != "assistant") continue;
        extend(render(i, true), false, i);
        extend(render(i + 1, false), true, i);
    }
    ++stream.documents;
}

namespace detail {

inline std::string read_whole_file(const std::filesystem::path& path) {
    std::error_code error;
    if (!std::filesystem::exists(path, error)) throw argument_error(path.string() + ": data file does not exist");
    if (std::filesystem::is_directory(path, error)) throw argument_error(path.string() + ": is a folder, not a data file");
    std::ifstream file(path, std::ios::binary);
    if (!file) throw argument_error(path.string() + ": cannot open the data file");
    std::string contents{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
    if (file.bad()) throw argument_error(path.string() + ": cannot read the data file");
    return contents;
}

inline void append_jsonl(TokenStream& stream, const std::string& text, const std::filesystem::path& path, const DocumentEncoding& encoding) {
    const std::size_t documents_before = stream.documents;
    std::istringstream lines(text);
    std::size_t line_number = 0;
    for (std::string line; std::getline(lines, line);) {
        ++line_number;
        if (line.find_first_not_of(" \t\r\n") == std::string::npos) continue;
        const std::string where = path.string() + ":" + std::to_string(line_number);
        nlohmann::ordered_json document;
        try {
            document = nlohmann::ordered_json::parse(line);
        } catch (const nlohmann::json::exception& failure) {
            throw format_error(where + ": invalid JSON: " + failure.what());
        }
        if (!document.is_object()) throw format_error(where + ": expected a JSON object, got " + std::string(document.type_name()));
        const bool has_text = document.contains("text"), has_messages = document.contains("messages");
        if (has_text == has_messages)
            throw format_error(where + (has_text ? ": has both \"text\" and \"messages\"; give one" : ": needs \"text\" (a string) or \"messages\" (a list)"));
        if (has_messages) {
            append_conversation(stream, document.at("messages"), encoding, where);
        } else {
            if (!document.at("text").is_string())
                throw format_error(where + ": \"text\" must be a string, got " + std::string(document.at("text").type_name()));
            append_text(stream, document.at("text").get<std::string>(), encoding);
        }
    }
    if (stream.documents == documents_before) throw format_error(path.string() + ": no documents, only blank lines");
}

}  // namespace detail

// Appends one file's documents: .jsonl one per non-blank line, anything else as one text document.
inline void read_data_file(TokenStream& stream, const std::filesystem::path& path, const DocumentEncoding& encoding) {
    if (!encoding.tokenizer) throw argument_error("reading " + path.string() + ": no tokenizer given");
    const std::string text = detail::read_whole_file(path);
    if (text.empty()) throw format_error(path.string() + ": empty file");
    if (path.extension() == ".jsonl") detail::append_jsonl(stream, text, path, encoding);
    else append_text(stream, text, encoding);
}

// The whole pipeline from files to windows.
inline PackedDataset load_dataset(const std::vector<std::filesystem::path>& files, const DocumentEncoding& encoding,
                                  std::size_t sequence_length, double validation_fraction) {
    if (files.empty()) throw argument_error("no training data files given");
    TokenStream stream;
    std::string origin;
    for (const auto& file : files) {
        read_data_file(stream, file, encoding);
        origin += (origin.empty() ? "" : ", ") + file.string();
    }
    return PackedDataset(std::move(stream), sequence_length, validation_fraction, origin);
}

}  // namespace loom::train
