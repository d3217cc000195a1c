// Python bindings of pbw's fused CUDA ops (one extension module for all ops, built by loader.py).
#include <torch/extension.h>

at::Tensor bias_act_cuda(const at::Tensor& x, const std::optional<at::Tensor>& b,
                         const std::optional<at::Tensor>& dy, int64_t grad, int64_t dim, int64_t act, double alpha,
                         double gain, double clamp);
at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& k, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act", &bias_act_cuda,
        "bias + activation + gain + clamp (grad=0), or its first (grad=1) / second (grad=2) derivative times dy",
        py::arg("x"), py::arg("b"), py::arg("dy"), py::arg("grad"), py::arg("dim"), py::arg("act"), py::arg("alpha"),
        py::arg("gain"), py::arg("clamp"));
  m.def("upfirdn2d", &upfirdn2d_cuda, "upsample, pad, correlate with a float32 [kh, kw] kernel, downsample",
        py::arg("x"), py::arg("k"), py::arg("upx"), py::arg("upy"), py::arg("downx"), py::arg("downy"),
        py::arg("px0"), py::arg("px1"), py::arg("py0"), py::arg("py1"));
}
