#pragma once
// loom_serve's logic: arguments, start-up, and a clean shutdown on SIGINT/SIGTERM.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/thread_pool.hpp"
#include "loom/generate/command_line.hpp"
#include "loom/models/load.hpp"
#include "loom/serve/engine.hpp"
#include "loom/serve/http.hpp"
#include "loom/serve/server.hpp"
#include "loom/tokenizer/load.hpp"

namespace loom::serve {

struct ServeCommand {
    std::string model;  // empty: the built-in model
    std::string alias;  // the model's name in the API; default from --model
    std::string host = "127.0.0.1";
    unsigned short port = 8080;
    std::size_t threads = default_thread_count();
    std::size_t parallel = 4;
    std::size_t context = 0;  // 0: the model's
    std::size_t queue = 64;
    std::size_t batch = 512;
    std::size_t timeout_seconds = 600;
    std::size_t body_limit = 8u << 20;
    std::string api_key;
    std::string cors_origin = "*";
    bool training = true;
    bool prompt_cache = true;
    std::size_t train_wait_seconds = 30;
    FileAccess weights = FileAccess::read;
    DType cache_dtype = DType::f32;
    bool help = false;
};

inline const char* serve_usage() {
    return "usage: loom_serve [--model DIR|Org/Name] [--host ADDR] [--port N] [--threads N] [--parallel N]\n"
           "                  [--ctx-size N] [--api-key KEY] [--cors-origin ORIGIN] [--alias NAME]\n"
           "                  [--queue N] [--batch-size N] [--timeout SECONDS] [--body-limit BYTES]\n"
           "                  [--no-train] [--train-wait SECONDS] [--no-prompt-cache] [--mmap]\n"
           "                  [--cache-type f32|f16]\n"
           "\n"
           "  --model        a model folder or an Org/Name id in the Hugging Face cache; without it, the\n"
           "                 small built-in model (token ids only: it has no tokenizer)\n"
           "  --host         address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)\n"
           "  --port         port (default 8080; 0 picks a free one, printed at start-up)\n"
           "  --threads      worker threads of the model (default: all cores)\n"
           "  --parallel     slots: requests decoded together in one batch (default 4)\n"
           "  --ctx-size     positions per request, prompt and reply (default: the model's)\n"
           "  --api-key      require 'Authorization: Bearer KEY' or 'X-Api-Key: KEY' (not on /health and the UI)\n"
           "  --cors-origin  Access-Control-Allow-Origin of every response (default *, as the old Loom demo\n"
           "                 expects; an empty string sends none)\n"
           "  --alias        the model name clients send as \"model\" (default: --model as given)\n"
           "  --queue        requests that may wait for a slot; beyond, 503 with Retry-After (default 64)\n"
           "  --batch-size   prompt tokens per step, so running streams keep flowing (default 512)\n"
           "  --timeout      seconds a request may take, waiting included (default 600)\n"
           "  --body-limit   largest request body in bytes; beyond, 413 (default 8 MiB)\n"
           "  --no-train     refuse POST /api/train (403); by default it trains the served weights in memory\n"
           "                 (an f32 copy, made on the first run) and later requests use them\n"
           "  --train-wait   seconds a generation request waits for a training run; beyond, 503 (default 30)\n"
           "  --no-prompt-cache  run every prompt in full; by default a prompt starts from the longest start\n"
           "                 of it that a finished request's KV cache holds (the same tokens either way)\n"
           "  --mmap         map the weight files instead of reading them into memory: starts at once and\n"
           "                 shares the page cache, but decoding may be less steady (docs/performance.md)\n"
           "  --cache-type   KV cache elements: f32 (default) or f16 (half the memory and cache reads)\n";
}

inline ServeCommand parse_serve_arguments(const std::vector<std::string>& arguments) {
    using generate::detail::parse_integer;
    ServeCommand command;
    auto positive = [](const std::string& flag, std::size_t value, std::size_t maximum) {
        if (value == 0 || value > maximum) throw argument_error(flag + " must be in 1.." + std::to_string(maximum));
        return value;
    };
    for (std::size_t i = 0; i < arguments.size(); ++i) {
        const std::string& flag = arguments[i];
        if (flag == "--help" || flag == "-h") {
            command.help = true;
            continue;
        }
        if (flag == "--no-train") {
            command.training = false;
            continue;
        }
        if (flag == "--no-prompt-cache") {
            command.prompt_cache = false;
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
        else if (flag == "--alias") command.alias = value;
        else if (flag == "--host") command.host = value;
        else if (flag == "--port") command.port = parse_integer<unsigned short>(flag, value);
        else if (flag == "--threads") command.threads = positive(flag, parse_integer<std::size_t>(flag, value), 1024);
        else if (flag == "--parallel") command.parallel = positive(flag, parse_integer<std::size_t>(flag, value), 256);
        else if (flag == "--ctx-size") command.context = positive(flag, parse_integer<std::size_t>(flag, value), std::size_t(1) << 24);
        else if (flag == "--queue") command.queue = parse_integer<std::size_t>(flag, value);
        else if (flag == "--batch-size") command.batch = positive(flag, parse_integer<std::size_t>(flag, value), 1u << 20);
        else if (flag == "--timeout") command.timeout_seconds = positive(flag, parse_integer<std::size_t>(flag, value), 1u << 24);
        else if (flag == "--body-limit") command.body_limit = positive(flag, parse_integer<std::size_t>(flag, value), std::size_t(1) << 32);
        else if (flag == "--train-wait") command.train_wait_seconds = parse_integer<std::size_t>(flag, value);
        else if (flag == "--api-key") command.api_key = value;
        else if (flag == "--cors-origin") command.cors_origin = value;
        else if (flag == "--cache-type") command.cache_dtype = nn::parse_cache_dtype(flag, value);
        else throw argument_error("unknown option '" + flag + "' (see --help)");
    }
    return command;
}

inline std::string model_id_for(const ServeCommand& command) {
    if (!command.alias.empty()) return command.alias;
    if (command.model.empty()) return "loom-builtin";
    const std::filesystem::path path(command.model);
    if (std::filesystem::is_directory(path)) {
        const auto name = std::filesystem::absolute(path).lexically_normal().filename().string();
        if (!name.empty()) return name;
        return std::filesystem::absolute(path).lexically_normal().parent_path().filename().string();
    }
    return command.model;  // an Org/Name id
}

// Runs loom_serve until SIGINT or SIGTERM; returns the exit code.
inline int run_serve(const std::vector<std::string>& arguments, const StaticAssets& assets, std::ostream& out,
                     std::ostream& err) {
    try {
        const ServeCommand command = parse_serve_arguments(arguments);
        if (command.help) {
            out << serve_usage();
            return 0;
        }
        // Signals are taken by one thread with sigwait; every thread started from here on
        // inherits the mask.
        sigset_t signals;
        sigemptyset(&signals);
        sigaddset(&signals, SIGINT);
        sigaddset(&signals, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);
        ::signal(SIGPIPE, SIG_IGN);  // a client that left shows up as a failed write

        models::LoadedModel model =
            command.model.empty() ? models::load_default_model() : models::load_model(command.model, command.weights);
        model.network->set_cache_dtype(command.cache_dtype);
        std::unique_ptr<tokenizer::Tokenizer> text_tokenizer;
        if (!model.folder.empty() && tokenizer::has_tokenizer(model.folder)) text_tokenizer = tokenizer::load_tokenizer(model.folder);

        EngineOptions engine_options;
        engine_options.slots = command.parallel;
        engine_options.context = command.context;
        engine_options.queue_limit = command.queue;
        engine_options.threads = command.threads;
        engine_options.prefill_chunk = command.batch;
        engine_options.timeout = std::chrono::seconds(command.timeout_seconds);
        engine_options.training = command.training;
        engine_options.prompt_cache = command.prompt_cache;
        engine_options.training_wait = std::chrono::seconds(command.train_wait_seconds);
        Engine engine(model, text_tokenizer.get(), engine_options);

        ServerOptions server_options;
        server_options.model_id = model_id_for(command);
        server_options.api_key = command.api_key;
        server_options.cors_origin = command.cors_origin;
        Server server(model, text_tokenizer.get(), engine, server_options, assets);

        HttpLimits limits;
        limits.body_bytes = command.body_limit;
        HttpServer http_server(
            command.host, command.port, [&](const HttpRequest& request, Responder& responder) { server.handle(request, responder); },
            [&](http::status status, const std::string& message) { return server.reject(status, message); }, limits);

        const std::string url = "http://" + (command.host.find(':') != std::string::npos ? "[" + command.host + "]" : command.host) +
                                ":" + std::to_string(http_server.port());
        out << "loom_serve: model " << server_options.model_id << " (" << model.config().num_hidden_layers << " layers, "
            << engine.context() << " positions), " << command.parallel << " slots, " << command.threads << " threads\n"
            << "loom_serve: listening on " << url << " — open " << url << "/ in a browser; OpenAI API at " << url << "/v1\n"
            << std::flush;

        int received = 0;
        std::thread signal_waiter([&] {
            sigwait(&signals, &received);
            http_server.stop();
        });
        http_server.run();
        out << "loom_serve: " << (received == SIGINT ? "SIGINT" : received == SIGTERM ? "SIGTERM" : "stop")
            << ": finishing open streams\n" << std::flush;
        engine.stop();  // every running request gets its last event
        if (!http_server.wait_for_connections(std::chrono::seconds(10))) err << "loom_serve: some connections did not close in 10 s\n";
        signal_waiter.join();
        out << "loom_serve: stopped\n";
        return 0;
    } catch (const argument_error& failure) {
        err << "loom_serve: error: " << failure.what() << "\n";
        return 2;
    } catch (const std::exception& failure) {
        err << "loom_serve: error: " << failure.what() << "\n";
        return 1;
    }
}

}  // namespace loom::serve
