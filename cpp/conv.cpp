// 2-D convolution (cross-correlation) forward and backward as GEMMs on implicit image patches.
//
// Each image (and group) is first copied into a zero-padded buffer xp (C x Hp x Wp), so that no patch
// element falls outside it. Output positions are laid out on a grid of rows of width Wg; with
//
//     cols[k, q] = xp[c, i*sh + a*dh, j*sw + b*dw]      k = (c, a, b) (K = C*kh*kw), q = i*Wg + j (P on the grid)
//
// each pass is a matrix product per image n and group:
//
//     forward          out[n] (O x P)  = W (O x K) · cols (K x P)
//     input grad       dcols (K x P)   = W^T (K x O) · dout[n] (O x P), then dxp = col2im(dcols), dx = crop(dxp)
//     weight grad      dW (O x K)     += dout[n] (O x P) · cols^T (P x K)        summed over n
//
// The grid. With stride 1 the grid rows are Wg = Wp wide, a padded input row: then cols[k, q] =
// xp[off(k) + q] with off(k) = c*Hp*Wp + a*dh*Wp + b*dw, so row k of cols is one contiguous run of xp,
// and all of it is plain unit-stride copying (or no copying at all: see the weight gradient). The grid
// columns j >= Wo are not outputs: their results are dropped (forward, and col2im in the input gradient),
// and dout is zero there (weight gradient), so they add nothing; an image with an inf or nan, which a
// zero would turn into nan, takes the compact grid instead. They cost (Wp - Wo) / Wp of the work: 6% for
// 3x3 with padding 1 on 32x32. With
// another stride the grid is the output itself (Wg = Wo), and a row of cols is read one output row
// at a time, every sw-th element.
//
// im2col would write cols out whole (K * P per image: 19 MB for a batch of 32 of the 16 -> 32 channel
// layer of bench's conv2d_step) and the GEMM would then read it back to pack it. Here cols is an
// Operand of the GEMM (gemm.h) whose pack() copies each block straight from xp into the
// micro-kernel's panels (implicit im2col), in L1/L2 as the GEMM consumes it.
//
// Threads: one image at a time per thread (forward, input grad), its GEMMs on that thread alone; the
// weight gradient sums over images in a fixed number of slices of the batch, each into its own partial
// dW, added in order at the end, so results do not depend on the thread count. With fewer images (or
// slices) than threads, they run one after another and each GEMM uses all threads instead.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <optional>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemm.h"
#include "minigrad.h"
#include "pool.h"
#include "simd.h"

namespace py = pybind11;

