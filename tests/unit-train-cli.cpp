// loom_train, the binary: a short run's lines, step log and saved folder (which loom_generate
// runs); a resumed run that equals an uninterrupted one byte for byte; SIGINT saving a
// checkpoint; and a one-line error with exit code 2 for every bad command, before any work.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/io/safetensors.hpp"
#include "loom/models/load.hpp"
#include "loom/models/synthetic.hpp"
#include "loom/train/command_line.hpp"
#include "test_support.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using loom::testing::read_file;
using loom::testing::shell_quoted;

// A tiny LLaMA (2 layers, hidden 64) with SmolLM2's real tokenizer, whose 49152 tokens set
// the vocabulary, and SmolLM2's chat template, for {"messages"} data. EOS 2 is <|im_end|>.
fs::path write_model(const fs::path& folder, loom::DType dtype = loom::DType::f32) {
    auto spec = loom::models::synthetic_preset("tiny-llama");
    spec.vocab_size = 49152;
    spec.eos_token_ids = {2};
    spec.dtype = dtype;
    loom::models::write_synthetic_model(folder, spec);
    const std::string tokenizer = loom::testing::source_path("tests/data/tokenizers/smollm2-135m-instruct/");
    const std::string chat_template = loom::testing::source_path("tests/data/chat_templates/smollm2-1.7b-instruct/");
    for (const fs::path& file : {fs::path(tokenizer + "tokenizer.json"), fs::path(tokenizer + "tokenizer_config.json"),
                                 fs::path(chat_template + "chat_template.jinja")}) {
        fs::copy_file(file, folder / file.filename());
        fs::permissions(folder / file.filename(), fs::perms::owner_write, fs::perm_options::add);
    }
    return folder;
}

void write_file(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// About 420 SmolLM2 tokens of two alternating sentences: easy to learn a little of in a few steps.
fs::path write_text(const fs::path& path) {
    std::string text;
    for (int i = 0; i < 30; ++i) text += "The cat sat on the mat. The dog sat on the log. ";
    write_file(path, text);
    return path;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream stream(text);
    for (std::string line; std::getline(stream, line);) lines.push_back(line);
    return lines;
}

struct Run {
    int exit_code;
    std::string out, err;
};

// Runs the loom_train binary; stdout and stderr are files (not a terminal), so progress
// comes as one line per step.
Run train(const fs::path& scratch, const std::vector<std::string>& arguments) {
    std::string command = LOOM_TRAIN_BINARY;
    for (const std::string& argument : arguments) command += " " + shell_quoted(argument);
    const fs::path out = scratch / "stdout.txt", err = scratch / "stderr.txt";
    const int code = loom::testing::run_command(command + " > " + shell_quoted(out.string()) + " 2> " + shell_quoted(err.string()));
    return {code, read_file(out), read_file(err)};
}

std::vector<std::string> with(std::vector<std::string> arguments, const std::vector<std::string>& more) {
    arguments.insert(arguments.end(), more.begin(), more.end());
    return arguments;
}

// The CSV log's rows as field lists (the header first).
std::vector<std::vector<std::string>> csv_rows(const fs::path& path) {
    std::vector<std::vector<std::string>> rows;
    for (const std::string& line : lines_of(read_file(path))) {
        std::vector<std::string> fields;
        std::size_t start = 0;
        for (std::size_t comma; (comma = line.find(',', start)) != std::string::npos; start = comma + 1)
            fields.push_back(line.substr(start, comma - start));
        fields.push_back(line.substr(start));
        rows.push_back(fields);
    }
    return rows;
}

std::vector<nlohmann::json> jsonl_rows(const fs::path& path) {
    std::vector<nlohmann::json> rows;
    for (const std::string& line : lines_of(read_file(path))) rows.push_back(nlohmann::json::parse(line));
    return rows;
}

}  // namespace

