#pragma once
// Chooses the next token from a row of logits. The steps follow Hugging Face's
// generate(): repetition penalty, then temperature, top-k, top-p and min-p, then a draw
// from the remaining distribution. Temperature 0 means greedy (argmax, lowest id on ties).
// The OpenAI API's presence and frequency penalties come first of all; they count only
// generated tokens (a chat prompt repeats its template tokens, end-of-turn included).
#include <algorithm>
#include <functional>
#include <limits>
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "loom/core/error.hpp"
#include "loom/core/random.hpp"
#include "loom/kernels/math.hpp"
#include "loom/kernels/ops.hpp"

namespace loom::generate {

struct SamplingOptions {
    float temperature = 0.0f;     // 0: greedy
    std::size_t top_k = 0;        // 0: no limit
    float top_p = 1.0f;           // 1: no nucleus cut
    float min_p = 0.0f;           // 0: no floor relative to the most likely token
    float repeat_penalty = 1.0f;  // 1: off; > 1 discourages tokens already in the sequence
    float presence_penalty = 0.0f;   // subtracted once from every token generated so far
    float frequency_penalty = 0.0f;  // subtracted per occurrence among the generated tokens
    std::uint64_t seed = 0;

    void validate() const {
        if (!(temperature >= 0.0f)) throw argument_error("temperature must be >= 0, got " + std::to_string(temperature));
        if (!(top_p > 0.0f && top_p <= 1.0f)) throw argument_error("top_p must be in (0, 1], got " + std::to_string(top_p));
        if (!(min_p >= 0.0f && min_p <= 1.0f)) throw argument_error("min_p must be in [0, 1], got " + std::to_string(min_p));
        if (!(repeat_penalty > 0.0f)) throw argument_error("repeat penalty must be > 0, got " + std::to_string(repeat_penalty));
        if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
            throw argument_error("presence_penalty must be in [-2, 2], got " + std::to_string(presence_penalty));
        if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
            throw argument_error("frequency_penalty must be in [-2, 2], got " + std::to_string(frequency_penalty));
    }
};

class Sampler {
public:
    explicit Sampler(SamplingOptions options) : options_(options), random_(options.seed) { options_.validate(); }

    // history: every token of the sequence so far, the prompt's `prompt_length` first.
    int sample(std::span<const float> logits, std::span<const int> history, std::size_t prompt_length = 0) {
        const bool penalised = penalises_occurrences() || penalises_repeats();
        if (options_.temperature == 0.0f && !penalised) return int(kernels::argmax(logits.data(), logits.size()));
        scores_.assign(logits.begin(), logits.end());
        apply_occurrence_penalties(history.subspan(std::min(prompt_length, history.size())));
        apply_repeat_penalty(history);
        if (options_.temperature == 0.0f) return int(kernels::argmax(scores_.data(), scores_.size()));

        // The filters below each keep a prefix of the tokens ordered by descending score
        // (ascending id on ties), so what they keep is a test on a token, made without
        // sorting the vocabulary: top-k finds its k-th score with a small heap, and top-p
        // sorts only the few tokens that can hold its mass.
        for (float& score : scores_) score = score / options_.temperature;
        const std::size_t n = scores_.size();
        const float top = kernels::detail::maximum(scores_.data(), n);
        const bool limited = options_.top_k != 0 && options_.top_k < n;
        // Weights relative to the most likely token (exp(0) = 1), of the top-k tokens only.
        if (limited) {
            const float kth_score = kth_largest_score(options_.top_k);
            top_k_.clear();
            weights_.resize(n);
            for (std::size_t id = 0; id < n; ++id) {
                if (scores_[id] < kth_score) continue;  // tokens tied with the k-th stay, as in Hugging Face
                top_k_.push_back(id);
                weights_[id] = kernels::exp_f32(scores_[id] - top);
            }
        } else {
            weights_.assign(scores_.begin(), scores_.end());
            kernels::detail::exp_of_difference(weights_.data(), top, n, n);
        }
        auto each_in_top_k = [&](auto&& visit) {
            if (limited) {
                for (std::size_t id : top_k_) visit(id);
            } else {
                for (std::size_t id = 0; id < n; ++id) visit(id);
            }
        };
        const Boundary nucleus = options_.top_p < 1.0f ? top_p_boundary(each_in_top_k) : Boundary::everything();
        // min-p: at least min_p times the most likely token's probability, i.e. its weight.
        auto kept = [&](std::size_t id) { return weights_[id] >= options_.min_p && nucleus.keeps(scores_[id], id); };

        double total = 0.0;
        each_in_top_k([&](std::size_t id) {
            if (kept(id)) total += double(weights_[id]);
        });
        double target = random_.uniform() * total;
        int chosen = -1;
        each_in_top_k([&](std::size_t id) {
            if (target < 0.0 || !kept(id)) return;
            chosen = int(id);
            target -= double(weights_[id]);
        });
        // The most likely token is always kept (weight 1), unless no score is a number.
        if (chosen < 0) throw argument_error("cannot sample: no logit is a finite number");
        return chosen;
    }

private:
    // The last token a filter keeps in the order of descending score, ascending id.
    struct Boundary {
        float score;
        std::size_t id;
        static Boundary everything() noexcept {
            return {-std::numeric_limits<float>::infinity(), std::numeric_limits<std::size_t>::max()};
        }
        bool keeps(float other_score, std::size_t other_id) const noexcept {
            return other_score > score || (other_score == score && other_id <= id);
        }
    };

