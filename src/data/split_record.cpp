#include "sedensenet/data/split_record.hpp"

#include <cstdio>

#include "sedensenet/io/archive.hpp"
#include "sedensenet/util/json.hpp"

namespace sedensenet::data {

std::string file_list_digest(const ImageFolder& folder) {
  uint32_t crc = 0;
  for (const auto& sample : folder.samples()) {
    const std::string line =
        sample.path.lexically_relative(folder.root()).generic_string() + "\t" + std::to_string(sample.label) + "\n";
    crc = io::crc32(line.data(), line.size(), crc);
  }
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", crc);
  return hex;
}

SplitRecord SplitRecord::of(const ImageFolderSplits& splits) {
  SplitRecord record;
  record.predefined = splits.predefined;
  record.train_fraction = splits.train.options().train_fraction();
  record.split_seed = splits.train.options().split_seed();
  record.train_files = static_cast<int64_t>(splits.train.samples().size());
  record.test_files = static_cast<int64_t>(splits.test.samples().size());
  record.train_digest = file_list_digest(splits.train);
  record.test_digest = file_list_digest(splits.test);
  return record;
}

nlohmann::json SplitRecord::to_json() const {
  return {{"predefined", predefined},     {"train_fraction", train_fraction}, {"split_seed", split_seed},
          {"train_files", train_files},   {"test_files", test_files},         {"train_digest", train_digest},
          {"test_digest", test_digest}};
}

SplitRecord SplitRecord::from_json(const nlohmann::json& j) {
  TORCH_CHECK(j.is_object(), "split record: expected a JSON object, got ", j.dump());
  const auto field = [&](const char* key) -> const nlohmann::json& {
    TORCH_CHECK(j.contains(key), "split record: '", key, "' is missing");
    return j.at(key);
  };
  SplitRecord record;
  TORCH_CHECK(field("predefined").is_boolean(), "split record: 'predefined' must be true or false");
  record.predefined = j.at("predefined").get<bool>();
  TORCH_CHECK(field("train_fraction").is_number(), "split record: 'train_fraction' must be a number");
  record.train_fraction = j.at("train_fraction").get<double>();
  record.split_seed = util::json_integer<uint64_t>(field("split_seed"), "split record 'split_seed'");
  record.train_files = util::json_integer<int64_t>(field("train_files"), "split record 'train_files'");
  record.test_files = util::json_integer<int64_t>(field("test_files"), "split record 'test_files'");
  TORCH_CHECK(field("train_digest").is_string() && field("test_digest").is_string(),
              "split record: the digests must be strings");
  record.train_digest = j.at("train_digest").get<std::string>();
  record.test_digest = j.at("test_digest").get<std::string>();
  return record;
}

ImageFolderOptions SplitRecord::folder_options() const {
  return ImageFolderOptions().train_fraction(train_fraction).split_seed(split_seed);
}

bool SplitRecord::matches(const ImageFolderSplits& splits) const {
  return splits.predefined == predefined &&
         static_cast<int64_t>(splits.train.samples().size()) == train_files &&
         static_cast<int64_t>(splits.test.samples().size()) == test_files &&
         file_list_digest(splits.train) == train_digest && file_list_digest(splits.test) == test_digest;
}

}  // namespace sedensenet::data