TEST_CASE("loom_train: arguments, their defaults and the optimizer-specific flags", "[train][cli]") {
    using loom::train::parse_train_arguments;
    const auto command = parse_train_arguments({"--model", "m", "--data", "a.txt", "b.jsonl", "--out", "o", "--freeze", "x.*",
                                                "--freeze", "y", "--recompute"});
    CHECK(command.data == std::vector<fs::path>{"a.txt", "b.jsonl"});
    CHECK(command.training.steps == 100);
    CHECK(command.training.batch_size == 4);
    CHECK(command.training.sequence_length == 256);
    CHECK(command.training.learning_rate == 3e-4);
    CHECK(command.training.schedule == loom::train::Schedule::cosine);
    CHECK(command.training.optimizer == loom::train::OptimizerKind::adamw);
    CHECK(command.training.adamw.weight_decay == 0.01);
    CHECK(command.training.clip == 1.0);
    CHECK(command.training.validation_fraction == 0.1);
    CHECK(command.training.freeze == std::vector<std::string>{"x.*", "y"});
    CHECK(command.training.recompute);
    CHECK(command.save_dtype == loom::train::SaveDtype::original);

    const auto sgd = parse_train_arguments({"--model", "m", "--data", "a.txt", "--out", "o", "--optimizer", "sgd"});
    CHECK(sgd.training.sgd.momentum == 0.9);
    CHECK(sgd.training.sgd.weight_decay == 0.0);
    CHECK_THROWS_WITH(parse_train_arguments({"--model", "m", "--data", "a", "--out", "o", "--momentum", "0.5"}),
                      Catch::Contains("--momentum applies to --optimizer sgd only"));
    CHECK_THROWS_WITH(parse_train_arguments({"--model", "m", "--data", "a", "--out", "o", "--optimizer", "sgd", "--beta2", "0.9"}),
                      Catch::Contains("--beta2 applies to --optimizer adamw only"));
    CHECK_THROWS_WITH(parse_train_arguments({"--model", "m", "--data", "--out", "o"}), Catch::Contains("--data needs at least one file"));
    CHECK_THROWS_WITH(parse_train_arguments({"--model", "m", "--data", "a", "--out", "o", "--schedule", "linear", "--min-lr-ratio", "0.1"}),
                      Catch::Contains("cosine only"));
    CHECK_THROWS_WITH(parse_train_arguments({"--model", "m", "--data", "a", "--out", "o", "--log", "steps.txt"}),
                      Catch::Contains(".csv or .jsonl"));
}

TEST_CASE("loom_train: --help prints the usage of every flag", "[train][cli]") {
    loom::testing::ScratchFolder folder("train-cli-help");
    const Run run = train(folder.path(), {"--help"});
    CHECK(run.exit_code == 0);
    for (const char* flag : {"--model", "--data", "--out", "--steps", "--batch", "--seq-len", "--lr", "--min-lr-ratio", "--warmup",
                             "--schedule", "--optimizer", "--weight-decay", "--beta1", "--beta2", "--eps", "--momentum", "--clip",
                             "--grad-accum", "--val-fraction", "--eval-every", "--save-every", "--threads", "--seed", "--freeze",
                             "--recompute", "--save-dtype", "--log", "--resume"}) {
        INFO(flag);
        CHECK(run.out.find(std::string(flag) + " ") != std::string::npos);
    }
}

