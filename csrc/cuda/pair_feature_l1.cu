// pair_feature_l1 on CUDA: R(x) = ||a - b||_1 per row (AMA eq. 5), and its backward.
//
// One block per row; 16-byte aligned vector loads when the rows allow them (scalar loads
// otherwise); |a - b| accumulated in float (double for double) and reduced with warp shuffles
// plus shared memory.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../ops_common.h"
#include "common.cuh"

namespace anomalykit {
namespace {

using namespace anomalykit::cuda;

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t abs_diff(scalar_t x, scalar_t y) {
  const acc_t diff = static_cast<acc_t>(x) - static_cast<acc_t>(y);
  return diff < 0 ? -diff : diff;
}

template <typename scalar_t, int kVec>
__global__ void pair_l1_kernel(
    const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t cols, int64_t a_stride,
    int64_t b_stride, scalar_t* __restrict__ out) {
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  const int64_t row = blockIdx.x;
  const scalar_t* a_row = a + row * a_stride;
  const scalar_t* b_row = b + row * b_stride;
  acc_t sum = 0;
  if constexpr (kVec > 1) {
    using Vec = AlignedVector<scalar_t, kVec>;
    const Vec* a_vec = reinterpret_cast<const Vec*>(a_row);
    const Vec* b_vec = reinterpret_cast<const Vec*>(b_row);
    for (int64_t v = threadIdx.x; v < cols / kVec; v += blockDim.x) {
      const Vec x = a_vec[v], y = b_vec[v];
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        sum += abs_diff<acc_t>(x.val[i], y.val[i]);
      }
    }
  } else {
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      sum += abs_diff<acc_t>(a_row[j], b_row[j]);
    }
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) out[row] = static_cast<scalar_t>(sum);
}

template <typename scalar_t>
__global__ void pair_l1_backward_kernel(
    const scalar_t* __restrict__ grad, const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
    int64_t rows, int64_t cols, int64_t a_stride, int64_t b_stride, scalar_t* __restrict__ grad_a,
    scalar_t* __restrict__ grad_b) {
  using acc_t = at::acc_type<scalar_t, true>;
  const int64_t total = rows * cols;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = t / cols, col = t % cols;
    const acc_t diff = static_cast<acc_t>(a[row * a_stride + col]) - static_cast<acc_t>(b[row * b_stride + col]);
    const acc_t g = static_cast<acc_t>(grad[row]);
    const acc_t s = diff > 0 ? g : (diff < 0 ? -g : acc_t(0));
    grad_a[t] = static_cast<scalar_t>(s);
    grad_b[t] = static_cast<scalar_t>(-s);
  }
}

at::Tensor pair_feature_l1_cuda(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_pair_feature_l1_inputs(a_in, b_in);
  const c10::cuda::CUDAGuard guard(a_in.device());
  const at::Tensor a = with_contiguous_rows(a_in);
  const at::Tensor b = with_contiguous_rows(b_in);
  const int64_t rows = a.size(0), cols = a.size(1);
  at::Tensor out = at::empty({rows}, a.options());
  if (rows == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "pair_feature_l1_cuda", [&] {
    constexpr int kVec = 16 / sizeof(scalar_t);
    const scalar_t* a_ptr = a.const_data_ptr<scalar_t>();
    const scalar_t* b_ptr = b.const_data_ptr<scalar_t>();
    const int64_t a_stride = a.stride(0), b_stride = b.stride(0);
    const bool vectorised = cols % kVec == 0 && a_stride % kVec == 0 && b_stride % kVec == 0 &&
                            is_aligned(a_ptr, 16) && is_aligned(b_ptr, 16);
    const int threads = threads_for(vectorised ? cols / kVec : cols);
    const auto stream = at::cuda::getCurrentCUDAStream();
    if (vectorised) {
      pair_l1_kernel<scalar_t, kVec><<<rows, threads, 0, stream>>>(a_ptr, b_ptr, cols, a_stride, b_stride, out.mutable_data_ptr<scalar_t>());
    } else {
      pair_l1_kernel<scalar_t, 1><<<rows, threads, 0, stream>>>(a_ptr, b_ptr, cols, a_stride, b_stride, out.mutable_data_ptr<scalar_t>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> pair_feature_l1_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& a_in, const at::Tensor& b_in) {
  check_pair_feature_l1_inputs(a_in, b_in);
  TORCH_CHECK(grad_in.dim() == 1 && grad_in.size(0) == a_in.size(0), "pair_feature_l1_backward: grad must have shape (", a_in.size(0), "), got ", grad_in.sizes());
  const c10::cuda::CUDAGuard guard(a_in.device());
  const at::Tensor a = with_contiguous_rows(a_in);
  const at::Tensor b = with_contiguous_rows(b_in);
  const at::Tensor grad = grad_in.to(a.scalar_type()).contiguous();
  const int64_t rows = a.size(0), cols = a.size(1);
  at::Tensor grad_a = at::empty({rows, cols}, a.options());
  at::Tensor grad_b = at::empty({rows, cols}, a.options());
  if (rows * cols == 0) return {grad_a, grad_b};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "pair_feature_l1_backward_cuda", [&] {
    constexpr int threads = 256;
    const int64_t blocks = std::min<int64_t>((rows * cols + threads - 1) / threads, 65535 * 8);
    pair_l1_backward_kernel<scalar_t><<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), rows, cols,
        a.stride(0), b.stride(0), grad_a.mutable_data_ptr<scalar_t>(), grad_b.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_a, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(anomalykit, CUDA, m) {
  m.impl("pair_feature_l1", &pair_feature_l1_cuda);
  m.impl("pair_feature_l1_backward", &pair_feature_l1_backward_cuda);
}

}  // namespace anomalykit
