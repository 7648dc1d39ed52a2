#include "sedensenet/util/svg.hpp"

namespace sedensenet::svg {

std::string escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace sedensenet::svg

namespace sedensenet::svg::detail {

const std::vector<std::string>& palette() {
  static const std::vector<std::string> colors = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                                  "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
  return colors;
}

double nice_step(double span, int target) {
  if (!(span > 0)) return 1.0;
  const double raw = span / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double residual = raw / magnitude;
  const double factor = residual < 1.5 ? 1 : residual < 3.5 ? 2 : residual < 7.5 ? 5 : 10;
  return factor * magnitude;
}

std::string format_number(double v) {
  char buffer[32];
  const double a = std::abs(v);
  if (a != 0 && (a >= 1e5 || a < 1e-3)) {
    std::snprintf(buffer, sizeof buffer, "%.2g", v);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.6g", v);
  }
  return buffer;
}

}  // namespace sedensenet::svg::detail

namespace sedensenet::svg {

std::string line_plot(const std::vector<Series>& series, const ChartOptions& options) {
  size_t longest_name = 0;
  for (const auto& s : series) longest_name = std::max(longest_name, s.name.size());
  const double left = 70, top = 40, bottom = 55;
  const double right = 60 + 7.0 * static_cast<double>(longest_name);  // room for the legend
  const double plot_w = options.width - left - right;
  const double plot_h = options.height - top - bottom;
  double x_min = std::numeric_limits<double>::infinity(), x_max = -x_min;
  double y_min = x_min, y_max = -x_min;
  for (const auto& s : series) {
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x_min = std::min(x_min, s.x[i]);
      x_max = std::max(x_max, s.x[i]);
      y_min = std::min(y_min, s.y[i]);
      y_max = std::max(y_max, s.y[i]);
    }
  }
  if (!std::isfinite(x_min)) x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  if (options.y_from_zero) y_min = std::min(0.0, y_min);
  if (x_max == x_min) x_max = x_min + 1;
  if (y_max == y_min) y_max = y_min + 1;
  const double y_step = detail::nice_step(y_max - y_min);
  y_min = std::floor(y_min / y_step) * y_step;
  y_max = std::ceil(y_max / y_step) * y_step;
  double x_step = detail::nice_step(x_max - x_min);
  bool integer_x = true;  // epochs, depths: no fractional ticks between integer points
  for (const auto& s : series) {
    for (double x : s.x) integer_x = integer_x && std::isfinite(x) && x == std::floor(x);
  }
  if (integer_x && x_step < 1.0) x_step = 1.0;

  auto px = [&](double x) { return left + (x - x_min) / (x_max - x_min) * plot_w; };
  auto py = [&](double y) { return top + plot_h - (y - y_min) / (y_max - y_min) * plot_h; };

  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << options.width << "\" height=\""
      << options.height << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out << "<text x=\"" << options.width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
      << escape(options.title) << "</text>\n";
  // Grid and ticks.
  for (double y = y_min; y <= y_max + y_step * 1e-9; y += y_step) {
    out << "<line x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\"" << py(y)
        << "\" y2=\"" << py(y) << "\" stroke=\"#e5e5e5\"/>\n";
    out << "<text x=\"" << left - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">"
        << detail::format_number(y) << "</text>\n";
  }
  for (double x = std::ceil(x_min / x_step) * x_step; x <= x_max + x_step * 1e-9; x += x_step) {
    out << "<line x1=\"" << px(x) << "\" x2=\"" << px(x) << "\" y1=\"" << top << "\" y2=\""
        << top + plot_h << "\" stroke=\"#f0f0f0\"/>\n";
    out << "<text x=\"" << px(x) << "\" y=\"" << top + plot_h + 18 << "\" text-anchor=\"middle\">"
        << detail::format_number(x) << "</text>\n";
  }
  out << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\""
      << plot_h << "\" fill=\"none\" stroke=\"#333\"/>\n";
  out << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << options.height - 12
      << "\" text-anchor=\"middle\">" << escape(options.x_label) << "</text>\n";
  out << "<text transform=\"translate(16," << top + plot_h / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << escape(options.y_label) << "</text>\n";
  // Series and legend.
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    const std::string color =
        s.color.empty() ? detail::palette()[k % detail::palette().size()] : s.color;
    out << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\""
        << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << " points=\"";
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
        out << px(s.x[i]) << "," << py(s.y[i]) << " ";
      }
    }
    out << "\"/>\n";
    if (s.markers) {
      for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
          out << "<circle cx=\"" << px(s.x[i]) << "\" cy=\"" << py(s.y[i]) << "\" r=\"3\" fill=\""
              << color << "\"/>\n";
        }
      }
    }
    const double ly = top + 10 + 20 * static_cast<double>(k);
    const double lx = left + plot_w + 15;
    out << "<line x1=\"" << lx << "\" x2=\"" << lx + 24 << "\" y1=\"" << ly << "\" y2=\"" << ly
        << "\" stroke=\"" << color << "\" stroke-width=\"2\""
        << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << "/>\n";
    out << "<text x=\"" << lx + 30 << "\" y=\"" << ly + 4 << "\">" << escape(s.name)
        << "</text>\n";
  }
  out << "</svg>\n";
  return out.str();
}

std::string heatmap(const std::vector<std::vector<double>>& values,
                    const std::vector<std::string>& row_labels,
                    const std::vector<std::string>& column_labels,
                    const ChartOptions& options) {
  const size_t rows = values.size();
  const size_t cols = rows ? values[0].size() : 0;
  const double label_w = 110, top = 70, cell = std::max(28.0, 440.0 / std::max<size_t>(cols, 1));
  const double width = label_w + cell * static_cast<double>(cols) + 20;
  const double height = top + cell * static_cast<double>(rows) + 90;
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  out << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
      << escape(options.title) << "</text>\n";
  out << "<text x=\"" << label_w + cell * static_cast<double>(cols) / 2 << "\" y=\"" << height - 10
      << "\" text-anchor=\"middle\">" << escape(options.x_label) << "</text>\n";
  out << "<text x=\"12\" y=\"46\">" << escape(options.y_label) << "</text>\n";
  for (size_t r = 0; r < rows; ++r) {
    double total = 0;
    for (double v : values[r]) total += v;
    const double y = top + cell * static_cast<double>(r);
    out << "<text x=\"" << label_w - 6 << "\" y=\"" << y + cell / 2 + 4
        << "\" text-anchor=\"end\">" << escape(r < row_labels.size() ? row_labels[r] : "")
        << "</text>\n";
    for (size_t c = 0; c < cols; ++c) {
      const double share = total > 0 ? values[r][c] / total : 0.0;
      const int shade = static_cast<int>(255 - 200 * share);
      const double x = label_w + cell * static_cast<double>(c);
      out << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell << "\" height=\""
          << cell << "\" fill=\"rgb(" << shade << "," << shade << ",255)\" stroke=\"#fff\"/>\n";
      out << "<text x=\"" << x + cell / 2 << "\" y=\"" << y + cell / 2 + 4
          << "\" text-anchor=\"middle\" fill=\"" << (share > 0.6 ? "white" : "black") << "\">"
          << detail::format_number(values[r][c]) << "</text>\n";
    }
  }
  for (size_t c = 0; c < cols; ++c) {
    const double x = label_w + cell * static_cast<double>(c) + cell / 2;
    const double y = top + cell * static_cast<double>(rows) + 8;
    out << "<text transform=\"translate(" << x << "," << y << ") rotate(45)\">"
        << escape(c < column_labels.size() ? column_labels[c] : "") << "</text>\n";
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace sedensenet::svg


