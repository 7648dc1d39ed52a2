# Included right after find_package(Torch), by this project and by the installed package's
# config file: makes the link line use the LibTorch that was found, all of it.
#
# 1. Another LibTorch on the system (Debian's libtorch-dev) can shadow parts of the one asked for:
#    TorchConfig.cmake looks for libc10 with find_library, which searches the system folders before
#    the LibTorch's own. Every torch library on TORCH_LIBRARIES is taken from TORCH_INSTALL_PREFIX.
# 2. A CUDA LibTorch from PyPI's `torch` wheel loads its CUDA libraries (cudart, nvrtc, NCCL,
#    cuDNN, cuBLAS) from the wheel's `nvidia-*` packages next to it, through its own RPATH. The
#    CUDA toolkit that CMake finds (/usr/local/cuda) may be another version: its NCCL lacks symbols
#    the wheel needs, and its cudart would be loaded first by our programs. So the programs link the
#    wheel's cudart and nvrtc, and the linker resolves the wheel's dependencies in the wheel's
#    folders (-rpath-link). The toolkit serves CMake's CUDA detection only (nvcc, headers).
#    C++ and Python then run one CUDA runtime. docs/support.md explains the choice.
if(NOT TORCH_INSTALL_PREFIX)
  return()
endif()

set(_sedensenet_torch_libraries)
foreach(_lib IN LISTS TORCH_LIBRARIES)
  if(_lib MATCHES "^(.*)/(lib(c10|c10_cuda|torch|torch_cpu|torch_cuda)\\.so)$")
    set(_sedensenet_dir "${CMAKE_MATCH_1}")
    set(_sedensenet_name "${CMAKE_MATCH_2}")
    if(NOT _sedensenet_dir STREQUAL "${TORCH_INSTALL_PREFIX}/lib"
       AND EXISTS "${TORCH_INSTALL_PREFIX}/lib/${_sedensenet_name}")
      set(_lib "${TORCH_INSTALL_PREFIX}/lib/${_sedensenet_name}")
    endif()
  endif()
  list(APPEND _sedensenet_torch_libraries "${_lib}")
endforeach()
set(TORCH_LIBRARIES "${_sedensenet_torch_libraries}")

get_filename_component(_sedensenet_nvidia "${TORCH_INSTALL_PREFIX}/../nvidia" ABSOLUTE)
if(TARGET torch_cuda AND IS_DIRECTORY "${_sedensenet_nvidia}")
  file(GLOB _sedensenet_nvidia_dirs LIST_DIRECTORIES true "${_sedensenet_nvidia}/*/lib")
  set(SEDENSENET_TORCH_CUDA_LIBRARY_DIRS "${_sedensenet_nvidia_dirs}")
  foreach(_dir IN LISTS _sedensenet_nvidia_dirs)
    list(APPEND TORCH_LIBRARIES "-Wl,-rpath-link,${_dir}")
  endforeach()
  foreach(_name IN ITEMS cudart nvrtc)
    file(GLOB _sedensenet_found "${_sedensenet_nvidia}/*/lib/lib${_name}.so.[0-9]*")
    list(FILTER _sedensenet_found EXCLUDE REGEX "builtins")
    if(_sedensenet_found)
      list(GET _sedensenet_found 0 _sedensenet_wheel_lib)
      if(TARGET CUDA::${_name})
        set_property(TARGET CUDA::${_name} PROPERTY IMPORTED_LOCATION "${_sedensenet_wheel_lib}")
      endif()
      # TorchConfig also lists nvrtc by path.
      list(TRANSFORM TORCH_LIBRARIES REPLACE "^.*/lib${_name}\\.so$" "${_sedensenet_wheel_lib}")
    endif()
  endforeach()
endif()
