#pragma once
/// \file
/// Small self-contained SVG charts: line plots (training curves, benchmark series) and heatmaps
/// (confusion matrices). Output is a standalone SVG document any browser shows.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace sedensenet::svg {

/// One line of a `line_plot`.
struct Series {
  std::string name;        ///< legend text
  std::vector<double> x;   ///< x values (same length as y)
  std::vector<double> y;   ///< y values; NaN points are skipped
  std::string color;       ///< CSS colour; empty picks one from the palette
  bool dashed = false;     ///< dashed line (e.g. for a bound or a reference)
  bool markers = true;     ///< draw a dot at each point
};

/// Labels and size of a chart.
struct ChartOptions {
  std::string title;
  std::string x_label;
  std::string y_label;
  int width = 720;
  int height = 420;
  bool y_from_zero = false;  ///< start the y axis at 0 rather than at the data's minimum
};

/// Escapes text for use inside an SVG element or attribute.
std::string escape(const std::string& text);

namespace detail {
const std::vector<std::string>& palette();

/// Round tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over the span.
double nice_step(double span, int target = 6);

std::string format_number(double v);
}  // namespace detail

/// A line chart of one or more series with axes, ticks, grid and legend.
std::string line_plot(const std::vector<Series>& series, const ChartOptions& options);

/// A matrix as coloured cells with the value written in each (e.g. a confusion matrix: rows =
/// true class, columns = predicted class). Colour intensity is the value relative to its row's
/// total, so rare classes are as readable as common ones.
std::string heatmap(const std::vector<std::vector<double>>& values,
                    const std::vector<std::string>& row_labels,
                    const std::vector<std::string>& column_labels,
                    const ChartOptions& options);

}  // namespace sedensenet::svg
