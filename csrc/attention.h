// Which GEMM the CPU attention kernels (attention.cpp) use for their tiles.
#pragma once

namespace lam_fast {

// True when libtorch_cpu exports a BLAS sgemm_ (MKL in the x86 wheels).
bool attention_blas_available();
// "blas" or "portable" (the plain loop used when no BLAS is linked; selectable for tests).
const char* attention_gemm();
// Select "blas" (if available) or "portable"; false for an unknown or unavailable name.
bool set_attention_gemm(const char* name);

}  // namespace lam_fast
