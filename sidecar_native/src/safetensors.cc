#include "loom/safetensors.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "loom/utf8.h"

namespace loom {
namespace {

using json = nlohmann::json;

Status Invalid(std::string msg) { return Status::InvalidModel(std::move(msg)); }

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// serde_json's recursion limit, checked before the DOM is built so that a deep header costs
// nothing. Counts [ and { outside strings; exact for valid JSON, and invalid JSON fails anyway.
bool ExceedsDepth(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

std::optional<uint64_t> AsUsize(const json& v) {
  // serde's usize takes JSON integers >= 0 only; "-0", "1.0" and "1e2" are floats to serde_json.
  if (!v.is_number_unsigned()) return std::nullopt;
  return v.get<uint64_t>();
}

// The start of a JSON value for an error message, cut on a character boundary.
std::string Snippet(const json& v) { return SanitizeUtf8(v.dump().substr(0, 80)); }

std::string Quoted(std::string_view name) { return "`" + std::string(name) + "`"; }

Result<Dtype> ParseDtypeValue(const std::string& tensor, const json& v) {
  std::string name;
  if (v.is_string()) {
    name = v.get<std::string>();
  } else if (v.is_object() && v.size() == 1 && v.begin().value().is_null()) {
    name = v.begin().key();  // serde also takes an enum as {"F16": null}
  } else {
    return Invalid("tensor " + Quoted(tensor) + ": dtype must be a string such as \"F16\", got " + v.dump());
  }
  std::optional<Dtype> dtype = ParseDtype(name);
  if (!dtype) {
    std::string known;
    for (Dtype d : AllDtypes()) known += (known.empty() ? "" : ", ") + std::string(DtypeName(d));
    return Invalid("tensor " + Quoted(tensor) + ": unknown dtype \"" + name + "\" (known: " + known + ")");
  }
  return *dtype;
}

Result<std::vector<uint64_t>> ParseShape(const std::string& tensor, const json& v) {
  if (!v.is_array()) return Invalid("tensor " + Quoted(tensor) + ": shape must be an array of integers >= 0");
  std::vector<uint64_t> shape;
  shape.reserve(v.size());
  for (const json& d : v) {
    std::optional<uint64_t> n = AsUsize(d);
    if (!n) {
      return Invalid("tensor " + Quoted(tensor) +
                     ": shape entries must be integers >= 0 (no sign, fraction or exponent), got " + d.dump());
    }
    shape.push_back(*n);
  }
  return shape;
}

Status ParseOffsets(const std::string& tensor, const json& v, TensorInfo& out) {
  std::optional<uint64_t> b, e;
  if (v.is_array() && v.size() == 2) b = AsUsize(v[0]), e = AsUsize(v[1]);
  if (!b || !e) {
    return Invalid("tensor " + Quoted(tensor) +
                   ": data_offsets must be [begin, end], two integers >= 0 (no sign, fraction or exponent), got " +
                   v.dump());
  }
  out.begin = *b;
  out.end = *e;
  return Status::OK();
}

// One tensor entry: {"dtype", "shape", "data_offsets"} (other keys ignored, as serde does) or
// the 3-element array form [dtype, shape, data_offsets] that serde also accepts for a struct.
Result<TensorInfo> ParseTensorEntry(const std::string& name, const json& v) {
  TensorInfo info;
  info.name = name;
  const json *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
  if (v.is_object()) {
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      auto it = v.find(field);
      if (it == v.end()) return Invalid("tensor " + Quoted(name) + ": missing field \"" + field + "\"");
    }
    dtype = &v["dtype"], shape = &v["shape"], offsets = &v["data_offsets"];
  } else if (v.is_array() && v.size() == 3) {
    dtype = &v[0], shape = &v[1], offsets = &v[2];
  } else {
    return Invalid("tensor " + Quoted(name) +
                   ": entry must be an object {dtype, shape, data_offsets}, got " + Snippet(v));
  }
  LOOM_ASSIGN_OR_RETURN(info.dtype, ParseDtypeValue(name, *dtype));
  LOOM_ASSIGN_OR_RETURN(info.shape, ParseShape(name, *shape));
  LOOM_RETURN_IF_ERROR(ParseOffsets(name, *offsets, info));
  return info;
}

// Collects tensors while nlohmann parses, reproducing the parts of serde's behaviour that a
// DOM loses: duplicate-field errors, last-wins duplicate tensor names (each occurrence still
// validated) and single-key enum maps. Each finished top-level member is dropped from the DOM.
class HeaderCollector {
 public:
  bool OnEvent(json::parse_event_t event, json& parsed) {
    using E = json::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        stack_.push_back(Frame{ChildKind(event == E::object_start), event == E::object_start, {}, {}, 0, 0});
        return true;
      case E::key:
        OnKey(parsed.get_ref<const std::string&>());
        return true;
      case E::value:
        if (stack_.empty()) return true;
        if (stack_.back().kind == Kind::kTensorSeq) ++stack_.back().elements;
        if (stack_.back().kind == Kind::kTop) return OnMember(parsed);
        return true;
      case E::object_end:
      case E::array_end:
        stack_.pop_back();
        if (!stack_.empty() && stack_.back().kind == Kind::kTop) return OnMember(parsed);
        return true;
    }
    return true;
  }

