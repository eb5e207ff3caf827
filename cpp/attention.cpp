// Scaled dot-product attention, forward and backward, FlashAttention-style: out = softmax(S) v with
// scores S = (scale q) k^T + bias (-inf above the diagonal when causal, top-left aligned), never
// storing a (Tq, Tk) array. Semantics of numpy_ref.attention_forward / attention_backward: a query row
// whose keys are all masked attends to nothing (output 0, lse -inf, gradients 0).
//
// Forward: one task per (batch, head, block of BQ queries). The task walks the keys in blocks of BK
// and keeps per query row a running max m, a running sum l of exp(s - m) and a running output
// acc = sum of exp(s - m) v (the online softmax). When a block raises a row's max from m to m', the
// old l and acc are first rescaled by exp(m - m'); after the last block out = acc / l and the row's
// logsumexp lse = m + log(l), which is all backward needs of the softmax. Causal: a block of queries
// [i0, i0 + bq) sees keys below i0 + bq only, so the keys past it are never visited.
//
// Backward: one task per (batch, head), so that dK and dV (sums over query blocks) and dQ (a sum over
// key blocks) are each written by one task: no atomics, no partial buffers, and results that do not
// depend on the number of threads. Per (query block, key block) tile, with delta = rowsum(dO * O)
// (= rowsum(P * dP), the FlashAttention identity, computed once per query block):
//
//     P = exp(S - lse)   (recomputed)      dP = dO V^T      dS = P * (dP - delta)
//     dV += P^T dO       dK += dS^T (scale q)               dQ += dS K        (dq = scale * dQ at the end)
//
// Tile products. Every product above is C (+)= A B with the B rows contiguous: (scale q) K^T reads
// K^T, P V reads V, dO V^T reads V^T, dS K reads K, P^T dO reads dO and dS^T (scale q) reads q. So each
// task first copies its operands once, into per-thread scratch: q (scaled), k, v and dO row-major,
// K^T and V^T transposed, every row zero-padded to a whole number of vectors (kPad elements). This
// also reads strided inputs (q, k, v are usually views of a fused qkv projection) once and in place.
// The products then run on one small register-blocked kernel (`product`): MR rows of C by NV vectors
// in registers; per step p it loads NV vectors of B's row p and broadcasts A[i, p] for each of the MR
// rows (A is read with any strides, so P^T and dS^T are the P and dS tiles read down their columns).
// Measured against gemm() of gemm.h with threads = 1 in its place (which packs both operands into panels
// at every call, and computes the edge tiles of 64 = 4 x 14 + 8 rows through a buffer): forward +
// backward on one thread took 1.5-1.8x as long through it (1136 vs 735 us at B12 H4 T64 D32 causal,
// 3408 vs 1929 us at B4 H4 T256 D32 causal).
//
// Numerics: the row max is subtracted before every exp (no overflow whatever the magnitude of the
// scores); a row whose running max is still -inf has seen only masked keys and gets P = 0 (exp(-inf -
// -inf) would be nan); the causal mask and the padding of the last key block are -inf scores, whose
// exp is exactly 0. A causally hidden key stays hidden whatever its bias: an inf or nan bias there is
// never added (as in the Numba kernels; numpy_ref adds it to the -inf first, which makes the row nan).
// exp is simd.h's vexp (< 1 ulp), the products accumulate with FMAs in another order than NumPy's
// matmul: results match numpy_ref within float rounding, not to the bit.
//
// SIMD: the task functions are written once on simd.h's vectors and compiled per instruction set
// (AVX-512, AVX2+FMA, portable) as in softmax.cpp; the version chosen there (simd_isa()) runs here.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "gemm.h"  // Scratch
#include "minigrad.h"
#include "simd.h"

namespace py = pybind11;

