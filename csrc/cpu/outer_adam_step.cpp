// outer_adam_step_ on CPU: one Adam step on a stack of matrices whose every gradient so far was an
// outer product, from the factors of those gradients (anomalykit/ops/reference.py has the semantics).
//
// Adam's moments of such a parameter are short sums of outer products,
//   m[b,i,j] = sum_s cm[s] left[s,b,i] right[s,b,j],  v[b,i,j] = sum_s cv[s] left[s,b,i]^2 right[s,b,j]^2,
// so they are formed on the fly instead of being stored: the step reads and writes the parameter
// once (Adam with stored moments reads four tensors and writes three). Memory-bound users such as
// ADGAN's latent search (one generator copy per search, whose first layer's gradient is
// latent (x) upstream gradient) move less than half the bytes. Rows (b, i) are split over threads;
// the row loop is compiled for the baseline, AVX2 and AVX-512 (isa.h). With input_grad it also
// returns param_old @ right[T - 1] (B, K), computed in the same pass: for a layer x -> x @ param
// with gradient x (x) g (left = x, right = g), that is the gradient reaching x.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "isa.h"

namespace anomalykit {
namespace {

template <typename scalar_t>
using opmath = at::opmath_type<scalar_t>;

// Values [j0, j0 + J) of one row: the moments accumulate in J-wide register blocks over the T steps.
// With ``dot`` (J partial sums): also accumulates p_old[jj] * right[T - 1][jj] (the layer input's
// gradient, reduced once per row by the caller).
template <typename scalar_t, int J>
C10_ALWAYS_INLINE void outer_adam_block(
    scalar_t* __restrict p, const scalar_t* __restrict right, int64_t step_stride, const opmath<scalar_t>* lc,
    const opmath<scalar_t>* vc, int64_t T, int64_t count, opmath<scalar_t> step_size, opmath<scalar_t> inv_bc2,
    opmath<scalar_t> eps, opmath<scalar_t> flush_below, opmath<scalar_t>* __restrict dot) {
  using acc_t = opmath<scalar_t>;
  acc_t am[J] = {}, av[J] = {};
  if (dot != nullptr) {
    const scalar_t* __restrict last = right + (T - 1) * step_stride;
    if (count == J) {
      for (int jj = 0; jj < J; ++jj) dot[jj] += static_cast<acc_t>(p[jj]) * static_cast<acc_t>(last[jj]);
    } else {
      for (int64_t jj = 0; jj < count; ++jj) dot[jj] += static_cast<acc_t>(p[jj]) * static_cast<acc_t>(last[jj]);
    }
  }
  for (int64_t s = 0; s < T; ++s) {
    const scalar_t* __restrict r = right + s * step_stride;
    const acc_t cm = lc[s], cv = vc[s];
    if (count == J) {
      for (int jj = 0; jj < J; ++jj) {
        const acc_t x = static_cast<acc_t>(r[jj]);
        am[jj] += cm * x;
        av[jj] += cv * (x * x);
      }
    } else {
      for (int64_t jj = 0; jj < count; ++jj) {
        const acc_t x = static_cast<acc_t>(r[jj]);
        am[jj] += cm * x;
        av[jj] += cv * (x * x);
      }
    }
  }
  for (int64_t jj = 0; jj < (count == J ? J : count); ++jj) {
    // v below the smallest normal number: √v / √(1-β₂ᵗ) is then invisible next to eps (checked by the
    // caller, flush_below = 0 otherwise), and a subnormal square root is ~20x slower
    const acc_t v = av[jj] < flush_below ? acc_t(0) : av[jj];
    const acc_t denom = std::sqrt(v) * inv_bc2 + eps;
    p[jj] = static_cast<scalar_t>(static_cast<acc_t>(p[jj]) - step_size * (am[jj] / denom));
  }
}

// Rows [begin, end) of the (B * K, N) parameter. lcoef/vcoef: per row, cm[s] * left[s, row] and
// cv[s] * left[s, row]^2 for s < T (row-major, T per row); right: T slices of (B, N), step_stride
// apart.
template <typename scalar_t>
C10_ALWAYS_INLINE void outer_adam_rows(
    scalar_t* param, const scalar_t* right, const opmath<scalar_t>* lcoef, const opmath<scalar_t>* vcoef,
    int64_t T, int64_t K, int64_t N, int64_t step_stride, opmath<scalar_t> step_size, opmath<scalar_t> inv_bc2,
    opmath<scalar_t> eps, opmath<scalar_t> flush_below, scalar_t* input_grad, int64_t begin, int64_t end) {
  constexpr int J = 128 / sizeof(opmath<scalar_t>);  // 32 floats / 16 doubles: 2 zmm per moment
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / K;
    scalar_t* p = param + row * N;
    const scalar_t* r = right + b * N;
    opmath<scalar_t> dot[J] = {};
    for (int64_t j0 = 0; j0 < N; j0 += J) {
      outer_adam_block<scalar_t, J>(p + j0, r + j0, step_stride, lcoef + row * T, vcoef + row * T, T,
                                    std::min<int64_t>(J, N - j0), step_size, inv_bc2, eps, flush_below,
                                    input_grad != nullptr ? dot : nullptr);
    }
    if (input_grad != nullptr) {
      opmath<scalar_t> sum = 0;
      for (int jj = 0; jj < J; ++jj) sum += dot[jj];
      input_grad[row] = static_cast<scalar_t>(sum);
    }
  }
}
ANOMALYKIT_ISA_VARIANTS(outer_adam_rows_isa, outer_adam_rows)

at::Tensor outer_adam_step_cpu(
    const at::Tensor& param, const at::Tensor& left, const at::Tensor& right, at::ArrayRef<double> coef_m,
    at::ArrayRef<double> coef_v, double step_size, double bias_correction2_sqrt, double eps, bool input_grad) {
  TORCH_CHECK(param.dim() == 3, "outer_adam_step_: param must be (B, K, N), got ", param.sizes());
  const int64_t B = param.size(0), K = param.size(1), N = param.size(2);
  TORCH_CHECK(left.dim() == 3 && right.dim() == 3, "outer_adam_step_: left and right must be (T, B, K) and (T, B, N)");
  const int64_t T = left.size(0);
  TORCH_CHECK(left.size(1) == B && left.size(2) == K, "outer_adam_step_: left must be (T, ", B, ", ", K, "), got ", left.sizes());
  TORCH_CHECK(right.size(0) == T && right.size(1) == B && right.size(2) == N,
              "outer_adam_step_: right must be (", T, ", ", B, ", ", N, "), got ", right.sizes());
  TORCH_CHECK(int64_t(coef_m.size()) == T && int64_t(coef_v.size()) == T, "outer_adam_step_: one coef_m and coef_v per step (", T, ")");
  TORCH_CHECK(param.scalar_type() == left.scalar_type() && param.scalar_type() == right.scalar_type(),
              "outer_adam_step_: param, left and right must share a dtype");
  TORCH_CHECK(param.is_contiguous(), "outer_adam_step_: param must be contiguous");
  TORCH_CHECK(bias_correction2_sqrt > 0 && eps >= 0, "outer_adam_step_: bias_correction2_sqrt must be > 0 and eps >= 0");
  TORCH_CHECK(!input_grad || T > 0, "outer_adam_step_: input_grad needs at least one step");
  at::Tensor grad_in = input_grad ? at::empty({B, K}, param.options()) : at::empty({0}, param.options());
  if (param.numel() == 0 || T == 0) return input_grad ? grad_in.zero_() : grad_in;
  const at::Tensor l = left.contiguous(), r = right.contiguous();

  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "outer_adam_step_cpu", [&] {
    using acc_t = opmath<scalar_t>;
    // per (b, i) row: cm[s] * left[s, b, i] and cv[s] * left[s, b, i]^2 (small: B * K * T)
    std::vector<acc_t> lcoef(size_t(B * K * T)), vcoef(size_t(B * K * T));
    const scalar_t* lp = l.const_data_ptr<scalar_t>();
    for (int64_t row = 0; row < B * K; ++row) {
      for (int64_t s = 0; s < T; ++s) {
        const acc_t x = static_cast<acc_t>(lp[s * B * K + row]);
        lcoef[row * T + s] = acc_t(coef_m[s]) * x;
        vcoef[row * T + s] = acc_t(coef_v[s]) * (x * x);
      }
    }
    // flushing subnormal v is exact when √tiny / √(1-β₂ᵗ) stays below a quarter of eps's ulp
    const double tiny = double(std::numeric_limits<acc_t>::min());
    const double ulp = eps > 0 ? std::ldexp(double(std::numeric_limits<acc_t>::epsilon()), std::ilogb(eps)) : 0.0;
    const acc_t flush_below = (eps > 0 && std::sqrt(tiny) / bias_correction2_sqrt < ulp / 4) ? acc_t(tiny) : acc_t(0);
    scalar_t* pp = param.mutable_data_ptr<scalar_t>();
    const scalar_t* rp = r.const_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(N * std::max<int64_t>(T, 1), 1));
    scalar_t* gp = input_grad ? grad_in.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B * K, grain, [&](int64_t begin, int64_t end) {
      outer_adam_rows_isa<scalar_t>(pp, rp, lcoef.data(), vcoef.data(), T, K, N, B * N, acc_t(step_size),
                                    acc_t(1.0 / bias_correction2_sqrt), acc_t(eps), flush_below, gp, begin, end);
    });
  });
  return grad_in;
}

}  // namespace

TORCH_LIBRARY_IMPL(anomalykit, CPU, m) {
  m.impl("outer_adam_step_", &outer_adam_step_cpu);
}

}  // namespace anomalykit
