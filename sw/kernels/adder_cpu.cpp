// Fast CPU adder kernels (AdderNet), float32, NCHW.
//
// Per (image, group) the zero-padded input is split into stride x stride phase planes of
// pitch Wq, so that every row d = (c, kh, kw) of the im2col matrix is the plane of
// (c, kh % s, kw % s) read from a constant offset ("implicit im2col"). Outputs live on the
// same pitch-Wq grid l = oh * Wq + ow (columns ow >= OW are computed and dropped). Then
//   forward:     y[o][l]     = -sum_d |col[d][l] - w[o][d]|
//                             = sum_d col + sum_d w - 2 sum_d max(col, w)
//   grad input:  dx[c][m]    = sum_{taps t of m's phase, o} gy[o][m - off_t]
//                                * clamp(w[o][c][t] - x[c][m], -1, 1)
//                (the transposed problem, gathered per input pixel m of each phase plane)
// as GEMM-like register tiles (MR rows x NR vectors of pixels) written with GCC vector
// extensions and a few intrinsics; VW (lanes: 4, 8, 16) selects SSE2, AVX2+FMA or AVX-512.
// Images x groups are spread over ATen's (OpenMP) threads.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#ifndef VW
#define VW 8
#endif

typedef float vf __attribute__((vector_size(VW * 4)));

#if VW == 16
constexpr int FWD_MR = 6, FWD_NR = 4, BWD_MR = 4, BWD_NR = 3;
static inline vf vmin(vf a, vf b) { return (vf)_mm512_min_ps((__m512)a, (__m512)b); }
static inline vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }
static inline vf vfma(vf a, vf b, vf c) { return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }
static inline vf bcast(float a) { return (vf)_mm512_set1_ps(a); }
#elif VW == 8
constexpr int FWD_MR = 4, FWD_NR = 3, BWD_MR = 3, BWD_NR = 2;
static inline vf vmin(vf a, vf b) { return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
static inline vf vmax(vf a, vf b) { return (vf)_mm256_max_ps((__m256)a, (__m256)b); }
static inline vf vfma(vf a, vf b, vf c) { return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }
static inline vf bcast(float a) { return (vf)_mm256_set1_ps(a); }
#else
constexpr int FWD_MR = 3, FWD_NR = 3, BWD_MR = 2, BWD_NR = 2;
static inline vf vmin(vf a, vf b) { return (vf)_mm_min_ps((__m128)a, (__m128)b); }
static inline vf vmax(vf a, vf b) { return (vf)_mm_max_ps((__m128)a, (__m128)b); }
static inline vf vfma(vf a, vf b, vf c) { return a * b + c; }
static inline vf bcast(float a) { return (vf)_mm_set1_ps(a); }
#endif

static inline vf load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
static inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// dst[0:n] = src[0:n] for short rows (a memcpy call costs more than the copy here).
static inline void copy_row(float* dst, const float* src, int n) {
  int i = 0;
  for (; i + VW <= n; i += VW) store(dst + i, load(src + i));
#if VW == 16
  const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
  _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, src + i));
#else
  for (; i < n; ++i) dst[i] = src[i];
#endif
}
// rows x cols block between pitched buffers; one copy when both are unpadded.
static inline void copy_grid(float* dst, int dpitch, const float* src, int spitch, int rows, int cols) {
  if (dpitch == cols && spitch == cols) return copy_row(dst, src, rows * cols);
  for (int r = 0; r < rows; ++r) copy_row(dst + r * dpitch, src + r * spitch, cols);
}
// 1.0 hidden from the optimiser: "acc = fma(v, one, acc)" keeps the add on the FMA pipes
// (free while max/range ops use the others) and rounds exactly like "acc + v".
static inline vf opaque_one() {
  vf one = bcast(1.0f);
  asm("" : "+v"(one));
  return one;
}
static inline vf hardtanh(vf v) {
#if VW == 16 && defined(__AVX512DQ__)
  // range op: the operand of smaller magnitude (|v| vs 1) with the sign of v
  return (vf)_mm512_range_ps((__m512)v, _mm512_set1_ps(1.0f), 0x02);
#else
  return vmin(vmax(v, bcast(-1.0f)), bcast(1.0f));
#endif
}

