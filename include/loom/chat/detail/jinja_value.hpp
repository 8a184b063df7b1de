#pragma once
// The values a chat template computes with, and Python's rules for them: truthiness,
// str() and repr(), ==, <, `in`, arithmetic, iteration, and json.dumps. Templates print
// lists and compare numbers exactly as CPython would, so these rules are the contract.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loom/chat/detail/jinja_errors.hpp"
#include "loom/chat/detail/jinja_text.hpp"

namespace loom::chat::detail {

class Value;
class Object;
using List = std::vector<Value>;
// Insertion-ordered, like a Python dict (and like the JSON the messages came from).
using Dict = std::vector<std::pair<Value, Value>>;

class Value {
public:
    enum class Kind { undefined, none, boolean, integer, floating, string, list, tuple, dict, object };

    Value() = default;

    // `hint` is Jinja's explanation, used when the undefined value is misused later.
    static Value undefined(std::string hint) {
        Value value;
        value.text_ = std::move(hint);
        return value;
    }
    static Value none() { return with_kind(Kind::none); }
    static Value boolean(bool flag) {
        Value value = with_kind(Kind::boolean);
        value.integer_ = flag ? 1 : 0;
        return value;
    }
    static Value integer(std::int64_t number) {
        Value value = with_kind(Kind::integer);
        value.integer_ = number;
        return value;
    }
    static Value floating(double number) {
        Value value = with_kind(Kind::floating);
        value.floating_ = number;
        return value;
    }
    static Value string(std::string text) {
        Value value = with_kind(Kind::string);
        value.text_ = std::move(text);
        return value;
    }
    static Value list(List items) {
        Value value = with_kind(Kind::list);
        value.list_ = std::make_shared<const List>(std::move(items));
        return value;
    }
    static Value tuple(List items) {
        Value value = with_kind(Kind::tuple);
        value.list_ = std::make_shared<const List>(std::move(items));
        return value;
    }
    static Value dict(Dict items) {
        Value value = with_kind(Kind::dict);
        value.dict_ = std::make_shared<const Dict>(std::move(items));
        return value;
    }
    static Value object(std::shared_ptr<Object> target) {
        Value value = with_kind(Kind::object);
        value.object_ = std::move(target);
        return value;
    }

    Kind kind() const noexcept { return kind_; }
    bool is_undefined() const noexcept { return kind_ == Kind::undefined; }
    bool is_none() const noexcept { return kind_ == Kind::none; }
    bool is_boolean() const noexcept { return kind_ == Kind::boolean; }
    // Python's int includes bool.
    bool is_integral() const noexcept { return kind_ == Kind::integer || kind_ == Kind::boolean; }
    bool is_floating() const noexcept { return kind_ == Kind::floating; }
    bool is_number() const noexcept { return is_integral() || is_floating(); }
    bool is_string() const noexcept { return kind_ == Kind::string; }
    bool is_list() const noexcept { return kind_ == Kind::list; }
    bool is_tuple() const noexcept { return kind_ == Kind::tuple; }
    bool is_sequence() const noexcept { return kind_ == Kind::list || kind_ == Kind::tuple; }
    bool is_dict() const noexcept { return kind_ == Kind::dict; }
    bool is_object() const noexcept { return kind_ == Kind::object; }

    bool as_boolean() const noexcept { return integer_ != 0; }
    std::int64_t as_integer() const noexcept { return integer_; }
    double as_number() const noexcept { return is_floating() ? floating_ : static_cast<double>(integer_); }
    const std::string& as_string() const noexcept { return text_; }
    const std::string& undefined_hint() const noexcept { return text_; }
    const List& as_list() const noexcept { return *list_; }
    const Dict& as_dict() const noexcept { return *dict_; }
    const std::shared_ptr<Object>& as_object() const noexcept { return object_; }

private:
    static Value with_kind(Kind kind) {
        Value value;
        value.kind_ = kind;
        return value;
    }

