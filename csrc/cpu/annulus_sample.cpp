// annulus_sample on CPU: (n, d) points uniform in the volume of the shell r_inner <= ||z|| <= r_outer.
//
// Randomness: one (key, stream) pair of 64-bit words is drawn from the torch CPU generator under its
// mutex (as ATen's random kernels do); every value then comes from the counter-based Philox4x32-10
// at counter (block, row, stream), so the samples depend only on the generator state, never on the
// thread count. Gaussians come from Box-Muller on Philox output, with branch-free float log/sincos
// written so the compiler vectorises 8 (AVX-512: 16) Philox blocks at a time. The hot loops are
// compiled for x86-64 baseline, AVX2 and AVX-512 and picked at run time (isa.h).
// The AVX2/AVX-512 variants contract multiply-adds into FMAs, so samples from different variants
// agree only to float rounding; one variant (one machine) always reproduces its samples exactly.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "../ops_common.h"
#include "isa.h"


namespace anomalykit {
namespace {

constexpr int kLanes = 8;                      // Philox blocks generated together (16 with AVX-512)
constexpr int kMaxLanes = 16;
constexpr int kNormalsPerBlock = 4;            // one Philox4x32 block -> 4 Gaussians
constexpr int kChunkBlocks = 16;               // Philox blocks per chunk of a row (every ISA copy)
constexpr int kChunkValues = kChunkBlocks * kNormalsPerBlock;
constexpr uint32_t kRadiusBlock = 0xFFFFFFFFu;  // counter block reserved for the radius uniform

C10_ALWAYS_INLINE float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
C10_ALWAYS_INLINE uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// Philox4x32-10 (Salmon et al., SC'11) on kLanes independent counters c[word][lane], key (key0, key1).
// Lanes outermost with the rounds unrolled inside: the form GCC vectorises with vpmuludq. Word is
// the lane width: uint32_t suits SSE/AVX2; uint64_t (32-bit values zero-extended) avoids the
// even/odd shuffles around vpmuludq and is 2-3x faster with AVX-512.
template <int Lanes, typename Word>
C10_ALWAYS_INLINE void philox4x32_10(Word (&c)[4][Lanes], uint32_t key0, uint32_t key1) {
  constexpr uint64_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kLow32 = 0xFFFFFFFFu;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int l = 0; l < Lanes; ++l) {
    Word x0 = c[0][l], x1 = c[1][l], x2 = c[2][l], x3 = c[3][l];
    uint32_t k0 = key0, k1 = key1;
#pragma GCC unroll 10
    for (int round = 0; round < 10; ++round) {
      const uint64_t p0 = (uint64_t(x0) & kLow32) * kM0, p1 = (uint64_t(x2) & kLow32) * kM1;
      x0 = Word(p1 >> 32) ^ x1 ^ k0;
      x1 = Word(p1 & kLow32);
      x2 = Word(p0 >> 32) ^ x3 ^ k1;
      x3 = Word(p0 & kLow32);
      k0 += kW0;
      k1 += kW1;
    }
    c[0][l] = x0;
    c[1][l] = x1;
    c[2][l] = x2;
    c[3][l] = x3;
  }
}

// (x + 0.5) / 2^24 from the top 24 bits: uniform in (0, 1), never 0 or 1, never a multiple of 1/4.
C10_ALWAYS_INLINE float open_uniform(uint32_t x) { return (float(x >> 8) + 0.5f) * 5.9604644775390625e-8f; }

// log(x) for x in (0, 1], within 1.2e-7 relative (checked against libm on all 2^24 inputs used):
// x = m 2^e with m in [sqrt(1/2), sqrt(2)), log(m) = f - f^2/2 + f^3 P(f), f = m - 1, with the
// Cephes logf polynomial P (no division, so it vectorises to FMAs).
C10_ALWAYS_INLINE float log_unit(float x) {
  const int32_t bits = int32_t(float_to_bits(x));
  const int32_t e = (bits - 0x3f3504f3) >> 23;
  const float f = bits_to_float(uint32_t(bits - (e << 23))) - 1.0f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float f2 = f * f;
  return f + (f2 * f * p - 0.5f * f2) + float(e) * 0.693147180559945f;
}

// exp(y) for y <= 0 (float, within 2 ulp): y = k ln2 + r with |r| <= ln2 / 2 (two-constant
// Cody-Waite), a degree-6 polynomial for exp(r), then the exponent bits; 0 below -87.
C10_ALWAYS_INLINE float exp_nonpositive(float y) {
  y = y < -87.0f ? -87.0f : y;
  const float k = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (|k| < 2^22)
  const float r = (y - k * 0.693359375f) + k * 2.12194440e-4f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return bits_to_float(float_to_bits(p) + (uint32_t(int32_t(k)) << 23));
}

// (sin, cos) of 2 pi u for u in (0, 1): quarter-turn reduction, then Taylor polynomials on [-pi/4, pi/4].
C10_ALWAYS_INLINE void sincos_turns(float u, float& s_out, float& c_out) {
  const int32_t q = int32_t(4.0f * u + 0.5f);  // nearest quarter turn, 0..4
  const float x = (u - 0.25f * float(q)) * 6.28318530717958647f;
  const float x2 = x * x;
  const float s = x * (1.0f + x2 * (-1.0f / 6 + x2 * (1.0f / 120 + x2 * (-1.0f / 5040 + x2 * (1.0f / 362880)))));
  const float c = 1.0f + x2 * (-0.5f + x2 * (1.0f / 24 + x2 * (-1.0f / 720 + x2 * (1.0f / 40320 + x2 * (-1.0f / 3628800)))));
  // rotate by q quarter turns: (s, c) -> (c, -s) -> (-s, -c) -> (-c, s)
  const bool swap = q & 1;
  const float ss = swap ? c : s, cc = swap ? s : c;
  s_out = (q & 2) ? -ss : ss;
  c_out = ((q + 1) & 2) ? -cc : cc;
}

// Philox counter (block, row, stream_lo, stream_hi) for Lanes consecutive blocks or rows.
template <int Lanes, typename Word>
struct Counters {
  Word c[4][Lanes];
  Counters(uint32_t block0, uint32_t block_step, uint32_t row0, uint32_t row_step, uint64_t stream) {
    for (int l = 0; l < Lanes; ++l) {
      c[0][l] = block0 + block_step * uint32_t(l);
      c[1][l] = row0 + row_step * uint32_t(l);
      c[2][l] = uint32_t(stream);
      c[3][l] = uint32_t(stream >> 32);
    }
  }
};

// Gaussians g[0 : 64 * ceil(d / 64)] of one row, in chunks of kChunkBlocks = 16 Philox blocks (64
// values): value v * 16 + b of chunk j comes from word v of the block at counter (16 j + b, row,
// stream), whatever Lanes is (so every ISA copy draws the same samples). Storing word-major keeps
// every store a contiguous vector (no transpose), Lanes blocks at a time.
template <int Lanes, typename Word>
C10_ALWAYS_INLINE void row_gaussians(float* g, int64_t d, uint32_t row, uint64_t key, uint64_t stream) {
  static_assert(kChunkBlocks % Lanes == 0, "a chunk is a whole number of Philox batches");
  for (int64_t chunk = 0; chunk * kChunkValues < d; ++chunk) {
    float* dst = g + chunk * kChunkValues;
    for (int sub = 0; sub < kChunkBlocks; sub += Lanes) {
      Counters<Lanes, Word> ctr(uint32_t(chunk * kChunkBlocks + sub), 1, row, 0, stream);
      philox4x32_10<Lanes>(ctr.c, uint32_t(key), uint32_t(key >> 32));
      for (int pair = 0; pair < 2; ++pair) {
        float* cos_dst = dst + (2 * pair) * kChunkBlocks + sub;
        float* sin_dst = dst + (2 * pair + 1) * kChunkBlocks + sub;
        for (int l = 0; l < Lanes; ++l) {
          const float radius = std::sqrt(-2.0f * log_unit(open_uniform(uint32_t(ctr.c[2 * pair][l]))));
          float s, c;
          sincos_turns(open_uniform(uint32_t(ctr.c[2 * pair + 1][l])), s, c);
          cos_dst[l] = radius * c;
          sin_dst[l] = radius * s;
        }
      }
    }
  }
}

// sum_j g[j]^2 in float64 (kLanes partial sums, so it vectorises without reassociation flags).
C10_ALWAYS_INLINE double sum_squares(const float* g, int64_t d) {
  double partial[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= d; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] += double(g[j + l]) * double(g[j + l]);
  }
  for (; j < d; ++j) partial[0] += double(g[j]) * double(g[j]);
  double sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += partial[l];
  return sum;
}

