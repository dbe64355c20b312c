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
// Statistics: per L1-sized chunk of rows a corrected two-pass (the second pass from L1), chunks
// merged exactly (Chan, Golub & LeVeque), sums in register blocks of 64 channels. The backward
// recomputes the statistics in the same order (same bits as the moments kernel) in the same
// read of x that takes the sums of g, so it needs nothing from the forward but x: a
// gradient-only program drops the forward pass entirely. A sample that fits in L2
// (kSampleBytes for x and g) is the unit of work: one read of x and g, then dx from cache.
// Larger samples (BatchNorm over a batch) are split into at most kMaxBlocks blocks of rows and
// take two sweeps (statistics and sums, then dx), in one dispatch to the thread pool
// (ParallelFor2). There, rows wider than NORMJAX_CB_MAX_C channels (the MLP BatchNorm) take
// one shifted read per block instead of the corrected two-pass (ShiftedMoments, guarded; its
// float sums placed where their stores do not 4K-alias the rows' loads, PlacedTmp), and dx reads
// its per-channel coefficients interleaved, as one stream, once per four rows. Rows of LayerNorm
// / RMSNorm (R = 1) are reduced with lane-parallel sums, and their whole forward (moments and y)
// runs in the rows kernel, one read of each row. Measured slower and dropped: stripes of channels
// (strided rows stream badly), channel-blocked dx writes, dx walked backwards to meet cached
// rows first, and non-temporal dx stores (faster alone, slower once something reads dx).
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
#ifndef NORMJAX_SHIFT_ROWS  // ShiftedMoments' shift: the mean of a block's first rows
#define NORMJAX_SHIFT_ROWS 8
#endif
#ifndef NORMJAX_SHIFTED_CHUNK_ROWS  // rows ShiftedMoments sums in float
#define NORMJAX_SHIFTED_CHUNK_ROWS 64
#endif
constexpr int64_t kChunkBytes = NORMJAX_CHUNK_BYTES;    // rows summed in float, in L1
constexpr int64_t kBlockBytes = NORMJAX_BLOCK_BYTES;    // one work item
constexpr int64_t kSampleBytes = NORMJAX_SAMPLE_BYTES;  // one-sweep backward up to this

// Work claimed from an atomic counter: items 0 .. n1 - 1 run fn1; after the last of them,
// mid() runs once, on the thread that finished it; items n1 .. n1 + n2 - 1 then run fn2 (a
// thread that claims one before mid() is done waits for it; mid() is short and always running).
struct Work {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> ready{false};
  int64_t n1 = 0, n2 = 0;
  std::function<void(int64_t)> fn1, fn2;
  std::function<void()> mid;
};

void Drain(Work& w) {
  for (;;) {
    const int64_t i = w.next.fetch_add(1);
    if (i >= w.n1 + w.n2) return;
    if (i < w.n1) {
      w.fn1(i);
      if (w.done.fetch_add(1) + 1 == w.n1) {
        if (w.mid) w.mid();
        w.ready.store(true, std::memory_order_release);
      }
      continue;
    }
    while (!w.ready.load(std::memory_order_acquire)) std::this_thread::yield();
    w.fn2(i - w.n1);
    w.done.fetch_add(1);
  }
}

