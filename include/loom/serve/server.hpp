#pragma once
// What loom_serve answers: the routes of the old Loom protocols (backend /generate, web
// front end /generate_stream, verification demo /api/*), the OpenAI-compatible /v1 API,
// and the operational endpoints (/health, /metrics, /props, /tokenize, /detokenize, the
// web UI, the model's files). Requests become CompletionRequests for the Engine; each
// protocol writes the Engine's events in its own shape.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/chat/chat_template.hpp"
#include "loom/serve/api.hpp"
#include "loom/serve/engine.hpp"
#include "loom/serve/http.hpp"

namespace loom::serve {

struct StaticAsset {
    std::string_view content;
    std::string_view content_type;
};
// The web UI's files by name ("index.html", "app.js", ...), served under /web/.
using StaticAssets = std::map<std::string, StaticAsset, std::less<>>;

struct ServerOptions {
    std::string model_id = "loom";        // the name clients pass as "model"
    std::string api_key;                  // empty: no authentication
    std::string cors_origin = "*";        // Access-Control-Allow-Origin on every response
    std::size_t default_max_tokens = 0;   // chat and old protocols without a limit; 0: up to the context
};

namespace detail {

inline std::string percent_decode(std::string_view text, bool plus_is_space) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        auto hex = [](char digit) -> int {
            if (digit >= '0' && digit <= '9') return digit - '0';
            if (digit >= 'a' && digit <= 'f') return digit - 'a' + 10;
            if (digit >= 'A' && digit <= 'F') return digit - 'A' + 10;
            return -1;
        };
        if (c == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 && hex(text[i + 2]) >= 0) {
            out += char(hex(text[i + 1]) * 16 + hex(text[i + 2]));
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out += ' ';
        } else {
            out += c;
        }
    }
    return out;
}

// The query string of a target as a JSON object of strings (the last value of a repeated key wins).
inline json query_fields(std::string_view target) {
    json fields = json::object();
    const std::size_t question = target.find('?');
    if (question == std::string_view::npos) return fields;
    std::string_view query = target.substr(question + 1);
    while (!query.empty()) {
        const std::size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const std::size_t equals = pair.find('=');
        const std::string key = percent_decode(pair.substr(0, equals), true);
        if (!key.empty()) fields[key] = equals == std::string_view::npos ? "" : percent_decode(pair.substr(equals + 1), true);
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
    }
    return fields;
}

// Forwards to another Responder and remembers the status sent, for /metrics.
class StatusRecorder final : public Responder {
public:
    explicit StatusRecorder(Responder& inner) : inner_(inner) {}
    void send(HttpResponse response) override {
        status = response.result_int();
        inner_.send(std::move(response));
    }
    void send_file(http::response<http::file_body> response) override {
        status = response.result_int();
        inner_.send_file(std::move(response));
    }
    bool begin_stream(http::response<http::empty_body> header) override {
        status = header.result_int();
        return inner_.begin_stream(std::move(header));
    }
    bool write(std::string_view chunk) override { return inner_.write(chunk); }
    void end_stream() override { inner_.end_stream(); }
    bool client_gone() override { return inner_.client_gone(); }

    unsigned status = 0;

private:
    Responder& inner_;
};

}  // namespace detail

class Server {
public:
    Server(const models::LoadedModel& model, const tokenizer::Tokenizer* text_tokenizer, Engine& engine, ServerOptions options,
           StaticAssets assets = {})
        : model_(model), tokenizer_(text_tokenizer), engine_(engine), options_(std::move(options)), assets_(std::move(assets)),
          id_seed_(std::random_device{}()) {
        if (!model_.folder.empty() && text_tokenizer) {
            chat_template_ = chat::load_chat_template(model_.folder);
            if (chat_template_) chat_special_tokens_ = chat::chat_template_special_tokens(model_.folder);
        }
    }

    const ServerOptions& options() const noexcept { return options_; }

    void handle(const HttpRequest& request, Responder& responder) {
        detail::StatusRecorder recorder(responder);
        const std::string path = route_path(request);
        const std::string label = route(request, path, recorder);
        std::lock_guard lock(metrics_mutex_);
        ++requests_[label][recorder.status];
    }

    // The answer to a request the transport could not read.
    HttpResponse reject(http::status status, const std::string& message) const {
        return json_response(status, json{{"error", error_object(ApiError{status, message, {}, {}, error_type(status)})}});
    }