// One row's Gaussians into g (room for d rounded up to kChunkValues), returning their float64
// sum of squares over the first d.
using RowGaussiansFn = double (*)(float* g, int64_t d, uint32_t row, uint64_t key, uint64_t stream);
// The same, then the row scaled to ``radius`` and stored as float32 into out (the common case, in
// the variant's vector instructions).
using RowFloatFn = void (*)(float* out, float* g, int64_t d, uint32_t row, uint64_t key, uint64_t stream, double radius);

// out[j] = g[j] * float(radius / ||g||) (float math: relative error <= 1 float eps, covered by the
// radius margin).
C10_ALWAYS_INLINE void store_scaled(float* out, const float* g, int64_t d, double sum_sq, double radius) {
  const float s = float(radius / std::sqrt(sum_sq));
  for (int64_t j = 0; j < d; ++j) out[j] = g[j] * s;
}

double row_kernel_default(float* g, int64_t d, uint32_t row, uint64_t key, uint64_t stream) {
  row_gaussians<kLanes, uint32_t>(g, d, row, key, stream);
  return sum_squares(g, d);
}

void row_float_default(float* out, float* g, int64_t d, uint32_t row, uint64_t key, uint64_t stream, double radius) {
  row_gaussians<kLanes, uint32_t>(g, d, row, key, stream);
  store_scaled(out, g, d, sum_squares(g, d), radius);
}

