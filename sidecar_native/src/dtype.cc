#include "loom/dtype.h"

#include <array>

namespace loom {
namespace {

struct DtypeInfo {
  Dtype dtype;
  std::string_view name;
  uint32_t bits;
};

constexpr std::array<DtypeInfo, 22> kDtypes = {{
    {Dtype::kBOOL, "BOOL", 8},          {Dtype::kF4, "F4", 4},
    {Dtype::kF6_E2M3, "F6_E2M3", 6},    {Dtype::kF6_E3M2, "F6_E3M2", 6},
    {Dtype::kU8, "U8", 8},              {Dtype::kI8, "I8", 8},
    {Dtype::kF8_E5M2, "F8_E5M2", 8},    {Dtype::kF8_E4M3, "F8_E4M3", 8},
    {Dtype::kF8_E8M0, "F8_E8M0", 8},    {Dtype::kF8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {Dtype::kF8_E5M2FNUZ, "F8_E5M2FNUZ", 8}, {Dtype::kI16, "I16", 16},
    {Dtype::kU16, "U16", 16},           {Dtype::kF16, "F16", 16},
    {Dtype::kBF16, "BF16", 16},         {Dtype::kI32, "I32", 32},
    {Dtype::kU32, "U32", 32},           {Dtype::kF32, "F32", 32},
    {Dtype::kC64, "C64", 64},           {Dtype::kF64, "F64", 64},
    {Dtype::kI64, "I64", 64},           {Dtype::kU64, "U64", 64},
}};

constexpr std::array<Dtype, kDtypes.size()> MakeAll() {
  std::array<Dtype, kDtypes.size()> out{};
  for (size_t i = 0; i < kDtypes.size(); ++i) out[i] = kDtypes[i].dtype;
  return out;
}
constexpr std::array<Dtype, kDtypes.size()> kAll = MakeAll();

}  // namespace

std::span<const Dtype> AllDtypes() { return kAll; }

std::string_view DtypeName(Dtype dtype) { return kDtypes[static_cast<size_t>(dtype)].name; }

uint32_t DtypeBits(Dtype dtype) { return kDtypes[static_cast<size_t>(dtype)].bits; }

std::optional<Dtype> ParseDtype(std::string_view name) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.name == name) return info.dtype;
  }
  return std::nullopt;
}

}  // namespace loom
