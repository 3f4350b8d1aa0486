// SIMD kernel bodies, compiled once per CPU capability. The including file defines
//   LAM_ARCH  namespace name (base / avx2 / avx512)
//   LAM_W     fp32 lanes per vector: 16 means an AVX-512 target, 8 AVX2 + FMA + F16C, 4 the
//             baseline (SSE2 / NEON); GCC's target pragma does not define __AVX512F__ etc.
//   LAM_VQ_MR x rows per VQ register tile
// and sets `#pragma GCC target(...)` before including this file. Vectors are GCC vector extensions,
// so one body serves every width; fp16 <-> fp32 conversions use F16C / AVX-512 intrinsics where the
// target has them. Everything here has internal linkage except the exported table; no STL/ATen.
//
// Numerics (AdaLN / gated residual): elementwise arithmetic is fp32 (inputs converted on load,
// outputs rounded once on store, round-to-nearest-even); every reduction (LayerNorm row statistics,
// backward row sums over C, per-frame sums over N for grad_shift / grad_scale / grad_gate)
// accumulates in float64, so the statistics are (nearly) correctly rounded and cancellation in them
// costs nothing. VQ distances are fp32 here; vq.cpp makes the final choice exact (see there).

#include <cstdint>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu_kernels.h"

// Vector-typed helpers are always inlined, so the ABI notes GCC emits for them do not apply; GCC
// reports them at the end of the file, hence no diagnostic pop.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12's own AVX-512 intrinsics trip -Wmaybe-uninitialized (its _mm512_undefined_* idiom).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lam_fast {
namespace cpu {
namespace LAM_ARCH {
namespace {

#define LAM_INLINE inline __attribute__((always_inline))

constexpr int W = LAM_W;
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi32 __attribute__((vector_size(W * 4)));
typedef uint32_t vu32 __attribute__((vector_size(W * 4)));
typedef uint16_t vu16 __attribute__((vector_size(W * 2)));
typedef double vd __attribute__((vector_size(W * 4)));  // W/2 doubles: one register, like vf

// ---- element types: storage S, scalar and vector conversions ------------------------------------

struct F32 {
  using S = float;
};
struct BF16 {
  using S = uint16_t;
};
struct F16 {
  using S = uint16_t;
};

LAM_INLINE vf bitcast_f(vu32 u) {
  vf f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
LAM_INLINE vu32 bitcast_u(vf f) {
  vu32 u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
LAM_INLINE vf loadu(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
LAM_INLINE void storeu(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
LAM_INLINE vf vmin(vf a, vf b) { return a < b ? a : b; }
// v as float64: lanes [0, W/2) in lo, [W/2, W) in hi.
LAM_INLINE void widen(vf v, vd& lo, vd& hi) {
#if LAM_W == 16
  const __m512 r = (__m512)v;
  lo = (vd)_mm512_cvtps_pd(_mm512_castps512_ps256(r));
  hi = (vd)_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r), 1)));
#elif LAM_W == 8
  const __m256 r = (__m256)v;
  lo = (vd)_mm256_cvtps_pd(_mm256_castps256_ps128(r));
  hi = (vd)_mm256_cvtps_pd(_mm256_extractf128_ps(r, 1));
#elif LAM_W == 4
  typedef float v2f __attribute__((vector_size(8)));
  lo = __builtin_convertvector((v2f)__builtin_shufflevector(v, v, 0, 1), vd);
  hi = __builtin_convertvector((v2f)__builtin_shufflevector(v, v, 2, 3), vd);
#else
#error "widen: unsupported LAM_W / target"
#endif
}
LAM_INLINE vd loadu(const double* p) {
  vd v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
LAM_INLINE void storeu(double* p, vd v) { std::memcpy(p, &v, sizeof v); }
// p[0:W] += v (as float64).
LAM_INLINE void accumulate(double* p, vf v) {
  vd lo, hi;
  widen(v, lo, hi);
  storeu(p, loadu(p) + lo);
  storeu(p + W / 2, loadu(p + W / 2) + hi);
}

LAM_INLINE float to_f(F32, float v) { return v; }
LAM_INLINE float to_f(BF16, uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
LAM_INLINE float to_f(F16, uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return float(v);
}
LAM_INLINE float from_f(F32, float v) { return v; }
LAM_INLINE uint16_t from_f(BF16, float f) {
  if (f != f) return 0x7fc0;  // quiet NaN, as c10::BFloat16
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
LAM_INLINE uint16_t from_f(F16, float f) {
  _Float16 v = _Float16(f);
  uint16_t h;
  std::memcpy(&h, &v, 2);
  return h;
}

LAM_INLINE vf load(F32, const float* p) { return loadu(p); }
LAM_INLINE vf load(BF16, const uint16_t* p) {
#if LAM_W == 16
  return (vf)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16);
#elif LAM_W == 8
  return (vf)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
#else
  vu16 h;
  std::memcpy(&h, p, sizeof h);
  return bitcast_f(__builtin_convertvector(h, vu32) << 16);
#endif
}
LAM_INLINE vf load(F16, const uint16_t* p) {
#if LAM_W == 16
  __m512 r = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  vf v;
  std::memcpy(&v, &r, sizeof v);
  return v;
#elif LAM_W == 8
  __m256 r = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  vf v;
  std::memcpy(&v, &r, sizeof v);
  return v;
#else
  vf v;
  for (int i = 0; i < W; ++i) v[i] = to_f(F16{}, p[i]);
  return v;
#endif
}

LAM_INLINE void store(F32, float* p, vf v) { storeu(p, v); }
LAM_INLINE void store(BF16, uint16_t* p, vf v) {
  const vu32 u = bitcast_u(v);
  const vu32 nearest_even = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const vi32 is_nan = v != v;
  const vu32 bits = is_nan ? vu32{} + 0x7fc0u : nearest_even;
  const vu16 h = __builtin_convertvector(bits, vu16);
  std::memcpy(p, &h, sizeof h);
}
LAM_INLINE void store(F16, uint16_t* p, vf v) {
#if LAM_W == 16
  __m512 r;
  std::memcpy(&r, &v, sizeof r);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif LAM_W == 8
  __m256 r;
  std::memcpy(&r, &v, sizeof r);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  for (int i = 0; i < W; ++i) p[i] = from_f(F16{}, v[i]);
#endif
}

// Pins v's fp32 rounding: the compiler may not fuse the product that made v into a later FMA
// (-ffp-contract would otherwise let x*y - z keep x*y unrounded in one place and not another).
LAM_INLINE vf rounded(vf v) {
#if LAM_W == 16
  asm("" : "+v"(v));
#elif defined(__x86_64__)
  asm("" : "+x"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#endif
  return v;
}
LAM_INLINE float rounded(float v) {
#if defined(__x86_64__)
  asm("" : "+x"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#endif
  return v;
}

// Horizontal reductions by halving in registers (log2(lanes) shuffles).
typedef float f16v __attribute__((vector_size(64)));
typedef float f8v __attribute__((vector_size(32)));
typedef float f4v __attribute__((vector_size(16)));
typedef float f2v __attribute__((vector_size(8)));
typedef double d8v __attribute__((vector_size(64)));
typedef double d4v __attribute__((vector_size(32)));
typedef double d2v __attribute__((vector_size(16)));
#define LAM_LO8 0, 1, 2, 3, 4, 5, 6, 7
#define LAM_HI8 8, 9, 10, 11, 12, 13, 14, 15
LAM_INLINE f8v halves_sum(f16v v) { return __builtin_shufflevector(v, v, LAM_LO8) + __builtin_shufflevector(v, v, LAM_HI8); }
LAM_INLINE f4v halves_sum(f8v v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7); }
LAM_INLINE f2v halves_sum(f4v v) { return __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3); }
LAM_INLINE float hsum_all(f2v v) { return v[0] + v[1]; }
LAM_INLINE float hsum_all(f4v v) { return hsum_all(halves_sum(v)); }
LAM_INLINE float hsum_all(f8v v) { return hsum_all(halves_sum(v)); }
LAM_INLINE float hsum_all(f16v v) { return hsum_all(halves_sum(v)); }
LAM_INLINE f8v halves_min(f16v v) {
  const f8v lo = __builtin_shufflevector(v, v, LAM_LO8), hi = __builtin_shufflevector(v, v, LAM_HI8);
  return lo < hi ? lo : hi;
}
LAM_INLINE f4v halves_min(f8v v) {
  const f4v lo = __builtin_shufflevector(v, v, 0, 1, 2, 3), hi = __builtin_shufflevector(v, v, 4, 5, 6, 7);
  return lo < hi ? lo : hi;
}
LAM_INLINE float hmin_all(f4v v) {
  const f2v lo = __builtin_shufflevector(v, v, 0, 1), hi = __builtin_shufflevector(v, v, 2, 3);
  const f2v m = lo < hi ? lo : hi;
  return m[0] < m[1] ? m[0] : m[1];
}
LAM_INLINE float hmin_all(f8v v) { return hmin_all(halves_min(v)); }
LAM_INLINE float hmin_all(f16v v) { return hmin_all(halves_min(v)); }
LAM_INLINE double hsum_all(d2v v) { return v[0] + v[1]; }
LAM_INLINE double hsum_all(d4v v) { return hsum_all(__builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3)); }
LAM_INLINE double hsum_all(d8v v) {
  return hsum_all(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7));
}
#undef LAM_LO8
#undef LAM_HI8
LAM_INLINE float hsum(vf v) { return hsum_all(v); }
LAM_INLINE double hsum(vd v) { return hsum_all(v); }
LAM_INLINE float hmin(vf v) { return hmin_all(v); }

// Calls f(E{}) with the element type of `dt`.
template <class Fn>
LAM_INLINE void with_dtype(DType dt, Fn&& f) {
  switch (dt) {
    case DType::F32:
      f(F32{});
      break;
    case DType::BF16:
      f(BF16{});
      break;
    case DType::F16:
      f(F16{});
      break;
  }
}

// ---- AdaLN modulation ---------------------------------------------------------------------------

template <class E>
void adaln_fwd_rows(const AdalnFwdArgs& a, int64_t row_begin, int64_t row_end) {
  using S = typename E::S;
  const E e{};
  const int64_t C = a.C;
  int64_t frame = row_begin / a.N, frame_end = (frame + 1) * a.N;
  for (int64_t row = row_begin; row < row_end; ++row) {
    if (row == frame_end) {
      ++frame;
      frame_end += a.N;
    }
    const S* x = static_cast<const S*>(a.x) + row * C;
    const S* shift = static_cast<const S*>(a.shift) + frame * C;
    const S* scale = static_cast<const S*>(a.scale) + frame * C;
    S* out = static_cast<S*>(a.out) + row * C;

    // One pass for the statistics: float64 sums of x - x[0] and its square. Shifting by a sample
    // of the row bounds the cancellation in S2 - S1^2/C, and float64 makes what remains negligible,
    // so mean and rstd come out (nearly) correctly rounded.
    const double pivot = to_f(e, x[0]);
    vd s_lo = {}, s_hi = {}, q_lo = {}, q_hi = {};
    int64_t c = 0;
    for (; c + W <= C; c += W) {
      vd lo, hi;
      widen(load(e, x + c), lo, hi);
      lo -= pivot;
      hi -= pivot;
      s_lo += lo;
      s_hi += hi;
      q_lo += lo * lo;
      q_hi += hi * hi;
    }
    double s1 = hsum(s_lo + s_hi), s2 = hsum(q_lo + q_hi);
    for (; c < C; ++c) {
      const double d = to_f(e, x[c]) - pivot;
      s1 += d;
      s2 += d * d;
    }
    const double var = (s2 - s1 * s1 / double(C)) / double(C);
    const float mean = float(pivot + s1 / double(C));
    const float rstd = float(1.0 / __builtin_sqrt((var < 0.0 ? 0.0 : var) + double(a.eps)));
    a.mean[row] = mean;
    a.rstd[row] = rstd;

    c = 0;
    for (; c + W <= C; c += W) {
      const vf xhat = (load(e, x + c) - mean) * rstd;
      store(e, out + c, xhat * (1.0f + load(e, scale + c)) + load(e, shift + c));
    }
    for (; c < C; ++c) {
      const float xhat = (to_f(e, x[c]) - mean) * rstd;
      out[c] = from_f(e, xhat * (1.0f + to_f(e, scale[c])) + to_f(e, shift[c]));
    }
  }
}

template <class E>
void adaln_bwd_tasks(const AdalnBwdArgs& a, int64_t task_begin, int64_t task_end) {
  using S = typename E::S;
  const E e{};
  const int64_t C = a.C;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t frame = task / a.chunks;
    const int64_t n0 = (task % a.chunks) * a.chunk_rows;
    const int64_t n1 = n0 + a.chunk_rows < a.N ? n0 + a.chunk_rows : a.N;
    const S* scale = static_cast<const S*>(a.scale) + frame * C;
    double* p_shift = a.part_shift + task * C;
    double* p_scale = a.part_scale + task * C;
    for (int64_t c = 0; c < C; ++c) p_shift[c] = p_scale[c] = 0.0;

    for (int64_t n = n0; n < n1; ++n) {
      const int64_t row = frame * a.N + n;
      const S* g = static_cast<const S*>(a.grad_out) + row * C;
      const S* x = static_cast<const S*>(a.x) + row * C;
      S* gx = static_cast<S*>(a.grad_x) + row * C;
      const float mean = a.mean[row], rstd = a.rstd[row];

      // Pass 1: float64 row sums over d = x - mean (mean as saved, fp32) and g*(1+scale), the latter
      // rounded to fp32 identically in both passes. sum(d)/C is the saved mean's rounding error:
      // subtracting it re-centres xhat exactly, so the cancellations below start from exact values.
      vd d_lo = {}, d_hi = {}, a1_lo = {}, a1_hi = {}, a2_lo = {}, a2_hi = {};
      int64_t c = 0;
      for (; c + W <= C; c += W) {
        vd dl, dh, gl, gh;
        widen(load(e, x + c) - mean, dl, dh);
        widen(rounded(load(e, g + c) * (1.0f + load(e, scale + c))), gl, gh);
        d_lo += dl;
        d_hi += dh;
        a1_lo += gl;
        a1_hi += gh;
        a2_lo += gl * dl;
        a2_hi += gh * dh;
      }
      double sum_d = hsum(d_lo + d_hi), sum1 = hsum(a1_lo + a1_hi), sum2 = hsum(a2_lo + a2_hi);
      for (int64_t t = c; t < C; ++t) {
        const double d = to_f(e, x[t]) - mean;
        const double gxhat = rounded(to_f(e, g[t]) * (1.0f + to_f(e, scale[t])));
        sum_d += d;
        sum1 += gxhat;
        sum2 += gxhat * d;
      }
      const double centre = sum_d / double(C);
      const float shift_mean = float(centre);
      const float m1 = float(sum1 / double(C));
      const float m2 = float(double(rstd) * (sum2 - centre * sum1) / double(C));

      // Pass 2: xhat = (x - mean - centre) * rstd;
      // grad_x = rstd * (g*(1+scale) - mean(g*(1+scale)) - xhat * mean(g*(1+scale)*xhat)),
      // and the frame sums grad_shift += g, grad_scale += g * xhat.
      c = 0;
      for (; c + W <= C; c += W) {
        const vf gv = load(e, g + c);
        const vf xhat = rounded((load(e, x + c) - mean - shift_mean) * rstd);
        const vf gxhat = rounded(gv * (1.0f + load(e, scale + c)));
        store(e, gx + c, rstd * (gxhat - m1 - xhat * m2));
        accumulate(p_shift + c, gv);
        accumulate(p_scale + c, gv * xhat);
      }
      for (; c < C; ++c) {
        const float gv = to_f(e, g[c]);
        const float xhat = rounded((to_f(e, x[c]) - mean - shift_mean) * rstd);
        const float gxhat = rounded(gv * (1.0f + to_f(e, scale[c])));
        gx[c] = from_f(e, rstd * (gxhat - m1 - xhat * m2));
        p_shift[c] += gv;
        p_scale[c] += gv * xhat;
      }
    }
  }
}

// ---- gated residual -----------------------------------------------------------------------------

template <class E>
void gated_fwd_rows(const GatedFwdArgs& a, int64_t row_begin, int64_t row_end) {
  using S = typename E::S;
  const E e{};
  const int64_t C = a.C;
  int64_t frame = row_begin / a.N, frame_end = (frame + 1) * a.N;
  for (int64_t row = row_begin; row < row_end; ++row) {
    if (row == frame_end) {
      ++frame;
      frame_end += a.N;
    }
    const S* x = static_cast<const S*>(a.x) + row * C;
    const S* y = static_cast<const S*>(a.y) + row * C;
    const S* gate = static_cast<const S*>(a.gate) + frame * C;
    S* out = static_cast<S*>(a.out) + row * C;
    int64_t c = 0;
    for (; c + W <= C; c += W) store(e, out + c, load(e, x + c) + load(e, gate + c) * load(e, y + c));
    for (; c < C; ++c) out[c] = from_f(e, to_f(e, x[c]) + to_f(e, gate[c]) * to_f(e, y[c]));
  }
}

template <class E>
void gated_bwd_tasks(const GatedBwdArgs& a, int64_t task_begin, int64_t task_end) {
  using S = typename E::S;
  const E e{};
  const int64_t C = a.C;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t frame = task / a.chunks;
    const int64_t n0 = (task % a.chunks) * a.chunk_rows;
    const int64_t n1 = n0 + a.chunk_rows < a.N ? n0 + a.chunk_rows : a.N;
    const S* gate = static_cast<const S*>(a.gate) + frame * C;
    double* p_gate = a.part_gate + task * C;
    for (int64_t c = 0; c < C; ++c) p_gate[c] = 0.0;
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t row = frame * a.N + n;
      const S* g = static_cast<const S*>(a.grad_out) + row * C;
      const S* y = static_cast<const S*>(a.y) + row * C;
      S* gy = static_cast<S*>(a.grad_y) + row * C;
      int64_t c = 0;
      for (; c + W <= C; c += W) {
        const vf gv = load(e, g + c);
        store(e, gy + c, gv * load(e, gate + c));
        accumulate(p_gate + c, gv * load(e, y + c));
      }
      for (; c < C; ++c) {
        const float gv = to_f(e, g[c]);
        gy[c] = from_f(e, gv * to_f(e, gate[c]));
        p_gate[c] += gv * to_f(e, y[c]);
      }
    }
  }
}