// Runs fn1(0), ..., fn1(n1 - 1), then mid(), then fn2(0), ..., fn2(n2 - 1) on this thread and
// the pool, in one dispatch: the helpers are woken once, not once per phase (a woken helper
// started 50-300 us late here, as long as a whole sweep). Items are claimed, not assigned: if
// the pool is busy this thread runs them all, so nested or concurrent calls cannot deadlock.
void ParallelFor2(ffi::ThreadPool& pool, int64_t n1, std::function<void(int64_t)> fn1,
                  std::function<void()> mid, int64_t n2, std::function<void(int64_t)> fn2) {
  n1 = std::max<int64_t>(0, n1);
  n2 = std::max<int64_t>(0, n2);
  if (n1 == 0) {  // mid() first; fn2's items become the only phase
    if (mid) mid();
    std::swap(n1, n2);
    std::swap(fn1, fn2);
    mid = nullptr;
  }
  if (n1 == 0) return;
  auto w = std::make_shared<Work>();
  w->n1 = n1;
  w->n2 = n2;
  w->fn1 = std::move(fn1);
  w->fn2 = std::move(fn2);
  w->mid = std::move(mid);
  const int64_t total = n1 + n2;
  const int64_t helpers =
      std::min<int64_t>(std::min<int64_t>(pool.num_threads(), NORMJAX_MAX_HELPERS), total - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([w] { Drain(*w); });
  Drain(*w);
  while (w->done.load(std::memory_order_acquire) < total) std::this_thread::yield();
}

// Runs fn(0), ..., fn(n - 1) on this thread and the pool (ParallelFor2 with one phase).
void ParallelFor(ffi::ThreadPool& pool, int64_t n, std::function<void(int64_t)> fn) {
  ParallelFor2(pool, n, std::move(fn), nullptr, 0, nullptr);
}

struct Layout {
  int64_t B = 1, R = 1, C = 1, G = 1, K = 1;
  int64_t S = 1;  // rows of the per-channel parameters (vmapped seeds): B % S == 0
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

void WriteMoments(double mu, double var_c, bool center, float* mean, float* var) {
  *mean = center ? float(mu) : 0.f;
  *var = float(center ? var_c : var_c + mu * mu);
}

// ---------------------------------------------------------------------------------------------
// Moments

// Per-item work space: four C-vectors of doubles and five of floats (f, f(1), ..., f(4)).
struct Scratch {
  std::vector<double> d1, d2, d3, d4;
  std::vector<float> f;
  int64_t c;
  explicit Scratch(int64_t n) : d1(n), d2(n), d3(n), d4(n), f(5 * n), c(n) {}
  float* fv(int64_t i) { return f.data() + i * c; }
};

// Moments of the groups of one LayerNorm row (R = 1): lane sums per group, two passes in L1.
void RowMoments(const float* x, const Layout& L, bool center, float* mean, float* var) {
  const int64_t K = L.K;
  const double n = double(K);
  for (int64_t g = 0; g < L.G; ++g) {
    const float* xg = x + g * K;
    const float m = float(LaneSum(K, [xg](int64_t i) { return xg[i]; }) / n);
    const double v = LaneSum(K, [xg, m](int64_t i) {
      const float d = xg[i] - m;
      return d * d;
    }) / n;
    WriteMoments(m, v, center, mean + g, var + g);
  }
}

// Chunk sums over rows [lo, hi) for channels [c0, c0 + W), accumulators in registers: the first
// pass ta = sum x (tb = sum g with kG), the second (kSecond, around the chunk means cm)
// ta = sum (x - cm)^2, te = sum (x - cm) (tb = sum g (x - cm)). Every channel is summed row by row from 0, as the
// unblocked loop of ChunkSums does, so both give the same bits.
template <int W, bool kG, bool kSecond>
inline void BlockSums(const float* __restrict x, const float* __restrict g, int64_t C, int64_t lo,
                      int64_t hi, int64_t c0, const float* __restrict cm, float* __restrict ta,
                      float* __restrict tb, float* __restrict te) {
  float a[W] = {}, b[W] = {}, e[W] = {}, m[W] = {};
  if constexpr (kSecond)
    for (int l = 0; l < W; ++l) m[l] = cm[c0 + l];
  for (int64_t r = lo; r < hi; ++r) {
    const float* __restrict xr = x + r * C + c0;
    const float* __restrict gr = kG ? g + r * C + c0 : nullptr;
    for (int l = 0; l < W; ++l) {
      if constexpr (kSecond) {
        const float d = xr[l] - m[l];
        a[l] += d * d;
        e[l] += d;
        if constexpr (kG) b[l] += gr[l] * d;
      } else {
        a[l] += xr[l];
        if constexpr (kG) b[l] += gr[l];
      }
    }
  }
  for (int l = 0; l < W; ++l) {
    ta[c0 + l] = a[l];
    if constexpr (kSecond) te[c0 + l] = e[l];
    if constexpr (kG) tb[c0 + l] = b[l];
  }
}

// BlockSums over all C channels in register blocks of kCB (then 16, then 1) channels. The first
// pass over rows wider than NORMJAX_CB_MAX_C channels (read from memory, where a blocked walk
// strides a page per row and streams badly) runs row-wise instead, four rows per update of the
// L1 accumulators ta/tb: the same order for the moments kernel and the backward, which always
// take the same branch for the same C.
template <bool kG, bool kSecond>
void ChunkSums(const float* __restrict x, const float* __restrict g, int64_t C, int64_t lo,
               int64_t hi, const float* __restrict cm, float* __restrict ta,
               float* __restrict tb, float* __restrict te = nullptr) {
  if (kSecond || C <= NORMJAX_CB_MAX_C) {
    int64_t c0 = 0;
    for (; c0 + kCB <= C; c0 += kCB)
      BlockSums<kCB, kG, kSecond>(x, g, C, lo, hi, c0, cm, ta, tb, te);
    for (; c0 + 16 <= C; c0 += 16) BlockSums<16, kG, kSecond>(x, g, C, lo, hi, c0, cm, ta, tb, te);
    for (; c0 < C; ++c0) BlockSums<1, kG, kSecond>(x, g, C, lo, hi, c0, cm, ta, tb, te);
    return;
  }
  std::fill(ta, ta + C, 0.f);
  if constexpr (kG) std::fill(tb, tb + C, 0.f);
  int64_t r = lo;
  for (; r + 4 <= hi; r += 4) {
    const float* __restrict xr = x + r * C;
    const float* __restrict gr = kG ? g + r * C : nullptr;
    for (int64_t c = 0; c < C; ++c) {
      ta[c] += (xr[c] + xr[C + c]) + (xr[2 * C + c] + xr[3 * C + c]);
      if constexpr (kG) tb[c] += (gr[c] + gr[C + c]) + (gr[2 * C + c] + gr[3 * C + c]);
    }
  }
  for (; r < hi; ++r) {
    const float* __restrict xr = x + r * C;
    const float* __restrict gr = kG ? g + r * C : nullptr;
    for (int64_t c = 0; c < C; ++c) {
      ta[c] += xr[c];
      if constexpr (kG) tb[c] += gr[c];
    }
  }
}

// Per-channel (mean, M2) of rows [r0, r1) of one sample: a corrected two-pass per L1 chunk
// (the second pass from cache; its residual sum e = sum (x - cm) corrects the float chunk mean
// cm to cm + e / nb and M2 to sum (x - cm)^2 - e^2 / nb, Chan, Golub & LeVeque 1983), merged
// across chunks with their pairwise rule (the same count for every channel). With kG (the
// backward) g is read alongside: sg += sum g and sgc += sum g x, per chunk as
// sum g (x - cm) + cm sum g with the large part in double, so that sum g (x - mean) =
// sgc - mean sg keeps its digits. mean, m2 come out the same either way. tmp: 5 * C floats.
template <bool kG>
void ChunkedMoments(const float* __restrict x, const float* __restrict g, int64_t C, int64_t r0,
                    int64_t r1, double* __restrict mean, double* __restrict m2,
                    double* __restrict sg, double* __restrict sgc, float* __restrict tmp) {
  float *cm = tmp, *ta = tmp + C, *tb = tmp + 2 * C, *tc = tmp + 3 * C, *te = tmp + 4 * C;
  const int64_t rows = ChunkRows(C);
  double n = 0;
  for (int64_t lo = r0; lo < r1; lo += rows) {
    const int64_t hi = std::min(r1, lo + rows);
    const float nb = float(hi - lo);
    ChunkSums<kG, false>(x, g, C, lo, hi, cm, ta, tb);
    for (int64_t c = 0; c < C; ++c) cm[c] = ta[c] / nb;
    ChunkSums<kG, true>(x, g, C, lo, hi, cm, ta, tc, te);
    const double tot = n + nb, wa = double(nb) / tot, wd = n * double(nb) / tot;
    for (int64_t c = 0; c < C; ++c) {
      const double e = te[c], d = double(cm[c]) + e / nb - mean[c];
      mean[c] += d * wa;
      m2[c] += (double(ta[c]) - e * e / nb) + d * d * wd;
      if constexpr (kG) {
        sg[c] += tb[c];
        sgc[c] += double(tc[c]) + double(cm[c]) * double(tb[c]);
      }
    }
    n = tot;
  }
}

// Float work space of BlockMoments for C channels: ChunkedMoments' 5 C-vectors or ShiftedMoments'
// five vectors C + 32 apart (so that no two start 4 KB apart: a store and a later load 4 KB
// apart stall on this CPU as if they overlapped, "4K aliasing"; measured 3x on the sums).
int64_t TmpFloats(int64_t C) { return 5 * (C + 32); }

// Whether a store stream at s may stall loads of the streams l[0..n): a store 0-300 bytes
// above a recent load's address modulo 4 KB ("4K aliasing"; measured 1.2-1.5x on the shifted
// sums and on dx with 1024 channels, where every row of x and g has the same page offset).
bool Aliases(uintptr_t s, const uintptr_t* l, int n) {
  for (int i = 0; i < n; ++i) {
    const uintptr_t d = (s - l[i]) & 4095;
    if (d < 320 || d > 4032) return true;
  }
  return false;
}

// BlockMoments' work space (TmpFloats(C) floats) in buf, 64-byte aligned and at a page offset
// where ShiftedMoments' four float sums (stores, C + 32 floats apart) do not alias the loads of
// the first four rows of x and g (rows 4 KB apart, as with 1024 channels, all alias alike).
float* PlacedTmp(std::vector<float>& buf, int64_t C, const float* x, const float* g) {
  buf.resize(TmpFloats(C) + 1024 + 16);
  const uintptr_t base = (reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63);
  const uintptr_t row = uintptr_t(4 * C);
  uintptr_t loads[8];
  int n = 0;
  for (uintptr_t r = 0; r < 4; ++r) {
    loads[n++] = reinterpret_cast<uintptr_t>(x) + r * row;
    if (g != nullptr) loads[n++] = reinterpret_cast<uintptr_t>(g) + r * row;
  }
  for (uintptr_t off = 0; off < 4096; off += 64) {
    const uintptr_t t = base + off;
    bool ok = true;
    for (int64_t j = 1; j <= 4 && ok; ++j) ok = !Aliases(t + 4 * j * (C + 32), loads, n);
    if (ok) return reinterpret_cast<float*>(t);
  }
  return reinterpret_cast<float*>(base);
}

// Shifted sums over rows [lo, hi) for all C channels, four rows per update of the float sums in
// L1: a += d, b += d^2 (d = x - k), with kG s += g, t += g d. Written once for both kG so that
// the x sums are the same code (the moments kernel and the backward get the same bits).
template <bool kG>
void ShiftedChunk(const float* __restrict x, const float* __restrict g, int64_t C, int64_t lo,
                  int64_t hi, const float* __restrict k, float* __restrict a,
                  float* __restrict b, float* __restrict s, float* __restrict t) {
  int64_t r = lo;
  for (; r + 4 <= hi; r += 4) {
    const float* __restrict xr = x + r * C;
    const float* __restrict gr = kG ? g + r * C : nullptr;
    for (int64_t c = 0; c < C; ++c) {
      const float d0 = xr[c] - k[c], d1 = xr[C + c] - k[c];
      const float d2 = xr[2 * C + c] - k[c], d3 = xr[3 * C + c] - k[c];
      a[c] += (d0 + d1) + (d2 + d3);
      b[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
      if constexpr (kG) {
        const float g0 = gr[c], g1 = gr[C + c], g2 = gr[2 * C + c], g3 = gr[3 * C + c];
        s[c] += (g0 + g1) + (g2 + g3);
        t[c] += (g0 * d0 + g1 * d1) + (g2 * d2 + g3 * d3);
      }
    }
  }
  for (; r < hi; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float d = x[r * C + c] - k[c];
      a[c] += d;
      b[c] += d * d;
      if constexpr (kG) {
        s[c] += g[r * C + c];
        t[c] += g[r * C + c] * d;
      }
    }
}

// Per-channel (mean, M2) of rows [r0, r1) in one read of x (and g): the shifted-data sums
// S1 = sum d, S2 = sum d^2 of d = x - k, k the mean of the first NORMJAX_SHIFT_ROWS rows (read
// again from cache), give mean = k + S1 / n and M2 = S2 - S1^2 / n (Chan, Golub & LeVeque 1983).
// Sums in float per chunk of NORMJAX_SHIFTED_CHUNK_ROWS rows, in double across chunks
// (accumulated in the outputs, which start at zero). (32 rows for k and 32-row chunks measured
// 1.1-1.2x the time: the shift's extra read and the per-chunk double sums.)
// With kG: sg = sum g and sgc = sum g d + k sum g (= sum g x). Returns false where some
// channel's mean lies more than 4 standard deviations from k (S2 - S1^2 / n would then lose
// digits): the caller then takes the corrected two-pass (ChunkedMoments). Measured against
// ChunkedMoments on the wide rows (1024 channels): the read 1.5x as fast.
template <bool kG>
bool ShiftedMoments(const float* __restrict x, const float* __restrict g, int64_t C, int64_t r0,
                    int64_t r1, double* __restrict mean, double* __restrict m2,
                    double* __restrict sg, double* __restrict sgc, float* __restrict tmp) {
  const int64_t S = C + 32, rows = NORMJAX_SHIFTED_CHUNK_ROWS;
  const int64_t nk = std::min<int64_t>(NORMJAX_SHIFT_ROWS, r1 - r0);
  float *k = tmp, *a = tmp + S, *b = tmp + 2 * S, *s = tmp + 3 * S, *t = tmp + 4 * S;
  std::fill(k, k + C, 0.f);
  for (int64_t r = r0; r < r0 + nk; ++r)
    for (int64_t c = 0; c < C; ++c) k[c] += x[r * C + c];
  for (int64_t c = 0; c < C; ++c) k[c] /= float(nk);
  for (int64_t lo = r0; lo < r1; lo += rows) {
    const int64_t hi = std::min(r1, lo + rows);
    for (float* v : {a, b, s, t}) std::fill(v, v + C, 0.f);
    ShiftedChunk<kG>(x, g, C, lo, hi, k, a, b, s, t);
    for (int64_t c = 0; c < C; ++c) {
      mean[c] += a[c];
      m2[c] += b[c];
      if constexpr (kG) {
        sg[c] += s[c];
        sgc[c] += t[c];
      }
    }
  }
  const double n = double(r1 - r0);
  bool ok = true;
  for (int64_t c = 0; c < C; ++c) {
    const double d = mean[c] / n, m = std::max(0.0, m2[c] - d * d * n);
    ok = ok && !(d * d * n > 16.0 * m);
    mean[c] = double(k[c]) + d;
    m2[c] = m;
    if constexpr (kG) sgc[c] += double(k[c]) * sg[c];
  }
  return ok;
}

// Per-channel (mean, M2) (and with kG the sums sg, sgc) of rows [r0, r1): ShiftedMoments for
// rows wider than NORMJAX_CB_MAX_C channels, else (or where it declines) ChunkedMoments.
// Outputs need not be zeroed. tmp: TmpFloats(C) floats.
template <bool kG>
void BlockMoments(const float* x, const float* g, int64_t C, int64_t r0, int64_t r1,
                  double* mean, double* m2, double* sg, double* sgc, float* tmp) {
  auto zero = [&] {
    for (double* v : {mean, m2, sg, sgc})
      if (v != nullptr) std::fill(v, v + C, 0.0);
  };
  zero();
  if (C > NORMJAX_CB_MAX_C && ShiftedMoments<kG>(x, g, C, r0, r1, mean, m2, sg, sgc, tmp))
    return;
  zero();
  ChunkedMoments<kG>(x, g, C, r0, r1, mean, m2, sg, sgc, tmp);
}

// Merges sample b's per-block partials (blocks of `rows` rows; each `stride` C-vectors, the first
// two mean and M2) in block order with Chan et al.'s rule; returns the count per channel.
double MergeBlocks(const double* part, int64_t stride, int64_t b, int64_t nblk,
                   int64_t rows, const Layout& L, double* mu, double* m2) {
  double n = 0;
  std::fill(mu, mu + L.C, 0.0);
  std::fill(m2, m2 + L.C, 0.0);
  for (int64_t k = 0; k < nblk; ++k) {
    const double nb = double(std::min(L.R, (k + 1) * rows) - k * rows), tot = n + nb;
    const double wa = nb / tot, wd = n * nb / tot;
    const double* q = &part[(b * nblk + k) * stride * L.C];
    for (int64_t c = 0; c < L.C; ++c) {
      const double d = q[c] - mu[c];
      mu[c] += d * wa;
      m2[c] += q[L.C + c] + d * d * wd;
    }
    n = tot;
  }
  return n;
}

// Channel (mean, M2), n values each, pooled into the sample's group moments (Chan et al.).
void PoolGroups(const double* mu, const double* m2, double n, const Layout& L, bool center,
                float* mean, float* var) {
  const double inv = 1.0 / (n * L.K);
  if (L.K == 1) {  // BatchNorm, InstanceNorm: a group is a channel
    for (int64_t c = 0; c < L.C; ++c) WriteMoments(mu[c], m2[c] * inv, center, mean + c, var + c);
    return;
  }
  for (int64_t g = 0; g < L.G; ++g) {
    double gmu = 0, gm2 = 0;
    for (int64_t k = 0; k < L.K; ++k) gmu += mu[g * L.K + k];
    gmu /= double(L.K);
    for (int64_t k = 0; k < L.K; ++k) {
      const double d = mu[g * L.K + k] - gmu;
      gm2 += m2[g * L.K + k] + n * d * d;
    }
    WriteMoments(gmu, gm2 * inv, center, mean + g, var + g);
  }
}

// Moments of one sample (x points at it) that fits in L2: ChunkedMoments over all its
// rows, pooled into groups. The backward (SampleGrad) computes them in the same order.
void SampleMoments(const float* x, const Layout& L, bool center, float* mean, float* var,
                   Scratch& t) {
  if (L.R == 1) {
    RowMoments(x, L, center, mean, var);
    return;
  }
  double* mu = t.d1.data();
  double* m2 = t.d2.data();
  std::fill(mu, mu + L.C, 0.0);
  std::fill(m2, m2 + L.C, 0.0);
  ChunkedMoments<false>(x, nullptr, L.C, 0, L.R, mu, m2, nullptr, nullptr, t.f.data());
  PoolGroups(mu, m2, double(L.R), L, center, mean, var);
}

// Samples too large for L2: chunked per-channel moments per block of rows,
// merged per sample (Chan et al.), then pooled into groups.
void BlockedMoments(ffi::ThreadPool& pool, const float* xp, const Layout& L, bool center,
                    float* mp, float* vp) {
  const int64_t rows = BlockRows(L, 8);  // the backward's blocks: the same partials
  const int64_t nblk = (L.R + rows - 1) / rows;
  std::unique_ptr<double[]> part(new double[L.B * nblk * 2 * L.C]);  // per block: mean, M2
  ParallelFor(pool, L.B * nblk, [&](int64_t p) {
    thread_local std::vector<float> buf;
    const int64_t b = p / nblk, r0 = (p % nblk) * rows, r1 = std::min(L.R, r0 + rows);
    double* q = &part[p * 2 * L.C];
    const float* x = xp + b * L.R * L.C;
    BlockMoments<false>(x, nullptr, L.C, r0, r1, q, q + L.C, nullptr, nullptr,
                        PlacedTmp(buf, L.C, x + r0 * L.C, nullptr));
  });
  std::vector<double> mu(L.C), m2(L.C);
  for (int64_t b = 0; b < L.B; ++b) {
    const double n = MergeBlocks(part.get(), 2, b, nblk, rows, L, mu.data(), m2.data());
    PoolGroups(mu.data(), m2.data(), n, L, center, mp + b * L.G, vp + b * L.G);
  }
}

// mean[B, G] and biased var[B, G] of x[B, R, C] (center = false: mean 0, var = E[x^2]).
void AllMoments(ffi::ThreadPool& pool, const float* xp, const Layout& L, bool center, float* mp,
                float* vp) {
  if (!SampleFits(L, 8)) {  // the backward's criterion: it recomputes these numbers
    BlockedMoments(pool, xp, L, center, mp, vp);
    return;
  }
  const SampleItems items(L, 8);
  ParallelFor(pool, items.count(L), [&](int64_t i) {
    Scratch t(L.C);
    for (int64_t b = items.begin(i); b < items.end(i); ++b)
      SampleMoments(xp + b * L.R * L.C, L, center, mp + b * L.G, vp + b * L.G, t);
  });
}

ffi::Error Moments(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> mean,
                   ffi::ResultBuffer<ffi::F32> var, bool center) {
  Layout L;
  const auto md = mean->dimensions();
  if (auto e = MakeLayout(x.dimensions(), md[md.size() - 1], 1, &L); e.failure()) return e;
  AllMoments(pool, x.typed_data(), L, center, mean->typed_data(), var->typed_data());
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Backward

// The backward recomputes the statistics from x (with the moments kernel's code, so the same
// bits as the forward's) into mean and rstd = 1 / sqrt(var + eps) [B, G]: x is read anyway, and
// a gradient-only program then needs no forward pass over x at all.
struct GradArgs {
  const float *g, *x, *eps, *scale, *gmean, *gvar;
  float *dx, *deps;  // deps[B, G] = -rstd^3 t2 / 2, the epsilon gradient per group
  float *mean, *rstd;  // recomputed statistics (scratch, [B, G])
  bool center;
};

// rstd[i] = 1 / sqrt(var[i] + eps[i]) for i in [first, first + count), in place (var held in rstd).
void ToRstd(const GradArgs& A, int64_t first, int64_t count) {
  for (int64_t i = first; i < first + count; ++i) A.rstd[i] = 1.f / std::sqrt(A.rstd[i] + A.eps[i]);
}

// dx coefficients of one group from its sums s1 = sum(h), t2 = sum(h (x - mean)), h = g scale:
//   dx = r h + (g_mean - r s1) / n + (2 g_var - r^3 t2) / n * (x - mean).
struct GroupCoef {
  double r, mu, c0, c1;
};

// Group bg's coefficients (the formula above; inline, so that a loop over groups vectorizes),
// its epsilon gradient written to A.deps.
inline GroupCoef Coefficients(const GradArgs& A, double inv_n, int64_t bg, double s1, double t2) {
  const double r = A.rstd[bg], mu = A.center ? A.mean[bg] : 0.0;
  const double c1 = (2.0 * A.gvar[bg] - r * r * r * t2) * inv_n;
  const double c0 = A.center ? (A.gmean[bg] - r * s1) * inv_n : 0.0;
  A.deps[bg] = float(-0.5 * r * r * r * t2);
  return {r, mu, c0, c1};
}

double InvCount(const Layout& L) { return 1.0 / (double(L.R) * L.K); }

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
// (dx = P g + Q (x - M) + O per channel, M the channel's group mean) and its share of dscale /
// dbias.
void SampleCoefficients(const GradArgs& A, const Layout& L, int64_t b, const double* sg,
                        const double* sgx, float* P, float* Q, float* O, double* dscale,
                        double* dbias) {
  const float* scale = A.scale + L.seed(b) * L.C;
  const double inv_n = InvCount(L);
  if (L.K == 1) {  // a group is a channel (BatchNorm, InstanceNorm): the same, one flat loop
    for (int64_t c = 0; c < L.C; ++c) {
      const GroupCoef k = Coefficients(A, inv_n, b * L.C + c, double(scale[c]) * sg[c],
                                       double(scale[c]) * sgx[c]);
      P[c] = float(k.r * scale[c]);
      Q[c] = float(k.c1);
      O[c] = float(k.c0);
      dscale[c] += k.r * sgx[c];
      dbias[c] += sg[c];
    }
    return;
  }
  for (int64_t grp = 0; grp < L.G; ++grp) {
    double s1 = 0, t2 = 0;
    for (int64_t k = 0; k < L.K; ++k) {
      const int64_t c = grp * L.K + k;
      s1 += double(scale[c]) * sg[c];
      t2 += double(scale[c]) * sgx[c];
    }
    const GroupCoef k = Coefficients(A, inv_n, b * L.G + grp, s1, t2);
    for (int64_t j = 0; j < L.K; ++j) {
      const int64_t c = grp * L.K + j;
      P[c] = float(k.r * scale[c]);
      Q[c] = float(k.c1);
      O[c] = float(k.c0);
      dscale[c] += k.r * sgx[c];
      dbias[c] += sg[c];
    }
  }
}

// Adds partials first .. first + count - 1 (each `stride` C-vectors; vectors `at` and `at + 1`
// of each) into u and v, in order, each read sequentially.
void SumPartials(const double* parts, int64_t first, int64_t count, int64_t C,
                 double* u, double* v, int64_t stride = 2, int64_t at = 0) {
  for (int64_t k = first; k < first + count; ++k) {
    const double* q = &parts[(k * stride + at) * C];
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
  RowMoments(A.x + off, L, A.center, A.mean + b * L.G, A.rstd + b * L.G);
  ToRstd(A, b * L.G, L.G);
  for (int64_t grp = 0; grp < L.G; ++grp) {
    const int64_t o = off + grp * K, bg = b * L.G + grp;
    const float* __restrict g = A.g + o;
    const float* __restrict x = A.x + o;
    const float* __restrict sc = scale + grp * K;
    const float mu = A.center ? A.mean[bg] : 0.f;
    double s1, t2;
    RowSums(g, sc, x, mu, K, &s1, &t2);
    const GroupCoef k = Coefficients(A, InvCount(L), bg, s1, t2);
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

// dx = P g + Q (x - M) + O (per channel) over rows [r0, r1) of one sample. (x - M, not
// Q x + (O - Q M): far from zero the folded form loses digits to cancellation. Blocks of channels
// with the coefficients in registers were measured slower: strided writes.)
void BlockDx(const float* __restrict g, const float* __restrict x, const float* __restrict P,
             const float* __restrict Q, const float* __restrict O, const float* __restrict M,
             int64_t C, int64_t r0, int64_t r1, float* __restrict dx) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict gr = g + r * C;
    const float* __restrict xr = x + r * C;
    float* __restrict dr = dx + r * C;
    for (int64_t c = 0; c < C; ++c) dr[c] = P[c] * gr[c] + Q[c] * (xr[c] - M[c]) + O[c];
  }
}

// P, Q, O, M (four C-vectors, contiguous in pq) interleaved per 16 channels:
// w[c / 16][j][c % 16] = vector j at channel c (one coefficient stream for InterleavedDx).
void InterleaveCoefficients(const float* pq, int64_t C, float* w) {
  for (int64_t c0 = 0; c0 < C; c0 += 16)
    for (int64_t j = 0; j < 4; ++j)
      for (int64_t l = 0; l < 16 && c0 + l < C; ++l) w[4 * c0 + j * 16 + l] = pq[j * C + c0 + l];
}

// dx of n <= 16 channels of one row from their interleaved coefficients v (BlockDx's arithmetic).
inline void DxLanes(const float* __restrict g, const float* __restrict x, const float* __restrict v,
                    int64_t n, float* __restrict dx) {
  if (n == 16) {  // a constant trip count: one vector per coefficient
    for (int l = 0; l < 16; ++l) dx[l] = v[l] * g[l] + v[16 + l] * (x[l] - v[48 + l]) + v[32 + l];
    return;
  }
  for (int64_t l = 0; l < n; ++l) dx[l] = v[l] * g[l] + v[16 + l] * (x[l] - v[48 + l]) + v[32 + l];
}

// BlockDx with the coefficients interleaved (InterleaveCoefficients): one stream of coefficients
// instead of four, which also cannot sit 4 KB from the rows' stores (measured 1.15-1.4x as fast
// as BlockDx on 1024 channels), read once per four rows (1, 2 and 8 rows measured slower). The
// same arithmetic per element as BlockDx.
void InterleavedDx(const float* __restrict g, const float* __restrict x,
                   const float* __restrict w, int64_t C, int64_t r0, int64_t r1,
                   float* __restrict dx) {
  for (int64_t r = r0; r < r1; r += 4) {
    const int64_t rows = std::min<int64_t>(4, r1 - r);
    for (int64_t c0 = 0; c0 < C; c0 += 16)
      for (int64_t k = 0; k < rows; ++k) {
        const int64_t q = (r + k) * C + c0;
        DxLanes(g + q, x + q, w + 4 * c0, std::min<int64_t>(16, C - c0), dx + q);
      }
  }
}

// Sample b's group means per channel (0 for RMSNorm).
void ChannelMeans(const GradArgs& A, const Layout& L, int64_t b, float* m) {
  if (L.K == 1) {
    for (int64_t c = 0; c < L.C; ++c) m[c] = A.center ? A.mean[b * L.G + c] : 0.f;
    return;
  }
  for (int64_t grp = 0; grp < L.G; ++grp)
    std::fill(m + grp * L.K, m + (grp + 1) * L.K, A.center ? A.mean[b * L.G + grp] : 0.f);
}

// From sample b's per-channel (mean, M2) over n rows and its sums sg = sum g, sgx = sum g x:
// its group statistics (into A.mean, A.rstd), the channel means M, sgx made sum g (x - mean),
// the dx coefficients P, Q, O and its parameter-gradient partials.
void FinishSample(const GradArgs& A, const Layout& L, int64_t b, const double* mu,
                  const double* m2, double n, const double* sg, double* sgx, float* P, float* Q,
                  float* O, float* M, double* dscale, double* dbias) {
  PoolGroups(mu, m2, n, L, A.center, A.mean + b * L.G, A.rstd + b * L.G);
  ToRstd(A, b * L.G, L.G);
  ChannelMeans(A, L, b, M);
  for (int64_t c = 0; c < L.C; ++c) sgx[c] -= double(M[c]) * sg[c];
  SampleCoefficients(A, L, b, sg, sgx, P, Q, O, dscale, dbias);
}

// One sample b that fits in L2: its statistics and sums in one read (ChunkedMoments), the group
// coefficients, then dx (its rows in order: walking them backwards, to meet the most recently
// cached first, was measured 20 % slower), and its parameter-gradient partials.
void SampleGrad(const GradArgs& A, const Layout& L, int64_t b, double* dscale, double* dbias,
                Scratch& t) {
  const int64_t C = L.C, off = b * L.R * L.C;
  const float* g = A.g + off;
  const float* x = A.x + off;
  double *mu = t.d1.data(), *m2 = t.d2.data(), *sg = t.d3.data(), *sgx = t.d4.data();
  for (double* v : {mu, m2, sg, sgx}) std::fill(v, v + C, 0.0);
  ChunkedMoments<true>(x, g, C, 0, L.R, mu, m2, sg, sgx, t.f.data());
  float *M = t.fv(0), *P = t.fv(1), *Q = t.fv(2), *O = t.fv(3);
  FinishSample(A, L, b, mu, m2, double(L.R), sg, sgx, P, Q, O, M, dscale, dbias);
  BlockDx(g, x, P, Q, O, M, C, 0, L.R, A.dx + off);
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

// Block p (of nblk blocks of `rows` rows per sample) of the two-sweep backward: its partials
// mean, M2, sg, sgc (4 C-vectors at part + 4 C p) from one read of its rows of x and g.
void BlockPartials(const GradArgs& A, const Layout& L, int64_t rows, int64_t nblk, int64_t p,
                   double* part) {
  thread_local std::vector<float> buf;
  const int64_t b = p / nblk, r0 = (p % nblk) * rows, r1 = std::min(L.R, r0 + rows);
  const int64_t off = b * L.R * L.C;
  double* q = &part[p * 4 * L.C];
  BlockMoments<true>(A.x + off, A.g + off, L.C, r0, r1, q, q + L.C, q + 2 * L.C, q + 3 * L.C,
                     PlacedTmp(buf, L.C, A.x + off + r0 * L.C, A.g + off + r0 * L.C));
}

// Sample b's statistics, dx coefficients (P, Q, O, M into coef, 4 C-vectors) and parameter-
// gradient partials (into ds: dscale, dbias) from its blocks' partials (mean, M2, sg, sgc each).
void MergeSample(const double* part, const GradArgs& A, const Layout& L, int64_t b,
                 int64_t nblk, int64_t rows, float* coef, double* ds) {
  std::vector<double> mu(L.C), m2(L.C), sg(L.C, 0.0), sgx(L.C, 0.0);
  const double n = MergeBlocks(part, 4, b, nblk, rows, L, mu.data(), m2.data());
  SumPartials(part, b * nblk, nblk, L.C, sg.data(), sgx.data(), 4, 2);
  FinishSample(A, L, b, mu.data(), m2.data(), n, sg.data(), sgx.data(), coef, coef + L.C,
               coef + 2 * L.C, coef + 3 * L.C, ds, ds + L.C);
}

// GradTwoSweeps for rows wider than NORMJAX_CB_MAX_C channels (the MLP BatchNorm): the sums in
// ShiftedMoments (BlockMoments), dx with interleaved coefficients, both sweeps and the merge
// between them in one dispatch (ParallelFor2). Measured on 1024 x 1024, gradient only: 0.7x
// the time of the corrected two-pass sums, separate coefficients and two dispatches.
void GradTwoSweepsWide(ffi::ThreadPool& pool, const GradArgs& A, const Layout& L, int64_t rows,
                       int64_t nblk, double* part, std::vector<double>& dparts) {
  const int64_t wsize = 4 * 16 * ((L.C + 15) / 16);
  std::vector<float> wcoef(L.B * wsize);  // per sample: interleaved (InterleaveCoefficients)
  auto sums = [&](int64_t p) { BlockPartials(A, L, rows, nblk, p, part); };
  auto coefficients = [&] {
    std::vector<float> coef(4 * L.C);
    for (int64_t b = 0; b < L.B; ++b) {
      MergeSample(part, A, L, b, nblk, rows, coef.data(), &dparts[b * 2 * L.C]);
      InterleaveCoefficients(coef.data(), L.C, &wcoef[b * wsize]);
    }
  };
  auto dx = [&](int64_t p) {
    const int64_t b = p / nblk, r0 = (p % nblk) * rows, r1 = std::min(L.R, r0 + rows);
    const int64_t o = b * L.R * L.C;
    InterleavedDx(A.g + o, A.x + o, &wcoef[b * wsize], L.C, r0, r1, A.dx + o);
  };
  ParallelFor2(pool, L.B * nblk, sums, coefficients, L.B * nblk, dx);
}

// Samples too large for L2 (BatchNorm over a large batch): one sweep of x and g for the
// statistics and the sums (BlockPartials per block of rows, merged per sample), then dx in a
// second sweep. dparts gets 2 * C doubles per sample.
int64_t GradTwoSweeps(ffi::ThreadPool& pool, const GradArgs& A, const Layout& L,
                      std::vector<double>& dparts) {
  const int64_t rows = BlockRows(L, 8);
  const int64_t nblk = (L.R + rows - 1) / rows;
  std::unique_ptr<double[]> part(new double[L.B * nblk * 4 * L.C]);  // mean, M2, sg, sgc
  dparts.assign(L.B * 2 * L.C, 0.0);
  if (L.C > NORMJAX_CB_MAX_C) {
    GradTwoSweepsWide(pool, A, L, rows, nblk, part.get(), dparts);
    return L.B / L.S;
  }
  ParallelFor(pool, L.B * nblk,
              [&](int64_t p) { BlockPartials(A, L, rows, nblk, p, part.get()); });
  std::vector<float> coef(L.B * 4 * L.C);  // per sample: P, Q, O, M
  for (int64_t b = 0; b < L.B; ++b)
    MergeSample(part.get(), A, L, b, nblk, rows, &coef[b * 4 * L.C], &dparts[b * 2 * L.C]);
  ParallelFor(pool, L.B * nblk, [&](int64_t p) {
    const int64_t b = p / nblk, r0 = (p % nblk) * rows, r1 = std::min(L.R, r0 + rows);
    const float* P = &coef[b * 4 * L.C];
    const int64_t o = b * L.R * L.C;
    BlockDx(A.g + o, A.x + o, P, P + L.C, P + 2 * L.C, P + 3 * L.C, L.C, r0, r1, A.dx + o);
  });
  return L.B / L.S;
}

// The closed-form backward of y = (x - mean) * rstd * scale + bias (see normjax/_backend/closed_form.py),
// mean and rstd = 1 / sqrt(var + eps[B, G]) recomputed from x: dx[B, R, C], dscale[S, C],
// dbias[S, C] (summed over the samples of each parameter row) and deps[B, G] =
// -rstd^3 / 2 * sum(g * scale * (x - mean)) per group (the epsilon gradient).
ffi::Error Grad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> x,
                ffi::Buffer<ffi::F32> eps, ffi::Buffer<ffi::F32> scale,
                ffi::Buffer<ffi::F32> gmean, ffi::Buffer<ffi::F32> gvar,
                ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dscale,
                ffi::ResultBuffer<ffi::F32> dbias, ffi::ResultBuffer<ffi::F32> deps,
                bool center) {
  Layout L;
  const auto ed = eps.dimensions();
  if (auto e = MakeLayout(x.dimensions(), ed[ed.size() - 1], Leading(scale.dimensions()), &L);
      e.failure())
    return e;
  std::vector<float> mean(L.B * L.G), rstd(L.B * L.G);
  const GradArgs A{g.typed_data(),     x.typed_data(),   eps.typed_data(),
                   scale.typed_data(), gmean.typed_data(), gvar.typed_data(),
                   dx->typed_data(),   deps->typed_data(), mean.data(),
                   rstd.data(),        center};
  std::vector<double> dparts;
  const int64_t parts_per_seed = SampleFits(L, 8) ? GradPerSample(pool, A, L, dparts)
                                                 : GradTwoSweeps(pool, A, L, dparts);
  float* ds = dscale->typed_data();
  float* db = dbias->typed_data();
  std::vector<double> a(L.C), b(L.C);
  for (int64_t s = 0; s < L.S; ++s) {
    std::fill(a.begin(), a.end(), 0.0);
    std::fill(b.begin(), b.end(), 0.0);
    SumPartials(dparts.data(), s * parts_per_seed, parts_per_seed, L.C, a.data(), b.data());
    for (int64_t c = 0; c < L.C; ++c) {
      ds[s * L.C + c] = float(a[c]);
      db[s * L.C + c] = float(b[c]);
    }
  }
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Rows forward

// The whole forward of LayerNorm / RMSNorm rows (x[B, 1, C], G groups): per row its moments
// (RowMoments, two passes in L1), then y = (x - mean) * (rstd * scale) + bias while the row is
// still in L1, rstd = 1 / sqrt(var + eps[B, G]); scale, bias [S, C] (S parameter rows).
ffi::Error RowsForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                       ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> eps,
                       ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean,
                       ffi::ResultBuffer<ffi::F32> var, bool center) {
  Layout L;
  const auto ed = eps.dimensions();
  if (auto e = MakeLayout(x.dimensions(), ed[ed.size() - 1], Leading(scale.dimensions()), &L);
      e.failure())
    return e;
  if (L.R != 1) return ffi::Error::InvalidArgument("normjax rows kernel: x must be [..., 1, C]");
  const float *xp = x.typed_data(), *sp = scale.typed_data(), *bp = bias.typed_data();
  const float* ep = eps.typed_data();
  float *yp = y->typed_data(), *mp = mean->typed_data(), *vp = var->typed_data();
  const SampleItems items(L, 8);
  ParallelFor(pool, items.count(L), [&](int64_t i) {
    for (int64_t b = items.begin(i); b < items.end(i); ++b) {
      const float* __restrict xr = xp + b * L.C;
      const float* __restrict sc = sp + L.seed(b) * L.C;
      const float* __restrict bi = bp + L.seed(b) * L.C;
      float* __restrict yr = yp + b * L.C;
      RowMoments(xr, L, center, mp + b * L.G, vp + b * L.G);
      for (int64_t g = 0; g < L.G; ++g) {
        const int64_t bg = b * L.G + g, o = g * L.K;
        const float m = mp[bg], r = 1.f / std::sqrt(vp[bg] + ep[bg]);
        for (int64_t k = o; k < o + L.K; ++k) yr[k] = (xr[k] - m) * (r * sc[k]) + bi[k];
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(NormjaxRows, RowsForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x [B, 1, C]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // scale [S, C]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // bias [S, C]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // eps [B, G]
                                  .Ret<ffi::Buffer<ffi::F32>>()   // y
                                  .Ret<ffi::Buffer<ffi::F32>>()   // mean [B, G]
                                  .Ret<ffi::Buffer<ffi::F32>>()   // var [B, G]
                                  .Attr<bool>("center"));

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
                                  .Arg<ffi::Buffer<ffi::F32>>()   // eps [B, G]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // scale
                                  .Arg<ffi::Buffer<ffi::F32>>()   // g_mean
                                  .Arg<ffi::Buffer<ffi::F32>>()   // g_var
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dx
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dscale
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dbias
                                  .Ret<ffi::Buffer<ffi::F32>>()   // deps [B, G]
                                  .Attr<bool>("center"));
