#include "sedensenet/data/image_folder.hpp"

namespace sedensenet::data {

const std::set<std::string>& image_extensions() {
  static const std::set<std::string> extensions = {".jpg", ".jpeg", ".png", ".bmp",
                                                   ".tga", ".gif",  ".pnm", ".ppm",
                                                   ".pgm", ".psd",  ".hdr"};
  return extensions;
}

}  // namespace sedensenet::data

namespace sedensenet::data::detail {

bool is_hidden(const std::filesystem::path& p) {
  const auto name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

std::string lower_extension(const std::filesystem::path& p) {
  auto ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

bool is_dir(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::is_directory(p, ec);
}

std::optional<std::pair<uint64_t, uint64_t>> directory_identity(const std::filesystem::path& p) {
  struct ::stat st {};
  if (::stat(p.c_str(), &st) != 0) return std::nullopt;
  return std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
}

std::vector<std::filesystem::path> list_images(const std::filesystem::path& dir,
                                               ScanSummary& summary) {
  std::vector<std::pair<std::string, std::string>> found;  // (folder, file name)
  std::set<std::pair<uint64_t, uint64_t>> visited;
  if (auto id = directory_identity(dir)) visited.insert(*id);
  std::error_code ec;
  auto options = std::filesystem::directory_options::follow_directory_symlink |
                 std::filesystem::directory_options::skip_permission_denied;
  std::filesystem::recursive_directory_iterator it(dir, options, ec), end;
  TORCH_CHECK(!ec, "cannot list folder ", dir.string(), ": ", ec.message());
  for (; it != end; it.increment(ec)) {
    TORCH_CHECK(!ec, "cannot list folder ", dir.string(), ": ", ec.message());
    const auto& path = it->path();
    if (is_hidden(path)) {
      ++summary.hidden_ignored;
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_directory(ec)) {
      const auto id = directory_identity(path);
      if (!id || !visited.insert(*id).second) {
        ++summary.folders_repeated;
        it.disable_recursion_pending();
      }
      continue;
    }
    if (image_extensions().count(lower_extension(path)) == 0) {
      ++summary.other_ignored;
      continue;
    }
    ++summary.images;
    found.emplace_back(path.parent_path().string(), path.filename().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::filesystem::path> out;
  out.reserve(found.size());
  for (const auto& [folder, name] : found) out.push_back(std::filesystem::path(folder) / name);
  return out;
}

std::vector<std::string> class_folders(const std::filesystem::path& root,
                                       ScanSummary& summary) {
  std::vector<std::string> classes;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
    if (is_hidden(entry.path())) {
      ++summary.hidden_ignored;
      continue;
    }
    if (is_dir(entry.path())) {
      classes.push_back(entry.path().filename().string());
    } else if (image_extensions().count(lower_extension(entry.path()))) {
      ++summary.other_ignored;  // an image directly under root belongs to no class
    }
  }
  TORCH_CHECK(!ec, "cannot list folder ", root.string(), ": ", ec.message());
  std::sort(classes.begin(), classes.end());
  return classes;
}

}  // namespace sedensenet::data::detail

namespace sedensenet::data {

ImageFolderSplits ImageFolder::split(const std::filesystem::path& root,
                                     ImageFolderOptions options) {
  check_root(root);
  const auto train_dir = root / "train";
  const auto val_dir = detail::is_dir(root / "val") ? root / "val" : root / "test";
  if (detail::is_dir(train_dir) && detail::is_dir(val_dir)) {
    ImageFolder train(train_dir, options);
    ImageFolder test;
    test.root_ = val_dir;
    test.options_ = options;
    test.classes_ = train.classes_;
    for (const auto& name : detail::class_folders(val_dir, test.summary_)) {
      TORCH_CHECK(std::binary_search(train.classes_.begin(), train.classes_.end(), name),
                  "class folder '", name, "' in ", val_dir.string(), " has no counterpart in ",
                  train_dir.string(), "; both sides need the same classes");
    }
    for (size_t c = 0; c < test.classes_.size(); ++c) {
      if (!detail::is_dir(val_dir / test.classes_[c])) continue;
      for (const auto& f : detail::list_images(val_dir / test.classes_[c], test.summary_)) {
        test.samples_.push_back({f, static_cast<int64_t>(c)});
      }
    }
    TORCH_CHECK(!test.samples_.empty(), "the evaluation folder ", val_dir.string(),
                " has no images");
    return {std::move(train), std::move(test), true};
  }

  TORCH_CHECK(options.train_fraction() > 0.0 && options.train_fraction() < 1.0,
              "ImageFolderOptions: train_fraction must be in (0, 1), got ",
              options.train_fraction());
  ImageFolder all(root, options);
  // Stratified: each class is shuffled with its own seeded generator and cut at round(n * f),
  // keeping at least one image on each side when the class has two or more.
  std::vector<std::vector<size_t>> by_class(all.classes_.size());
  for (size_t i = 0; i < all.samples_.size(); ++i) {
    by_class[static_cast<size_t>(all.samples_[i].label)].push_back(i);
  }
  std::vector<bool> in_train(all.samples_.size(), false);
  for (size_t c = 0; c < by_class.size(); ++c) {
    const auto& members = by_class[c];
    const auto n = static_cast<int64_t>(members.size());
    Rng rng = Rng::for_item(options.split_seed(), c, 0x5eed);
    const auto order = rng.permutation(n);
    auto n_train =
        static_cast<int64_t>(std::llround(static_cast<double>(n) * options.train_fraction()));
    if (n >= 2) n_train = std::clamp<int64_t>(n_train, 1, n - 1);
    for (int64_t i = 0; i < n_train; ++i) {
      in_train[members[static_cast<size_t>(order[static_cast<size_t>(i)])]] = true;
    }
  }
  // Each side keeps torchvision's sample order.
  std::vector<Sample> train, test;
  for (size_t i = 0; i < all.samples_.size(); ++i) {
    (in_train[i] ? train : test).push_back(all.samples_[i]);
  }
  ImageFolderSplits result{all.subset(std::move(train)), all.subset(std::move(test)), false};
  return result;
}

}  // namespace sedensenet::data

namespace sedensenet::data {

ImageFolder::ImageFolder(const std::filesystem::path& root, ImageFolderOptions options)
    : root_(root), options_(std::move(options)) {
  check_root(root);
  classes_ = detail::class_folders(root, summary_);
  check_classes(root);
  scan_classes(root);
}

auto ImageFolder::get(size_t index) -> torch::data::Example<> {
  return {load(index, epoch_), torch::tensor(samples_.at(index).label, torch::kLong)};
}

auto ImageFolder::load(size_t index, int64_t epoch) const -> torch::Tensor {
  auto image = read_image(samples_.at(index).path, options_.decode());
  if (!transform_) return image;
  Rng rng = Rng::for_item(augmentation_seed_, static_cast<uint64_t>(epoch), index);
  return transform_->apply(image, rng);
}

auto ImageFolder::class_counts() const -> std::vector<int64_t> {
  std::vector<int64_t> counts(classes_.size(), 0);
  for (const auto& s : samples_) ++counts[static_cast<size_t>(s.label)];
  return counts;
}

auto ImageFolder::validate(bool decode, int threads) -> std::vector<BadFile> {
  const size_t n = samples_.size();
  std::vector<std::string> problems(n);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) {
      try {
        const auto bytes = read_file(samples_[i].path, options_.decode().max_file_bytes());
        const auto header = read_header(bytes.data(), bytes.size(), samples_[i].path.string(),
                                        options_.decode());
        const auto truncated = detail::truncation_problem(header.format, bytes.data(), bytes.size());
        if (!truncated.empty()) throw ImageError(samples_[i].path.string(), truncated);
        if (decode) decode_image(bytes, samples_[i].path.string(), options_.decode());
      } catch (const ImageError& e) {
        problems[i] = e.reason();
      } catch (const std::exception& e) {
        problems[i] = e.what();
      }
    }
  };
  run_on_threads(thread_count(threads, "validation threads"), work);

  std::vector<BadFile> bad;
  std::vector<Sample> kept;
  for (size_t i = 0; i < n; ++i) {
    if (problems[i].empty()) {
      kept.push_back(samples_[i]);
      continue;
    }
    if (options_.on_bad_file() == BadFilePolicy::error) {
      throw ImageError(samples_[i].path.string(), problems[i]);
    }
    bad.push_back({samples_[i].path.string(), problems[i]});
  }
  samples_ = std::move(kept);
  summary_.bad.insert(summary_.bad.end(), bad.begin(), bad.end());
  check_no_empty_class("after removing " + std::to_string(bad.size()) + " unusable file(s)");
  return bad;
}

auto ImageFolder::describe() const -> std::string {
  std::ostringstream os;
  const auto counts = class_counts();
  os << samples_.size() << " images in " << classes_.size() << " classes (" << root_.string()
     << ")";
  if (summary_.hidden_ignored || summary_.other_ignored) {
    os << "; ignored " << summary_.hidden_ignored << " hidden and " << summary_.other_ignored
       << " non-image entries";
  }
  if (!summary_.bad.empty()) {
    os << "; removed " << summary_.bad.size() << " unusable file(s):";
    for (const auto& b : summary_.bad) os << "\n  " << b.path << ": " << b.reason;
  }
  return os.str();
}

auto ImageFolder::subset(std::vector<Sample> samples) const -> ImageFolder {
  ImageFolder copy(*this);
  copy.samples_ = std::move(samples);
  return copy;
}

void ImageFolder::check_root(const std::filesystem::path& root) {
  std::error_code ec;
  TORCH_CHECK(std::filesystem::exists(root, ec), "image folder ", root.string(),
              " does not exist");
  TORCH_CHECK(detail::is_dir(root), "image folder ", root.string(),
              " is not a folder (expected one sub-folder per class)");
}

void ImageFolder::check_classes(const std::filesystem::path& root) const {
  TORCH_CHECK(classes_.size() >= 2, "image folder ", root.string(), " has ", classes_.size(),
              " class folder(s); a classifier needs at least two (one sub-folder per class, "
              "e.g. ", root.string(), "/cat/1.jpg and ", root.string(), "/dog/1.jpg)");
}

void ImageFolder::scan_classes(const std::filesystem::path& root) {
  for (size_t c = 0; c < classes_.size(); ++c) {
    const auto files = detail::list_images(root / classes_[c], summary_);
    for (const auto& f : files) samples_.push_back({f, static_cast<int64_t>(c)});
  }
  check_no_empty_class("");
}

void ImageFolder::check_no_empty_class(const std::string& when) const {
  const auto counts = class_counts();
  for (size_t c = 0; c < counts.size(); ++c) {
    TORCH_CHECK(counts[c] > 0, "class '", classes_[c], "' (", (root_ / classes_[c]).string(),
                ") has no usable images", when.empty() ? "" : " " + when,
                "; add images or remove the folder");
  }
}

}  // namespace sedensenet::data
