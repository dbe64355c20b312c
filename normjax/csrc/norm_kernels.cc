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
// and backward read the input four or more times. Here the input is read once per direction:
// statistics come from chunks of rows that fit in L1 (a two-pass there, so the variance is the
// stable one), merged across chunks with Chan, Golub & LeVeque's rule; and where one sample fits
// in L2 the backward writes dx right after summing that sample, while it is still cached.
//
// Work is split into items of about kBlockBytes and claimed from an atomic counter by the calling
// thread and XLA's intra-op pool. Partial results are stored per item and merged in item order,
// so results do not depend on which thread ran what (deterministic).

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
#define NORMJAX_BLOCK_BYTES (256 << 10)
#endif
#ifndef NORMJAX_SAMPLE_BYTES
#define NORMJAX_SAMPLE_BYTES (1 << 20)
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
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([w] { Drain(*w); });
  Drain(*w);
  while (w->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

struct Layout {
  int64_t B = 1, R = 1, C = 1, G = 1, K = 1;
  int64_t S = 1;     // rows of the per-channel parameters (vmapped seeds): B % S == 0
  int64_t CR = 1;    // rows per chunk
  int64_t J = 1;     // chunks per sample
  int64_t NB = 1;    // chunks per block
  int64_t nblk = 1;  // blocks per sample
  int64_t group(int64_t c) const { return c / K; }
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
  const int64_t row = 4 * L->C;
  L->CR = std::max<int64_t>(1, std::min<int64_t>(L->R, kChunkBytes / row));
  L->J = (L->R + L->CR - 1) / L->CR;
  L->NB = std::max<int64_t>(1, kBlockBytes / (L->CR * row));
  L->nblk = (L->J + L->NB - 1) / L->NB;
  return ffi::Error::Success();
}

int64_t Leading(ffi::Span<const int64_t> d) {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < d.size(); ++i) n *= d[i];
  return n;
}

// Blocks: (sample b, block k) pairs numbered p = b * nblk + k; a block covers chunks
// [k * NB, min(J, (k + 1) * NB)) of sample b. Items group consecutive blocks to ~kBlockBytes.
struct Items {
  int64_t per = 1, n = 0, pairs = 0;
  explicit Items(const Layout& L) {
    pairs = L.B * L.nblk;
    const int64_t pair_bytes = std::max<int64_t>(1, L.NB * L.CR * 4 * L.C);
    per = std::max<int64_t>(1, kBlockBytes / pair_bytes);
    n = (pairs + per - 1) / per;
  }
  int64_t begin(int64_t i) const { return i * per; }
  int64_t end(int64_t i) const { return std::min(pairs, (i + 1) * per); }
};

void ChunkRows(const Layout& L, int64_t pair, int64_t* r0, int64_t* r1) {
  const int64_t k = pair % L.nblk;
  *r0 = k * L.NB * L.CR;
  *r1 = std::min(L.R, (k + 1) * L.NB * L.CR);
}

// Adds sum over rows [r0, r1) of f(row[c], c) per channel into acc[c] (float within an L1 chunk,
// double across chunks).
template <typename F>
void ChannelSums(const float* __restrict x, const Layout& L, int64_t r0, int64_t r1,
                 double* __restrict acc, float* __restrict tmp, F f) {
  const int64_t C = L.C;
  for (int64_t lo = r0; lo < r1; lo += L.CR) {
    const int64_t hi = std::min(r1, lo + L.CR);
    std::fill(tmp, tmp + C, 0.f);
    for (int64_t r = lo; r < hi; ++r) {
      const float* __restrict row = x + r * C;
      for (int64_t c = 0; c < C; ++c) tmp[c] += f(row[c], c);
    }
    for (int64_t c = 0; c < C; ++c) acc[c] += tmp[c];
  }
}

// Pools per-channel (count n, mean[c], M2[c]) into groups (Chan et al.; equal counts) and
// writes mean / var (center = false: mean 0, var = E[x^2]).
void WriteGroups(const Layout& L, double n, const double* mean_c, const double* m2_c,
                 bool center, float* mean, float* var) {
  for (int64_t g = 0; g < L.G; ++g) {
    double mu = 0, m2 = 0;
    for (int64_t k = 0; k < L.K; ++k) mu += mean_c[g * L.K + k];
    mu /= double(L.K);
    for (int64_t k = 0; k < L.K; ++k) {
      const double d = mean_c[g * L.K + k] - mu;
      m2 += m2_c[g * L.K + k] + n * d * d;
    }
    const double v = n > 0 ? m2 / (n * L.K) : 0.0;
    mean[g] = center ? float(mu) : 0.f;
    var[g] = float(center ? v : v + mu * mu);
  }
}

