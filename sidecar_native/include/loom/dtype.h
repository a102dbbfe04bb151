// Element types of safetensors tensors: exactly the set the reference crate (safetensors 0.8)
// accepts, with their widths in bits. Thread-safety: pure functions.
#ifndef LOOM_DTYPE_H_
#define LOOM_DTYPE_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace loom {

enum class Dtype : uint8_t {
  kBOOL, kF4, kF6_E2M3, kF6_E3M2, kU8, kI8, kF8_E5M2, kF8_E4M3, kF8_E8M0, kF8_E4M3FNUZ,
  kF8_E5M2FNUZ, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kC64, kF64, kI64, kU64,
};

// All dtypes, in the reference's order.
std::span<const Dtype> AllDtypes();
// The name as written in a safetensors header ("BF16").
std::string_view DtypeName(Dtype dtype);
// Width of one element in bits (4 for F4, 6 for F6_*, 64 for C64).
uint32_t DtypeBits(Dtype dtype);
// Exact, case-sensitive match of a header name; nullopt for anything else.
std::optional<Dtype> ParseDtype(std::string_view name);

}  // namespace loom

#endif  // LOOM_DTYPE_H_
