# Dependencies of the library itself. Tests, examples and benchmarks find their own.
find_package(Torch REQUIRED)
# The compiled part: zlib for gzip (Fashion-MNIST), OpenMP for the loader workers' own setting.
find_package(ZLIB REQUIRED)
find_package(OpenMP)
set(SEDENSENET_WITH_OPENMP ${OpenMP_CXX_FOUND})
# Public headers use nlohmann/json (run folders, checkpoints' metadata).
find_package(nlohmann_json 3 REQUIRED)

# Imported targets are local to the directory that found them; when SEDenseNet is a subproject
# (add_subdirectory), the parent links SEDenseNet::sedensenet and must see LibTorch's targets too.
if(NOT SEDENSENET_TOP_LEVEL)
  foreach(_target IN ITEMS torch torch_cpu torch_cuda torch_library c10 c10_cuda caffe2::mkl
                           caffe2::mkldnn caffe2::cudart caffe2::cuda caffe2::nvrtc
                           caffe2::nvToolsExt protobuf::libprotobuf)
    if(TARGET ${_target})
      get_target_property(_imported ${_target} IMPORTED)
      if(_imported)
        set_property(TARGET ${_target} PROPERTY IMPORTED_GLOBAL TRUE)
      endif()
    endif()
  endforeach()
endif()

# Whether the LibTorch in use was built with CUDA: enables the CUDA parts (memory statistics).
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(SEDENSENET_WITH_CUDA ON)
else()
  set(SEDENSENET_WITH_CUDA OFF)
endif()
message(STATUS "SEDenseNet: LibTorch ${Torch_VERSION}, CUDA support: ${SEDENSENET_WITH_CUDA}")
