// Fused bias + activation + gain + clamp, and the first and second derivatives of the same map.
//
// One elementwise kernel serves three purposes (`grad`):
//   0: out = clamp(gain * act(x + b), +-clamp)
//   1: out = dy * gain * act'(x + b) * [|gain * act(x + b)| <= clamp]
//   2: out = dy * gain * act''(x + b) * [|gain * act(x + b)| <= clamp]
// The clamp mask is recomputed from x, so nothing but the input needs to be kept for backward.
// For the sign-only activations (linear, relu, lrelu with alpha >= 0 and gain > 0, no clamp) the
// caller may pass the output y as `x` and no bias: act'(y) == act'(x + b) there.
//
// Tensors are read in memory order (x must be non-overlapping and dense; every other tensor has
// x's strides), so contiguous and channels_last layouts take the same path; the bias index of the
// element at memory offset i is (i / x.stride(dim)) % x.size(dim).

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>
#include <optional>

namespace {

enum Act { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSoftplusThreshold = 20.0;  // as torch.nn.functional.softplus(beta=1)

__device__ __forceinline__ float dexp(float v) { return expf(v); }
__device__ __forceinline__ double dexp(double v) { return exp(v); }
__device__ __forceinline__ float dexpm1(float v) { return expm1f(v); }
__device__ __forceinline__ double dexpm1(double v) { return expm1(v); }
__device__ __forceinline__ float dlog1p(float v) { return log1pf(v); }
__device__ __forceinline__ double dlog1p(double v) { return log1p(v); }
__device__ __forceinline__ float dtanh(float v) { return tanhf(v); }
__device__ __forceinline__ double dtanh(double v) { return tanh(v); }
__device__ __forceinline__ float dabs(float v) { return fabsf(v); }
__device__ __forceinline__ double dabs(double v) { return fabs(v); }

template <typename T>
__device__ __forceinline__ T sigmoid(T v) {
  return T(1) / (T(1) + dexp(-v));
}

// act(v), act'(v) and act''(v) for order 0, 1, 2.
template <typename T>
__device__ __forceinline__ T activation(int act, int order, T v, T alpha) {
  switch (act) {
    case kLinear:
      return order == 0 ? v : (order == 1 ? T(1) : T(0));
    case kRelu:
      if (order == 0) return v > T(0) ? v : T(0);
      return order == 1 ? (v > T(0) ? T(1) : T(0)) : T(0);
    case kLrelu:
      if (order == 0) return v > T(0) ? v : v * alpha;
      return order == 1 ? (v > T(0) ? T(1) : alpha) : T(0);
    case kTanh: {
      const T t = dtanh(v);
      if (order == 0) return t;
      return order == 1 ? T(1) - t * t : T(-2) * t * (T(1) - t * t);
    }
    case kSigmoid: {
      const T s = sigmoid(v);
      if (order == 0) return s;
      return order == 1 ? s * (T(1) - s) : s * (T(1) - s) * (T(1) - T(2) * s);
    }
    case kElu:
      if (order == 2 && v == T(0)) return T(0);  // torch's convention at the kink (elu and selu)
      if (v > T(0)) return order == 0 ? v : (order == 1 ? T(1) : T(0));
      return order == 0 ? dexpm1(v) : dexp(v);
    case kSelu:
      if (order == 2 && v == T(0)) return T(0);
      if (v > T(0)) return order == 0 ? T(kSeluScale) * v : (order == 1 ? T(kSeluScale) : T(0));
      return order == 0 ? T(kSeluScale * kSeluAlpha) * dexpm1(v) : T(kSeluScale * kSeluAlpha) * dexp(v);
    case kSoftplus: {
      if (v > T(kSoftplusThreshold)) return order == 0 ? v : (order == 1 ? T(1) : T(0));
      if (order == 0) return dlog1p(dexp(v));
      const T s = sigmoid(v);
      return order == 1 ? s : s * (T(1) - s);
    }
    case kSwish: {
      const T s = sigmoid(v);
      if (order == 0) return v * s;
      return order == 1 ? s * (T(1) + v * (T(1) - s)) : s * (T(1) - s) * (T(2) + v * (T(1) - T(2) * s));
    }
  }
  return T(0);
}

template <typename scalar_t, typename index_t>
__global__ void bias_act_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ b, const scalar_t* __restrict__ dy, index_t n,
                                index_t cstride, index_t csize, int grad, int act, double alpha_, double gain_,
                                double clamp_) {
  using T = at::opmath_type<scalar_t>;
  const T alpha = T(alpha_), gain = T(gain_), clamp = T(clamp_);
  const bool use_clamp = clamp_ >= 0;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(blockDim.x) * gridDim.x) {
    T v = T(x[i]);
    if (b != nullptr) v += T(b[(i / cstride) % csize]);
    T r;
    if (grad == 0) {
      r = gain * activation<T>(act, 0, v, alpha);
      if (use_clamp) r = r > clamp ? clamp : (r < -clamp ? -clamp : r);  // NaN passes through
    } else {
      r = T(dy[i]) * gain * activation<T>(act, grad, v, alpha);
      if (use_clamp && !(dabs(gain * activation<T>(act, 0, v, alpha)) <= clamp)) r = T(0);
    }
    out[i] = scalar_t(r);
  }
}

