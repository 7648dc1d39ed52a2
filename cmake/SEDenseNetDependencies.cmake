# Dependencies of the library itself. Tests, examples and benchmarks find their own.
find_package(Torch REQUIRED)
include(${CMAKE_CURRENT_LIST_DIR}/SEDenseNetLibTorch.cmake)
# The compiled part: zlib for gzip (Fashion-MNIST) and archive CRC-32s, libjpeg-turbo for JPEG
# (the decoder PIL uses; Debian's libjpeg62-turbo-dev), OpenMP for the loader workers' own setting.
find_package(ZLIB REQUIRED)
find_package(JPEG REQUIRED)
find_package(OpenMP)
set(SEDENSENET_WITH_OPENMP ${OpenMP_CXX_FOUND})
# ONNX export (optional): Debian's libonnx-dev and the protobuf it was built with. Its classes live
# in namespace onnx; LibTorch's own copy is onnx_torch and exports no protobuf symbols, so both
# load in one process.
option(SEDENSENET_ONNX "Build ONNX export when libonnx-dev is installed" ON)
set(SEDENSENET_WITH_ONNX OFF)
if(SEDENSENET_ONNX)
  find_package(Protobuf QUIET)
  if(Protobuf_FOUND)
    find_package(ONNX CONFIG QUIET)
  endif()
  if(ONNX_FOUND AND TARGET onnx)
    set(SEDENSENET_WITH_ONNX ON)
  else()
    message(STATUS "SEDenseNet: ONNX export off (install libonnx-dev for it)")
  endif()
endif()
# The inference graph's convolutions on oneDNN directly (optional): Debian's libdnnl-dev (oneDNN 2.x,
# GNU OpenMP). Debian's LibTorch links that same library. PyPI's LibTorch links its own oneDNN 3.x
# statically, with its symbols hidden, and ships GNU OpenMP as torch/lib/libgomp.so.1: the system's
# library loads beside it without a clash, and both use the one OpenMP runtime of that soname. With
# another OpenMP runtime in LibTorch (Intel's, LLVM's) the path stays off: two thread pools would
# compete for the cores.
option(SEDENSENET_ONEDNN "Run inference convolutions on the system's oneDNN (libdnnl-dev)" ON)
set(SEDENSENET_WITH_ONEDNN OFF)
if(SEDENSENET_ONEDNN AND (TORCH_INSTALL_PREFIX MATCHES "^/usr/?$"
                          OR EXISTS "${TORCH_INSTALL_PREFIX}/lib/libgomp.so.1"))
  # Debian's oneDNN is built with its OpenCL GPU runtime, and its CMake package then requires
  # OpenCL's headers (ocl-icd-opencl-dev, only "recommended" by libdnnl-dev): without them
  # find_package(dnnl) stops the configuration, so probe first.
  find_package(OpenCL QUIET)
  if(OpenCL_FOUND)
    find_package(dnnl 2 CONFIG QUIET)
  endif()
  if(dnnl_FOUND AND TARGET DNNL::dnnl AND dnnl_VERSION VERSION_LESS 3)
    set(SEDENSENET_WITH_ONEDNN ON)
  else()
    message(STATUS "SEDenseNet: inference convolutions through LibTorch (install libdnnl-dev and "
                   "ocl-icd-opencl-dev for the faster direct oneDNN path)")
  endif()
endif()
# A LibTorch that ships its own OpenMP runtime (PyPI's wheel: torch/lib/libgomp.so.1) loads that
# one; ours is the same runtime then, not the compiler's copy (one OpenMP runtime per process).
if(OpenMP_CXX_FOUND AND EXISTS "${TORCH_INSTALL_PREFIX}/lib/libgomp.so.1"
   AND NOT TORCH_INSTALL_PREFIX MATCHES "^/usr/?$")
  set_property(TARGET OpenMP::OpenMP_CXX PROPERTY INTERFACE_LINK_LIBRARIES
    "${TORCH_INSTALL_PREFIX}/lib/libgomp.so.1")
