// Classes of bitwise-identical rows (the CPU kernel of cosine_dedup_mask, cosine_dedup_mask.cpp).
//
// Every cosine of common/cosine.h, and every faster one of dedup_cosines.h, is a function of the two
// rows' values alone, so rows with the same bits have the same cosines with everything: the kernel
// computes one cosine per pair of classes and one maximum per class and round. Flat image regions
// give a few large classes (most tokens copies of a few vectors); ordinary features give one class
// per row, at the cost of one hash per row.
#pragma once

#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

namespace vtprune::cpu {

struct IdenticalRows {
  std::vector<int32_t> class_of;  // [n] class of row i; classes are numbered by their first row
  std::vector<int32_t> first;     // [classes] the first (lowest) row of each class

  int64_t classes() const { return static_cast<int64_t>(first.size()); }
};

// 64-bit hash of `bytes` bytes: a multiply-xorshift over 8-byte words in four independent streams
// (word k to stream k % 4, so the multiplies of a row overlap instead of forming one chain of
// latencies), then the tail, then the streams folded. Only a speed-up of the lookup: classes are
// decided by comparing bytes.
inline uint64_t row_hash(const unsigned char* data, size_t bytes) {
  constexpr uint64_t kMultiplier = 0x9E3779B97F4A7C15ull;
  uint64_t h[4] = {bytes * kMultiplier, bytes + 1, bytes + 2, bytes + 3};
  auto mix = [](uint64_t state, uint64_t word) {
    state = (state ^ word) * kMultiplier;
    return state ^ (state >> 29);
  };
  size_t k = 0;
  for (; k + 32 <= bytes; k += 32) {
    for (int s = 0; s < 4; ++s) {
      uint64_t word;
      std::memcpy(&word, data + k + 8 * s, 8);
      h[s] = mix(h[s], word);
    }
  }
  for (; k + 8 <= bytes; k += 8) {
    uint64_t word;
    std::memcpy(&word, data + k, 8);
    h[0] = mix(h[0], word);
  }
  for (; k < bytes; ++k) h[0] = (h[0] ^ data[k]) * kMultiplier;
  const uint64_t folded = mix(mix(mix(h[0], h[1]), h[2]), h[3]);
  return folded ^ (folded >> 32);
}

// The classes of rows row(0) .. row(n - 1), each `bytes` long (rows compared byte for byte, so
// 0.0 and -0.0, or two NaN payloads, are different rows).
template <typename RowPointer>
IdenticalRows identical_rows(int64_t n, size_t bytes, RowPointer row) {
  IdenticalRows classes;
  classes.class_of.resize(n);
  std::unordered_map<uint64_t, int32_t> by_hash;  // hash -> the first class with it
  std::vector<int32_t> next_with_hash;            // [classes] the next class with the same hash, or -1
  by_hash.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto* data = reinterpret_cast<const unsigned char*>(row(i));
    const int32_t fresh = static_cast<int32_t>(classes.first.size());
    const auto [it, added] = by_hash.emplace(row_hash(data, bytes), fresh);
    int32_t c = added ? fresh : it->second;
    if (!added) {  // walk the classes with this hash for one with the same bytes
      int32_t last = c;
      while (c >= 0 && std::memcmp(row(classes.first[c]), data, bytes) != 0) {
        last = c;
        c = next_with_hash[c];
      }
      if (c < 0) {
        c = fresh;
        next_with_hash[last] = fresh;
      }
    }
    if (c == fresh) {
      classes.first.push_back(static_cast<int32_t>(i));
      next_with_hash.push_back(-1);
    }
    classes.class_of[i] = c;
  }
  return classes;
}

}  // namespace vtprune::cpu