#ifdef ANOMALYKIT_TARGET_AVX2
ANOMALYKIT_TARGET_AVX2 double row_kernel_avx2(float* g, int64_t d, uint32_t row, uint64_t key, uint64_t stream) {
  row_gaussians<kLanes, uint32_t>(g, d, row, key, stream);
  return sum_squares(g, d);
}

ANOMALYKIT_TARGET_AVX2 void row_float_avx2(float* out, float* g, int64_t d, uint32_t row, uint64_t key, uint64_t stream, double radius) {
  row_gaussians<kLanes, uint32_t>(g, d, row, key, stream);
  store_scaled(out, g, d, sum_squares(g, d), radius);
}

// 16 lanes fill zmm registers with floats; 64-bit words avoid vpmuludq's even/odd shuffles.
ANOMALYKIT_TARGET_AVX512 double row_kernel_avx512(float* g, int64_t d, uint32_t row, uint64_t key, uint64_t stream) {
  row_gaussians<kMaxLanes, uint64_t>(g, d, row, key, stream);
  return sum_squares(g, d);
}

ANOMALYKIT_TARGET_AVX512 void row_float_avx512(float* out, float* g, int64_t d, uint32_t row, uint64_t key, uint64_t stream, double radius) {
  row_gaussians<kMaxLanes, uint64_t>(g, d, row, key, stream);
  store_scaled(out, g, d, sum_squares(g, d), radius);
}
#endif

// The variant for the CPU (isa.h: ATEN_CPU_CAPABILITY selects it like ATen's kernels, clamped to
// what the CPU supports).
RowGaussiansFn row_kernel() {
#ifdef ANOMALYKIT_TARGET_AVX2
  switch (cpu::isa()) {
    case cpu::Isa::kAvx512: return &row_kernel_avx512;
    case cpu::Isa::kAvx2: return &row_kernel_avx2;
    default: break;
  }
#endif
  return &row_kernel_default;
}

