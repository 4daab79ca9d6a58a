# dtx-participant-recovery-bench: WAL replay rate, restart-to-serving time and
# time to zero in-doubt transactions of dtx-participant. Not a test.
find_package(Boost REQUIRED COMPONENTS program_options)
if(TARGET dtx-participant AND TARGET dtx-coordinator)
  add_executable(dtx-participant-recovery-bench ${CMAKE_CURRENT_SOURCE_DIR}/participant_recovery_bench.cc)
  # dtx_test_harness: TestTls, the certificates of the nodes it starts.
target_link_libraries(dtx-participant-recovery-bench PRIVATE dtx_participant_runtime dtx_test_harness
                      Boost::program_options)
  target_include_directories(dtx-participant-recovery-bench PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_definitions(dtx-participant-recovery-bench PRIVATE
    DTX_PARTICIPANT_BIN="$<TARGET_FILE:dtx-participant>"
    DTX_COORDINATOR_BIN="$<TARGET_FILE:dtx-coordinator>")
  add_dependencies(dtx-participant-recovery-bench dtx-participant dtx-coordinator)
else()
  message(STATUS "dtx-participant-recovery-bench: dtx-participant or dtx-coordinator not defined; not built")
endif()
