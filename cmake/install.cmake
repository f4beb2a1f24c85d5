# Install rules. A normal install: libbaatt.so.0 (+ the development symlink), libbaatt.a, baatt.h,
# the CLI, baattConfig.cmake (targets baatt::baatt and baatt::baatt_static) and baatt.pc.
# Under scikit-build-core (the Python wheel, pyproject.toml) only what the package loads: the
# shared library under its SONAME (wheels carry no symlinks) and the CLI, inside the package.
include(CMakePackageConfigHelpers)

if(SKBUILD)
  install(FILES $<TARGET_FILE:baatt_shared> DESTINATION baatt
          RENAME libbaatt.so.${PROJECT_VERSION_MAJOR} COMPONENT python)
  if(BAATT_BUILD_CLI)
    install(PROGRAMS $<TARGET_FILE:baatt_cli> DESTINATION baatt/bin COMPONENT python)
  endif()
  return()
endif()
if(NOT BAATT_INSTALL)
  return()
endif()

set(BAATT_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/baatt)
install(TARGETS baatt_shared baatt_static EXPORT baattTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/baatt.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(BAATT_BUILD_CLI)
  install(TARGETS baatt_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(EXPORT baattTargets NAMESPACE baatt:: DESTINATION ${BAATT_CMAKE_INSTALL_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/baattConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/baattConfig.cmake
                              INSTALL_DESTINATION ${BAATT_CMAKE_INSTALL_DIR})
# 0.x releases promise nothing across minor versions: same major and minor only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/baattConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/baattConfig.cmake ${PROJECT_BINARY_DIR}/baattConfigVersion.cmake
        DESTINATION ${BAATT_CMAKE_INSTALL_DIR})
file(RELATIVE_PATH BAATT_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" BAATT_PC_TO_PREFIX "${BAATT_PC_TO_PREFIX}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/baatt.pc.in ${PROJECT_BINARY_DIR}/baatt.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/baatt.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/baatt)
