// Schemas of the torch.ops.vtprune.* operators (docs/design.md section 2) and the Python
// module entry point of vtprune_kernels._C. Kernels register themselves per backend:
// csrc/cpu/*.cpp (CPU), csrc/cuda/binding*.cpp (CUDA C++), and the Triton kernel of
// attention_scores from Python (vtprune_kernels/_triton_backend.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import vtprune_kernels._C` loads this library, which runs the registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "vtprune_kernels native ops (see torch.ops.vtprune)", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(vtprune, m) {
  m.def(
      "attention_scores(Tensor q, Tensor k, *, float? scale=None, str query_reduce=\"mean\", "
      "str head_reduce=\"mean\", bool causal=False, Tensor? lse=None) -> Tensor");
  m.def("region_topk_mask(Tensor scores, Tensor region_ids, Tensor k) -> Tensor");
  m.def("window_argmax_mask(Tensor scores, Tensor exclude, int[2] window) -> Tensor");
  m.def(
      "cosine_dedup_mask(Tensor x, Tensor candidates, Tensor order_scores, Tensor n_keep, "
      "int step=8) -> Tensor");
  m.def("allocate_budget(Tensor weights, Tensor total, Tensor capacity) -> Tensor");
}

// The ops are not differentiable (scores rank tokens; masks and counts are discrete): let calls
// on inputs that require grad pass straight to the backend kernels, returning plain tensors.
TORCH_LIBRARY_IMPL(vtprune, Autograd, m) {
  for (const char* op : {"attention_scores", "region_topk_mask", "window_argmax_mask", "cosine_dedup_mask",
                         "allocate_budget"}) {
    m.impl(op, torch::CppFunction::makeFallthrough());
  }
}
