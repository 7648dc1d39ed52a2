// ImageFolder: class indices, file order, ignored files, splits (predefined and stratified),
// validation policies and every folder-level error.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "sedensenet/data/image_folder.hpp"
#include "sedensenet/data/split_record.hpp"
#include "support/image_tree.hpp"
#include "support/python.hpp"

using namespace sedensenet::data;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

TEST_CASE("Classes are sorted folder names and files are in torchvision's order", "[image_folder]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"zebra", "Apple", "mango"}, {2, 3, 2});
  fs::create_directories(dir / "mango" / "sub");
  write_png(dir / "mango" / "sub" / "a.png", torch::zeros({3, 4, 4}, torch::kUInt8));
  write_png(dir / "mango" / "B.PNG", torch::zeros({3, 4, 4}, torch::kUInt8));  // extension case
  std::ofstream(dir / "mango" / "readme.txt") << "not an image";
  std::ofstream(dir / "mango" / ".DS_Store") << "hidden";
  fs::create_directories(dir / ".ipynb_checkpoints");

  ImageFolder folder(dir.path());
  CHECK(folder.classes() == std::vector<std::string>{"Apple", "mango", "zebra"});
  CHECK(folder.class_counts() == std::vector<int64_t>{3, 4, 2});
  CHECK(folder.summary().hidden_ignored == 2);
  CHECK(folder.summary().other_ignored == 1);
  std::vector<std::string> mango;
  for (const auto& s : folder.samples()) {
    if (s.label == 1) mango.push_back(fs::relative(s.path, dir.path()).string());
  }
  // torchvision: sorted(os.walk(...)) by folder, then sorted file names.
  CHECK(mango == std::vector<std::string>{"mango/B.PNG", "mango/img_000.png", "mango/img_001.png",
                                          "mango/sub/a.png"});
  auto example = folder.get(0);
  CHECK(example.data.sizes() == torch::IntArrayRef({3, 12, 12}));
  CHECK(example.target.item<int64_t>() == 0);
  CHECK_THAT(folder.describe(), Contains("9 images in 3 classes"));
}

TEST_CASE("Class indices and file order equal torchvision's ImageFolder",
          "[image_folder][python]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir / "data", {"b", "a", "C", "a b"}, {3, 2, 2, 1});
  fs::create_directories(dir / "data" / "a" / "deeper" / "x");
  write_png(dir / "data" / "a" / "deeper" / "x" / "0.png", torch::zeros({3, 4, 4}, torch::kUInt8));
  write_png(dir / "data" / "a" / "deeper" / "z.png", torch::zeros({3, 4, 4}, torch::kUInt8));
  std::ofstream(dir / "script.py")
      << "import sys, torchvision\n"
         "ds = torchvision.datasets.ImageFolder(sys.argv[1])\n"
         "for path, label in ds.samples: print(label, path)\n";
  auto result = sedensenet::test::run_command(sedensenet::test::python_interpreter() + " " + (dir / "script.py").string() +
                                              " " + (dir / "data").string());
  REQUIRE(result.exit_code == 0);
  std::string expected;
  ImageFolder folder(dir / "data");
  for (const auto& s : folder.samples()) expected += std::to_string(s.label) + " " + s.path.string() + "\n";
  CHECK(result.output == expected);
}

TEST_CASE("train/ and val/ (or test/) sub-folders are the splits", "[image_folder][split]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir / "train", {"cat", "dog", "owl"}, {4, 3, 2});
  sedensenet::test::make_image_tree(dir / "test", {"cat", "dog"}, {2, 1});
  auto splits = ImageFolder::split(dir.path());
  CHECK(splits.predefined);
  CHECK(splits.train.classes() == std::vector<std::string>{"cat", "dog", "owl"});
  CHECK(splits.test.classes() == splits.train.classes());
  CHECK(splits.train.size().value() == 9);
  CHECK(splits.test.class_counts() == std::vector<int64_t>{2, 1, 0});

  sedensenet::test::make_image_tree(dir / "test", {"fox"}, {1});
  REQUIRE_THROWS_WITH(ImageFolder::split(dir.path()),
                      Contains("class folder 'fox'") && Contains("no counterpart"));
}