  const Status& error() const { return error_; }
  std::map<std::string, TensorInfo>& tensors() { return tensors_; }
  std::optional<std::map<std::string, std::string>>& metadata() { return metadata_; }

 private:
  enum class Kind { kTop, kMeta, kTensorMap, kTensorSeq, kDtypeMap, kOther };
  struct Frame {
    Kind kind;
    bool is_object;
    std::string last_key;
    std::set<std::string, std::less<>> fields_seen;
    size_t elements = 0;  // children of a kTensorSeq started so far
    size_t keys = 0;
  };

  Kind ChildKind(bool is_object) {
    if (stack_.empty()) return is_object ? Kind::kTop : Kind::kOther;
    Frame& parent = stack_.back();
    switch (parent.kind) {
      case Kind::kTop:
        if (parent.last_key == "__metadata__") return is_object ? Kind::kMeta : Kind::kOther;
        return is_object ? Kind::kTensorMap : Kind::kTensorSeq;
      case Kind::kTensorMap:
        return is_object && parent.last_key == "dtype" ? Kind::kDtypeMap : Kind::kOther;
      case Kind::kTensorSeq: {
        const bool first = parent.elements++ == 0;
        return is_object && first ? Kind::kDtypeMap : Kind::kOther;
      }
      default:
        return Kind::kOther;
    }
  }

  void OnKey(const std::string& key) {
    Frame& f = stack_.back();
    f.last_key = key;
    if (f.kind == Kind::kTop && key == "__metadata__") {
      if (!f.fields_seen.insert(key).second) Fail(Invalid("duplicate field `__metadata__` in header"));
    } else if (f.kind == Kind::kTensorMap && (key == "dtype" || key == "shape" || key == "data_offsets")) {
      if (!f.fields_seen.insert(key).second) Fail(Invalid("duplicate field `" + key + "` in a tensor entry"));
    } else if (f.kind == Kind::kDtypeMap && ++f.keys > 1) {
      Fail(Invalid("dtype given as a map must have a single key"));
    }
  }

  // A complete top-level member: validate it now (every occurrence, as serde does) and keep
  // the parsed form; returning false drops it from the DOM.
  bool OnMember(const json& value) {
    const std::string& name = stack_.back().last_key;
    if (name == "__metadata__") {
      if (value.is_null()) {
        metadata_.reset();
      } else if (!value.is_object()) {
        Fail(Invalid("__metadata__ must be an object of string values, got " + Snippet(value)));
      } else {
        std::map<std::string, std::string> meta;
        for (auto it = value.begin(); it != value.end(); ++it) {
          if (!it.value().is_string()) {
            Fail(Invalid("__metadata__ value for key \"" + it.key() + "\" must be a string, got " +
                         Snippet(it.value())));
            return false;
          }
          meta[it.key()] = it.value().get<std::string>();
        }
        metadata_ = std::move(meta);
      }
      return false;
    }
    Result<TensorInfo> info = ParseTensorEntry(name, value);
    if (!info.ok()) {
      Fail(info.status());
    } else {
      tensors_.insert_or_assign(name, std::move(info).value());
    }
    return false;
  }

  void Fail(Status s) {
    if (error_.ok()) error_ = std::move(s);
  }

  std::vector<Frame> stack_;
  Status error_;
  std::map<std::string, TensorInfo> tensors_;
  std::optional<std::map<std::string, std::string>> metadata_;
};

Status ValidateTiling(const std::vector<TensorInfo>& tensors, uint64_t* buffer_end) {
  uint64_t start = 0;
  for (const TensorInfo& t : tensors) {
    if (t.begin != start || t.end < t.begin) {
      return Invalid("invalid offset for tensor " + Quoted(t.name) + ": data_offsets [" + std::to_string(t.begin) +
                     ", " + std::to_string(t.end) + "] but the previous tensor ends at " + std::to_string(start) +
                     " (offsets must tile the data buffer from 0 without gaps or overlaps)");
    }
    start = t.end;
    uint64_t numel = 1;
    for (uint64_t d : t.shape) {
      if (__builtin_mul_overflow(numel, d, &numel)) {
        return Invalid("overflow computing the size of tensor " + Quoted(t.name) + " from shape " +
                       ShapeString(t.shape));
      }
    }
    uint64_t nbits;
    if (__builtin_mul_overflow(numel, uint64_t{DtypeBits(t.dtype)}, &nbits)) {
      return Invalid("overflow computing the size of tensor " + Quoted(t.name) + " from shape " +
                     ShapeString(t.shape) + " and dtype " + std::string(DtypeName(t.dtype)));
    }
    if (nbits % 8 != 0) {
      return Invalid("tensor " + Quoted(t.name) + ": " + std::to_string(numel) + " elements of " +
                     std::string(DtypeName(t.dtype)) + " do not end on a byte boundary");
    }
    if (t.end - t.begin != nbits / 8) {
      return Invalid("tensor " + Quoted(t.name) + ": data_offsets span " + std::to_string(t.end - t.begin) +
                     " bytes but " + std::string(DtypeName(t.dtype)) + " x " + ShapeString(t.shape) + " needs " +
                     std::to_string(nbits / 8));
    }
  }
  *buffer_end = start;
  return Status::OK();
}

}  // namespace