// Geometry of one adder convolution and its phase-plane layout.
struct Geom {
  int C, H, W, O, K, s, p, G, OH, OW;
  int Cg, Og, D, Wq, Lp, PS;  // PS: floats per phase plane
  int Mp, M0, LG;             // gradient: pixels per plane, gy margin, gy row length
  std::vector<int> roff;      // offset of im2col row d in a group's plane buffer

  Geom(int C_, int H_, int W_, int O_, int K_, int s_, int p_, int G_)
      : C(C_), H(H_), W(W_), O(O_), K(K_), s(s_), p(p_), G(G_) {
    OH = (H + 2 * p - K) / s + 1, OW = (W + 2 * p - K) / s + 1;
    Cg = C / G, Og = O / G, D = Cg * K * K;
    const int Hq = (H + 2 * p + s - 1) / s;
    Wq = (W + 2 * p + s - 1) / s;
    Lp = (OH * Wq + VW - 1) / VW * VW;
    Mp = (Hq * Wq + VW - 1) / VW * VW;
    M0 = (K - 1) / s * (Wq + 1);
    LG = M0 + std::max(Mp, Lp);
    PS = std::max(Mp, M0 + Lp);
    for (int c = 0; c < Cg; ++c)
      for (int kh = 0; kh < K; ++kh)
        for (int kw = 0; kw < K; ++kw)
          roff.push_back(plane(c, kh % s, kw % s) + kh / s * Wq + kw / s);
  }
  int plane(int c, int pr, int pc) const { return ((c * s + pr) * s + pc) * PS; }
  int planes_size() const { return Cg * s * s * PS; }
  // position of padded-input pixel (c, r, q) in the plane buffer
  int at(int c, int r, int q) const { return plane(c, r % s, q % s) + r / s * Wq + q / s; }
};

// x [Cg, H, W] -> phase planes (padding positions are left untouched, i.e. zero).
static void to_planes(const Geom& g, const float* x, float* pl) {
  for (int c = 0; c < g.Cg; ++c) {
    const float* xc = x + c * g.H * g.W;
    if (g.s == 1) {
      copy_grid(pl + g.at(c, g.p, g.p), g.Wq, xc, g.W, g.H, g.W);
      continue;
    }
    for (int ih = 0; ih < g.H; ++ih)
      for (int iw = 0; iw < g.W; ++iw) pl[g.at(c, ih + g.p, iw + g.p)] = xc[ih * g.W + iw];
  }
}

// phase planes -> dx [Cg, H, W] (padding positions dropped).
static void from_planes(const Geom& g, const float* pl, float* dx) {
  for (int c = 0; c < g.Cg; ++c) {
    float* xc = dx + c * g.H * g.W;
    if (g.s == 1) {
      copy_grid(xc, g.W, pl + g.at(c, g.p, g.p), g.Wq, g.H, g.W);
      continue;
    }
    for (int ih = 0; ih < g.H; ++ih)
      for (int iw = 0; iw < g.W; ++iw) xc[ih * g.W + iw] = pl[g.at(c, ih + g.p, iw + g.p)];
  }
}

