#pragma once
// A training batch: what the data pipeline produces and the training pass consumes.
#include <cstddef>
#include <vector>

namespace loom::train {

// The target a loss skips, as PyTorch's cross_entropy(ignore_index=-100).
inline constexpr int ignore_index = -100;

// `rows` windows one after another, each its own sequence from position 0.
struct Batch {
    std::size_t rows = 0;
    std::size_t sequence_length = 0;
    std::vector<int> inputs;   // [rows * sequence_length] token ids
    std::vector<int> targets;  // [rows * sequence_length] the next token, or ignore_index where it is not trained
};

}  // namespace loom::train
