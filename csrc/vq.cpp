// CPU nearest-code search for VQ: lam_fast::vq_nearest(x: (M, D), codebook: (K, D)) -> int64 (M,).
//
// Exactness: the result is the reference's answer (lam_fast/ops/vq/reference.py): the nearest code
// by L2, ties to the lowest index, where codes whose float64 distances |x|^2 - 2 x.c + |c|^2 are
// within that formula's rounding bound of each other are ranked by sum_d (x_d - c_d)^2 accumulated
// in float64 in index order (identical codes tie exactly); a NaN distance wins, as torch.argmin.
// The bulk of the work runs in fp32 SIMD:
//   1. fp32 register tiles compute e_k = |c_k|^2 - 2 x.c_k for every code (|x|^2 is common to the
//      row). Each e_k is within b of its exact value, with b a rigorous forward-error bound
//      (Higham's gamma_D for the dot product plus the roundings of |c|^2 and of the subtraction).
//   2. A row keeps as candidates the codes with e_k <= min_j e_j + 2b: this set always contains the
//      exact nearest code(s). On random data it holds a single code almost always.
//   3. Rows with several candidates rank just those by the fixed-order sum of squared differences
//      (the candidates contain the reference's near-tie window) and take the first minimum.
// Rows (or codebooks) with non-finite values or magnitudes where fp32 could overflow take the
// reference's float64 scan instead (expanded distances, then the same re-ranking near the minimum;
// a non-finite minimum is kept, as the reference keeps argmin's answer). No M x K buffer exists;
// codes are scanned in cache-sized blocks.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "cpu_common.h"

namespace lam_fast {
namespace {

using at::Tensor;
constexpr int64_t kGroup = cpu::kVqGroup;
// Above this |v|^2 an fp32 dot product could overflow: such rows use the float64 scan.
constexpr double kFastNormSqMax = 1e30;

struct Candidate {
  float e;
  int64_t k;
};

// Per-chunk row state shared with the SIMD scan through the update callback.
struct RowState {
  std::vector<float> thr, best;
  std::vector<double> slack;
  std::vector<std::vector<Candidate>> candidates;
  std::vector<size_t> prune_at;
  int64_t K = 0;
};

float threshold(float best, double slack) {
  // Rounded up so that the fp32 comparison never drops a code the exact bound admits.
  return std::nextafter(static_cast<float>(static_cast<double>(best) + slack), std::numeric_limits<float>::infinity());
}

void on_candidates(void* ctx, int64_t row, const float* e, int64_t k0) {
  RowState& s = *static_cast<RowState*>(ctx);
  float best = s.best[row], thr = s.thr[row];
  std::vector<Candidate>& list = s.candidates[row];
  const int64_t n = std::min(kGroup, s.K - k0);
  for (int64_t j = 0; j < n; ++j) {
    const float v = e[j];
    if (!(v <= thr)) continue;
    if (v < best) {
      best = v;
      thr = threshold(best, s.slack[row]);
    }
    list.push_back({v, k0 + j});
  }
  if (list.size() >= s.prune_at[row]) {
    list.erase(std::remove_if(list.begin(), list.end(), [thr](const Candidate& c) { return !(c.e <= thr); }),
               list.end());
    s.prune_at[row] = std::max<size_t>(64, 2 * list.size());
  }
  s.best[row] = best;
  s.thr[row] = thr;
}

// The reference's float64 expanded distance, summed in index order.
double distance64(const float* x, const float* c, int64_t D, double xx, double cc) {
  double dot = 0.0;
  for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(x[d]) * static_cast<double>(c[d]);
  return (xx - 2.0 * dot) + cc;
}

// The reference's tie-breaking distance: sum_d (x_d - c_d)^2 in float64, in index order.
double squared_difference64(const float* x, const float* c, int64_t D) {
  double s = 0.0;
  for (int64_t d = 0; d < D; ++d) {
    const double diff = static_cast<double>(x[d]) - static_cast<double>(c[d]);
    s += diff * diff;
  }
  return s;
}

// First minimum of the squared difference over `codes` (increasing).
template <class Codes>
int64_t argmin_squared_difference(const float* x, const float* codebook, int64_t D, const Codes& codes) {
  int64_t best_k = -1;
  double best = 0.0;
  for (const int64_t k : codes) {
    const double dist = squared_difference64(x, codebook + k * D, D);
    if (best_k < 0 || dist < best) {
      best = dist;
      best_k = k;
    }
  }
  return best_k;
}

// The reference's whole-codebook scan for one row: the first minimum of the expanded distance (a
// NaN wins at once); if finite, the codes within the reference's window of it are re-ranked.
int64_t scan64(const float* x, const float* codebook, const double* cc, double cc_max, int64_t D, int64_t K,
               double xx) {
  std::vector<double> dist(K);
  int64_t best_k = -1;
  for (int64_t k = 0; k < K; ++k) {
    dist[k] = distance64(x, codebook + k * D, D, xx, cc[k]);
    if (std::isnan(dist[k])) return k;
    if (best_k < 0 || dist[k] < dist[best_k]) best_k = k;
  }
  if (best_k < 0 || !std::isfinite(dist[best_k])) return best_k;
  // reference.py: _NEAR_TIE_ULPS (4) x (D + 2) x eps64 x (|x|^2 + max |c|^2)
  const double window = 4.0 * double(D + 2) * 0x1p-52 * (xx + cc_max);
  std::vector<int64_t> near;
  for (int64_t k = 0; k < K; ++k)
    if (dist[k] <= dist[best_k] + window) near.push_back(k);
  return near.size() <= 1 ? best_k : argmin_squared_difference(x, codebook, D, near);  // none: a NaN window
}

// Indices of the candidates still within the row's final threshold, increasing.
std::vector<int64_t> surviving(const std::vector<Candidate>& list, float thr) {
  std::vector<int64_t> ks;
  for (const Candidate& c : list)
    if (c.e <= thr) ks.push_back(c.k);
  return ks;
}

void to_float_rows(const Tensor& x, int64_t r0, int64_t rows, float* dst) {
  const int64_t D = x.size(1);
  const int64_t n = rows * D;
  switch (x.scalar_type()) {
    case at::kFloat:
      std::memcpy(dst, x.const_data_ptr<float>() + r0 * D, n * sizeof(float));
      break;
    case at::kBFloat16: {
      const at::BFloat16* p = x.const_data_ptr<at::BFloat16>() + r0 * D;
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i]);
      break;
    }
    case at::kHalf: {
      const at::Half* p = x.const_data_ptr<at::Half>() + r0 * D;
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i]);
      break;
    }
    default:
      TORCH_CHECK(false, "lam_fast::vq_nearest: unsupported dtype ", x.scalar_type());
  }
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