namespace minigrad {
namespace {

// The shapes of one convolution, for one group (C, O: the group's channels).
struct Geometry {
    int64_t C, H, W, O, kh, kw, sh, sw, dh, dw, top, left, Ho, Wo, Hp, Wp;
    bool padded_grid;  // grid rows Wp wide (unit stride; see the header), else Wo (the output itself)
    int64_t K() const { return C * kh * kw; }
    int64_t Wg() const { return padded_grid ? Wp : Wo; }  // grid row width
    int64_t P() const { return (Ho - 1) * Wg() + Wo; }      // grid positions (the last row ends at Wo)
    int64_t Pg() const { return Ho * Wg(); }                 // the grid of one channel, whole rows
    int64_t off(int64_t k) const {                           // where row k of cols starts in xp
        const int64_t c = k / (kh * kw), a = k / kw % kh, b = k % kw;
        return (c * Hp + a * dh) * Wp + b * dw;
    }
};

// Calls run(t, n, offset) for the positions q = p .. p + count - 1 of row k of cols, in runs whose
// elements lie at xp[offset], xp[offset + sw], ...: one run with stride 1, one per output row otherwise.
template <class Run>
inline void for_each_run(const Geometry& g, int64_t k, int64_t p, int64_t count, Run run) {
    const int64_t start = g.off(k);
    if (g.padded_grid) {
        run(int64_t(0), count, start + p);
        return;
    }
    int64_t i = p / g.Wo, j = p % g.Wo;
    for (int64_t t = 0; t < count; t += g.Wo - j, j = 0, ++i)
        run(t, std::min(count - t, g.Wo - j), start + i * g.sh * g.Wp + j * g.sw);
}

// d[u] = xp[offset + u * sw] for u < n: one run of for_each_run.
template <class T>
inline void copy_run(const Geometry& g, const T* xp, int64_t n, int64_t offset, T* d) {
    const T* s = xp + offset;
    if (g.sw == 1) {
        for (int64_t u = 0; u < n; ++u) d[u] = s[u];
    } else {
        for (int64_t u = 0; u < n; ++u) d[u] = s[u * g.sw];
    }
}

// dst (planes x rows x dst_w) gets src (planes x rows x src_w), each src row placed at column `shift` of
// its dst row (cols columns copied from column `from` of src); everything else in dst is zero. Pads an
// image (xp), lays dout on the grid, and with the roles swapped, crops and compacts.
template <class T>
void place_rows(const T* src, int64_t src_w, int64_t from, T* dst, int64_t dst_w, int64_t shift, int64_t planes,
                int64_t src_rows, int64_t dst_rows, int64_t row_shift, int64_t cols) {
    for (int64_t p = 0; p < planes; ++p)
        for (int64_t r = 0; r < dst_rows; ++r) {
            T* d = dst + (p * dst_rows + r) * dst_w;
            const int64_t sr = r - row_shift;
            if (sr < 0 || sr >= src_rows) {
                std::fill(d, d + dst_w, T(0));
                continue;
            }
            const T* s = src + (p * src_rows + sr) * src_w + from;
            std::fill(d, d + shift, T(0));
            std::copy(s, s + cols, d + shift);
            std::fill(d + shift + cols, d + dst_w, T(0));
        }
}

// xp (C x Hp x Wp) = x (C x H x W) with the padding around it.
template <class T>
void pad(const Geometry& g, const T* x, T* xp) {
    place_rows(x, g.W, 0, xp, g.Wp, g.left, g.C, g.H, g.Hp, g.top, g.W);
}

// cols of one padded image as the B operand of the forward product, packed on demand: (i, p) =
// (position, row k of cols). Row k of a block, the positions [i0, i0 + w), is cut into the panels' rows.
template <class T>
struct Patches final : Operand<T> {
    const Geometry& g;
    const T* xp;
    Patches(const Geometry& g, const T* xp) : g(g), xp(xp) {}

