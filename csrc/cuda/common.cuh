// Helpers shared by the anomalykit CUDA kernels: aligned vector loads and a block-wide sum
// (warp shuffles, then one value per warp through shared memory, as in ATen's layer_norm_kernel.cu).
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

namespace anomalykit::cuda {

constexpr int kWarpSize = 32;
constexpr int kMaxThreads = 512;

// N values loaded or stored with one instruction when the address is aligned to sizeof(AlignedVector).
template <typename T, int N>
struct alignas(sizeof(T) * N) AlignedVector {
  T val[N];
};

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Sum of `value` over the block (blockDim.x a multiple of 32, at most 1024); the result is valid
// in thread 0. Safe to call repeatedly in one kernel.
template <typename T>
__device__ __forceinline__ T block_sum(T value) {
  __shared__ T warp_sums[kMaxThreads / kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  value = warp_sum(value);
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  const int warps = blockDim.x / kWarpSize;
  value = (threadIdx.x < warps) ? warp_sums[threadIdx.x] : T(0);
  if (warp == 0) value = warp_sum(value);
  return value;
}

// Threads per block for a row of `work` items: a multiple of 32 in [32, kMaxThreads].
inline int threads_for(int64_t work) {
  int threads = kWarpSize;
  while (threads < kMaxThreads && threads < work) threads *= 2;
  return threads;
}

inline bool is_aligned(const void* ptr, size_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

}  // namespace anomalykit::cuda
