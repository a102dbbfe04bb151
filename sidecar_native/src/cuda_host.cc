#include "loom/cuda_host.h"

#include <string>

#ifdef LOOM_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace loom {

#ifdef LOOM_WITH_CUDA
bool CudaSupportCompiledIn() { return true; }

Status CudaHostRegister(void* addr, size_t len) {
  const cudaError_t err = cudaHostRegister(addr, len, cudaHostRegisterPortable);
  if (err != cudaSuccess) {
    return Status::FailedPrecondition(std::string("cudaHostRegister failed: ") + cudaGetErrorString(err));
  }
  return Status::OK();
}

Status CudaHostUnregister(void* addr) {
  const cudaError_t err = cudaHostUnregister(addr);
  if (err != cudaSuccess) {
    return Status::FailedPrecondition(std::string("cudaHostUnregister failed: ") + cudaGetErrorString(err));
  }
  return Status::OK();
}
#else
bool CudaSupportCompiledIn() { return false; }

Status CudaHostRegister(void*, size_t) {
  return Status::FailedPrecondition("this loom-sidecar was built without CUDA (rebuild with -DLOOM_WITH_CUDA=ON)");
}

Status CudaHostUnregister(void*) { return CudaHostRegister(nullptr, 0); }
#endif

}  // namespace loom
