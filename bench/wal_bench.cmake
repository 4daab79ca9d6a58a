# dtx-wal-bench: durable appends per second and latency-to-durable of the WAL
# against the raw write+fdatasync floor of the same directory. Not a test.
find_package(Boost REQUIRED COMPONENTS program_options)
pkg_check_modules(WAL_BENCH_UV REQUIRED IMPORTED_TARGET libuv)
add_executable(dtx-wal-bench ${CMAKE_CURRENT_SOURCE_DIR}/wal_bench.cc)
target_link_libraries(dtx-wal-bench PRIVATE dtx_wal Boost::program_options PkgConfig::WAL_BENCH_UV
                      nlohmann_json::nlohmann_json)
