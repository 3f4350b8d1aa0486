// Interface between the ATen-facing op files (adaln.cpp, vq.cpp) and the SIMD kernels.
//
// The kernels live in cpu_kernels_impl.h, which is compiled three times (cpu_kernels_base.cpp,
// cpu_kernels_avx2.cpp, cpu_kernels_avx512.cpp), each under its own `#pragma GCC target`, into its
// own namespace; `kernels()` picks the best table the running CPU supports. setup.py builds every
// file with the same flags (no -march), so this runtime dispatch is what gives AVX2/AVX-512 code.
// Only plain C types cross this boundary: the kernel files include no ATen or STL headers, so no
// inline function compiled for AVX-512 can be merged by the linker into code that runs elsewhere.
#pragma once

#include <cstdint>

namespace lam_fast {
namespace cpu {

enum class DType : int { F32 = 0, BF16 = 1, F16 = 2 };

// x, out: (rows, C) with rows = B*T*N; shift, scale: (rows / N, C); mean, rstd: (rows,) fp32.
struct AdalnFwdArgs {
  DType dtype;
  const void* x;
  const void* shift;
  const void* scale;
  void* out;
  float* mean;
  float* rstd;
  int64_t N, C;
  float eps;
};

// One task = rows [s*chunk_rows, (s+1)*chunk_rows) of frame f, task id f*chunks + s; each task
// writes its own partial sums part_*[task, :], reduced over s afterwards in a fixed order. The
// per-frame sums over N tokens accumulate in float64, so they round once, when stored.
struct AdalnBwdArgs {
  DType dtype;
  const void* grad_out;
  const void* x;
  const void* scale;
  const float* mean;
  const float* rstd;
  void* grad_x;
  double* part_shift;
  double* part_scale;
  int64_t N, C, chunk_rows, chunks;
};

struct GatedFwdArgs {
  DType dtype;
  const void* x;
  const void* y;
  const void* gate;
  void* out;
  int64_t N, C;
};

struct GatedBwdArgs {
  DType dtype;
  const void* grad_out;
  const void* y;
  const void* gate;
  void* grad_y;
  double* part_gate;
  int64_t N, C, chunk_rows, chunks;
};

// Codebook packed in groups of kVqGroup codes: packed[g][d][j] = code (g*kVqGroup + j), coordinate
// d (zero for padding codes); ccf[g*kVqGroup + j] = |c|^2 rounded to fp32 (+inf for padding).
constexpr int kVqGroup = 32;

struct VqScanArgs {
  const float* packed;
  const float* ccf;
  int64_t groups, D, groups_per_block;
};

// Called when some code of a group may beat row `row`'s threshold: e[j] = |c_k|^2 - 2 x.c_k (fp32)
// for k = k0 + j, j < kVqGroup. It may lower thr[row].
using VqUpdateFn = void (*)(void* ctx, int64_t row, const float* e, int64_t k0);

struct KernelTable {
  const char* name;
  int vq_rows_per_tile;  // the caller pads the x rows it passes to vq_scan to a multiple of this
  void (*adaln_fwd)(const AdalnFwdArgs&, int64_t row_begin, int64_t row_end);
  void (*adaln_bwd)(const AdalnBwdArgs&, int64_t task_begin, int64_t task_end);
  void (*gated_fwd)(const GatedFwdArgs&, int64_t row_begin, int64_t row_end);
  void (*gated_bwd)(const GatedBwdArgs&, int64_t task_begin, int64_t task_end);
  // out[f, :] = sum over s < chunks of part[f*chunks + s, :], for frames f in [begin, end).
  void (*reduce_partials)(DType, const double* part, int64_t chunks, int64_t C, void* out, int64_t begin, int64_t end);
  // Scans all codes for x rows xs[0:rows_padded, :] (fp32, row stride D), calling `update` for rows
  // below rows_valid whose group minimum is <= thr[row].
  void (*vq_scan)(const VqScanArgs&, const float* xs, int64_t rows_padded, int64_t rows_valid, const float* thr,
                  void* ctx, VqUpdateFn update);
  // Attention row passes over fp32 score tiles (rows x cols, row stride ld), see attention.cpp.
  // Online softmax step: updates the running row max m and sum l, writes exp(s - m) and each row's
  // rescaling factor alpha for the output accumulator.
  void (*attn_softmax_online)(float* s, int64_t rows, int64_t cols, int64_t ld, float* m, float* l, float* alpha);
  // Softmax backward: p <- exp(p - lse[row]) (scores in, probabilities out), dp <- p * (dp - delta[row]).
  void (*attn_softmax_bwd)(float* p, float* dp, int64_t rows, int64_t cols, int64_t ld, const float* lse,
                           const float* delta);
  // dst (rows x cols of dtype, row stride ldd) <- src (fp32, row stride lds), rounded to nearest even.
  void (*attn_round)(DType, const float* src, int64_t rows, int64_t cols, int64_t lds, void* dst, int64_t ldd);
};

namespace base {
extern const KernelTable table;
}
#if defined(__x86_64__)
namespace avx2 {
extern const KernelTable table;
}
namespace avx512 {
extern const KernelTable table;
}
#endif

// The table in use (best supported by this CPU unless overridden with set_capability).
const KernelTable& kernels();
// Names of the tables this CPU can run, best first.
const char* const* supported_capabilities(int* count);
// Selects a table by name; returns false if unknown or unsupported here.
bool set_capability(const char* name);

}  // namespace cpu
}  // namespace lam_fast
