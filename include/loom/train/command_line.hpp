#pragma once
// loom_train's logic: the arguments, the checks made before any work, the training loop
// with its progress display, step log and checkpoints, and a clean stop on SIGINT/SIGTERM.
// Kept here, as the other apps' logic is, so tests can reach it.
//
// Exit codes, as loom_generate's: 0 done (or stopped by a signal and saved); 2 the command
// line or what it names is wrong (flags, data, output folder, options that differ from the
// saved run), found before training starts; 1 anything else (an unreadable model, a failure
// or a non-finite loss during training).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/chat/chat_template.hpp"
#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/generate/command_line.hpp"  // generate::detail::parse_integer
#include "loom/io/hf_config.hpp"
#include "loom/io/hf_hub.hpp"
#include "loom/io/json_file.hpp"
#include "loom/io/safetensors.hpp"
#include "loom/tokenizer/load.hpp"
#include "loom/train/checkpoint.hpp"
#include "loom/train/data.hpp"
#include "loom/train/llama.hpp"
#include "loom/train/trainer.hpp"

namespace loom::train {

struct TrainCommand {
    std::string model;                         // a folder or an Org/Name id in the Hugging Face cache
    std::vector<std::filesystem::path> data;   // .txt and .jsonl files
    std::filesystem::path out;                 // where the model and the training state are saved
    TrainingOptions training;                  // steps, batch, schedule, optimizer, ...
    std::size_t eval_every = 0;                // 0: validate only at the end
    std::size_t save_every = 0;                // 0: save only at the end
    std::size_t threads = default_thread_count();
    SaveDtype save_dtype = SaveDtype::original;
    std::filesystem::path log;                 // empty: no step log; else .csv or .jsonl
    bool resume = false;
    bool help = false;
};

// How progress is shown: one line per step (logs, pipes, tests), or one line redrawn in
// place (a terminal).
enum class ProgressDisplay { lines, live };

inline const char* train_usage() {
    return "usage: loom_train --model DIR|Org/Name --data FILE [FILE...] --out DIR [options]\n"
           "\n"
           "  --model DIR|Org/Name  the model to train: a folder (config.json, *.safetensors and a\n"
           "                        tokenizer) or an Org/Name id in the Hugging Face cache\n"
           "  --data FILE [FILE...] one or more files, up to the next flag: .txt (each file one document)\n"
           "                        or .jsonl (one {\"text\": ...} or {\"messages\": [...]} per line;\n"
           "                        conversations train on the assistant's replies only)\n"
           "  --out DIR             folder to save into: the trained model, ready for loom_generate, and\n"
           "                        training_state.safetensors, from which --resume continues\n"
           "\n"
           "run:\n"
           "  --steps N             optimizer steps (default 100)\n"
           "  --batch B             sequences per micro-batch (default 4)\n"
           "  --seq-len T           tokens per sequence (default 256)\n"
           "  --grad-accum K        micro-batches per optimizer step (default 1)\n"
           "  --val-fraction F      share of the sequences held out for validation (default 0.1)\n"
           "  --eval-every N        validation loss every N steps (default 0: only at the end)\n"
           "  --save-every N        save every N steps (default 0: only at the end)\n"
           "  --threads N           worker threads (default: all cores); results do not depend on it\n"
           "  --seed S              seed of the order sequences are drawn in (default 0)\n"
           "\n"
           "optimizer:\n"
           "  --optimizer NAME      adamw or sgd (default adamw)\n"
           "  --lr LR               peak learning rate (default 3e-4)\n"
           "  --schedule NAME       constant, linear or cosine: the learning rate after warmup (default cosine)\n"
           "  --warmup W            steps of linear warmup from 0 (default 0)\n"
           "  --min-lr-ratio R      cosine: where the decay ends, relative to --lr (default 0)\n"
           "  --weight-decay WD     on matrices only (default 0.01 for adamw, decoupled; 0 for sgd)\n"
           "  --beta1 B1            adamw (default 0.9)\n"
           "  --beta2 B2            adamw (default 0.999)\n"
           "  --eps E               adamw (default 1e-8)\n"
           "  --momentum M          sgd (default 0.9)\n"
           "  --clip C              limit on the global gradient norm (default 1.0; 0 = off)\n"
           "  --freeze PATTERN      leave the tensors whose names match a glob untrained, e.g.\n"
           "                        'model.embed_tokens.*' (repeatable)\n"
           "\n"
           "memory and output:\n"
           "  --recompute           recompute activations in backward: much less memory, about a third\n"
           "                        more time, the same results\n"
           "  --save-dtype NAME     original (each tensor in the checkpoint's dtype) or f32 (default original)\n"
           "  --log FILE            one row per step to FILE.csv or FILE.jsonl: step, loss, val_loss, lr,\n"
           "                        grad_norm, tokens_per_s, elapsed_s\n"
           "  --resume              continue the run saved in --out (same options; --steps may grow)\n"
           "\n"
           "SIGINT (Ctrl-C) or SIGTERM ends the current step, saves, and exits; a second one quits at once.\n";
}

namespace detail {

// A finite number, all of `text`, or an error naming the flag.
inline double parse_number(std::string_view flag, std::string_view text) {
    const std::string copy(text);
    char* end = nullptr;
    errno = 0;
    const double value = std::strtod(copy.c_str(), &end);
    if (copy.empty() || end != copy.c_str() + copy.size() || errno == ERANGE || !std::isfinite(value)) {
        throw argument_error(std::string(flag) + ": expected a number, got '" + copy + "'");
    }
    return value;
}

inline std::string number_text(double value) { return nlohmann::json(value).dump(); }

}  // namespace detail

inline TrainCommand parse_train_arguments(const std::vector<std::string>& arguments) {
    using generate::detail::parse_integer;
    using detail::parse_number;
    TrainCommand command;
    TrainingOptions& training = command.training;
    std::optional<double> weight_decay, beta1, beta2, eps, momentum;
    bool optimizer_given = false;
    const auto at_least_one = [](const std::string& flag, std::size_t value) {
        if (value == 0) throw argument_error(flag + " must be at least 1");
        return value;
    };
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        const std::string& flag = arguments[i];
        if (flag == "--help" || flag == "-h") {
            command.help = true;
            continue;
        }
        if (flag == "--recompute") {
            training.recompute = true;
            continue;
        }
        if (flag == "--resume") {
            command.resume = true;
            continue;
        }
        if (flag.rfind("--", 0) != 0) throw argument_error("unexpected argument '" + flag + "'");
        if (flag == "--data") {
            const std::size_t before = command.data.size();
            while (i + 1 < arguments.size() && arguments[i + 1].rfind("--", 0) != 0) command.data.emplace_back(arguments[++i]);
            if (command.data.size() == before) throw argument_error("--data needs at least one file");
            continue;
        }
        if (i + 1 >= arguments.size()) throw argument_error(flag + " needs a value");
        const std::string& value = arguments[++i];
        if (flag == "--model") command.model = value;
        else if (flag == "--out") command.out = value;
        else if (flag == "--steps") training.steps = at_least_one(flag, parse_integer<std::size_t>(flag, value));
        else if (flag == "--batch") training.batch_size = at_least_one(flag, parse_integer<std::size_t>(flag, value));
        else if (flag == "--seq-len") training.sequence_length = at_least_one(flag, parse_integer<std::size_t>(flag, value));
        else if (flag == "--grad-accum") training.gradient_accumulation = at_least_one(flag, parse_integer<std::size_t>(flag, value));
        else if (flag == "--lr") training.learning_rate = parse_number(flag, value);
        else if (flag == "--min-lr-ratio") training.min_learning_rate_ratio = parse_number(flag, value);
        else if (flag == "--warmup") training.warmup_steps = parse_integer<std::size_t>(flag, value);
        else if (flag == "--schedule") {
            try {
                training.schedule = parse_schedule(value);
            } catch (const argument_error&) {
                throw argument_error("--schedule must be constant, linear or cosine, got '" + value + "'");
            }
        } else if (flag == "--optimizer") {
            try {
                training.optimizer = parse_optimizer(value);
            } catch (const argument_error&) {
                throw argument_error("--optimizer must be adamw or sgd, got '" + value + "'");
            }
            optimizer_given = true;
        } else if (flag == "--weight-decay") weight_decay = parse_number(flag, value);
        else if (flag == "--beta1") beta1 = parse_number(flag, value);
        else if (flag == "--beta2") beta2 = parse_number(flag, value);
        else if (flag == "--eps") eps = parse_number(flag, value);
        else if (flag == "--momentum") momentum = parse_number(flag, value);
        else if (flag == "--clip") training.clip = parse_number(flag, value);
        else if (flag == "--val-fraction") training.validation_fraction = parse_number(flag, value);
        else if (flag == "--eval-every") command.eval_every = parse_integer<std::size_t>(flag, value);
        else if (flag == "--save-every") command.save_every = parse_integer<std::size_t>(flag, value);
        else if (flag == "--threads") {
            command.threads = parse_integer<std::size_t>(flag, value);
            if (command.threads == 0 || command.threads > 1024) throw argument_error("--threads must be in 1..1024");
        } else if (flag == "--seed") training.seed = parse_integer<std::uint64_t>(flag, value);
        else if (flag == "--freeze") training.freeze.push_back(value);
        else if (flag == "--save-dtype") {
            if (value != "original" && value != "f32") throw argument_error("--save-dtype must be original or f32, got '" + value + "'");
            command.save_dtype = parse_save_dtype(value);
        } else if (flag == "--log") {
            command.log = value;
            const std::string extension = command.log.extension().string();
            if (extension != ".csv" && extension != ".jsonl")
                throw argument_error("--log " + value + ": the file name must end in .csv or .jsonl");
        } else throw argument_error("unknown option '" + flag + "' (see --help)");
    }
    if (command.help) return command;
    if (command.model.empty()) throw argument_error("--model is required: a model folder or an Org/Name id (see --help)");
    if (command.data.empty()) throw argument_error("--data is required: one or more .txt or .jsonl files (see --help)");
    if (command.out.empty()) throw argument_error("--out is required: the folder to save the trained model into (see --help)");

