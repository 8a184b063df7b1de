// Sampling: greedy ties, reproducible seeds, each filter's effect, and a draw whose
// frequencies follow the softmax distribution.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "loom/core/random.hpp"
#include "loom/generate/sampler.hpp"

using loom::generate::Sampler;
using loom::generate::SamplingOptions;

namespace {

std::vector<int> draws(SamplingOptions options, const std::vector<float>& logits, int count) {
    Sampler sampler(options);
    std::vector<int> ids;
    for (int i = 0; i < count; ++i) ids.push_back(sampler.sample(logits, {}));
    return ids;
}

}  // namespace

TEST_CASE("sampler: temperature 0 is argmax with the lowest id on ties", "[sampler]") {
    Sampler sampler(SamplingOptions{});
    CHECK(sampler.sample(std::vector<float>{0.1f, 3.0f, -1.0f, 3.0f}, {}) == 1);
    CHECK(sampler.sample(std::vector<float>{-5.0f, -4.0f}, {}) == 1);
}

TEST_CASE("sampler: the same seed gives the same tokens, another seed other tokens", "[sampler]") {
    std::vector<float> logits(100);
    for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(double(i)));
    SamplingOptions options;
    options.temperature = 1.0f;
    options.seed = 42;
    const auto first = draws(options, logits, 50);
    CHECK(draws(options, logits, 50) == first);
    options.seed = 43;
    CHECK(draws(options, logits, 50) != first);
}

TEST_CASE("sampler: top-k 1, a tiny top-p and min-p 1 all reduce to greedy", "[sampler]") {
    const std::vector<float> logits = {0.5f, 2.0f, 1.9f, -1.0f, 1.95f};
    SamplingOptions options;
    options.temperature = 5.0f;  // nearly flat, so only the filters can force the choice
    SECTION("top-k") { options.top_k = 1; }
    SECTION("top-p") { options.top_p = 1e-6f; }
    SECTION("min-p") { options.min_p = 1.0f; }
    for (int id : draws(options, logits, 200)) CHECK(id == 1);
}

TEST_CASE("sampler: top-k keeps exactly the k most likely tokens", "[sampler]") {
    const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f};
    SamplingOptions options;
    options.temperature = 10.0f;
    options.top_k = 2;
    std::map<int, int> seen;
    for (int id : draws(options, logits, 2000)) ++seen[id];
    CHECK(seen.size() == 2);
    CHECK(seen.count(3) == 1);
    CHECK(seen.count(4) == 1);
}

TEST_CASE("sampler: draw frequencies follow the softmax of logits / temperature", "[sampler]") {
    const std::vector<float> logits = {1.0f, 2.0f, 0.0f, 1.5f};
    SamplingOptions options;
    options.temperature = 0.7f;
    options.seed = 9;
    const int count = 40000;
    std::vector<int> histogram(logits.size(), 0);
    for (int id : draws(options, logits, count)) ++histogram[std::size_t(id)];
    double total = 0;
    for (float logit : logits) total += std::exp(logit / 0.7);
    for (std::size_t id = 0; id < logits.size(); ++id) {
        const double expected = std::exp(logits[id] / 0.7) / total;
        INFO("token " << id);
        CHECK(double(histogram[id]) / count == Approx(expected).margin(0.01));
    }
}

TEST_CASE("sampler: the repetition penalty divides positive and multiplies negative logits of seen tokens", "[sampler]") {
    SamplingOptions options;
    options.repeat_penalty = 2.0f;
    Sampler sampler(options);
    const std::vector<float> logits = {3.0f, 2.0f, -1.0f};
    const std::vector<int> history = {0, 0};
    CHECK(sampler.sample(logits, history) == 1);  // 3 / 2 = 1.5 < 2
    const std::vector<float> negative = {-1.0f, -1.5f};
    const std::vector<int> seen_first = {0};
    CHECK(sampler.sample(negative, seen_first) == 1);  // -1 * 2 = -2 < -1.5
}

TEST_CASE("sampler: invalid options are rejected with the value named", "[sampler]") {
    auto rejects = [](SamplingOptions options, const char* fragment) {
        CHECK_THROWS_WITH(Sampler(options), Catch::Contains(fragment));
    };
    SamplingOptions bad;
    bad.temperature = -1.0f;
    rejects(bad, "temperature");
    bad = {};
    bad.top_p = 0.0f;
    rejects(bad, "top_p");
    bad = {};
    bad.min_p = 1.5f;
    rejects(bad, "min_p");
    bad = {};
    bad.repeat_penalty = 0.0f;
    rejects(bad, "repeat penalty");
}

TEST_CASE("sampler: top-k keeps every token tied with the k-th, as Hugging Face does", "[sampler]") {
    const std::vector<float> logits = {1.0f, 1.0f, 1.0f, 0.0f};
    SamplingOptions options;
    options.temperature = 1.0f;
    options.top_k = 1;
    std::map<int, int> seen;
    for (int id : draws(options, logits, 3000)) ++seen[id];
    CHECK(seen.size() == 3);
    CHECK(seen.count(3) == 0);
}

