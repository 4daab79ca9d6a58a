# `cmake --install BUILD [--prefix P]` (README.md "Install"): the programs a
# user runs, the C++ client as one static library with its public headers, and
# a CMake package so that an application does
#   find_package(dtx REQUIRED)
#   target_link_libraries(app PRIVATE dtx::client)
# Included at the end of CMakeLists.txt, once every target exists.
# tests/install_test.cc installs a build and builds tests/install_app against it.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The programs: both nodes, dtxctl (admin CLI and local-cluster supervisor;
# `dtxctl cluster up` finds the nodes next to itself) and the workload driver.
# The other benches measure this implementation (and some start build-tree
# binaries); they stay in the build tree.
set(DTX_INSTALLED_PROGRAMS dtx-participant dtx-coordinator dtxctl dtx-bench)
install(TARGETS ${DTX_INSTALLED_PROGRAMS} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Only the public headers (include/dtx/); none of them includes a generated
# Thrift header or anything of the source tree (bindings/cpp/public_header_test.cc).
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/dtx DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")

# dtx_client_closure(TARGET OWN SYSTEM): the project's own libraries that
# TARGET links, PUBLIC and PRIVATE, recursively, TARGET included (OWN), and the
# system libraries they link (SYSTEM), which must be targets named in
# dtx_client_system_libraries_in_tree or header-only imported targets.
# (An imported target found in a subdirectory is not visible here: it is
# known by its name.)
function(dtx_client_closure target out_own out_system)
  set(own "")
  set(system "")
  set(todo ${target})
  while(todo)
    list(POP_FRONT todo t)
    if(t IN_LIST own OR t IN_LIST system)
      continue()
    endif()
    if(t IN_LIST dtx_client_system_libraries_in_tree)
      list(APPEND system ${t})
      continue()
    endif()
    if(TARGET ${t})
      get_target_property(is_imported ${t} IMPORTED)
      get_target_property(type ${t} TYPE)
      if(type STREQUAL "INTERFACE_LIBRARY")
        get_target_property(links ${t} INTERFACE_LINK_LIBRARIES)
      else()
        get_target_property(links ${t} LINK_LIBRARIES)
      endif()
      if(is_imported AND type STREQUAL "INTERFACE_LIBRARY" AND NOT links)
        continue()  # header-only: nothing to link
      endif()
    endif()
    if(NOT TARGET ${t} OR is_imported)
      message(FATAL_ERROR "cmake/install.cmake: dtx_client links ${t}, a library the installed "
                          "package does not know: add it to dtx_client_system_libraries_in_tree, "
                          "the target that stands for it in an application to "
                          "dtx_client_system_libraries, and how to find it to "
                          "cmake/dtxDependencies.cmake")
    endif()
    if(NOT type MATCHES "^(STATIC|OBJECT|INTERFACE)_LIBRARY$")
      message(FATAL_ERROR "cmake/install.cmake: dtx_client links ${t}, a ${type}; "
                          "only static libraries can be archived into libdtx_client.a")
    endif()
    list(APPEND own ${t})
    if(links)
      list(APPEND todo ${links})
    endif()
  endwhile()
  set(${out_own} ${own} PARENT_SCOPE)
  set(${out_system} ${system} PARENT_SCOPE)
endfunction()

# The client for applications: dtx_client and every static library of ours it
# links, archived as one libdtx_client.a (the objects are the ones already
# built for dtx_client; nothing is compiled twice). Its system libraries are
# link-only requirements on the targets cmake/dtxDependencies.cmake makes, here
# and in the installed package alike. The in-tree dtx_client is unchanged.
include(${PROJECT_SOURCE_DIR}/cmake/dtxDependencies.cmake)
set(dtx_client_system_libraries Threads::Threads OpenSSL::SSL OpenSSL::Crypto spdlog::spdlog
                                PkgConfig::dtx_thrift PkgConfig::dtx_libuv)
# The in-tree targets for the same libraries (dtx_client_closure checks that
# the client links no other).
set(dtx_client_system_libraries_in_tree Threads::Threads OpenSSL::SSL OpenSSL::Crypto
                                        spdlog::spdlog PkgConfig::THRIFT PkgConfig::LIBUV)

dtx_client_closure(dtx_client dtx_client_own dtx_client_system)
set(dtx_client_objects "")
foreach(t IN LISTS dtx_client_own)
  get_target_property(type ${t} TYPE)
  if(NOT type STREQUAL "INTERFACE_LIBRARY")
    list(APPEND dtx_client_objects $<TARGET_OBJECTS:${t}>)
  endif()
endforeach()

add_library(dtx_client_package STATIC ${dtx_client_objects})
set_target_properties(dtx_client_package PROPERTIES
  OUTPUT_NAME dtx_client
  EXPORT_NAME client
  LINKER_LANGUAGE CXX
  ARCHIVE_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/package)
target_include_directories(dtx_client_package INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_compile_features(dtx_client_package INTERFACE cxx_std_20)  # include/dtx/types.h: operator<=>
target_link_libraries(dtx_client_package PRIVATE ${dtx_client_system_libraries})
# A sanitized build's objects need the sanitizer runtime in the application.
if(DTX_SANITIZE)
  target_link_options(dtx_client_package INTERFACE ${DTX_SANITIZE_FLAGS})
endif()

install(TARGETS dtx_client_package EXPORT dtxTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
set(DTX_CMAKE_PACKAGE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/dtx)
install(EXPORT dtxTargets NAMESPACE dtx:: DESTINATION ${DTX_CMAKE_PACKAGE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/dtxConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/package/dtxConfig.cmake
                              INSTALL_DESTINATION ${DTX_CMAKE_PACKAGE_DIR})
# No compatibility promise across minor versions before 1.0.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/dtxConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/dtxConfig.cmake
              ${PROJECT_BINARY_DIR}/package/dtxConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/dtxDependencies.cmake
        DESTINATION ${DTX_CMAKE_PACKAGE_DIR})
