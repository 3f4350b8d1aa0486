// CPU (OpenMP + SIMD) frame-wise AdaLN modulation and gated residual: lam_fast::adaln_modulate_*,
// lam_fast::gated_residual_*. Shapes: x, y: (B, T*N, C); shift, scale, gate: (B, T, C).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "cpu_common.h"

namespace lam_fast {
namespace {

using at::Tensor;

int64_t grain_rows(int64_t C) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1)); }

std::tuple<Tensor, Tensor, Tensor> adaln_modulate_fwd_cpu(const Tensor& x_, const Tensor& shift_, const Tensor& scale_,
                                                          int64_t frame_tokens, double eps) {
  constexpr const char* op = "lam_fast::adaln_modulate_fwd";
  check_cpu(x_, op, "x");
  const cpu::DType dtype = kernel_dtype(x_, op, "x");
  const int64_t frames = check_frames(x_, frame_tokens, op);
  check_per_frame(shift_, x_, frames, op, "shift");
  check_per_frame(scale_, x_, frames, op, "scale");
  TORCH_CHECK(eps >= 0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);

  const Tensor x = x_.contiguous(), shift = shift_.contiguous(), scale = scale_.contiguous();
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  Tensor out = at::empty({B, L, C}, x.options());
  Tensor mean = at::empty({B, L}, x.options().dtype(at::kFloat));
  Tensor rstd = at::empty({B, L}, x.options().dtype(at::kFloat));
  if (B * L == 0) return {out, mean, rstd};
  if (C == 0) {  // LayerNorm over nothing: define mean 0, var 0
    mean.zero_();
    rstd.fill_(1.0 / std::sqrt(eps));
    return {out, mean, rstd};
  }

  const cpu::AdalnFwdArgs args{dtype,
                               x.const_data_ptr(),
                               shift.const_data_ptr(),
                               scale.const_data_ptr(),
                               out.mutable_data_ptr(),
                               mean.mutable_data_ptr<float>(),
                               rstd.mutable_data_ptr<float>(),
                               frame_tokens,
                               C,
                               static_cast<float>(eps)};
  const cpu::KernelTable& k = cpu::kernels();
  at::parallel_for(0, B * L, grain_rows(C), [&](int64_t begin, int64_t end) { k.adaln_fwd(args, begin, end); });
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor> adaln_modulate_bwd_cpu(const Tensor& grad_out_, const Tensor& x_,
                                                          const Tensor& scale_, const Tensor& mean_,
                                                          const Tensor& rstd_, int64_t frame_tokens) {
  constexpr const char* op = "lam_fast::adaln_modulate_bwd";
  check_cpu(x_, op, "x");
  const cpu::DType dtype = kernel_dtype(x_, op, "x");
  const int64_t frames = check_frames(x_, frame_tokens, op);
  check_cpu(grad_out_, op, "grad_out");
  check_same_dtype(grad_out_, x_, op, "grad_out");
  TORCH_CHECK(grad_out_.sizes() == x_.sizes(), op, ": grad_out must have x's shape ", x_.sizes(), ", got ",
              grad_out_.sizes());
  check_per_frame(scale_, x_, frames, op, "scale");
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{mean_, "mean"}, {rstd_, "rstd"}}) {
    check_cpu(t, op, name);
    TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
    TORCH_CHECK(t.dim() == 2 && t.size(0) == x_.size(0) && t.size(1) == x_.size(1), op, ": ", name,
                " must be (B, T*N) = (", x_.size(0), ", ", x_.size(1), "), got ", t.sizes());
  }

  const Tensor g = grad_out_.contiguous(), x = x_.contiguous(), scale = scale_.contiguous();
  const Tensor mean = mean_.contiguous(), rstd = rstd_.contiguous();
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  Tensor grad_x = at::empty({B, L, C}, x.options());
  Tensor grad_shift = at::empty({B, frames, C}, x.options());
  Tensor grad_scale = at::empty({B, frames, C}, x.options());
  if (grad_shift.numel() == 0) return {grad_x, grad_shift, grad_scale};  // no frames, or C == 0

  const int64_t chunk_rows = std::min(frame_tokens, kBwdChunkRows);
  const int64_t chunks = (frame_tokens + chunk_rows - 1) / chunk_rows;
  const int64_t tasks = B * frames * chunks;
  Tensor part_shift = at::empty({tasks, C}, x.options().dtype(at::kDouble));
  Tensor part_scale = at::empty({tasks, C}, x.options().dtype(at::kDouble));
  const cpu::AdalnBwdArgs args{dtype,
                               g.const_data_ptr(),
                               x.const_data_ptr(),
                               scale.const_data_ptr(),
                               mean.const_data_ptr<float>(),
                               rstd.const_data_ptr<float>(),
                               grad_x.mutable_data_ptr(),
                               part_shift.mutable_data_ptr<double>(),
                               part_scale.mutable_data_ptr<double>(),
                               frame_tokens,
                               C,
                               chunk_rows,
                               chunks};
  const cpu::KernelTable& k = cpu::kernels();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) { k.adaln_bwd(args, begin, end); });
  at::parallel_for(0, B * frames, std::max<int64_t>(1, 4096 / (chunks * C)), [&](int64_t begin, int64_t end) {
    k.reduce_partials(dtype, part_shift.const_data_ptr<double>(), chunks, C, grad_shift.mutable_data_ptr(), begin, end);
    k.reduce_partials(dtype, part_scale.const_data_ptr<double>(), chunks, C, grad_scale.mutable_data_ptr(), begin, end);
  });
  return {grad_x, grad_shift, grad_scale};
}

