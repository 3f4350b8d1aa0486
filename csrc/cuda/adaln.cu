// CUDA frame-wise AdaLN modulation and gated residual: the CUDA kernels of the lam_fast::
// adaln_modulate_{fwd,bwd} and gated_residual_{fwd,bwd} ops (schemas in csrc/module.cpp, CPU
// versions and the exact contract in csrc/adaln.cpp). x, y: (B, T*N, C); shift, scale, gate: (B, T, C).
//
// Rows (tokens) are handled one warp each; the per-frame reductions over N tokens run in a second
// kernel with a thread per channel and float64 accumulators, so no atomics and a fixed summation
// order (deterministic). Math is fp32 with the centred two-pass row statistics of the CPU kernels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>

namespace lam_fast {
namespace {

using at::Tensor;

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // warps per block in the row kernels
constexpr int kReduceRows = 8;    // token groups per block in the frame-reduction kernels

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ float ld(const T* p) {
  return static_cast<float>(*p);
}

template <typename T>
__global__ void adaln_fwd_kernel(const T* __restrict__ x, const T* __restrict__ shift, const T* __restrict__ scale,
                                 T* __restrict__ out, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                 int64_t rows, int64_t N, int64_t C, float eps) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const T* xr = x + row * C;
  const T* sh = shift + (row / N) * C;
  const T* sc = scale + (row / N) * C;
  T* o = out + row * C;

  // Corrected two-pass statistics: mean0, then sums of d = x - mean0 (cancellation-free).
  float s = 0.f;
  for (int64_t c = lane; c < C; c += kWarp) s += ld(xr + c);
  const float fC = static_cast<float>(C);
  const float mean0 = __fdiv_rn(warp_sum(s), fC);  // _rn: exact division even under --use_fast_math
  float s1 = 0.f, s2 = 0.f;
  for (int64_t c = lane; c < C; c += kWarp) {
    const float d = ld(xr + c) - mean0;
    s1 += d;
    s2 += d * d;
  }
  s1 = warp_sum(s1);
  s2 = warp_sum(s2);
  const float mean = mean0 + __fdiv_rn(s1, fC);
  const float var = fmaxf(__fdiv_rn(s2 - __fdiv_rn(s1 * s1, fC), fC), 0.f);
  const float rstd = static_cast<float>(1.0 / sqrt(static_cast<double>(var) + static_cast<double>(eps)));
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
  for (int64_t c = lane; c < C; c += kWarp) {
    const float xhat = (ld(xr + c) - mean) * rstd;
    o[c] = static_cast<T>(xhat * (1.f + ld(sc + c)) + ld(sh + c));
  }
}

// grad_x row by row; also writes each row's centre (the saved mean's rounding error), which the
// frame-reduction kernel uses so that both see the same xhat.
template <typename T>
__global__ void adaln_bwd_rows_kernel(const T* __restrict__ grad_out, const T* __restrict__ x,
                                      const T* __restrict__ scale, const float* __restrict__ mean,
                                      const float* __restrict__ rstd, T* __restrict__ grad_x,
                                      float* __restrict__ centre_out, int64_t rows, int64_t N, int64_t C) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const T* g = grad_out + row * C;
  const T* xr = x + row * C;
  const T* sc = scale + (row / N) * C;
  T* gx = grad_x + row * C;
  const float m = mean[row], r = rstd[row];

  float sum_d = 0.f, sum1 = 0.f, sum2 = 0.f;
  for (int64_t c = lane; c < C; c += kWarp) {
    const float d = ld(xr + c) - m;
    const float gxhat = __fmul_rn(ld(g + c), 1.f + ld(sc + c));
    sum_d += d;
    sum1 += gxhat;
    sum2 += gxhat * d;
  }
  sum_d = warp_sum(sum_d);
  sum1 = warp_sum(sum1);
  sum2 = warp_sum(sum2);
  const float fC = static_cast<float>(C);
  const float centre = __fdiv_rn(sum_d, fC);
  const float m1 = __fdiv_rn(sum1, fC);
  const float m2 = __fdiv_rn(r * (sum2 - centre * sum1), fC);
  if (lane == 0) centre_out[row] = centre;
  for (int64_t c = lane; c < C; c += kWarp) {
    const float xhat = (ld(xr + c) - m - centre) * r;
    const float gxhat = __fmul_rn(ld(g + c), 1.f + ld(sc + c));
    gx[c] = static_cast<T>(r * (gxhat - m1 - xhat * m2));
  }
}

