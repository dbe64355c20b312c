// CPU kernels for normjax's normalizations (XLA FFI custom calls, float32).
//
// Layout. The input is a contiguous array viewed as x[B, R, C]: B independent samples (the
// leading axes, vmapped seeds included), R rows reduced over (the "first" axes), and C channels
// (the trailing feature axes) in G contiguous groups of K = C / G channels. Statistics run over
// the R rows and the K channels of a group, per (sample, group):
//   BatchNorm NHWC  B = 1, R = N*H*W, G = C        InstanceNorm NHWC  B = N, R = H*W, G = C
//   GroupNorm NHWC  B = N, R = H*W, G = groups     LayerNorm / RMSNorm  B = rows, R = 1, G = 1
//
// Why a kernel: XLA:CPU runs every reduction as its own loop over memory, so a norm's forward
// and backward read the input four or more times. Here each direction reads it from memory once.
// A sample that fits in L2 (kSampleBytes) is the unit of work: the moments take two passes over
// it (the second from cache: the stable two-pass variance); the backward sums it and writes its
// dx while it is still cached. Rows of LayerNorm (R = 1) are reduced with lane-parallel sums.
// Larger samples (BatchNorm over a batch) are split into at most kMaxBlocks blocks of rows: the
// moments come from L1-sized chunks (two-pass each) merged with Chan, Golub & LeVeque's rule, and
// the backward takes two sweeps (sums, then dx). Narrower units (stripes of channels) and
// channel-blocked dx writes were measured slower: strided rows stream badly.
//
// Work is split into items of about kBlockBytes and claimed from an atomic counter by the calling
// thread and XLA's intra-op pool. Partial results are stored per item and merged in item order,
// so results do not depend on which thread ran what (deterministic).
//
// The NORMJAX_* macros below are tuning constants (measured on a 2-core AMD EPYC with 1 MB of
// L2 per core); they can be overridden at compile time for experiments.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#ifndef NORMJAX_CHUNK_BYTES
#define NORMJAX_CHUNK_BYTES (16 << 10)
#endif
#ifndef NORMJAX_BLOCK_BYTES
#define NORMJAX_BLOCK_BYTES (1 << 20)
#endif
#ifndef NORMJAX_SAMPLE_BYTES
#define NORMJAX_SAMPLE_BYTES (1 << 20)
#endif
#ifndef NORMJAX_MAX_HELPERS
#define NORMJAX_MAX_HELPERS 64
#endif
#ifndef NORMJAX_LANES
#define NORMJAX_LANES 64
#endif
constexpr int kLanes = NORMJAX_LANES;  // independent accumulators of a row sum
#ifndef NORMJAX_MAX_BLOCKS
#define NORMJAX_MAX_BLOCKS 8
#endif
constexpr int64_t kMaxBlocks = NORMJAX_MAX_BLOCKS;
constexpr int kCB = 64;  // channels per register block of the backward sums
#ifndef NORMJAX_CB_MAX_C  // wider rows: the blocked walk strides a page per row (slower)
#define NORMJAX_CB_MAX_C 256
#endif
#ifndef NORMJAX_MIN_CHUNK_ROWS
#define NORMJAX_MIN_CHUNK_ROWS 32
#endif
constexpr int64_t kChunkBytes = NORMJAX_CHUNK_BYTES;    // rows summed in float, in L1
constexpr int64_t kBlockBytes = NORMJAX_BLOCK_BYTES;    // one work item
constexpr int64_t kSampleBytes = NORMJAX_SAMPLE_BYTES;  // one-sweep backward up to this

struct Work {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  int64_t total = 0;
  std::function<void(int64_t)> fn;
};

void Drain(Work& w) {
  for (;;) {
    const int64_t i = w.next.fetch_add(1);
    if (i >= w.total) return;
    w.fn(i);
    w.done.fetch_add(1);
  }
}

