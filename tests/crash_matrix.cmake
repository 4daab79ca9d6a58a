# The crash matrix (tests/crash_matrix_test.cc): every commit-path failpoint
# armed with `crash` under the bank workload, plus seeded random SIGKILLs, on a
# real 3-participant cluster. Prints a pass/fail + recovery-time table (and
# writes it to $DTX_CRASH_MATRIX_OUT when set). Takes about 30 s on the shared
# 2-core machine (12 cells ~15 s on one cluster, the 15 s random-kill run ~20 s).
if(TARGET dtx-participant AND TARGET dtx-coordinator AND TARGET dtx_client)
  dtx_test(crash_matrix_test SOURCES crash_matrix_test.cc LIBS dtx_test_harness dtx_client
           TIMEOUT 180 LABELS integration crash)
  target_compile_definitions(crash_matrix_test PRIVATE
      DTX_PARTICIPANT_PATH="$<TARGET_FILE:dtx-participant>"
      DTX_COORDINATOR_PATH="$<TARGET_FILE:dtx-coordinator>")
  add_dependencies(crash_matrix_test dtxctl dtx-participant dtx-coordinator)
endif()
