# The system libraries an application links with dtx::client: those that the
# client's internal static libraries (archived inside libdtx_client.a) use.
# Included by the installed dtxConfig.cmake and by cmake/install.cmake, which
# links the exported target to exactly these targets. On a missing one it sets
# dtx_FOUND to FALSE with a message and returns.
#
# Debian 12: libssl-dev, libspdlog-dev, libthrift-dev and libuv1-dev, plus
# pkg-config (Thrift and libuv ship no CMake package there).
include(CMakeFindDependencyMacro)
find_dependency(Threads)
find_dependency(OpenSSL 3)
find_dependency(spdlog)
find_dependency(PkgConfig)
pkg_check_modules(dtx_thrift QUIET IMPORTED_TARGET thrift)
pkg_check_modules(dtx_libuv QUIET IMPORTED_TARGET libuv)
if(NOT dtx_thrift_FOUND OR NOT dtx_libuv_FOUND)
  set(dtx_FOUND FALSE)
  set(dtx_NOT_FOUND_MESSAGE
      "dtx::client needs Thrift and libuv, found with pkg-config (thrift.pc, libuv.pc): "
      "on Debian, apt-get install libthrift-dev libuv1-dev pkg-config")
  return()
endif()