RowFloatFn row_float_kernel() {
#ifdef ANOMALYKIT_TARGET_AVX2
  switch (cpu::isa()) {
    case cpu::Isa::kAvx512: return &row_float_avx512;
    case cpu::Isa::kAvx2: return &row_float_avx2;
    default: break;
  }
#endif
  return &row_float_default;
}

// out[j] = g[j] * scale, rounded to scalar_t (float math: relative error <= 1 float eps, covered by
// the radius margin; double math for double outputs).
template <typename scalar_t>
void scale_row(scalar_t* out, const float* g, double scale, int64_t d) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    for (int64_t j = 0; j < d; ++j) out[j] = double(g[j]) * scale;
  } else {
    const float s = float(scale);
    for (int64_t j = 0; j < d; ++j) out[j] = static_cast<scalar_t>(g[j] * s);
  }
}

// Radii of kLanes rows from their uniforms, in float (vectorised; relative error ~1e-7, far below
// what a sample can show; the bounds are enforced exactly afterwards by AnnulusRadius::clamp):
// rho = r_out * exp(log(1 + (1 - u) * expm1(d log(r_in / r_out))) / d), the inverse CDF of the
// volume-uniform radius written as in AnnulusRadius (1 + x is within float rounding of log1p's
// argument: the absolute error of log near 1 is what matters after the division by d).
C10_ALWAYS_INLINE void shell_radii(const uint32_t* bits, float* radius, float r_outer, float expm1_log_q, float inv_d) {
  for (int l = 0; l < kLanes; ++l) {
    const float u = open_uniform(bits[l]);  // (0, 1), 24 bits
    const float inside = 1.0f + (1.0f - u) * expm1_log_q;  // (r/r_out)^d in (0, 1]
    radius[l] = r_outer * exp_nonpositive(log_unit(inside > 0.0f ? inside : 1.17549435e-38f) * inv_d);
  }
}

using ShellRadiiFn = void (*)(const uint32_t* bits, float* radius, float r_outer, float expm1_log_q, float inv_d);
void shell_radii_default(const uint32_t* bits, float* radius, float r_outer, float expm1_log_q, float inv_d) {
  shell_radii(bits, radius, r_outer, expm1_log_q, inv_d);
}
#ifdef ANOMALYKIT_TARGET_AVX2
ANOMALYKIT_TARGET_AVX2 void shell_radii_avx2(const uint32_t* bits, float* radius, float r_outer, float expm1_log_q, float inv_d) {
  shell_radii(bits, radius, r_outer, expm1_log_q, inv_d);
}
ANOMALYKIT_TARGET_AVX512 void shell_radii_avx512(const uint32_t* bits, float* radius, float r_outer, float expm1_log_q, float inv_d) {
  shell_radii(bits, radius, r_outer, expm1_log_q, inv_d);
}
#endif

struct ShellRadius {
  float r_outer, expm1_log_q, inv_d;
  ShellRadiiFn fn = &shell_radii_default;
  ShellRadius(int64_t d, double r_inner, double r_outer_)
      : r_outer(float(r_outer_)), inv_d(float(1.0 / double(d))) {
    const double log_q = r_inner > 0 ? double(d) * (std::log(r_inner) - std::log(r_outer_)) : -INFINITY;
    expm1_log_q = float(std::expm1(log_q));
#ifdef ANOMALYKIT_TARGET_AVX2
    switch (cpu::isa()) {
      case cpu::Isa::kAvx512: fn = &shell_radii_avx512; break;
      case cpu::Isa::kAvx2: fn = &shell_radii_avx2; break;
      default: break;
    }
#endif
  }
  void operator()(const uint32_t (&bits)[kLanes], float (&radius)[kLanes]) const {
    fn(bits, radius, r_outer, expm1_log_q, inv_d);
  }
};