// grad_shift = sum_n g, grad_scale = sum_n g * xhat per (frame, channel).
template <typename T>
__global__ void adaln_bwd_frames_kernel(const T* __restrict__ grad_out, const T* __restrict__ x,
                                        const float* __restrict__ mean, const float* __restrict__ rstd,
                                        const float* __restrict__ centre, T* __restrict__ grad_shift,
                                        T* __restrict__ grad_scale, int64_t N, int64_t C) {
  __shared__ double part[2][kReduceRows][kWarp];
  const int64_t frame = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kWarp + threadIdx.x;
  double s_shift = 0.0, s_scale = 0.0;
  if (c < C) {
    for (int64_t n = threadIdx.y; n < N; n += kReduceRows) {
      const int64_t row = frame * N + n;
      const float g = ld(grad_out + row * C + c);
      const float xhat = (ld(x + row * C + c) - mean[row] - centre[row]) * rstd[row];
      s_shift += g;
      s_scale += static_cast<double>(g) * xhat;
    }
  }
  part[0][threadIdx.y][threadIdx.x] = s_shift;
  part[1][threadIdx.y][threadIdx.x] = s_scale;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int i = 1; i < kReduceRows; ++i) {
      s_shift += part[0][i][threadIdx.x];
      s_scale += part[1][i][threadIdx.x];
    }
    grad_shift[frame * C + c] = static_cast<T>(static_cast<float>(s_shift));
    grad_scale[frame * C + c] = static_cast<T>(static_cast<float>(s_scale));
  }
}

template <typename T>
__global__ void gated_fwd_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ gate,
                                 T* __restrict__ out, int64_t numel, int64_t N, int64_t C) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / C, c = i - row * C;
    out[i] = static_cast<T>(ld(x + i) + ld(gate + (row / N) * C + c) * ld(y + i));
  }
}

// grad_y = g * gate elementwise and grad_gate = sum_n g * y per (frame, channel), in one pass.
template <typename T>
__global__ void gated_bwd_kernel(const T* __restrict__ grad_out, const T* __restrict__ y, const T* __restrict__ gate,
                                 T* __restrict__ grad_y, T* __restrict__ grad_gate, int64_t N, int64_t C) {
  __shared__ double part[kReduceRows][kWarp];
  const int64_t frame = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kWarp + threadIdx.x;
  double s = 0.0;
  if (c < C) {
    const float gt = ld(gate + frame * C + c);
    for (int64_t n = threadIdx.y; n < N; n += kReduceRows) {
      const int64_t i = (frame * N + n) * C + c;
      const float g = ld(grad_out + i);
      grad_y[i] = static_cast<T>(g * gt);
      s += static_cast<double>(g) * ld(y + i);
    }
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int i = 1; i < kReduceRows; ++i) s += part[i][threadIdx.x];
    grad_gate[frame * C + c] = static_cast<T>(static_cast<float>(s));
  }
}

// ---- host side ----------------------------------------------------------------------------------

void check_cuda_dtype(const Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_cuda(), op, ": ", arg, " must be a CUDA tensor, got ", t.device());
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf, op, ": ", arg,
              " must be float32, bfloat16 or float16, got ", st);
}

void check_like(const Tensor& t, const Tensor& x, const char* op, const char* arg) {
  TORCH_CHECK(t.device() == x.device(), op, ": ", arg, " is on ", t.device(), ", x on ", x.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", arg, " has dtype ", t.scalar_type(), ", expected ",
              x.scalar_type());
}

int64_t check_frames(const Tensor& x, int64_t frame_tokens, const char* op) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be (B, T*N, C), got ", x.sizes());
  TORCH_CHECK(frame_tokens >= 1 && x.size(1) % frame_tokens == 0, op, ": frame_tokens=", frame_tokens,
              " must be a positive divisor of T*N=", x.size(1));
  return x.size(1) / frame_tokens;
}