    void pack(T* dst, int64_t i0, int64_t w, int64_t p0, int64_t kc, int W) const override {
        for (int64_t kk = 0; kk < kc; ++kk) {
            int64_t q = 0, r = 0;  // the panel and lane of the next position
            for_each_run(g, p0 + kk, i0, w, [&](int64_t, int64_t n, int64_t offset) {
                while (n > 0) {
                    const int64_t m = std::min<int64_t>(n, W - r);
                    copy_run(g, xp, m, offset, dst + (q * kc + kk) * W + r);
                    offset += m * g.sw;
                    n -= m;
                    r += m;
                    if (r == W) r = 0, ++q;
                }
            });
            if (r > 0) std::fill(dst + (q * kc + kk) * W + r, dst + (q * kc + kk + 1) * W, T(0));
        }
    }
};

// dxp (C x Hp x Wp) = col2im(dcols (K x P)): each element of xp gets the sum of the dcols entries that
// were read from it (the adjoint of the patches). Only the Wo real positions of each grid row are added:
// the other grid columns are 0 in exact arithmetic but nan where an infinite weight met a zero of dout.
template <class T>
void col2im(const Geometry& g, const T* dcols, T* dxp) {
    std::fill(dxp, dxp + g.C * g.Hp * g.Wp, T(0));
    const int64_t P = g.P();
    for (int64_t k = 0; k < g.K(); ++k)
        for (int64_t i = 0; i < g.Ho; ++i) {
            T* d = dxp + g.off(k) + i * g.sh * g.Wp;
            const T* s = dcols + k * P + i * g.Wg();
            if (g.sw == 1) {
                for (int64_t u = 0; u < g.Wo; ++u) d[u] += s[u];
            } else {
                for (int64_t u = 0; u < g.Wo; ++u) d[u * g.sw] += s[u];
            }
        }
}

// Runs body(task, threads) for each task in [0, tasks): one task per thread at a time, its GEMMs on that
// thread (threads = 1); or, with fewer tasks than threads, the tasks in turn with all threads for each GEMM.
// (A task's exception, e.g. std::bad_alloc of a scratch buffer, is thrown after the region: RegionErrors.)
template <class Body>
void over_tasks(int64_t tasks, Body body) {
    const int threads = num_threads();
    if (tasks >= threads && threads > 1) {
        RegionErrors errors;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int64_t t = 0; t < tasks; ++t) errors.run([&] { body(t, 1); });
        errors.rethrow();
    } else {
        for (int64_t t = 0; t < tasks; ++t) body(t, threads);
    }
}

// Per-thread buffers of one image: the padded input (or its gradient), and a (rows x P) grid.
thread_local Scratch xp_scratch, grid_scratch, dcols_scratch;

// out (N, O, Ho, Wo) = conv(x (N, C, H, W), w (O, C/g, kh, kw)) + bias (O,) if not null, all C-contiguous.
template <class T>
void forward(const Geometry& g, int64_t images, int64_t groups, const T* x, const T* w, const T* bias, T* out) {
    const int64_t K = g.K(), P = g.P();
    over_tasks(images * groups, [&](int64_t task, int threads) {
        T* xp = xp_scratch.get<T>(g.C * g.Hp * g.Wp);
        T* grid = g.padded_grid ? grid_scratch.get<T>(g.O * g.Pg()) : out + task * g.O * P;  // else out itself
        pad(g, x + task * g.C * g.H * g.W, xp);
        gemm<T>(g.O, P, K, StridedA<T>({w + task % groups * g.O * K, K, 1}), Patches<T>(g, xp), grid, g.Pg(),
                threads);
        // out[o, i, j] = grid[o, i*Wg + j] + bias[o] for j < Wo: drops the grid columns j >= Wo, if any (in place
        // when the grid is out itself: the reads run ahead of, or at, the writes)
        T* o_img = out + task * g.O * g.Ho * g.Wo;
        for (int64_t o = 0; o < g.O; ++o) {
            const T b = bias ? bias[task % groups * g.O + o] : T(0);
            for (int64_t i = 0; i < g.Ho; ++i) {
                const T* s = grid + o * g.Pg() + i * g.Wg();
                T* d = o_img + (o * g.Ho + i) * g.Wo;
                for (int64_t j = 0; j < g.Wo; ++j) d[j] = s[j] + b;
            }
        }
    });
}

// dout[n] (O x Ho x Wo) on the grid (O x Pg): itself, or widened to Wg columns with zeros (in grid_scratch).
template <class T>
const T* dout_on_grid(const Geometry& g, const T* dout) {
    if (!g.padded_grid) return dout;
    T* grid = grid_scratch.get<T>(g.O * g.Ho * g.Wp);
    place_rows(dout, g.Wo, 0, grid, g.Wp, 0, g.O, g.Ho, g.Ho, 0, g.Wo);
    return grid;
}

// dx (N, C, H, W) from dout (N, O, Ho, Wo): per image and group, dcols = W^T · dout, col2im, crop.
template <class T>
void input_grad(const Geometry& g, int64_t images, int64_t groups, const T* dout, const T* w, T* dx) {
    const int64_t K = g.K(), P = g.P();
    over_tasks(images * groups, [&](int64_t task, int threads) {
        T* dcols = dcols_scratch.get<T>(K * P);
        T* dxp = xp_scratch.get<T>(g.C * g.Hp * g.Wp);
        const T* dgrid = dout_on_grid(g, dout + task * g.O * g.Ho * g.Wo);
        gemm<T>(K, P, g.O, Strided<T>{w + task % groups * g.O * K, 1, K}, Strided<T>{dgrid, g.Pg(), 1}, dcols, P,
                threads);
        col2im(g, dcols, dxp);
        place_rows(dxp, g.Wp, g.left, dx + task * g.C * g.H * g.W, g.W, 0, g.C, g.Hp, g.H, -g.top, g.W);
    });
}

// ---- weight gradient: dot products of rows -------------------------------------------------------
//
// dW (O x K) = sum over images of dout[n] (O x P) · cols^T: both operands are read along P, the direction
// in which they are contiguous. A GEMM would have to pack one of them transposed (P along a panel's
// depth, K or O across its lanes), a strided scatter of every element, costing more than the few
// multiply-adds each element takes part in (O of them). So the product is computed as dot products of
// rows instead: an RA x RB tile of dW holds RA * RB vector accumulators while RA rows of dout and RB rows
// of cols stream through, each loaded vector feeding RB (or RA) fused multiply-adds; the lanes are summed
// once per tile and chunk. With stride 1 a row of cols is a run of xp itself (no copy at all); otherwise
// the image's cols are written out first (im2col into a per-thread buffer, K x P, in L2 for layers of
// the size of conv2d_step's). P is walked in chunks of kChunk so that a tile's rows stay in L1.

constexpr int64_t kChunk = 1024;

// c[r * ldc + s] += sum over t < n of a[r][t] * b[s][t], for r < ra <= RA, s < rb <= RB (row pointers).
template <class S, int RA, int RB, class T = typename S::Scalar>
MG_INLINE void dot_tile(const T* const* a, const T* const* b, int64_t n, T* c, int64_t ldc, int ra, int rb) {
    using V = typename S::V;
    V acc[RA][RB];
    for (int r = 0; r < RA; ++r)
        for (int s = 0; s < RB; ++s) acc[r][s] = splat<V>(T(0));
    for_each_vector<S>(n, [&](int64_t t, auto k) MG_LAMBDA {
        V av[RA], bv[RB];
        for (int r = 0; r < RA; ++r) av[r] = load<S>(a[r] + t, k, T(0));
        for (int s = 0; s < RB; ++s) bv[s] = load<S>(b[s] + t, k, T(0));
        for (int r = 0; r < RA; ++r)
            for (int s = 0; s < RB; ++s) acc[r][s] += av[r] * bv[s];
    });
    for (int r = 0; r < ra; ++r)
        for (int s = 0; s < rb; ++s) c[r * ldc + s] += reduce<S>(acc[r][s], Add{});
}

// dw (O x K) += A (O x P) · B (K x P)^T for one image, A and B given by their row pointers.
template <class S, int RA, int RB, class T = typename S::Scalar>
MG_INLINE void dot_rows(const T* const* arows, const T* const* brows, int64_t O, int64_t K, int64_t P, T* dw) {
    for (int64_t t0 = 0; t0 < P; t0 += kChunk) {
        const int64_t n = std::min(kChunk, P - t0);
        for (int64_t k0 = 0; k0 < K; k0 += RB) {
            const T* b[RB];  // rows past the end repeat the last one; their sums are not stored
            for (int s = 0; s < RB; ++s) b[s] = brows[std::min(k0 + s, K - 1)] + t0;
            for (int64_t o0 = 0; o0 < O; o0 += RA) {
                const T* a[RA];
                for (int r = 0; r < RA; ++r) a[r] = arows[std::min(o0 + r, O - 1)] + t0;
                dot_tile<S, RA, RB>(a, b, n, dw + o0 * K + k0, K, int(std::min<int64_t>(RA, O - o0)),
                                    int(std::min<int64_t>(RB, K - k0)));
            }
        }
    }
}

template <class T>
using DotRowsFn = void (*)(const T* const*, const T* const*, int64_t, int64_t, int64_t, T*);

// One compiled version per instruction set: RA x RB accumulators plus RA + RB operand vectors must fit
// the register file (32 zmm for AVX-512: 4 x 4 + 8; 16 ymm / xmm: 2 x 4 + 6).
#define MG_DOT_ROWS(NAME, TARGET, BYTES, RA, RB)                                                             \
    template <class T>                                                                                    \
    TARGET void NAME(const T* const* arows, const T* const* brows, int64_t O, int64_t K, int64_t P, T* dw) { \
        dot_rows<Simd<T, BYTES>, RA, RB>(arows, brows, O, K, P, dw);                                      \
    }
#if defined(__x86_64__) || defined(__i386__)
MG_DOT_ROWS(dot_rows_avx512, __attribute__((target("avx512f,fma"))), 64, 4, 4)
MG_DOT_ROWS(dot_rows_avx2, __attribute__((target("avx2,fma"))), 32, 2, 4)
#endif
MG_DOT_ROWS(dot_rows_portable, , 16, 2, 4)
#undef MG_DOT_ROWS

// The version for the instruction set the GEMM uses (set_gemm_kernel chooses it for both).
template <class T>
DotRowsFn<T> dot_rows_fn() {
    const std::string isa = gemm_kernel_name();
#if defined(__x86_64__) || defined(__i386__)
    if (isa == "avx512") return &dot_rows_avx512<T>;
    if (isa == "avx2") return &dot_rows_avx2<T>;
#endif
    return &dot_rows_portable<T>;
}

// dw (O, C/g, kh, kw) from dout and x. The batch is cut into kSlices fixed slices of images, each summed
// into its own partial dW (one task per slice and group), and the partials are added in slice order.
constexpr int64_t kSlices = 8;

template <class T>
void weight_grad(const Geometry& g, int64_t images, int64_t groups, const T* dout, const T* x, T* dw) {
    const int64_t K = g.K(), O = g.O, size = O * K;
    const int64_t slices = std::max<int64_t>(1, std::min(kSlices, images));  // no image: one empty slice, dW = 0
    const DotRowsFn<T> dot = dot_rows_fn<T>();
    std::vector<T> partial(slices * groups * size, T(0));
    // An image holding an inf or nan goes through the output grid itself (im2col), so that no grid column
    // j >= Wo multiplies it by dout's zero there (0 * inf = nan, which the reference does not have).
    Geometry compact = g;
    compact.padded_grid = false;
    over_tasks(slices * groups, [&](int64_t task, int) {
        const int64_t s = task / groups, gi = task % groups;
        T* xp = xp_scratch.get<T>(g.C * g.Hp * g.Wp);
        std::vector<const T*> arows(O), brows(K);
        for (int64_t n = images * s / slices; n < images * (s + 1) / slices; ++n) {
            const int64_t image = n * groups + gi;
            pad(g, x + image * g.C * g.H * g.W, xp);
            const bool direct = g.padded_grid && std::all_of(xp, xp + g.C * g.Hp * g.Wp, [](T v) {
                return v - v == T(0);  // finite
            });
            const Geometry& gg = direct ? g : compact;
            const T* dgrid = dout_on_grid(gg, dout + image * O * g.Ho * g.Wo);
            for (int64_t o = 0; o < O; ++o) arows[o] = dgrid + o * gg.Pg();
            T* cols = direct ? nullptr : dcols_scratch.get<T>(K * gg.P());
            for (int64_t k = 0; k < K; ++k) {
                if (direct) {  // row k of cols is a run of xp
                    brows[k] = xp + g.off(k);
                    continue;
                }
                for_each_run(gg, k, 0, gg.P(), [&](int64_t t, int64_t m, int64_t offset) {  // im2col
                    copy_run(gg, xp, m, offset, cols + k * gg.P() + t);
                });
                brows[k] = cols + k * gg.P();
            }
            dot(arows.data(), brows.data(), O, K, gg.P(), partial.data() + task * size);
        }
    });
    for (int64_t gi = 0; gi < groups; ++gi) {  // the partials of group gi are tasks gi, groups + gi, ...
        T* d = dw + gi * size;
        std::copy(partial.begin() + gi * size, partial.begin() + (gi + 1) * size, d);
        for (int64_t s = 1; s < slices; ++s)
            for (int64_t i = 0; i < size; ++i) d[i] += partial[(s * groups + gi) * size + i];
    }
}

// ---- Python entry points ---------------------------------------------------------------------------

template <class T>
const T* data_of(const py::array& a, const char* name) {
    if (!a.dtype().equal(py::dtype::of<T>()))
        throw py::type_error(std::string("conv2d: ") + name + " is " + py::str(a.dtype()).cast<std::string>() +
                             ", expected " + py::str(py::dtype::of<T>()).cast<std::string>());
    if (!(a.flags() & py::array::c_style))
        throw std::invalid_argument(std::string("conv2d: ") + name + " must be C-contiguous, got a strided array of "
                                    "shape " + shape_of(a));
    return static_cast<const T*>(a.data());
}

// The geometry of one group, checked against x (N, C, H, W) and w (O, C/g, kh, kw).
Geometry geometry(const py::array& x, const py::array& w, std::array<int64_t, 2> stride,
                  std::array<int64_t, 4> padding, std::array<int64_t, 2> dilation, int64_t groups) {
    if (x.ndim() != 4 || w.ndim() != 4)
        throw std::invalid_argument("conv2d: x and weight must be 4-D, got " + shape_of(x) + " and " + shape_of(w));
    if (groups < 1 || x.shape(1) != w.shape(1) * groups || w.shape(0) % groups)
        throw std::invalid_argument("conv2d: x " + shape_of(x) + " and weight " + shape_of(w) + " do not fit groups=" +
                                    std::to_string(groups));
    for (int64_t v : {stride[0], stride[1], dilation[0], dilation[1]})
        if (v < 1) throw std::invalid_argument("conv2d: stride and dilation must be >= 1");
    for (int64_t v : padding)
        if (v < 0) throw std::invalid_argument("conv2d: padding must be >= 0");
    if (w.shape(2) < 1 || w.shape(3) < 1)
        throw std::invalid_argument("conv2d: the kernel must be at least 1 x 1, got weight " + shape_of(w));
    Geometry g{w.shape(1), x.shape(2), x.shape(3), w.shape(0) / groups, w.shape(2), w.shape(3), stride[0],
               stride[1], dilation[0], dilation[1], padding[0], padding[2], 0, 0, 0, 0, stride[0] == 1 && stride[1] == 1};
    g.Hp = g.H + padding[0] + padding[1];
    g.Wp = g.W + padding[2] + padding[3];
    const int64_t span_h = g.dh * (g.kh - 1) + 1, span_w = g.dw * (g.kw - 1) + 1;  // the dilated kernel
    if (g.Hp < span_h || g.Wp < span_w)
        throw std::invalid_argument("conv2d: the kernel " + shape_of(w) + " does not fit the padded input " +
                                    shape_of(x));
    g.Ho = (g.Hp - span_h) / g.sh + 1;
    g.Wo = (g.Wp - span_w) / g.sw + 1;
    return g;
}

template <class T>
py::array_t<T> conv2d_forward(const py::array& x, const py::array& w, std::array<int64_t, 2> stride,
                              std::array<int64_t, 4> padding, std::array<int64_t, 2> dilation, int64_t groups,
                              const std::optional<py::array>& bias) {
    const Geometry g = geometry(x, w, stride, padding, dilation, groups);
    const T *px = data_of<T>(x, "x"), *pw = data_of<T>(w, "weight");
    const T* pb = nullptr;
    if (bias) {
        if (bias->ndim() != 1 || bias->shape(0) != w.shape(0))
            throw std::invalid_argument("conv2d: bias " + shape_of(*bias) + " does not match weight " + shape_of(w));
        pb = data_of<T>(*bias, "bias");
    }
    py::array_t<T> out = pooled_array<T>({x.shape(0), w.shape(0), g.Ho, g.Wo});  // (pool.h: no page faults)
    T* po = out.mutable_data();
    py::gil_scoped_release release;
    forward(g, x.shape(0), groups, px, pw, pb, po);
    return out;
}

template <class T>
py::tuple conv2d_backward(const py::array& dout, const py::array& x, const py::array& w,
                          std::array<int64_t, 2> stride, std::array<int64_t, 4> padding,
                          std::array<int64_t, 2> dilation, int64_t groups, bool need_dx, bool need_dw) {
    const Geometry g = geometry(x, w, stride, padding, dilation, groups);
    if (dout.ndim() != 4 || dout.shape(0) != x.shape(0) || dout.shape(1) != w.shape(0) || dout.shape(2) != g.Ho ||
        dout.shape(3) != g.Wo)
        throw std::invalid_argument("conv2d backward: dout " + shape_of(dout) + " is not the output shape of x " +
                                    shape_of(x) + " and weight " + shape_of(w));
    const T *pd = data_of<T>(dout, "dout"), *px = data_of<T>(x, "x"), *pw = data_of<T>(w, "weight");
    py::object dx = py::none(), dw = py::none();
    T *pdx = nullptr, *pdw = nullptr;
    if (need_dx) {
        py::array_t<T> a = pooled_array<T>({x.shape(0), x.shape(1), x.shape(2), x.shape(3)});
        pdx = a.mutable_data();
        dx = a;
    }
    if (need_dw) {
        py::array_t<T> a({w.shape(0), w.shape(1), w.shape(2), w.shape(3)});
        pdw = a.mutable_data();
        dw = a;
    }
    {
        py::gil_scoped_release release;
        if (pdx) input_grad(g, x.shape(0), groups, pd, pw, pdx);
        if (pdw) weight_grad(g, x.shape(0), groups, pd, px, pdw);
    }
    return py::make_tuple(dx, dw);
}

}  // namespace

void register_conv(py::module_& m) {
    const char* fwd_doc =
        "conv2d_forward(x (N, C, H, W), weight (O, C/groups, kh, kw), stride (sh, sw), padding (top, bottom,\n"
        "left, right), dilation (dh, dw), groups, bias (O,) or None) -> out (N, O, Ho, Wo). C-contiguous float32\n"
        "or float64.";
    const char* bwd_doc =
        "conv2d_backward(dout, x, weight, stride, padding, dilation, groups, need_dx, need_dw) -> (dx or None,\n"
        "dweight or None).";
    m.def("conv2d_forward_f32", &conv2d_forward<float>, fwd_doc);
    m.def("conv2d_forward_f64", &conv2d_forward<double>, fwd_doc);
    m.def("conv2d_backward_f32", &conv2d_backward<float>, bwd_doc);
    m.def("conv2d_backward_f64", &conv2d_backward<double>, bwd_doc);
}

}  // namespace minigrad