    std::string metrics_text() const {
        const EngineStats stats = engine_.stats();
        std::ostringstream out;
        auto metric = [&](const char* name, const char* type, const char* help, double value) {
            out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n' << name << ' ' << value << '\n';
        };
        out << "# HELP loom_http_requests_total HTTP requests answered, by route and status.\n"
               "# TYPE loom_http_requests_total counter\n";
        {
            std::lock_guard lock(metrics_mutex_);
            for (const auto& [route, statuses] : requests_) {
                for (const auto& [status, count] : statuses) {
                    out << "loom_http_requests_total{route=\"" << route << "\",status=\"" << status << "\"} " << count << '\n';
                }
            }
        }
        metric("loom_requests_finished_total", "counter", "Generation requests that finished (stop or length).", double(stats.requests_finished));
        metric("loom_requests_failed_total", "counter", "Generation requests that ended with an error.", double(stats.requests_failed));
        metric("loom_requests_cancelled_total", "counter", "Generation requests whose client went away.", double(stats.requests_cancelled));
        metric("loom_kv_caches_reused_total", "counter", "Requests that started in the KV cache of a finished one.", double(stats.caches_reused));
        metric("loom_prompt_tokens_total", "counter", "Prompt tokens processed.", double(stats.prompt_tokens));
        metric("loom_prompt_tokens_cached_total", "counter", "Prompt tokens found in a kept KV cache, not processed again.",
               double(stats.prompt_tokens_cached));
        metric("loom_tokens_generated_total", "counter", "Tokens generated.", double(stats.generated_tokens));
        metric("loom_prompt_seconds_total", "counter", "Step time spent on prompt tokens.", stats.prompt_seconds);
        metric("loom_generate_seconds_total", "counter", "Step time spent on generated tokens.", stats.generate_seconds);
        metric("loom_prompt_tokens_per_second", "gauge", "Prefill throughput over the server's life.",
               stats.prompt_seconds > 0 ? double(stats.prompt_tokens) / stats.prompt_seconds : 0.0);
        metric("loom_decode_tokens_per_second", "gauge", "Aggregate decode throughput over the server's life (all slots).",
               stats.generate_seconds > 0 ? double(stats.generated_tokens) / stats.generate_seconds : 0.0);
        metric("loom_steps_total", "counter", "Batched forward passes.", double(stats.steps));
        metric("loom_training_runs_total", "counter", "POST /api/train runs started.", double(stats.training_runs));
        metric("loom_training_steps_total", "counter", "Optimizer steps taken by /api/train runs.", double(stats.training_steps));
        metric("loom_queue_depth", "gauge", "Requests waiting for a slot.", double(stats.queued));
        metric("loom_slots_busy", "gauge", "Slots running a request.", double(stats.busy_slots));
        metric("loom_slots_total", "gauge", "Slots (requests decoded together).", double(stats.slots));
        return out.str();
    }

private:
    enum class Style { openai, legacy };

    static std::string route_path(const HttpRequest& request) {
        const std::string_view target = std_view(request.target());
        return std::string(target.substr(0, target.find('?')));
    }

    // One endpoint: a method, and a path matched exactly or (prefix) as its start. The
    // path is also the endpoint's label in /metrics.
    struct Route {
        http::verb method;
        std::string_view path;
        bool prefix;
        bool open;  // reachable without the API key
        void (Server::*answer)(const HttpRequest&, std::string_view rest, Responder&);
    };

    static const std::vector<Route>& routes() {
        using verb = http::verb;
        static const std::vector<Route> table = {
            {verb::get, "/", false, true, &Server::get_root},
            {verb::get, "/web", false, true, &Server::get_root},
            {verb::get, "/web/", true, true, &Server::get_asset},
            {verb::get, "/health", false, true, &Server::get_health},
            {verb::get, "/models/", true, false, &Server::get_model_file},
            {verb::get, "/api/status", false, false, &Server::get_status},
            {verb::get, "/api/generate", false, false, &Server::get_demo_generate},
            {verb::post, "/api/train", false, false, &Server::post_train},
            {verb::get, "/metrics", false, false, &Server::get_metrics},
            {verb::get, "/props", false, false, &Server::get_props},
            {verb::post, "/tokenize", false, false, &Server::post_tokenize},
            {verb::post, "/detokenize", false, false, &Server::post_detokenize},
            {verb::post, "/generate", false, false, &Server::post_generate},
            {verb::post, "/generate_stream", false, false, &Server::post_generate_stream},
            {verb::get, "/v1/models", false, false, &Server::get_models},
            {verb::post, "/v1/completions", false, false, &Server::post_completions},
            {verb::post, "/v1/chat/completions", false, false, &Server::post_chat_completions},
        };
        return table;
    }

    // Dispatches; returns the route's label for /metrics.
    std::string route(const HttpRequest& request, const std::string& path, Responder& responder) {
        const Style style = path.rfind("/v1/", 0) == 0 ? Style::openai : Style::legacy;
        const Route* match = nullptr;
        bool other_method = false;
        for (const Route& candidate : routes()) {
            const bool path_matches = candidate.prefix ? path.rfind(candidate.path, 0) == 0 : path == candidate.path;
            if (!path_matches) continue;
            if (candidate.method == request.method()) match = &candidate;
            else other_method = true;
        }
        try {
            if (request.method() == http::verb::options) {
                preflight(responder);
                return "OPTIONS";
            }
            if (!match) {
                if (other_method) {
                    throw ApiError{http::status::method_not_allowed,
                                   std::string(request.method_string()) + " is not allowed on " + path, {}, "method_not_allowed"};
                }
                send_error(responder, ApiError{http::status::not_found, "no such endpoint: " + path, {}, "not_found", "not_found_error"}, style);
                return "unknown";  // one label for every unknown path, so clients cannot grow /metrics
            }
            if (!match->open) authenticate(request);
            (this->*match->answer)(request, std::string_view(path).substr(match->path.size()), responder);
        } catch (const ApiError& failure) {
            send_error(responder, failure, style);
        } catch (const std::exception& failure) {
            send_error(responder, ApiError{http::status::internal_server_error, failure.what(), {}, {}, "server_error"}, style);
        }
        return match ? std::string(match->path) : path;
    }

