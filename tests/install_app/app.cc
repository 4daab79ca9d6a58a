// app CLUSTER_DIR KEY VALUE: writes KEY = VALUE in one transaction, reads it
// back in another and prints it, through the installed C++ client only.
#include <dtx/client.h>

#include <cstdio>
#include <optional>
#include <string>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: app CLUSTER_DIR KEY VALUE\n");
    return 2;
  }
  const std::string key = argv[2];
  auto options = dtx::ClientOptions::FromClusterDir(argv[1]);  // TLS files from the cluster dir
  if (!options.ok()) {
    std::fprintf(stderr, "options: %s\n", options.status().ToString().c_str());
    return 1;
  }
  auto client = dtx::Client::Connect(*options);
  if (!client.ok()) {
    std::fprintf(stderr, "connect: %s\n", client.status().ToString().c_str());
    return 1;
  }
  dtx::Status put = (*client)->Run([&](dtx::Transaction& tx) { return tx.Put(key, argv[3]); });
  if (!put.ok()) {
    std::fprintf(stderr, "commit: %s\n", put.ToString().c_str());
    return 1;
  }
  std::optional<std::string> read;
  dtx::Status get = (*client)->Run([&](dtx::Transaction& tx) -> dtx::Status {
    auto v = tx.Get(key);
    if (!v.ok()) return v.status();
    read = *v;
    return dtx::Status::OK();
  });
  if (!get.ok()) {
    std::fprintf(stderr, "read: %s\n", get.ToString().c_str());
    return 1;
  }
  std::printf("%s=%s\n", key.c_str(), read.value_or("<none>").c_str());
  return 0;
}
