# dtx-tls-handshake-bench: microseconds per TLS 1.3 handshake (in memory) and
# per new connection over loopback, plaintext vs TLS. Not a test.
find_package(Boost REQUIRED COMPONENTS program_options)
add_executable(dtx-tls-handshake-bench ${CMAKE_CURRENT_SOURCE_DIR}/tls_handshake_bench.cc)
target_link_libraries(dtx-tls-handshake-bench PRIVATE dtx_transport dtx_certs
                      Boost::program_options Threads::Threads)
