// simplex_mix on CPU: out[b] = sum_i weight[b, i] * latents[index[b, i]] (AMA sec. 3.2), and its backward.
//
// Forward and grad_weight are row-parallel gathers with vectorised inner loops over d. grad_latents
// is a weighted scatter-add, computed without atomics and deterministically: a counting sort of the
// (b, i) pairs by target row, then each latent row sums its own contributions in a fixed order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <vector>

#include "../ops_common.h"

namespace anomalykit {
namespace {

using at::vec::Vectorized;

int64_t row_grain(int64_t work_per_row) {
  return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(work_per_row, 1));
}

void check_index_range(const at::Tensor& index, int64_t rows) {
  const int64_t* idx = index.const_data_ptr<int64_t>();
  for (int64_t t = 0, count = index.numel(); t < count; ++t) {
    TORCH_CHECK(idx[t] >= 0 && idx[t] < rows, "simplex_mix: index value ", idx[t], " is out of range for ", rows, " latent rows");
  }
}

// acc[0:d] += w * x[0:d] (acc in opmath_t, x in scalar_t).
template <typename scalar_t>
inline void axpy(at::opmath_type<scalar_t>* acc, at::opmath_type<scalar_t> w, const scalar_t* x, int64_t d) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Vec = Vectorized<opmath_t>;
  constexpr int64_t W = Vec::size();
  const Vec wv(w);
  int64_t j = 0;
  for (; j + W <= d; j += W) {
    Vec xv;
    if constexpr (std::is_same_v<scalar_t, opmath_t>) {
      xv = Vec::loadu(x + j);
    } else {
      at::vec::load_to_float<scalar_t>(x + j, xv);
    }
    at::vec::fmadd(wv, xv, Vec::loadu(acc + j)).store(acc + j);
  }
  for (; j < d; ++j) acc[j] += w * static_cast<opmath_t>(x[j]);
}

// sum_j x[j] * y[j] in opmath_t.
template <typename scalar_t>
inline at::opmath_type<scalar_t> dot(const scalar_t* x, const scalar_t* y, int64_t d) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Vec = Vectorized<opmath_t>;
  constexpr int64_t W = Vec::size();
  Vec acc0(0), acc1(0);
  auto load = [](const scalar_t* p) {
    Vec v;
    if constexpr (std::is_same_v<scalar_t, opmath_t>) {
      v = Vec::loadu(p);
    } else {
      at::vec::load_to_float<scalar_t>(p, v);
    }
    return v;
  };
  int64_t j = 0;
  for (; j + 2 * W <= d; j += 2 * W) {
    acc0 = at::vec::fmadd(load(x + j), load(y + j), acc0);
    acc1 = at::vec::fmadd(load(x + j + W), load(y + j + W), acc1);
  }
  for (; j + W <= d; j += W) acc0 = at::vec::fmadd(load(x + j), load(y + j), acc0);
  opmath_t sum = at::vec::vec_reduce_all<opmath_t>(std::plus<Vec>(), acc0 + acc1);
  for (; j < d; ++j) sum += static_cast<opmath_t>(x[j]) * static_cast<opmath_t>(y[j]);
  return sum;
}

// out[0:d] = acc[0:d] converted to scalar_t.
template <typename scalar_t>
inline void store_row(scalar_t* out, const at::opmath_type<scalar_t>* acc, int64_t d) {
  for (int64_t j = 0; j < d; ++j) out[j] = static_cast<scalar_t>(acc[j]);
}

at::Tensor simplex_mix_cpu(const at::Tensor& latents_in, const at::Tensor& index_in, const at::Tensor& weight_in) {
  check_simplex_mix_inputs(latents_in, index_in, weight_in);
  const at::Tensor latents = with_contiguous_rows(latents_in);
  const at::Tensor index = index_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  check_index_range(index, latents.size(0));
  const int64_t rows = index.size(0), k = index.size(1), d = latents.size(1);
  at::Tensor out = at::empty({rows, d}, latents.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, latents.scalar_type(), "simplex_mix_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* lat = latents.const_data_ptr<scalar_t>();
    const int64_t lat_stride = latents.stride(0);
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, row_grain(k * d), [&](int64_t begin, int64_t end) {
      std::vector<opmath_t> acc(d);
      for (int64_t b = begin; b < end; ++b) {
        std::fill(acc.begin(), acc.end(), opmath_t(0));
        for (int64_t i = 0; i < k; ++i) {
          axpy(acc.data(), static_cast<opmath_t>(w[b * k + i]), lat + idx[b * k + i] * lat_stride, d);
        }
        store_row(out_ptr + b * d, acc.data(), d);
      }
    });
  });
  return out;
}

