# Dependencies of the library itself. Tests, examples and benchmarks find their own.
find_package(Torch REQUIRED)

# Whether the LibTorch in use was built with CUDA: enables the CUDA parts (memory statistics).
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(SEDENSENET_WITH_CUDA ON)
else()
  set(SEDENSENET_WITH_CUDA OFF)
endif()
message(STATUS "SEDenseNet: LibTorch ${Torch_VERSION}, CUDA support: ${SEDENSENET_WITH_CUDA}")
