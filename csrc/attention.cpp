// CPU frame-causal attention with 3D RoPE: lam_fast::attention_fwd / attention_bwd.
//
// q: (B, H, Lq, D) holds frames q_frame_offset, q_frame_offset + 1, ... of N = frame_tokens tokens;
// k, v: (B, H, Lk, D) hold frames 0, 1, ...; query i (frame f = q_frame_offset + i / N) attends to
// keys j < min((f + 1) N, Lk). cos, sin: (rows >= max(Lk, q_frame_offset N + Lq), D/2) RoPE tables
// indexed by absolute token position (Rope3D.cos_sin), or both undefined for no rotation.
//
// Tiling follows the frame structure, so no score is ever masked:
//  - a query tile is at most kTileQ rows of ONE frame, so every key it may see, [0, (f+1) N), is
//    visible to all its rows: fully masked key blocks are never visited and visible blocks carry
//    no per-element mask;
//  - forward: one task per (b, h, query tile), an online softmax over key blocks of kTileK keys
//    (score tile kTileQ x kTileK fp32, thread-local), writing out and the row log-sum-exp;
//  - backward: one task per (b, h) (no atomics, fixed summation order: results do not depend on the
//    thread count), recomputing P from the saved log-sum-exp, FlashAttention-2 style.
// RoPE is applied while packing q / k into tiles (the packing a GEMM does anyway) and its inverse is
// applied to dq / dk on the way out. Softmax statistics and all accumulators are fp32.
//
// Tile GEMMs use the BLAS that libtorch_cpu exports (MKL in the x86 wheels) when present, else a
// portable loop. float32 and float16 inputs run fp32 tiles (sgemm). bfloat16 inputs run bf16 tiles
// with fp32 accumulation (cblas_gemm_bf16bf16f32: AMX on CPUs that have it): q, k, v, dO and the
// probabilities P / dS are rounded to bf16 before their GEMMs, exactly where the eager bfloat16
// reference rounds them (it rotates q/k and casts P to bf16 before P V), so the error stays within
// the reference's own.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "attention.h"
#include "cpu_common.h"

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));
// MKL's CBLAS bf16 GEMM (LP64): layout 101 = row major, transpose 111 = no, 112 = yes.
extern "C" void cblas_gemm_bf16bf16f32(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha,
                                       const uint16_t* a, int lda, const uint16_t* b, int ldb, float beta, float* c,
                                       int ldc) __attribute__((weak));