    // The endpoints' entry points, as the route table calls them.
    void get_root(const HttpRequest&, std::string_view, Responder& responder) { redirect(responder, "/web/"); }
    void get_asset(const HttpRequest&, std::string_view name, Responder& responder) { serve_asset(std::string(name), responder); }
    void get_health(const HttpRequest&, std::string_view, Responder& responder) { send_json(responder, health()); }
    void get_model_file(const HttpRequest&, std::string_view name, Responder& responder) { serve_model_file(std::string(name), responder); }
    void get_status(const HttpRequest&, std::string_view, Responder& responder) { send_json(responder, status()); }
    void get_metrics(const HttpRequest&, std::string_view, Responder& responder) {
        send_text(responder, metrics_text(), "text/plain; version=0.0.4");
    }
    void get_props(const HttpRequest&, std::string_view, Responder& responder) { send_json(responder, props()); }
    void get_models(const HttpRequest&, std::string_view, Responder& responder) { send_json(responder, models_list()); }
    void post_tokenize(const HttpRequest& request, std::string_view, Responder& responder) {
        send_json(responder, tokenize(parse_json_body(request.body())));
    }
    void post_detokenize(const HttpRequest& request, std::string_view, Responder& responder) {
        send_json(responder, detokenize(parse_json_body(request.body())));
    }
    void post_generate(const HttpRequest& request, std::string_view, Responder& responder) {
        legacy_generate(parse_json_body(request.body()), responder);
    }
    void post_generate_stream(const HttpRequest& request, std::string_view, Responder& responder) {
        generate_stream(parse_json_body(request.body()), responder);
    }
    void get_demo_generate(const HttpRequest& request, std::string_view, Responder& responder) {
        demo_generate(detail::query_fields(std_view(request.target())), responder);
    }
    void post_train(const HttpRequest& request, std::string_view, Responder& responder) {
        demo_train(parse_json_body(request.body()), responder);
    }
    void post_completions(const HttpRequest& request, std::string_view, Responder& responder) {
        openai_completion(parse_json_body(request.body()), false, responder);
    }
    void post_chat_completions(const HttpRequest& request, std::string_view, Responder& responder) {
        openai_completion(parse_json_body(request.body()), true, responder);
    }

    // ---- responses -----------------------------------------------------------------

    HttpResponse json_response(http::status status, const json& body) const {
        HttpResponse response(status, 11);
        response.set(http::field::content_type, "application/json");
        response.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
        add_common_headers(response);
        return response;
    }

    template <typename Message>
    void add_common_headers(Message& message) const {
        message.set(http::field::server, "loom_serve");
        if (!options_.cors_origin.empty()) message.set(http::field::access_control_allow_origin, options_.cors_origin);
    }

    void send_json(Responder& responder, const json& body, http::status status = http::status::ok) const {
        responder.send(json_response(status, body));
    }

    void send_text(Responder& responder, std::string text, std::string_view content_type) const {
        HttpResponse response(http::status::ok, 11);
        response.set(http::field::content_type, beast_view(content_type));
        response.body() = std::move(text);
        add_common_headers(response);
        responder.send(std::move(response));
    }

    void redirect(Responder& responder, const char* location) const {
        HttpResponse response(http::status::found, 11);
        response.set(http::field::location, location);
        add_common_headers(response);
        responder.send(std::move(response));
    }

    void preflight(Responder& responder) const {
        HttpResponse response(http::status::no_content, 11);
        add_common_headers(response);
        response.set(http::field::access_control_allow_methods, "GET, POST, OPTIONS");
        response.set(http::field::access_control_allow_headers, "Content-Type, Authorization, X-Api-Key");
        response.set(http::field::access_control_max_age, "86400");
        responder.send(std::move(response));
    }

    static const char* error_type(http::status status) {
        switch (status) {
            case http::status::unauthorized: return "authentication_error";
            case http::status::not_found: return "not_found_error";
            case http::status::service_unavailable: return "overloaded_error";
            case http::status::internal_server_error: return "server_error";
            default: return "invalid_request_error";
        }
    }

    static json error_object(const ApiError& failure) {
        return {{"message", failure.message},
                {"type", failure.type},
                {"param", failure.param.empty() ? json(nullptr) : json(failure.param)},
                {"code", failure.code.empty() ? json(nullptr) : json(failure.code)}};
    }

    void send_error(Responder& responder, const ApiError& failure, Style style) const {
        const json body = style == Style::openai ? json{{"error", error_object(failure)}} : json{{"error", failure.message}};
        HttpResponse response = json_response(failure.status, body);
        if (failure.status == http::status::service_unavailable) response.set(http::field::retry_after, "1");
        if (failure.status == http::status::unauthorized) response.set(http::field::www_authenticate, "Bearer");
        responder.send(std::move(response));
    }

    void authenticate(const HttpRequest& request) const {
        if (options_.api_key.empty()) return;
        const std::string_view bearer = std_view(request[http::field::authorization]);
        const std::string_view header_key = std_view(request["X-Api-Key"]);
        if (bearer == "Bearer " + options_.api_key || header_key == options_.api_key) return;
        throw ApiError{http::status::unauthorized,
                       bearer.empty() && header_key.empty() ? "an API key is required: send 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'"
                                                            : "the API key is not valid",
                       {}, "invalid_api_key", "authentication_error"};
    }

    // ---- static files --------------------------------------------------------------

    void serve_asset(std::string name, Responder& responder) const {
        if (name.empty()) name = "index.html";
        const auto asset = assets_.find(name);
        if (asset == assets_.end()) throw ApiError{http::status::not_found, "no such file: /web/" + name, {}, "not_found", "not_found_error"};
        HttpResponse response(http::status::ok, 11);
        response.set(http::field::content_type, beast_view(asset->second.content_type));
        response.set(http::field::cache_control, "no-cache");
        response.body() = std::string(asset->second.content);
        add_common_headers(response);
        responder.send(std::move(response));
    }

