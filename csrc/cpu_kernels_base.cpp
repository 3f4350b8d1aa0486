// Kernels compiled for the "base" CPU capability (see cpu_kernels_impl.h).
// Baseline capability: no target pragma (SSE2 on x86-64, NEON on AArch64).
#include <cstdint>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu_kernels.h"
#define LAM_ARCH base
#define LAM_ARCH_NAME "base"
#define LAM_W 4
#define LAM_VQ_MR 1
#include "cpu_kernels_impl.h"
