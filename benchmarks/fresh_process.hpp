#pragma once
// What the benchmarks share: one measurement per fresh process (a child prints a line
// "RESULT v1 v2 ..."), and medians over rounds.
#include <algorithm>
#include <array>
#include <cstdio>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sedensenet::bench {

/// Runs `command` in a fresh process and returns the numbers of its RESULT line; throws with the
/// command's output when it fails or prints none.
inline std::vector<double> run_fresh(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((command + " 2>&1").c_str(), "r"), pclose);
  if (!pipe) throw std::runtime_error("cannot run: " + command);
  std::array<char, 4096> line{};
  std::string output;
  std::vector<double> values;
  bool found = false;
  while (fgets(line.data(), static_cast<int>(line.size()), pipe.get()) != nullptr) {
    output += line.data();
    if (std::string(line.data()).rfind("RESULT ", 0) == 0) {
      std::istringstream in(line.data() + 7);
      values.clear();
      for (double v; in >> v;) values.push_back(v);
      found = !values.empty();
    }
  }
  const int status = pclose(pipe.release());
  if (!found || status != 0) throw std::runtime_error("measurement failed: " + command + "\n" + output);
  return values;
}

/// The median (the upper one of an even count).
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace sedensenet::bench