Tensor vq_nearest_cpu(const Tensor& x_, const Tensor& codebook_) {
  constexpr const char* op = "lam_fast::vq_nearest";
  check_cpu(x_, op, "x");
  check_cpu(codebook_, op, "codebook");
  kernel_dtype(x_, op, "x");
  check_same_dtype(codebook_, x_, op, "codebook");
  TORCH_CHECK(x_.dim() == 2 && codebook_.dim() == 2 && x_.size(1) == codebook_.size(1), op,
              ": x must be (M, D) and codebook (K, D), got ", x_.sizes(), " and ", codebook_.sizes());
  TORCH_CHECK(codebook_.size(0) >= 1, op, ": the codebook is empty");

  const Tensor x = x_.contiguous();
  const Tensor codebook = codebook_.to(at::kFloat).contiguous();  // exact for every supported dtype
  const int64_t M = x.size(0), K = codebook.size(0), D = x.size(1);
  Tensor out = at::empty({M}, x.options().dtype(at::kLong));
  if (M == 0) return out;
  int64_t* result = out.mutable_data_ptr<int64_t>();
  const float* cb = codebook.const_data_ptr<float>();

  // |c|^2 in float64 and the packed fp32 layout the SIMD scan reads.
  const int64_t groups = (K + kGroup - 1) / kGroup;
  std::vector<double> cc(K);
  std::vector<float> packed(groups * D * kGroup), ccf(groups * kGroup, std::numeric_limits<float>::infinity());
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      for (int64_t j = 0; j < kGroup; ++j) {
        const int64_t k = g * kGroup + j;
        double s = 0.0;
        for (int64_t d = 0; d < D; ++d) {
          const float v = k < K ? cb[k * D + d] : 0.0f;
          packed[(g * D + d) * kGroup + j] = v;
          s += static_cast<double>(v) * v;
        }
        if (k < K) {
          cc[k] = s;
          ccf[k] = static_cast<float>(s);
        }
      }
    }
  });
  double cc_max = 0.0;  // std::max skips NaN; the reference's window max propagates it (cc_max_nan)
  bool codebook_fast = true, codebook_nan = false;
  for (int64_t k = 0; k < K; ++k) {
    codebook_fast = codebook_fast && std::isfinite(cc[k]) && cc[k] <= kFastNormSqMax;
    codebook_nan = codebook_nan || std::isnan(cc[k]);
    cc_max = std::max(cc_max, cc[k]);
  }
  const double cc_max_nan = codebook_nan ? std::numeric_limits<double>::quiet_NaN() : cc_max;
  const double c_norm_max = std::sqrt(cc_max);

  const cpu::KernelTable& kt = cpu::kernels();
  const int64_t mr = kt.vq_rows_per_tile;
  // Rows per task: ~96 KB of fp32 x rows (L2-resident while the codebook streams past), but
  // enough tasks for every thread.
  const int64_t rows_cache = std::max(mr, (24576 / std::max<int64_t>(D, 1)) / mr * mr);
  const int64_t rows_even = round_up((M + at::get_num_threads() - 1) / at::get_num_threads(), mr);
  const int64_t rows_per_task = std::min(rows_cache, rows_even);
  const int64_t tasks = (M + rows_per_task - 1) / rows_per_task;
  const cpu::VqScanArgs args{packed.data(), ccf.data(), groups, D,
                             std::max<int64_t>(1, 65536 / std::max<int64_t>(D * kGroup, 1))};
  constexpr double u = 0x1p-24;  // fp32 unit roundoff

  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> xs(rows_per_task * D + mr * D);
    std::vector<double> xx(rows_per_task);
    std::vector<char> exact(rows_per_task);
    RowState state;
    state.K = K;
    state.thr.resize(rows_per_task);
    state.best.resize(rows_per_task);
    state.slack.resize(rows_per_task);
    state.candidates.resize(rows_per_task);
    state.prune_at.resize(rows_per_task);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * rows_per_task;
      const int64_t rows = std::min(rows_per_task, M - r0);
      const int64_t rows_padded = round_up(rows, mr);
      to_float_rows(x, r0, rows, xs.data());
      std::fill(xs.begin() + rows * D, xs.begin() + rows_padded * D, 0.0f);
      bool any_fast = false;
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0.0;
        for (int64_t d = 0; d < D; ++d) s += static_cast<double>(xs[r * D + d]) * xs[r * D + d];
        xx[r] = s;
        exact[r] = !(codebook_fast && std::isfinite(s) && s <= kFastNormSqMax);
        any_fast = any_fast || !exact[r];
        const double x_norm = std::sqrt(s);
        // |e_hat - e| <= b for every code; keep codes within 2b of the best, plus float64 slack.
        const double b = u * (2.0 * cc_max + (2.0 * D + 4.0) * x_norm * c_norm_max) * 1.0625 + 1e-44 * (D + 1);
        state.slack[r] = 2.0 * b + 0x1p-45 * (D + 4) * (s + 2.0 * x_norm * c_norm_max + cc_max);
        state.thr[r] = exact[r] ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
        state.best[r] = std::numeric_limits<float>::infinity();
        state.candidates[r].clear();
        state.prune_at[r] = 64;
      }
      if (any_fast) kt.vq_scan(args, xs.data(), rows_padded, rows, state.thr.data(), &state, on_candidates);
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = xs.data() + r * D;
        if (exact[r]) {
          result[r0 + r] = scan64(xr, cb, cc.data(), cc_max_nan, D, K, xx[r]);
          continue;
        }
        const std::vector<int64_t> ks = surviving(state.candidates[r], state.thr[r]);
        TORCH_CHECK(!ks.empty(), op, ": internal error, no candidate for row ", r0 + r);
        result[r0 + r] = ks.size() == 1 ? ks[0] : argmin_squared_difference(xr, cb, D, ks);
      }
    }
  });
  return out;
}