void check_per_frame(const Tensor& t, const Tensor& x, int64_t frames, const char* op, const char* arg) {
  check_like(t, x, op, arg);
  TORCH_CHECK(t.dim() == 3 && t.size(0) == x.size(0) && t.size(1) == frames && t.size(2) == x.size(2), op, ": ", arg,
              " must be (B, T, C) = (", x.size(0), ", ", frames, ", ", x.size(2), "), got ", t.sizes());
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

dim3 frame_grid(int64_t frames, int64_t C) {
  return dim3(static_cast<unsigned>(frames), static_cast<unsigned>((C + kWarp - 1) / kWarp));
}

std::tuple<Tensor, Tensor, Tensor> adaln_modulate_fwd_cuda(const Tensor& x_, const Tensor& shift_,
                                                           const Tensor& scale_, int64_t frame_tokens, double eps) {
  constexpr const char* op = "lam_fast::adaln_modulate_fwd";
  check_cuda_dtype(x_, op, "x");
  const int64_t frames = check_frames(x_, frame_tokens, op);
  check_per_frame(shift_, x_, frames, op, "shift");
  check_per_frame(scale_, x_, frames, op, "scale");
  TORCH_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  const c10::cuda::CUDAGuard guard(x_.device());
  const Tensor x = x_.contiguous(), shift = shift_.contiguous(), scale = scale_.contiguous();
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  Tensor out = at::empty({B, L, C}, x.options());
  Tensor mean = at::empty({B, L}, x.options().dtype(at::kFloat));
  Tensor rstd = at::empty({B, L}, x.options().dtype(at::kFloat));
  if (B * L == 0) return {out, mean, rstd};
  if (C == 0) {
    mean.zero_();
    rstd.fill_(1.0 / std::sqrt(eps));
    return {out, mean, rstd};
  }
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaln_modulate_fwd_cuda", [&] {
    adaln_fwd_kernel<scalar_t><<<row_blocks(B * L), kRowsPerBlock * kWarp, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), shift.const_data_ptr<scalar_t>(), scale.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), mean.mutable_data_ptr<float>(), rstd.mutable_data_ptr<float>(), B * L,
        frame_tokens, C, static_cast<float>(eps));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> adaln_modulate_bwd_cuda(const Tensor& grad_out_, const Tensor& x_,
                                                           const Tensor& scale_, const Tensor& mean_,
                                                           const Tensor& rstd_, int64_t frame_tokens) {
  constexpr const char* op = "lam_fast::adaln_modulate_bwd";
  check_cuda_dtype(x_, op, "x");
  const int64_t frames = check_frames(x_, frame_tokens, op);
  check_like(grad_out_, x_, op, "grad_out");
  TORCH_CHECK(grad_out_.sizes() == x_.sizes(), op, ": grad_out must have x's shape ", x_.sizes(), ", got ",
              grad_out_.sizes());
  check_per_frame(scale_, x_, frames, op, "scale");
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{mean_, "mean"}, {rstd_, "rstd"}}) {
    TORCH_CHECK(t.device() == x_.device(), op, ": ", name, " is on ", t.device(), ", x on ", x_.device());
    TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
    TORCH_CHECK(t.dim() == 2 && t.size(0) == x_.size(0) && t.size(1) == x_.size(1), op, ": ", name,
                " must be (B, T*N) = (", x_.size(0), ", ", x_.size(1), "), got ", t.sizes());
  }
  const c10::cuda::CUDAGuard guard(x_.device());
  const Tensor g = grad_out_.contiguous(), x = x_.contiguous(), scale = scale_.contiguous();
  const Tensor mean = mean_.contiguous(), rstd = rstd_.contiguous();
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  Tensor grad_x = at::empty({B, L, C}, x.options());
  Tensor grad_shift = at::empty({B, frames, C}, x.options());
  Tensor grad_scale = at::empty({B, frames, C}, x.options());
  if (grad_shift.numel() == 0) return {grad_x, grad_shift, grad_scale};  // no frames, or C == 0
  Tensor centre = at::empty({B * L}, x.options().dtype(at::kFloat));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "adaln_modulate_bwd_cuda", [&] {
    adaln_bwd_rows_kernel<scalar_t><<<row_blocks(B * L), kRowsPerBlock * kWarp, 0, stream>>>(
        g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), scale.const_data_ptr<scalar_t>(),
        mean.const_data_ptr<float>(), rstd.const_data_ptr<float>(), grad_x.mutable_data_ptr<scalar_t>(),
        centre.mutable_data_ptr<float>(), B * L, frame_tokens, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    adaln_bwd_frames_kernel<scalar_t><<<frame_grid(B * frames, C), dim3(kWarp, kReduceRows), 0, stream>>>(
        g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), mean.const_data_ptr<float>(),
        rstd.const_data_ptr<float>(), centre.const_data_ptr<float>(), grad_shift.mutable_data_ptr<scalar_t>(),
        grad_scale.mutable_data_ptr<scalar_t>(), frame_tokens, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_shift, grad_scale};
}