namespace lam_fast {

namespace {
bool use_blas = true;
}

bool attention_blas_available() { return sgemm_ != nullptr; }

const char* attention_gemm() { return use_blas && attention_blas_available() ? "blas" : "portable"; }

bool set_attention_gemm(const char* name) {
  const std::string n(name);
  if (n == "blas" && attention_blas_available()) {
    use_blas = true;
    return true;
  }
  if (n == "portable") {
    use_blas = false;
    return true;
  }
  return false;
}

namespace {

using at::Tensor;

constexpr int64_t kTileQ = 256;
constexpr int64_t kTileK = 512;

// Row-major C (M x N, ldc, fp32) = alpha op(A) op(B) + beta C, op(A): M x K, op(B): K x N.
template <typename P>
void gemm_portable(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const P* A, int64_t lda,
                   const P* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  std::vector<float> row(N);
  for (int64_t i = 0; i < M; ++i) {
    std::fill(row.begin(), row.end(), 0.0f);
    for (int64_t p = 0; p < K; ++p) {
      const float a = static_cast<float>(trans_a ? A[p * lda + i] : A[i * lda + p]);
      if (trans_b) {
        for (int64_t j = 0; j < N; ++j) row[j] += a * static_cast<float>(B[j * ldb + p]);
      } else {
        const P* b = B + p * ldb;
        for (int64_t j = 0; j < N; ++j) row[j] += a * static_cast<float>(b[j]);
      }
    }
    float* c = C + i * ldc;
    for (int64_t j = 0; j < N; ++j) c[j] = alpha * row[j] + (beta == 0.0f ? 0.0f : beta * c[j]);
  }
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (use_blas && sgemm_ != nullptr) {
    // Column-major BLAS sees each row-major matrix transposed: C^T = op(B)^T op(A)^T.
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const int m = int(N), n = int(M), k = int(K), la = int(ldb), lb = int(lda), lc = int(ldc);
    sgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
    return;
  }
  gemm_portable(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const c10::BFloat16* A,
          int64_t lda, const c10::BFloat16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (use_blas && cblas_gemm_bf16bf16f32 != nullptr) {
    cblas_gemm_bf16bf16f32(101, trans_a ? 112 : 111, trans_b ? 112 : 111, int(M), int(N), int(K), alpha,
                           reinterpret_cast<const uint16_t*>(A), int(lda), reinterpret_cast<const uint16_t*>(B),
                           int(ldb), beta, C, int(ldc));
    return;
  }
  gemm_portable(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// The tile type P of the GEMM operands (see the header) and the fp32 -> P rounding of score tiles.
template <typename P>
constexpr cpu::DType tile_dtype() {
  return std::is_same_v<P, float> ? cpu::DType::F32 : cpu::DType::BF16;
}

// src as P: src itself for fp32 tiles, else rounded into buf (same row stride).
template <typename P>
const P* as_tile(const cpu::KernelTable& kt, const float* src, int64_t rows, int64_t cols, int64_t ld, P* buf) {
  if constexpr (std::is_same_v<P, float>) {
    return src;
  } else {
    kt.attn_round(tile_dtype<P>(), src, rows, cols, ld, buf, ld);
    return buf;
  }
}

// Scratch that is fully written before it is read: no zero-fill (std::vector would memset it).
template <typename T>
struct Scratch {
  std::unique_ptr<T[]> p;
  explicit Scratch(int64_t n) : p(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]) {}
  T* data() { return p.get(); }
  const T* data() const { return p.get(); }
  T& operator[](int64_t i) { return p[i]; }
};

// (B, H, L, D) tensor of any strides, one (b, h) slice at a time.
template <typename T>
struct Slice {
  const T* base;
  int64_t sb, sh, sl, sd;
  const T* at(int64_t b, int64_t h, int64_t l) const { return base + b * sb + h * sh + l * sl; }
};

template <typename T>
Slice<T> slice_of(const Tensor& t) {
  return {t.const_data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

struct Rope {
  const float* cos = nullptr;  // (rows, D/2) contiguous
  const float* sin = nullptr;
  int64_t half = 0;
  bool on() const { return cos != nullptr; }
};

// dst[r, :] = rotate(src row (b, h, l0 + r)) as P (rotation in fp32, one rounding), rows [0, n),
// row stride D. pos0: the absolute token position of row l0 (indexes the rope tables). kUnit: the
// source's last dim is contiguous (the usual case), so the compiler can vectorise the row loops.
template <bool kUnit, typename T, typename P>
void pack_rows_impl(const Slice<T>& src, int64_t b, int64_t h, int64_t l0, int64_t n, int64_t D, const Rope& rope,
                    int64_t pos0, P* dst) {
  const int64_t sd = kUnit ? 1 : src.sd;
  for (int64_t r = 0; r < n; ++r) {
    const T* x = src.at(b, h, l0 + r);
    P* o = dst + r * D;
    if (!rope.on()) {
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<P>(static_cast<float>(x[d * sd]));
      continue;
    }
    const int64_t half = rope.half;
    const float* c = rope.cos + (pos0 + r) * half;
    const float* s = rope.sin + (pos0 + r) * half;
    for (int64_t j = 0; j < half; ++j) {
      const float x1 = static_cast<float>(x[j * sd]), x2 = static_cast<float>(x[(j + half) * sd]);
      o[j] = static_cast<P>(x1 * c[j] - x2 * s[j]);
      o[j + half] = static_cast<P>(x2 * c[j] + x1 * s[j]);
    }
  }
}

template <typename T, typename P>
void pack_rows(const Slice<T>& src, int64_t b, int64_t h, int64_t l0, int64_t n, int64_t D, const Rope& rope,
               int64_t pos0, P* dst) {
  if (src.sd == 1) {
    pack_rows_impl<true>(src, b, h, l0, n, D, rope, pos0, dst);
  } else {
    pack_rows_impl<false>(src, b, h, l0, n, D, rope, pos0, dst);
  }
}

// out row (b, h, l0 + r) = inverse-rotate(src[r, :]) (the gradient w.r.t. the un-rotated input).
template <typename T>
void unpack_grad_rows(const float* src, int64_t n, int64_t D, const Rope& rope, int64_t pos0, T* out) {
  for (int64_t r = 0; r < n; ++r) {
    const float* g = src + r * D;
    T* o = out + r * D;
    if (!rope.on()) {
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(g[d]);
      continue;
    }
    const float* c = rope.cos + (pos0 + r) * rope.half;
    const float* s = rope.sin + (pos0 + r) * rope.half;
    for (int64_t j = 0; j < rope.half; ++j) {
      const float g1 = g[j], g2 = g[j + rope.half];
      o[j] = static_cast<T>(g1 * c[j] + g2 * s[j]);
      o[j + rope.half] = static_cast<T>(g2 * c[j] - g1 * s[j]);
    }
  }
}

struct Geometry {
  int64_t B, H, Lq, Lk, D, N, offset;
  // One past the last key query row i may see.
  int64_t key_end(int64_t i) const { return std::min((offset + i / N + 1) * N, Lk); }
};

Geometry check_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                      const c10::optional<Tensor>& cos, const c10::optional<Tensor>& sin, int64_t frame_tokens,
                      int64_t q_frame_offset, Rope* rope) {
  check_cpu(q, op, "q");
  check_cpu(k, op, "k");
  check_cpu(v, op, "v");
  kernel_dtype(q, op, "q");
  check_same_dtype(k, q, op, "k");
  check_same_dtype(v, q, op, "v");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": q, k, v must be (B, H, L, D), got ", q.sizes(),
              ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v must have one shape, got ", k.sizes(), " and ", v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3), op,
              ": q ", q.sizes(), " and k ", k.sizes(), " differ in B, H or D");
  TORCH_CHECK(frame_tokens >= 1 && q.size(2) % frame_tokens == 0 && k.size(2) % frame_tokens == 0, op,
              ": frame_tokens=", frame_tokens, " must divide Lq=", q.size(2), " and Lk=", k.size(2));
  TORCH_CHECK(q_frame_offset >= 0, op, ": q_frame_offset must be >= 0, got ", q_frame_offset);
  const Geometry g{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), frame_tokens, q_frame_offset};
  TORCH_CHECK(cos.has_value() == sin.has_value(), op, ": pass both cos and sin, or neither");
  if (cos.has_value()) {
    const int64_t rows = std::max(g.Lk, q_frame_offset * frame_tokens + g.Lq);
    for (const Tensor* t : {&*cos, &*sin}) {
      check_cpu(*t, op, "cos/sin");
      TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 2 && t->size(0) >= rows &&
                      t->size(1) * 2 == g.D,
                  op, ": cos/sin must be contiguous float32 (>= ", rows, ", ", g.D / 2, "), got ", t->sizes(), " ",
                  t->scalar_type());
    }
    rope->cos = cos->const_data_ptr<float>();
    rope->sin = sin->const_data_ptr<float>();
    rope->half = g.D / 2;
  }
  return g;
}

template <typename T, typename P>
void forward_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Rope& rope, const Geometry& g, float scale,
                  Tensor& out, Tensor& lse) {
  const Slice<T> qs = slice_of<T>(q), ks = slice_of<T>(k), vs = slice_of<T>(v);
  const int64_t D = g.D, BH = g.B * g.H;
  // Rotated keys and values as tiles, once per (b, h): O(L D), the packing every GEMM does.
  Scratch<P> kp(BH * g.Lk * D), vp(BH * g.Lk * D);
  const Rope none;
  const int64_t row_blocks = (g.Lk + kTileK - 1) / kTileK;
  at::parallel_for(0, BH * row_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bh = t / row_blocks, l0 = (t % row_blocks) * kTileK, n = std::min(kTileK, g.Lk - l0);
      pack_rows(ks, bh / g.H, bh % g.H, l0, n, D, rope, l0, kp.data() + (bh * g.Lk + l0) * D);
      pack_rows(vs, bh / g.H, bh % g.H, l0, n, D, none, l0, vp.data() + (bh * g.Lk + l0) * D);
    }
  });

  const int64_t tiles_per_frame = (g.N + kTileQ - 1) / kTileQ;
  const int64_t frames = g.Lq / g.N;
  const cpu::KernelTable& kt = cpu::kernels();
  T* o = out.mutable_data_ptr<T>();
  float* lse_p = lse.mutable_data_ptr<float>();
  at::parallel_for(0, BH * frames * tiles_per_frame, 1, [&](int64_t begin, int64_t end) {
    // tiles no larger than the problem: tq x tk scores, row stride tk
    const int64_t tq = std::min(kTileQ, g.N), tk = std::min(kTileK, g.Lk);
    Scratch<P> qt(tq * D), p16(std::is_same_v<P, float> ? 0 : tq * tk);
    Scratch<float> s(tq * tk), m(tq), l(tq), alpha(tq);
    std::vector<float> acc(tq * D);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bh = t / (frames * tiles_per_frame), rest = t % (frames * tiles_per_frame);
      const int64_t i0 = (rest / tiles_per_frame) * g.N + (rest % tiles_per_frame) * kTileQ;
      const int64_t rows = std::min(kTileQ, (rest / tiles_per_frame + 1) * g.N - i0);
      const int64_t kend = g.key_end(i0);
      pack_rows(qs, bh / g.H, bh % g.H, i0, rows, D, rope, g.offset * g.N + i0, qt.data());
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill_n(m.data(), tq, -std::numeric_limits<float>::infinity());
      std::fill_n(l.data(), tq, 0.0f);
      const P* kb = kp.data() + bh * g.Lk * D;
      const P* vb = vp.data() + bh * g.Lk * D;
      for (int64_t j0 = 0; j0 < kend; j0 += tk) {
        const int64_t cols = std::min(tk, kend - j0);
        gemm(false, true, rows, cols, D, scale, qt.data(), D, kb + j0 * D, D, 0.0f, s.data(), tk);
        kt.attn_softmax_online(s.data(), rows, cols, tk, m.data(), l.data(), alpha.data());
        if (j0 > 0) {
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t d = 0; d < D; ++d) acc[r * D + d] *= alpha[r];
        }
        const P* pt = as_tile<P>(kt, s.data(), rows, cols, tk, p16.data());
        gemm(false, false, rows, D, cols, 1.0f, pt, tk, vb + j0 * D, D, 1.0f, acc.data(), D);
      }
      T* orow = o + (bh * g.Lq + i0) * D;
      for (int64_t r = 0; r < rows; ++r) {
        const float inv = 1.0f / l[r];
        for (int64_t d = 0; d < D; ++d) orow[r * D + d] = static_cast<T>(acc[r * D + d] * inv);
        lse_p[bh * g.Lq + i0 + r] = m[r] + std::log(l[r]);
      }
    }
  });
}

