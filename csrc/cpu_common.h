// Helpers shared by the ATen-facing CPU op files.
#pragma once

#include <ATen/ATen.h>

#include "cpu_kernels.h"

namespace lam_fast {

inline cpu::DType kernel_dtype(const at::Tensor& t, const char* op, const char* arg) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return cpu::DType::F32;
    case at::kBFloat16:
      return cpu::DType::BF16;
    case at::kHalf:
      return cpu::DType::F16;
    default:
      TORCH_CHECK(false, op, ": ", arg, " must be float32, bfloat16 or float16, got ", t.scalar_type());
  }
}

inline void check_cpu(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", arg, " must be a CPU tensor, got ", t.device());
}

inline void check_same_dtype(const at::Tensor& t, const at::Tensor& like, const char* op, const char* arg) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", arg, " has dtype ", t.scalar_type(), ", expected ",
              like.scalar_type());
}

// x: (B, T*N, C) with N = frame_tokens; returns T.
inline int64_t check_frames(const at::Tensor& x, int64_t frame_tokens, const char* op) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be (B, T*N, C), got ", x.sizes());
  TORCH_CHECK(frame_tokens >= 1 && x.size(1) % frame_tokens == 0, op, ": frame_tokens=", frame_tokens,
              " must be a positive divisor of T*N=", x.size(1));
  return x.size(1) / frame_tokens;
}

inline void check_per_frame(const at::Tensor& t, const at::Tensor& x, int64_t frames, const char* op, const char* arg) {
  check_cpu(t, op, arg);
  check_same_dtype(t, x, op, arg);
  TORCH_CHECK(t.dim() == 3 && t.size(0) == x.size(0) && t.size(1) == frames && t.size(2) == x.size(2), op, ": ", arg,
              " must be (B, T, C) = (", x.size(0), ", ", frames, ", ", x.size(2), "), got ", t.sizes());
}

// Rows per backward task: fixed, so per-frame reductions (and their rounding) do not depend on the
// batch size or the thread count.
constexpr int64_t kBwdChunkRows = 64;

}  // namespace lam_fast
