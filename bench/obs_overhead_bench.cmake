# dtx-obs-overhead-bench: ns per counter increment, histogram observe, gauge
# set and trace record, one and two threads; scrape and trace-lookup cost.
# Not a test.
find_package(Boost REQUIRED COMPONENTS program_options)
add_executable(dtx-obs-overhead-bench ${CMAKE_CURRENT_SOURCE_DIR}/obs_overhead_bench.cc)
target_link_libraries(dtx-obs-overhead-bench PRIVATE dtx_obs Boost::program_options Threads::Threads)
