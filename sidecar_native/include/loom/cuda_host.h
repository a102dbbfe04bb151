// Optional CUDA host registration of a staged region (cudaHostRegister), compiled in with
// -DLOOM_WITH_CUDA=ON; otherwise every call reports that the build has no CUDA.
// Pinning pays off only in a process that also copies to the GPU; consumers in other processes
// pin their own mapping (loom.shm pin=True). Thread-safety: as the CUDA runtime.
#ifndef LOOM_CUDA_HOST_H_
#define LOOM_CUDA_HOST_H_

#include <cstddef>

#include "loom/status.h"

namespace loom {

bool CudaSupportCompiledIn();
Status CudaHostRegister(void* addr, size_t len);
Status CudaHostUnregister(void* addr);

}  // namespace loom

#endif  // LOOM_CUDA_HOST_H_