    Kind kind_ = Kind::undefined;
    std::int64_t integer_ = 0;
    double floating_ = 0.0;
    std::string text_;
    std::shared_ptr<const List> list_;
    std::shared_ptr<const Dict> dict_;
    std::shared_ptr<Object> object_;
};

struct Arguments {
    std::vector<Value> positional;
    std::vector<std::pair<std::string, Value>> keywords;
};

// Values with identity: namespace(), the loop variable, functions and bound methods.
class Object {
public:
    virtual ~Object() = default;
    // Python's type name, for error messages.
    virtual std::string type_name() const = 0;
    virtual std::string repr() const = 0;
    virtual std::optional<Value> attribute(const std::string& name) const {
        static_cast<void>(name);
        return std::nullopt;
    }
    virtual bool is_callable() const { return false; }
    virtual Value call(Arguments& arguments) const {
        static_cast<void>(arguments);
        fail_type("'" + type_name() + "' object is not callable");
    }
};

[[noreturn]] inline void fail_undefined(const Value& value) {
    throw evaluation_failure(evaluation_failure::Kind::undefined,
                             value.undefined_hint().empty() ? "value is undefined" : value.undefined_hint());
}

inline std::string type_name(const Value& value) {
    switch (value.kind()) {
        case Value::Kind::undefined: return "Undefined";
        case Value::Kind::none: return "NoneType";
        case Value::Kind::boolean: return "bool";
        case Value::Kind::integer: return "int";
        case Value::Kind::floating: return "float";
        case Value::Kind::string: return "str";
        case Value::Kind::list: return "list";
        case Value::Kind::tuple: return "tuple";
        case Value::Kind::dict: return "dict";
        case Value::Kind::object: return value.as_object()->type_name();
    }
    return "object";
}

inline bool truthy(const Value& value) {
    switch (value.kind()) {
        case Value::Kind::undefined:
        case Value::Kind::none: return false;
        case Value::Kind::boolean:
        case Value::Kind::integer: return value.as_integer() != 0;
        case Value::Kind::floating: return value.as_number() != 0.0;
        case Value::Kind::string: return !value.as_string().empty();
        case Value::Kind::list:
        case Value::Kind::tuple: return !value.as_list().empty();
        case Value::Kind::dict: return !value.as_dict().empty();
        case Value::Kind::object: return true;
    }
    return false;
}

// repr(float): the shortest text that reads back to the same double, in fixed notation
// for exponents -4..15 and with at least one fractional digit.
inline std::string float_repr(double number) {
    if (std::isnan(number)) return "nan";
    if (std::isinf(number)) return number > 0 ? "inf" : "-inf";
    const std::string scientific = shortest_scientific(number);
    const std::size_t exponent_mark = scientific.find('e');
    std::string mantissa = scientific.substr(0, exponent_mark);
    int exponent = 0;
    const char* exponent_text = scientific.data() + exponent_mark + 1;
    if (*exponent_text == '+') ++exponent_text;  // from_chars takes no '+'
    std::from_chars(exponent_text, scientific.data() + scientific.size(), exponent);
    std::string sign;
    if (!mantissa.empty() && mantissa[0] == '-') {
        sign = "-";
        mantissa.erase(0, 1);
    }
    std::string digits;
    for (const char c : mantissa)
        if (c != '.') digits.push_back(c);
    if (exponent >= -4 && exponent < 16) {
        if (exponent >= 0) {
            const auto integer_digits = static_cast<std::size_t>(exponent) + 1;
            if (digits.size() <= integer_digits) return sign + digits + std::string(integer_digits - digits.size(), '0') + ".0";
            return sign + digits.substr(0, integer_digits) + "." + digits.substr(integer_digits);
        }
        return sign + "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    }
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int magnitude = exponent < 0 ? -exponent : exponent;
    out += exponent < 0 ? "e-" : "e+";
    if (magnitude < 10) out += "0";
    out += std::to_string(magnitude);
    return out;
}

inline std::string repr(const Value& value);

// str(value) as Python prints it; an undefined value prints as nothing.
inline std::string str(const Value& value) {
    switch (value.kind()) {
        case Value::Kind::undefined: return "";
        case Value::Kind::none: return "None";
        case Value::Kind::boolean: return value.as_boolean() ? "True" : "False";
        case Value::Kind::integer: return std::to_string(value.as_integer());
        case Value::Kind::floating: return float_repr(value.as_number());
        case Value::Kind::string: return value.as_string();
        case Value::Kind::list:
        case Value::Kind::tuple: {
            const bool is_tuple = value.is_tuple();
            std::string out = is_tuple ? "(" : "[";
            const List& items = value.as_list();
            for (std::size_t index = 0; index < items.size(); ++index) {
                if (index > 0) out += ", ";
                out += repr(items[index]);
            }
            if (is_tuple && items.size() == 1) out += ",";
            out += is_tuple ? ")" : "]";
            return out;
        }
        case Value::Kind::dict: {
            std::string out = "{";
            bool first = true;
            for (const auto& [key, item] : value.as_dict()) {
                if (!first) out += ", ";
                first = false;
                out += repr(key) + ": " + repr(item);
            }
            return out + "}";
        }
        case Value::Kind::object: return value.as_object()->repr();
    }
    return "";
}

inline std::string repr(const Value& value) {
    if (value.is_string()) return python_string_repr(value.as_string());
    if (value.is_undefined()) return "Undefined";
    return str(value);
}

inline const Value* dict_find(const Dict& items, const Value& key);

inline bool equals(const Value& left, const Value& right) {
    if (left.is_undefined() || right.is_undefined()) return left.is_undefined() && right.is_undefined();
    if (left.is_number() && right.is_number()) {
        if (left.is_floating() || right.is_floating()) return left.as_number() == right.as_number();
        return left.as_integer() == right.as_integer();
    }
    if (left.kind() != right.kind()) return false;
    switch (left.kind()) {
        case Value::Kind::none: return true;
        case Value::Kind::string: return left.as_string() == right.as_string();
        case Value::Kind::list:
        case Value::Kind::tuple: {
            const List& a = left.as_list();
            const List& b = right.as_list();
            if (a.size() != b.size()) return false;
            for (std::size_t index = 0; index < a.size(); ++index)
                if (!equals(a[index], b[index])) return false;
            return true;
        }
        case Value::Kind::dict: {
            const Dict& a = left.as_dict();
            const Dict& b = right.as_dict();
            if (a.size() != b.size()) return false;
            for (const auto& entry : a) {
                const Value* found = dict_find(b, entry.first);
                if (found == nullptr || !equals(*found, entry.second)) return false;
            }
            return true;
        }
        case Value::Kind::object: return left.as_object() == right.as_object();
        default: return false;
    }
}

inline const Value* dict_find(const Dict& items, const Value& key) {
    for (const auto& entry : items)
        if (equals(entry.first, key)) return &entry.second;
    return nullptr;
}

inline const Value* dict_find(const Dict& items, const std::string& key) {
    for (const auto& entry : items)
        if (entry.first.is_string() && entry.first.as_string() == key) return &entry.second;
    return nullptr;
}

// Python's <, <=, >, >= (`operation` is the operator's spelling, for the error message).
inline bool compare_order(const std::string& operation, const Value& left, const Value& right) {
    if (left.is_undefined()) fail_undefined(left);
    if (right.is_undefined()) fail_undefined(right);
    const auto decide = [&](auto a, auto b) {
        if (operation == "<") return a < b;
        if (operation == "<=") return a <= b;
        if (operation == ">") return a > b;
        return a >= b;
    };
    if (left.is_number() && right.is_number()) {
        if (left.is_floating() || right.is_floating()) return decide(left.as_number(), right.as_number());
        return decide(left.as_integer(), right.as_integer());
    }
    if (left.is_string() && right.is_string()) return decide(left.as_string(), right.as_string());
    if ((left.is_list() && right.is_list()) || (left.is_tuple() && right.is_tuple())) {
        const List& a = left.as_list();
        const List& b = right.as_list();
        for (std::size_t index = 0; index < a.size() && index < b.size(); ++index)
            if (!equals(a[index], b[index])) return compare_order(operation, a[index], b[index]);
        return decide(a.size(), b.size());
    }
    fail_type("'" + operation + "' not supported between instances of '" + type_name(left) + "' and '" +
              type_name(right) + "'");
}

// What `for x in value` visits: items, dict keys, or characters; nothing for undefined.
inline List iterate(const Value& value) {
    switch (value.kind()) {
        case Value::Kind::undefined: return {};
        case Value::Kind::list:
        case Value::Kind::tuple: return value.as_list();
        case Value::Kind::dict: {
            List keys;
            keys.reserve(value.as_dict().size());
            for (const auto& entry : value.as_dict()) keys.push_back(entry.first);
            return keys;
        }
        case Value::Kind::string: {
            List characters;
            const std::string& text = value.as_string();
            for (std::size_t offset = 0; offset < text.size();) {
                const std::size_t start = offset;
                decode_utf8(text, offset);
                characters.push_back(Value::string(text.substr(start, offset - start)));
            }
            return characters;
        }
        default: fail_type("'" + type_name(value) + "' object is not iterable");
    }
}

inline std::size_t length(const Value& value) {
    switch (value.kind()) {
        case Value::Kind::undefined: return 0;
        case Value::Kind::string: return code_point_count(value.as_string());
        case Value::Kind::list:
        case Value::Kind::tuple: return value.as_list().size();
        case Value::Kind::dict: return value.as_dict().size();
        default: fail_type("object of type '" + type_name(value) + "' has no len()");
    }
}

// `item in container`.
inline bool contains(const Value& container, const Value& item) {
    switch (container.kind()) {
        case Value::Kind::undefined: return false;
        case Value::Kind::string:
            if (!item.is_string())
                fail_type("'in <string>' requires string as left operand, not " + type_name(item));
            return container.as_string().find(item.as_string()) != std::string::npos;
        case Value::Kind::list:
        case Value::Kind::tuple:
            return std::any_of(container.as_list().begin(), container.as_list().end(),
                               [&](const Value& element) { return equals(element, item); });
        case Value::Kind::dict: return dict_find(container.as_dict(), item) != nullptr;
        default: fail_type("argument of type '" + type_name(container) + "' is not iterable");
    }
}

// Python integers are unbounded; beyond 64 bits we refuse rather than wrap.
template <typename Operation>
std::int64_t checked_integer(Operation operation, std::int64_t left, std::int64_t right) {
    std::int64_t result = 0;
    if (operation(left, right, &result)) fail_unsupported("integer arithmetic beyond 64 bits");
    return result;
}

inline bool add_overflows(std::int64_t a, std::int64_t b, std::int64_t* result) { return __builtin_add_overflow(a, b, result); }
inline bool subtract_overflows(std::int64_t a, std::int64_t b, std::int64_t* result) { return __builtin_sub_overflow(a, b, result); }
inline bool multiply_overflows(std::int64_t a, std::int64_t b, std::int64_t* result) { return __builtin_mul_overflow(a, b, result); }

// True when index + step is still strictly before stop (in the direction of step), worked out
// without computing index + step, so strides near the int64 limits cannot overflow. Callers
// have already checked that index itself is before stop.
inline bool stride_continues(std::int64_t index, std::int64_t stop, std::int64_t step) {
    const auto bits = [](std::int64_t value) { return static_cast<std::uint64_t>(value); };
    if (step > 0) return index < stop && bits(stop) - bits(index) > bits(step);
    return index > stop && bits(index) - bits(stop) > std::uint64_t{0} - bits(step);
}

// Deliberate limits on `sequence * count`: Python would allocate without bound (`'a' * 10**10`),
// which in an engine embedded in a server is a denial of service rather than a template.
inline constexpr std::uint64_t max_repeated_string_bytes = std::uint64_t{64} << 20;  // 64 MiB
inline constexpr std::uint64_t max_repeated_list_items = std::uint64_t{16} << 20;    // 16M items

inline Value repeat_sequence(const Value& sequence, std::int64_t count) {
    const std::uint64_t size = sequence.is_string() ? sequence.as_string().size() : sequence.as_list().size();
    if (count > 0 && size > 0) {
        const std::uint64_t limit = sequence.is_string() ? max_repeated_string_bytes : max_repeated_list_items;
        if (static_cast<std::uint64_t>(count) > limit / size)
            fail_type(sequence.is_string() ? "repeated string would exceed the 64 MiB limit (" + std::to_string(size) + " bytes * " + std::to_string(count) + ")"
                                           : "repeated " + type_name(sequence) + " would exceed the 16777216 item limit (" +
                                                 std::to_string(size) + " items * " + std::to_string(count) + ")");
    }
    if (size == 0 || count <= 0) return sequence.is_string() ? Value::string("") : sequence.is_tuple() ? Value::tuple({}) : Value::list({});
    if (sequence.is_string()) {
        std::string out;
        out.reserve(size * static_cast<std::uint64_t>(count));
        for (std::int64_t index = 0; index < count; ++index) out += sequence.as_string();
        return Value::string(std::move(out));
    }
    List out;
    out.reserve(size * static_cast<std::uint64_t>(count));
    for (std::int64_t index = 0; index < count; ++index)
        out.insert(out.end(), sequence.as_list().begin(), sequence.as_list().end());
    return sequence.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

// Python's float floor division and modulo (the result of % takes the divisor's sign).
inline std::pair<double, double> float_divmod(double dividend, double divisor) {
    double modulo = std::fmod(dividend, divisor);
    double quotient = (dividend - modulo) / divisor;
    if (modulo != 0.0) {
        if ((divisor < 0) != (modulo < 0)) {
            modulo += divisor;
            quotient -= 1.0;
        }
    } else {
        modulo = std::copysign(0.0, divisor);
    }
    double floored = 0.0;
    if (quotient != 0.0) {
        floored = std::floor(quotient);
        if (quotient - floored > 0.5) floored += 1.0;
    } else {
        floored = std::copysign(0.0, dividend / divisor);
    }
    return {floored, modulo};
}

// The arithmetic operators + - * / // % ** with Python's types and error messages.
inline Value arithmetic(const std::string& operation, const Value& left, const Value& right) {
    if (left.is_undefined()) fail_undefined(left);
    if (right.is_undefined()) fail_undefined(right);
    const auto unsupported = [&]() -> Value {
        fail_type("unsupported operand type(s) for " + operation + ": '" + type_name(left) + "' and '" +
                  type_name(right) + "'");
    };
    if (left.is_number() && right.is_number()) {
        const bool integral = left.is_integral() && right.is_integral();
        const std::int64_t a = left.as_integer();
        const std::int64_t b = right.as_integer();
        const double x = left.as_number();
        const double y = right.as_number();
        if (operation == "+") {
            if (integral) return Value::integer(checked_integer(add_overflows, a, b));
            return Value::floating(x + y);
        }
        if (operation == "-") {
            if (integral) return Value::integer(checked_integer(subtract_overflows, a, b));
            return Value::floating(x - y);
        }
        if (operation == "*") {
            if (integral) return Value::integer(checked_integer(multiply_overflows, a, b));
            return Value::floating(x * y);
        }
        if (operation == "/") {
            if (y == 0.0) fail_type("division by zero");
            return Value::floating(x / y);
        }
        if (operation == "//" || operation == "%") {
            if (integral) {
                if (b == 0) fail_type("integer division or modulo by zero");
                if (a == std::numeric_limits<std::int64_t>::min() && b == -1) fail_unsupported("integer arithmetic beyond 64 bits");
                std::int64_t quotient = a / b;
                std::int64_t modulo = a % b;
                if (modulo != 0 && ((modulo < 0) != (b < 0))) {
                    modulo += b;
                    quotient -= 1;
                }
                return Value::integer(operation == "//" ? quotient : modulo);
            }
            if (y == 0.0) fail_type(operation == "//" ? "float floor division by zero" : "float modulo");
            const auto [quotient, modulo] = float_divmod(x, y);
            return Value::floating(operation == "//" ? quotient : modulo);
        }
        if (operation == "**") {
            if (integral && b >= 0) {
                if (a == 0 || a == 1) return Value::integer(b == 0 ? 1 : a);
                if (a == -1) return Value::integer(b % 2 == 0 ? 1 : -1);
                std::int64_t power = 1;
                for (std::int64_t step = 0; step < b; ++step) power = checked_integer(multiply_overflows, power, a);
                return Value::integer(power);
            }
            if (x == 0.0 && y < 0) fail_type("0.0 cannot be raised to a negative power");
            return Value::floating(std::pow(x, y));
        }
        return unsupported();
    }
    if (operation == "+") {
        if (left.is_string()) {
            if (!right.is_string()) fail_type("can only concatenate str (not \"" + type_name(right) + "\") to str");
            return Value::string(left.as_string() + right.as_string());
        }
        if (left.is_sequence()) {
            if (right.kind() != left.kind())
                fail_type("can only concatenate " + type_name(left) + " (not \"" + type_name(right) + "\") to " +
                          type_name(left));
            List joined = left.as_list();
            joined.insert(joined.end(), right.as_list().begin(), right.as_list().end());
            return left.is_tuple() ? Value::tuple(std::move(joined)) : Value::list(std::move(joined));
        }
        return unsupported();
    }
    if (operation == "*") {
        if ((left.is_string() || left.is_sequence()) && right.is_integral()) return repeat_sequence(left, right.as_integer());
        if ((right.is_string() || right.is_sequence()) && left.is_integral()) return repeat_sequence(right, left.as_integer());
        if (left.is_string() || left.is_sequence())
            fail_type("can't multiply sequence by non-int of type '" + type_name(right) + "'");
        return unsupported();
    }
    if (operation == "%" && left.is_string()) fail_unsupported("printf-style string formatting with %");
    return unsupported();
}

inline Value negate(const Value& operand) {
    if (operand.is_undefined()) fail_undefined(operand);
    if (operand.is_floating()) return Value::floating(-operand.as_number());
    if (operand.is_integral()) return Value::integer(checked_integer(subtract_overflows, 0, operand.as_integer()));
    fail_type("bad operand type for unary -: '" + type_name(operand) + "'");
}

inline Value unary_plus(const Value& operand) {
    if (operand.is_undefined()) fail_undefined(operand);
    if (operand.is_floating()) return operand;
    if (operand.is_integral()) return Value::integer(operand.as_integer());
    fail_type("bad operand type for unary +: '" + type_name(operand) + "'");
}

// Converts nlohmann::json or nlohmann::ordered_json; objects keep the order the json
// object iterates in (sorted for nlohmann::json, insertion order for ordered_json).
template <typename Json>
Value value_from_json(const Json& json) {
    using Type = typename Json::value_t;
    switch (json.type()) {
        case Type::null:
        case Type::discarded: return Value::none();
        case Type::boolean: return Value::boolean(json.template get<bool>());
        case Type::number_integer: return Value::integer(json.template get<std::int64_t>());
        case Type::number_unsigned: {
            const auto number = json.template get<std::uint64_t>();
            if (number <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                return Value::integer(static_cast<std::int64_t>(number));
            return Value::floating(static_cast<double>(number));
        }
        case Type::number_float: return Value::floating(json.template get<double>());
        case Type::string: return Value::string(json.template get<std::string>());
        case Type::array: {
            List items;
            items.reserve(json.size());
            for (const auto& element : json) items.push_back(value_from_json(element));
            return Value::list(std::move(items));
        }
        case Type::object: {
            Dict items;
            items.reserve(json.size());
            for (auto entry = json.begin(); entry != json.end(); ++entry)
                items.emplace_back(Value::string(entry.key()), value_from_json(entry.value()));
            return Value::dict(std::move(items));
        }
        case Type::binary: break;
    }
    throw loom::argument_error("chat template context: binary JSON values have no template equivalent");
}

// The knobs of Python's json.dumps that the tojson filter exposes.
struct JsonStyle {
    bool ensure_ascii = false;
    std::optional<std::string> indent;
    std::string item_separator = ", ";
    std::string key_separator = ": ";
    bool sort_keys = false;
};

inline std::string json_key(const Value& key) {
    switch (key.kind()) {
        case Value::Kind::string: return key.as_string();
        case Value::Kind::boolean: return key.as_boolean() ? "true" : "false";
        case Value::Kind::none: return "null";
        case Value::Kind::integer: return std::to_string(key.as_integer());
        case Value::Kind::floating: return float_repr(key.as_number());
        default: fail_type("keys must be str, int, float, bool or None, not " + type_name(key));
    }
}

inline void write_json(std::string& out, const Value& value, const JsonStyle& style, std::size_t depth) {
    const auto newline = [&](std::size_t level) {
        out.push_back('\n');
        for (std::size_t step = 0; step < level; ++step) out += *style.indent;
    };
    switch (value.kind()) {
        case Value::Kind::none: out += "null"; return;
        case Value::Kind::boolean: out += value.as_boolean() ? "true" : "false"; return;
        case Value::Kind::integer: out += std::to_string(value.as_integer()); return;
        case Value::Kind::floating: {
            const double number = value.as_number();
            if (std::isnan(number))
                out += "NaN";
            else if (std::isinf(number))
                out += number > 0 ? "Infinity" : "-Infinity";
            else
                out += float_repr(number);
            return;
        }
        case Value::Kind::string: out += json_string(value.as_string(), style.ensure_ascii); return;
        case Value::Kind::list:
        case Value::Kind::tuple: {
            const List& items = value.as_list();
            if (items.empty()) {
                out += "[]";
                return;
            }
            out.push_back('[');
            for (std::size_t index = 0; index < items.size(); ++index) {
                if (index > 0) out += style.item_separator;
                if (style.indent) newline(depth + 1);
                write_json(out, items[index], style, depth + 1);
            }
            if (style.indent) newline(depth);
            out.push_back(']');
            return;
        }
        case Value::Kind::dict: {
            if (value.as_dict().empty()) {
                out += "{}";
                return;
            }
            std::vector<std::pair<std::string, const Value*>> entries;
            for (const auto& [key, item] : value.as_dict()) entries.emplace_back(json_key(key), &item);
            if (style.sort_keys)
                std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
            out.push_back('{');
            for (std::size_t index = 0; index < entries.size(); ++index) {
                if (index > 0) out += style.item_separator;
                if (style.indent) newline(depth + 1);
                out += json_string(entries[index].first, style.ensure_ascii);
                out += style.key_separator;
                write_json(out, *entries[index].second, style, depth + 1);
            }
            if (style.indent) newline(depth);
            out.push_back('}');
            return;
        }
        case Value::Kind::undefined:
        case Value::Kind::object: break;
    }
    fail_type("Object of type " + type_name(value) + " is not JSON serializable");
}

inline std::string to_json(const Value& value, const JsonStyle& style) {
    std::string out;
    write_json(out, value, style, 0);
    return out;
}

// A native function or bound method, seen by the template as a callable value.
class Function : public Object {
public:
    using Body = std::function<Value(Arguments&)>;

    Function(std::string name, Body body, std::string kind = "function")
        : name_(std::move(name)), body_(std::move(body)), kind_(std::move(kind)) {}

    std::string type_name() const override { return kind_; }
    std::string repr() const override { return "<" + kind_ + " " + name_ + ">"; }
    bool is_callable() const override { return true; }
    Value call(Arguments& arguments) const override { return body_(arguments); }

private:
    std::string name_;
    Body body_;
    std::string kind_;
};

inline Value make_function(std::string name, Function::Body body, std::string kind = "function") {
    return Value::object(std::make_shared<Function>(std::move(name), std::move(body), std::move(kind)));
}

// namespace(...): the one mutable value, so that loops can carry state out of their scope.
class Namespace : public Object {
public:
    std::string type_name() const override { return "Namespace"; }
    std::string repr() const override {
        std::string out = "<Namespace {";
        for (std::size_t index = 0; index < attributes_.size(); ++index) {
            if (index > 0) out += ", ";
            out += python_string_repr(attributes_[index].first) + ": " + detail::repr(attributes_[index].second);
        }
        return out + "}>";
    }
    std::optional<Value> attribute(const std::string& name) const override {
        for (const auto& [key, item] : attributes_)
            if (key == name) return item;
        return std::nullopt;
    }
    void assign(const std::string& name, Value item) {
        for (auto& [key, existing] : attributes_)
            if (key == name) {
                existing = std::move(item);
                return;
            }
        attributes_.emplace_back(name, std::move(item));
    }

private:
    std::vector<std::pair<std::string, Value>> attributes_;
};

}  // namespace loom::chat::detail