Tensor gated_residual_fwd_cuda(const Tensor& x_, const Tensor& y_, const Tensor& gate_, int64_t frame_tokens) {
  constexpr const char* op = "lam_fast::gated_residual_fwd";
  check_cuda_dtype(x_, op, "x");
  const int64_t frames = check_frames(x_, frame_tokens, op);
  check_like(y_, x_, op, "y");
  TORCH_CHECK(y_.sizes() == x_.sizes(), op, ": y must have x's shape ", x_.sizes(), ", got ", y_.sizes());
  check_per_frame(gate_, x_, frames, op, "gate");
  const c10::cuda::CUDAGuard guard(x_.device());
  const Tensor x = x_.contiguous(), y = y_.contiguous(), gate = gate_.contiguous();
  Tensor out = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel();
  if (numel == 0) return out;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((numel + threads - 1) / threads, 65535LL * 8);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gated_residual_fwd_cuda", [&] {
    gated_fwd_kernel<scalar_t><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), numel, frame_tokens, x.size(2));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<Tensor, Tensor> gated_residual_bwd_cuda(const Tensor& grad_out_, const Tensor& y_, const Tensor& gate_,
                                                   int64_t frame_tokens) {
  constexpr const char* op = "lam_fast::gated_residual_bwd";
  check_cuda_dtype(y_, op, "y");
  const int64_t frames = check_frames(y_, frame_tokens, op);
  check_like(grad_out_, y_, op, "grad_out");
  TORCH_CHECK(grad_out_.sizes() == y_.sizes(), op, ": grad_out must have y's shape ", y_.sizes(), ", got ",
              grad_out_.sizes());
  check_per_frame(gate_, y_, frames, op, "gate");
  const c10::cuda::CUDAGuard guard(y_.device());
  const Tensor g = grad_out_.contiguous(), y = y_.contiguous(), gate = gate_.contiguous();
  const int64_t B = y.size(0), C = y.size(2);
  Tensor grad_y = at::empty(y.sizes(), y.options());
  Tensor grad_gate = at::empty({B, frames, C}, y.options());
  if (grad_gate.numel() == 0) return {grad_y, grad_gate};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "gated_residual_bwd_cuda", [&] {
    gated_bwd_kernel<scalar_t><<<frame_grid(B * frames, C), dim3(kWarp, kReduceRows), 0, stream>>>(
        g.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(),
        grad_y.mutable_data_ptr<scalar_t>(), grad_gate.mutable_data_ptr<scalar_t>(), frame_tokens, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_y, grad_gate};
}

}  // namespace
}  // namespace lam_fast

TORCH_LIBRARY_IMPL(lam_fast, CUDA, m) {
  m.impl("adaln_modulate_fwd", &lam_fast::adaln_modulate_fwd_cuda);
  m.impl("adaln_modulate_bwd", &lam_fast::adaln_modulate_bwd_cuda);
  m.impl("gated_residual_fwd", &lam_fast::gated_residual_fwd_cuda);
  m.impl("gated_residual_bwd", &lam_fast::gated_residual_bwd_cuda);
}