namespace {

// The filters as Hugging Face applies them, over the whole vocabulary sorted: top-k (ties with
// the k-th kept), softmax of the survivors, top-p (the smallest prefix reaching the mass), then
// min-p. Returns each kept token's probability among the kept.
std::map<int, double> reference_distribution(const std::vector<float>& logits, const SamplingOptions& options) {
    std::vector<std::pair<double, int>> sorted;
    for (std::size_t id = 0; id < logits.size(); ++id) sorted.push_back({double(logits[id] / options.temperature), int(id)});
    std::sort(sorted.begin(), sorted.end(), [](auto a, auto b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    std::size_t keep = sorted.size();
    if (options.top_k != 0 && options.top_k < keep) {
        keep = options.top_k;
        while (keep < sorted.size() && sorted[keep].first == sorted[options.top_k - 1].first) ++keep;
    }
    std::vector<double> probability(keep);
    double total = 0.0;
    for (std::size_t i = 0; i < keep; ++i) total += probability[i] = std::exp(sorted[i].first - sorted[0].first);
    for (double& p : probability) p /= total;
    std::size_t count = 0;
    for (double mass = 0.0; count < keep && mass < double(options.top_p); ++count) mass += probability[count];
    std::size_t kept = 1;
    while (kept < count && probability[kept] >= double(options.min_p) * probability[0]) ++kept;
    std::map<int, double> result;
    double kept_total = 0.0;
    for (std::size_t i = 0; i < kept; ++i) kept_total += probability[i];
    for (std::size_t i = 0; i < kept; ++i) result[sorted[i].second] = probability[i] / kept_total;
    return result;
}

}  // namespace

TEST_CASE("sampler: the filters keep what a sort of the whole vocabulary keeps, with its probabilities", "[sampler]") {
    loom::Random random(5);
    std::vector<float> logits(300);
    for (float& logit : logits) logit = float(random.uniform() * 6.0 - 3.0);
    logits[7] = logits[8] = logits[9] = 2.75f;  // ties around a top-k boundary
    struct Case {
        float temperature, top_p, min_p;
        std::size_t top_k;
    };
    const Case cases[] = {{1.0f, 1.0f, 0.0f, 12}, {0.6f, 0.8f, 0.0f, 0},  {1.4f, 0.9f, 0.05f, 40},
                          {0.5f, 1.0f, 0.2f, 0},  {1.0f, 0.3f, 0.0f, 20}, {2.0f, 1.0f, 0.0f, 0}};
    for (const Case& c : cases) {
        SamplingOptions options;
        options.temperature = c.temperature;
        options.top_p = c.top_p;
        options.min_p = c.min_p;
        options.top_k = c.top_k;
        options.seed = 11;
        const auto expected = reference_distribution(logits, options);
        const int count = 30000;
        std::map<int, int> seen;
        for (int id : draws(options, logits, count)) ++seen[id];
        INFO("temperature " << c.temperature << " top_p " << c.top_p << " min_p " << c.min_p << " top_k " << c.top_k
                            << ": " << expected.size() << " tokens kept");
        for (const auto& [id, times] : seen) {
            INFO("token " << id);
            REQUIRE(expected.count(id) == 1);
            CHECK(double(times) / count == Approx(expected.at(id)).margin(0.012));
        }
        for (const auto& [id, probability] : expected) {
            INFO("token " << id);
            if (probability > 0.002) CHECK(seen.count(id) == 1);
        }
    }
}

TEST_CASE("sampler: top-p finds a nucleus of many unlikely tokens beside a likely one", "[sampler]") {
    // One token of weight 1 and 9999 of weight e^-8 (below the first floor of 2^-10), which
    // hold most of the mass: the nucleus takes the likely token and the unlikely ones by id.
    std::vector<float> logits(10000, -8.0f);
    logits[4321] = 0.0f;
    SamplingOptions options;
    options.temperature = 1.0f;
    options.top_p = 0.9f;
    options.seed = 3;
    const auto expected = reference_distribution(logits, options);
    REQUIRE(expected.size() > 1000);
    int largest = 0;
    for (int id : draws(options, logits, 5000)) {
        REQUIRE(expected.count(id) == 1);
        largest = std::max(largest, id);
    }
    CHECK(largest > expected.rbegin()->first - 100);  // the draws reach the nucleus's last tokens
}

TEST_CASE("sampler: logits with no finite value are refused, not drawn from", "[sampler]") {
    SamplingOptions options;
    options.temperature = 1.0f;
    Sampler sampler(options);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH(sampler.sample(std::vector<float>{nan, nan, nan}, {}), Catch::Contains("no logit is a finite number"));
    const float infinity = std::numeric_limits<float>::infinity();
    CHECK_THROWS_WITH(sampler.sample(std::vector<float>{infinity, infinity}, {}), Catch::Contains("no logit is a finite number"));
}