    // The values each optimizer reads; a flag for the other one is a mistake, not a no-op.
    const bool adamw = training.optimizer == OptimizerKind::adamw;
    const auto only_for = [&](bool given, const char* flag, const char* optimizer) {
        if (given) throw argument_error(std::string(flag) + " applies to --optimizer " + optimizer + " only" +
                                        (optimizer_given ? "" : " (the default optimizer is adamw)"));
    };
    only_for(!adamw && (beta1 || beta2 || eps), beta1 ? "--beta1" : beta2 ? "--beta2" : "--eps", "adamw");
    only_for(adamw && momentum.has_value(), "--momentum", "sgd");
    training.adamw.beta1 = beta1.value_or(training.adamw.beta1);
    training.adamw.beta2 = beta2.value_or(training.adamw.beta2);
    training.adamw.eps = eps.value_or(training.adamw.eps);
    training.adamw.weight_decay = adamw ? weight_decay.value_or(0.01) : 0.0;
    training.sgd.momentum = momentum.value_or(0.9);
    training.sgd.weight_decay = adamw ? 0.0 : weight_decay.value_or(0.0);

    const auto fail = [](const std::string& message) { throw argument_error(message); };
    if (!(training.learning_rate > 0.0)) fail("--lr must be > 0, got " + detail::number_text(training.learning_rate));
    if (!(training.min_learning_rate_ratio >= 0.0 && training.min_learning_rate_ratio <= 1.0))
        fail("--min-lr-ratio must be in [0, 1], got " + detail::number_text(training.min_learning_rate_ratio));
    if (training.min_learning_rate_ratio != 0.0 && training.schedule != Schedule::cosine)
        fail("--min-lr-ratio applies to --schedule cosine only");
    if (training.schedule != Schedule::constant && training.warmup_steps > training.steps)
        fail("--warmup " + std::to_string(training.warmup_steps) + " is longer than --steps " + std::to_string(training.steps));
    if (!(training.validation_fraction >= 0.0 && training.validation_fraction < 1.0))
        fail("--val-fraction must be in [0, 1), got " + detail::number_text(training.validation_fraction));
    if (!(training.clip >= 0.0)) fail("--clip must be >= 0 (0 turns clipping off), got " + detail::number_text(training.clip));
    if (weight_decay && !(*weight_decay >= 0.0)) fail("--weight-decay must be >= 0, got " + detail::number_text(*weight_decay));
    if (!(training.adamw.beta1 >= 0.0 && training.adamw.beta1 < 1.0)) fail("--beta1 must be in [0, 1), got " + detail::number_text(training.adamw.beta1));
    if (!(training.adamw.beta2 >= 0.0 && training.adamw.beta2 < 1.0)) fail("--beta2 must be in [0, 1), got " + detail::number_text(training.adamw.beta2));
    if (!(training.adamw.eps >= 0.0)) fail("--eps must be >= 0, got " + detail::number_text(training.adamw.eps));
    if (!(training.sgd.momentum >= 0.0)) fail("--momentum must be >= 0, got " + detail::number_text(training.sgd.momentum));
    return command;
}

