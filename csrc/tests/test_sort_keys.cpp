// rank_key (common/sort_keys.h) must order exactly like the tie rule (common/ranking.h).
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "check.h"
#include "common/ranking.h"
#include "common/sort_keys.h"

using vtprune::descending_key;
using vtprune::rank_key;
using vtprune::ranks_before;

static float from_bits(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

static std::vector<float> special_values() {
  const float inf = std::numeric_limits<float>::infinity();
  return {0.0f,
          -0.0f,
          1.0f,
          -1.0f,
          0.5f,
          -0.5f,
          inf,
          -inf,
          std::numeric_limits<float>::quiet_NaN(),
          -std::numeric_limits<float>::quiet_NaN(),
          from_bits(0x7F800001u),  // signalling NaN
          from_bits(0xFFFFFFFFu),  // NaN with every bit set
          std::numeric_limits<float>::max(),
          std::numeric_limits<float>::lowest(),
          std::numeric_limits<float>::min(),
          -std::numeric_limits<float>::min(),
          std::numeric_limits<float>::denorm_min(),
          -std::numeric_limits<float>::denorm_min(),
          from_bits(0x00000002u),
          from_bits(0x80000002u),
          std::nextafter(1.0f, 2.0f),
          std::nextafter(1.0f, 0.0f),
          1e-8f,
          -1e-8f,
          3.0f};
}

// Every ordered pair of values at a few index pairs: key order == comparator order.
static void check_pairs(const std::vector<float>& values) {
  const uint32_t indices[][2] = {{0, 1}, {1, 0}, {5, 5}, {7, 123456}, {4000000000u, 3}};
  for (float a : values) {
    for (float b : values) {
      for (const auto& ij : indices) {
        const bool by_key = rank_key(a, ij[0]) < rank_key(b, ij[1]);
        const bool by_rule = ranks_before(a, static_cast<int64_t>(ij[0]), b, static_cast<int64_t>(ij[1]));
        CHECK_EQ(by_key, by_rule);
      }
    }
  }
}

// descending_key64 then the index orders doubles like ranks_before<double>.
static void check_pairs64(const std::vector<double>& values) {
  for (double a : values) {
    for (double b : values) {
      for (int64_t ia : {0, 3}) {
        for (int64_t ib : {0, 3}) {
          const uint64_t ka = vtprune::descending_key64(a), kb = vtprune::descending_key64(b);
          const bool by_key = ka < kb || (ka == kb && ia < ib);
          CHECK_EQ(by_key, ranks_before(a, ia, b, ib));
        }
      }
    }
  }
}

int main() {
  const std::vector<float> specials = special_values();
  check_pairs(specials);

  // Random bit patterns cover every exponent, sign and NaN payload.
  std::mt19937 rng(1234);
  std::vector<float> randoms(specials);
  for (int i = 0; i < 300; ++i) randoms.push_back(from_bits(static_cast<uint32_t>(rng())));
  check_pairs(randoms);

  // Fixed points of the encoding.
  CHECK_EQ(descending_key(std::numeric_limits<float>::quiet_NaN()), 0xFFFFFFFFu);
  CHECK_EQ(descending_key(from_bits(0xFFFFFFFFu)), 0xFFFFFFFFu);
  CHECK_EQ(descending_key(0.0f), descending_key(-0.0f));
  CHECK(descending_key(-std::numeric_limits<float>::infinity()) < 0xFFFFFFFFu);
  CHECK(descending_key(std::numeric_limits<float>::infinity()) < descending_key(std::numeric_limits<float>::max()));
  CHECK(descending_key(1.0f) < descending_key(0.5f));
  CHECK(descending_key(-0.5f) < descending_key(-1.0f));
  // No number maps to the NaN key.
  for (int i = 0; i < 100000; ++i) {
    const float v = from_bits(static_cast<uint32_t>(rng()));
    if (v == v) CHECK(descending_key(v) != 0xFFFFFFFFu);
  }
  // float64 keys: every float widened (same rank as its float key), specials, random bit patterns.
  std::vector<double> doubles;
  for (float v : randoms) doubles.push_back(static_cast<double>(v));
  for (int i = 0; i < 200; ++i) {
    const uint64_t bits = (static_cast<uint64_t>(rng()) << 32) | rng();
    double d;
    std::memcpy(&d, &bits, sizeof d);
    doubles.push_back(d);
  }
  doubles.push_back(1.0 + 1e-16);  // distinct from 1.0 only in float64
  doubles.push_back(std::nextafter(1.0, 2.0));
  check_pairs64(doubles);
  for (float a : randoms) {
    for (float b : randoms) {
      CHECK_EQ(descending_key(a) < descending_key(b),
               vtprune::descending_key64(static_cast<double>(a)) < vtprune::descending_key64(static_cast<double>(b)));
    }
  }
  CHECK_EQ(vtprune::descending_key64(std::nan("")), ~0ull);
  CHECK_EQ(vtprune::descending_key64(0.0), vtprune::descending_key64(-0.0));

  // The index round-trips through the low half.
  CHECK_EQ(vtprune::rank_key_index(rank_key(2.5f, 77u)), 77u);
  CHECK_EQ(vtprune::rank_key_index(rank_key(std::nanf(""), 0xFFFFFFFEu)), 0xFFFFFFFEu);
  return vtprune_test::check_exit_code("test_sort_keys");
}
