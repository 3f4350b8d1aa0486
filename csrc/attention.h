// Which GEMM the CPU attention kernels (attention.cpp) use for their tiles.
#pragma once

namespace lam_fast {

// True when libtorch_cpu exports a BLAS sgemm_ (MKL in the x86 wheels).
bool attention_blas_available();
// "blas" or "portable" (the plain loop used when no BLAS is linked; selectable for tests).
const char* attention_gemm();
// Select "blas" (if available) or "portable"; false for an unknown or unavailable name.
bool set_attention_gemm(const char* name);
// How the blas GEMM multiplies bfloat16 tiles: "native" (MKL cblas_gemm_bf16bf16f32; the default
// where the CPU has AMX-BF16) or "widened" (the tiles widened to fp32, exactly, for sgemm; the
// default elsewhere: on AVX-512 BF16 without AMX, e.g. Zen 5, MKL's bf16 GEMM ran at less than
// half of sgemm's rate at attention tile shapes).
const char* attention_bf16_gemm();
bool set_attention_bf16_gemm(const char* name);

}  // namespace lam_fast