// grad_latents[m] = sum over (b, i) with index[b, i] == m of weight[b, i] * grad[b]  (deterministic order)
// grad_weight[b, i] = <grad[b], latents[index[b, i]]>
std::tuple<at::Tensor, at::Tensor> simplex_mix_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& latents_in, const at::Tensor& index_in, const at::Tensor& weight_in,
    bool latents_grad, bool weight_grad) {
  check_simplex_mix_inputs(latents_in, index_in, weight_in);
  TORCH_CHECK(grad_in.dim() == 2 && grad_in.size(0) == index_in.size(0) && grad_in.size(1) == latents_in.size(1),
              "simplex_mix_backward: grad must have shape (", index_in.size(0), ", ", latents_in.size(1), "), got ", grad_in.sizes());
  const at::Tensor latents = with_contiguous_rows(latents_in);
  const at::Tensor index = index_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor grad = with_contiguous_rows(grad_in.to(latents.scalar_type()));
  const int64_t n_latents = latents.size(0), rows = index.size(0), k = index.size(1), d = latents.size(1);
  check_index_range(index, n_latents);
  const auto opts = latents.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_latents = latents_grad ? at::empty({n_latents, d}, opts) : at::empty({0}, opts);
  at::Tensor grad_weight = weight_grad ? at::empty({rows, k}, opts) : at::empty({0}, opts);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, latents.scalar_type(), "simplex_mix_backward_cpu", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* lat = latents.const_data_ptr<scalar_t>();
    const int64_t lat_stride = latents.stride(0);
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const int64_t g_stride = grad.stride(0);
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();

    if (weight_grad) {
      scalar_t* gw = grad_weight.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, rows, row_grain(k * d), [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          for (int64_t i = 0; i < k; ++i) {
            gw[b * k + i] = static_cast<scalar_t>(dot(g + b * g_stride, lat + idx[b * k + i] * lat_stride, d));
          }
        }
      });
    }

    if (latents_grad) {
      // Counting sort of the flat positions t = b * k + i by target row index[t]: the contributions
      // to latent row m are sources[start[m] : start[m + 1]], in increasing t.
      const int64_t pairs = rows * k;
      std::vector<int64_t> start(n_latents + 1, 0), sources(pairs);
      for (int64_t t = 0; t < pairs; ++t) ++start[idx[t] + 1];
      for (int64_t m = 0; m < n_latents; ++m) start[m + 1] += start[m];
      std::vector<int64_t> fill(start.begin(), start.end() - 1);
      for (int64_t t = 0; t < pairs; ++t) sources[fill[idx[t]]++] = t;

      scalar_t* gl = grad_latents.mutable_data_ptr<scalar_t>();
      const int64_t mean_work = std::max<int64_t>(1, pairs / std::max<int64_t>(n_latents, 1)) * d;
      at::parallel_for(0, n_latents, row_grain(mean_work), [&](int64_t begin, int64_t end) {
        std::vector<opmath_t> acc(d);
        for (int64_t m = begin; m < end; ++m) {
          std::fill(acc.begin(), acc.end(), opmath_t(0));
          for (int64_t s = start[m]; s < start[m + 1]; ++s) {
            const int64_t t = sources[s];
            axpy(acc.data(), static_cast<opmath_t>(w[t]), g + (t / k) * g_stride, d);
          }
          store_row(gl + m * d, acc.data(), d);
        }
      });
    }
  });
  return {grad_latents, grad_weight};
}

}  // namespace

TORCH_LIBRARY_IMPL(anomalykit, CPU, m) {
  m.impl("simplex_mix", &simplex_mix_cpu);
  m.impl("simplex_mix_backward", &simplex_mix_backward_cpu);
}

}  // namespace anomalykit
