// Model names become file names in the shared directory, so they are restricted to
// [A-Za-z0-9][A-Za-z0-9_.-]{0,127} and may not contain "..". Thread-safety: pure function.
#ifndef LOOM_MODEL_NAME_H_
#define LOOM_MODEL_NAME_H_

#include <string_view>

#include "loom/status.h"

namespace loom {

Status ValidateModelName(std::string_view name);

}  // namespace loom

#endif  // LOOM_MODEL_NAME_H_
