// annulus_sample on CUDA: (n, d) points uniform in the volume of the shell r_inner <= ||z|| <= r_outer.
//
// One warp per row. Each lane draws its Gaussians with curand_normal4 from Philox4x32-10 at
// subsequence row * 32 + lane and the offset taken from the generator's PhiloxCudaState (under its
// mutex, advanced by the values each thread uses, a multiple of 4, as ATen's random kernels do).
// Pass 1 sums the squares in double (warp shuffle); lane 0 draws the radius uniform and broadcasts
// the scale; pass 2 replays the same Philox stream and writes the scaled values, so nothing but
// the output is stored.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <curand_kernel.h>
#include <torch/library.h>

#include <mutex>

#include "../ops_common.h"
#include "common.cuh"

namespace anomalykit {
namespace {

using namespace anomalykit::cuda;

constexpr int kRowsPerBlock = 8;  // warps per block
constexpr int kValuesPerDraw = 4;  // curand_normal4
constexpr int64_t kRowStep = int64_t{kWarpSize} * kValuesPerDraw;  // values of a row per warp-wide draw

// Philox values one thread uses: its Gaussian draws plus lane 0's curand_uniform2_double (4 values).
inline uint64_t philox_increment(int64_t d) {
  return kValuesPerDraw * static_cast<uint64_t>((d + kRowStep - 1) / kRowStep + 1);
}

template <typename scalar_t>
__global__ void annulus_sample_kernel(int64_t n, int64_t d, AnnulusRadius radius_of, at::PhiloxCudaState philox, scalar_t* __restrict__ out) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t row = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kWarpSize;
  if (row >= n) return;  // whole warps leave together
  const auto seeds = at::cuda::philox::unpack(philox);
  curandStatePhilox4_32_10_t state;
  curand_init(std::get<0>(seeds), static_cast<uint64_t>(row) * kWarpSize + lane, std::get<1>(seeds), &state);
  const curandStatePhilox4_32_10_t start = state;

  double sum_squares = 0;
  for (int64_t j = kValuesPerDraw * lane; j < d; j += kRowStep) {
    const float4 g = curand_normal4(&state);
    const float values[kValuesPerDraw] = {g.x, g.y, g.z, g.w};
#pragma unroll
    for (int v = 0; v < kValuesPerDraw; ++v) {
      if (j + v < d) sum_squares += double(values[v]) * double(values[v]);
    }
  }
  sum_squares = warp_sum(sum_squares);
  double scale = 0;
  if (lane == 0) scale = radius_of(curand_uniform2_double(&state).x - 0x1.0p-53) / ::sqrt(sum_squares);  // u in [0, 1)
  scale = __shfl_sync(0xffffffffu, scale, 0);

  state = start;
  scalar_t* out_row = out + row * d;
  const float scale_f = static_cast<float>(scale);
  for (int64_t j = kValuesPerDraw * lane; j < d; j += kRowStep) {
    const float4 g = curand_normal4(&state);
    const float values[kValuesPerDraw] = {g.x, g.y, g.z, g.w};
#pragma unroll
    for (int v = 0; v < kValuesPerDraw; ++v) {
      if (j + v < d) {
        if constexpr (std::is_same_v<scalar_t, double>) {
          out_row[j + v] = double(values[v]) * scale;
        } else {
          out_row[j + v] = static_cast<scalar_t>(values[v] * scale_f);
        }
      }
    }
  }
}

at::Tensor annulus_sample_cuda(
    int64_t n, int64_t d, double r_inner, double r_outer, std::optional<at::Generator> generator,
    std::optional<at::ScalarType> dtype_opt, std::optional<at::Device> device_opt) {
  const at::ScalarType dtype = dtype_opt.value_or(at::get_default_dtype_as_scalartype());
  check_annulus_args(n, d, r_inner, r_outer, dtype);
  at::Device device = device_opt.value_or(at::Device(at::kCUDA));
  if (!device.has_index()) device = at::Device(at::kCUDA, c10::cuda::current_device());
  const c10::cuda::CUDAGuard guard(device);
  at::Tensor out = at::empty({n, d}, at::TensorOptions().dtype(dtype).device(device));
  if (n == 0) return out;

  at::PhiloxCudaState philox;
  {
    auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(generator, at::cuda::detail::getDefaultCUDAGenerator(device.index()));
    std::lock_guard<std::mutex> lock(gen->mutex_);
    philox = gen->philox_cuda_state(philox_increment(d));
  }
  const AnnulusRadius radius_of(d, r_inner, r_outer, dtype_eps(dtype));
  const int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "annulus_sample_cuda", [&] {
    annulus_sample_kernel<scalar_t><<<blocks, kRowsPerBlock * kWarpSize, 0, at::cuda::getCurrentCUDAStream()>>>(
        n, d, radius_of, philox, out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(anomalykit, CUDA, m) {
  m.impl("annulus_sample", &annulus_sample_cuda);
}

}  // namespace anomalykit
