// Kernels compiled for the "avx2" CPU capability (see cpu_kernels_impl.h).
#if defined(__x86_64__)
// System headers first, so that only this file's own code is compiled for the target below.
#include <cstdint>
#include <cstring>
#include <immintrin.h>

#include "cpu_kernels.h"
#pragma GCC target("avx2,fma,f16c")
#define LAM_ARCH avx2
#define LAM_ARCH_NAME "avx2"
#define LAM_W 8
#define LAM_VQ_MR 3
#include "cpu_kernels_impl.h"
#endif