Result<uint64_t> ParseHeaderLength(std::span<const uint8_t> prefix, uint64_t file_size) {
  if (file_size < kHeaderPrefixLen || prefix.size() < kHeaderPrefixLen) {
    return Invalid("file is " + std::to_string(std::min<uint64_t>(file_size, prefix.size())) +
                   " bytes, too small for the 8-byte header length");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];
  if (n > kMaxHeaderLen) {
    return Invalid("header length " + std::to_string(n) + " exceeds the limit of 100000000 bytes");
  }
  if (kHeaderPrefixLen + n > file_size) {
    return Invalid("header length " + std::to_string(n) + " runs past the end of the file (" +
                   std::to_string(file_size) + " bytes)");
  }
  return n;
}

Result<SafetensorsHeader> ParseHeaderJson(std::string_view text, uint64_t file_size) {
  if (std::optional<size_t> bad = FindInvalidUtf8(text)) {
    return Invalid("header is not valid UTF-8 (at byte " + std::to_string(*bad) + " of the header)");
  }
  if (text.starts_with("\xEF\xBB\xBF")) {
    return Invalid("invalid JSON in header: starts with a byte order mark");
  }
  // nlohmann stops at a NUL byte as if the input ended there; to serde_json it is an error
  // everywhere (not whitespace, and a raw control character inside strings).
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return Invalid("invalid JSON in header: NUL byte at offset " + std::to_string(nul));
  }
  if (ExceedsDepth(text, kMaxJsonDepth)) {
    return Invalid("invalid JSON in header: nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  }
  HeaderCollector collector;
  json root;
  try {
    root = json::parse(
        text.begin(), text.end(),
        [&collector](int /*depth*/, json::parse_event_t event, json& parsed) {
          return collector.OnEvent(event, parsed);
        },
        /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    // nlohmann quotes the last bytes read, which may cut a multi-byte character in half.
    return Invalid("invalid JSON in header: " + SanitizeUtf8(e.what()));
  }
  if (!root.is_object()) return Invalid("header must be a JSON object, got " + std::string(root.type_name()));
  if (!collector.error().ok()) return collector.error();

  SafetensorsHeader header;
  header.header_len = text.size();
  header.metadata = std::move(collector.metadata());
  header.tensors.reserve(collector.tensors().size());
  for (auto& [name, info] : collector.tensors()) header.tensors.push_back(std::move(info));
  std::stable_sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  uint64_t buffer_end = 0;
  LOOM_RETURN_IF_ERROR(ValidateTiling(header.tensors, &buffer_end));
  uint64_t expected = 0;
  if (__builtin_add_overflow(buffer_end, kHeaderPrefixLen + header.header_len, &expected) || expected != file_size) {
    const uint64_t after = file_size - std::min(file_size, kHeaderPrefixLen + header.header_len);
    return Invalid("tensors cover " + std::to_string(buffer_end) + " bytes of data but the file has " +
                   std::to_string(after) + " bytes after the header (" +
                   (buffer_end < after ? "trailing bytes" : "file truncated") + ")");
  }
  return header;
}

Result<SafetensorsHeader> ParseSafetensors(std::span<const uint8_t> prefix, uint64_t file_size) {
  LOOM_ASSIGN_OR_RETURN(uint64_t n, ParseHeaderLength(prefix, file_size));
  if (prefix.size() < kHeaderPrefixLen + n) {
    return Status::InvalidArgument("ParseSafetensors needs the first " + std::to_string(kHeaderPrefixLen + n) +
                                   " bytes of the file, got " + std::to_string(prefix.size()));
  }
  std::string_view text(reinterpret_cast<const char*>(prefix.data()) + kHeaderPrefixLen, n);
  return ParseHeaderJson(text, file_size);
}

}  // namespace loom
