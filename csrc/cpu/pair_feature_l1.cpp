// pair_feature_l1 on CPU: R(x) = ||a - b||_1 per row (AMA eq. 5), and its backward.
//
// Memory-bound: each row is read once, |a - b| summed in opmath (float for half/bfloat16) into
// independent vector accumulators, rows split over threads with at::parallel_for. The row loops
// are compiled for the x86-64 baseline, AVX2 and AVX-512 and chosen at run time (isa.h): with the
// baseline's SSE2 alone one core is instruction-bound below memory bandwidth.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../ops_common.h"
#include "isa.h"

namespace anomalykit {
namespace {

// Rows per parallel_for task: about 64K elements each, so small inputs stay on one thread.
int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(cols, 1));
}

template <typename scalar_t>
using opmath = at::opmath_type<scalar_t>;

// sum_j |a[j] - b[j]| over one row of n values, in kLanes independent partial sums (as many vector
// accumulators as the ISA's register width allows, so the adds pipeline and no reassociation
// flag is needed).
template <typename scalar_t>
C10_ALWAYS_INLINE opmath<scalar_t> row_l1(const scalar_t* __restrict a, const scalar_t* __restrict b, int64_t n) {
  constexpr int kLanes = 128 / sizeof(opmath<scalar_t>);  // 32 floats: two zmm or four ymm registers
  opmath<scalar_t> partial[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      partial[l] += std::abs(static_cast<opmath<scalar_t>>(a[j + l]) - static_cast<opmath<scalar_t>>(b[j + l]));
    }
  }
  for (; j < n; ++j) partial[0] += std::abs(static_cast<opmath<scalar_t>>(a[j]) - static_cast<opmath<scalar_t>>(b[j]));
  opmath<scalar_t> sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += partial[l];
  return sum;
}

// out[r] = row_l1(a[r], b[r]) for rows [begin, end).
template <typename scalar_t>
C10_ALWAYS_INLINE void l1_rows(
    const scalar_t* a, int64_t a_stride, const scalar_t* b, int64_t b_stride, int64_t cols, scalar_t* out,
    int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    out[r] = static_cast<scalar_t>(row_l1(a + r * a_stride, b + r * b_stride, cols));
  }
}
ANOMALYKIT_ISA_VARIANTS(pair_l1_rows, l1_rows)

// grad_a[r] = grad[r] * sign(a[r] - b[r]) (0 where equal), grad_b[r] = -grad_a[r] for rows [begin, end).
template <typename scalar_t>
C10_ALWAYS_INLINE void l1_backward_rows(
    const scalar_t* grad, const scalar_t* a, int64_t a_stride, const scalar_t* b, int64_t b_stride, int64_t cols,
    scalar_t* grad_a, scalar_t* grad_b, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* __restrict ar = a + r * a_stride;
    const scalar_t* __restrict br = b + r * b_stride;
    scalar_t* __restrict ga = grad_a + r * cols;
    scalar_t* __restrict gb = grad_b + r * cols;
    const opmath<scalar_t> g = static_cast<opmath<scalar_t>>(grad[r]), zero = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const opmath<scalar_t> diff = static_cast<opmath<scalar_t>>(ar[j]) - static_cast<opmath<scalar_t>>(br[j]);
      const opmath<scalar_t> s = diff > zero ? g : (diff < zero ? -g : zero);
      ga[j] = static_cast<scalar_t>(s);
      gb[j] = static_cast<scalar_t>(-s);
    }
  }
}
ANOMALYKIT_ISA_VARIANTS(pair_l1_backward_rows, l1_backward_rows)

at::Tensor pair_feature_l1_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_pair_feature_l1_inputs(a_in, b_in);
  const at::Tensor a = with_contiguous_rows(a_in);
  const at::Tensor b = with_contiguous_rows(b_in);
  const int64_t rows = a.size(0), cols = a.size(1);
  at::Tensor out = at::empty({rows}, a.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "pair_feature_l1_cpu", [&] {
    at::parallel_for(0, rows, row_grain(cols), [&](int64_t begin, int64_t end) {
      pair_l1_rows<scalar_t>(a.const_data_ptr<scalar_t>(), a.stride(0), b.const_data_ptr<scalar_t>(), b.stride(0), cols,
                             out.mutable_data_ptr<scalar_t>(), begin, end);
    });
  });
  return out;
}

// grad_a = grad[r] * sign(a - b) (0 where a == b), grad_b = -grad_a; one pass over a and b.
std::tuple<at::Tensor, at::Tensor> pair_feature_l1_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& a_in, const at::Tensor& b_in) {
  check_pair_feature_l1_inputs(a_in, b_in);
  TORCH_CHECK(grad_in.dim() == 1 && grad_in.size(0) == a_in.size(0), "pair_feature_l1_backward: grad must have shape (", a_in.size(0), "), got ", grad_in.sizes());
  const at::Tensor a = with_contiguous_rows(a_in);
  const at::Tensor b = with_contiguous_rows(b_in);
  const at::Tensor grad = grad_in.to(a.scalar_type()).contiguous();
  const int64_t rows = a.size(0), cols = a.size(1);
  at::Tensor grad_a = at::empty({rows, cols}, a.options());
  at::Tensor grad_b = at::empty({rows, cols}, a.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "pair_feature_l1_backward_cpu", [&] {
    at::parallel_for(0, rows, row_grain(cols), [&](int64_t begin, int64_t end) {
      pair_l1_backward_rows<scalar_t>(grad.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(), a.stride(0),
                                      b.const_data_ptr<scalar_t>(), b.stride(0), cols, grad_a.mutable_data_ptr<scalar_t>(),
                                      grad_b.mutable_data_ptr<scalar_t>(), begin, end);
    });
  });
  return {grad_a, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(anomalykit, CPU, m) {
  m.impl("pair_feature_l1", &pair_feature_l1_cpu);
  m.impl("pair_feature_l1_backward", &pair_feature_l1_backward_cpu);
}

}  // namespace anomalykit
