#pragma once
// Request bodies in, JSON out: reading the fields of each protocol with type and range
// checks that name the offending field, and the JSON shapes shared by the protocols.
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loom/generate/generator.hpp"
#include "loom/serve/http.hpp"

namespace loom::serve {

using nlohmann::json;

// A request the server refuses; the protocol decides how the error is written.
struct ApiError {
    http::status status = http::status::bad_request;
    std::string message;
    std::string param;                         // the offending field, if one
    std::string code;                          // OpenAI's machine-readable code, if one
    std::string type = "invalid_request_error";
};

inline ApiError bad_request(std::string message, std::string param = {}, std::string code = {}) {
    return ApiError{http::status::bad_request, std::move(message), std::move(param), std::move(code)};
}

inline json parse_json_body(const std::string& body) {
    if (body.empty()) throw bad_request("the request body is empty; a JSON object is expected");
    json value = json::parse(body, nullptr, false);
    if (value.is_discarded()) {
        // Parse again with exceptions for the position of the error.
        try {
            const json strict = json::parse(body);
            (void)strict;
        } catch (const json::parse_error& failure) {
            throw bad_request(std::string("the request body is not valid JSON: ") + failure.what());
        }
    }
    if (!value.is_object()) throw bad_request(std::string("the request body must be a JSON object, got ") + value.type_name());
    return value;
}

// Typed, range-checked access to the optional fields of a JSON object. A field that is
// absent or null takes the default.
class Fields {
public:
    explicit Fields(const json& body) : body_(body) {}

    bool has(const char* name) const { return body_.contains(name) && !body_[name].is_null(); }
    const json& at(const char* name) const { return body_[name]; }

    double number(const char* name, double fallback, double minimum, double maximum) const {
        if (!has(name)) return fallback;
        const json& value = body_[name];
        if (!value.is_number()) throw bad_request(std::string("'") + name + "' must be a number, got " + value.dump(), name);
        const double number = value.get<double>();
        if (!(number >= minimum && number <= maximum)) {
            throw bad_request(std::string("'") + name + "' must be between " + format(minimum) + " and " + format(maximum) +
                                  ", got " + value.dump(), name);
        }
        return number;
    }

    std::int64_t integer(const char* name, std::int64_t fallback, std::int64_t minimum, std::int64_t maximum) const {
        if (!has(name)) return fallback;
        const json& value = body_[name];
        if (!value.is_number_integer()) throw bad_request(std::string("'") + name + "' must be an integer, got " + value.dump(), name);
        if (value.is_number_unsigned() && value.get<std::uint64_t>() > std::uint64_t(maximum)) {
            throw bad_request(std::string("'") + name + "' must be at most " + std::to_string(maximum) + ", got " + value.dump(), name);
        }
        const std::int64_t number = value.get<std::int64_t>();
        if (number < minimum || number > maximum) {
            const std::string range = maximum >= (std::int64_t(1) << 40) ? "at least " + std::to_string(minimum)
                                                                        : "between " + std::to_string(minimum) + " and " + std::to_string(maximum);
            throw bad_request(std::string("'") + name + "' must be " + range + ", got " + value.dump(), name);
        }
        return number;
    }

    bool boolean(const char* name, bool fallback) const {
        if (!has(name)) return fallback;
        if (!body_[name].is_boolean()) throw bad_request(std::string("'") + name + "' must be true or false, got " + body_[name].dump(), name);
        return body_[name].get<bool>();
    }

    std::optional<std::string> text(const char* name) const {
        if (!has(name)) return std::nullopt;
        if (!body_[name].is_string()) throw bad_request(std::string("'") + name + "' must be a string, got " + body_[name].dump(), name);
        return body_[name].get<std::string>();
    }

    std::string required_text(const char* name) const {
        auto value = text(name);
        if (!value) throw bad_request(std::string("'") + name + "' is required", name);
        return *value;
    }

    // A list of token ids, each in [0, vocab).
    std::vector<int> token_ids(const char* name, std::size_t vocab) const {
        if (!has(name)) throw bad_request(std::string("'") + name + "' is required", name);
        const json& value = body_[name];
        if (!value.is_array()) throw bad_request(std::string("'") + name + "' must be an array of token ids", name);
        std::vector<int> ids;
        for (const json& item : value) {
            if (!item.is_number_integer() || item.get<std::int64_t>() < 0 || item.get<std::int64_t>() >= std::int64_t(vocab)) {
                throw bad_request(std::string("'") + name + "' holds " + item.dump() + ", not a token id in [0, " +
                                      std::to_string(vocab) + ")", name);
            }
            ids.push_back(item.get<int>());
        }
        return ids;
    }

private:
    static std::string format(double value) {
        std::ostringstream text;
        text << value;
        return text.str();
    }

    const json& body_;
};

// Server-side timings, reported in the last event of every stream. As in llama.cpp's server,
// prompt_n counts the prompt tokens run and cache_n those found in a kept KV cache.
inline json timings_json(const generate::Timings& timings) {
    const double prompt_ms = timings.prefill_seconds * 1000.0, predicted_ms = timings.decode_seconds * 1000.0;
    return {
        {"cache_n", timings.cached_prompt_tokens},
        {"prompt_n", timings.evaluated_prompt_tokens()},
        {"prompt_ms", prompt_ms},
        {"prompt_per_second", timings.prefill_tokens_per_second()},
        {"predicted_n", timings.generated_tokens},
        {"predicted_ms", predicted_ms},
        {"predicted_per_second", timings.decode_tokens_per_second()},
        {"time_to_first_token_ms", timings.time_to_first_token_ms},
    };
}

inline std::string sse_data(const json& payload) { return "data: " + payload.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"; }

inline std::string sse_event(const char* name, const json& payload) {
    return std::string("event: ") + name + "\n" + sse_data(payload);
}

}  // namespace loom::serve
