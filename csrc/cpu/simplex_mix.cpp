// simplex_mix on CPU: out[b] = sum_i weight[b, i] * latents[index[b, i]] (AMA sec. 3.2), and its backward.
//
// Forward and grad_weight are row-parallel gathers; grad_latents is a weighted scatter-add computed
// without atomics and deterministically: a counting sort of the (b, i) pairs by target row, then
// each latent row sums its own contributions in a fixed order. Inner loops run over d in opmath
// (float for half/bfloat16) and are compiled per ISA (isa.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../ops_common.h"
#include "isa.h"

namespace anomalykit {
namespace {

constexpr int kLanes = 16;  // independent partial sums in dot products

// Rows per parallel_for task: about 256K multiply-adds, so small problems stay on one thread.
int64_t row_grain(int64_t work_per_row) {
  return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(work_per_row, 1));
}

void check_index_range(const at::Tensor& index, int64_t rows) {
  const int64_t* idx = index.const_data_ptr<int64_t>();
  for (int64_t t = 0, count = index.numel(); t < count; ++t) {
    TORCH_CHECK(idx[t] >= 0 && idx[t] < rows, "simplex_mix: index value ", idx[t], " is out of range for ", rows, " latent rows");
  }
}

template <typename scalar_t>
using opmath = at::opmath_type<scalar_t>;

// acc[0:d] (+)= w * x[0:d]
template <bool kFirst, typename scalar_t>
C10_ALWAYS_INLINE void axpy(opmath<scalar_t>* __restrict acc, opmath<scalar_t> w, const scalar_t* __restrict x, int64_t d) {
  for (int64_t j = 0; j < d; ++j) {
    const opmath<scalar_t> term = w * static_cast<opmath<scalar_t>>(x[j]);
    acc[j] = kFirst ? term : acc[j] + term;
  }
}

// sum_j x[j] * y[j] with kLanes partial sums (vectorises without reassociation flags).
template <typename scalar_t>
C10_ALWAYS_INLINE opmath<scalar_t> dot(const scalar_t* __restrict x, const scalar_t* __restrict y, int64_t d) {
  opmath<scalar_t> partial[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] += static_cast<opmath<scalar_t>>(x[j + l]) * static_cast<opmath<scalar_t>>(y[j + l]);
  }
  for (; j < d; ++j) partial[0] += static_cast<opmath<scalar_t>>(x[j]) * static_cast<opmath<scalar_t>>(y[j]);
  opmath<scalar_t> sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += partial[l];
  return sum;
}

template <typename scalar_t>
C10_ALWAYS_INLINE void store_row(scalar_t* __restrict out, const opmath<scalar_t>* __restrict acc, int64_t d) {
  for (int64_t j = 0; j < d; ++j) out[j] = static_cast<scalar_t>(acc[j]);
}

// out rows [begin, end): out[b] = sum_i w[b, i] * lat[idx[b, i]]; acc is scratch of d opmath values.
template <typename scalar_t>
C10_ALWAYS_INLINE void forward_rows(
    const scalar_t* lat, int64_t lat_stride, const int64_t* idx, const scalar_t* w, int64_t k, int64_t d,
    scalar_t* out, opmath<scalar_t>* acc, int64_t begin, int64_t end) {
  for (int64_t b = begin; b < end; ++b) {
    if (k == 0) {
      std::fill(acc, acc + d, opmath<scalar_t>(0));
    } else {
      axpy<true>(acc, static_cast<opmath<scalar_t>>(w[b * k]), lat + idx[b * k] * lat_stride, d);
    }
    for (int64_t i = 1; i < k; ++i) {
      axpy<false>(acc, static_cast<opmath<scalar_t>>(w[b * k + i]), lat + idx[b * k + i] * lat_stride, d);
    }
    store_row(out + b * d, acc, d);
  }
}
ANOMALYKIT_ISA_VARIANTS(simplex_forward_rows, forward_rows)

// grad_weight rows [begin, end): gw[b, i] = <g[b], lat[idx[b, i]]>
template <typename scalar_t>
C10_ALWAYS_INLINE void grad_weight_rows(
    const scalar_t* g, int64_t g_stride, const scalar_t* lat, int64_t lat_stride, const int64_t* idx, int64_t k,
    int64_t d, scalar_t* gw, int64_t begin, int64_t end) {
  for (int64_t b = begin; b < end; ++b) {
    for (int64_t i = 0; i < k; ++i) {
      gw[b * k + i] = static_cast<scalar_t>(dot(g + b * g_stride, lat + idx[b * k + i] * lat_stride, d));
    }
  }
}
ANOMALYKIT_ISA_VARIANTS(simplex_grad_weight_rows, grad_weight_rows)

// grad_latents rows [begin, end): gl[m] = sum over t in sources[start[m] : start[m + 1]] of w[t] * g[t / k]
template <typename scalar_t>
C10_ALWAYS_INLINE void grad_latents_rows(
    const scalar_t* g, int64_t g_stride, const scalar_t* w, int64_t k, int64_t d, const int64_t* start,
    const int64_t* sources, scalar_t* gl, opmath<scalar_t>* acc, int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    if (start[m] == start[m + 1]) {
      std::fill(acc, acc + d, opmath<scalar_t>(0));
    } else {
      const int64_t t0 = sources[start[m]];
      axpy<true>(acc, static_cast<opmath<scalar_t>>(w[t0]), g + (t0 / k) * g_stride, d);
    }
    for (int64_t s = start[m] + 1; s < start[m + 1]; ++s) {
      const int64_t t = sources[s];
      axpy<false>(acc, static_cast<opmath<scalar_t>>(w[t]), g + (t / k) * g_stride, d);
    }
    store_row(gl + m * d, acc, d);
  }
}
ANOMALYKIT_ISA_VARIANTS(simplex_grad_latents_rows, grad_latents_rows)

at::Tensor simplex_mix_cpu(const at::Tensor& latents_in, const at::Tensor& index_in, const at::Tensor& weight_in) {
  check_simplex_mix_inputs(latents_in, index_in, weight_in);
  const at::Tensor latents = with_contiguous_rows(latents_in);
  const at::Tensor index = index_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  check_index_range(index, latents.size(0));
  const int64_t rows = index.size(0), k = index.size(1), d = latents.size(1);
  at::Tensor out = at::empty({rows, d}, latents.options().memory_format(at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, latents.scalar_type(), "simplex_mix_cpu", [&] {
    const scalar_t* lat = latents.const_data_ptr<scalar_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, row_grain(k * d), [&](int64_t begin, int64_t end) {
      std::vector<opmath<scalar_t>> acc(d);
      simplex_forward_rows<scalar_t>(lat, latents.stride(0), idx, w, k, d, out_ptr, acc.data(), begin, end);
    });
  });
  return out;
}

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
    const scalar_t* lat = latents.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const int64_t* idx = index.const_data_ptr<int64_t>();
    const scalar_t* w = weight.const_data_ptr<scalar_t>();

    if (weight_grad) {
      scalar_t* gw = grad_weight.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, rows, row_grain(k * d), [&](int64_t begin, int64_t end) {
        simplex_grad_weight_rows<scalar_t>(g, grad.stride(0), lat, latents.stride(0), idx, k, d, gw, begin, end);
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
        std::vector<opmath<scalar_t>> acc(d);
        simplex_grad_latents_rows<scalar_t>(g, grad.stride(0), w, k, d, start.data(), sources.data(), gl, acc.data(), begin, end);
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
