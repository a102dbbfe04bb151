// The parsers of aws_credentials.h that need no network (in loom_core, so the fuzz target links them).
#include <ctime>

#include "loom/aws_credentials.h"

namespace loom {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<AwsCredentials> ParseCredentialsFile(std::string_view text, std::string_view profile) {
  std::string section;
  bool found = false;
  AwsCredentials out;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view raw = text.substr(0, nl);
    std::string_view line = Trim(raw);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      if (line.back() != ']' || line.size() < 3) {
        return Status::InvalidArgument("credentials file line " + std::to_string(line_no) + ": malformed [profile]");
      }
      section = std::string(Trim(line.substr(1, line.size() - 2)));
      if (section.starts_with("profile ")) section = std::string(Trim(std::string_view(section).substr(8)));
      if (section == profile) found = true;
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      // Continuation lines (indented values of nested settings) carry nothing the sidecar uses;
      // anything else is malformed.
      if (raw.front() == ' ' || raw.front() == '\t') continue;
      return Status::InvalidArgument("credentials file line " + std::to_string(line_no) + ": expected key = value");
    }
    if (section.empty()) {
      return Status::InvalidArgument("credentials file line " + std::to_string(line_no) + ": a setting before any [profile]");
    }
    if (section != profile) continue;
    const std::string_view key = Trim(line.substr(0, eq));
    const std::string value(Trim(line.substr(eq + 1)));
    if (key == "aws_access_key_id") out.access_key_id = value;
    else if (key == "aws_secret_access_key") out.secret_access_key = value;
    else if (key == "aws_session_token") out.session_token = value;
  }
  if (!found) return Status::NotFound("credentials file has no profile [" + std::string(profile) + "]");
  if (out.access_key_id.empty() || out.secret_access_key.empty()) {
    return Status::NotFound("profile [" + std::string(profile) +
                            "] lacks aws_access_key_id or aws_secret_access_key");
  }
  return out;
}

std::optional<std::chrono::system_clock::time_point> ParseIso8601(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.fff]Z
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return std::nullopt;
  if (s.back() != 'Z') return std::nullopt;
  auto num = [&](size_t at, size_t len) -> std::optional<int> {
    int v = 0;
    for (size_t i = at; i < at + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return std::nullopt;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  auto y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2), se = num(17, 2);
  // Years the clock's nanosecond time points can hold (1678-2262), and then some margin.
  if (!y || !mo || !d || !h || !mi || !se || *y < 1970 || *y > 2200 || *mo < 1 || *mo > 12 || *d < 1 || *d > 31 || *h > 23 || *mi > 59 ||
      *se > 60) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = *y - 1900;
  tm.tm_mon = *mo - 1;
  tm.tm_mday = *d;
  tm.tm_hour = *h;
  tm.tm_min = *mi;
  tm.tm_sec = *se;
  const time_t t = timegm(&tm);
  if (t == static_cast<time_t>(-1)) return std::nullopt;
  return std::chrono::system_clock::from_time_t(t);
}

}  // namespace loom