// bf16 inputs use bf16 tiles when the BLAS has a bf16 GEMM; everything else fp32 tiles.
bool bf16_tiles(const Tensor& q) {
  return q.scalar_type() == at::kBFloat16 && use_blas && cblas_gemm_bf16bf16f32 != nullptr;
}

std::tuple<Tensor, Tensor> attention_fwd_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const c10::optional<Tensor>& cos, const c10::optional<Tensor>& sin,
                                             int64_t frame_tokens, int64_t q_frame_offset, double scale) {
  constexpr const char* op = "lam_fast::attention_fwd";
  Rope rope;
  const Geometry g = check_inputs(op, q, k, v, cos, sin, frame_tokens, q_frame_offset, &rope);
  TORCH_CHECK(std::isfinite(scale), op, ": scale must be finite, got ", scale);
  Tensor out = at::empty({g.B, g.H, g.Lq, g.D}, q.options());
  Tensor lse = at::empty({g.B, g.H, g.Lq}, q.options().dtype(at::kFloat));
  if (out.numel() == 0) {
    lse.fill_(-std::numeric_limits<float>::infinity());
    return {out, lse};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "attention_fwd_cpu", [&] {
    if (bf16_tiles(q)) {
      forward_impl<scalar_t, c10::BFloat16>(q, k, v, rope, g, static_cast<float>(scale), out, lse);
    } else {
      forward_impl<scalar_t, float>(q, k, v, rope, g, static_cast<float>(scale), out, lse);
    }
  });
  return {out, lse};
}