    // The model folder's own files, by exact name: only regular files directly in the
    // folder are reachable, so no path can lead outside it. (Hugging Face cache snapshots
    // are symlinks into the blob store; they are followed because they are listed.)
    void serve_model_file(const std::string& encoded_name, Responder& responder) const {
        if (model_.folder.empty()) throw ApiError{http::status::not_found, "the built-in model has no files", {}, "not_found", "not_found_error"};
        const std::string name = detail::percent_decode(encoded_name, false);
        if (name.empty()) {
            json files = json::array();
            for (const auto& entry : std::filesystem::directory_iterator(model_.folder)) {
                if (entry.is_regular_file()) files.push_back(entry.path().filename().string());
            }
            std::sort(files.begin(), files.end());
            return send_json(responder, {{"model", options_.model_id}, {"files", files}});
        }
        for (const auto& entry : std::filesystem::directory_iterator(model_.folder)) {
            if (entry.path().filename().string() != name || !entry.is_regular_file()) continue;
            http::response<http::file_body> response(http::status::ok, 11);
            boost::beast::error_code failure;
            response.body().open(entry.path().c_str(), boost::beast::file_mode::scan, failure);
            if (failure) throw ApiError{http::status::internal_server_error, "cannot read " + name + ": " + failure.message(), {}, {}, "server_error"};
            const bool is_json = name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0;
            response.set(http::field::content_type, is_json ? "application/json" : "application/octet-stream");
            add_common_headers(response);
            return responder.send_file(std::move(response));
        }
        throw ApiError{http::status::not_found, "the model has no file named '" + name + "'", {}, "not_found", "not_found_error"};
    }

    // ---- information -----------------------------------------------------------------

    json health() const {
        const auto& config = model_.config();
        const EngineStats stats = engine_.stats();
        return {{"status", "ok"},
                {"model", options_.model_id},
                {"hidden_size", config.hidden_size},
                {"vocab_size", config.vocab_size},
                {"num_layers", config.num_hidden_layers},
                {"slots_idle", stats.slots - stats.busy_slots},
                {"slots_busy", stats.busy_slots}};
    }

    json status() const {
        const auto& config = model_.config();
        return {{"ready", true}, {"hiddenSize", config.hidden_size}, {"vocabSize", config.vocab_size},
                {"layers", config.num_hidden_layers}, {"model", options_.model_id}};
    }

    json props() const {
        return {{"model", options_.model_id},
                {"model_path", model_.folder.string()},
                {"n_ctx", engine_.context()},
                {"total_slots", engine_.options().slots},
                {"has_tokenizer", tokenizer_ != nullptr},
                {"has_chat_template", chat_template_.has_value()},
                {"chat_template", chat_template_ ? json(*chat_template_) : json(nullptr)},
                {"default_generation_settings",
                 {{"temperature", 0.7}, {"top_p", 1.0}, {"max_tokens", 256}, {"seed", nullptr}}}};
    }

    json models_list() const {
        return {{"object", "list"},
                {"data", json::array({{{"id", options_.model_id},
                                       {"object", "model"},
                                       {"created", started_},
                                       {"owned_by", "loom"},
                                       {"context_length", engine_.context()}}})}};
    }

    const tokenizer::Tokenizer& require_tokenizer() const {
        if (!tokenizer_) throw bad_request("the model has no tokenizer (tokenizer.json, vocab.json + merges.txt or tokenizer.model); send token ids");
        return *tokenizer_;
    }

    json tokenize(const json& body) const {
        const Fields fields(body);
        const std::string content = fields.required_text("content");
        const bool add_special = fields.boolean("add_special", false);
        const auto ids = require_tokenizer().encode(content, tokenizer::EncodeOptions{add_special, true});
        json result = {{"tokens", ids}};
        if (fields.boolean("with_pieces", false)) {
            json pieces = json::array();
            for (int id : ids) pieces.push_back({{"id", id}, {"piece", tokenizer_->decode(std::span<const int>(&id, 1))}});
            result["tokens"] = pieces;
        }
        return result;
    }

    json detokenize(const json& body) const {
        const Fields fields(body);
        const auto ids = fields.token_ids("tokens", model_.config().vocab_size);
        return {{"content", require_tokenizer().decode(ids)}};
    }

    // ---- generation: shared --------------------------------------------------------

    std::shared_ptr<Job> submit(CompletionRequest request) {
        try {
            return engine_.submit(std::move(request));
        } catch (const busy_error& failure) {
            throw ApiError{http::status::service_unavailable, failure.what(), {}, "server_busy", "overloaded_error"};
        } catch (const argument_error& failure) {
            const bool too_long = std::string_view(failure.what()).find("context holds") != std::string_view::npos;
            throw bad_request(failure.what(), too_long ? "messages" : "", too_long ? "context_length_exceeded" : "");
        }
    }

    std::size_t max_tokens_default() const {
        return options_.default_max_tokens ? options_.default_max_tokens : engine_.context();
    }

    // Sampling fields every protocol shares; the OpenAI names, with top_k/min_p/
    // repeat_penalty as llama.cpp's server accepts them.
    static generate::SamplingOptions read_sampling(const Fields& fields, double default_temperature) {
        generate::SamplingOptions sampling;
        sampling.temperature = float(fields.number("temperature", default_temperature, 0.0, 2.0));
        sampling.top_p = float(fields.number("top_p", 1.0, 0.0, 1.0));
        if (sampling.top_p == 0.0f) sampling.top_p = 1e-6f;  // "only the top token", as OpenAI treats 0
        sampling.top_k = std::size_t(fields.integer("top_k", 0, 0, 1 << 20));
        sampling.min_p = float(fields.number("min_p", 0.0, 0.0, 1.0));
        sampling.repeat_penalty = float(fields.number("repeat_penalty", 1.0, 1e-3, 100.0));
        sampling.presence_penalty = float(fields.number("presence_penalty", 0.0, -2.0, 2.0));
        sampling.frequency_penalty = float(fields.number("frequency_penalty", 0.0, -2.0, 2.0));
        if (fields.has("seed")) {
            const json& seed = fields.at("seed");
            if (!seed.is_number_integer()) throw bad_request("'seed' must be an integer, got " + seed.dump(), "seed");
            sampling.seed = seed.is_number_unsigned() ? seed.get<std::uint64_t>() : std::uint64_t(seed.get<std::int64_t>());
        } else {
            sampling.seed = std::random_device{}() * 0x9E3779B97F4A7C15ull ^ std::random_device{}();
        }
        return sampling;
    }