namespace detail {

// ---- Formatting ------------------------------------------------------------------------

inline std::string with_commas(std::uint64_t value) {
    std::string digits = std::to_string(value);
    for (std::size_t i = digits.size(); i > 3; i -= 3) digits.insert(i - 3, ",");
    return digits;
}

inline std::string printed(const char* format, double value) {
    char text[64];
    std::snprintf(text, sizeof text, format, value);
    return text;
}

// 0.4s, 12s, 3m05s, 2h03m
inline std::string duration_text(double seconds) {
    if (!(seconds >= 0.0) || !std::isfinite(seconds)) return "?";
    if (seconds < 10.0) return printed("%.1fs", seconds);
    const auto whole = std::uint64_t(seconds + 0.5);
    char text[64];
    if (whole < 60) std::snprintf(text, sizeof text, "%us", unsigned(whole));
    else if (whole < 3600) std::snprintf(text, sizeof text, "%um%02us", unsigned(whole / 60), unsigned(whole % 60));
    else std::snprintf(text, sizeof text, "%lluh%02um", (unsigned long long)(whole / 3600), unsigned(whole % 3600 / 60));
    return text;
}

inline std::string mebibytes(std::uint64_t bytes) { return printed("%.1f MiB", double(bytes) / (1024.0 * 1024.0)); }

// A path or argument as a shell would need it typed.
inline std::string shell_word(const std::string& text) {
    const bool plain = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '/' || c == '@';
    });
    if (plain) return text;
    std::string quoted = "'";
    for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return quoted + "'";
}

