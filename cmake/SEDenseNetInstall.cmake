# Install the headers, the library target and a CMake package: find_package(SEDenseNet CONFIG)
# then gives SEDenseNet::sedensenet.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SEDENSENET_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/SEDenseNet)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/sedensenet
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The documentation travels with the package: share/doc/SEDenseNet/{README.md,docs/}.
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/SEDenseNet)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/SEDenseNet)
install(TARGETS sedensenet EXPORT SEDenseNetTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT SEDenseNetTargets
  NAMESPACE SEDenseNet::
  DESTINATION ${SEDENSENET_CMAKE_DIR})

configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/SEDenseNetConfig.cmake.in
  ${PROJECT_BINARY_DIR}/SEDenseNetConfig.cmake
  INSTALL_DESTINATION ${SEDENSENET_CMAKE_DIR})
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/SEDenseNetConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/SEDenseNetConfig.cmake
  ${PROJECT_BINARY_DIR}/SEDenseNetConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/SEDenseNetLibTorch.cmake
  DESTINATION ${SEDENSENET_CMAKE_DIR})