    std::vector<int> encode_text(const std::string& text) const { return require_tokenizer().encode(text); }

    http::response<http::empty_body> stream_header() const {
        http::response<http::empty_body> header(http::status::ok, 11);
        header.set(http::field::content_type, "text/event-stream");
        header.set(http::field::cache_control, "no-cache");
        header.set("X-Accel-Buffering", "no");
        add_common_headers(header);
        return header;
    }

    // Delivers the job's events to `on_event` until the last one. Gives up, cancelling
    // the job (its slot is freed at the engine's next step), when the client leaves or a
    // write fails. Returns whether the last event was delivered.
    template <typename OnEvent>
    static bool follow(Job& job, Responder& responder, OnEvent&& on_event) {
        while (true) {
            std::optional<Event> event = job.next_event(std::chrono::milliseconds(20));
            if (responder.client_gone()) {
                job.cancel();
                return false;
            }
            if (!event) continue;
            const bool last = event->ends_job();
            if (!on_event(*event)) {
                job.cancel();
                return false;
            }
            if (last) return true;
        }
    }

    // A non-streamed answer: follows the job to its end, handing each event to `on_event`,
    // and returns the last one. Nothing when the client left, or when the request failed
    // (answered here with a 500 in the protocol's error shape).
    template <typename OnEvent>
    std::optional<Event> collect(Job& job, Responder& responder, Style style, OnEvent&& on_event) const {
        std::optional<Event> last;
        const bool delivered = follow(job, responder, [&](const Event& event) {
            on_event(event);
            if (event.ends_job()) last = event;
            return true;
        });
        if (!delivered) return std::nullopt;
        if (last->kind == EventKind::failed) {
            send_error(responder, ApiError{http::status::internal_server_error, last->error, {}, {}, "server_error"}, style);
            return std::nullopt;
        }
        return last;
    }

    // ---- old Loom protocols ----------------------------------------------------------

    // POST /generate: the backend's ids protocol ("input_ids") or the web front end's text
    // protocol ("prompt"), told apart by the body.
    void legacy_generate(const json& body, Responder& responder) {
        const Fields fields(body);
        const bool ids = fields.has("input_ids"), text = fields.has("prompt");
        if (ids == text) throw bad_request("POST /generate takes either 'input_ids' (token ids) or 'prompt' (text)");
        if (text) return legacy_text_generate(fields, responder);

        CompletionRequest request;
        request.prompt = fields.token_ids("input_ids", model_.config().vocab_size);
        request.max_tokens = std::size_t(fields.integer("max_new_tokens", 100, 0, std::int64_t(engine_.context())));
        request.sampling = read_sampling(fields, 0.0);
        const bool stream = fields.boolean("stream", false);
        const std::vector<int> prompt = request.prompt;
        auto job = submit(std::move(request));
        if (stream) {
            if (!responder.begin_stream(stream_header())) return job->cancel();
            follow(*job, responder, [&](const Event& event) {
                if (event.kind == EventKind::token) return responder.write(sse_data({{"token", event.token}, {"done", false}}));
                if (event.kind == EventKind::failed) return responder.write(sse_data({{"error", event.error}})) && end(responder);
                return responder.write(sse_data({{"done", true},
                                                 {"finish_reason", generate::finish_reason_name(event.finish_reason)},
                                                 {"timings", timings_json(event.timings)}})) && end(responder);
            });
            return;
        }
        std::vector<int> generated;
        const auto last = collect(*job, responder, Style::legacy, [&](const Event& event) {
            if (event.kind == EventKind::token) generated.push_back(event.token);
        });
        if (!last) return;
        std::vector<int> output = prompt;
        output.insert(output.end(), generated.begin(), generated.end());
        send_json(responder, {{"output_ids", output},
                              {"new_ids", generated},
                              {"finish_reason", generate::finish_reason_name(last->finish_reason)},
                              {"timings", timings_json(last->timings)}});
    }

    static bool end(Responder& responder) {
        responder.end_stream();
        return true;
    }

    CompletionRequest legacy_text_request(const Fields& fields, std::int64_t default_max_tokens) const {
        CompletionRequest request;
        request.prompt = encode_text(fields.required_text("prompt"));
        request.max_tokens = std::size_t(fields.integer("max_tokens", default_max_tokens, 0, std::int64_t(engine_.context())));
        request.sampling = read_sampling(fields, 0.0);
        return request;
    }

    void legacy_text_generate(const Fields& fields, Responder& responder) {
        auto job = submit(legacy_text_request(fields, 50));
        std::string text;
        std::size_t count = 0;
        const auto last = collect(*job, responder, Style::legacy, [&](const Event& event) {
            text += event.text;
            count += event.kind == EventKind::token;
        });
        if (!last) return;
        send_json(responder, {{"generated_text", text},
                              {"num_tokens", count},
                              {"finish_reason", generate::finish_reason_name(last->finish_reason)},
                              {"timings", timings_json(last->timings)}});
    }

