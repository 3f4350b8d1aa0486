// Kernels compiled for the "avx512" CPU capability (see cpu_kernels_impl.h).
#if defined(__x86_64__)
// System headers first, so that only this file's own code is compiled for the target below.
#include <cstdint>
#include <cstring>
#include <immintrin.h>

#include "cpu_kernels.h"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#define LAM_ARCH avx512
#define LAM_ARCH_NAME "avx512"
#define LAM_W 16
#define LAM_VQ_MR 12
#include "cpu_kernels_impl.h"
#endif
