// Input checks shared by the CPU and CUDA kernels (the Python front-end checks the same things
// first, with friendlier messages; these guard direct torch.ops.anomalykit calls).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace anomalykit {

// A (rows, cols) view whose rows are contiguous (stride(1) == 1), copying only when they are not:
// kernels then address row r at data + r * stride(0).
inline at::Tensor with_contiguous_rows(const at::Tensor& t) {
  return (t.size(1) <= 1 || t.stride(1) == 1) ? t : t.contiguous();
}

inline void check_float_matrix(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 2, op, ": ", name, " must be a 2-D tensor, got shape ", t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name, " must have a floating dtype, got ", t.scalar_type());
}

inline void check_pair_feature_l1_inputs(const at::Tensor& a, const at::Tensor& b) {
  check_float_matrix("pair_feature_l1", "a", a);
  check_float_matrix("pair_feature_l1", "b", b);
  TORCH_CHECK(a.sizes() == b.sizes(), "pair_feature_l1: a ", a.sizes(), " and b ", b.sizes(), " must have the same shape");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "pair_feature_l1: a (", a.scalar_type(), ") and b (", b.scalar_type(), ") must have the same dtype");
  TORCH_CHECK(a.device() == b.device(), "pair_feature_l1: a (", a.device(), ") and b (", b.device(), ") must be on the same device");
}

inline void check_simplex_mix_inputs(const at::Tensor& latents, const at::Tensor& index, const at::Tensor& weight) {
  check_float_matrix("simplex_mix", "latents", latents);
  TORCH_CHECK(index.dim() == 2 && index.scalar_type() == at::kLong, "simplex_mix: index must be a 2-D int64 tensor, got ", index.scalar_type(), " of shape ", index.sizes());
  TORCH_CHECK(weight.sizes() == index.sizes(), "simplex_mix: weight ", weight.sizes(), " must have the shape of index ", index.sizes());
  TORCH_CHECK(weight.scalar_type() == latents.scalar_type(), "simplex_mix: weight (", weight.scalar_type(), ") must have the dtype of latents (", latents.scalar_type(), ")");
  TORCH_CHECK(latents.device() == index.device() && latents.device() == weight.device(), "simplex_mix: latents (", latents.device(), "), index (", index.device(), ") and weight (", weight.device(), ") must be on the same device");
}

inline void check_annulus_args(int64_t n, int64_t d, double r_inner, double r_outer, at::ScalarType dtype) {
  TORCH_CHECK(n >= 0, "annulus_sample: n must be >= 0, got ", n);
  TORCH_CHECK(d >= 1, "annulus_sample: d must be >= 1, got ", d);
  TORCH_CHECK(std::isfinite(r_inner) && std::isfinite(r_outer) && r_inner >= 0 && r_inner <= r_outer, "annulus_sample: need finite radii 0 <= r_inner <= r_outer, got r_inner=", r_inner, ", r_outer=", r_outer);
  TORCH_CHECK(at::isFloatingType(dtype), "annulus_sample: dtype must be floating, got ", dtype);
}

// Radius of the volume-uniform shell from u ~ U[0, 1): rho = (r_in^d + u (r_out^d - r_in^d))^(1/d) in
// log space, clamped into [lo, hi] (see AnnulusRadius). Mirrors reference.shell_radius.
struct AnnulusRadius {
  double r_outer, expm1_log_q, inv_d, lo, hi;

  AnnulusRadius(int64_t d, double r_inner, double r_outer_, double eps_out) : r_outer(r_outer_), inv_d(1.0 / d) {
    const double log_q = r_inner > 0 ? d * (std::log(r_inner) - std::log(r_outer)) : -INFINITY;  // (r_in/r_out)^d
    expm1_log_q = std::expm1(log_q);
    // Margin so that the stored vector's norm stays inside [r_in, r_out] after rounding (reference.rounding_margin).
    const double margin = 4.0 * eps_out + 16.0 * d * std::numeric_limits<double>::epsilon();
    lo = r_inner * (1.0 + margin);
    hi = r_outer * (1.0 - margin);
    if (lo > hi) lo = hi = 0.5 * (r_inner + r_outer);
  }

  C10_HOST_DEVICE double operator()(double u) const {
    if (r_outer == 0.0) return 0.0;
    return clamp(r_outer * ::exp(::log1p((1.0 - u) * expm1_log_q) * inv_d));
  }

  // A radius computed elsewhere (e.g. in float), forced into [lo, hi].
  C10_HOST_DEVICE double clamp(double rho) const {
    if (r_outer == 0.0) return 0.0;
    return rho < lo ? lo : (rho > hi ? hi : rho);
  }
};

inline double dtype_eps(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return std::numeric_limits<double>::epsilon();
    case at::kFloat: return std::numeric_limits<float>::epsilon();
    case at::kHalf: return 0.0009765625;        // 2^-10
    case at::kBFloat16: return 0.0078125;       // 2^-7
    default: TORCH_CHECK(false, "annulus_sample: unsupported dtype ", dtype);
  }
}

}  // namespace anomalykit
