// loom_train: train (fine-tune) a Hugging Face checkpoint on text and conversations. See --help.
#include <stdio.h>
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include <loom/train/command_line.hpp>

int main(int argc, char** argv) {
    const std::vector<std::string> arguments(argv + 1, argv + argc);
    // A terminal gets one progress line redrawn in place; a file or a pipe gets a line per step.
    const auto display = isatty(fileno(stdout)) ? loom::train::ProgressDisplay::live : loom::train::ProgressDisplay::lines;
    return loom::train::run_train(arguments, std::cout, std::cerr, display);
}
