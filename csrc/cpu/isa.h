// Run-time ISA variants for the hot CPU loops.
//
// A torch extension is compiled once, for the x86-64 baseline, so at::vec::Vectorized inside it is
// the generic (SSE2-level) implementation. Loops that are compute-bound instead get three copies,
// compiled with GCC/Clang target attributes for the baseline, AVX2+FMA and AVX-512, and the copy is
// chosen at run time from ATen's CPU capability, which honours ATEN_CPU_CAPABILITY=default|avx2|avx512
// exactly as ATen's own kernels do. The variant bodies must only call C10_ALWAYS_INLINE helpers so
// that all of their code is compiled for the variant's instructions.
#pragma once

#include <ATen/Version.h>
#include <c10/macros/Macros.h>

#include <string>

namespace anomalykit::cpu {

enum class Isa { kDefault, kAvx2, kAvx512 };

inline Isa isa() {
  static const Isa chosen = [] {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512") return Isa::kAvx512;
    if (capability == "AVX2") return Isa::kAvx2;
#endif
    return Isa::kDefault;
  }();
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