template <typename T, typename P>
void backward_impl(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                   const Tensor& lse_, const Rope& rope, const Geometry& g, float scale, Tensor& dq, Tensor& dk,
                   Tensor& dv) {
  const Slice<T> qs = slice_of<T>(q), ks = slice_of<T>(k), vs = slice_of<T>(v), gs = slice_of<T>(grad_out),
                 os = slice_of<T>(out);
  const Tensor lse = lse_.contiguous();
  const float* lse_p = lse.const_data_ptr<float>();
  const int64_t D = g.D, Lq = g.Lq, Lk = g.Lk, N = g.N;
  const cpu::KernelTable& kt = cpu::kernels();
  const Rope none;
  T* dq_p = dq.mutable_data_ptr<T>();
  T* dk_p = dk.mutable_data_ptr<T>();
  T* dv_p = dv.mutable_data_ptr<T>();
  at::parallel_for(0, g.B * g.H, 1, [&](int64_t begin, int64_t end) {
    const int64_t tq = std::min(kTileQ, N), tk = std::min(kTileK, Lk);  // score tiles tq x tk, row stride tk
    Scratch<P> qr(Lq * D), go(Lq * D), kr(Lk * D), vr(Lk * D);
    Scratch<P> p16(std::is_same_v<P, float> ? 0 : tq * tk), ds16(std::is_same_v<P, float> ? 0 : tq * tk);
    Scratch<float> delta(Lq), p(tq * tk), dp(tq * tk);
    std::vector<float> dqr(Lq * D), dkr(Lk * D), dvr(Lk * D);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / g.H, h = bh % g.H;
      pack_rows(qs, b, h, 0, Lq, D, rope, g.offset * N, qr.data());
      pack_rows(ks, b, h, 0, Lk, D, rope, 0, kr.data());
      pack_rows(vs, b, h, 0, Lk, D, none, 0, vr.data());
      pack_rows(gs, b, h, 0, Lq, D, none, 0, go.data());
      for (int64_t i = 0; i < Lq; ++i) {  // delta_i = dO_i . O_i
        const T* orow = os.at(b, h, i);
        const T* grow = gs.at(b, h, i);
        float sum = 0.0f;
        for (int64_t d = 0; d < D; ++d)
          sum += static_cast<float>(grow[d * gs.sd]) * static_cast<float>(orow[d * os.sd]);
        delta[i] = sum;
      }
      std::fill(dqr.begin(), dqr.end(), 0.0f);
      std::fill(dkr.begin(), dkr.end(), 0.0f);
      std::fill(dvr.begin(), dvr.end(), 0.0f);
      const float* lse_bh = lse_p + bh * Lq;
      for (int64_t i0 = 0; i0 < Lq;) {
        const int64_t rows = std::min({tq, Lq - i0, (i0 / N + 1) * N - i0});  // one frame per tile
        const int64_t kend = g.key_end(i0);
        const P* qi = qr.data() + i0 * D;
        const P* gi = go.data() + i0 * D;
        for (int64_t j0 = 0; j0 < kend; j0 += tk) {
          const int64_t cols = std::min(tk, kend - j0);
          const P* kj = kr.data() + j0 * D;
          const P* vj = vr.data() + j0 * D;
          gemm(false, true, rows, cols, D, scale, qi, D, kj, D, 0.0f, p.data(), tk);  // S
          gemm(false, true, rows, cols, D, 1.0f, gi, D, vj, D, 0.0f, dp.data(), tk);   // dP
          // one pass: P = exp(S - lse) into p, dS = P (dP - delta) into dp
          kt.attn_softmax_bwd(p.data(), dp.data(), rows, cols, tk, lse_bh + i0, delta.data() + i0);
          const P* pt = as_tile<P>(kt, p.data(), rows, cols, tk, p16.data());
          gemm(true, false, cols, D, rows, 1.0f, pt, tk, gi, D, 1.0f, dvr.data() + j0 * D, D);  // dV += P^T dO
          const P* dst = as_tile<P>(kt, dp.data(), rows, cols, tk, ds16.data());
          gemm(false, false, rows, D, cols, scale, dst, tk, kj, D, 1.0f, dqr.data() + i0 * D, D);  // dQ
          gemm(true, false, cols, D, rows, scale, dst, tk, qi, D, 1.0f, dkr.data() + j0 * D, D);   // dK
        }
        i0 += rows;
      }
      unpack_grad_rows(dqr.data(), Lq, D, rope, g.offset * N, dq_p + bh * Lq * D);
      unpack_grad_rows(dkr.data(), Lk, D, rope, 0, dk_p + bh * Lk * D);
      unpack_grad_rows(dvr.data(), Lk, D, none, 0, dv_p + bh * Lk * D);
    }
  });
}

