// HttpService: the sidecar's HTTP endpoints (cpp-httplib).
//   GET  /healthz                      200 while the process runs
//   GET  /readyz                       200 when every configured model is Loaded, else 503
//   GET  /metrics                      Prometheus text format
//   GET  /v1/models, /v1/models/NAME   states, region key/offset/byte_size (Triton-like status)
//   POST /v1/models/NAME/load {"uri": "...", "wait": false}   control listener only
//   POST /v1/models/NAME/unload                               control listener only
// The control routes are served only on listeners opened with control=true (by default a
// loopback address, reachable from the pod's own containers). Thread-safety: Listen/Stop from
// one thread; handlers run on httplib's worker threads and only touch thread-safe objects.
#ifndef LOOM_SERVER_H_
#define LOOM_SERVER_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "loom/metrics.h"
#include "loom/registry.h"

namespace httplib {
class Server;
}

namespace loom {

struct ListenAddress {
  std::string host;
  int port = 0;
};
// "host:port", "[v6addr]:port" or ":port" (all interfaces).
Result<ListenAddress> ParseListenAddress(const std::string& text);

// HTTP status for a failed operation (400, 404, 409, 422, 502, 507, 500).
int HttpStatusFor(const Status& status);

class HttpService {
 public:
  HttpService(ModelRegistry* registry, Metrics* metrics, std::vector<std::string> required_models);
  ~HttpService();
  HttpService(const HttpService&) = delete;
  HttpService& operator=(const HttpService&) = delete;

  // Binds and starts serving on a background thread; returns the bound "host:port".
  Result<std::string> Listen(const std::string& address, bool control);
  void Stop();

 private:
  void Install(httplib::Server& server, bool control);

  ModelRegistry* registry_;
  Metrics* metrics_;
  std::vector<std::string> required_;
  std::vector<std::unique_ptr<httplib::Server>> servers_;
  std::vector<std::thread> threads_;
};

}  // namespace loom

#endif  // LOOM_SERVER_H_
