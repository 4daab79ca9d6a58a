# dtx-bench: workloads against a running cluster (included by bench/CMakeLists.txt).
dtx_test(dtx_bench_histogram_test SOURCES dtx_bench_histogram_test.cc TIMEOUT 60)
target_include_directories(dtx_bench_histogram_test PRIVATE ${PROJECT_SOURCE_DIR})

find_package(Boost REQUIRED COMPONENTS program_options)
if(TARGET dtx_client)
  add_executable(dtx-bench dtx_bench.cc)
  target_link_libraries(dtx-bench PRIVATE dtx_client dtx_cluster_config Boost::program_options)
else()
  message(STATUS "dtx-bench: no dtx_client target (bindings/cpp) yet; not built")
endif()