// ---- Before training -------------------------------------------------------------------

// Creates `folder` if needed and proves it writable with a probe file, so a read-only or
// impossible folder fails now rather than at the first save. Returns whether it was created.
inline bool prepare_output_folder(const std::filesystem::path& folder) {
    namespace fs = std::filesystem;
    std::error_code status;
    const bool existed = fs::exists(folder, status);
    if (existed && !fs::is_directory(folder, status))
        throw argument_error("--out " + folder.string() + ": is a file, not a folder");
    if (!existed) {
        fs::create_directories(folder, status);
        if (status) throw argument_error("--out " + folder.string() + ": cannot create the folder: " + status.message());
    }
    const fs::path probe = folder / (".loom_train_probe." + std::to_string(::getpid()));
    bool written = false;
    {
        std::ofstream file(probe, std::ios::binary | std::ios::trunc);
        written = bool(file << "probe") && bool(file.flush());
    }
    fs::remove(probe, status);
    if (!written) {
        if (!existed) fs::remove(folder, status);
        throw argument_error("--out " + folder.string() + ": the folder is not writable");
    }
    return !existed;
}

// The model's files, as models::load_model reads them, plus the raw config.json to save back.
struct ModelFiles {
    std::filesystem::path folder;
    nlohmann::json config_json;
    io::ModelConfig config;
    std::optional<int> end_of_sequence;  // the first of config.json's and generation_config.json's EOS ids
    std::optional<std::string> chat_template;  // needed by {"messages"} data
};

inline ModelFiles read_model_files(const std::string& model) {
    ModelFiles files;
    files.folder = io::resolve_model_path(model);
    files.config_json = io::read_json_file(files.folder / "config.json", "model config");
    files.config = io::parse_model_config(files.config_json, (files.folder / "config.json").string());
    std::vector<int> eos = files.config.eos_token_ids;
    const io::GenerationDefaults generation = io::load_generation_config(files.folder / "generation_config.json");
    eos.insert(eos.end(), generation.eos_token_ids.begin(), generation.eos_token_ids.end());
    if (!eos.empty()) files.end_of_sequence = eos.front();
    files.chat_template = chat::load_chat_template(files.folder);
    return files;
}

// A template that prints today's date sees this one, so the data's tokens (and with them
// a resumed run) do not depend on the day. It is Llama 3's own default date.
inline std::tm pinned_template_date() {
    std::tm date{};
    date.tm_year = 2024 - 1900;
    date.tm_mon = 6;
    date.tm_mday = 26;
    return date;
}

// Every file's documents as tokens, checked against the model's vocabulary, cut into windows.
inline PackedDataset read_training_data(const TrainCommand& command, const ModelFiles& model,
                                        const tokenizer::Tokenizer& text_tokenizer) {
    DocumentEncoding encoding;
    encoding.tokenizer = &text_tokenizer;
    encoding.end_of_sequence = model.end_of_sequence;
    encoding.chat_template = model.chat_template;
    encoding.template_variables = chat::chat_template_special_tokens(model.folder);
    encoding.render_options.now = pinned_template_date;
    TokenStream stream;
    std::string origin;
    try {
        for (const auto& file : command.data) {
            read_data_file(stream, file, encoding);
            origin += (origin.empty() ? "" : ", ") + file.string();
        }
    } catch (const loom::error& failure) {
        throw argument_error(failure.what());  // a data file is part of the command line
    }
    const std::size_t vocabulary = model.config.vocab_size;
    const auto largest = std::max_element(stream.tokens.begin(), stream.tokens.end());
    if (largest != stream.tokens.end() && (*largest < 0 || std::size_t(*largest) >= vocabulary))
        throw argument_error(origin + ": the tokenizer gives token id " + std::to_string(*largest) + ", outside the model's vocabulary of " +
                             std::to_string(vocabulary) + " (" + model.folder.string() + ": tokenizer and config.json disagree)");
    return PackedDataset(std::move(stream), command.training.sequence_length, command.training.validation_fraction, origin);
}

// ---- During training -------------------------------------------------------------------

// SIGINT and SIGTERM are taken by one thread with sigwait (as loom_serve does) and only
// raise a flag, which the loop reads between steps. A second signal quits at once, unless
// a save is being written. Construct before any other thread, which inherits the mask.
class StopSignals {
public:
    StopSignals() {
        sigemptyset(&signals_);
        sigaddset(&signals_, SIGINT);
        sigaddset(&signals_, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &signals_, &previous_);
        waiter_ = std::thread([this] { wait(); });
    }
    ~StopSignals() {
        closing_ = true;
        pthread_kill(waiter_.native_handle(), SIGTERM);  // blocked there, so sigwait takes it
        waiter_.join();
        pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
    }
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;

