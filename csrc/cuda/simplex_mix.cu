// simplex_mix on CUDA: out[b] = sum_i weight[b, i] * latents[index[b, i]] (AMA sec. 3.2), and its backward.
//
// Forward: a gather, one thread per output element. grad_weight: one block per output row, a block
// sum per vertex. grad_latents: scatter-add with atomicAdd (into a float buffer for half/bfloat16),
// so its summation order, and the last bits of the result, may vary between runs, like index_add_.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <torch/library.h>

#include "../ops_common.h"
#include "common.cuh"

namespace anomalykit {
namespace {

using namespace anomalykit::cuda;

constexpr int kThreads = 128;

// grid (rows, ceil(d / kThreads)); out is contiguous (rows, d).
template <typename scalar_t>
__global__ void simplex_mix_kernel(
    const scalar_t* __restrict__ latents, int64_t lat_stride, int64_t n_latents, const int64_t* __restrict__ index,
    const scalar_t* __restrict__ weight, int64_t k, int64_t d, scalar_t* __restrict__ out) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t b = blockIdx.x;
  const int64_t j = blockIdx.y * int64_t(blockDim.x) + threadIdx.x;
  if (j >= d) return;
  acc_t acc = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t m = index[b * k + i];
    CUDA_KERNEL_ASSERT(m >= 0 && m < n_latents && "simplex_mix: index out of range");
    acc += static_cast<acc_t>(weight[b * k + i]) * static_cast<acc_t>(latents[m * lat_stride + j]);
  }
  out[b * d + j] = static_cast<scalar_t>(acc);
}

// grad_weight[b, i] = <grad[b], latents[index[b, i]]>; one block per b.
template <typename scalar_t>
__global__ void simplex_mix_grad_weight_kernel(
    const scalar_t* __restrict__ grad, int64_t grad_stride, const scalar_t* __restrict__ latents, int64_t lat_stride,
    const int64_t* __restrict__ index, int64_t k, int64_t d, scalar_t* __restrict__ grad_weight) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t b = blockIdx.x;
  for (int64_t i = 0; i < k; ++i) {
    const scalar_t* row = latents + index[b * k + i] * lat_stride;
    acc_t dot = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      dot += static_cast<acc_t>(grad[b * grad_stride + j]) * static_cast<acc_t>(row[j]);
    }
    dot = block_sum(dot);
    if (threadIdx.x == 0) grad_weight[b * k + i] = static_cast<scalar_t>(dot);
  }
}

// grad_latents[index[b, i], j] += weight[b, i] * grad[b, j]; grid (rows, ceil(d / kThreads)).
template <typename scalar_t, typename acc_t>
__global__ void simplex_mix_grad_latents_kernel(
    const scalar_t* __restrict__ grad, int64_t grad_stride, const int64_t* __restrict__ index,
    const scalar_t* __restrict__ weight, int64_t k, int64_t d, acc_t* __restrict__ grad_latents) {
  const int64_t b = blockIdx.x;
  const int64_t j = blockIdx.y * int64_t(blockDim.x) + threadIdx.x;
  if (j >= d) return;
  const acc_t g = static_cast<acc_t>(grad[b * grad_stride + j]);
  for (int64_t i = 0; i < k; ++i) {
    gpuAtomicAdd(grad_latents + index[b * k + i] * d + j, static_cast<acc_t>(weight[b * k + i]) * g);
  }
}

dim3 row_grid(int64_t rows, int64_t d) {
  return dim3(static_cast<unsigned>(rows), static_cast<unsigned>((d + kThreads - 1) / kThreads));
}

at::Tensor simplex_mix_cuda(const at::Tensor& latents_in, const at::Tensor& index_in, const at::Tensor& weight_in) {
  check_simplex_mix_inputs(latents_in, index_in, weight_in);
  const c10::cuda::CUDAGuard guard(latents_in.device());
  const at::Tensor latents = with_contiguous_rows(latents_in);
  const at::Tensor index = index_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const int64_t rows = index.size(0), k = index.size(1), d = latents.size(1);
  at::Tensor out = at::empty({rows, d}, latents.options().memory_format(at::MemoryFormat::Contiguous));
  if (rows * d == 0) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, latents.scalar_type(), "simplex_mix_cuda", [&] {
    simplex_mix_kernel<scalar_t><<<row_grid(rows, d), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        latents.const_data_ptr<scalar_t>(), latents.stride(0), latents.size(0), index.const_data_ptr<int64_t>(),
        weight.const_data_ptr<scalar_t>(), k, d, out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> simplex_mix_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& latents_in, const at::Tensor& index_in, const at::Tensor& weight_in,
    bool latents_grad, bool weight_grad) {
  check_simplex_mix_inputs(latents_in, index_in, weight_in);
  TORCH_CHECK(grad_in.dim() == 2 && grad_in.size(0) == index_in.size(0) && grad_in.size(1) == latents_in.size(1),
              "simplex_mix_backward: grad must have shape (", index_in.size(0), ", ", latents_in.size(1), "), got ", grad_in.sizes());
  const c10::cuda::CUDAGuard guard(latents_in.device());
  const at::Tensor latents = with_contiguous_rows(latents_in);
  const at::Tensor index = index_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor grad = with_contiguous_rows(grad_in.to(latents.scalar_type()));
  const int64_t n_latents = latents.size(0), rows = index.size(0), k = index.size(1), d = latents.size(1);
  const auto opts = latents.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_latents = at::empty({0}, opts);
  at::Tensor grad_weight = at::empty({0}, opts);
  const auto stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, latents.scalar_type(), "simplex_mix_backward_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    if (weight_grad) {
      grad_weight = at::empty({rows, k}, opts);
      if (rows * k > 0) {
        simplex_mix_grad_weight_kernel<scalar_t><<<rows, threads_for(d), 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), grad.stride(0), latents.const_data_ptr<scalar_t>(), latents.stride(0),
            index.const_data_ptr<int64_t>(), k, d, grad_weight.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    if (latents_grad) {
      at::Tensor acc = at::zeros({n_latents, d}, opts.dtype(c10::CppTypeToScalarType<acc_t>::value));
      if (rows * d > 0) {
        simplex_mix_grad_latents_kernel<scalar_t, acc_t><<<row_grid(rows, d), kThreads, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), grad.stride(0), index.const_data_ptr<int64_t>(),
            weight.const_data_ptr<scalar_t>(), k, d, acc.mutable_data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      grad_latents = acc.to(latents.scalar_type());  // no copy when acc_t == scalar_t
    }
  });
  return {grad_latents, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(anomalykit, CUDA, m) {
  m.impl("simplex_mix", &simplex_mix_cuda);
  m.impl("simplex_mix_backward", &simplex_mix_backward_cuda);
}

}  // namespace anomalykit
