// Zero-insertion upsampling, padding/cropping, 2-D FIR filtering and downsampling in one pass.
//
// For an output pixel (oy, ox) the kernel gathers exactly the input pixels the chain of ops would
// have touched, without ever forming the upsampled/padded image:
//   y[n, c, oy, ox] = sum_{i, j} k[i, j] * u[oy * down_y + i, ox * down_x + j]
//   u[m, l] = x[n, c, (m - py0) / up_y, (l - px0) / up_x]   where both divisions are exact and in range, else 0
// `k` is the correlation kernel (the caller flips the filter for a true convolution and folds the
// gain in), float32, [kh, kw]. x may have any strides; y gets x's memory format and threads walk y
// in memory order (w-fastest for contiguous, c-fastest for channels_last) so loads and stores coalesce.

#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

namespace {

// floor(a / b) for b > 0 and any sign of a.
__device__ __forceinline__ int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

struct Geometry {
  int C, H, W, OH, OW;
  int upx, upy, downx, downy, px0, py0, kw, kh;
  bool channels_last;
};

template <typename scalar_t, typename index_t>
__global__ void upfirdn2d_kernel(scalar_t* __restrict__ y, const scalar_t* __restrict__ x,
                                 const float* __restrict__ k, Geometry g, index_t total, index_t sxn, index_t sxc,
                                 index_t sxh, index_t sxw, index_t syn, index_t syc, index_t syh, index_t syw) {
  using T = at::opmath_type<scalar_t>;
  extern __shared__ float ks[];
  for (int i = threadIdx.x; i < g.kw * g.kh; i += blockDim.x) ks[i] = k[i];
  __syncthreads();

  for (index_t idx = index_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += index_t(blockDim.x) * gridDim.x) {
    index_t t = idx;
    int n, c, oy, ox;
    if (g.channels_last) {
      c = int(t % g.C); t /= g.C;
      ox = int(t % g.OW); t /= g.OW;
      oy = int(t % g.OH); n = int(t / g.OH);
    } else {
      ox = int(t % g.OW); t /= g.OW;
      oy = int(t % g.OH); t /= g.OH;
      c = int(t % g.C); n = int(t / g.C);
    }
    // Tap i of row oy reads u[oy * down_y + i], i.e. input row iy where iy * up_y = ty + i.
    const int ty = oy * g.downy - g.py0;
    const int tx = ox * g.downx - g.px0;
    const int iy0 = max(floor_div(ty + g.upy - 1, g.upy), 0);
    const int iy1 = min(floor_div(ty + g.kh - 1, g.upy), g.H - 1);
    const int ix0 = max(floor_div(tx + g.upx - 1, g.upx), 0);
    const int ix1 = min(floor_div(tx + g.kw - 1, g.upx), g.W - 1);

    const scalar_t* xp = x + index_t(n) * sxn + index_t(c) * sxc;
    T acc = T(0);
    for (int iy = iy0; iy <= iy1; ++iy) {
      const float* krow = ks + (iy * g.upy - ty) * g.kw;
      const scalar_t* xrow = xp + index_t(iy) * sxh;
      int j = ix0 * g.upx - tx;
      for (int ix = ix0; ix <= ix1; ++ix, j += g.upx) acc += T(xrow[index_t(ix) * sxw]) * T(krow[j]);
    }
    y[index_t(n) * syn + index_t(c) * syc + index_t(oy) * syh + index_t(ox) * syw] = scalar_t(acc);
  }
}

// Largest element offset + 1 that a tensor's storage view spans (0 for an empty tensor).
int64_t span(const at::Tensor& t) {
  int64_t s = 1;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) == 0) return 0;
    s += (t.size(d) - 1) * std::abs(t.stride(d));
  }
  return s;
}

}  // namespace

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& k, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4, "upfirdn2d: x must be a 4-D CUDA tensor [N, C, H, W]");
  TORCH_CHECK(k.device() == x.device() && k.scalar_type() == at::kFloat && k.dim() == 2 && k.is_contiguous(),
              "upfirdn2d: the kernel must be a contiguous float32 [kh, kw] tensor on x's device");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up/down factors must be >= 1");
  const int64_t kh = k.size(0), kw = k.size(1);
  TORCH_CHECK(kh >= 1 && kw >= 1 && kh * kw * int64_t(sizeof(float)) <= 48 * 1024,
              "upfirdn2d: the kernel must have between 1 and 12288 taps");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = (H * upy + py0 + py1 - kh) / downy + 1;
  const int64_t OW = (W * upx + px0 + px1 - kw) / downx + 1;
  TORCH_CHECK(H * upy + py0 + py1 - kh >= 0 && W * upx + px0 + px1 - kw >= 0,
              "upfirdn2d: the padded input is smaller than the filter");
  const int64_t int_max = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(N <= int_max && C <= int_max && H * upy + std::abs(py0) + kh <= int_max &&
                  W * upx + std::abs(px0) + kw <= int_max && OH * downy <= int_max && OW * downx <= int_max,
              "upfirdn2d: sizes too large");

  const c10::cuda::CUDAGuard device_guard(x.device());
  const auto memory_format = x.suggest_memory_format();
  at::Tensor y = at::empty({N, C, OH, OW}, x.options().memory_format(memory_format));
  const int64_t total = y.numel();
  if (total == 0) return y;
  if (x.numel() == 0) return y.zero_();

  Geometry g{int(C), int(H), int(W), int(OH), int(OW), int(upx), int(upy), int(downx), int(downy),
             int(px0), int(py0), int(kw), int(kh), memory_format == at::MemoryFormat::ChannelsLast};
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(65535) * 16);
  const size_t shmem = size_t(kh * kw) * sizeof(float);
  const bool small = std::max(span(x), total) <= int_max;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
    if (small) {
      upfirdn2d_kernel<scalar_t, int32_t><<<unsigned(blocks), threads, shmem, stream>>>(
          y.data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), k.const_data_ptr<float>(), g, int32_t(total),
          int32_t(x.stride(0)), int32_t(x.stride(1)), int32_t(x.stride(2)), int32_t(x.stride(3)),
          int32_t(y.stride(0)), int32_t(y.stride(1)), int32_t(y.stride(2)), int32_t(y.stride(3)));
    } else {
      upfirdn2d_kernel<scalar_t, int64_t><<<unsigned(blocks), threads, shmem, stream>>>(
          y.data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), k.const_data_ptr<float>(), g, total, x.stride(0),
          x.stride(1), x.stride(2), x.stride(3), y.stride(0), y.stride(1), y.stride(2), y.stride(3));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}