template <class E>
void reduce_partials_impl(const double* part, int64_t chunks, int64_t C, void* out_, int64_t begin, int64_t end) {
  using S = typename E::S;
  const E e{};
  for (int64_t f = begin; f < end; ++f) {
    const double* p = part + f * chunks * C;
    S* out = static_cast<S*>(out_) + f * C;
    for (int64_t c = 0; c < C; ++c) {
      double acc = p[c];
      for (int64_t s = 1; s < chunks; ++s) acc += p[s * C + c];
      out[c] = from_f(e, float(acc));
    }
  }
}

// ---- VQ nearest code ----------------------------------------------------------------------------

constexpr int MR = LAM_VQ_MR;
constexpr int NV = kVqGroup / W;  // vectors per group of codes

// For an MR x kVqGroup tile: e = |c|^2 - 2 x.c in fp32 registers; rows whose tile minimum reaches
// their threshold are handed to `update` (rare once a row has a good candidate).
void vq_scan_impl(const VqScanArgs& a, const float* xs, int64_t rows_padded, int64_t rows_valid, const float* thr,
                  void* ctx, VqUpdateFn update) {
  const int64_t D = a.D;
  for (int64_t g0 = 0; g0 < a.groups; g0 += a.groups_per_block) {
    const int64_t g1 = g0 + a.groups_per_block < a.groups ? g0 + a.groups_per_block : a.groups;
    for (int64_t rb = 0; rb < rows_padded; rb += MR) {
      const float* xb = xs + rb * D;
      for (int64_t g = g0; g < g1; ++g) {
        const float* pk = a.packed + g * D * kVqGroup;
        vf acc[MR][NV];
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[r][v] = vf{};
        for (int64_t d = 0; d < D; ++d) {
          vf cv[NV];
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) cv[v] = loadu(pk + d * kVqGroup + v * W);
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) {
            const float xv = xb[r * D + d];
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[r][v] += xv * cv[v];
          }
        }
        vf cc[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) cc[v] = loadu(a.ccf + g * kVqGroup + v * W);
        // No early exit from this loop: acc is indexed by r, and only a fully unrolled loop keeps
        // it in registers (a `break` here made GCC spill the whole tile to the stack).
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
          const int64_t row = rb + r;
          vf ev[NV];
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) ev[v] = cc[v] - (acc[r][v] + acc[r][v]);
          vf m = ev[0];
#pragma GCC unroll 8
          for (int v = 1; v < NV; ++v) m = vmin(m, ev[v]);
          if (row < rows_valid && hmin(m) <= thr[row]) {
            float tile[kVqGroup];
            for (int v = 0; v < NV; ++v) storeu(tile + v * W, ev[v]);
            update(ctx, row, tile, g * kVqGroup);
          }
        }
      }
    }
  }
}

