#pragma once
// The HTTP transport of loom_serve on Boost.Beast: one thread per connection with blocking
// reads and writes (a few dozen streaming clients at most; each mostly waits on its
// request's events), HTTP/1.1 keep-alive, Server-Sent Events as chunked responses, and a
// clean stop. What to answer is decided elsewhere (serve/server.hpp) through Responder,
// which tests implement without sockets.
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "loom/core/error.hpp"

namespace loom::serve {

namespace http = boost::beast::http;
using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;

// Beast (Boost 1.74) speaks boost::string_view.
inline std::string_view std_view(boost::beast::string_view text) noexcept { return {text.data(), text.size()}; }
inline boost::beast::string_view beast_view(std::string_view text) noexcept { return {text.data(), text.size()}; }

// Where a handler writes its answer: one whole response, a file, or an event stream.
class Responder {
public:
    virtual ~Responder() = default;
    virtual void send(HttpResponse response) = 0;
    virtual void send_file(http::response<http::file_body> response) = 0;
    // Starts a chunked text/event-stream response with these headers.
    virtual bool begin_stream(http::response<http::empty_body> header) = 0;
    // False once the client is gone.
    virtual bool write(std::string_view chunk) = 0;
    virtual void end_stream() = 0;
    // True when the client closed its side (checked between events of a stream).
    virtual bool client_gone() = 0;
};

using Handler = std::function<void(const HttpRequest&, Responder&)>;
// Answers a request that could not be read (413, 431, 400), before any handler runs.
using RejectHandler = std::function<HttpResponse(http::status, const std::string& message)>;

struct HttpLimits {
    std::size_t body_bytes = 8u << 20;
    std::size_t header_bytes = 64u << 10;
    std::size_t connections = 256;                     // beyond: 503 and close
    std::chrono::seconds idle_timeout{60};             // no request on a kept-alive connection, or a stream not read
};

namespace detail {

// Whether `socket` becomes ready for `events` within `limit`. Asio's blocking calls wait
// without end on a socket that is not ready (they ignore SO_RCVTIMEO/SO_SNDTIMEO), so
// every wait that may last is bounded here first.
inline bool ready_within(int socket, short events, std::chrono::milliseconds limit) {
    pollfd watch{socket, events, 0};
    return ::poll(&watch, 1, int(limit.count())) > 0 && (watch.revents & (events | POLLHUP | POLLERR));
}

class SocketResponder final : public Responder {
public:
    SocketResponder(boost::asio::ip::tcp::socket& socket, std::chrono::milliseconds write_timeout)
        : socket_(socket), write_timeout_(write_timeout) {}

    void send(HttpResponse response) override {
        response.prepare_payload();
        finish(response);
    }

    void send_file(http::response<http::file_body> response) override {
        response.prepare_payload();
        finish(response);
    }

    bool begin_stream(http::response<http::empty_body> header) override {
        header.chunked(true);
        keep_alive_ = header.keep_alive();
        http::response_serializer<http::empty_body> serializer(header);
        boost::beast::error_code failure;
        http::write_header(socket_, serializer, failure);
        return ok(failure);
    }

    // A client that has not read for `write_timeout` (its socket buffer full) is dropped.
    bool write(std::string_view chunk) override {
        if (broken_) return false;
        if (!ready_within(socket_.native_handle(), POLLOUT, write_timeout_)) {
            broken_ = true;
            return false;
        }
        boost::beast::error_code failure;
        boost::asio::write(socket_, http::make_chunk(boost::asio::buffer(chunk.data(), chunk.size())), failure);
        return ok(failure);
    }

    void end_stream() override {
        if (broken_) return;
        boost::beast::error_code failure;
        boost::asio::write(socket_, http::make_chunk_last(), failure);
        ok(failure);
    }

    bool client_gone() override {
        if (!broken_ && ready_within(socket_.native_handle(), POLLRDHUP, std::chrono::milliseconds(0))) broken_ = true;
        return broken_;
    }

    // Whether the connection can carry another request.
    bool reusable() const noexcept { return keep_alive_ && !broken_; }

private:
    template <typename Response>
    void finish(Response& response) {
        keep_alive_ = response.keep_alive();
        boost::beast::error_code failure;
        http::write(socket_, response, failure);
        ok(failure);
    }

    bool ok(const boost::beast::error_code& failure) {
        if (failure) broken_ = true;
        return !broken_;
    }

    boost::asio::ip::tcp::socket& socket_;
    std::chrono::milliseconds write_timeout_;
    bool keep_alive_ = false;
    bool broken_ = false;
};

}  // namespace detail

class HttpServer {
public:
    HttpServer(const std::string& host, unsigned short port, Handler handler, RejectHandler reject, HttpLimits limits = {})
        : handler_(std::move(handler)), reject_(std::move(reject)), limits_(limits), acceptor_(context_) {
        boost::system::error_code failure;
        const auto address = boost::asio::ip::make_address(host, failure);
        if (failure) throw argument_error("--host: '" + host + "' is not an IP address");
        const boost::asio::ip::tcp::endpoint endpoint(address, port);
        acceptor_.open(endpoint.protocol(), failure);
        if (!failure) acceptor_.set_option(boost::asio::socket_base::reuse_address(true), failure);
        if (!failure) acceptor_.bind(endpoint, failure);
        if (!failure) acceptor_.listen(boost::asio::socket_base::max_listen_connections, failure);
        if (failure) {
            throw error("cannot listen on " + host + ":" + std::to_string(port) + ": " + failure.message());
        }
    }