    int received() const noexcept { return received_.load(); }  // 0: none yet
    void set_saving(bool saving) noexcept { saving_ = saving; }

private:
    void wait() {
        for (;;) {
            int signal = 0;
            if (sigwait(&signals_, &signal) != 0) continue;
            if (closing_) return;
            if (received_.load() == 0) {
                received_ = signal;
            } else if (!saving_) {
                static const char message[] = "\nloom_train: second signal: quitting without saving\n";
                [[maybe_unused]] const auto ignored = ::write(STDERR_FILENO, message, sizeof message - 1);
                std::_Exit(128 + signal);
            }
        }
    }

    sigset_t signals_{}, previous_{};
    std::atomic<int> received_{0};
    std::atomic<bool> saving_{false}, closing_{false};
    std::thread waiter_;
};

inline const char* signal_name(int signal) { return signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal"; }

// --log: one row per step, flushed as written so a run can be followed while it goes.
class StepLog {
public:
    StepLog() = default;
    // Appends when resuming (the rows continue the saved run's), else starts the file afresh.
    StepLog(const std::filesystem::path& path, bool append) : path_(path), csv_(path.extension() == ".csv") {
        std::error_code status;
        const bool fresh = !append || !std::filesystem::exists(path, status) || std::filesystem::file_size(path, status) == 0;
        file_.open(path, std::ios::binary | (append ? std::ios::app : std::ios::trunc));
        if (!file_) throw argument_error("--log " + path.string() + ": cannot open for writing");
        if (csv_ && fresh) file_ << "step,loss,val_loss,lr,grad_norm,tokens_per_s,elapsed_s\n" << std::flush;
    }

    bool enabled() const noexcept { return file_.is_open(); }

    void write(const StepReport& report, std::optional<double> validation_loss, double elapsed_seconds) {
        if (!enabled()) return;
        const double tokens_per_second = report.seconds > 0.0 ? double(report.tokens) / report.seconds : 0.0;
        if (csv_) {
            file_ << report.step << ',' << printed("%.9g", report.loss) << ','
                  << (validation_loss ? printed("%.9g", *validation_loss) : std::string()) << ','
                  << printed("%.9g", report.learning_rate) << ',' << printed("%.9g", report.gradient_norm) << ','
                  << printed("%.1f", tokens_per_second) << ',' << printed("%.3f", elapsed_seconds) << '\n';
        } else {
            const nlohmann::ordered_json row = {{"step", report.step},
                                        {"loss", report.loss},
                                        {"val_loss", validation_loss ? nlohmann::ordered_json(*validation_loss) : nlohmann::ordered_json(nullptr)},
                                        {"lr", report.learning_rate},
                                        {"grad_norm", report.gradient_norm},
                                        {"tokens_per_s", tokens_per_second},
                                        {"elapsed_s", elapsed_seconds}};
            file_ << row.dump() << '\n';
        }
        file_.flush();
        if (!file_) throw error("--log " + path_.string() + ": write failed");
    }

private:
    std::filesystem::path path_;
    bool csv_ = true;
    std::ofstream file_;
};

// What the progress display shows after a step.
struct ProgressState {
    std::size_t step = 0, total = 0;
    double loss = 0.0, learning_rate = 0.0, gradient_norm = 0.0;
    std::optional<double> validation_loss;  // the latest
    double tokens_per_second = 0.0;         // over this run so far
    double remaining_seconds = 0.0;
};

// Plain lines, or one line redrawn in place with '\r' on a terminal; messages in between
// print above the live line.
class ProgressPrinter {
public:
    ProgressPrinter(std::ostream& out, ProgressDisplay display) : out_(out), live_(display == ProgressDisplay::live) {}

    void step(const ProgressState& state) {
        state_ = state;
        if (live_) {
            redraw();
            return;
        }
        out_ << "step " << state.step << '/' << state.total << "  loss " << printed("%.4f", state.loss) << "  lr "
             << printed("%.1e", state.learning_rate) << "  grad norm " << printed("%.3f", state.gradient_norm) << "  "
             << with_commas(std::uint64_t(state.tokens_per_second + 0.5)) << " tok/s  ETA "
             << duration_text(state.remaining_seconds) << '\n' << std::flush;
    }

    void validation(std::size_t step, std::size_t total, double loss) {
        state_.validation_loss = loss;
        if (live_) {
            redraw();
            return;
        }
        out_ << "step " << step << '/' << total << "  val loss " << printed("%.4f", loss) << '\n' << std::flush;
    }

    void message(const std::string& text) {
        if (live_ && drawn_) out_ << "\r\x1b[K";
        out_ << text << '\n';
        if (live_ && drawn_) redraw();
        out_ << std::flush;
    }

    // Ends the live line, so what follows starts on a line of its own.
    void finish() {
        if (live_ && drawn_) out_ << '\n' << std::flush;
        drawn_ = false;
    }

private:
    void redraw() {
        const ProgressState& s = state_;
        out_ << "\rstep " << s.step << '/' << s.total << "  loss " << printed("%.4f", s.loss);
        if (s.validation_loss) out_ << "  val " << printed("%.4f", *s.validation_loss);
        out_ << "  " << with_commas(std::uint64_t(s.tokens_per_second + 0.5)) << " tok/s  lr "
             << printed("%.1e", s.learning_rate) << "  ETA " << duration_text(s.remaining_seconds) << "\x1b[K" << std::flush;
        drawn_ = true;
    }

    std::ostream& out_;
    bool live_;
    bool drawn_ = false;
    ProgressState state_;
};

// ---- Reports -----------------------------------------------------------------------

// f32 weights and gradients of every parameter, and the optimizer's moments of the trainable ones.
inline std::uint64_t state_bytes(const Parameters& parameters, const TrainingOptions& options) {
    std::uint64_t total = 0, trainable = 0;
    for (const Parameter& parameter : parameters.list()) {
        total += parameter.size;
        if (parameter.trainable) trainable += parameter.size;
    }
    const std::uint64_t slots = options.optimizer == OptimizerKind::adamw ? 2 : options.sgd.momentum != 0.0 ? 1 : 0;
    return 4 * (2 * total + slots * trainable);
}

inline void print_start_up(std::ostream& out, const TrainCommand& command, const ModelFiles& model, const Parameters& parameters,
                           const DataStatistics& statistics, std::size_t first_step) {
    const TrainingOptions& options = command.training;
    const io::ModelConfig& config = model.config;
    out << "loom_train: model " << model.folder.string() << " (" << config.architecture << ", " << config.num_hidden_layers
        << " layers, hidden " << config.hidden_size << ", vocabulary " << with_commas(config.vocab_size) << ", context "
        << with_commas(config.max_position_embeddings) << (config.torch_dtype.empty() ? "" : ", " + config.torch_dtype) << ")\n";

    std::uint64_t total = 0, trainable = 0;
    for (const Parameter& parameter : parameters.list()) {
        total += parameter.size;
        if (parameter.trainable) trainable += parameter.size;
    }
    out << "parameters: " << with_commas(trainable) << " trainable of " << with_commas(total)
        << (options.freeze.empty() ? "" : " (" + std::to_string(options.freeze.size()) + " --freeze patterns)")
        << "; weights, gradients and optimizer state " << mebibytes(state_bytes(parameters, options)) << "\n";

    out << "data: " << command.data.size() << (command.data.size() == 1 ? " file, " : " files, ") << with_commas(statistics.documents)
        << (statistics.documents == 1 ? " document, " : " documents, ") << with_commas(statistics.tokens) << " tokens -> "
        << with_commas(statistics.train_windows) << " training and " << with_commas(statistics.validation_windows)
        << " validation sequences of " << options.sequence_length << " tokens; " << with_commas(statistics.train_targets)
        << " trained targets (" << with_commas(statistics.validation_targets) << " in validation); "
        << with_commas(statistics.dropped_tokens) << " tokens of tail dropped\n";

    const std::size_t sequences_per_step = options.batch_size * options.gradient_accumulation;
    const double epochs = double(options.steps) * double(sequences_per_step) / double(std::max<std::size_t>(1, statistics.train_windows));
    out << "plan: " << options.steps << " steps x " << options.gradient_accumulation << " micro-batch"
        << (options.gradient_accumulation == 1 ? "" : "es") << " x " << options.batch_size << " sequences x " << options.sequence_length
        << " tokens = " << with_commas(sequences_per_step * options.sequence_length) << " tokens per step ("
        << printed("%.2f", epochs) << " epochs); ";
    if (options.optimizer == OptimizerKind::adamw) {
        out << "adamw (betas " << number_text(options.adamw.beta1) << ", " << number_text(options.adamw.beta2) << ", eps "
            << number_text(options.adamw.eps) << ", weight decay " << number_text(options.adamw.weight_decay) << ")";
    } else {
        out << "sgd (momentum " << number_text(options.sgd.momentum) << ", weight decay " << number_text(options.sgd.weight_decay) << ")";
    }
    out << ", lr " << number_text(options.learning_rate) << " " << schedule_name(options.schedule);
    if (options.warmup_steps > 0) out << " after " << options.warmup_steps << (options.warmup_steps == 1 ? " warmup step" : " warmup steps");
    if (options.min_learning_rate_ratio > 0.0) out << " down to " << number_text(options.min_learning_rate_ratio) << " x lr";
    out << ", clip " << (options.clip > 0.0 ? number_text(options.clip) : std::string("off")) << (options.recompute ? ", recompute" : "")
        << "\n";
    out << "threads: " << command.threads << "\n";
    if (!command.resume && std::filesystem::exists(command.out / training_state_file))
        out << "note: " << command.out.string() << " holds a saved run (" << training_state_file
            << "); this run starts afresh and replaces it at its first save (--resume continues it instead)\n";
    if (command.resume) out << "resuming: step " << first_step << " of " << options.steps << " from " << command.out.string() << "\n";
    out << std::flush;
}

// What a run did, for its last lines.
struct RunResult {
    std::size_t first_step = 0;       // steps already taken when this run began (resume)
    std::size_t steps_taken = 0;
    bool interrupted = false;         // by a signal, before the last step
    std::optional<double> loss;       // of the last step
    std::optional<double> validation_loss;
    std::size_t validated_at = 0;     // the step validation_loss was measured after
    std::size_t tokens = 0;           // input tokens of this run's steps
    double training_seconds = 0.0;
    double wall_seconds = 0.0;        // since the command started
};

inline void print_summary(std::ostream& out, const TrainCommand& command, const ModelFiles& model, const RunResult& run,
                          const DataStatistics& statistics, std::uint64_t state_memory, std::size_t activation_memory) {
    const TrainingOptions& options = command.training;
    out << "loom_train: " << (run.interrupted ? "stopped" : "done") << ": " << run.steps_taken << " of " << options.steps << " steps";
    if (command.resume) out << " (" << run.steps_taken - run.first_step << " in this run)";
    out << "; final loss " << (run.loss ? printed("%.4f", *run.loss) : std::string("-")) << ", validation loss "
        << (run.validation_loss ? printed("%.4f", *run.validation_loss) + " (step " + std::to_string(run.validated_at) + ")"
                                : std::string(statistics.validation_windows == 0 ? "- (--val-fraction 0)" : "-"))
        << "; " << with_commas(std::uint64_t(run.training_seconds > 0.0 ? double(run.tokens) / run.training_seconds + 0.5 : 0.0))
        << " tok/s; wall time " << duration_text(run.wall_seconds) << "\n";
    out << "memory: " << mebibytes(state_memory) << " weights, gradients and optimizer state + " << mebibytes(activation_memory)
        << " activations" << (options.recompute ? " (--recompute)" : "") << "\n";
    out << "saved: " << command.out.string() << " (the model in " << (command.save_dtype == SaveDtype::f32 ? "f32" : "its original dtypes")
        << ", and " << training_state_file << " for --resume)\n";
    out << "run it: loom_generate --model " << shell_word(command.out.string())
        << (model.chat_template ? " --chat --prompt 'Hello!'" : " --prompt 'Once upon a time'") << "\n"
        << std::flush;
}

}  // namespace detail