// One sample that fits in L2: per-channel sums, group means, then sum (x - group mean)^2 from
// cache (the two-pass variance).
void SampleMoments(const float* x, const Layout& L, bool center, float* mean, float* var,
                   double* s, double* q, float* gm, float* tmp) {
  std::fill(s, s + L.C, 0.0);
  ChannelSums(x, L, 0, L.R, s, tmp, [](float v, int64_t) { return v; });
  for (int64_t g = 0; g < L.G; ++g) {
    double t = 0;
    for (int64_t k = 0; k < L.K; ++k) t += s[g * L.K + k];
    const float m = float(t / (double(L.R) * L.K));
    for (int64_t k = 0; k < L.K; ++k) gm[g * L.K + k] = m;
  }
  std::fill(q, q + L.C, 0.0);
  ChannelSums(x, L, 0, L.R, q, tmp, [gm](float v, int64_t c) {
    const float d = v - gm[c];
    return d * d;
  });
  for (int64_t g = 0; g < L.G; ++g) {
    double m2 = 0;
    for (int64_t k = 0; k < L.K; ++k) m2 += q[g * L.K + k];
    const double n = double(L.R) * L.K, mu = gm[g * L.K];
    const double v = m2 / n;
    mean[g] = center ? float(mu) : 0.f;
    var[g] = float(center ? v : v + mu * mu);
  }
}