TEST_CASE("The stratified split is seeded, reproducible, stratified and disjoint",
          "[image_folder][split]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b", "c"}, {50, 20, 2});
  auto first = ImageFolder::split(dir.path(), ImageFolderOptions().split_seed(3));
  auto again = ImageFolder::split(dir.path(), ImageFolderOptions().split_seed(3));
  auto other = ImageFolder::split(dir.path(), ImageFolderOptions().split_seed(4));
  CHECK_FALSE(first.predefined);
  auto paths = [](const ImageFolder& f) {
    std::vector<std::string> p;
    for (const auto& s : f.samples()) p.push_back(s.path.string());
    return p;
  };
  CHECK(paths(first.train) == paths(again.train));
  CHECK(paths(first.test) == paths(again.test));
  CHECK(paths(first.train) != paths(other.train));
  // 80/20 within every class; a class of two keeps one image on each side.
  CHECK(first.train.class_counts() == std::vector<int64_t>{40, 16, 1});
  CHECK(first.test.class_counts() == std::vector<int64_t>{10, 4, 1});
  // Disjoint and complete.
  const auto train_paths = paths(first.train);
  std::set<std::string> train_set(train_paths.begin(), train_paths.end());
  for (const auto& p : paths(first.test)) CHECK(train_set.count(p) == 0);
  CHECK(train_set.size() + first.test.size().value() == 72);
  // A different fraction.
  auto half = ImageFolder::split(dir.path(), ImageFolderOptions().train_fraction(0.5));
  CHECK(half.train.class_counts() == std::vector<int64_t>{25, 10, 1});
  REQUIRE_THROWS_WITH(ImageFolder::split(dir.path(), ImageFolderOptions().train_fraction(1.0)),
                      Contains("train_fraction must be in (0, 1), got 1"));
}

TEST_CASE("Folder-level problems are errors that say what to do", "[image_folder][errors]") {
  sedensenet::test::TempDir dir;
  REQUIRE_THROWS_WITH(ImageFolder(dir / "missing"), Contains("missing does not exist"));
  std::ofstream(dir / "file.txt") << "x";
  REQUIRE_THROWS_WITH(ImageFolder(dir / "file.txt"), Contains("is not a folder"));
  sedensenet::test::make_image_tree(dir / "one", {"only"}, {3});
  REQUIRE_THROWS_WITH(ImageFolder(dir / "one"),
                      Contains("has 1 class folder(s); a classifier needs at least two"));
  sedensenet::test::make_image_tree(dir / "empty_class", {"full"}, {3});
  fs::create_directories(dir / "empty_class" / "hollow");
  std::ofstream(dir / "empty_class" / "hollow" / "notes.txt") << "x";
  REQUIRE_THROWS_WITH(ImageFolder(dir / "empty_class"),
                      Contains("class 'hollow'") && Contains("has no usable images"));
}

TEST_CASE("validate: skip lists bad files, error stops at the first, empty classes fail",
          "[image_folder][validate]") {
  sedensenet::test::TempDir dir;
  sedensenet::test::make_image_tree(dir.path(), {"a", "b"}, {3, 2});
  std::ofstream(dir / "a" / "broken.png") << "not a png";
  std::ofstream(dir / "b" / "zero.jpg");
  SECTION("skip") {
    ImageFolder folder(dir.path());
    REQUIRE(folder.size().value() == 7);
    auto bad = folder.validate(/*decode=*/true, /*threads=*/2);
    REQUIRE(bad.size() == 2);
    CHECK(folder.size().value() == 5);
    CHECK_THAT(folder.describe(), Contains("broken.png") && Contains("zero.jpg") &&
                                      Contains("file is empty"));
  }
  SECTION("error") {
    ImageFolder folder(dir.path(), ImageFolderOptions().on_bad_file(BadFilePolicy::error));
    REQUIRE_THROWS_WITH(folder.validate(), Contains("broken.png") && Contains("not a supported image"));
  }
  SECTION("a class emptied by skipping is an error") {
    for (const auto& entry : fs::directory_iterator(dir / "b")) {
      std::ofstream(entry.path(), std::ios::trunc) << "garbage";
    }
    ImageFolder folder(dir.path());
    REQUIRE_THROWS_WITH(folder.validate(), Contains("class 'b'") && Contains("no usable images") &&
                                               Contains("after removing"));
  }
}

TEST_CASE("SplitRecord recognises the same split of the same files, and nothing else",
          "[image_folder][split]") {
  sedensenet::test::TempDir dir;
  const auto root = dir.path() / "photos";
  sedensenet::test::make_image_tree(root, {"a", "b"}, {10, 7});
  const auto options = ImageFolderOptions().train_fraction(0.7).split_seed(4);
  const auto record = SplitRecord::of(ImageFolder::split(root, options));
  CHECK(record.train_files + record.test_files == 17);
  CHECK(record.train_digest.size() == 8);
  CHECK(record.train_digest != record.test_digest);

  // JSON round trip; a damaged record names what is wrong.
  const auto again = SplitRecord::from_json(record.to_json());
  CHECK(again.to_json() == record.to_json());
  auto damaged = record.to_json();
  damaged.erase("test_digest");
  CHECK_THROWS_WITH(SplitRecord::from_json(damaged), Catch::Contains("'test_digest' is missing"));

  CHECK(record.matches(ImageFolder::split(root, record.folder_options())));
  // The folder moved: relative paths, so still the same split.
  fs::rename(root, dir.path() / "moved");
  CHECK(record.matches(ImageFolder::split(dir.path() / "moved", record.folder_options())));
  // One more image changes the split's files: not the recorded split any more.
  sedensenet::test::make_image_tree(dir.path() / "moved", {"a"}, {11});
  CHECK_FALSE(record.matches(ImageFolder::split(dir.path() / "moved", record.folder_options())));
}
