// pair_feature_l1 on CPU: R(x) = ||a - b||_1 per row (AMA eq. 5), and its backward.
//
// Memory-bound: each row is read once with at::vec::Vectorized loads, |a - b| summed into
// four independent vector accumulators (opmath: float for half/bfloat16), rows split over
// threads with at::parallel_for.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "../ops_common.h"

namespace anomalykit {
namespace {

using at::vec::Vectorized;

// Rows per parallel_for task: about 64K elements each, so small inputs stay on one thread.
int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(cols, 1));
}

// Loads Vectorized<opmath>::size() values at p as opmath_t (float for half/bfloat16).
template <typename scalar_t>
struct OpmathLoad {
  using opmath_t = at::opmath_type<scalar_t>;
  static constexpr int64_t kWidth = Vectorized<opmath_t>::size();
  static Vectorized<opmath_t> load(const scalar_t* p) {
    if constexpr (std::is_same_v<scalar_t, opmath_t>) {
      return Vectorized<opmath_t>::loadu(p);
    } else {
      Vectorized<float> out;
      at::vec::load_to_float<scalar_t>(p, out);  // kWidth half/bfloat16 values -> float
      return out;
    }
  }
};

// sum_j |a[j] - b[j]| over one row of n values.
template <typename scalar_t>
at::opmath_type<scalar_t> row_l1(const scalar_t* a, const scalar_t* b, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Vec = Vectorized<opmath_t>;
  using Load = OpmathLoad<scalar_t>;
  constexpr int64_t W = Load::kWidth;
  Vec acc0(0), acc1(0), acc2(0), acc3(0);
  int64_t j = 0;
  for (; j + 4 * W <= n; j += 4 * W) {
    acc0 += (Load::load(a + j) - Load::load(b + j)).abs();
    acc1 += (Load::load(a + j + W) - Load::load(b + j + W)).abs();
    acc2 += (Load::load(a + j + 2 * W) - Load::load(b + j + 2 * W)).abs();
    acc3 += (Load::load(a + j + 3 * W) - Load::load(b + j + 3 * W)).abs();
  }
  for (; j + W <= n; j += W) {
    acc0 += (Load::load(a + j) - Load::load(b + j)).abs();
  }
  opmath_t sum = at::vec::vec_reduce_all<opmath_t>(std::plus<Vec>(), (acc0 + acc1) + (acc2 + acc3));
  for (; j < n; ++j) {
    sum += std::abs(static_cast<opmath_t>(a[j]) - static_cast<opmath_t>(b[j]));
  }
  return sum;
}

at::Tensor pair_feature_l1_cpu(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_pair_feature_l1_inputs(a_in, b_in);
  const at::Tensor a = with_contiguous_rows(a_in);
  const at::Tensor b = with_contiguous_rows(b_in);
  const int64_t rows = a.size(0), cols = a.size(1);
  at::Tensor out = at::empty({rows}, a.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "pair_feature_l1_cpu", [&] {
    const scalar_t* a_ptr = a.const_data_ptr<scalar_t>();
    const scalar_t* b_ptr = b.const_data_ptr<scalar_t>();
    const int64_t a_stride = a.stride(0), b_stride = b.stride(0);
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, row_grain(cols), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        out_ptr[r] = static_cast<scalar_t>(row_l1(a_ptr + r * a_stride, b_ptr + r * b_stride, cols));
      }
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
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* a_ptr = a.const_data_ptr<scalar_t>();
    const scalar_t* b_ptr = b.const_data_ptr<scalar_t>();
    const scalar_t* g_ptr = grad.const_data_ptr<scalar_t>();
    const int64_t a_stride = a.stride(0), b_stride = b.stride(0);
    scalar_t* ga_ptr = grad_a.mutable_data_ptr<scalar_t>();
    scalar_t* gb_ptr = grad_b.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, row_grain(cols), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* ar = a_ptr + r * a_stride;
        const scalar_t* br = b_ptr + r * b_stride;
        const opmath_t g = static_cast<opmath_t>(g_ptr[r]);
        for (int64_t j = 0; j < cols; ++j) {
          const opmath_t diff = static_cast<opmath_t>(ar[j]) - static_cast<opmath_t>(br[j]);
          const opmath_t s = diff > 0 ? g : (diff < 0 ? -g : opmath_t(0));
          ga_ptr[r * cols + j] = static_cast<scalar_t>(s);
          gb_ptr[r * cols + j] = static_cast<scalar_t>(-s);
        }
      }
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