TEST_CASE("loom_train: a short run prints each step, logs it, and saves a model loom_generate runs", "[train][cli]") {
    loom::testing::ScratchFolder folder("train-cli-run");
    const fs::path model = write_model(folder / "model", loom::DType::bf16);
    const fs::path text = write_text(folder / "cats.txt");
    const std::string conversations = loom::testing::source_path("tests/data/train/conversations.jsonl");
    const fs::path out = folder / "out";
    const Run run = train(folder.path(), {"--model", model.string(), "--data", text.string(), conversations, "--out", out.string(),
                                          "--steps", "8", "--seq-len", "16", "--batch", "2", "--lr", "3e-3", "--threads", "2",
                                          "--log", (folder / "steps.csv").string()});
    INFO(run.out << run.err);
    REQUIRE(run.exit_code == 0);
    CHECK(run.err.empty());

    // Start-up: model, parameters, data, plan, threads.
    CHECK_THAT(run.out, Catch::Contains("loom_train: model " + model.string() + " (LlamaForCausalLM, 2 layers, hidden 64"));
    CHECK_THAT(run.out, Catch::Contains("parameters: 3,232,064 trainable of 3,232,064"));
    CHECK_THAT(run.out, Catch::Contains("data: 2 files, 5 documents"));  // 1 text file; 2 texts and 2 conversations in the JSONL
    CHECK_THAT(run.out, Catch::Contains("plan: 8 steps x 1 micro-batch x 2 sequences x 16 tokens = 32 tokens per step"));
    CHECK_THAT(run.out, Catch::Contains("adamw") && Catch::Contains("cosine") && Catch::Contains("threads: 2"));

    // One plain line per step, then the validation loss at the end.
    std::vector<std::string> step_lines;
    for (const std::string& line : lines_of(run.out))
        if (line.rfind("step ", 0) == 0) step_lines.push_back(line);
    REQUIRE(step_lines.size() == 9);
    for (int step = 1; step <= 8; ++step) CHECK(step_lines[step - 1].rfind("step " + std::to_string(step) + "/8  loss ", 0) == 0);
    CHECK(step_lines[8].rfind("step 8/8  val loss ", 0) == 0);
    CHECK(run.out.find('\r') == std::string::npos);
    CHECK_THAT(run.out, Catch::Contains("loom_train: done: 8 of 8 steps"));
    CHECK_THAT(run.out, Catch::Contains("loom_generate --model " + out.string()));

    // The log: a header and a row per step; the validation loss only where it was measured.
    const auto rows = csv_rows(folder / "steps.csv");
    REQUIRE(rows.size() == 9);
    CHECK(rows[0] == std::vector<std::string>{"step", "loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"});
    for (std::size_t step = 1; step <= 8; ++step) {
        INFO("row " << step);
        REQUIRE(rows[step].size() == 7);
        CHECK(rows[step][0] == std::to_string(step));
        CHECK(rows[step][2].empty() == (step != 8));
        CHECK(std::stod(rows[step][5]) > 0.0);
    }
    CHECK(std::stod(rows[1][3]) == 3e-3);  // cosine starts at the peak without warmup
    const double first_loss = std::stod(rows[1][1]), last_loss = std::stod(rows[8][1]);
    CHECK(first_loss > 10.0);  // about ln(49152) from random weights
    CHECK(last_loss < first_loss - 0.5);

    // The saved folder: the weights in the checkpoint's dtype, the tokenizer and template
    // copied along, and the training state; loom_generate runs on it.
    for (const char* name : {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "training_state.safetensors"}) {
        INFO(name);
        CHECK(fs::exists(out / name));
    }
    const auto weights = loom::io::TensorStore::open(out / "model.safetensors");
    CHECK(weights.get("model.embed_tokens.weight").dtype == loom::DType::bf16);
    const auto reloaded = loom::models::load_model(out.string());
    CHECK(reloaded.config().vocab_size == 49152);
    const fs::path generated = folder / "generated.txt";
    CHECK(loom::testing::run_command(std::string(LOOM_GENERATE_BINARY) + " --model " + shell_quoted(out.string()) +
                                     " --prompt 'The cat' --max-tokens 4 --threads 2 > " + shell_quoted(generated.string()) +
                                     " 2>&1") == 0);
    CHECK_THAT(read_file(generated), Catch::Contains("decode:"));
}