namespace minigrad {
namespace {


// Tile sizes (queries x keys), measured on one thread at the tiny GPT's sizes (B12 H4 T64 D32, B4 H4 T256
// D32, causal or not; the differences between 32..64 x 64..256 were within 10%): small query blocks skip
// more of the causal triangle (the keys past a block's last query), at the price of more passes over K^T
// and V; backward with 16 x 64 was 7% faster than 32 x 64 causal, as fast otherwise.
constexpr int64_t kForwardBQ = 32, kForwardBK = 256;
constexpr int64_t kBackwardBQ = 16, kBackwardBK = 64;
// Rows of the operand copies are padded to a multiple of this many elements: whole vectors for every
// instruction set and dtype (16 floats = one AVX-512 vector; 16 doubles = two).
constexpr int64_t kPad = 16;
// (kParallelWork, gemm.h: below this many multiply-adds per product, B*H*Tq*Tk*D, one thread does all.)

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// A strided 4-D array (B, H, T, D) (3-D for lse: the last stride unused), strides in elements, 0 along
// broadcast dims.
template <class T>
struct View {
    const T* p = nullptr;
    int64_t s[4] = {0, 0, 0, 0};
    const T* at(int64_t b, int64_t h, int64_t i) const { return p + b * s[0] + h * s[1] + i * s[2]; }
};

template <class T>
struct Problem {
    View<T> q, k, v, bias;  // bias.p == nullptr: no bias
    View<T> dout, out, lse;  // backward's inputs
    bool causal;
    T scale;
    int64_t nb, nh, tq, tk, d, dv;
    T *o_out, *o_lse;         // forward's outputs, C-contiguous (B, H, Tq, Dv) and (B, H, Tq)
    T *o_dq, *o_dk, *o_dv;    // backward's outputs, C-contiguous, shaped like q, k, v
};

// ---- the tile product ---------------------------------------------------------------------------------

// Registers an MR x NV tile of C may take: 32 vector registers with AVX-512, 16 otherwise; NV more
// hold B's row, one the broadcast.
template <class S, int NV>
constexpr int rows_per_tile() {
    const int regs = sizeof(typename S::V) == 64 ? 32 : 16;
    int mr = 8;
    while (mr > 1 && (mr * NV + NV + 1 > regs - 1 || mr * NV > 16)) mr /= 2;
    return mr;
}

// C[0:MR, 0:NV*lanes] (+)= A[0:MR, 0:k] B[0:k, 0:NV*lanes] with the tile in registers.
template <class S, int MR, int NV, class T = typename S::Scalar>
MG_INLINE void tile(int64_t k, const T* a, int64_t ars, int64_t acs, const T* b, int64_t ldb, T* c, int64_t ldc,
                    bool accumulate) {
    using V = typename S::V;
    V acc[MR][NV];
    for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NV; ++j)
            acc[r][j] = accumulate ? load<S>(c + r * ldc + j * S::lanes, FullVector{}, T(0)) : V{};
    for (int64_t p = 0; p < k; ++p) {
        V bv[NV];
        for (int j = 0; j < NV; ++j) bv[j] = load<S>(b + p * ldb + j * S::lanes, FullVector{}, T(0));
        for (int r = 0; r < MR; ++r) {
            const V ar = splat<V>(a[r * ars + p * acs]);
            for (int j = 0; j < NV; ++j) acc[r][j] += ar * bv[j];
        }
    }
    for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NV; ++j) store<S>(c + r * ldc + j * S::lanes, acc[r][j], FullVector{});
}

// The m rows of a column strip of NV vectors: tiles of MR rows, the remaining rows by MR/2, MR/4, ...
template <class S, int MR, int NV, class T = typename S::Scalar>
MG_INLINE void strip(int64_t m, int64_t k, const T* a, int64_t ars, int64_t acs, const T* b, int64_t ldb, T* c,
                     int64_t ldc, bool accumulate) {
    int64_t i = 0;
    for (; i + MR <= m; i += MR) tile<S, MR, NV>(k, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, accumulate);
    if constexpr (MR > 1)
        if (i < m) strip<S, MR / 2, NV>(m - i, k, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, accumulate);
}

// C (m x n, rows ldc apart) (+)= A (m x k, element (i, p) at a[i*ars + p*acs]) · B (k x n, rows ldb apart,
// contiguous), n a multiple of the vector width: strips of up to 4 vectors.
template <class S, class T = typename S::Scalar>
MG_INLINE void product(int64_t m, int64_t n, int64_t k, const T* a, int64_t ars, int64_t acs, const T* b,
                       int64_t ldb, T* c, int64_t ldc, bool accumulate) {
    for (int64_t j = 0; j < n; j += 4 * S::lanes) {
        switch (std::min<int64_t>(4, (n - j) / S::lanes)) {
            case 4: strip<S, rows_per_tile<S, 4>(), 4>(m, k, a, ars, acs, b + j, ldb, c + j, ldc, accumulate); break;
            case 3: strip<S, rows_per_tile<S, 3>(), 3>(m, k, a, ars, acs, b + j, ldb, c + j, ldc, accumulate); break;
            case 2: strip<S, rows_per_tile<S, 2>(), 2>(m, k, a, ars, acs, b + j, ldb, c + j, ldc, accumulate); break;
            default: strip<S, rows_per_tile<S, 1>(), 1>(m, k, a, ars, acs, b + j, ldb, c + j, ldc, accumulate);
        }
    }
}

// ---- operand copies -------------------------------------------------------------------------------------