// Runs loom_train; returns the exit code. Errors are a line on `err` starting
// "loom_train: error: ". `display` is the caller's choice: live on a terminal, lines otherwise.
inline int run_train(const std::vector<std::string>& arguments, std::ostream& out, std::ostream& err,
                     ProgressDisplay display = ProgressDisplay::lines) {
    namespace fs = std::filesystem;
    const auto start = std::chrono::steady_clock::now();
    const auto seconds_since = [](std::chrono::steady_clock::time_point from) {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - from).count();
    };
    const auto report_error = [&](const std::exception& failure) { err << "loom_train: error: " << failure.what() << "\n"; };

    // ---- Everything that can be checked before training: exit 2 on a bad command ----
    TrainCommand command;
    bool created_out = false;
    // A command refused after --out was created leaves no empty folder behind.
    const auto refuse = [&](const std::exception& failure) {
        std::error_code ignored;
        if (created_out) fs::remove(command.out, ignored);  // only if still empty
        report_error(failure);
        return dynamic_cast<const argument_error*>(&failure) != nullptr ? 2 : 1;
    };
    std::optional<detail::ModelFiles> model;
    std::unique_ptr<tokenizer::Tokenizer> text_tokenizer;
    std::optional<PackedDataset> data;
    detail::StepLog step_log;
    try {
        command = parse_train_arguments(arguments);
        if (command.help) {
            out << train_usage();
            return 0;
        }
        if (command.resume && !fs::is_regular_file(command.out / training_state_file))
            throw argument_error("--resume: " + (command.out / training_state_file).string() +
                                 " does not exist; there is no saved run to continue in --out " + command.out.string());
        created_out = detail::prepare_output_folder(command.out);

        model = detail::read_model_files(command.model);
        const std::size_t context = model->config.max_position_embeddings;
        if (command.training.sequence_length > context)
            throw argument_error("--seq-len " + std::to_string(command.training.sequence_length) + " exceeds the model's context of " +
                                 std::to_string(context) + " positions (max_position_embeddings in " +
                                 (model->folder / "config.json").string() + ")");
        if (!tokenizer::has_tokenizer(model->folder))
            throw argument_error("the model folder " + model->folder.string() +
                                 " has no tokenizer (tokenizer.json, vocab.json + merges.txt or tokenizer.model), which training needs to read --data");
        text_tokenizer = tokenizer::load_tokenizer(model->folder);
        data.emplace(detail::read_training_data(command, *model, *text_tokenizer));
        if (!command.log.empty()) step_log = detail::StepLog(command.log, command.resume);
    } catch (const std::exception& failure) {
        return refuse(failure);
    }

    // From here on other threads run: the signal mask is set first, so they inherit it.
    detail::StopSignals stop;
    ThreadPool pool(command.threads);
    std::unique_ptr<TrainableLlama> trainable;
    std::unique_ptr<Trainer> trainer;
    std::size_t first_step = 0;
    try {
        trainable = std::make_unique<TrainableLlama>(model->config, io::TensorStore::open(model->folder));
        trainer = std::make_unique<Trainer>(*trainable, *data, command.training, pool);
        if (command.resume) {
            trainer->resume(command.out);
            first_step = trainer->steps_taken();
            if (trainer->finished())
                throw argument_error("--steps " + std::to_string(command.training.steps) + ": the run saved in " + command.out.string() +
                                     " has already taken " + std::to_string(first_step) + " steps; give a larger --steps to train on");
        }
    } catch (const std::exception& failure) {
        return refuse(failure);
    }

    detail::print_start_up(out, command, *model, trainable->parameters, data->statistics(), first_step);

    // ---- Training: a step, its line and log row, validation and saving when due ----
    const TrainingOptions& options = command.training;
    detail::ProgressPrinter progress(out, display);
    const auto training_start = std::chrono::steady_clock::now();
    detail::RunResult run;
    run.first_step = first_step;
    std::size_t last_saved = first_step;  // the step of the checkpoint in --out (0: none)
    const auto save = [&] {
        stop.set_saving(true);
        trainer->save(command.out, model->config_json, model->folder, command.save_dtype);
        stop.set_saving(false);
        last_saved = trainer->steps_taken();
    };
    try {
        while (!trainer->finished() && stop.received() == 0) {
            const StepReport report = trainer->step();
            run.loss = report.loss;
            run.tokens += report.tokens;
            const double elapsed = seconds_since(training_start);
            detail::ProgressState state;
            state.step = report.step;
            state.total = options.steps;
            state.loss = report.loss;
            state.learning_rate = report.learning_rate;
            state.gradient_norm = report.gradient_norm;
            state.validation_loss = run.validation_loss;
            state.tokens_per_second = elapsed > 0.0 ? double(run.tokens) / elapsed : 0.0;
            state.remaining_seconds = elapsed / double(report.step - first_step) * double(options.steps - report.step);
            progress.step(state);

            const bool last = trainer->finished();
            std::optional<double> validation_loss;
            if (last || (command.eval_every > 0 && report.step % command.eval_every == 0)) {
                validation_loss = trainer->validate();
                if (validation_loss) {
                    run.validation_loss = validation_loss;
                    run.validated_at = report.step;
                    progress.validation(report.step, options.steps, *validation_loss);
                }
            }
            step_log.write(report, validation_loss, seconds_since(training_start));
            if (!last && command.save_every > 0 && report.step % command.save_every == 0) {
                save();
                progress.message("saved step " + std::to_string(report.step) + " to " + command.out.string());
            }
        }
        run.steps_taken = trainer->steps_taken();
        run.interrupted = !trainer->finished();
        if (run.interrupted) {
            progress.finish();
            out << "loom_train: " << detail::signal_name(stop.received()) << ": stopping after step " << run.steps_taken << "\n";
            if (run.steps_taken == first_step) {
                out << "loom_train: no step was taken; "
                    << (command.resume ? "the saved run in " + command.out.string() + " is unchanged" : std::string("nothing was saved")) << "\n"
                    << std::flush;
                return 0;
            }
            out << std::flush;
        }
        if (last_saved != run.steps_taken) save();
        progress.finish();
    } catch (const non_finite_error& failure) {
        progress.finish();
        report_error(failure);
        err << "loom_train: "
            << (last_saved > 0 ? "the checkpoint in " + command.out.string() + " (step " + std::to_string(last_saved) + ") was left as it was"
                               : std::string("nothing was saved"))
            << "\n";
        return 1;
    } catch (const std::exception& failure) {
        progress.finish();
        report_error(failure);
        return 1;
    }
    run.training_seconds = seconds_since(training_start);
    run.wall_seconds = seconds_since(start);
    detail::print_summary(out, command, *model, run, data->statistics(), detail::state_bytes(trainable->parameters, options),
                          trainer->activation_bytes());
    return 0;
}

}  // namespace loom::train
