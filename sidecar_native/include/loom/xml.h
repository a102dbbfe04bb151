// A small, validating XML reader for the documents object stores answer with: S3 ListObjectsV2
// and Error bodies, STS AssumeRoleWithWebIdentity results. It builds a tree of elements (local
// names, namespace prefixes dropped), decodes the five predefined entities and numeric character
// references, skips the prolog, comments and processing instructions, keeps CDATA as text, and
// ignores attributes. It refuses (Status::InvalidArgument) mismatched or unclosed tags, DOCTYPE
// declarations (no entity expansion, ever), invalid references, input over kMaxXmlBytes and
// nesting deeper than kMaxXmlDepth. Thread-safety: pure functions.
#ifndef LOOM_XML_H_
#define LOOM_XML_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "loom/status.h"

namespace loom {

inline constexpr size_t kMaxXmlBytes = 16 << 20;
inline constexpr size_t kMaxXmlDepth = 32;
inline constexpr size_t kMaxXmlElements = 1 << 20;

struct XmlElement {
  std::string name;                  // local name ("Key" for <s3:Key>)
  std::string text;                  // the decoded character data directly inside it
  std::vector<XmlElement> children;  // in document order

  // The first child named `name`, or nullptr.
  const XmlElement* Child(std::string_view name) const;
  // Every child named `name`, in order.
  std::vector<const XmlElement*> Children(std::string_view name) const;
  // The text of the first child named `name`; "" when there is none.
  std::string ChildText(std::string_view name) const;
};

// Parses one document; returns its root element.
Result<XmlElement> ParseXml(std::string_view doc);

}  // namespace loom

#endif  // LOOM_XML_H_
