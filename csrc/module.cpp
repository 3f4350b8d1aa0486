// The lam_fast._C Python module: importing it registers the lam_fast:: ops (schemas below,
// CPU kernels in adaln.cpp / vq.cpp, CUDA kernels in cuda/*.cu when built with CUDA).
// Other ops add their schemas with TORCH_LIBRARY_FRAGMENT(lam_fast, m).
#include <Python.h>

#include <torch/library.h>

#include "attention.h"
#include "cpu_kernels.h"

TORCH_LIBRARY(lam_fast, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def("adaln_modulate_fwd(Tensor x, Tensor shift, Tensor scale, int frame_tokens, float eps)"
        " -> (Tensor out, Tensor mean, Tensor rstd)",
        tags);
  m.def("adaln_modulate_bwd(Tensor grad_out, Tensor x, Tensor scale, Tensor mean, Tensor rstd, int frame_tokens)"
        " -> (Tensor grad_x, Tensor grad_shift, Tensor grad_scale)",
        tags);
  m.def("gated_residual_fwd(Tensor x, Tensor y, Tensor gate, int frame_tokens) -> Tensor", tags);
  m.def("gated_residual_bwd(Tensor grad_out, Tensor y, Tensor gate, int frame_tokens)"
        " -> (Tensor grad_y, Tensor grad_gate)",
        tags);
  m.def("vq_nearest(Tensor x, Tensor codebook) -> Tensor", tags);
  m.def("vq_quantize(Tensor x, Tensor codebook)"
        " -> (Tensor quantized, Tensor indices, Tensor commitment_loss, Tensor codebook_loss)",
        tags);
  m.def("attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? cos, Tensor? sin, int frame_tokens, int q_frame_offset,"
        " float scale) -> (Tensor out, Tensor lse)",
        tags);
  m.def("attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? cos,"
        " Tensor? sin, int frame_tokens, int q_frame_offset, float scale) -> (Tensor grad_q, Tensor grad_k,"
        " Tensor grad_v)",
        tags);
}

namespace {

PyObject* cpu_capability(PyObject*, PyObject*) { return PyUnicode_FromString(lam_fast::cpu::kernels().name); }

PyObject* cpu_capabilities(PyObject*, PyObject*) {
  int count = 0;
  const char* const* names = lam_fast::cpu::supported_capabilities(&count);
  PyObject* out = PyTuple_New(count);
  if (out == nullptr) return nullptr;
  for (int i = 0; i < count; ++i) {
    PyObject* s = PyUnicode_FromString(names[i]);
    if (s == nullptr) {
      Py_DECREF(out);
      return nullptr;
    }
    PyTuple_SET_ITEM(out, i, s);
  }
  return out;
}

PyObject* set_cpu_capability(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  if (!lam_fast::cpu::set_capability(name)) {
    PyErr_Format(PyExc_ValueError, "CPU capability %s is unknown or not supported by this CPU", name);
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* attention_gemm(PyObject*, PyObject*) { return PyUnicode_FromString(lam_fast::attention_gemm()); }

PyObject* set_attention_gemm(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  if (!lam_fast::set_attention_gemm(name)) {
    PyErr_Format(PyExc_ValueError, "attention GEMM %s is unknown or not available here (blas, portable)", name);
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS, "SIMD kernel set the CPU ops use (avx512, avx2 or base)."},
    {"cpu_capabilities", cpu_capabilities, METH_NOARGS, "SIMD kernel sets this CPU can run, best first."},
    {"set_cpu_capability", set_cpu_capability, METH_O, "Use the named SIMD kernel set (for tests and benchmarks)."},
    {"attention_gemm", attention_gemm, METH_NOARGS, "Tile GEMM of the CPU attention: blas (MKL sgemm) or portable."},
    {"set_attention_gemm", set_attention_gemm, METH_O, "Use the named attention tile GEMM (for tests and benchmarks)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "lam_fast._C", "lam_fast C++/CUDA ops (torch.ops.lam_fast.*).", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
