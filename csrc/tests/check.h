// A minimal test harness for the host unit tests of the shared __host__ __device__ logic:
// CHECK(cond) records a failure with its location; CHECK_EQ shows both values; main() of each
// test file returns check_exit_code(), non-zero when any check failed.
#pragma once

#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>

namespace vtprune_test {

inline int& failures() {
  static int count = 0;
  return count;
}

inline int& checks() {
  static int count = 0;
  return count;
}

inline void report(bool ok, const char* expr, const char* file, int line, const std::string& detail = "") {
  ++checks();
  if (ok) return;
  if (++failures() <= 20) std::fprintf(stderr, "%s:%d: CHECK failed: %s %s\n", file, line, expr, detail.c_str());
}

template <typename A, typename B>
std::string describe(const A& a, const B& b) {
  std::ostringstream os;
  os << "(" << a << " vs " << b << ")";
  return os.str();
}

inline int check_exit_code(const char* name) {
  std::printf("%s: %d checks, %d failed\n", name, checks(), failures());
  return failures() == 0 ? 0 : 1;
}

}  // namespace vtprune_test

#define CHECK(cond) ::vtprune_test::report(static_cast<bool>(cond), #cond, __FILE__, __LINE__)
#define CHECK_EQ(a, b) \
  ::vtprune_test::report((a) == (b), #a " == " #b, __FILE__, __LINE__, ::vtprune_test::describe((a), (b)))
