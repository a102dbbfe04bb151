#include "loom/xml.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(XmlTest, ParsesElementsTextAndEntities) {
  Result<XmlElement> r = ParseXml(
      "<?xml version=\"1.0\"?>\n<!-- c --><s3:Root xmlns:s3=\"x\" a='1'><Key>a &amp; b &#65;&#x42;&lt;</Key>"
      "<Empty/><Key><![CDATA[<raw>]]></Key></s3:Root>\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->name, "Root");
  ASSERT_EQ(r->Children("Key").size(), 2u);
  EXPECT_EQ(r->ChildText("Key"), "a & b AB<");
  EXPECT_EQ(r->Children("Key")[1]->text, "<raw>");
  EXPECT_NE(r->Child("Empty"), nullptr);
  EXPECT_EQ(r->Child("Nope"), nullptr);
  EXPECT_EQ(r->ChildText("Nope"), "");
}

TEST(XmlTest, DecodesMultibyteReferences) {
  Result<XmlElement> r = ParseXml("<a>&#x1F600;&#233;</a>");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->text, "\xF0\x9F\x98\x80\xC3\xA9");
}

TEST(XmlTest, RefusesWhatItDoesNotTrust) {
  for (const char* bad : {"", "text", "<a>", "<a></b>", "<a><b></a></b>", "<a>&bogus;</a>", "<a>&#xD800;</a>",
                          "<a>&#0;</a>", "<a>&#99999999;</a>", "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
                          "<a></a><b></b>", "<a x=1></a>", "<a>\xff</a>", "<a><!-- x</a>"}) {
    Result<XmlElement> r = ParseXml(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    }
  }
  std::string deep;
  for (size_t i = 0; i <= kMaxXmlDepth; ++i) deep += "<a>";
  for (size_t i = 0; i <= kMaxXmlDepth; ++i) deep += "</a>";
  Result<XmlElement> r = ParseXml(deep);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("deeper"), std::string::npos);
}

}  // namespace
}  // namespace loom