std::tuple<Tensor, Tensor, Tensor> attention_bwd_cpu(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                                     const Tensor& v, const Tensor& out, const Tensor& lse,
                                                     const c10::optional<Tensor>& cos,
                                                     const c10::optional<Tensor>& sin, int64_t frame_tokens,
                                                     int64_t q_frame_offset, double scale) {
  constexpr const char* op = "lam_fast::attention_bwd";
  Rope rope;
  const Geometry g = check_inputs(op, q, k, v, cos, sin, frame_tokens, q_frame_offset, &rope);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes(), op, ": grad_out and out must have q's shape ",
              q.sizes(), ", got ", grad_out.sizes(), " and ", out.sizes());
  check_same_dtype(grad_out, q, op, "grad_out");
  check_same_dtype(out, q, op, "out");
  TORCH_CHECK(lse.scalar_type() == at::kFloat && lse.dim() == 3 && lse.size(0) == g.B && lse.size(1) == g.H &&
                  lse.size(2) == g.Lq,
              op, ": lse must be float32 (B, H, Lq), got ", lse.sizes(), " ", lse.scalar_type());
  Tensor dq = at::empty({g.B, g.H, g.Lq, g.D}, q.options());
  Tensor dk = at::empty({g.B, g.H, g.Lk, g.D}, q.options());
  Tensor dv = at::empty({g.B, g.H, g.Lk, g.D}, q.options());
  if (dq.numel() == 0 && dk.numel() == 0) return {dq, dk, dv};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "attention_bwd_cpu", [&] {
    if (bf16_tiles(q)) {
      backward_impl<scalar_t, c10::BFloat16>(grad_out, q, k, v, out, lse, rope, g, static_cast<float>(scale), dq, dk,
                                             dv);
    } else {
      backward_impl<scalar_t, float>(grad_out, q, k, v, out, lse, rope, g, static_cast<float>(scale), dq, dk, dv);
    }
  });
  return {dq, dk, dv};
}

}  // namespace
}  // namespace lam_fast

TORCH_LIBRARY_IMPL(lam_fast, CPU, m) {
  m.impl("attention_fwd", &lam_fast::attention_fwd_cpu);
  m.impl("attention_bwd", &lam_fast::attention_bwd_cpu);
}