endif()

# Header-only dependencies. On a machine without Debian's packages (a GPU machine with only a
# CUDA LibTorch), point SEDENSENET_VENDORED_HEADERS at a folder holding fmt/, CLI/ and nlohmann/
# (benchmarks/gpu/pack.sh copies them from a Debian machine). stb is in third_party/.
set(SEDENSENET_VENDORED_HEADERS "" CACHE PATH "folder with fmt/, CLI/ and nlohmann/ headers")
if(SEDENSENET_VENDORED_HEADERS)
  foreach(_lib IN ITEMS fmt CLI11 nlohmann_json)
    if(_lib STREQUAL "nlohmann_json")
      set(_target nlohmann_json::nlohmann_json)
    else()
      set(_target ${_lib}::${_lib})
    endif()
    if(NOT TARGET ${_target})
      add_library(${_target} INTERFACE IMPORTED GLOBAL)
      set_target_properties(${_target} PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES ${SEDENSENET_VENDORED_HEADERS})
    endif()
  endforeach()
  set_property(TARGET fmt::fmt APPEND PROPERTY INTERFACE_COMPILE_DEFINITIONS FMT_HEADER_ONLY)
  set(fmt_FOUND ON)
  set(CLI11_FOUND ON)
  set(nlohmann_json_FOUND ON)
  set(SEDENSENET_EXTRA_INCLUDE_DIRS ${SEDENSENET_VENDORED_HEADERS})
else()
  # Public headers use nlohmann/json (run folders, checkpoints' metadata).
  find_package(nlohmann_json 3 REQUIRED)
  # The tool, examples and benchmarks: CLI11, and fmt. A LibTorch that ships its own fmt headers (PyPI's
  # wheel: fmt 12 in torch/include) puts them ahead of the system's on every include path, so fmt
  # is then used header-only from those headers, never linked against another version's library.
  if(SEDENSENET_BUILD_TOOLS OR SEDENSENET_BUILD_BENCHMARKS OR SEDENSENET_BUILD_EXAMPLES)
    find_package(CLI11 2 REQUIRED)
    if(EXISTS "${TORCH_INSTALL_PREFIX}/include/fmt/format-inl.h"
       AND NOT TORCH_INSTALL_PREFIX MATCHES "^/usr/?$")
      add_library(fmt::fmt INTERFACE IMPORTED GLOBAL)
      set_target_properties(fmt::fmt PROPERTIES INTERFACE_COMPILE_DEFINITIONS FMT_HEADER_ONLY
        INTERFACE_INCLUDE_DIRECTORIES "${TORCH_INSTALL_PREFIX}/include")
      message(STATUS "SEDenseNet: fmt header-only, from LibTorch's own headers")
    else()
      find_package(fmt REQUIRED)
    endif()
  endif()
endif()

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

# Distributed training (sedensenet/distributed.hpp) includes LibTorch's c10d headers, which
# include Gloo's (Debian: libgloo-dev; LibTorch's own archives ship them). Without them the
# library still builds; the tool's --nproc, the distributed tests and benchmark are left out.
find_path(SEDENSENET_GLOO_INCLUDE_DIR gloo/algorithm.h
  HINTS ${SEDENSENET_EXTRA_INCLUDE_DIRS} ${TORCH_INCLUDE_DIRS}
  DOC "folder that contains gloo/algorithm.h (Debian: libgloo-dev)")
if(SEDENSENET_GLOO_INCLUDE_DIR)
  set(SEDENSENET_WITH_DISTRIBUTED ON)
else()
  set(SEDENSENET_WITH_DISTRIBUTED OFF)
  message(WARNING "SEDenseNet: Gloo headers not found (apt-get install libgloo-dev): distributed "
                  "training (--nproc, tests, benchmark) is not built")
endif()
message(STATUS "SEDenseNet: distributed training (c10d/Gloo): ${SEDENSENET_WITH_DISTRIBUTED}")