// A fresh (n, d) output. Large ones are allocated 2 MB-aligned and marked for transparent huge
// pages (madvise, Linux): faulting in and zeroing the pages of a fresh 64 MB tensor 4 KB at a time
// costs about as much as generating the samples (docs/performance.md). Same tensor otherwise.
at::Tensor empty_output(int64_t n, int64_t d, at::ScalarType dtype) {
  const auto options = at::TensorOptions().dtype(dtype).device(at::kCPU);
#ifdef __linux__
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t bytes = size_t(n) * size_t(d) * at::elementSize(dtype);
  if (bytes >= 16 * kHugePage) {  // below 32 MB glibc reuses freed heap memory: no faults to save
    const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    if (void* data = std::aligned_alloc(kHugePage, rounded)) {
      madvise(data, rounded, MADV_HUGEPAGE);  // advice only: without THP it is a plain allocation
      return at::from_blob(data, {n, d}, [](void* p) { std::free(p); }, options);
    }
  }
#endif
  return at::empty({n, d}, options);
}

at::Tensor annulus_sample_cpu(
    int64_t n, int64_t d, double r_inner, double r_outer, std::optional<at::Generator> generator,
    std::optional<at::ScalarType> dtype_opt, std::optional<at::Device> device) {
  const at::ScalarType dtype = dtype_opt.value_or(at::get_default_dtype_as_scalartype());
  check_annulus_args(n, d, r_inner, r_outer, dtype);
  TORCH_CHECK(n < (int64_t{1} << 32) && d < (int64_t{1} << 36), "annulus_sample: n or d too large for the Philox counter");
  at::Tensor out = empty_output(n, d, dtype);
  if (n == 0) return out;

  uint64_t key, stream;
  {
    auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
    std::lock_guard<std::mutex> lock(gen->mutex_);
    key = gen->random64();
    stream = gen->random64();
  }
  const AnnulusRadius bounds(d, r_inner, r_outer, dtype_eps(dtype));
  const ShellRadius radius_of(d, r_inner, r_outer);
  const bool exact_radius = dtype == at::kDouble;
  const int64_t padded_d = (d + kChunkValues - 1) / kChunkValues * kChunkValues;
  const RowGaussiansFn gaussians = row_kernel();
  const RowFloatFn float_rows = row_float_kernel();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "annulus_sample_cpu", [&] {
    scalar_t* out_ptr = out.mutable_data_ptr<scalar_t>();
    // Rows go in groups of kLanes: one Philox call gives the group's radius uniforms.
    const int64_t groups = (n + kLanes - 1) / kLanes;
    const int64_t grain = std::max<int64_t>(1, 8192 / (kLanes * padded_d));
    at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> g(padded_d);
      for (int64_t group = begin; group < end; ++group) {
        const int64_t row0 = group * kLanes;
        Counters<kLanes, uint32_t> radius_ctr(kRadiusBlock, 0, uint32_t(row0), 1, stream);
        philox4x32_10<kLanes>(radius_ctr.c, uint32_t(key), uint32_t(key >> 32));
        double radius[kLanes];
        if (exact_radius) {  // float64 output: the radius in float64 from 53 random bits
          for (int l = 0; l < kLanes; ++l) {
            radius[l] = bounds(double((uint64_t{radius_ctr.c[0][l]} << 21) ^ (radius_ctr.c[1][l] >> 11)) * 0x1.0p-53);
          }
        } else {
          float approx[kLanes];
          radius_of(radius_ctr.c[0], approx);
          for (int l = 0; l < kLanes; ++l) radius[l] = bounds.clamp(approx[l]);
        }
        for (int64_t l = 0; l < kLanes && row0 + l < n; ++l) {
          const int64_t row = row0 + l;
          if constexpr (std::is_same_v<scalar_t, float>) {
            float_rows(reinterpret_cast<float*>(out_ptr + row * d), g.data(), d, uint32_t(row), key, stream, radius[l]);  // scalar_t is float here
          } else {
            const double sum_sq = gaussians(g.data(), d, uint32_t(row), key, stream);
            scale_row(out_ptr + row * d, g.data(), radius[l] / std::sqrt(sum_sq), d);
          }
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(anomalykit, CPU, m) {
  m.impl("annulus_sample", &annulus_sample_cpu);
}

}  // namespace anomalykit
