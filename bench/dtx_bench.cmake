# dtx-bench: workloads against a running cluster (included by bench/CMakeLists.txt).
dtx_test(dtx_bench_histogram_test SOURCES dtx_bench_histogram_test.cc TIMEOUT 60 LABELS unit)
target_include_directories(dtx_bench_histogram_test PRIVATE ${PROJECT_SOURCE_DIR})

find_package(Boost REQUIRED COMPONENTS program_options)
# The bench's own logic (flags, key choice, open-loop schedule, fault schedule)
# and `plot` (reading reports back, drawing them).
add_library(dtx_bench_lib STATIC dtx_bench_lib.cc dtx_bench_plot.cc)
target_include_directories(dtx_bench_lib PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(dtx_bench_lib PUBLIC dtx_cluster_config Boost::program_options
                      PRIVATE nlohmann_json::nlohmann_json)
dtx_test(dtx_bench_lib_test SOURCES dtx_bench_lib_test.cc dtx_bench_plot_test.cc
         LIBS dtx_bench_lib nlohmann_json::nlohmann_json TIMEOUT 60 LABELS unit)

if(TARGET dtx_client)
  add_executable(dtx-bench dtx_bench.cc)
  target_link_libraries(dtx-bench PRIVATE dtx_bench_lib dtx_client dtx_cluster_config Boost::program_options
                        nlohmann_json::nlohmann_json ${DTX_MALLOC_LIBS})
  # End to end against a local cluster (tests/harness.h LocalCluster): the
  # JSON report is complete, the bank invariant holds, a fault schedule runs,
  # plot draws. About 25 s.
  if(TARGET dtx-participant AND TARGET dtx-coordinator)
    dtx_test(dtx_bench_e2e_test SOURCES dtx_bench_e2e_test.cc LIBS dtx_test_harness dtx_client dtx_cluster_config
             nlohmann_json::nlohmann_json TIMEOUT 240 LABELS integration)
    target_include_directories(dtx_bench_e2e_test PRIVATE ${PROJECT_SOURCE_DIR})
    target_compile_definitions(dtx_bench_e2e_test PRIVATE DTX_BENCH_PATH="$<TARGET_FILE:dtx-bench>"
      DTX_PARTICIPANT_PATH="$<TARGET_FILE:dtx-participant>"
      DTX_COORDINATOR_PATH="$<TARGET_FILE:dtx-coordinator>")
    add_dependencies(dtx_bench_e2e_test dtx-bench dtxctl dtx-participant dtx-coordinator)
  endif()
else()
  message(STATUS "dtx-bench: no dtx_client target (bindings/cpp) yet; not built")
endif()