// ---- attention row passes (fp32 score tiles; the GEMMs around them are in attention.cpp) ------
//
// exp is a Cephes-style range reduction (x = n ln2 + r, |r| <= ln2/2, ln2 split in two parts) with a
// degree-6 polynomial for e^r: about 1 ulp on the range used here. Inputs are clamped to
// [-87.3, 88.7]: below that the result would be denormal or zero anyway (e^-87.3 ~ 1e-38, which is
// negligible against the row sums >= 1 these passes feed), and -inf never reaches them.

LAM_INLINE vf vmax(vf a, vf b) { return a > b ? a : b; }

LAM_INLINE vf vexp(vf x) {
  const vf hi = vf{} + 88.7f, lo = vf{} - 87.3f;
  x = vmin(vmax(x, lo), hi);
  const vf magic = vf{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const vf t = x * 1.44269504088896341f + magic;
  const vf n = t - magic;
  const vi32 ni = (vi32)(bitcast_u(t) - bitcast_u(magic));
  vf r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  vf y = vf{} + 1.9875691500E-4f;
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * (r * r) + r + 1.0f;
  const vf pow2n = bitcast_f((vu32)((ni + 127) << 23));
  return y * pow2n;
}

LAM_INLINE float sexp(float x) {
  vf v = vf{} + x;
  return vexp(v)[0];
}

LAM_INLINE float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// Online softmax step over one block of scores s (rows x cols, row stride ld): per row,
// m' = max(m, max_j s_j), s_j <- exp(s_j - m'), alpha = exp(m - m') (0 when m = -inf),
// l <- alpha l + sum_j s_j, m <- m'.
void attn_softmax_online(float* s, int64_t rows, int64_t cols, int64_t ld, float* m, float* l, float* alpha) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    int64_t j = 0;
    vf vm = vf{} - __builtin_inff();
    for (; j + W <= cols; j += W) vm = vmax(vm, loadu(row + j));
    float mx = hmax(vm);
    for (; j < cols; ++j) mx = row[j] > mx ? row[j] : mx;
    const float m_new = m[r] > mx ? m[r] : mx;
    const vf vsub = vf{} + m_new;
    vf acc = vf{};
    for (j = 0; j + W <= cols; j += W) {
      const vf e = vexp(loadu(row + j) - vsub);
      storeu(row + j, e);
      acc += e;
    }
    float sum = hsum(acc);
    for (; j < cols; ++j) {
      row[j] = sexp(row[j] - m_new);
      sum += row[j];
    }
    const float a = m[r] == -__builtin_inff() ? 0.0f : sexp(m[r] - m_new);
    alpha[r] = a;
    l[r] = l[r] * a + sum;
    m[r] = m_new;
  }
}

