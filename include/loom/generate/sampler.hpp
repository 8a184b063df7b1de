#pragma once
// Chooses the next token from a row of logits. The steps follow Hugging Face's
// generate(): repetition penalty, then temperature, top-k, top-p and min-p, then a draw
// from the remaining distribution. Temperature 0 means greedy (argmax, lowest id on ties).
// The OpenAI API's presence and frequency penalties come first of all; they count only
// generated tokens (a chat prompt repeats its template tokens, end-of-turn included).
#include <algorithm>
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

        candidates_.clear();
        for (std::size_t id = 0; id < scores_.size(); ++id) {
            candidates_.push_back({scores_[id] / options_.temperature, int(id)});
        }
        const std::size_t keep = options_.top_k ? std::min(options_.top_k, candidates_.size()) : candidates_.size();
        // Descending score, ascending id on ties: a total order, so the result is reproducible.
        auto before = [](const Candidate& a, const Candidate& b) {
            return a.score != b.score ? a.score > b.score : a.id < b.id;
        };
        std::partial_sort(candidates_.begin(), candidates_.begin() + std::ptrdiff_t(keep), candidates_.end(), before);
        // Tokens tied with the k-th stay too, as in Hugging Face's TopKLogitsWarper.
        const float threshold = candidates_[keep - 1].score;
        const auto tied_end = std::partition(candidates_.begin() + std::ptrdiff_t(keep), candidates_.end(),
                                             [threshold](const Candidate& c) { return c.score == threshold; });
        std::sort(candidates_.begin() + std::ptrdiff_t(keep), tied_end, before);
        candidates_.erase(tied_end, candidates_.end());

        to_probabilities();
        std::size_t count = candidates_.size();
        if (options_.top_p < 1.0f) {
            // Keep the smallest prefix whose probability mass reaches top_p (at least one token).
            double mass = 0.0;
            std::size_t i = 0;
            while (i < count && mass < double(options_.top_p)) mass += candidates_[i++].probability;
            count = std::max<std::size_t>(i, 1);
        }
        if (options_.min_p > 0.0f) {
            const double floor = double(options_.min_p) * candidates_[0].probability;
            std::size_t i = 1;
            while (i < count && candidates_[i].probability >= floor) ++i;
            count = i;
        }
        double total = 0.0;
        for (std::size_t i = 0; i < count; ++i) total += candidates_[i].probability;
        double target = random_.uniform() * total;
        for (std::size_t i = 0; i < count; ++i) {
            target -= candidates_[i].probability;
            if (target < 0.0) return candidates_[i].id;
        }
        return candidates_[count - 1].id;
    }

private:
    struct Candidate {
        float score;
        int id;
        double probability = 0.0;
    };

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

    // Softmax over the kept candidates, in their sorted order, with our own exp.
    void to_probabilities() {
        const double maximum = candidates_[0].score;
        double total = 0.0;
        for (Candidate& candidate : candidates_) {
            candidate.probability = kernels::exp_f64(double(candidate.score) - maximum);
            total += candidate.probability;
        }
        for (Candidate& candidate : candidates_) candidate.probability /= total;
    }

    SamplingOptions options_;
    Random random_;
    std::vector<float> scores_;
    std::vector<Candidate> candidates_;
    std::unordered_set<int> seen_;
    std::map<int, std::size_t> counts_;
};

}  // namespace loom::generate