// Per-channel (mean, M2) of rows [r0, r1) of one sample: a two-pass per L1 chunk, merged
// across chunks with Chan et al.'s rule (the same count for every channel).
void BlockChannelMoments(const float* __restrict x, const Layout& L, int64_t r0, int64_t r1,
                         double* __restrict mean, double* __restrict m2, float* __restrict cm,
                         float* __restrict tmp) {
  const int64_t C = L.C;
  double n = 0;
  for (int64_t lo = r0; lo < r1; lo += L.CR) {
    const int64_t hi = std::min(r1, lo + L.CR);
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

// mean[B, G] and biased var[B, G] of x[B, R, C] (center = false: mean 0, var = E[x^2]).
ffi::Error Moments(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> mean,
                   ffi::ResultBuffer<ffi::F32> var, bool center) {
  Layout L;
  const auto md = mean->dimensions();
  if (auto e = MakeLayout(x.dimensions(), md[md.size() - 1], 1, &L); e.failure()) return e;
  const float* xp = x.typed_data();
  float* mp = mean->typed_data();
  float* vp = var->typed_data();
  if (4 * L.R * L.C <= kSampleBytes) {  // whole samples per item
    const int64_t per = std::max<int64_t>(1, kBlockBytes / (4 * L.R * L.C));
    ParallelFor(pool, (L.B + per - 1) / per, [&](int64_t i) {
      std::vector<double> s(L.C), q(L.C);
      std::vector<float> gm(L.C), tmp(L.C);
      for (int64_t b = i * per; b < std::min(L.B, (i + 1) * per); ++b)
        SampleMoments(xp + b * L.R * L.C, L, center, mp + b * L.G, vp + b * L.G, s.data(),
                      q.data(), gm.data(), tmp.data());
    });
    return ffi::Error::Success();
  }
  const Items items(L);
  std::vector<double> part(items.pairs * 2 * L.C, 0.0);  // per block: mean[C], M2[C]
  ParallelFor(pool, items.n, [&](int64_t i) {
    std::vector<float> cm(L.C), tmp(L.C);
    for (int64_t p = items.begin(i); p < items.end(i); ++p) {
      int64_t r0, r1;
      ChunkRows(L, p, &r0, &r1);
      BlockChannelMoments(xp + (p / L.nblk) * L.R * L.C, L, r0, r1, &part[p * 2 * L.C],
                          &part[p * 2 * L.C + L.C], cm.data(), tmp.data());
    }
  });
  std::vector<double> mu(L.C), m2(L.C);
  for (int64_t b = 0; b < L.B; ++b) {
    double n = 0;
    std::fill(mu.begin(), mu.end(), 0.0);
    std::fill(m2.begin(), m2.end(), 0.0);
    for (int64_t k = 0; k < L.nblk; ++k) {
      int64_t r0, r1;
      ChunkRows(L, b * L.nblk + k, &r0, &r1);
      const double nb = double(r1 - r0), tot = n + nb;
      const double* q = &part[(b * L.nblk + k) * 2 * L.C];
      for (int64_t c = 0; c < L.C; ++c) {
        const double d = q[c] - mu[c];
        mu[c] += d * nb / tot;
        m2[c] += q[L.C + c] + d * d * n * nb / tot;
      }
      n = tot;
    }
    WriteGroups(L, n, mu.data(), m2.data(), center, mp + b * L.G, vp + b * L.G);
  }
  return ffi::Error::Success();
}

// Per-channel sum(g) and sum(g * (x - mean)) over rows [r0, r1) of one sample, added to
// double accumulators (float within an L1 chunk).
void BlockGradSums(const float* __restrict g, const float* __restrict x, const float* __restrict m,
                   const Layout& L, int64_t r0, int64_t r1, double* __restrict sg,
                   double* __restrict sgx, float* __restrict a, float* __restrict b) {
  const int64_t C = L.C;
  for (int64_t lo = r0; lo < r1; lo += L.CR) {
    const int64_t hi = std::min(r1, lo + L.CR);
    std::fill(a, a + C, 0.f);
    std::fill(b, b + C, 0.f);
    for (int64_t r = lo; r < hi; ++r) {
      const float* __restrict gr = g + r * C;
      const float* __restrict xr = x + r * C;
      for (int64_t c = 0; c < C; ++c) {
        a[c] += gr[c];
        b[c] += gr[c] * (xr[c] - m[c]);
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      sg[c] += a[c];
      sgx[c] += b[c];
    }
  }
}

// dx = P * g + Q * x + O over rows [r0, r1) of one sample.
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

struct GradArgs {
  const float *g, *x, *mean, *rstd, *scale, *gmean, *gvar;
  float *dx, *t2;
  bool center;
};

// From one sample's channel sums: its t2 (per group), its dx coefficients, and its share of
// dscale / dbias. With h = g * scale, per group (n = R * K elements):
//   s1 = sum(h), t2 = sum(h * (x - mean)),
//   dx = r * h + (g_mean - r * s1) / n + (2 g_var - r^3 t2) / n * (x - mean).
void SampleCoefficients(const GradArgs& A, const Layout& L, int64_t b, const double* sg,
                        const double* sgx, float* P, float* Q, float* O, double* dscale,
                        double* dbias) {
  const float* scale = A.scale + (b / (L.B / L.S)) * L.C;
  const double n = double(L.R) * L.K;
  for (int64_t grp = 0; grp < L.G; ++grp) {
    double s1 = 0, t2 = 0;
    for (int64_t k = 0; k < L.K; ++k) {
      const int64_t c = grp * L.K + k;
      s1 += double(scale[c]) * sg[c];
      t2 += double(scale[c]) * sgx[c];
    }
    const int64_t bg = b * L.G + grp;
    const double r = A.rstd[bg], mu = A.center ? A.mean[bg] : 0.0;
    const double c1 = (2.0 * A.gvar[bg] - r * r * r * t2) / n;
    const double c0 = A.center ? (A.gmean[bg] - r * s1) / n : 0.0;
    A.t2[bg] = float(t2);
    for (int64_t k = 0; k < L.K; ++k) {
      const int64_t c = grp * L.K + k;
      P[c] = float(r * scale[c]);
      Q[c] = float(c1);
      O[c] = float(c0 - c1 * mu);
      dscale[c] += r * sgx[c];
      dbias[c] += sg[c];
    }
  }
}

void ExpandMean(const GradArgs& A, const Layout& L, int64_t b, float* m) {
  for (int64_t c = 0; c < L.C; ++c) m[c] = A.center ? A.mean[b * L.G + L.group(c)] : 0.f;
}

// Samples that fit in L2: each item sums whole samples and writes their dx while cached.
// Items never straddle a parameter row (seed), so dscale / dbias partials stay per seed.
void GradPerSample(ffi::ThreadPool& pool, const GradArgs& A, const Layout& L,
                   std::vector<double>& dparts, int64_t* per_item) {
  const int64_t per_seed = L.B / L.S;
  const int64_t per = std::max<int64_t>(1, kBlockBytes / std::max<int64_t>(1, 4 * L.R * L.C));
  const int64_t items_per_seed = (per_seed + per - 1) / per;
  *per_item = items_per_seed;
  dparts.assign(L.S * items_per_seed * 2 * L.C, 0.0);
  ParallelFor(pool, L.S * items_per_seed, [&](int64_t i) {
    const int64_t s = i / items_per_seed, k = i % items_per_seed;
    const int64_t b0 = s * per_seed + k * per, b1 = std::min((s + 1) * per_seed, b0 + per);
    std::vector<float> m(L.C), P(L.C), Q(L.C), O(L.C), a(L.C), bb(L.C);
    std::vector<double> sg(L.C), sgx(L.C);
    double* ds = &dparts[i * 2 * L.C];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t off = b * L.R * L.C;
      ExpandMean(A, L, b, m.data());
      std::fill(sg.begin(), sg.end(), 0.0);
      std::fill(sgx.begin(), sgx.end(), 0.0);
      BlockGradSums(A.g + off, A.x + off, m.data(), L, 0, L.R, sg.data(), sgx.data(), a.data(),
                    bb.data());
      SampleCoefficients(A, L, b, sg.data(), sgx.data(), P.data(), Q.data(), O.data(), ds,
                         ds + L.C);
      BlockDx(A.g + off, A.x + off, P.data(), Q.data(), O.data(), L.C, 0, L.R, A.dx + off);
    }
  });
}

// Large samples (BatchNorm): sums per block, merged per sample, then dx in a second sweep.
void GradTwoSweeps(ffi::ThreadPool& pool, const GradArgs& A, const Layout& L,
                   std::vector<double>& dparts) {
  const Items items(L);
  std::vector<double> part(items.pairs * 2 * L.C, 0.0);
  ParallelFor(pool, items.n, [&](int64_t i) {
    std::vector<float> m(L.C), a(L.C), bb(L.C);
    int64_t cur = -1;
    for (int64_t p = items.begin(i); p < items.end(i); ++p) {
      const int64_t b = p / L.nblk;
      if (b != cur) ExpandMean(A, L, b, m.data());
      cur = b;
      int64_t r0, r1;
      ChunkRows(L, p, &r0, &r1);
      const int64_t off = b * L.R * L.C;
      BlockGradSums(A.g + off, A.x + off, m.data(), L, r0, r1, &part[p * 2 * L.C],
                    &part[p * 2 * L.C + L.C], a.data(), bb.data());
    }
  });
  std::vector<float> coef(L.B * 3 * L.C);
  dparts.assign(L.B * 2 * L.C, 0.0);
  std::vector<double> sg(L.C), sgx(L.C);
  for (int64_t b = 0; b < L.B; ++b) {
    std::fill(sg.begin(), sg.end(), 0.0);
    std::fill(sgx.begin(), sgx.end(), 0.0);
    for (int64_t k = 0; k < L.nblk; ++k) {
      const double* q = &part[(b * L.nblk + k) * 2 * L.C];
      for (int64_t c = 0; c < L.C; ++c) {
        sg[c] += q[c];
        sgx[c] += q[L.C + c];
      }
    }
    float* cb = &coef[b * 3 * L.C];
    SampleCoefficients(A, L, b, sg.data(), sgx.data(), cb, cb + L.C, cb + 2 * L.C,
                       &dparts[b * 2 * L.C], &dparts[b * 2 * L.C + L.C]);
  }
  ParallelFor(pool, items.n, [&](int64_t i) {
    for (int64_t p = items.begin(i); p < items.end(i); ++p) {
      const int64_t b = p / L.nblk;
      int64_t r0, r1;
      ChunkRows(L, p, &r0, &r1);
      const int64_t off = b * L.R * L.C;
      const float* cb = &coef[b * 3 * L.C];
      BlockDx(A.g + off, A.x + off, cb, cb + L.C, cb + 2 * L.C, L.C, r0, r1, A.dx + off);
    }
  });
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
  int64_t groups_per_seed;  // partial rows of dparts per parameter row
  if (8 * L.R * L.C <= kSampleBytes) {
    GradPerSample(pool, A, L, dparts, &groups_per_seed);
  } else {
    GradTwoSweeps(pool, A, L, dparts);
    groups_per_seed = L.B / L.S;
  }
  float* ds = dscale->typed_data();
  float* db = dbias->typed_data();
  for (int64_t s = 0; s < L.S; ++s)
    for (int64_t c = 0; c < L.C; ++c) {
      double a = 0, b = 0;
      for (int64_t k = 0; k < groups_per_seed; ++k) {
        const double* q = &dparts[(s * groups_per_seed + k) * 2 * L.C];
        a += q[c];
        b += q[L.C + c];
      }
      ds[s * L.C + c] = float(a);
      db[s * L.C + c] = float(b);
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
