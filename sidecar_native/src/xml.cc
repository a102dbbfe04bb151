#include "loom/xml.h"

#include <cstdint>

#include "loom/utf8.h"

namespace loom {
namespace {

bool IsNameChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.' || c == ':';
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Parser {
 public:
  explicit Parser(std::string_view doc) : s_(doc) {}

  Result<XmlElement> Document() {
    LOOM_RETURN_IF_ERROR(Misc());
    if (!Peek("<")) return Error("no root element");
    XmlElement root;
    LOOM_RETURN_IF_ERROR(Element(root, 1));
    LOOM_RETURN_IF_ERROR(Misc());
    if (pos_ != s_.size()) return Error("content after the root element");
    return root;
  }

 private:
  Status Error(const std::string& what) const {
    return Status::InvalidArgument("XML: " + what + " at byte " + std::to_string(pos_));
  }
  bool Peek(std::string_view p) const { return s_.substr(pos_).starts_with(p); }
  void SkipSpace() {
    while (pos_ < s_.size() && IsSpace(s_[pos_])) ++pos_;
  }
  Status SkipPast(std::string_view end, const char* what) {
    const size_t at = s_.find(end, pos_);
    if (at == std::string_view::npos) return Error(std::string("unterminated ") + what);
    pos_ = at + end.size();
    return Status::OK();
  }

  // Whitespace, comments and processing instructions (the prolog among them) between elements.
  Status Misc() {
    while (true) {
      SkipSpace();
      if (Peek("<?")) {
        LOOM_RETURN_IF_ERROR(SkipPast("?>", "processing instruction"));
      } else if (Peek("<!--")) {
        LOOM_RETURN_IF_ERROR(SkipPast("-->", "comment"));
      } else if (Peek("<!")) {
        return Error("DOCTYPE and other declarations are not accepted");
      } else {
        return Status::OK();
      }
    }
  }

  Result<std::string> Name() {
    const size_t start = pos_;
    while (pos_ < s_.size() && IsNameChar(s_[pos_])) ++pos_;
    if (pos_ == start) return Error("expected a name");
    return std::string(s_.substr(start, pos_ - start));
  }

  static std::string LocalName(const std::string& qname) {
    const size_t colon = qname.rfind(':');
    return colon == std::string::npos ? qname : qname.substr(colon + 1);
  }

  Status Reference(std::string& out) {
    const size_t semi = s_.find(';', pos_);
    if (semi == std::string_view::npos || semi - pos_ > 12) return Error("unterminated character reference");
    const std::string_view ref = s_.substr(pos_ + 1, semi - pos_ - 1);
    pos_ = semi + 1;
    if (ref == "amp") out += '&';
    else if (ref == "lt") out += '<';
    else if (ref == "gt") out += '>';
    else if (ref == "quot") out += '"';
    else if (ref == "apos") out += '\'';
    else if (ref.size() >= 2 && ref[0] == '#') {
      const bool hex = ref[1] == 'x';
      const std::string_view digits = ref.substr(hex ? 2 : 1);
      if (digits.empty()) return Error("empty character reference");
      uint32_t cp = 0;
      for (char c : digits) {
        uint32_t d;
        if (c >= '0' && c <= '9') d = static_cast<uint32_t>(c - '0');
        else if (hex && c >= 'a' && c <= 'f') d = static_cast<uint32_t>(c - 'a' + 10);
        else if (hex && c >= 'A' && c <= 'F') d = static_cast<uint32_t>(c - 'A' + 10);
        else return Error("bad character reference");
        cp = cp * (hex ? 16 : 10) + d;
        if (cp > 0x10FFFF) return Error("character reference out of range");
      }
      if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return Error("character reference to an invalid code point");
      AppendUtf8(out, cp);
    } else {
      return Error("unknown entity &" + std::string(ref) + ";");
    }
    return Status::OK();
  }

  Status Attributes(bool& self_closing) {
    while (true) {
      SkipSpace();
      if (pos_ >= s_.size()) return Error("unterminated tag");
      if (Peek("/>")) {
        pos_ += 2;
        self_closing = true;
        return Status::OK();
      }
      if (s_[pos_] == '>') {
        ++pos_;
        self_closing = false;
        return Status::OK();
      }
      LOOM_RETURN_IF_ERROR(Name().status());
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != '=') return Error("attribute without a value");
      ++pos_;
      SkipSpace();
      if (pos_ >= s_.size() || (s_[pos_] != '"' && s_[pos_] != '\'')) return Error("unquoted attribute value");
      const char quote = s_[pos_++];
      const size_t end = s_.find(quote, pos_);
      if (end == std::string_view::npos) return Error("unterminated attribute value");
      if (s_.substr(pos_, end - pos_).find('<') != std::string_view::npos) return Error("'<' in an attribute value");
      pos_ = end + 1;
    }
  }

