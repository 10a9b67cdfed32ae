// anomalykit native ops: the schema block and the Python module (one function, cpu_isa).
//
// Importing anomalykit._C loads this library, which registers the anomalykit:: ops below; the
// kernels live in cpu/<op>.cpp and cuda/<op>.cu (one TORCH_LIBRARY_IMPL per op and backend), the
// fake kernels and autograd formulas in anomalykit/ops/_native.py.
#include <Python.h>

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/DispatchKeySet.h>
#include <torch/library.h>

#include "cpu/isa.h"

namespace {

// cpu_isa() -> (used, requested, supported): the CPU loop variant the kernels run, the one ATen's
// capability asks for (ATEN_CPU_CAPABILITY) and the widest this CPU supports (cpu/isa.h).
PyObject* cpu_isa(PyObject*, PyObject*) {
  using namespace anomalykit::cpu;
  return Py_BuildValue("(sss)", isa_name(isa()), isa_name(requested_isa()), isa_name(supported_isa()));
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "(used, requested, supported) CPU loop variants: default, avx2 or avx512"},
    {NULL, NULL, 0, NULL},
};

}  // namespace

extern "C" {
// Importing anomalykit._C loads this shared library (py_limited_api, like pytorch/extension-cpp);
// its one Python function reports the CPU loop variant.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",     // name
      NULL,     // docstring
      -1,       // per-interpreter state size
      methods,  // methods
  };
  return PyModule_Create(&module_def);
}
}

namespace anomalykit {

// annulus_sample has no Tensor argument to dispatch on, so (like ATen's factory functions) a
// BackendSelect kernel picks CPU or CUDA from `device` and redispatches.
at::Tensor annulus_sample_backend_select(
    c10::DispatchKeySet,
    int64_t n,
    int64_t d,
    double r_inner,
    double r_outer,
    std::optional<at::Generator> generator,
    std::optional<at::ScalarType> dtype,
    std::optional<at::Device> device) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("anomalykit::annulus_sample", "")
                       .typed<at::Tensor(
                           int64_t, int64_t, double, double, std::optional<at::Generator>,
                           std::optional<at::ScalarType>, std::optional<at::Device>)>();
  c10::DispatchKeySet backend(c10::computeDispatchKey(dtype, std::nullopt, device));
  return op.redispatch(backend, n, d, r_inner, r_outer, generator, dtype, device);
}

TORCH_LIBRARY(anomalykit, m) {
  // R(x) = ||a - b||_1 per row of two (B, F) matrices; backward returns (grad * sign(a - b), -...).
  m.def("pair_feature_l1(Tensor a, Tensor b) -> Tensor");
  m.def("pair_feature_l1_backward(Tensor grad, Tensor a, Tensor b) -> (Tensor, Tensor)");
  // out[b] = sum_i weight[b, i] * latents[index[b, i]]; the backward computes only the gradients
  // asked for (the others come back as empty tensors).
  m.def("simplex_mix(Tensor latents, Tensor index, Tensor weight) -> Tensor");
  m.def(
      "simplex_mix_backward(Tensor grad, Tensor latents, Tensor index, Tensor weight, "
      "bool latents_grad, bool weight_grad) -> (Tensor, Tensor)");
  // (n, d) samples uniform in the shell r_inner <= ||z|| <= r_outer.
  m.def(
      "annulus_sample(int n, int d, float r_inner, float r_outer, *, Generator? generator=None, "
      "ScalarType? dtype=None, Device? device=None) -> Tensor",
      {at::Tag::nondeterministic_seeded});
  // Helper (CPU kernel only; the reference runs elsewhere): an Adam step on a (B, K, N) parameter
  // whose gradient at each step s < T was left[s, b] (x) right[s, b], with Adam's moments formed
  // from those factors (m = sum_s coef_m[s] left (x) right, v = sum_s coef_v[s] left^2 (x) right^2);
  // with input_grad also returns param_before @ right[T - 1] (B, K), else an empty tensor.
  m.def(
      "outer_adam_step_(Tensor(a!) param, Tensor left, Tensor right, float[] coef_m, float[] coef_v, "
      "float step_size, float bias_correction2_sqrt, float eps, bool input_grad=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(anomalykit, BackendSelect, m) {
  m.impl("annulus_sample", TORCH_FN(annulus_sample_backend_select));
}

}  // namespace anomalykit