TEST_CASE("loom_train: 2 steps then 2 resumed give the bytes of 4 straight steps, for any --threads", "[train][cli][resume]") {
    loom::testing::ScratchFolder folder("train-cli-resume");
    const fs::path model = write_model(folder / "model");
    const fs::path text = write_text(folder / "cats.txt");
    const std::vector<std::string> common = {"--model", model.string(), "--data", text.string(), "--seq-len", "16", "--batch", "2",
                                             "--lr", "3e-3", "--schedule", "constant", "--save-dtype", "f32"};
    const fs::path straight = folder / "straight", resumed = folder / "resumed";
    const Run whole = train(folder.path(), with(common, {"--out", straight.string(), "--steps", "4", "--threads", "1",
                                                         "--log", (folder / "straight.jsonl").string()}));
    INFO(whole.out << whole.err);
    REQUIRE(whole.exit_code == 0);
    const Run first = train(folder.path(), with(common, {"--out", resumed.string(), "--steps", "2", "--threads", "2",
                                                         "--log", (folder / "resumed.jsonl").string()}));
    INFO(first.out << first.err);
    REQUIRE(first.exit_code == 0);
    const Run second = train(folder.path(), with(common, {"--out", resumed.string(), "--steps", "4", "--threads", "2", "--resume",
                                                          "--log", (folder / "resumed.jsonl").string()}));
    INFO(second.out << second.err);
    REQUIRE(second.exit_code == 0);
    CHECK_THAT(second.out, Catch::Contains("resuming: step 2 of 4"));
    CHECK_THAT(second.out, Catch::Contains("step 3/4  loss") && !Catch::Contains("step 1/4  loss"));

    CHECK(read_file(resumed / "model.safetensors") == read_file(straight / "model.safetensors"));
    CHECK(read_file(resumed / "training_state.safetensors") == read_file(straight / "training_state.safetensors"));
    // The resumed log continues the first one's rows, with the straight run's losses.
    const auto straight_rows = jsonl_rows(folder / "straight.jsonl"), resumed_rows = jsonl_rows(folder / "resumed.jsonl");
    REQUIRE(straight_rows.size() == 4);
    REQUIRE(resumed_rows.size() == 4);
    for (std::size_t i = 0; i < 4; ++i) {
        INFO("row " << i);
        CHECK(resumed_rows[i]["step"] == i + 1);
        CHECK(resumed_rows[i]["loss"] == straight_rows[i]["loss"]);
        CHECK(resumed_rows[i]["grad_norm"] == straight_rows[i]["grad_norm"]);
        CHECK(resumed_rows[i]["val_loss"].is_null() == (i != 1 && i != 3));  // each run validates at its end
    }
    const auto first_row = nlohmann::ordered_json::parse(lines_of(read_file(folder / "straight.jsonl"))[0]);
    std::vector<std::string> keys;
    for (const auto& [key, value] : first_row.items()) keys.push_back(key);
    CHECK(keys == std::vector<std::string>{"step", "loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"});

    // Continuing needs the same options, and steps left to take.
    const Run other_lr = train(folder.path(), with(common, {"--out", resumed.string(), "--steps", "6", "--resume", "--lr", "1e-3"}));
    CHECK(other_lr.exit_code == 2);
    CHECK_THAT(other_lr.err, Catch::Contains("option \"learning_rate\"") && Catch::Contains("resume with the same options"));
    const Run done = train(folder.path(), with(common, {"--out", resumed.string(), "--steps", "4", "--resume"}));
    CHECK(done.exit_code == 2);
    CHECK_THAT(done.err, Catch::Contains("has already taken 4 steps"));
}