// dst (rows x ld, ld >= cols) = factor * x[b, h, i0:i0+rows, 0:cols], columns past cols zero.
template <class T>
MG_INLINE void copy_rows(T* dst, int64_t ld, const View<T>& x, int64_t b, int64_t h, int64_t i0, int64_t rows,
                         int64_t cols, T factor) {
    for (int64_t i = 0; i < rows; ++i) {
        const T* src = x.at(b, h, i0 + i);
        T* row = dst + i * ld;
        if (x.s[3] == 1) {  // the usual case, which the compiler vectorizes
            for (int64_t c = 0; c < cols; ++c) row[c] = src[c] * factor;
        } else {
            for (int64_t c = 0; c < cols; ++c) row[c] = src[c * x.s[3]] * factor;
        }
        std::fill(row + cols, row + ld, T(0));
    }
}

// Transpose the W x W block of vectors r[0..W) in registers (W = lanes) by log2(W) rounds of the perfect
// shuffle r'[2i] = interleave_lo(r[i], r[i + W/2]), r'[2i+1] = interleave_hi(r[i], r[i + W/2]): a round
// rotates the bits of each element's index r*W + c left by one, so log2(W) rounds swap r and c.
template <class V, int W, size_t... I>
MG_INLINE V interleave(const V& x, const V& y, bool high, std::index_sequence<I...>) {
    // lane l of the result: element l/2 (+ W/2 for the high half) of x (l even) or y (l odd)
    return high ? __builtin_shufflevector(x, y, ((I % 2 ? W : 0) + W / 2 + I / 2)...)
                : __builtin_shufflevector(x, y, ((I % 2 ? W : 0) + I / 2)...);
}

template <class S, class V = typename S::V>
MG_INLINE void transpose_block(V* r) {
    constexpr int W = int(S::lanes);
    for (int round = 1; round < W; round *= 2) {
        V t[W];
        for (int i = 0; i < W / 2; ++i) {
            t[2 * i] = interleave<V, W>(r[i], r[i + W / 2], false, std::make_index_sequence<W>{});
            t[2 * i + 1] = interleave<V, W>(r[i], r[i + W / 2], true, std::make_index_sequence<W>{});
        }
        for (int i = 0; i < W; ++i) r[i] = t[i];
    }
}

// dst (cols x ld, ld >= rows) = x[b, h, 0:rows, 0:cols]^T, columns past rows zero. Whole W x W blocks of a
// contiguous-row x go through registers (transpose_block); the rest one element at a time (stores
// along dst's columns: this order measured faster than along its rows).
template <class S, class T = typename S::Scalar>
MG_INLINE void copy_transposed(T* dst, int64_t ld, const View<T>& x, int64_t b, int64_t h, int64_t rows,
                               int64_t cols) {
    using V = typename S::V;
    constexpr int64_t W = S::lanes;
    int64_t i = 0;
    if (x.s[3] == 1) {
        for (; i + W <= rows; i += W) {
            int64_t c = 0;
            for (; c + W <= cols; c += W) {
                V r[W];
                for (int64_t k = 0; k < W; ++k) r[k] = load<S>(x.at(b, h, i + k) + c, FullVector{}, T(0));
                transpose_block<S>(r);
                for (int64_t k = 0; k < W; ++k) store<S>(dst + (c + k) * ld + i, r[k], FullVector{});
            }
            for (int64_t k = 0; k < W; ++k) {  // the columns past the last whole block
                const T* src = x.at(b, h, i + k);
                for (int64_t cc = c; cc < cols; ++cc) dst[cc * ld + i + k] = src[cc];
            }
        }
    }
    for (; i < rows; ++i) {
        const T* src = x.at(b, h, i);
        for (int64_t c = 0; c < cols; ++c) dst[c * ld + i] = src[c * x.s[3]];
    }
    for (int64_t c = 0; c < cols; ++c) std::fill(dst + c * ld + rows, dst + (c + 1) * ld, T(0));
}

// Per-thread scratch, carved into 64-byte aligned pieces.
thread_local Scratch t_scratch;

template <class T>
struct Carver {
    T* base;
    int64_t used = 0;
    T* take(int64_t count) {
        T* p = base + used;
        used += round_up(count, 64 / int64_t(sizeof(T)));
        return p;
    }
};

template <class T>
int64_t carved(std::initializer_list<int64_t> counts) {
    int64_t total = 0;
    for (int64_t c : counts) total += round_up(c, 64 / int64_t(sizeof(T)));
    return total;
}

// ---- exp and scores ---------------------------------------------------------------------------------------------

// exp(x), or 0 where e^x is below the smallest normal number: masked scores (-inf) and the far tail of a
// softmax (below 1e-38 of its largest term) then never reach vexp's underflow to 0, which is 3x slower
// (measured: a microcode assist per vector). A nan passes through.
template <class S, class V = typename S::V, class T = typename S::Scalar>
MG_INLINE V exp_or_zero(const V& x) {
    const V cut = splat<V>(sizeof(T) == 4 ? T(-87) : T(-708));  // e^cut > FLT_MIN / DBL_MIN
    const V e = vexp<S>(Max{}(cut, x));  // x if x is nan
    return x < cut ? V{} : e;
}