void check_like(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device() == x.device(), "bias_act: ", name, " is on ", t.device(), " but x is on ", x.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "bias_act: ", name, " has dtype ", t.scalar_type(),
              " but x has ", x.scalar_type());
  TORCH_CHECK(t.sizes() == x.sizes() && t.strides() == x.strides(), "bias_act: ", name,
              " must have the shape and strides of x");
}

}  // namespace

at::Tensor bias_act_cuda(const at::Tensor& x, const std::optional<at::Tensor>& b_opt,
                         const std::optional<at::Tensor>& dy_opt, int64_t grad, int64_t dim, int64_t act, double alpha,
                         double gain, double clamp) {
  const at::Tensor b = b_opt.value_or(at::Tensor());
  const at::Tensor dy = dy_opt.value_or(at::Tensor());
  TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be non-overlapping and dense");
  TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
  TORCH_CHECK(act >= kLinear && act <= kSwish, "bias_act: unknown activation id ", act);
  TORCH_CHECK(dim >= 0 && dim < std::max<int64_t>(x.dim(), 1), "bias_act: dim out of range");
  if (b.defined()) {
    TORCH_CHECK(b.device() == x.device() && b.scalar_type() == x.scalar_type(),
                "bias_act: b must have x's device and dtype");
    TORCH_CHECK(b.dim() == 1 && b.is_contiguous() && b.numel() == x.size(dim),
                "bias_act: b must be contiguous with x.size(dim) elements");
  }
  if (grad > 0) {
    TORCH_CHECK(dy.defined(), "bias_act: the gradient modes need dy");
    check_like(dy, x, "dy");
  }
  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor out = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return out;
  const int64_t cstride = b.defined() ? std::max<int64_t>(x.stride(dim), 1) : 1;
  const int64_t csize = b.defined() ? std::max<int64_t>(x.size(dim), 1) : 1;

  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(65535) * 16);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cuda", [&] {
    const scalar_t* bp = b.defined() ? b.data_ptr<scalar_t>() : nullptr;
    const scalar_t* dyp = grad > 0 ? dy.data_ptr<scalar_t>() : nullptr;
    if (n <= std::numeric_limits<int32_t>::max()) {
      bias_act_kernel<scalar_t, int32_t><<<unsigned(blocks), threads, 0, stream>>>(
          out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), bp, dyp, int32_t(n), int32_t(cstride), int32_t(csize),
          int(grad), int(act), alpha, gain, clamp);
    } else {
      bias_act_kernel<scalar_t, int64_t><<<unsigned(blocks), threads, 0, stream>>>(
          out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), bp, dyp, n, cstride, csize, int(grad), int(act), alpha,
          gain, clamp);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}
