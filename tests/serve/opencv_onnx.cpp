// Runs an ONNX file in OpenCV's DNN module (tests/test_serve.cpp): opencv_onnx MODEL.onnx
// INPUT.bin N S OUTPUT.bin, where INPUT.bin holds N*3*S*S float32 images and OUTPUT.bin receives
// the logits. It links OpenCV only, not LibTorch: the way an OpenCV user runs our file.
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: opencv_onnx MODEL.onnx INPUT.bin N S OUTPUT.bin\n";
    return 2;
  }
  try {
    const int n = std::stoi(argv[3]);
    const int s = std::stoi(argv[4]);
    std::vector<float> input(static_cast<size_t>(n) * 3 * s * s);
    std::ifstream in(argv[2], std::ios::binary);
    in.read(reinterpret_cast<char*>(input.data()), static_cast<std::streamsize>(input.size() * sizeof(float)));
    if (!in) throw std::runtime_error(std::string(argv[2]) + ": too short");
    cv::dnn::Net net = cv::dnn::readNetFromONNX(argv[1]);
    const int dims[] = {n, 3, s, s};
    cv::Mat blob(4, dims, CV_32F, input.data());
    net.setInput(blob, "images");
    cv::Mat out = net.forward("logits");
    std::ofstream o(argv[5], std::ios::binary);
    o.write(reinterpret_cast<const char*>(out.ptr<float>()), static_cast<std::streamsize>(out.total() * sizeof(float)));
    std::cout << "logits " << out.size[0] << "x" << out.size[1] << "\n";
    return o ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "opencv_onnx: " << e.what() << "\n";
    return 1;
  }
}