// How many of the nk keys j0.. query i sees (they are the first ones): all, or the keys j <= i when causal.
template <class T>
MG_INLINE int64_t visible_keys(const Problem<T>& pr, int64_t i, int64_t j0, int64_t nk) {
    return pr.causal ? std::clamp<int64_t>(i - j0 + 1, 0, nk) : nk;
}

// The tile s (bq x w, rows ld apart) holds (scale q) K^T for queries i0.. and keys j0..j0+w, of which the
// first nk are real keys. Add the bias and hide (-inf) the keys a query does not see: causal ones, and
// the padding of the block past nk.
template <class S, class T = typename S::Scalar>
MG_INLINE void mask_scores(const Problem<T>& pr, T* s, int64_t ld, int64_t b, int64_t h, int64_t i0, int64_t bq,
                           int64_t j0, int64_t nk, int64_t w) {
    constexpr T ninf = -std::numeric_limits<T>::infinity();
    for (int64_t ii = 0; ii < bq; ++ii) {
        T* row = s + ii * ld;
        const int64_t i = i0 + ii;
        const int64_t visible = visible_keys(pr, i, j0, nk);
        if (pr.bias.p) {
            const T* brow = pr.bias.at(b, h, i) + j0 * pr.bias.s[3];
            if (pr.bias.s[3] == 1) {
                for_each_vector<S>(visible, [&](int64_t j, auto cnt) MG_LAMBDA {
                    store<S>(row + j, load<S>(row + j, cnt, T(0)) + load<S>(brow + j, cnt, T(0)), cnt);
                });
            } else {
                for (int64_t j = 0; j < visible; ++j) row[j] += brow[j * pr.bias.s[3]];
            }
        }
        std::fill(row + visible, row + w, ninf);
    }
}

// ---- forward --------------------------------------------------------------------------------------------

template <class S, class T = typename S::Scalar>
MG_INLINE void forward_task(const Problem<T>& pr, int64_t task) {
    using V = typename S::V;
    constexpr int64_t BQ = kForwardBQ, BK = kForwardBK;
    constexpr T ninf = -std::numeric_limits<T>::infinity();
    const int64_t nqb = (pr.tq + BQ - 1) / BQ;
    const int64_t b = task / (pr.nh * nqb), h = task / nqb % pr.nh, i0 = task % nqb * BQ;
    const int64_t bq = std::min(BQ, pr.tq - i0);
    const int64_t kend = pr.causal ? std::min(pr.tk, i0 + bq) : pr.tk;  // keys any query of the block sees
    const int64_t kp = round_up(kend, kPad), dvp = round_up(pr.dv, kPad), d = pr.d;

    Carver<T> cut{t_scratch.get<T>(carved<T>({bq * d, d * kp, kend * dvp, BQ * BK, bq * dvp, 2 * bq}))};
    T* qs = cut.take(bq * d);     // scale * q of the block (bq x d)
    T* kt = cut.take(d * kp);     // K^T of the keys it sees (d x kp)
    T* vv = cut.take(kend * dvp); // V (kend x dvp)
    T* s = cut.take(BQ * BK);     // the scores of one tile, then exp(s - m)
    T* acc = cut.take(bq * dvp);  // running sum of exp(s - m) v
    T* m = cut.take(bq);          // running row max
    T* l = m + bq;                // running sum of exp(s - m)
    copy_rows(qs, d, pr.q, b, h, i0, bq, d, pr.scale);
    copy_transposed<S>(kt, kp, pr.k, b, h, kend, d);
    copy_rows(vv, dvp, pr.v, b, h, 0, kend, pr.dv, T(1));
    std::fill(acc, acc + bq * dvp, T(0));
    std::fill(m, m + bq, ninf);
    std::fill(l, l + bq, T(0));

    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int64_t nk = std::min(BK, kend - j0), w = std::min(BK, kp - j0);  // w: nk padded
        product<S>(bq, w, d, qs, d, 1, kt + j0, kp, s, BK, false);
        mask_scores<S>(pr, s, BK, b, h, i0, bq, j0, nk, w);
        for (int64_t ii = 0; ii < bq; ++ii) {
            T* row = s + ii * BK;
            // Causal keys past `visible` (in whole vectors: <= w) are -inf: their exp, 0, is stored without
            // computing it (vexp of -inf underflows on the way to 0, 3x slower than on ordinary scores).
            const int64_t visible = round_up(visible_keys(pr, i0 + ii, j0, nk), S::lanes);
            V vmax = splat<V>(m[ii]);
            for_each_vector<S>(visible, [&](int64_t j, auto cnt) MG_LAMBDA {
                vmax = Max{}(vmax, load<S>(row + j, cnt, ninf));
            });
            const T mb = reduce<S>(vmax, Max{});
            if (mb == ninf) {  // every key so far is hidden: the row stays empty
                std::fill(row, row + w, T(0));
                continue;
            }
            const T alpha = std::exp(m[ii] - mb);  // rescales the old sums to the new max (0 when m was -inf)
            m[ii] = mb;
            const V vm = splat<V>(mb);
            V sum{};
            for_each_vector<S>(visible, [&](int64_t j, auto cnt) MG_LAMBDA {
                const V e = exp_or_zero<S>(load<S>(row + j, cnt, ninf) - vm);
                sum += e;
                store<S>(row + j, e, cnt);
            });
            std::fill(row + visible, row + w, T(0));
            l[ii] = l[ii] * alpha + reduce<S>(sum, Add{});
            if (alpha != T(1)) {
                const V va = splat<V>(alpha);
                T* arow = acc + ii * dvp;
                for_each_vector<S>(dvp, [&](int64_t c, auto cnt) MG_LAMBDA {
                    store<S>(arow + c, load<S>(arow + c, cnt, T(0)) * va, cnt);
                });
            }
        }
        product<S>(bq, dvp, nk, s, BK, 1, vv + j0 * dvp, dvp, acc, dvp, true);  // acc += P V
    }

    const int64_t row0 = (b * pr.nh + h) * pr.tq + i0;
    for (int64_t ii = 0; ii < bq; ++ii) {
        T* o = pr.o_out + (row0 + ii) * pr.dv;
        if (l[ii] == T(0)) {  // a fully masked row: output 0, logsumexp -inf
            std::fill(o, o + pr.dv, T(0));
            pr.o_lse[row0 + ii] = ninf;
            continue;
        }
        const T inv = T(1) / l[ii];
        for (int64_t c = 0; c < pr.dv; ++c) o[c] = acc[ii * dvp + c] * inv;
        pr.o_lse[row0 + ii] = m[ii] + std::log(l[ii]);
    }
}