// The softmax backward of one tile, per row r: p_j <- exp(s_j - lse[r]) (the probabilities, from
// the scores in p and the row log-sum-exp), dp_j <- p_j (dp_j - delta[r]) (dS, from dP in dp and
// delta = rowsum(dO o O)).
void attn_softmax_bwd(float* p, float* dp, int64_t rows, int64_t cols, int64_t ld, const float* lse,
                      const float* delta) {
  for (int64_t r = 0; r < rows; ++r) {
    float* prow = p + r * ld;
    float* drow = dp + r * ld;
    const vf vl = vf{} + lse[r], vdl = vf{} + delta[r];
    int64_t j = 0;
    for (; j + W <= cols; j += W) {
      const vf pv = vexp(loadu(prow + j) - vl);
      storeu(prow + j, pv);
      storeu(drow + j, pv * (loadu(drow + j) - vdl));
    }
    for (; j < cols; ++j) {
      prow[j] = sexp(prow[j] - lse[r]);
      drow[j] = prow[j] * (drow[j] - delta[r]);
    }
  }
}

// dst (16-bit dtype, row stride ldd) <- src (fp32, row stride lds), rounded to nearest even.
template <class E>
void attn_round_impl(const float* src, int64_t rows, int64_t cols, int64_t lds, void* dst_, int64_t ldd) {
  using S = typename E::S;
  S* dst = static_cast<S*>(dst_);
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = src + r * lds;
    S* o = dst + r * ldd;
    int64_t j = 0;
    for (; j + W <= cols; j += W) store(E{}, o + j, loadu(a + j));
    for (; j < cols; ++j) o[j] = from_f(E{}, a[j]);
  }
}

