# What `cmake --install` puts under the prefix P:
#   P/bin/ssm                          the command-line tool
#   P/lib/libssm.so (SSM_BUILD_SHARED), P/lib/libssm.a (SSM_BUILD_STATIC)
#   P/lib/libssm_cuda.so (SSM_CUDA)    the CUDA backend, loaded at run time (lib/cuda/module.hpp)
#   P/include/ssm/                     c_api.h and the C++ API (lib/include/ssm; the
#                                      internal headers of lib/internal/ssm stay out)
#   P/lib/cmake/ssm/                   find_package(ssm) -> ssm::ssm
#   P/lib/pkgconfig/ssm.pc             pkg-config --cflags --libs ssm
#   P/lib/ladspa/ssm_denoise.so        the LADSPA plugin (plugins/ladspa)
#   P/share/ssm/                       the models (denoiser/, forecaster/)
include(CMakePackageConfigHelpers)
set(SSM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/ssm)

install(TARGETS ssm RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
set(_ssm_exported)
if(SSM_BUILD_SHARED)
  list(APPEND _ssm_exported ssm_shared)
endif()
if(SSM_BUILD_STATIC)
  list(APPEND _ssm_exported ssm_core)
endif()
if(_ssm_exported)
  install(TARGETS ${_ssm_exported} EXPORT ssmTargets
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(EXPORT ssmTargets NAMESPACE ssm:: DESTINATION ${SSM_CMAKE_DIR})
  configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ssmConfig.cmake.in
                                ${PROJECT_BINARY_DIR}/ssmConfig.cmake INSTALL_DESTINATION ${SSM_CMAKE_DIR})
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/ssmConfigVersion.cmake COMPATIBILITY SameMinorVersion)
  install(FILES ${PROJECT_BINARY_DIR}/ssmConfig.cmake ${PROJECT_BINARY_DIR}/ssmConfigVersion.cmake
          DESTINATION ${SSM_CMAKE_DIR})
  configure_file(${PROJECT_SOURCE_DIR}/cmake/ssm.pc.in ${PROJECT_BINARY_DIR}/ssm.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/ssm.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/lib/include/ssm DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/models/ DESTINATION ${CMAKE_INSTALL_DATADIR}/ssm
        FILES_MATCHING PATTERN "*.safetensors" PATTERN "*.json" PATTERN "*.md")
