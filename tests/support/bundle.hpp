#pragma once
// Exchange of tensors with the Python reference: a folder with manifest.json ({name: {shape,
// dtype}}) and one raw little-endian file per tensor (<name>.bin). tests/python/bundle.py is the
// Python side.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace sedensenet::test {

using TensorBundle = std::map<std::string, torch::Tensor>;

inline torch::Dtype bundle_dtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  if (name == "int64") return torch::kInt64;
  if (name == "uint8") return torch::kUInt8;
  if (name == "bool") return torch::kBool;
  FAIL("unsupported dtype in bundle: " << name);
  return torch::kFloat32;
}

inline std::string bundle_dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kFloat64: return "float64";
    case torch::kInt64: return "int64";
    case torch::kUInt8: return "uint8";
    case torch::kBool: return "bool";
    default: FAIL("unsupported dtype for bundle"); return "";
  }
}

inline TensorBundle load_bundle(const std::filesystem::path& dir) {
  std::ifstream manifest_file(dir / "manifest.json");
  REQUIRE(manifest_file.good());
  const auto manifest = nlohmann::json::parse(manifest_file);
  TensorBundle bundle;
  for (const auto& [name, info] : manifest.items()) {
    const auto shape = info.at("shape").get<std::vector<int64_t>>();
    const auto dtype = bundle_dtype(info.at("dtype").get<std::string>());
    auto t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
    std::ifstream in(dir / (name + ".bin"), std::ios::binary);
    REQUIRE(in.good());
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    REQUIRE(in.gcount() == static_cast<std::streamsize>(t.nbytes()));
    bundle[name] = t;
  }
  return bundle;
}

inline void save_bundle(const std::filesystem::path& dir, const TensorBundle& bundle) {
  std::filesystem::create_directories(dir);
  nlohmann::json manifest = nlohmann::json::object();
  for (const auto& [name, tensor] : bundle) {
    auto t = tensor.detach().cpu().contiguous();
    manifest[name] = {{"shape", t.sizes().vec()}, {"dtype", bundle_dtype_name(t.scalar_type())}};
    std::ofstream out(dir / (name + ".bin"), std::ios::binary);
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    REQUIRE(out.good());
  }
  std::ofstream(dir / "manifest.json") << manifest.dump(1);
}

}  // namespace sedensenet::test