// ---- backward -------------------------------------------------------------------------------------------

template <class S, class T = typename S::Scalar>
MG_INLINE void backward_task(const Problem<T>& pr, int64_t task) {
    using V = typename S::V;
    constexpr int64_t BQ = kBackwardBQ, BK = kBackwardBK;
    constexpr T ninf = -std::numeric_limits<T>::infinity();
    const int64_t b = task / pr.nh, h = task % pr.nh;
    const int64_t tq = pr.tq, tk = pr.tk, d = pr.d, dv = pr.dv;
    const int64_t dp = round_up(d, kPad), dvp = round_up(dv, kPad), tkp = round_up(tk, kPad);

    Carver<T> cut{t_scratch.get<T>(carved<T>({tq * dp, tk * dp, d * tkp, dv * tkp, tq * dvp, tq * dp, tk * dp,
                                              tk * dvp, BQ * BK, BQ * BK, BQ}))};
    T* qs = cut.take(tq * dp);   // scale * q (tq x dp)
    T* kk = cut.take(tk * dp);   // K (tk x dp)
    T* kt = cut.take(d * tkp);   // K^T (d x tkp)
    T* vt = cut.take(dv * tkp);  // V^T (dv x tkp)
    T* dO = cut.take(tq * dvp);  // dout (tq x dvp)
    T* dq = cut.take(tq * dp);   // dS K, summed over key blocks
    T* dk = cut.take(tk * dp);   // dS^T (scale q), summed over query blocks
    T* dvv = cut.take(tk * dvp); // P^T dO, summed over query blocks
    T* p = cut.take(BQ * BK);    // scores, then P
    T* ds = cut.take(BQ * BK);   // dP, then dS
    T* delta = cut.take(BQ);     // rowsum(dO * O) of the query block
    copy_rows(qs, dp, pr.q, b, h, 0, tq, d, pr.scale);
    copy_rows(kk, dp, pr.k, b, h, 0, tk, d, T(1));
    copy_transposed<S>(kt, tkp, pr.k, b, h, tk, d);
    copy_transposed<S>(vt, tkp, pr.v, b, h, tk, dv);
    copy_rows(dO, dvp, pr.dout, b, h, 0, tq, dv, T(1));
    std::fill(dq, dq + tq * dp, T(0));
    std::fill(dk, dk + tk * dp, T(0));
    std::fill(dvv, dvv + tk * dvp, T(0));
    const T* lse = pr.lse.at(b, h, 0);

    for (int64_t i0 = 0; i0 < tq; i0 += BQ) {
        const int64_t bq = std::min(BQ, tq - i0);
        for (int64_t ii = 0; ii < bq; ++ii) {
            const T* o = pr.out.at(b, h, i0 + ii);
            const T* g = dO + (i0 + ii) * dvp;
            T sum = 0;
            for (int64_t c = 0; c < dv; ++c) sum += g[c] * o[c * pr.out.s[3]];
            delta[ii] = sum;
        }
        const int64_t kend = pr.causal ? std::min(tk, i0 + bq) : tk;
        for (int64_t j0 = 0; j0 < kend; j0 += BK) {
            const int64_t nk = std::min(BK, kend - j0), w = std::min(BK, round_up(kend, kPad) - j0);
            product<S>(bq, w, d, qs + i0 * dp, dp, 1, kt + j0, tkp, p, BK, false);     // S = (scale q) K^T
            mask_scores<S>(pr, p, BK, b, h, i0, bq, j0, nk, w);
            product<S>(bq, w, dv, dO + i0 * dvp, dvp, 1, vt + j0, tkp, ds, BK, false);  // dP = dO V^T
            for (int64_t ii = 0; ii < bq; ++ii) {
                T* prow = p + ii * BK;
                T* drow = ds + ii * BK;
                const T row_lse = lse[(i0 + ii) * pr.lse.s[2]];
                if (row_lse == ninf) {  // a fully masked row: P = 0, dS = 0
                    std::fill(prow, prow + w, T(0));
                    std::fill(drow, drow + w, T(0));
                    continue;
                }
                const V vl = splat<V>(row_lse), vd = splat<V>(delta[ii]);
                const int64_t visible = round_up(visible_keys(pr, i0 + ii, j0, nk), S::lanes);  // as forward
                for_each_vector<S>(visible, [&](int64_t j, auto cnt) MG_LAMBDA {  // P = exp(S - lse), dS = P (dP - delta)
                    const V e = exp_or_zero<S>(load<S>(prow + j, cnt, ninf) - vl);
                    store<S>(prow + j, e, cnt);
                    store<S>(drow + j, e * (load<S>(drow + j, cnt, T(0)) - vd), cnt);
                });
                std::fill(prow + visible, prow + w, T(0));
                std::fill(drow + visible, drow + w, T(0));
            }
            product<S>(nk, dvp, bq, p, 1, BK, dO + i0 * dvp, dvp, dvv + j0 * dvp, dvp, true);  // dV += P^T dO
            product<S>(nk, dp, bq, ds, 1, BK, qs + i0 * dp, dp, dk + j0 * dp, dp, true);       // dK += dS^T qs
            product<S>(bq, dp, nk, ds, BK, 1, kk + j0 * dp, dp, dq + i0 * dp, dp, true);       // dQ += dS K
        }
    }

    const int64_t qrow0 = (b * pr.nh + h) * tq, krow0 = (b * pr.nh + h) * tk;
    for (int64_t i = 0; i < tq; ++i)
        for (int64_t c = 0; c < d; ++c) pr.o_dq[(qrow0 + i) * d + c] = dq[i * dp + c] * pr.scale;
    for (int64_t j = 0; j < tk; ++j) {
        std::copy(dk + j * dp, dk + j * dp + d, pr.o_dk + (krow0 + j) * d);
        std::copy(dvv + j * dvp, dvv + j * dvp + dv, pr.o_dv + (krow0 + j) * dv);
    }
}

