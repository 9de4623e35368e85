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

// The classes of rows row(0) .. row(n - 1), each `bytes` long (rows compared byte for byte, so
// 0.0 and -0.0, or two NaN payloads, are different rows). key(i): a 64-bit value; rows are compared
// only with rows of the same key, so identical rows should share it (a fingerprint computed from the
// row's values alone). Rows given different keys are different classes even when identical: that
// only loses their grouping (the kernel gives non-finite rows keys of their own).
template <typename RowPointer, typename RowKey>
IdenticalRows identical_rows(int64_t n, size_t bytes, RowPointer row, RowKey key) {
  IdenticalRows classes;
  classes.class_of.resize(n);
  std::unordered_map<uint64_t, int32_t> by_hash;  // hash -> the first class with it
  std::vector<int32_t> next_with_hash;            // [classes] the next class with the same hash, or -1
  by_hash.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto* data = reinterpret_cast<const unsigned char*>(row(i));
    const int32_t fresh = static_cast<int32_t>(classes.first.size());
    const auto [it, added] = by_hash.emplace(key(i), fresh);
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