    ~HttpServer() {
        stop();
        wait_for_connections(std::chrono::seconds(5));
    }

    unsigned short port() const { return acceptor_.local_endpoint().port(); }

    // Accepts connections until stop(); each is served on its own thread.
    void run() {
        while (!stopping_.load()) {
            boost::asio::ip::tcp::socket socket(context_);
            boost::system::error_code failure;
            acceptor_.accept(socket, failure);
            if (stopping_.load()) break;
            if (failure) continue;  // a connection reset before it was accepted, or out of descriptors
            start_connection(std::move(socket));
        }
    }

    // Stops accepting, and closes connections that wait for a request; requests in
    // progress finish (the engine ends their streams when it stops).
    void stop() {
        if (stopping_.exchange(true)) return;
        ::shutdown(acceptor_.native_handle(), SHUT_RDWR);  // wakes the blocking accept()
        std::lock_guard lock(mutex_);
        for (int socket : idle_) ::shutdown(socket, SHUT_RD);
    }

    // After stop(): waits until every connection thread has finished, at most `limit`.
    bool wait_for_connections(std::chrono::milliseconds limit) {
        std::unique_lock lock(mutex_);
        return all_closed_.wait_for(lock, limit, [&] { return open_ == 0; });
    }

private:
    void start_connection(boost::asio::ip::tcp::socket socket) {
        std::lock_guard lock(mutex_);
        if (open_ >= limits_.connections) {
            HttpResponse busy = reject_(http::status::service_unavailable,
                                        "too many connections (" + std::to_string(open_) + "); retry later");
            busy.set(http::field::retry_after, "1");
            busy.keep_alive(false);
            busy.prepare_payload();
            boost::system::error_code ignored;
            http::write(socket, busy, ignored);
            return;
        }
        ++open_;
        std::thread([this, socket = std::move(socket)]() mutable {
            serve_connection(socket);
            boost::system::error_code ignored;
            socket.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
            socket.close(ignored);
            std::lock_guard lock(mutex_);
            --open_;
            all_closed_.notify_all();
        }).detach();
    }

    void set_idle(int socket, bool idle) {
        std::lock_guard lock(mutex_);
        if (idle) idle_.insert(socket);
        else idle_.erase(socket);
    }

    void serve_connection(boost::asio::ip::tcp::socket& socket) {
        const int native = socket.native_handle();
        boost::beast::flat_buffer buffer;
        detail::SocketResponder responder(socket, limits_.idle_timeout);
        while (!stopping_.load()) {
            http::request_parser<http::string_body> parser;
            parser.header_limit(std::uint32_t(limits_.header_bytes));
            parser.body_limit(limits_.body_bytes);
            boost::beast::error_code failure;
            set_idle(native, true);
            if (stopping_.load()) break;
            // A kept-alive connection that sends no request for idle_timeout is closed.
            if (buffer.size() == 0 && !detail::ready_within(native, POLLIN, limits_.idle_timeout)) return;
            http::read_header(socket, buffer, parser, failure);
            set_idle(native, false);
            if (failure == http::error::header_limit) return refuse(responder, socket, http::status::request_header_fields_too_large,
                                                               "the request headers exceed " + std::to_string(limits_.header_bytes) + " bytes");
            // Beast checks a Content-Length against the body limit with the headers.
            if (failure == http::error::body_limit) return refuse_body(responder, socket);
            if (failure) return;  // closed, timed out, or not HTTP
            if (parser.get()[http::field::expect] == "100-continue") {
                http::response<http::empty_body> proceed(http::status::continue_, parser.get().version());
                http::write(socket, proceed, failure);
                if (failure) return;
            }
            http::read(socket, buffer, parser, failure);
            if (failure == http::error::body_limit) return refuse_body(responder, socket);
            if (failure) return refuse(responder, socket, http::status::bad_request, "malformed HTTP request: " + failure.message());
            HttpRequest request = parser.release();
            const bool keep_alive = request.keep_alive();
            handler_(request, responder);
            if (!keep_alive || !responder.reusable()) return;
        }
    }

    void refuse_body(Responder& responder, boost::asio::ip::tcp::socket& socket) {
        refuse(responder, socket, http::status::payload_too_large,
               "the request body exceeds the limit of " + std::to_string(limits_.body_bytes) + " bytes");
    }

    // Answers and closes. The client may still be sending the body we refused: closing with
    // unread data would reset the connection and could destroy the answer before the client
    // reads it, so the rest is read and dropped first (briefly, and up to a bound).
    void refuse(Responder& responder, boost::asio::ip::tcp::socket& socket, http::status status, const std::string& message) {
        HttpResponse response = reject_(status, message);
        response.keep_alive(false);
        responder.send(std::move(response));
        boost::system::error_code failure;
        socket.shutdown(boost::asio::ip::tcp::socket::shutdown_send, failure);
        char sink[16384];
        for (std::size_t drained = 0; !failure && drained < (64u << 20);) {
            if (!detail::ready_within(socket.native_handle(), POLLIN, std::chrono::seconds(1))) break;
            drained += socket.read_some(boost::asio::buffer(sink), failure);
        }
    }

    Handler handler_;
    RejectHandler reject_;
    HttpLimits limits_;
    boost::asio::io_context context_;
    boost::asio::ip::tcp::acceptor acceptor_;
    std::atomic<bool> stopping_{false};
    std::mutex mutex_;
    std::condition_variable all_closed_;
    std::size_t open_ = 0;
    std::set<int> idle_;
};

}  // namespace loom::serve