  Status Element(XmlElement& el, size_t depth) {
    if (depth > kMaxXmlDepth) return Error("nested deeper than " + std::to_string(kMaxXmlDepth));
    if (++elements_ > kMaxXmlElements) return Error("too many elements");
    ++pos_;  // '<'
    LOOM_ASSIGN_OR_RETURN(std::string qname, Name());
    el.name = LocalName(qname);
    bool self_closing = false;
    LOOM_RETURN_IF_ERROR(Attributes(self_closing));
    if (self_closing) return Status::OK();
    while (true) {
      if (pos_ >= s_.size()) return Error("<" + qname + "> is never closed");
      const char c = s_[pos_];
      if (c == '<') {
        if (Peek("</")) {
          pos_ += 2;
          LOOM_ASSIGN_OR_RETURN(std::string closing, Name());
          SkipSpace();
          if (pos_ >= s_.size() || s_[pos_] != '>') return Error("unterminated closing tag");
          ++pos_;
          if (closing != qname) return Error("</" + closing + "> closes <" + qname + ">");
          return Status::OK();
        }
        if (Peek("<!--")) {
          LOOM_RETURN_IF_ERROR(SkipPast("-->", "comment"));
        } else if (Peek("<![CDATA[")) {
          const size_t start = pos_ + 9;
          LOOM_RETURN_IF_ERROR(SkipPast("]]>", "CDATA section"));
          el.text.append(s_.substr(start, pos_ - 3 - start));
        } else if (Peek("<?")) {
          LOOM_RETURN_IF_ERROR(SkipPast("?>", "processing instruction"));
        } else if (Peek("<!")) {
          return Error("declarations are not accepted inside elements");
        } else {
          el.children.emplace_back();
          LOOM_RETURN_IF_ERROR(Element(el.children.back(), depth + 1));
        }
      } else if (c == '&') {
        LOOM_RETURN_IF_ERROR(Reference(el.text));
      } else {
        const size_t end = s_.find_first_of("<&", pos_);
        const size_t stop = end == std::string_view::npos ? s_.size() : end;
        el.text.append(s_.substr(pos_, stop - pos_));
        pos_ = stop;
      }
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
  size_t elements_ = 0;
};

}  // namespace

const XmlElement* XmlElement::Child(std::string_view n) const {
  for (const XmlElement& c : children) {
    if (c.name == n) return &c;
  }
  return nullptr;
}

std::vector<const XmlElement*> XmlElement::Children(std::string_view n) const {
  std::vector<const XmlElement*> out;
  for (const XmlElement& c : children) {
    if (c.name == n) out.push_back(&c);
  }
  return out;
}

std::string XmlElement::ChildText(std::string_view n) const {
  const XmlElement* c = Child(n);
  return c ? c->text : std::string();
}

Result<XmlElement> ParseXml(std::string_view doc) {
  if (doc.size() > kMaxXmlBytes) {
    return Status::InvalidArgument("XML: document of " + std::to_string(doc.size()) + " bytes is over the limit");
  }
  if (FindInvalidUtf8(doc)) return Status::InvalidArgument("XML: not valid UTF-8");
  if (doc.starts_with("\xEF\xBB\xBF")) doc.remove_prefix(3);  // a byte-order mark
  return Parser(doc).Document();
}

}  // namespace loom