// ---- one compiled version per instruction set, chosen at run time -------------------------------------

template <class T>
using TaskFn = void (*)(const Problem<T>& pr, int64_t task);

#define MG_TASKS(NAME, TARGET, BYTES)                                                                        \
    template <class T>                                                                                        \
    TARGET void forward_##NAME(const Problem<T>& pr, int64_t task) { forward_task<Simd<T, BYTES>>(pr, task); } \
    template <class T>                                                                                        \
    TARGET void backward_##NAME(const Problem<T>& pr, int64_t task) { backward_task<Simd<T, BYTES>>(pr, task); }
#if defined(__x86_64__) || defined(__i386__)
MG_TASKS(avx512, __attribute__((target("avx512f,fma"))), 64)
MG_TASKS(avx2, __attribute__((target("avx2,fma"))), 32)
#endif
MG_TASKS(portable, , 16)
#undef MG_TASKS

template <class T>
TaskFn<T> task_fn(bool forward) {
    switch (simd_isa()) {
#if defined(__x86_64__) || defined(__i386__)
        case 0: return forward ? &forward_avx512<T> : &backward_avx512<T>;
        case 1: return forward ? &forward_avx2<T> : &backward_avx2<T>;
#endif
        default: return forward ? &forward_portable<T> : &backward_portable<T>;
    }
}

