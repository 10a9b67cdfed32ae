// Run-time ISA variants for the hot CPU loops.
//
// A torch extension is compiled once, for the x86-64 baseline, so at::vec::Vectorized inside it is
// the generic (SSE2-level) implementation. Loops that are compute-bound instead get three copies,
// compiled with GCC/Clang target attributes for the baseline, AVX2+FMA and AVX-512, and the copy is
// chosen once per process: ATen's CPU capability (which honours ATEN_CPU_CAPABILITY=default|avx2|
// avx512 as ATen's own kernels do) clamped to what this CPU and OS support (__builtin_cpu_supports,
// which also checks that the OS saves the AVX/AVX-512 registers). ATen reports "AVX512" whenever the
// variable asks for it, even on a CPU without AVX-512; the clamp makes that run the AVX2 copy instead
// of dying with SIGILL. The variant bodies must only call C10_ALWAYS_INLINE helpers so that all of
// their code is compiled for the variant's instructions.
//
// Test-only: ANOMALYKIT_TEST_HIDE_ISA=avx512 (or avx2, which hides both) makes the support check
// report a CPU without those instructions, so the clamp is testable on a machine that has them.
#pragma once

#include <ATen/Version.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

namespace anomalykit::cpu {

// Ordered: a wider ISA compares greater.
enum class Isa { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "default";
  }
}

// The variant ATen's CPU capability asks for (ATEN_CPU_CAPABILITY when set, else ATen's detection).
inline Isa requested_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  const std::string capability = at::get_cpu_capability();
  if (capability == "AVX512") return Isa::kAvx512;
  if (capability == "AVX2") return Isa::kAvx2;
#endif
  return Isa::kDefault;
}

// The widest variant this CPU can run: AVX-512 needs F, DQ, VL, BW and FMA (the target attributes
// below), AVX2 needs AVX2 and FMA. Lowered by the test-only ANOMALYKIT_TEST_HIDE_ISA.
inline Isa supported_isa() {
  Isa best = Isa::kDefault;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    best = Isa::kAvx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw")) {
      best = Isa::kAvx512;
    }
  }
  if (const char* hide = std::getenv("ANOMALYKIT_TEST_HIDE_ISA")) {
    if (std::strcmp(hide, "avx2") == 0) best = Isa::kDefault;
    if (std::strcmp(hide, "avx512") == 0) best = std::min(best, Isa::kAvx2);
  }
#endif
  return best;
}

// The variant the kernels run: the requested one, clamped to what the CPU supports.
inline Isa isa() {
  static const Isa chosen = std::min(requested_isa(), supported_isa());
  return chosen;
}

}  // namespace anomalykit::cpu

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ANOMALYKIT_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define ANOMALYKIT_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma")))

// Defines name<scalar_t>(args...), which runs body<scalar_t>(args...) compiled for the CPU's ISA.
#define ANOMALYKIT_ISA_VARIANTS(name, body)                                              \
  template <typename scalar_t, typename... Args>                                         \
  void name##_default(Args... args) { body<scalar_t>(args...); }                         \
  template <typename scalar_t, typename... Args>                                         \
  ANOMALYKIT_TARGET_AVX2 void name##_avx2(Args... args) { body<scalar_t>(args...); }     \
  template <typename scalar_t, typename... Args>                                         \
  ANOMALYKIT_TARGET_AVX512 void name##_avx512(Args... args) { body<scalar_t>(args...); } \
  template <typename scalar_t, typename... Args>                                         \
  void name(Args... args) {                                                              \
    switch (::anomalykit::cpu::isa()) {                                                  \
      case ::anomalykit::cpu::Isa::kAvx512: return name##_avx512<scalar_t>(args...);     \
      case ::anomalykit::cpu::Isa::kAvx2: return name##_avx2<scalar_t>(args...);         \
      default: return name##_default<scalar_t>(args...);                                 \
    }                                                                                    \
  }
#else
#define ANOMALYKIT_ISA_VARIANTS(name, body) \
  template <typename scalar_t, typename... Args> \
  void name(Args... args) { body<scalar_t>(args...); }
#endif
