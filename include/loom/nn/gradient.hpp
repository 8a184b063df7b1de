#pragma once
// What every backward pass shares: where parameter gradients go.
#include <functional>

#include "loom/core/tensor.hpp"

namespace loom::nn {

// Backward passes add parameter gradients where this points them: the gradient buffer
// of a weight, or null to skip it (a frozen tensor). The trainer's parameters provide it.
using GradientOf = std::function<float*(const TensorView&)>;

}  // namespace loom::nn