    // POST /generate_stream: {prompt, max_tokens} -> {"token": text, "token_id": N} ... {"done": true}.
    void generate_stream(const json& body, Responder& responder) {
        auto job = submit(legacy_text_request(Fields(body), 50));
        if (!responder.begin_stream(stream_header())) return job->cancel();
        std::size_t count = 0;
        follow(*job, responder, [&](const Event& event) {
            if (event.kind == EventKind::token) {
                ++count;
                return responder.write(sse_data({{"token", event.text}, {"token_id", event.token}}));
            }
            if (event.kind == EventKind::failed) return responder.write(sse_data({{"error", event.error}})) && end(responder);
            if (!event.text.empty() && !responder.write(sse_data({{"token", event.text}, {"token_id", nullptr}}))) return false;
            const double seconds = event.timings.time_to_first_token_ms / 1000.0 + event.timings.decode_seconds;
            return responder.write(sse_data({{"done", true},
                                             {"num_tokens", count},
                                             {"elapsed_seconds", seconds},
                                             {"tokens_per_second", seconds > 0 ? double(count) / seconds : 0.0},
                                             {"finish_reason", generate::finish_reason_name(event.finish_reason)},
                                             {"timings", timings_json(event.timings)}})) &&
                   end(responder);
        });
    }

    // GET /api/generate?prompt=&max_tokens=: the verification demo's named events.
    void demo_generate(const json& query, Responder& responder) {
        json body = query;
        if (body.contains("max_tokens")) {
            const std::string value = body["max_tokens"].get<std::string>();
            char* rest = nullptr;
            const long long number = std::strtoll(value.c_str(), &rest, 10);
            if (value.empty() || *rest != '\0') throw bad_request("'max_tokens' must be an integer, got '" + value + "'", "max_tokens");
            body["max_tokens"] = number;
        }
        for (const char* name : {"temperature", "top_p"}) {
            if (!body.contains(name)) continue;
            const std::string value = body[name].get<std::string>();
            char* rest = nullptr;
            const double number = std::strtod(value.c_str(), &rest);
            if (value.empty() || *rest != '\0') throw bad_request(std::string("'") + name + "' must be a number, got '" + value + "'", name);
            body[name] = number;
        }
        const Fields fields(body);
        CompletionRequest request = legacy_text_request(fields, 25);
        const json init = {{"prompt", fields.required_text("prompt")}, {"inputTokens", request.prompt}, {"maxTokens", request.max_tokens}};
        auto job = submit(std::move(request));
        if (!responder.begin_stream(stream_header())) return job->cancel();
        if (!responder.write(sse_event("init", init))) return job->cancel();
        std::size_t step = 0;
        follow(*job, responder, [&](const Event& event) {
            if (event.kind == EventKind::token) {
                return responder.write(sse_event("token", {{"step", step++}, {"tokenId", event.token}, {"tokenText", event.text}, {"done", false}}));
            }
            if (event.kind == EventKind::failed) return responder.write(sse_event("error", {{"error", event.error}})) && end(responder);
            const double elapsed_ms = event.timings.time_to_first_token_ms + event.timings.decode_seconds * 1000.0;
            return responder.write(sse_event("done", {{"totalTokens", step},
                                                      {"elapsedMs", elapsed_ms},
                                                      {"tokensPerSec", elapsed_ms > 0 ? double(step) * 1000.0 / elapsed_ms : 0.0},
                                                      {"finishReason", generate::finish_reason_name(event.finish_reason)},
                                                      {"remainingText", event.text},
                                                      {"timings", timings_json(event.timings)}})) &&
                   end(responder);
        });
    }

    // POST /api/train {text, steps, learningRate}: real optimizer steps on the served
    // weights, streamed as init / step / done events.
    void demo_train(const json& body, Responder& responder) {
        const Fields fields(body);
        const std::string text = fields.required_text("text");
        TrainingRequest request;
        request.tokens = encode_text(text);
        request.steps = std::size_t(fields.integer("steps", 5, 1, 1000));
        request.learning_rate = fields.number("learningRate", 1e-3, 1e-8, 1.0);
        const json init = {{"text", text}, {"tokens", request.tokens.size()}, {"steps", request.steps},
                           {"learningRate", request.learning_rate}};
        std::shared_ptr<Job> job;
        try {
            job = engine_.submit_training(std::move(request));
        } catch (const unsupported_error& failure) {
            throw ApiError{http::status::forbidden, failure.what(), {}, "training_disabled", "permission_error"};
        } catch (const busy_error& failure) {
            throw ApiError{http::status::service_unavailable, failure.what(), {}, "server_busy", "overloaded_error"};
        } catch (const argument_error& failure) {
            throw bad_request(failure.what(), "text");
        }
        if (!responder.begin_stream(stream_header())) return job->cancel();
        if (!responder.write(sse_event("init", init))) return job->cancel();
        follow(*job, responder, [&](const Event& event) {
            if (event.kind == EventKind::training_step) {
                return responder.write(sse_event("step", {{"step", event.step}, {"loss", event.loss}, {"elapsedMs", event.elapsed_ms}}));
            }
            if (event.kind == EventKind::failed) return responder.write(sse_event("error", {{"error", event.error}})) && end(responder);
            return responder.write(sse_event("done", {{"totalSteps", event.step}, {"elapsedMs", event.elapsed_ms}})) && end(responder);
        });
    }

    // ---- OpenAI-compatible ---------------------------------------------------------

    struct OpenAiRequest {
        CompletionRequest completion;
        bool stream = false;
        bool include_usage = false;
    };

    void check_model(const Fields& fields) const {
        const auto model = fields.text("model");
        if (model && *model != options_.model_id) {
            throw bad_request("the model '" + *model + "' does not exist; this server serves '" + options_.model_id + "'", "model",
                              "model_not_found");
        }
    }