void attn_round(DType dt, const float* src, int64_t rows, int64_t cols, int64_t lds, void* dst, int64_t ldd) {
  with_dtype(dt, [&](auto t) { attn_round_impl<decltype(t)>(src, rows, cols, lds, dst, ldd); });
}

// ---- exported entry points (dtype dispatch) -----------------------------------------------------

void adaln_fwd(const AdalnFwdArgs& a, int64_t b, int64_t e) {
  with_dtype(a.dtype, [&](auto t) { adaln_fwd_rows<decltype(t)>(a, b, e); });
}
void adaln_bwd(const AdalnBwdArgs& a, int64_t b, int64_t e) {
  with_dtype(a.dtype, [&](auto t) { adaln_bwd_tasks<decltype(t)>(a, b, e); });
}
void gated_fwd(const GatedFwdArgs& a, int64_t b, int64_t e) {
  with_dtype(a.dtype, [&](auto t) { gated_fwd_rows<decltype(t)>(a, b, e); });
}
void gated_bwd(const GatedBwdArgs& a, int64_t b, int64_t e) {
  with_dtype(a.dtype, [&](auto t) { gated_bwd_tasks<decltype(t)>(a, b, e); });
}
void reduce_partials(DType dt, const double* part, int64_t chunks, int64_t C, void* out, int64_t b, int64_t e) {
  with_dtype(dt, [&](auto t) { reduce_partials_impl<decltype(t)>(part, chunks, C, out, b, e); });
}

#undef LAM_INLINE

}  // namespace

extern const KernelTable table = {
    LAM_ARCH_NAME, MR,           adaln_fwd,      adaln_bwd,    gated_fwd,         gated_bwd, reduce_partials,
    vq_scan_impl,  attn_softmax_online, attn_softmax_bwd, attn_round,
};

}  // namespace LAM_ARCH
}  // namespace cpu
}  // namespace lam_fast
