#include "loom/server.h"

#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "loom/env.h"

namespace loom {
namespace {

using json = nlohmann::json;

json InfoJson(const ModelInfo& info, const std::string& dir) {
  json j = {{"name", info.name},
            {"uri", info.uri},
            {"state", StateName(info.state)},
            {"adopted", info.adopted},
            {"bytes_copied", info.bytes_copied},
            {"load_seconds", info.seconds}};
  if (!info.error.ok()) {
    j["reason"] = info.error.ToString();
    j["code"] = CodeName(info.error.code());
    j["exit_code"] = ExitCodeFor(info.error);
  }
  if (info.manifest) {
    // Triton's system shared memory status: key, offset, byte_size.
    j["key"] = JoinPath(dir, info.manifest->region_file);
    j["offset"] = 0;
    j["byte_size"] = info.manifest->region_bytes;
    j["manifest"] = JoinPath(dir, ManifestFileName(info.name));
    j["fingerprint"] = info.manifest->fingerprint;
    j["tensors"] = info.manifest->tensors.size();
  }
  return j;
}

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", "application/json");
}

void ReplyError(httplib::Response& res, const Status& s) {
  Reply(res, HttpStatusFor(s), {{"error", s.ToString()}, {"code", CodeName(s.code())}, {"exit_code", ExitCodeFor(s)}});
}

}  // namespace

Result<ListenAddress> ParseListenAddress(const std::string& text) {
  const size_t colon = text.rfind(':');
  auto bad = [&] {
    return Status::InvalidArgument("listen address \"" + text + "\" must be HOST:PORT (e.g. 0.0.0.0:8088)");
  };
  if (colon == std::string::npos) return bad();
  ListenAddress out;
  out.host = text.substr(0, colon);
  if (out.host.empty()) out.host = "0.0.0.0";
  if (out.host.size() >= 2 && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  const std::string port = text.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return bad();
  out.port = std::stoi(port);
  if (out.port > 65535) return bad();
  return out;
}

int HttpStatusFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk: return 200;
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kFailedPrecondition: return 409;
    case StatusCode::kSourceChanged: return 409;
    case StatusCode::kInvalidModel: return 422;
    case StatusCode::kUnavailable: return 502;
    case StatusCode::kPermissionDenied: return 502;  // the source refused us, not the caller
    case StatusCode::kThrottled: return 503;
    case StatusCode::kNoSpace: return 507;
    default: return 500;
  }
}

HttpService::HttpService(ModelRegistry* registry, Metrics* metrics, std::vector<std::string> required_models)
    : registry_(registry), metrics_(metrics), required_(std::move(required_models)) {}

HttpService::~HttpService() { Stop(); }

void HttpService::Install(httplib::Server& server, bool control) {
  server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
  server.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    json waiting = json::array(), failed = json::array();
    for (const std::string& name : required_) {
      std::optional<ModelInfo> info = registry_->Get(name);
      if (!info || info->state == ModelState::kLoading) {
        waiting.push_back(name);
      } else if (info->state == ModelState::kFailedToLoad) {
        failed.push_back({{"name", name}, {"reason", info->error.ToString()}});
      }
    }
    const bool ready = waiting.empty() && failed.empty();
    Reply(res, ready ? 200 : 503, {{"ready", ready}, {"waiting", waiting}, {"failed", failed}});
  });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json models = json::array();
    for (const ModelInfo& info : registry_->List()) models.push_back(InfoJson(info, registry_->dir()));
    Reply(res, 200, {{"models", models}});
  });
  server.Get(R"(/v1/models/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    std::optional<ModelInfo> info = registry_->Get(req.matches[1]);
    if (!info) return ReplyError(res, Status::NotFound("model " + std::string(req.matches[1]) + " is not known"));
    Reply(res, 200, InfoJson(*info, registry_->dir()));
  });
  if (!control) return;
  server.Post(R"(/v1/models/([^/]+)/load)", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string name = req.matches[1];
    json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded() || !body.is_object() || !body.contains("uri") || !body["uri"].is_string()) {
      return ReplyError(res, Status::InvalidArgument("body must be a JSON object {\"uri\": \"...\", \"wait\": false}"));
    }
    const std::string uri = body["uri"].get<std::string>();
    bool wait = false;
    if (auto it = body.find("wait"); it != body.end()) {
      if (!it->is_boolean()) return ReplyError(res, Status::InvalidArgument("\"wait\" must be true or false"));
      wait = it->get<bool>();
    }
    Status s = wait ? registry_->Load(name, uri) : registry_->StartLoad(name, uri);
    if (!s.ok()) return ReplyError(res, s);
    std::optional<ModelInfo> info = registry_->Get(name);
    if (!info) return ReplyError(res, Status::NotFound("model " + name + " was unloaded meanwhile"));
    Reply(res, wait ? 200 : 202, InfoJson(*info, registry_->dir()));
  });
  server.Post(R"(/v1/models/([^/]+)/unload)", [this](const httplib::Request& req, httplib::Response& res) {
    Status s = registry_->Unload(req.matches[1]);
    if (!s.ok()) return ReplyError(res, s);
    Reply(res, 200, {{"name", std::string(req.matches[1])}, {"state", "Unloaded"}});
  });
}

Result<std::string> HttpService::Listen(const std::string& address, bool control) {
  LOOM_ASSIGN_OR_RETURN(ListenAddress addr, ParseListenAddress(address));
  auto server = std::make_unique<httplib::Server>();
  Install(*server, control);
  int port = addr.port;
  if (port == 0) {
    port = server->bind_to_any_port(addr.host);
    if (port < 0) return Status::Unavailable("cannot bind " + address);
  } else if (!server->bind_to_port(addr.host, port)) {
    return Status::Unavailable("cannot bind " + address + " (in use?)");
  }
  httplib::Server* raw = server.get();
  servers_.push_back(std::move(server));
  threads_.emplace_back([raw] { raw->listen_after_bind(); });
  for (int i = 0; i < 1000 && !raw->is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const std::string host = addr.host.find(':') != std::string::npos ? "[" + addr.host + "]" : addr.host;
  return host + ":" + std::to_string(port);
}

void HttpService::Stop() {
  for (auto& s : servers_) s->stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  servers_.clear();
}

}  // namespace loom