// Runs fn(0), ..., fn(n - 1) on this thread and the pool. Items are claimed, not assigned: if
// the pool is busy this thread runs them all, so nested or concurrent calls cannot deadlock.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, std::function<void(int64_t)> fn) {
  if (n <= 0) return;
  auto w = std::make_shared<Work>();
  w->total = n;
  w->fn = std::move(fn);
  const int64_t helpers =
      std::min<int64_t>(std::min<int64_t>(pool.num_threads(), NORMJAX_MAX_HELPERS), n - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([w] { Drain(*w); });
  Drain(*w);
  while (w->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

struct Layout {
  int64_t B = 1, R = 1, C = 1, G = 1, K = 1;
  int64_t S = 1;  // rows of the per-channel parameters (vmapped seeds): B % S == 0
  int64_t group(int64_t c) const { return c / K; }
  int64_t seed(int64_t b) const { return b / (B / S); }
};

ffi::Error MakeLayout(ffi::Span<const int64_t> xd, int64_t groups, int64_t param_rows,
                      Layout* L) {
  if (xd.size() < 2) return ffi::Error::InvalidArgument("normjax kernel: input rank < 2");
  L->C = xd[xd.size() - 1];
  L->R = xd[xd.size() - 2];
  L->B = 1;
  for (size_t i = 0; i + 2 < xd.size(); ++i) L->B *= xd[i];
  L->G = groups;
  if (L->G <= 0 || L->C % L->G != 0)
    return ffi::Error::InvalidArgument("normjax kernel: groups must divide the channels");
  L->K = L->C / L->G;
  L->S = param_rows;
  if (L->S <= 0 || L->B % L->S != 0)
    return ffi::Error::InvalidArgument("normjax kernel: parameter rows must divide samples");
  return ffi::Error::Success();
}

int64_t Leading(ffi::Span<const int64_t> d) {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < d.size(); ++i) n *= d[i];
  return n;
}

// Rows per chunk: sums run in float over a chunk (about kChunkBytes, in L1), double across.
int64_t ChunkRows(int64_t channels) {
  return std::max<int64_t>(NORMJAX_MIN_CHUNK_ROWS, kChunkBytes / (4 * channels));
}

// Rows per block of a sample too large for L2: about kBlockBytes (bytes per element given), and
// at most kMaxBlocks blocks per sample (each block leaves a C-sized partial to merge serially).
int64_t BlockRows(const Layout& L, int64_t bytes) {
  const int64_t by_bytes = std::max<int64_t>(1, kBlockBytes / (bytes * L.C));
  return std::max(by_bytes, (L.R + kMaxBlocks - 1) / kMaxBlocks);
}

// Items: consecutive whole samples, about kBlockBytes each (bytes per element given), never
// spanning two parameter rows (seeds), so per-item parameter-gradient partials stay per seed.
struct SampleItems {
  int64_t per = 1, per_seed = 1, samples_per_seed = 1;
  SampleItems(const Layout& L, int64_t bytes) {
    samples_per_seed = L.B / L.S;
    per = std::max<int64_t>(1, kBlockBytes / std::max<int64_t>(1, bytes * L.R * L.C));
    per_seed = (samples_per_seed + per - 1) / per;
  }
  int64_t count(const Layout& L) const { return L.S * per_seed; }
  int64_t begin(int64_t i) const {
    return (i / per_seed) * samples_per_seed + (i % per_seed) * per;
  }
  int64_t end(int64_t i) const {
    return std::min((i / per_seed + 1) * samples_per_seed, begin(i) + per);
  }
};

// Whether one sample (bytes per element given) fits the cache budget for a one-sweep pass.
// (Narrower stripes of channels were measured slower: strided rows stream badly.)
bool SampleFits(const Layout& L, int64_t bytes) { return bytes * L.R * L.C <= kSampleBytes; }

// Sum of f(0..n-1) with kLanes independent float lanes (vectorized; deterministic order).
template <typename F>
double LaneSum(int64_t n, F f) {
  float acc[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += f(i + l);
  double t = 0;
  for (; i < n; ++i) t += f(i);
  for (int l = 0; l < kLanes; ++l) t += acc[l];
  return t;
}

// acc[c] += sum over rows [r0, r1) of f(x[r, c], c): float within L1 chunks, double across.
template <typename F>
void ChannelSums(const float* __restrict x, int64_t C, int64_t r0, int64_t r1,
                 double* __restrict acc, float* __restrict tmp, F f) {
  const int64_t rows = ChunkRows(C);
  for (int64_t lo = r0; lo < r1; lo += rows) {
    const int64_t hi = std::min(r1, lo + rows);
    std::fill(tmp, tmp + C, 0.f);
    int64_t r = lo;
    for (; r + 4 <= hi; r += 4) {  // four rows per pass over the accumulators
      const float* __restrict row = x + r * C;
      for (int64_t c = 0; c < C; ++c)
        tmp[c] += (f(row[c], c) + f(row[C + c], c)) + (f(row[2 * C + c], c) + f(row[3 * C + c], c));
    }
    for (; r < hi; ++r) {
      const float* __restrict row = x + r * C;
      for (int64_t c = 0; c < C; ++c) tmp[c] += f(row[c], c);
    }
    for (int64_t c = 0; c < C; ++c) acc[c] += tmp[c];
  }
}

void WriteMoments(double mu, double var_c, bool center, float* mean, float* var) {
  *mean = center ? float(mu) : 0.f;
  *var = float(center ? var_c : var_c + mu * mu);
}

// ---------------------------------------------------------------------------------------------
// Moments

struct Scratch {
  std::vector<double> d1, d2;
  std::vector<float> f1, f2, f3, f4;
  explicit Scratch(int64_t n) : d1(n), d2(n), f1(n), f2(n), f3(n), f4(n) {}
};

// Moments of the groups of one sample (x points at it; mean, var at its G outputs).
void SampleMoments(const float* x, const Layout& L, bool center, float* mean, float* var,
                   Scratch& t) {
  const int64_t w = L.C;
  const int64_t K = L.K;
  const double n = double(L.R) * K;
  if (L.R == 1) {  // LayerNorm rows: lane sums per group
    for (int64_t g = 0; g < L.G; ++g) {
      const float* xg = x + g * K;
      const float m = float(LaneSum(K, [xg](int64_t i) { return xg[i]; }) / n);
      const double v = LaneSum(K, [xg, m](int64_t i) {
        const float d = xg[i] - m;
        return d * d;
      }) / n;
      WriteMoments(m, v, center, mean + g, var + g);
    }
    return;
  }
  double* s = t.d1.data();
  double* q = t.d2.data();
  float* gm = t.f1.data();
  std::fill(s, s + w, 0.0);
  ChannelSums(x, L.C, 0, L.R, s, t.f2.data(), [](float v, int64_t) { return v; });
  for (int64_t g = 0; g < L.G; ++g) {
    const float m = float(LaneSum(K, [s, g, K](int64_t k) { return float(s[g * K + k]); }) / n);
    for (int64_t k = 0; k < K; ++k) gm[g * K + k] = m;
  }
  std::fill(q, q + w, 0.0);
  ChannelSums(x, L.C, 0, L.R, q, t.f2.data(), [gm](float v, int64_t c) {
    const float d = v - gm[c];
    return d * d;
  });
  for (int64_t g = 0; g < L.G; ++g) {
    double m2 = 0;
    for (int64_t k = 0; k < K; ++k) m2 += q[g * K + k];
    WriteMoments(gm[g * K], m2 / n, center, mean + g, var + g);
  }
}

// Per-channel (mean, M2) of rows [r0, r1) of one sample: a two-pass per L1 chunk, merged
// across chunks with Chan et al.'s rule (the same count for every channel).
void ChunkedChannelMoments(const float* __restrict x, int64_t C, int64_t r0, int64_t r1,
                           double* __restrict mean, double* __restrict m2,
                           float* __restrict cm, float* __restrict tmp) {
  const int64_t rows = ChunkRows(C);
  double n = 0;
  for (int64_t lo = r0; lo < r1; lo += rows) {
    const int64_t hi = std::min(r1, lo + rows);
    const float nb = float(hi - lo);
    std::fill(tmp, tmp + C, 0.f);
    for (int64_t r = lo; r < hi; ++r)
      for (int64_t c = 0; c < C; ++c) tmp[c] += x[r * C + c];
    for (int64_t c = 0; c < C; ++c) cm[c] = tmp[c] / nb;
    std::fill(tmp, tmp + C, 0.f);
    for (int64_t r = lo; r < hi; ++r)
      for (int64_t c = 0; c < C; ++c) {
        const float d = x[r * C + c] - cm[c];
        tmp[c] += d * d;
      }
    const double tot = n + nb, wa = double(nb) / tot, wd = n * double(nb) / tot;
    for (int64_t c = 0; c < C; ++c) {
      const double d = double(cm[c]) - mean[c];
      mean[c] += d * wa;
      m2[c] += double(tmp[c]) + d * d * wd;
    }
    n = tot;
  }
}

// Samples too large for L2: chunked per-channel moments per block of rows,
// merged per sample (Chan et al.), then pooled into groups.
void BlockedMoments(ffi::ThreadPool& pool, const float* xp, const Layout& L, bool center,
                    float* mp, float* vp) {
  const int64_t rows = BlockRows(L, 4);
  const int64_t nblk = (L.R + rows - 1) / rows;
  std::vector<double> part(L.B * nblk * 2 * L.C, 0.0);  // per block: mean[C], M2[C]
  ParallelFor(pool, L.B * nblk, [&](int64_t p) {
    std::vector<float> cm(L.C), tmp(L.C);
    const int64_t b = p / nblk, r0 = (p % nblk) * rows, r1 = std::min(L.R, r0 + rows);
    ChunkedChannelMoments(xp + b * L.R * L.C, L.C, r0, r1, &part[p * 2 * L.C],
                          &part[p * 2 * L.C + L.C], cm.data(), tmp.data());
  });
  std::vector<double> mu(L.C), m2(L.C);
  for (int64_t b = 0; b < L.B; ++b) {
    double n = 0;
    std::fill(mu.begin(), mu.end(), 0.0);
    std::fill(m2.begin(), m2.end(), 0.0);
    for (int64_t k = 0; k < nblk; ++k) {
      const double nb = double(std::min(L.R, (k + 1) * rows) - k * rows), tot = n + nb;
      const double* q = &part[(b * nblk + k) * 2 * L.C];
      for (int64_t c = 0; c < L.C; ++c) {
        const double d = q[c] - mu[c];
        mu[c] += d * nb / tot;
        m2[c] += q[L.C + c] + d * d * n * nb / tot;
      }
      n = tot;
    }
    for (int64_t g = 0; g < L.G; ++g) {  // channels -> groups (equal counts n)
      double gmu = 0, gm2 = 0;
      for (int64_t k = 0; k < L.K; ++k) gmu += mu[g * L.K + k];
      gmu /= double(L.K);
      for (int64_t k = 0; k < L.K; ++k) {
        const double d = mu[g * L.K + k] - gmu;
        gm2 += m2[g * L.K + k] + n * d * d;
      }
      WriteMoments(gmu, gm2 / (n * L.K), center, mp + b * L.G + g, vp + b * L.G + g);
    }
  }
}

// mean[B, G] and biased var[B, G] of x[B, R, C] (center = false: mean 0, var = E[x^2]).
ffi::Error Moments(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> mean,
                   ffi::ResultBuffer<ffi::F32> var, bool center) {
  Layout L;
  const auto md = mean->dimensions();
  if (auto e = MakeLayout(x.dimensions(), md[md.size() - 1], 1, &L); e.failure()) return e;
  const float* xp = x.typed_data();
  float* mp = mean->typed_data();
  float* vp = var->typed_data();
  if (!SampleFits(L, 4)) {
    BlockedMoments(pool, xp, L, center, mp, vp);
    return ffi::Error::Success();
  }
  const SampleItems items(L, 4);
  ParallelFor(pool, items.count(L), [&](int64_t i) {
    Scratch t(L.C);
    for (int64_t b = items.begin(i); b < items.end(i); ++b)
      SampleMoments(xp + b * L.R * L.C, L, center, mp + b * L.G, vp + b * L.G, t);
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Backward

struct GradArgs {
  const float *g, *x, *mean, *rstd, *scale, *gmean, *gvar;
  float *dx, *t2;
  bool center;
};

// dx coefficients of one group from its sums s1 = sum(h), t2 = sum(h (x - mean)), h = g scale:
//   dx = r h + (g_mean - r s1) / n + (2 g_var - r^3 t2) / n * (x - mean).
struct GroupCoef {
  double r, mu, c0, c1;
};

GroupCoef Coefficients(const GradArgs& A, const Layout& L, int64_t bg, double s1, double t2) {
  const double n = double(L.R) * L.K;
  const double r = A.rstd[bg], mu = A.center ? A.mean[bg] : 0.0;
  const double c1 = (2.0 * A.gvar[bg] - r * r * r * t2) / n;
  const double c0 = A.center ? (A.gmean[bg] - r * s1) / n : 0.0;
  A.t2[bg] = float(t2);
  return {r, mu, c0, c1};
}

// sum(g sc) and sum(g sc (x - mu)) over n elements, with kLanes float lanes each (one pass).
void RowSums(const float* __restrict g, const float* __restrict sc, const float* __restrict x,
             float mu, int64_t n, double* s1, double* t2) {
  float a[kLanes] = {0}, b[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float h = g[i + l] * sc[i + l];
      a[l] += h;
      b[l] += h * (x[i + l] - mu);
    }
  double u = 0, v = 0;
  for (; i < n; ++i) {
    const float h = g[i] * sc[i];
    u += h;
    v += h * (x[i] - mu);
  }
  for (int l = 0; l < kLanes; ++l) {
    u += a[l];
    v += b[l];
  }
  *s1 = u;
  *t2 = v;
}

// From one sample's channel sums sg = sum(g), sgx = sum(g (x - mean)): its dx coefficients
// (dx = P g + Q x + O per channel) and its share of dscale / dbias.
void SampleCoefficients(const GradArgs& A, const Layout& L, int64_t b, const double* sg,
                        const double* sgx, float* P, float* Q, float* O, double* dscale,
                        double* dbias) {
  const float* scale = A.scale + L.seed(b) * L.C;
  for (int64_t grp = 0; grp < L.G; ++grp) {
    double s1 = 0, t2 = 0;
    for (int64_t k = 0; k < L.K; ++k) {
      const int64_t c = grp * L.K + k;
      s1 += double(scale[c]) * sg[c];
      t2 += double(scale[c]) * sgx[c];
    }
    const GroupCoef k = Coefficients(A, L, b * L.G + grp, s1, t2);
    for (int64_t j = 0; j < L.K; ++j) {
      const int64_t c = grp * L.K + j;
      P[c] = float(k.r * scale[c]);
      Q[c] = float(k.c1);
      O[c] = float(k.c0 - k.c1 * k.mu);
      dscale[c] += k.r * sgx[c];
      dbias[c] += sg[c];
    }
  }
}

// Adds partials first .. first + count - 1 (each 2 * C doubles: two C-vectors) into u and v, in
// order, each read sequentially.
void SumPartials(const std::vector<double>& parts, int64_t first, int64_t count, int64_t C,
                 double* u, double* v) {
  for (int64_t k = first; k < first + count; ++k) {
    const double* q = &parts[k * 2 * C];
    for (int64_t c = 0; c < C; ++c) {
      u[c] += q[c];
      v[c] += q[C + c];
    }
  }
}

// LayerNorm rows (R = 1): per group one pass of sums, then dx and the parameter-gradient
// partials (float, per item) from L1. (Four rows per pass over the partials was measured
// slower.)
void RowGrad(const GradArgs& A, const Layout& L, int64_t b, float* __restrict dscale,
             float* __restrict dbias) {
  const int64_t K = L.K, off = b * L.C;
  const float* __restrict scale = A.scale + L.seed(b) * L.C;
  for (int64_t grp = 0; grp < L.G; ++grp) {
    const int64_t o = off + grp * K, bg = b * L.G + grp;
    const float* __restrict g = A.g + o;
    const float* __restrict x = A.x + o;
    const float* __restrict sc = scale + grp * K;
    const float mu = A.center ? A.mean[bg] : 0.f;
    double s1, t2;
    RowSums(g, sc, x, mu, K, &s1, &t2);
    const GroupCoef k = Coefficients(A, L, bg, s1, t2);
    const float r = float(k.r), c0 = float(k.c0), c1 = float(k.c1);
    float* __restrict dx = A.dx + o;
    float* __restrict ds = dscale + grp * K;
    float* __restrict db = dbias + grp * K;
    for (int64_t i = 0; i < K; ++i) {
      const float xc = x[i] - mu;
      dx[i] = r * sc[i] * g[i] + c0 + c1 * xc;
      ds[i] += g[i] * xc * r;
      db[i] += g[i];
    }
  }
}

// Per-channel sum(g) and sum(g (x - mean)) over rows [r0, r1) of one sample, into doubles
// (float within a chunk).
void BlockGradSums(const float* __restrict g, const float* __restrict x, const float* __restrict m,
                   int64_t C, int64_t r0, int64_t r1, double* __restrict sg,
                   double* __restrict sgx, float* __restrict a, float* __restrict b) {
  const int64_t rows = ChunkRows(C);
  const int64_t cb_end = C <= NORMJAX_CB_MAX_C ? C / kCB * kCB : 0;
  for (int64_t lo = r0; lo < r1; lo += rows) {
    const int64_t hi = std::min(r1, lo + rows);
    // kCB channels at a time over the chunk's rows: the accumulators stay in registers.
    for (int64_t c0 = 0; c0 < cb_end; c0 += kCB) {
      float u[kCB] = {0}, v[kCB] = {0}, mm[kCB];
      for (int l = 0; l < kCB; ++l) mm[l] = m[c0 + l];
      for (int64_t r = lo; r < hi; ++r) {
        const float* __restrict gr = g + r * C + c0;
        const float* __restrict xr = x + r * C + c0;
        for (int l = 0; l < kCB; ++l) {
          u[l] += gr[l];
          v[l] += gr[l] * (xr[l] - mm[l]);
        }
      }
      for (int l = 0; l < kCB; ++l) {
        sg[c0 + l] += u[l];
        sgx[c0 + l] += v[l];
      }
    }
    if (cb_end == C) continue;
    std::fill(a + cb_end, a + C, 0.f);
    std::fill(b + cb_end, b + C, 0.f);
    for (int64_t r = lo; r < hi; ++r) {
      const float* __restrict gr = g + r * C;
      const float* __restrict xr = x + r * C;
      for (int64_t c = cb_end; c < C; ++c) {
        a[c] += gr[c];
        b[c] += gr[c] * (xr[c] - m[c]);
      }
    }
    for (int64_t c = cb_end; c < C; ++c) {
      sg[c] += a[c];
      sgx[c] += b[c];
    }
  }
}

// dx = P g + Q x + O (per channel) over rows [r0, r1) of one sample. (Blocks of channels
// with P, Q, O in registers were measured slower: strided writes.)
void BlockDx(const float* __restrict g, const float* __restrict x, const float* __restrict P,
             const float* __restrict Q, const float* __restrict O, int64_t C, int64_t r0,
             int64_t r1, float* __restrict dx) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict gr = g + r * C;
    const float* __restrict xr = x + r * C;
    float* __restrict dr = dx + r * C;
    for (int64_t c = 0; c < C; ++c) dr[c] = P[c] * gr[c] + Q[c] * xr[c] + O[c];
  }
}

// Sample b's group means per channel (0 for RMSNorm).
void ChannelMeans(const GradArgs& A, const Layout& L, int64_t b, float* m) {
  for (int64_t c = 0; c < L.C; ++c) m[c] = A.center ? A.mean[b * L.G + L.group(c)] : 0.f;
}

// One sample b: channel sums, group coefficients, then dx while the sample is cached, and its
// parameter-gradient partials.
void SampleGrad(const GradArgs& A, const Layout& L, int64_t b, double* dscale, double* dbias,
                Scratch& t) {
  const int64_t w = L.C, off = b * L.R * L.C;
  float* m = t.f1.data();
  ChannelMeans(A, L, b, m);
  double* sg = t.d1.data();
  double* sgx = t.d2.data();
  std::fill(sg, sg + w, 0.0);
  std::fill(sgx, sgx + w, 0.0);
  const float* g = A.g + off;
  const float* x = A.x + off;
  BlockGradSums(g, x, m, L.C, 0, L.R, sg, sgx, t.f2.data(), t.f3.data());
  float* P = t.f2.data();
  float* Q = t.f3.data();
  float* O = t.f4.data();
  SampleCoefficients(A, L, b, sg, sgx, P, Q, O, dscale, dbias);
  BlockDx(g, x, P, Q, O, L.C, 0, L.R, A.dx + off);
}

// Samples that fit in L2: one sweep. dparts gets 2 * C doubles (dscale, dbias) per item.
int64_t GradPerSample(ffi::ThreadPool& pool, const GradArgs& A, const Layout& L,
                      std::vector<double>& dparts) {
  const SampleItems items(L, 8);
  dparts.assign(items.count(L) * 2 * L.C, 0.0);
  ParallelFor(pool, items.count(L), [&](int64_t i) {
    double* ds = &dparts[i * 2 * L.C];
    if (L.R == 1) {
      std::vector<float> fs(L.C, 0.f), fb(L.C, 0.f);
      for (int64_t u = items.begin(i); u < items.end(i); ++u)
        RowGrad(A, L, u, fs.data(), fb.data());
      for (int64_t c = 0; c < L.C; ++c) {
        ds[c] = fs[c];
        ds[L.C + c] = fb[c];
      }
      return;
    }
    Scratch t(L.C);
    for (int64_t b = items.begin(i); b < items.end(i); ++b) SampleGrad(A, L, b, ds, ds + L.C, t);
  });
  return items.per_seed;
}

// Samples too large for L2 (BatchNorm over a large batch): sums per block of rows, merged
// per sample, then dx in a second sweep. dparts gets 2 * C doubles per sample.
int64_t GradTwoSweeps(ffi::ThreadPool& pool, const GradArgs& A, const Layout& L,
                      std::vector<double>& dparts) {
  const int64_t rows = BlockRows(L, 8);
  const int64_t nblk = (L.R + rows - 1) / rows;
  std::vector<double> part(L.B * nblk * 2 * L.C, 0.0);
  ParallelFor(pool, L.B * nblk, [&](int64_t p) {
    std::vector<float> m(L.C), a(L.C), bb(L.C);
    const int64_t b = p / nblk, r0 = (p % nblk) * rows, r1 = std::min(L.R, r0 + rows);
    ChannelMeans(A, L, b, m.data());
    const int64_t off = b * L.R * L.C;
    BlockGradSums(A.g + off, A.x + off, m.data(), L.C, r0, r1, &part[p * 2 * L.C],
                  &part[p * 2 * L.C + L.C], a.data(), bb.data());
  });
  std::vector<float> coef(L.B * 3 * L.C);
  dparts.assign(L.B * 2 * L.C, 0.0);
  std::vector<double> sg(L.C), sgx(L.C);
  for (int64_t b = 0; b < L.B; ++b) {
    std::fill(sg.begin(), sg.end(), 0.0);
    std::fill(sgx.begin(), sgx.end(), 0.0);
    SumPartials(part, b * nblk, nblk, L.C, sg.data(), sgx.data());
    float* cb = &coef[b * 3 * L.C];
    double* ds = &dparts[b * 2 * L.C];
    SampleCoefficients(A, L, b, sg.data(), sgx.data(), cb, cb + L.C, cb + 2 * L.C, ds,
                       ds + L.C);
  }
  ParallelFor(pool, L.B * nblk, [&](int64_t p) {
    const int64_t b = p / nblk, r0 = (p % nblk) * rows, r1 = std::min(L.R, r0 + rows);
    const float* P = &coef[b * 3 * L.C];
    const float* Q = P + L.C;
    const float* O = Q + L.C;
    const int64_t o = b * L.R * L.C;
    BlockDx(A.g + o, A.x + o, P, Q, O, L.C, r0, r1, A.dx + o);
  });
  return L.B / L.S;
}

// The closed-form backward of y = (x - mean) * rstd * scale + bias (see normjax._fused_grad):
// dx[B, R, C], dscale[S, C], dbias[S, C] (summed over the samples of each parameter row) and
// t2[B, G] = sum(g * scale * (x - mean)) per group (for the epsilon gradient).
ffi::Error Grad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> x,
                ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> rstd,
                ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> gmean,
                ffi::Buffer<ffi::F32> gvar, ffi::ResultBuffer<ffi::F32> dx,
                ffi::ResultBuffer<ffi::F32> dscale, ffi::ResultBuffer<ffi::F32> dbias,
                ffi::ResultBuffer<ffi::F32> t2, bool center) {
  Layout L;
  const auto md = mean.dimensions();
  if (auto e = MakeLayout(x.dimensions(), md[md.size() - 1], Leading(scale.dimensions()), &L);
      e.failure())
    return e;
  const GradArgs A{g.typed_data(),     x.typed_data(),    mean.typed_data(),
                   rstd.typed_data(),  scale.typed_data(), gmean.typed_data(),
                   gvar.typed_data(),  dx->typed_data(),   t2->typed_data(), center};
  std::vector<double> dparts;
  const int64_t parts_per_seed = SampleFits(L, 8) ? GradPerSample(pool, A, L, dparts)
                                                 : GradTwoSweeps(pool, A, L, dparts);
  float* ds = dscale->typed_data();
  float* db = dbias->typed_data();
  std::vector<double> a(L.C), b(L.C);
  for (int64_t s = 0; s < L.S; ++s) {
    std::fill(a.begin(), a.end(), 0.0);
    std::fill(b.begin(), b.end(), 0.0);
    SumPartials(dparts, s * parts_per_seed, parts_per_seed, L.C, a.data(), b.data());
    for (int64_t c = 0; c < L.C; ++c) {
      ds[s * L.C + c] = float(a[c]);
      db[s * L.C + c] = float(b[c]);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NormjaxMoments, Moments,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("center"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(NormjaxGrad, Grad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // g
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x
                                  .Arg<ffi::Buffer<ffi::F32>>()   // mean
                                  .Arg<ffi::Buffer<ffi::F32>>()   // rstd
                                  .Arg<ffi::Buffer<ffi::F32>>()   // scale
                                  .Arg<ffi::Buffer<ffi::F32>>()   // g_mean
                                  .Arg<ffi::Buffer<ffi::F32>>()   // g_var
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dx
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dscale
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dbias
                                  .Ret<ffi::Buffer<ffi::F32>>()   // t2
                                  .Attr<bool>("center"));