// The whole lookup: nearest codes, then one pass that gathers each row's code and its squared
// error (fp32 products, float64 sums). Both losses have the value mean |x - code|^2 (x's dtype);
// they are separate outputs because their gradients differ (commitment to x, codebook loss to the
// codes): the autograd is registered in Python (lam_fast/ops/vq/_autograd.py).
template <typename T>
void gather_codes(const Tensor& x, const Tensor& codebook, const int64_t* idx, Tensor& codes, double* row_err) {
  const int64_t M = x.size(0), D = x.size(1);
  const T* xp = x.const_data_ptr<T>();
  const T* cp = codebook.const_data_ptr<T>();
  T* out = codes.mutable_data_ptr<T>();
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* c = cp + idx[r] * D;
      const T* xr = xp + r * D;
      double sum = 0.0;
      for (int64_t d = 0; d < D; ++d) {
        out[r * D + d] = c[d];
        const float diff = static_cast<float>(xr[d]) - static_cast<float>(c[d]);
        sum += static_cast<double>(diff * diff);
      }
      row_err[r] = sum;
    }
  });
}

std::tuple<Tensor, Tensor, Tensor, Tensor> vq_quantize_cpu(const Tensor& x_, const Tensor& codebook_) {
  Tensor indices = vq_nearest_cpu(x_, codebook_);  // validates x and codebook
  const Tensor x = x_.contiguous(), codebook = codebook_.contiguous();
  const int64_t M = x.size(0);
  Tensor codes = at::empty(x.sizes(), x.options());
  std::vector<double> row_err(M);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "vq_quantize_cpu", [&] {
    gather_codes<scalar_t>(x, codebook, indices.const_data_ptr<int64_t>(), codes, row_err.data());
  });
  double total = 0.0;
  for (double e : row_err) total += e;  // fixed order: the loss does not depend on the thread count
  // M = 0 or D = 0: NaN, as F.mse_loss of empty tensors
  const double mean = x.numel() == 0 ? std::numeric_limits<double>::quiet_NaN() : total / double(x.numel());
  Tensor loss = at::scalar_tensor(mean, x.options());
  return {codes, indices, loss, loss.clone()};
}

}  // namespace
}  // namespace lam_fast

TORCH_LIBRARY_IMPL(lam_fast, CPU, m) {
  m.impl("vq_nearest", &lam_fast::vq_nearest_cpu);
  m.impl("vq_quantize", &lam_fast::vq_quantize_cpu);
}