// y[i][:] = -sum_d |col[d][:] - w[i][d]| for MR weight rows (stride D) and NR pixel vectors,
// col[d] = pl + roff[d], as sum_d col + sum_d w - 2 sum_d max(col, w) (2 ops per term, not 3);
// wsum[i] = sum_d w[i][d].
template <int MR, int NR>
static void sad_tile(const float* w, const float* wsum, int D, const float* pl, const int* roff,
                     float* y, int ldy) {
  vf acc[MR][NR] = {}, xsum[NR] = {};
  const vf one = opaque_one();
  for (int d = 0; d < D; ++d) {
    const float* xr = pl + roff[d];
    vf xv[NR];
    for (int j = 0; j < NR; ++j) xv[j] = load(xr + j * VW), xsum[j] += xv[j];
    for (int i = 0; i < MR; ++i) {
      const vf wi = bcast(w[i * D + d]);
      for (int j = 0; j < NR; ++j) acc[i][j] = vfma(vmax(xv[j], wi), one, acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) store(y + i * ldy + j * VW, (xsum[j] + wsum[i]) - 2.0f * acc[i][j]);
}

// dx[i][:] = sum_{(t, goff) in taps} sum_o gq[o][goff:] * hardtanh(w[o][i][t] - x[i][:])
// for MR channels (planes cs apart) and NR pixel vectors of one phase plane;
// w points at (o = 0, first channel, t = 0) of weights [Og][Cg][KK].
template <int MR, int NR>
static void grad_tile(const float* w, int Og, int Cg, int KK, const int* taps, int ntaps,
                      const float* x, int cs, const float* gq, int lg, float* dx) {
  vf nx[MR][NR], acc[MR][NR] = {};  // nx = -x
  const vf one = opaque_one();
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) nx[i][j] = -load(x + i * cs + j * VW);
  for (int k = 0; k < ntaps; ++k) {
    const float* wt = w + taps[2 * k];
    const float* gt = gq + taps[2 * k + 1];
    for (int o = 0; o < Og; ++o) {
      vf gv[NR];
      for (int j = 0; j < NR; ++j) gv[j] = load(gt + o * lg + j * VW);
      for (int i = 0; i < MR; ++i) {
        const vf wi = bcast(wt[(o * Cg + i) * KK]);  // w - x as fma(w, 1, -x): FMA pipes
        for (int j = 0; j < NR; ++j) acc[i][j] = vfma(gv[j], hardtanh(vfma(wi, one, nx[i][j])), acc[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) store(dx + i * cs + j * VW, acc[i][j]);
}

// Tile kernels indexed by (rows - 1) * NR + (vectors - 1).
using SadFn = void (*)(const float*, const float*, int, const float*, const int*, float*, int);
using GradFn = void (*)(const float*, int, int, int, const int*, int, const float*, int, const float*,
                       int, float*);
template <int... I>
constexpr std::array<SadFn, sizeof...(I)> sad_table(std::integer_sequence<int, I...>) {
  return {&sad_tile<I / FWD_NR + 1, I % FWD_NR + 1>...};
}
template <int... I>
constexpr std::array<GradFn, sizeof...(I)> grad_table(std::integer_sequence<int, I...>) {
  return {&grad_tile<I / BWD_NR + 1, I % BWD_NR + 1>...};
}
static const auto SAD = sad_table(std::make_integer_sequence<int, FWD_MR * FWD_NR>{});
static const auto GRAD = grad_table(std::make_integer_sequence<int, BWD_MR * BWD_NR>{});

// y [Og][Lp] = -sum_d |col - w| for one group's weights w [Og][D] (row sums wsum) and planes pl.
static void sad_block(const Geom& g, const float* w, const float* wsum, const float* pl, float* y) {
  const int nv = g.Lp / VW;
  for (int v = 0; v < nv; v += FWD_NR) {
    const int nr = std::min(FWD_NR, nv - v), l = v * VW;
    for (int o = 0; o < g.Og; o += FWD_MR) {
      const int mr = std::min(FWD_MR, g.Og - o);
      SAD[(mr - 1) * FWD_NR + nr - 1](w + o * g.D, wsum + o, g.D, pl + l, g.roff.data(), y + o * g.Lp + l, g.Lp);
    }
  }
}

// (tap t, gy offset M0 - off_t) pairs of each phase plane (pr * s + pc).
static std::vector<std::vector<int>> phase_taps(const Geom& g) {
  std::vector<std::vector<int>> taps(g.s * g.s);
  for (int kh = 0; kh < g.K; ++kh)
    for (int kw = 0; kw < g.K; ++kw)
      taps[kh % g.s * g.s + kw % g.s].insert(
          taps[kh % g.s * g.s + kw % g.s].end(),
          {kh * g.K + kw, g.M0 - (kh / g.s * g.Wq + kw / g.s)});
  return taps;
}

// Gradient planes dpl of one group from its weights w [Og][Cg][KK], planes pl, gq [Og][LG].
static void grad_block(const Geom& g, const std::vector<std::vector<int>>& taps, const float* w,
                       const float* pl, const float* gq, float* dpl) {
  const int nv = g.Mp / VW, KK = g.K * g.K, cs = g.s * g.s * g.PS;
  for (int ph = 0; ph < g.s * g.s; ++ph) {
    const int nt = (int)taps[ph].size() / 2;
    if (nt == 0) continue;
    for (int c = 0; c < g.Cg; c += BWD_MR) {
      const int mr = std::min(BWD_MR, g.Cg - c), base = g.plane(c, ph / g.s, ph % g.s);
      for (int v = 0; v < nv; v += BWD_NR) {
        const int nr = std::min(BWD_NR, nv - v), m = v * VW;
        GRAD[(mr - 1) * BWD_NR + nr - 1](w + c * KK, g.Og, g.Cg, KK, taps[ph].data(), nt,
                                         pl + base + m, cs, gq + m, g.LG, dpl + base + m);
      }
    }
  }
}

static Geom geometry(const at::Tensor& x, const at::Tensor& w, int64_t s, int64_t p, int64_t G) {
  TORCH_CHECK(x.dim() == 4 && w.dim() == 4, "adder2d: x and w must be 4-D");
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat,
              "adder2d fast kernel: float32 only");
  TORCH_CHECK(s >= 1 && p >= 0 && G >= 1 && x.size(1) % G == 0 && w.size(0) % G == 0 &&
                  w.size(1) == x.size(1) / G && w.size(2) == w.size(3),
              "adder2d: inconsistent shapes, stride, padding or groups");
  Geom g((int)x.size(1), (int)x.size(2), (int)x.size(3), (int)w.size(0), (int)w.size(2), (int)s,
         (int)p, (int)G);
  TORCH_CHECK(g.OH > 0 && g.OW > 0, "adder2d: empty output");
  return g;
}

// x [N, C, H, W], w [O, C/G, K, K] -> y [N, O, OH, OW].
at::Tensor forward(at::Tensor x, at::Tensor w, int64_t stride, int64_t padding, int64_t groups) {
  x = x.contiguous(), w = w.contiguous();
  const Geom g = geometry(x, w, stride, padding, groups);
  const int64_t N = x.size(0);
  auto y = at::empty({N, g.O, g.OH, g.OW}, x.options());
  auto wsum = w.reshape({g.O, g.D}).sum(1);
  const float *px = x.data_ptr<float>(), *pw = w.data_ptr<float>(), *pws = wsum.data_ptr<float>();
  float* py = y.data_ptr<float>();
  at::parallel_for(0, N * g.G, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> pl(g.planes_size()), out((size_t)g.Og * g.Lp);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / g.G, gi = t % g.G;
      to_planes(g, px + (n * g.C + gi * g.Cg) * g.H * g.W, pl.data());
      sad_block(g, pw + gi * g.Og * g.D, pws + gi * g.Og, pl.data(), out.data());
      float* yo = py + (n * g.O + gi * g.Og) * g.OH * g.OW;
      for (int o = 0; o < g.Og; ++o)
        copy_grid(yo + o * g.OH * g.OW, g.OW, &out[(size_t)o * g.Lp], g.Wq, g.OH, g.OW);
    }
  });
  return y;
}

// AdderNet input gradient dx [N, C, H, W] = sum gy * HardTanh(w - x) over the outputs that
// read each input pixel.
at::Tensor grad_input(at::Tensor x, at::Tensor w, at::Tensor gy, int64_t stride,
                      int64_t padding, int64_t groups) {
  x = x.contiguous(), w = w.contiguous(), gy = gy.contiguous();
  const Geom g = geometry(x, w, stride, padding, groups);
  const int64_t N = x.size(0);
  TORCH_CHECK(gy.numel() == N * g.O * g.OH * g.OW, "adder2d: grad_output has the wrong shape");
  const auto taps = phase_taps(g);
  auto dx = at::empty(x.sizes(), x.options());
  const float *px = x.data_ptr<float>(), *pw = w.data_ptr<float>(), *pg = gy.data_ptr<float>();
  float* pdx = dx.data_ptr<float>();
  at::parallel_for(0, N * g.G, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> pl(g.planes_size()), dpl(g.planes_size()), gq((size_t)g.Og * g.LG);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / g.G, gi = t % g.G;
      const int64_t xoff = (n * g.C + gi * g.Cg) * g.H * g.W;
      to_planes(g, px + xoff, pl.data());
      const float* go = pg + (n * g.O + gi * g.Og) * g.OH * g.OW;
      for (int o = 0; o < g.Og; ++o)
        copy_grid(&gq[(size_t)o * g.LG + g.M0], g.Wq, go + o * g.OH * g.OW, g.OW, g.OH, g.OW);
      grad_block(g, taps, pw + gi * g.Og * g.D, pl.data(), gq.data(), dpl.data());
      from_planes(g, dpl.data(), pdx + xoff);
    }
  });
  return dx;
}

TORCH_LIBRARY(nasa_adder, m) {
  m.def("forward(Tensor x, Tensor w, int stride, int padding, int groups) -> Tensor", &forward);
  m.def("grad_input(Tensor x, Tensor w, Tensor gy, int stride, int padding, int groups) -> Tensor",
        &grad_input);
}