// Every task on one thread, or spread over the threads (each task is computed the same way wherever it
// runs: the results do not depend on the thread count; dynamic: causal tasks differ in cost).
template <class T>
void run_tasks(bool forward, const Problem<T>& pr, int64_t tasks) {
    const TaskFn<T> fn = task_fn<T>(forward);
    const int64_t work = pr.nb * pr.nh * pr.tq * pr.tk * std::max(pr.d, pr.dv);
    const int threads = work < kParallelWork ? 1 : int(std::min<int64_t>(num_threads(), tasks));
    RegionErrors errors;  // (a scratch buffer may throw std::bad_alloc: thrown again after the region)
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1)
    for (int64_t t = 0; t < tasks; ++t) errors.run([&] { fn(pr, t); });
    errors.rethrow();
}

// ---- Python bindings ------------------------------------------------------------------------------------

// x as a View of `ndim` dims broadcast to `shape` (dims aligned right; a missing dim or one of size 1 is
// broadcast with stride 0); ValueError naming `what` when x does not broadcast to it.
template <class T>
View<T> view_of(const py::array& x, const char* fn, const char* what, const int64_t* shape, int ndim) {
    if (x.ndim() > ndim)
        throw py::value_error(std::string(fn) + ": " + what + " must have at most " + std::to_string(ndim) +
                              " dims, got shape " + shape_of(x));
    View<T> v;
    v.p = static_cast<const T*>(x.data());
    const int64_t item = x.itemsize();
    for (int d = 0; d < ndim; ++d) {
        const int xd = d - (ndim - int(x.ndim()));  // < 0: missing
        const int64_t size = xd >= 0 ? x.shape(xd) : 1;
        if (size != shape[d] && size != 1) {
            std::string want = "(";
            for (int e = 0; e < ndim; ++e) want += (e ? ", " : "") + std::to_string(shape[e]);
            throw py::value_error(std::string(fn) + ": " + what + " of shape " + shape_of(x) +
                                  " does not match " + want + ")");
        }
        if (xd >= 0 && x.strides(xd) % item)
            throw py::value_error(std::string(fn) + ": " + what + " has strides that are not whole elements");
        v.s[d] = size == 1 ? 0 : x.strides(xd) / item;
    }
    return v;
}

// The dtype shared by all arrays (float32 or float64), else TypeError.
py::dtype common_dtype(const char* fn, std::initializer_list<const py::array*> arrays) {
    const py::dtype dt = (*arrays.begin())->dtype();
    for (const py::array* x : arrays)
        if (x && !x->dtype().equal(dt))
            throw py::type_error(std::string(fn) + ": all arrays must have one dtype, got " +
                                 std::string(py::str(dt)) + " and " + std::string(py::str(x->dtype())));
    if (!dt.equal(py::dtype::of<float>()) && !dt.equal(py::dtype::of<double>()))
        throw py::type_error(std::string(fn) + ": expected float32 or float64 arrays, got " + std::string(py::str(dt)));
    return dt;
}

// Shapes of q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv) into pr, checked; the views of q, k, v
// and the bias (broadcast to (B, H, Tq, Tk)).
template <class T>
void set_inputs(Problem<T>& pr, const char* fn, const py::array& q, const py::array& k, const py::array& v,
                const std::optional<py::array>& bias, bool causal, double scale) {
    for (const py::array* x : {&q, &k, &v})
        if (x->ndim() != 4)
            throw py::value_error(std::string(fn) + ": q, k, v must be 4-D (B, H, T, D), got shapes " + shape_of(q) +
                                  ", " + shape_of(k) + ", " + shape_of(v));
    pr.nb = q.shape(0), pr.nh = q.shape(1), pr.tq = q.shape(2), pr.d = q.shape(3);
    pr.tk = k.shape(2), pr.dv = v.shape(3);
    if (k.shape(0) != pr.nb || v.shape(0) != pr.nb || k.shape(1) != pr.nh || v.shape(1) != pr.nh ||
        k.shape(3) != pr.d || v.shape(2) != pr.tk)
        throw py::value_error(std::string(fn) + ": expected q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv), got " +
                              shape_of(q) + ", " + shape_of(k) + ", " + shape_of(v));
    const int64_t qs[4] = {pr.nb, pr.nh, pr.tq, pr.d}, ks[4] = {pr.nb, pr.nh, pr.tk, pr.d};
    const int64_t vs[4] = {pr.nb, pr.nh, pr.tk, pr.dv}, bs[4] = {pr.nb, pr.nh, pr.tq, pr.tk};
    pr.q = view_of<T>(q, fn, "q", qs, 4);
    pr.k = view_of<T>(k, fn, "k", ks, 4);
    pr.v = view_of<T>(v, fn, "v", vs, 4);
    if (bias) pr.bias = view_of<T>(*bias, fn, "bias", bs, 4);
    pr.causal = causal;
    pr.scale = T(scale);
}

