// CUDA nearest-code search: the CUDA kernel of lam_fast::vq_nearest(x: (M, D), codebook: (K, D)).
//
// Same contract and method as the CPU kernel (csrc/vq.cpp): the reference's nearest code (ties to the
// lowest index, a NaN distance wins, as torch.argmin), found with fp32 tiles plus a rigorous bound:
//   pass 1: fp32 e_k = |c_k|^2 - 2 x.c_k over all codes, per-row minimum;
//   pass 2: the same tiles again; codes with e_k <= min + 2b (b bounds |e_hat - e| for any fp32
//           evaluation order, so the exact winner and the reference's near-tie window are always
//           among them) are ranked by sum_d (x_d - c_d)^2 in float64, in index order, as the
//           reference ranks its near ties (identical codes tie exactly).
// Rows with non-finite or huge values (and every row, if the codebook has such values) evaluate
// every code by the float64 expanded distance |x|^2 - 2 x.c + |c|^2 and take its first minimum
// (the reference's answer except at near ties of such rows, which it also re-ranks). A block owns 64 rows and streams the codebook through shared memory in
// 64-code x 16-dim tiles; each thread holds a 4 x 4 register tile. Nothing M x K is allocated.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cfloat>
#include <cstdint>

namespace lam_fast {
namespace {

using at::Tensor;

constexpr int kBM = 64;        // rows per block
constexpr int kBN = 64;        // codes per tile
constexpr int kBK = 16;        // dimensions per tile
constexpr int kThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each
constexpr double kFastNormSqMax = 1e30;

template <typename T>
__device__ __forceinline__ float ld(const T* p) {
  return static_cast<float>(*p);
}

// acc[i][j] = x[row0 + ty*4 + i] . codebook[n0 + tx*4 + j] in fp32 (zero outside the matrices).
template <typename T>
__device__ __forceinline__ void tile_dots(const T* __restrict__ x, const T* __restrict__ cb, int64_t M, int64_t K,
                                          int64_t D, int64_t row0, int64_t n0, float (*xs)[kBM + 4],
                                          float (*cs)[kBN + 4], float acc[4][4]) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  for (int64_t d0 = 0; d0 < D; d0 += kBK) {
#pragma unroll
    for (int l = 0; l < (kBM * kBK) / kThreads; ++l) {
      const int idx = threadIdx.x + l * kThreads;
      const int r = idx / kBK, kk = idx % kBK;
      const int64_t row = row0 + r, d = d0 + kk;
      xs[kk][r] = (row < M && d < D) ? ld(x + row * D + d) : 0.f;
      const int64_t code = n0 + r;
      cs[kk][r] = (code < K && d < D) ? ld(cb + code * D + d) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = cs[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
}

template <typename T>
__device__ double distance64(const T* __restrict__ xr, const T* __restrict__ cr, int64_t D, double xx, double cc) {
  double dot = 0.0;
  for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(ld(xr + d)) * static_cast<double>(ld(cr + d));
  return (xx - 2.0 * dot) + cc;
}

// The reference's tie-breaking distance: sum_d (x_d - c_d)^2 in float64, in index order.
template <typename T>
__device__ double squared_difference64(const T* __restrict__ xr, const T* __restrict__ cr, int64_t D) {
  double s = 0.0;
  for (int64_t d = 0; d < D; ++d) {
    const double diff = static_cast<double>(ld(xr + d)) - static_cast<double>(ld(cr + d));
    s += diff * diff;
  }
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    vq_nearest_kernel(const T* __restrict__ x, const T* __restrict__ cb, const double* __restrict__ xx,
                      const double* __restrict__ cc, const float* __restrict__ ccf,
                      const double* __restrict__ cc_max_p, const bool* __restrict__ cb_finite_p, int64_t M,
                      int64_t K, int64_t D, int64_t* __restrict__ out) {
  __shared__ float xs[kBK][kBM + 4];
  __shared__ float cs[kBK][kBN + 4];
  __shared__ float red_e[kBM][16];
  __shared__ double red_d[kBM][16];
  __shared__ int64_t red_k[kBM][16];
  __shared__ int64_t red_nan[kBM][16];
  __shared__ float thr_s[kBM];
  __shared__ bool exact_s[kBM];

  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const double cc_max = *cc_max_p;
  const bool codebook_fast = *cb_finite_p && cc_max <= kFastNormSqMax;

  // Pass 1: per-row minimum of the fp32 e over all codes.
  float best[4] = {FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX};
  float acc[4][4];
  for (int64_t n0 = 0; n0 < K; n0 += kBN) {
    tile_dots(x, cb, M, K, D, row0, n0, xs, cs, acc);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t k = n0 + tx * 4 + j;
      if (k < K) {
#pragma unroll
        for (int i = 0; i < 4; ++i) best[i] = fminf(best[i], ccf[k] - 2.f * acc[i][j]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) red_e[ty * 4 + i][tx] = best[i];
  __syncthreads();
  if (threadIdx.x < kBM) {
    const int r = threadIdx.x;
    const int64_t row = row0 + r;
    float m = red_e[r][0];
    for (int t = 1; t < 16; ++t) m = fminf(m, red_e[r][t]);
    const double s = row < M ? xx[row] : 0.0;
    exact_s[r] = !(codebook_fast && isfinite(s) && s <= kFastNormSqMax);
    // |e_hat - e| <= b for every code and any fp32 evaluation order (flush-to-zero included).
    const double u = 0x1p-24, x_norm = sqrt(s), c_norm = sqrt(cc_max);
    const double b = u * (2.0 * cc_max + (2.0 * D + 4.0) * x_norm * c_norm) * 1.0625 + 2e-37 * (D + 2);
    const double slack = 2.0 * b + 0x1p-45 * (D + 4) * (s + 2.0 * x_norm * c_norm + cc_max);
    thr_s[r] = nextafterf(static_cast<float>(static_cast<double>(m) + slack), __int_as_float(0x7f800000));  // toward +inf
  }
  __syncthreads();

  // Pass 2: float64 re-evaluation of the candidates; first minimum, NaN first.
  double best_d[4];
  int64_t best_k[4], nan_k[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    best_d[i] = 0.0;
    best_k[i] = K;  // none yet
    nan_k[i] = K;
  }
  for (int64_t n0 = 0; n0 < K; n0 += kBN) {
    tile_dots(x, cb, M, K, D, row0, n0, xs, cs, acc);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = ty * 4 + i;
      const int64_t row = row0 + r;
      if (row >= M) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t k = n0 + tx * 4 + j;
        if (k >= K) continue;
        if (!(exact_s[r] || ccf[k] - 2.f * acc[i][j] <= thr_s[r])) continue;
        const double dist = exact_s[r] ? distance64(x + row * D, cb + k * D, D, xx[row], cc[k])
                                       : squared_difference64(x + row * D, cb + k * D, D);
        if (isnan(dist)) {
          nan_k[i] = k < nan_k[i] ? k : nan_k[i];
        } else if (best_k[i] == K || dist < best_d[i]) {  // k increases within a thread
          best_d[i] = dist;
          best_k[i] = k;
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    red_d[ty * 4 + i][tx] = best_d[i];
    red_k[ty * 4 + i][tx] = best_k[i];
    red_nan[ty * 4 + i][tx] = nan_k[i];
  }
  __syncthreads();
  if (threadIdx.x < kBM && row0 + threadIdx.x < M) {
    const int r = threadIdx.x;
    double d = 0.0;
    int64_t k = K, first_nan = K;
    for (int t = 0; t < 16; ++t) {
      first_nan = red_nan[r][t] < first_nan ? red_nan[r][t] : first_nan;
      const int64_t kt = red_k[r][t];
      if (kt == K) continue;
      if (k == K || red_d[r][t] < d || (red_d[r][t] == d && kt < k)) {
        d = red_d[r][t];
        k = kt;
      }
    }
    out[row0 + r] = first_nan < K ? first_nan : k;
  }
}

Tensor vq_nearest_cuda(const Tensor& x_, const Tensor& codebook_) {
  constexpr const char* op = "lam_fast::vq_nearest";
  TORCH_CHECK(x_.is_cuda() && codebook_.is_cuda() && x_.device() == codebook_.device(), op,
              ": x and codebook must be on the same CUDA device, got ", x_.device(), " and ", codebook_.device());
  const auto st = x_.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf, op,
              ": x must be float32, bfloat16 or float16, got ", st);
  TORCH_CHECK(codebook_.scalar_type() == st, op, ": codebook has dtype ", codebook_.scalar_type(), ", expected ", st);
  TORCH_CHECK(x_.dim() == 2 && codebook_.dim() == 2 && x_.size(1) == codebook_.size(1), op,
              ": x must be (M, D) and codebook (K, D), got ", x_.sizes(), " and ", codebook_.sizes());
  TORCH_CHECK(codebook_.size(0) >= 1, op, ": the codebook is empty");
  const c10::cuda::CUDAGuard guard(x_.device());
  const Tensor x = x_.contiguous(), cb = codebook_.contiguous();
  const int64_t M = x.size(0), K = cb.size(0), D = x.size(1);
  Tensor out = at::empty({M}, x.options().dtype(at::kLong));
  if (M == 0) return out;
  // |x|^2 and |c|^2 in float64 exactly as the reference computes them; the rest stays on device.
  const Tensor xx = x.to(at::kDouble).square().sum(1);
  const Tensor cc = cb.to(at::kDouble).square().sum(1);
  const Tensor ccf = cc.to(at::kFloat);
  const Tensor cc_max = cc.max();
  const Tensor cb_finite = cc.isfinite().all();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const unsigned blocks = static_cast<unsigned>((M + kBM - 1) / kBM);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "vq_nearest_cuda", [&] {
    vq_nearest_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), cb.const_data_ptr<scalar_t>(), xx.const_data_ptr<double>(),
        cc.const_data_ptr<double>(), ccf.const_data_ptr<float>(), cc_max.const_data_ptr<double>(),
        cb_finite.const_data_ptr<bool>(), M, K, D, out.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace lam_fast

TORCH_LIBRARY_IMPL(lam_fast, CUDA, m) { m.impl("vq_nearest", &lam_fast::vq_nearest_cuda); }