    // Whether token a comes before token b: descending score, ascending id on ties (a total
    // order, so the result is reproducible).
    bool before(std::size_t a, std::size_t b) const noexcept {
        return scores_[a] != scores_[b] ? scores_[a] > scores_[b] : a < b;
    }

    // The k-th largest score, k < vocabulary: a min-heap of the k largest seen so far, which
    // most scores leave at one comparison.
    float kth_largest_score(std::size_t k) {
        heap_.assign(scores_.begin(), scores_.begin() + std::ptrdiff_t(k));
        std::make_heap(heap_.begin(), heap_.end(), std::greater<float>());
        for (std::size_t id = k; id < scores_.size(); ++id) {
            if (scores_[id] <= heap_.front()) continue;
            std::pop_heap(heap_.begin(), heap_.end(), std::greater<float>());
            heap_.back() = scores_[id];
            std::push_heap(heap_.begin(), heap_.end(), std::greater<float>());
        }
        return heap_.front();
    }

    // The smallest prefix of the top-k tokens, in order, whose probability mass (normalised
    // over them) reaches top_p, at least one token. The prefix lies among the tokens of weight
    // >= floor for any floor whose tokens hold that mass, so only those are sorted; the floor
    // starts at 2^-10 of the most likely token's weight and drops.
    template <typename EachInTopK>
    Boundary top_p_boundary(const EachInTopK& each_in_top_k) {
        double total = 0.0;
        each_in_top_k([&](std::size_t id) { total += double(weights_[id]); });
        const double wanted = double(options_.top_p) * total;
        for (float floor = 0x1p-10f;; floor = floor > 0x1p-60f ? floor * 0x1p-10f : 0.0f) {
            double mass = 0.0;
            order_.clear();
            each_in_top_k([&](std::size_t id) {
                if (weights_[id] < floor) return;
                mass += double(weights_[id]);
                order_.push_back(id);
            });
            if (mass < wanted && floor > 0.0f) continue;
            std::sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) { return before(a, b); });
            double prefix = 0.0;
            for (std::size_t id : order_) {
                prefix += double(weights_[id]) / total;
                if (prefix >= double(options_.top_p)) return {scores_[id], id};
            }
            // Rounding left the sorted sum short of the mass: with every token, keep them all.
            if (floor == 0.0f) return Boundary::everything();
        }
    }

    bool penalises_repeats() const noexcept { return options_.repeat_penalty != 1.0f; }
    bool penalises_occurrences() const noexcept {
        return options_.presence_penalty != 0.0f || options_.frequency_penalty != 0.0f;
    }

    // Hugging Face / CTRL rule: divide positive logits, multiply negative ones.
    void apply_repeat_penalty(std::span<const int> history) {
        if (!penalises_repeats()) return;
        seen_.clear();
        for (int id : history) {
            if (id < 0 || std::size_t(id) >= scores_.size() || !seen_.insert(id).second) continue;
            float& score = scores_[std::size_t(id)];
            score = score > 0.0f ? score / options_.repeat_penalty : score * options_.repeat_penalty;
        }
    }

    void apply_occurrence_penalties(std::span<const int> generated) {
        if (!penalises_occurrences()) return;
        counts_.clear();
        for (int id : generated) {
            if (id >= 0 && std::size_t(id) < scores_.size()) ++counts_[id];
        }
        for (const auto& [id, count] : counts_) {
            scores_[std::size_t(id)] -= options_.presence_penalty + options_.frequency_penalty * float(count);
        }
    }

    SamplingOptions options_;
    Random random_;
    std::vector<float> scores_, weights_, heap_;
    std::vector<std::size_t> top_k_, order_;
    std::unordered_set<int> seen_;
    std::map<int, std::size_t> counts_;
};

}  // namespace loom::generate