py::tuple attention_forward(const py::array& q, const py::array& k, const py::array& v, const std::optional<py::array>& bias,
                            bool causal, double scale) {
    const char* fn = "attention_forward";
    const py::array* b = bias ? &*bias : nullptr;
    const py::dtype dt = common_dtype(fn, {&q, &k, &v, b});
    auto run = [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Problem<T> pr{};
        set_inputs(pr, fn, q, k, v, bias, causal, scale);
        py::array_t<T> out({pr.nb, pr.nh, pr.tq, pr.dv}), lse({pr.nb, pr.nh, pr.tq});
        pr.o_out = out.mutable_data();
        pr.o_lse = lse.mutable_data();
        {
            py::gil_scoped_release release;
            run_tasks(true, pr, pr.nb * pr.nh * ((pr.tq + kForwardBQ - 1) / kForwardBQ));
        }
        return py::make_tuple(out, lse);
    };
    return dt.equal(py::dtype::of<float>()) ? run(0.0f) : run(0.0);
}

py::tuple attention_backward(const py::array& dout, const py::array& q, const py::array& k, const py::array& v,
                             const py::array& out, const py::array& lse, const std::optional<py::array>& bias, bool causal,
                             double scale) {
    const char* fn = "attention_backward";
    const py::array* b = bias ? &*bias : nullptr;
    const py::dtype dt = common_dtype(fn, {&dout, &q, &k, &v, &out, &lse, b});
    auto run = [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Problem<T> pr{};
        set_inputs(pr, fn, q, k, v, bias, causal, scale);
        const int64_t os[4] = {pr.nb, pr.nh, pr.tq, pr.dv}, ls[3] = {pr.nb, pr.nh, pr.tq};
        for (const py::array* x : {&dout, &out})
            if (x->ndim() != 4 || !std::equal(os, os + 4, x->shape()))
                throw py::value_error(std::string(fn) + ": dout and out must have shape (B, H, Tq, Dv) = (" +
                                      std::to_string(pr.nb) + ", " +
                                      std::to_string(pr.nh) + ", " + std::to_string(pr.tq) + ", " +
                                      std::to_string(pr.dv) + "), got " + shape_of(*x));
        if (lse.ndim() != 3 || !std::equal(ls, ls + 3, lse.shape()))
            throw py::value_error(std::string(fn) + ": lse must have shape (B, H, Tq), got " + shape_of(lse));
        pr.dout = view_of<T>(dout, fn, "dout", os, 4);
        pr.out = view_of<T>(out, fn, "out", os, 4);
        pr.lse = view_of<T>(lse, fn, "lse", ls, 3);
        py::array_t<T> dq({pr.nb, pr.nh, pr.tq, pr.d}), dk({pr.nb, pr.nh, pr.tk, pr.d}), dv({pr.nb, pr.nh, pr.tk, pr.dv});
        pr.o_dq = dq.mutable_data();
        pr.o_dk = dk.mutable_data();
        pr.o_dv = dv.mutable_data();
        {
            py::gil_scoped_release release;
            run_tasks(false, pr, pr.nb * pr.nh);
        }
        return py::make_tuple(dq, dk, dv);
    };
    return dt.equal(py::dtype::of<float>()) ? run(0.0f) : run(0.0);
}

}  // namespace

void register_attention(py::module_& m) {
    m.def("attention_forward", &attention_forward, py::arg("q").noconvert(), py::arg("k").noconvert(),
          py::arg("v").noconvert(), py::arg("bias").none(true), py::arg("is_causal"), py::arg("scale"),
          "(out (B, H, Tq, Dv), lse (B, H, Tq)) = softmax(q k^T * scale + bias) v and the scores' logsumexp, for\n"
          "q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv) of one dtype (float32 or float64, any strides);\n"
          "bias None or an array of that dtype broadcastable to (B, H, Tq, Tk); is_causal hides key j > query i.");
    m.def("attention_backward", &attention_backward, py::arg("dout").noconvert(), py::arg("q").noconvert(),
          py::arg("k").noconvert(), py::arg("v").noconvert(), py::arg("out").noconvert(), py::arg("lse").noconvert(),
          py::arg("bias").none(true), py::arg("is_causal"), py::arg("scale"),
          "(dq, dk, dv), shaped like q, k, v: the gradients of attention_forward's out given dout (B, H, Tq, Dv),\n"
          "with out and lse as attention_forward returned them.");
}

}  // namespace minigrad