Tensor gated_residual_fwd_cpu(const Tensor& x_, const Tensor& y_, const Tensor& gate_, int64_t frame_tokens) {
  constexpr const char* op = "lam_fast::gated_residual_fwd";
  check_cpu(x_, op, "x");
  const cpu::DType dtype = kernel_dtype(x_, op, "x");
  const int64_t frames = check_frames(x_, frame_tokens, op);
  check_cpu(y_, op, "y");
  check_same_dtype(y_, x_, op, "y");
  TORCH_CHECK(y_.sizes() == x_.sizes(), op, ": y must have x's shape ", x_.sizes(), ", got ", y_.sizes());
  check_per_frame(gate_, x_, frames, op, "gate");

  const Tensor x = x_.contiguous(), y = y_.contiguous(), gate = gate_.contiguous();
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  Tensor out = at::empty({B, L, C}, x.options());
  if (out.numel() == 0) return out;
  const cpu::GatedFwdArgs args{dtype, x.const_data_ptr(), y.const_data_ptr(), gate.const_data_ptr(),
                               out.mutable_data_ptr(), frame_tokens, C};
  const cpu::KernelTable& k = cpu::kernels();
  at::parallel_for(0, B * L, grain_rows(C), [&](int64_t begin, int64_t end) { k.gated_fwd(args, begin, end); });
  return out;
}

// grad_x of x + gate*y is grad_out itself; the autograd formula passes it through without a copy.
std::tuple<Tensor, Tensor> gated_residual_bwd_cpu(const Tensor& grad_out_, const Tensor& y_, const Tensor& gate_,
                                                  int64_t frame_tokens) {
  constexpr const char* op = "lam_fast::gated_residual_bwd";
  check_cpu(y_, op, "y");
  const cpu::DType dtype = kernel_dtype(y_, op, "y");
  const int64_t frames = check_frames(y_, frame_tokens, op);
  check_cpu(grad_out_, op, "grad_out");
  check_same_dtype(grad_out_, y_, op, "grad_out");
  TORCH_CHECK(grad_out_.sizes() == y_.sizes(), op, ": grad_out must have y's shape ", y_.sizes(), ", got ",
              grad_out_.sizes());
  check_per_frame(gate_, y_, frames, op, "gate");

  const Tensor g = grad_out_.contiguous(), y = y_.contiguous(), gate = gate_.contiguous();
  const int64_t B = y.size(0), L = y.size(1), C = y.size(2);
  Tensor grad_y = at::empty({B, L, C}, y.options());
  Tensor grad_gate = at::empty({B, frames, C}, y.options());
  if (grad_gate.numel() == 0) return {grad_y, grad_gate};

  const int64_t chunk_rows = std::min(frame_tokens, kBwdChunkRows);
  const int64_t chunks = (frame_tokens + chunk_rows - 1) / chunk_rows;
  const int64_t tasks = B * frames * chunks;
  Tensor part_gate = at::empty({tasks, C}, y.options().dtype(at::kDouble));
  const cpu::GatedBwdArgs args{dtype,
                               g.const_data_ptr(),
                               y.const_data_ptr(),
                               gate.const_data_ptr(),
                               grad_y.mutable_data_ptr(),
                               part_gate.mutable_data_ptr<double>(),
                               frame_tokens,
                               C,
                               chunk_rows,
                               chunks};
  const cpu::KernelTable& k = cpu::kernels();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) { k.gated_bwd(args, begin, end); });
  at::parallel_for(0, B * frames, std::max<int64_t>(1, 4096 / (chunks * C)), [&](int64_t begin, int64_t end) {
    k.reduce_partials(dtype, part_gate.const_data_ptr<double>(), chunks, C, grad_gate.mutable_data_ptr(), begin, end);
  });
  return {grad_y, grad_gate};
}

}  // namespace
}  // namespace lam_fast

TORCH_LIBRARY_IMPL(lam_fast, CPU, m) {
  m.impl("adaln_modulate_fwd", &lam_fast::adaln_modulate_fwd_cpu);
  m.impl("adaln_modulate_bwd", &lam_fast::adaln_modulate_bwd_cpu);
  m.impl("gated_residual_fwd", &lam_fast::gated_residual_fwd_cpu);
  m.impl("gated_residual_bwd", &lam_fast::gated_residual_bwd_cpu);
}