    static std::vector<std::string> read_stop(const Fields& fields) {
        if (!fields.has("stop")) return {};
        const json& stop = fields.at("stop");
        if (stop.is_string()) return {stop.get<std::string>()};
        if (!stop.is_array() || stop.size() > 4) throw bad_request("'stop' must be a string or an array of up to 4 strings", "stop");
        std::vector<std::string> strings;
        for (const json& item : stop) {
            if (!item.is_string()) throw bad_request("'stop' must hold strings, got " + item.dump(), "stop");
            strings.push_back(item.get<std::string>());
        }
        return strings;
    }

    // The prompt of a chat request: the messages through the chat template.
    std::vector<int> chat_prompt(const Fields& fields) const {
        if (!chat_template_) {
            throw bad_request("the model has no chat template (tokenizer_config.json or chat_template.jinja); use /v1/completions",
                              "messages");
        }
        if (!fields.has("messages") || !fields.at("messages").is_array() || fields.at("messages").empty()) {
            throw bad_request("'messages' must be a non-empty array of {role, content} objects", "messages");
        }
        json messages = json::array();
        for (const json& message : fields.at("messages")) {
            if (!message.is_object() || !message.contains("role") || !message["role"].is_string()) {
                throw bad_request("each message needs a string 'role', got " + message.dump(), "messages");
            }
            json copy = message;
            const json& content = message.contains("content") ? message["content"] : json(nullptr);
            if (content.is_array()) {  // content parts: only text ones are understood
                std::string text;
                for (const json& part : content) {
                    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
                        throw bad_request("only text content parts ({\"type\": \"text\", \"text\": ...}) are supported, got " + part.dump(),
                                          "messages");
                    }
                    text += part["text"].get<std::string>();
                }
                copy["content"] = text;
            } else if (!content.is_string() && !content.is_null()) {
                throw bad_request("a message's 'content' must be a string or an array of text parts, got " + content.dump(), "messages");
            }
            messages.push_back(std::move(copy));
        }
        std::string rendered;
        try {
            rendered = chat::apply_chat_template(*chat_template_, messages, true, chat_special_tokens_);
        } catch (const error& failure) {
            throw bad_request(std::string("the chat template failed on these messages: ") + failure.what(), "messages");
        }
        return tokenizer_->encode(rendered, tokenizer::EncodeOptions{false, true});
    }

    std::vector<int> completion_prompt(const Fields& fields) const {
        if (!fields.has("prompt")) throw bad_request("'prompt' is required", "prompt");
        const json& prompt = fields.at("prompt");
        if (prompt.is_string()) return encode_text(prompt.get<std::string>());
        if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_string()) return encode_text(prompt[0].get<std::string>());
        if (prompt.is_array() && !prompt.empty() && prompt[0].is_number()) return fields.token_ids("prompt", model_.config().vocab_size);
        throw bad_request("'prompt' must be a string, an array of one string, or an array of token ids (one prompt per request)", "prompt");
    }

    OpenAiRequest read_openai(const json& body, bool chat) const {
        const Fields fields(body);
        check_model(fields);
        if (fields.integer("n", 1, 1, 1) != 1) throw bad_request("only n=1 is supported", "n");
        if (!chat) {
            if (fields.integer("best_of", 1, 1, 1) != 1) throw bad_request("only best_of=1 is supported", "best_of");
            if (fields.boolean("echo", false)) throw bad_request("'echo' is not supported", "echo");
            if (fields.has("suffix")) throw bad_request("'suffix' is not supported", "suffix");
            if (fields.has("logprobs")) throw bad_request("'logprobs' is supported on /v1/chat/completions only", "logprobs");
        }
        OpenAiRequest request;
        CompletionRequest& completion = request.completion;
        completion.prompt = chat ? chat_prompt(fields) : completion_prompt(fields);
        const char* limit_name = chat && fields.has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
        // OpenAI's defaults: 16 for completions, the rest of the context for chat.
        const std::int64_t default_limit = chat ? std::int64_t(max_tokens_default()) : 16;
        completion.max_tokens = std::size_t(fields.integer(limit_name, default_limit, 1, std::int64_t(1) << 40));
        completion.sampling = read_sampling(fields, 1.0);
        completion.stop = read_stop(fields);
        if (chat) {
            completion.logprobs = fields.boolean("logprobs", false);
            completion.top_logprobs = std::size_t(fields.integer("top_logprobs", 0, 0, 20));
            if (completion.top_logprobs && !completion.logprobs) {
                throw bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
            }
        }
        request.stream = fields.boolean("stream", false);
        if (fields.has("stream_options")) {
            const json& options = fields.at("stream_options");
            if (!options.is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
            if (!request.stream) throw bad_request("'stream_options' is only allowed with 'stream': true", "stream_options");
            request.include_usage = Fields(options).boolean("include_usage", false);
        }
        return request;
    }

    json token_logprob_json(const TokenLogprob& entry) const {
        const std::string text = tokenizer_ ? tokenizer_->decode(std::span<const int>(&entry.id, 1)) : std::to_string(entry.id);
        json bytes = json::array();
        for (unsigned char c : text) bytes.push_back(int(c));
        return {{"token", text}, {"logprob", entry.logprob}, {"bytes", bytes}};
    }

    json logprobs_content(const Event& event) const {
        json item = token_logprob_json(*event.logprob);
        item["top_logprobs"] = json::array();
        for (const TokenLogprob& top : event.top_logprobs) item["top_logprobs"].push_back(token_logprob_json(top));
        return item;
    }

    std::string next_id(const char* prefix) {
        const std::uint64_t n = id_counter_.fetch_add(1) + 1;
        char text[48];
        std::snprintf(text, sizeof text, "%s-%016llx", prefix, static_cast<unsigned long long>((id_seed_ ^ (n * 0x9E3779B97F4A7C15ull))));
        return text;
    }

    // What every chunk or answer of one OpenAI request repeats.
    struct OpenAiReply {
        std::string id;
        std::int64_t created;
        std::string model;
        bool chat;
        bool include_usage;
        std::size_t prompt_tokens;

        // cached_tokens: the prompt's start found in a kept KV cache, as OpenAI reports it.
        json usage(std::size_t completion_tokens, std::size_t cached_tokens) const {
            return {{"prompt_tokens", prompt_tokens},
                    {"completion_tokens", completion_tokens},
                    {"total_tokens", prompt_tokens + completion_tokens},
                    {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
        }

        // A stream chunk with one choice, or none (null: the usage chunk).
        json chunk(json choice) const {
            json out = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                        {"model", model}, {"choices", choice.is_null() ? json::array() : json::array({std::move(choice)})}};
            if (include_usage) out["usage"] = nullptr;
            return out;
        }

        // A chat chunk carries a delta, a completion chunk its text; the last one an empty delta.
        json text_choice(const std::string& text, const json& finish) const {
            json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}};
            if (!chat) choice["text"] = text;
            else choice["delta"] = finish.is_null() ? json{{"content", text}} : json::object();
            return choice;
        }
    };

    void openai_completion(const json& body, bool chat, Responder& responder) {
        OpenAiRequest request = read_openai(body, chat);
        const OpenAiReply reply{next_id(chat ? "chatcmpl" : "cmpl"), std::int64_t(std::time(nullptr)), options_.model_id, chat,
                                request.include_usage, request.completion.prompt.size()};
        const bool logprobs = request.completion.logprobs;
        auto job = submit(std::move(request.completion));
        if (request.stream) openai_stream(*job, reply, responder);
        else openai_answer(*job, reply, logprobs, responder);
    }

    void openai_answer(Job& job, const OpenAiReply& reply, bool logprobs, Responder& responder) {
        std::string text;
        json content_logprobs = json::array();
        std::size_t generated = 0;
        const auto last = collect(job, responder, Style::openai, [&](const Event& event) {
            text += event.text;
            if (event.kind != EventKind::token) return;
            ++generated;
            if (event.logprob) content_logprobs.push_back(logprobs_content(event));
        });
        if (!last) return;
        json choice = {{"index", 0}, {"finish_reason", generate::finish_reason_name(last->finish_reason)}};
        if (reply.chat) {
            choice["message"] = {{"role", "assistant"}, {"content", text}};
            choice["logprobs"] = logprobs ? json{{"content", content_logprobs}} : json(nullptr);
        } else {
            choice["text"] = text;
            choice["logprobs"] = nullptr;
        }
        send_json(responder, {{"id", reply.id},
                              {"object", reply.chat ? "chat.completion" : "text_completion"},
                              {"created", reply.created},
                              {"model", reply.model},
                              {"choices", json::array({choice})},
                              {"usage", reply.usage(generated, last->timings.cached_prompt_tokens)},
                              {"timings", timings_json(last->timings)}});
    }

    void openai_stream(Job& job, const OpenAiReply& reply, Responder& responder) {
        if (!responder.begin_stream(stream_header())) return job.cancel();
        if (reply.chat) {
            json first = reply.text_choice("", nullptr);
            first["delta"]["role"] = "assistant";
            if (!responder.write(sse_data(reply.chunk(std::move(first))))) return job.cancel();
        }
        std::size_t generated = 0;
        follow(job, responder, [&](const Event& event) {
            if (event.kind == EventKind::token) {
                ++generated;
                if (event.text.empty() && !event.logprob) return true;
                json choice = reply.text_choice(event.text, nullptr);
                if (event.logprob) choice["logprobs"] = {{"content", json::array({logprobs_content(event)})}};
                return responder.write(sse_data(reply.chunk(std::move(choice))));
            }
            if (event.kind == EventKind::failed) {
                const ApiError failure{http::status::internal_server_error, event.error, {}, {}, "server_error"};
                return responder.write(sse_data({{"error", error_object(failure)}})) && responder.write("data: [DONE]\n\n") &&
                       end(responder);
            }
            if (!event.text.empty() && !responder.write(sse_data(reply.chunk(reply.text_choice(event.text, nullptr))))) return false;
            json last = reply.chunk(reply.text_choice("", generate::finish_reason_name(event.finish_reason)));
            last["timings"] = timings_json(event.timings);
            if (!responder.write(sse_data(last))) return false;
            if (reply.include_usage) {
                json usage_chunk = reply.chunk(nullptr);
                usage_chunk["usage"] = reply.usage(generated, event.timings.cached_prompt_tokens);
                if (!responder.write(sse_data(usage_chunk))) return false;
            }
            return responder.write("data: [DONE]\n\n") && end(responder);
        });
    }

    const models::LoadedModel& model_;
    const tokenizer::Tokenizer* tokenizer_;
    Engine& engine_;
    ServerOptions options_;
    StaticAssets assets_;
    std::optional<std::string> chat_template_;
    json chat_special_tokens_ = json::object();
    std::uint64_t id_seed_;
    std::atomic<std::uint64_t> id_counter_{0};
    std::int64_t started_ = std::int64_t(std::time(nullptr));
    mutable std::mutex metrics_mutex_;
    std::map<std::string, std::map<unsigned, std::uint64_t>> requests_;
};

}  // namespace loom::serve
