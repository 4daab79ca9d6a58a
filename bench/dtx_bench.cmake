# dtx-bench: workloads against a running cluster (included by bench/CMakeLists.txt).
dtx_test(dtx_bench_histogram_test SOURCES dtx_bench_histogram_test.cc TIMEOUT 60)
target_include_directories(dtx_bench_histogram_test PRIVATE ${PROJECT_SOURCE_DIR})