namespace {

// Starts loom_train in the background with its output in `output`, SIGINT and SIGTERM at
// their default (whatever this process does with them).
pid_t start_train(const std::vector<std::string>& arguments, const fs::path& output) {
    std::vector<std::string> words = {LOOM_TRAIN_BINARY};
    words.insert(words.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv;
    for (std::string& word : words) argv.push_back(word.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    const int status = posix_spawn(&pid, argv[0], &actions, &attributes, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    REQUIRE(status == 0);
    return pid;
}

// The exit code, or -1 after `seconds` (the process is then killed) or on a signal death.
int wait_for_exit(pid_t pid, double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (std::chrono::steady_clock::now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

}  // namespace

TEST_CASE("loom_train: SIGINT ends the step, saves a checkpoint and exits 0", "[train][cli][signal]") {
    loom::testing::ScratchFolder folder("train-cli-signal");
    const fs::path model = write_model(folder / "model");
    const fs::path text = write_text(folder / "cats.txt");
    const fs::path out = folder / "out", log = folder / "steps.jsonl", output = folder / "output.txt";
    const pid_t pid = start_train({"--model", model.string(), "--data", text.string(), "--out", out.string(), "--steps", "100000",
                                   "--seq-len", "16", "--batch", "2", "--threads", "2", "--log", log.string()},
                                  output);
    // Wait for the first logged step.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool stepped = false;
    while (!stepped && std::chrono::steady_clock::now() < deadline) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) FAIL("loom_train exited early:\n" << read_file(output));
        stepped = read_file(log).find("\n") != std::string::npos;
        if (!stepped) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!stepped) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        FAIL("no step logged in 30 s:\n" << read_file(output));
    }
    REQUIRE(kill(pid, SIGINT) == 0);
    const int exit_code = wait_for_exit(pid, 30.0);
    const std::string printed = read_file(output);
    INFO(printed);
    CHECK(exit_code == 0);
    CHECK_THAT(printed, Catch::Contains("loom_train: SIGINT: stopping after step "));
    CHECK_THAT(printed, Catch::Contains("loom_train: stopped: "));

    // The checkpoint is of the last logged step, and loads.
    const auto rows = jsonl_rows(log);
    REQUIRE(!rows.empty());
    const std::size_t last_step = rows.back()["step"];
    CHECK(rows.size() == last_step);
    const auto state = loom::io::TensorStore::open(out / "training_state.safetensors");
    CHECK(state.metadata().at("step") == std::to_string(last_step));
    const auto reloaded = loom::models::load_model(out.string());
    CHECK(reloaded.config().num_hidden_layers == 2);
}

TEST_CASE("loom_train: a bad command gives one line naming the culprit and exit code 2, before any work", "[train][cli][errors]") {
    loom::testing::ScratchFolder folder("train-cli-errors");
    const fs::path model = write_model(folder / "model");
    const fs::path text = write_text(folder / "cats.txt");
    write_file(folder / "empty.txt", "");
    write_file(folder / "a-file", "not a folder");
    loom::models::write_synthetic_model(folder / "no-tokenizer", loom::models::synthetic_preset("tiny-llama"));
    const fs::path out = folder / "out";
    const std::vector<std::string> base = {"--model", model.string(), "--data", text.string(), "--out", out.string(), "--seq-len", "16",
                                           "--batch", "2"};
    struct Case {
        std::vector<std::string> arguments;
        std::vector<std::string> fragments;
    };
    const std::vector<Case> cases = {
        {{"--model", model.string(), "--out", out.string()}, {"--data is required"}},
        {{"--data", text.string(), "--out", out.string()}, {"--model is required"}},
        {{"--model", model.string(), "--data", text.string()}, {"--out is required"}},
        {with(base, {"--bogus", "1"}), {"unknown option '--bogus'"}},
        {with(base, {"--steps", "ten"}), {"--steps", "'ten'"}},
        {with(base, {"--lr", "fast"}), {"--lr", "'fast'"}},
        {with(base, {"--clip"}), {"--clip needs a value"}},
        {{"--model", model.string(), "--data", (folder / "empty.txt").string(), "--out", out.string()}, {(folder / "empty.txt").string(), "empty"}},
        {{"--model", model.string(), "--data", (folder / "absent.txt").string(), "--out", out.string()}, {(folder / "absent.txt").string(), "does not exist"}},
        {with(base, {"--seq-len", "4096"}), {"--seq-len 4096", "context of 2048"}},
        {with(base, {"--resume"}), {"--resume", "training_state.safetensors"}},
        {{"--model", model.string(), "--data", text.string(), "--out", (folder / "a-file" / "out").string()}, {"--out", (folder / "a-file" / "out").string()}},
        {{"--model", (folder / "no-tokenizer").string(), "--data", text.string(), "--out", out.string()}, {"no tokenizer", "no-tokenizer"}},
        {with(base, {"--batch", "100"}), {"batch size 100"}},
    };
    for (const Case& c : cases) {
        const Run run = train(folder.path(), c.arguments);
        INFO("arguments: " << nlohmann::json(c.arguments).dump() << "\nstdout: " << run.out << "\nstderr: " << run.err);
        CHECK(run.exit_code == 2);
        CHECK(run.err.rfind("loom_train: error: ", 0) == 0);
        CHECK(std::count(run.err.begin(), run.err.end(), '\n') == 1);
        for (const std::string& fragment : c.fragments) CHECK_THAT(run.err, Catch::Contains(fragment));
        CHECK(run.out.empty());
        CHECK_FALSE(fs::exists(out));  // --out is created only for a run that starts, or left empty and removed
    }
}

TEST_CASE("loom_train: a non-finite loss stops the run with exit code 1 and saves nothing over the checkpoint", "[train][cli][errors]") {
    loom::testing::ScratchFolder folder("train-cli-nan");
    const fs::path model = write_model(folder / "model");
    const fs::path text = write_text(folder / "cats.txt");
    const fs::path out = folder / "out";
    // A learning rate this size sends the weights to infinity in the first update.
    const Run run = train(folder.path(), {"--model", model.string(), "--data", text.string(), "--out", out.string(), "--steps", "4",
                                          "--seq-len", "16", "--batch", "2", "--lr", "1e30", "--schedule", "constant", "--clip", "0"});
    INFO(run.out << run.err);
    CHECK(run.exit_code == 1);
    CHECK_THAT(run.err, Catch::Contains("loom_train: error: step ") && Catch::Contains("not finite") &&
                            Catch::Contains("the step was not applied") && Catch::Contains("nothing was saved"));
    CHECK_FALSE(fs::exists(out / "model.safetensors"));
    CHECK_FALSE(fs::exists(out / "training_state.safetensors"));
}
