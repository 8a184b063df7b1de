// loom_serve: an HTTP server for a Hugging Face checkpoint — the old Loom protocols, an
// OpenAI-compatible API and a web UI, with continuous batching. See --help.
#include <iostream>
#include <string>
#include <vector>

#include <loom/serve/command_line.hpp>

#include "loom_serve_web_assets.hpp"

int main(int argc, char** argv) {
    const std::vector<std::string> arguments(argv + 1, argv + argc);
    return loom::serve::run_serve(arguments, loom_serve::web_assets(), std::cout, std::cerr);
}
