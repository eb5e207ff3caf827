// LSTM and GRU layers over a whole sequence (one layer, one direction), forward and backward: the time
// loop in C++, with the GIL released, instead of two Python-level kernel calls per step.
//
// Shapes: T steps, B batch rows, H hidden units, G gates (4 for the LSTM: i, f, g, o; 3 for the GRU:
// r, z, n, PyTorch's order), gate blocks H columns wide. gates_x (T, B, G*H) is the input projection
// x W_ih^T of every step, computed before the scan as one large GEMM.
//
// Forward, per step t (in the order run: T-1 down to 0 when `reverse`):
//   1. the recurrent GEMM  (B, G*H) = h (B, H) · W_hh^T (H, G*H), through gemm() of gemm.h, written
//      straight into the step's slot of the cache (LSTM) or into a scratch row block (GRU);
//   2. the cell: one pass over the B x H units that reads gates_x[t] (+ the bias) and the GEMM result,
//      applies the nonlinearities, and writes h' (into out[t]), c' and the activated gates (the cache).
// The next step's GEMM reads h' from out[t] and c' from the cache: nothing is copied between steps.
//
// Backward, per step from the last run to the first:
//   1. the cell backward: dh = grad[t] + (the gradient reaching h' from the next step), then the chain
//      rule through the activations, using the gates the cache holds (sigmoid' = s (1 - s), tanh' =
//      1 - t^2: nothing is recomputed); writes dgates[t] and the gradient reaching the previous state;
//   2. dh_prev = dgates[t] · W_hh (B, H), again one gemm();
//   3. the bias gradients: column sums of dgates[t] while it is in cache (per step, then over steps).
// Then dW_hh = sum_t dgates[t]^T h_in[t] (G*H, H) as two GEMMs over all T * B rows at once (h_in[t] is
// out[t -+ 1], a contiguous slab of out, and h0 for the first step run): large products run at the
// GEMM's full speed, T small ones summed would not.
//
// Activations, vectorized along the hidden units (cpp/simd.h): sigmoid(x) = {1 or e} / (1 + e) with
// e = exp(-|x|) <= 1, so nothing overflows (numpy_ref's formula). tanh(x) for float32: for |x| >=
// 0.625, sign(x) (1 - e) / (1 + e) with e = exp(-2|x|) (no overflow; 1 - e >= 0.71 loses nothing to
// cancellation); below, where 1 - e would cancel (relative error ~ eps / |x|), the odd polynomial x +
// x^3 P(x^2), P of degree 4 fitted by least squares to (tanh(x) - x) / x^3 on [0, 0.625]: measured
// 0.8 ulp on its interval, under 2 ulp overall (tests/test_rnn_scan.py), exact for tiny x (tanh(x) = x).
// float64 takes the C library's tanh lane by lane (the scalar path, for gradient checks).
//
// Threads: the recurrent GEMM of a step runs on num_threads() threads when it is large enough (as in
// gemm.cpp's matmul). Measured at B = 32, H = 128, T = 64 on an idle 2-core machine: forward 2.1 ms on
// one thread, 1.45 ms on two; backward (dW_hh included) 3.3 ms and 2.1 ms. (On a machine whose cores
// are busy with other processes, every per-step parallel region waits for a time slice: see
// minigrad/threads.py.) The cell math of a step (B * H units, 3-8 us) runs on the calling thread.
// No result depends on the thread count: gemm() computes each element of C in the same order however
// its columns are split, and everything else is serial.
//
// SIMD: as in softmax.cpp, the kernels are written once on Simd<T, Bytes> and compiled for AVX-512,
// AVX2+FMA and the baseline; the best one the CPU runs is chosen at run time.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "gemm.h"
#include "minigrad.h"
#include "pool.h"
#include "simd.h"

namespace py = pybind11;

namespace minigrad {
namespace {

// ---- activations -------------------------------------------------------------------------------------

template <class S>
MG_INLINE typename S::V vabs(const typename S::V& x) {
    return x < 0 ? -x : x;
}

// 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) for x < 0, with e = exp(-|x|) in (0, 1].
template <class S>
MG_INLINE typename S::V vsigmoid(const typename S::V& x) {
    using V = typename S::V;
    using T = typename S::Scalar;
    const V e = vexp<S>(-vabs<S>(x));
    return (x >= 0 ? splat<V>(T(1)) : e) / (T(1) + e);
}

// tanh(x) = x + x^3 P(x^2) for |x| < 0.625 (coefficients: see the header), sign(x) (1 - e) / (1 + e)
// with e = exp(-2|x|) above. Both are computed for every lane and the right one is selected.
template <class S>
MG_INLINE typename S::V vtanh(const typename S::V& x) {
    using V = typename S::V;
    using T = typename S::Scalar;
    if constexpr (sizeof(T) == 8) {
        V y;
        for (int64_t j = 0; j < S::lanes; ++j) y[j] = std::tanh(x[j]);
        return y;
    } else {
        const V z = x * x;
        V p = splat<V>(-5.706422627e-3f);
        p = p * z + 2.064027800e-2f;
        p = p * z - 5.374002141e-2f;
        p = p * z + 1.333144441e-1f;
        p = p * z - 3.333328190e-1f;
        const V small = x + x * z * p;
        const V ax = vabs<S>(x);
        const V e = vexp<S>(-2.0f * ax);
        const V big = (1.0f - e) / (1.0f + e);
        const V y = ax < 0.625f ? small : (x < 0 ? -big : big);
        return x == 0 ? x : y;  // tanh(-0) = -0 (x + x^3 P gives +0)
    }
}

// ---- the step kernels --------------------------------------------------------------------------------
// Each works on the B rows of one step, walking the H units of a row one vector at a time. Row pointers
// advance by the leading dimensions (ld*) given: the cache interleaves several blocks per row.

template <class T>
struct LstmForwardArgs {
    int64_t rows, H;
    const T* gx;      // gates_x[t] (B, 4H)
    const T* bias;    // (4H,) or nullptr
    T* gates;         // (B, 6H) in the cache: in: h W_hh^T in blocks 0-3; out: i, f, g, o, tanh(c'), c'
    const T* c;       // the c entering the step, rows ldc apart
    int64_t ldc;
    T* h;             // h' (B, H), out[t]
};

// pre = (gates_x + bias) + h W_hh^T (numpy_ref's order of the two adds); c' = f c + i g; h' = o tanh(c').
struct LstmForward {
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void run(const LstmForwardArgs<T>& a) {
        using V = typename S::V;
        const int64_t H = a.H;
        for (int64_t b = 0; b < a.rows; ++b) {
            const T* gx = a.gx + b * 4 * H;
            T* gates = a.gates + b * 6 * H;
            const T* c = a.c + b * a.ldc;
            T* h = a.h + b * H;
            for_each_vector<S>(H, [&](int64_t j, auto k) MG_LAMBDA {
                V pre[4];
                for (int q = 0; q < 4; ++q) {
                    V x = load<S>(gx + q * H + j, k, 0);
                    if (a.bias) x = x + load<S>(a.bias + q * H + j, k, 0);
                    pre[q] = x + load<S>(gates + q * H + j, k, 0);
                }
                const V i = vsigmoid<S>(pre[0]), f = vsigmoid<S>(pre[1]), g = vtanh<S>(pre[2]),
                        o = vsigmoid<S>(pre[3]);
                const V c_new = f * load<S>(c + j, k, 0) + i * g;
                const V tc = vtanh<S>(c_new);
                const V out[6] = {i, f, g, o, tc, c_new};
                for (int q = 0; q < 6; ++q) store<S>(gates + q * H + j, out[q], k);
                store<S>(h + j, o * tc, k);
            });
        }
    }
};

template <class T>
struct LstmBackwardArgs {
    int64_t rows, H;
    const T* grad;    // the output gradient of h' (B, H): grad[t]
    const T* dh_rec;  // the gradient reaching h' through the next step (B, H)
    T* dc;            // in: the gradient of c' (B, H); out: the gradient of c
    const T* cache;   // (B, 6H): i, f, g, o, tanh(c'), c'
    const T* c;       // the c entering the step, rows ldc apart
    int64_t ldc;
    T* dgates;        // (B, 4H)
};

// dh = grad + dh_rec; dc' += dh o tanh'(c'); then through c' = f c + i g and the gate activations.
struct LstmBackward {
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void run(const LstmBackwardArgs<T>& a) {
        using V = typename S::V;
        const int64_t H = a.H;
        for (int64_t b = 0; b < a.rows; ++b) {
            const T* cache = a.cache + b * 6 * H;
            T* dg = a.dgates + b * 4 * H;
            for_each_vector<S>(H, [&](int64_t j, auto k) MG_LAMBDA {
                const V i = load<S>(cache + j, k, 0), f = load<S>(cache + H + j, k, 0);
                const V g = load<S>(cache + 2 * H + j, k, 0), o = load<S>(cache + 3 * H + j, k, 0);
                const V tc = load<S>(cache + 4 * H + j, k, 0);
                const V dh = load<S>(a.grad + b * H + j, k, 0) + load<S>(a.dh_rec + b * H + j, k, 0);
                const V dc = load<S>(a.dc + b * H + j, k, 0) + dh * o * (T(1) - tc * tc);
                store<S>(dg + j, dc * g * i * (T(1) - i), k);
                store<S>(dg + H + j, dc * load<S>(a.c + b * a.ldc + j, k, 0) * f * (T(1) - f), k);
                store<S>(dg + 2 * H + j, dc * i * (T(1) - g * g), k);
                store<S>(dg + 3 * H + j, dh * tc * o * (T(1) - o), k);
                store<S>(a.dc + b * H + j, dc * f, k);
            });
        }
    }
};

template <class T>
struct GruForwardArgs {
    int64_t rows, H;
    const T* gx;      // gates_x[t] (B, 3H)
    const T* bias;    // b_ih (3H,) or nullptr
    const T* hw;      // h W_hh^T (B, 3H)
    const T* b_hh;    // (3H,)
    const T* h;       // the h entering the step, (B, H)
    T* h_new;         // h' (B, H), out[t]
    T* cache;         // (B, 4H): r, z, n, gates_h_n
};

// gh = h W_hh^T + b_hh; r, z = sigmoid(gx + gh); n = tanh(gx_n + r gh_n); h' = n + z (h - n).
struct GruForward {
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void run(const GruForwardArgs<T>& a) {
        using V = typename S::V;
        const int64_t H = a.H;
        for (int64_t b = 0; b < a.rows; ++b) {
            const T* gx = a.gx + b * 3 * H;
            const T* hw = a.hw + b * 3 * H;
            T* cache = a.cache + b * 4 * H;
            for_each_vector<S>(H, [&](int64_t j, auto k) MG_LAMBDA {
                V x[3], gh[3];
                for (int q = 0; q < 3; ++q) {
                    x[q] = load<S>(gx + q * H + j, k, 0);
                    if (a.bias) x[q] = x[q] + load<S>(a.bias + q * H + j, k, 0);
                    gh[q] = load<S>(hw + q * H + j, k, 0) + load<S>(a.b_hh + q * H + j, k, 0);
                }
                const V r = vsigmoid<S>(x[0] + gh[0]), z = vsigmoid<S>(x[1] + gh[1]);
                const V n = vtanh<S>(x[2] + r * gh[2]);
                store<S>(a.h_new + b * H + j, n + z * (load<S>(a.h + b * H + j, k, 0) - n), k);
                const V out[4] = {r, z, n, gh[2]};
                for (int q = 0; q < 4; ++q) store<S>(cache + q * H + j, out[q], k);
            });
        }
    }
};

template <class T>
struct GruBackwardArgs {
    int64_t rows, H;
    const T* grad;    // grad[t] (B, H)
    T* dh;            // in: the gradient reaching h' through the next step; out: dh' z (the direct part)
    const T* cache;   // (B, 4H): r, z, n, gates_h_n
    const T* h;       // the h entering the step (B, H)
    T* dgx;           // (B, 3H)
    T* dgh;           // (B, 3H)
};

// g = grad + dh; dn = g (1 - z) tanh'; dr = dn gh_n sigmoid'(r); dz = g (h - n) sigmoid'(z); only the
// candidate's block differs between the two gate inputs (gates_h_n is scaled by r).
struct GruBackward {
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void run(const GruBackwardArgs<T>& a) {
        using V = typename S::V;
        const int64_t H = a.H;
        for (int64_t b = 0; b < a.rows; ++b) {
            const T* cache = a.cache + b * 4 * H;
            T* dgx = a.dgx + b * 3 * H;
            T* dgh = a.dgh + b * 3 * H;
            for_each_vector<S>(H, [&](int64_t j, auto k) MG_LAMBDA {
                const V r = load<S>(cache + j, k, 0), z = load<S>(cache + H + j, k, 0);
                const V n = load<S>(cache + 2 * H + j, k, 0), h_n = load<S>(cache + 3 * H + j, k, 0);
                const V g = load<S>(a.grad + b * H + j, k, 0) + load<S>(a.dh + b * H + j, k, 0);
                const V dn = g * (T(1) - z) * (T(1) - n * n);
                const V dr = dn * h_n * r * (T(1) - r);
                const V dz = g * (load<S>(a.h + b * H + j, k, 0) - n) * z * (T(1) - z);
                store<S>(dgx + j, dr, k);
                store<S>(dgx + H + j, dz, k);
                store<S>(dgx + 2 * H + j, dn, k);
                store<S>(dgh + j, dr, k);
                store<S>(dgh + H + j, dz, k);
                store<S>(dgh + 2 * H + j, dn * r, k);
                store<S>(a.dh + b * H + j, g * z, k);
            });
        }
    }
};

template <class T>
struct ColumnSumArgs {
    int64_t rows, n;
    const T* x;       // (rows, n)
    T* total;         // (n,): total += the column sums of x
};

// The sum of a step's rows first (in registers), then added to the running total: the error grows with
// B + T, not with B * T as a single running sum would.
struct ColumnSum {
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void run(const ColumnSumArgs<T>& a) {
        using V = typename S::V;
        for_each_vector<S>(a.n, [&](int64_t j, auto k) MG_LAMBDA {
            V s = splat<V>(T(0));  // (0 + x is exact: the same sums; and no read at all when rows == 0)
            for (int64_t b = 0; b < a.rows; ++b) s += load<S>(a.x + b * a.n + j, k, 0);
            store<S>(a.total + j, load<S>(a.total + j, k, 0) + s, k);
        });
    }
};

// ---- one compiled version per instruction set, chosen at run time (the pattern of softmax.cpp) -------

#define MG_STEP(NAME, TARGET, BYTES)                  \
    template <class K, class T, class A>              \
    TARGET void NAME(const A& args) {                 \
        K::template run<Simd<T, BYTES>>(args);        \
    }
#if defined(__x86_64__) || defined(__i386__)
MG_STEP(step_avx512, __attribute__((target("avx512f,fma"))), 64)
MG_STEP(step_avx2, __attribute__((target("avx2,fma"))), 32)
#endif
MG_STEP(step_portable, , 16)
#undef MG_STEP

// K::run for arguments A (a struct template of T), in the version of the instruction set in use (simd_isa()).
template <class K, template <class> class Args, class T>
void run_step(const Args<T>& args) {
    switch (simd_isa()) {
#if defined(__x86_64__) || defined(__i386__)
        case 0: return step_avx512<K, T>(args);
        case 1: return step_avx2<K, T>(args);
#endif
        default: return step_portable<K, T>(args);
    }
}

// ---- the scans -----------------------------------------------------------------------------------------

thread_local Scratch packed_scratch, state_scratch, dgh_scratch;

// The step run k-th: 0 .. T-1, or T-1 .. 0 when reverse.
inline int64_t step_at(int64_t k, int64_t steps, bool reverse) { return reverse ? steps - 1 - k : k; }

// The recurrent weights as the B operand (k x n) of every step's GEMM. gemm() packs B into panels on each
// call; for a weight matrix that is the same at every step, that repacking (a strided copy of k * n
// elements, 20% of the scans' time at B = 32, H = 128, measured) is done once per scan here, on the first
// call, into the whole matrix's panel layout, and each later call copies its block's panels out
// contiguously (memcpy). Blocks start on panel boundaries (gemm() splits B's columns on multiples of
// its panel width); anything else falls back to packing from the source.
template <class T>
struct PackedWeights final : Operand<T> {
    const T* src;
    int64_t rs, cs, k, n;
    T* packed;  // k * (n + 63) elements: room for the panels of any width W <= 64 (ceil(n/W) W <= n + 63)
    mutable std::once_flag once;
    mutable int width = 0;

    PackedWeights(const T* src, int64_t rs, int64_t cs, int64_t k, int64_t n)
        : src(src), rs(rs), cs(cs), k(k), n(n), packed(packed_scratch.get<T>(k * (n + 63))) {}

    void pack(T* dst, int64_t i0, int64_t w, int64_t p0, int64_t kc, int W) const override {
        const StridedB<T> strided({src, rs, cs});
        std::call_once(once, [&] {  // the other threads of the GEMM wait here until it is done
            if (W > 64) return;
            strided.pack(packed, 0, n, 0, k, W);
            width = W;
        });
        if (W != width || i0 % W || (w % W && i0 + w != n))  // (a partial panel must end at n: zeros after)
            return strided.pack(dst, i0, w, p0, kc, W);
        for (int64_t q = 0; q * W < w; ++q)
            std::memcpy(dst + q * kc * W, packed + ((i0 / W + q) * k + p0) * W, sizeof(T) * kc * W);
    }
};

// dW_hh (G*H, H) = sum over steps of dgates[t]^T h_in[t]: the steps whose h_in is a row of out form one
// contiguous slab of (T - 1) * B rows (out[0 .. T-2] forward, out[1 .. T-1] in reverse); the first step
// run took h0.
template <class T>
void weight_grad(int64_t steps, int64_t B, int64_t H, int64_t gates, const T* dgates, const T* out, const T* h0,
                 bool reverse, T* dw) {
    const int64_t G = gates * H, slab = (steps - 1) * B;
    const T* dg_slab = dgates + (reverse ? 0 : B * G);
    const T* h_slab = out + (reverse ? B * H : 0);
    const T* dg_first = dgates + (reverse ? (steps - 1) * B * G : 0);
    const int threads = gemm_threads(G, H, steps * B);
    gemm<T>(G, H, slab, Strided<T>{dg_slab, 1, G}, Strided<T>{h_slab, H, 1}, dw, H, threads, false);
    gemm<T>(G, H, B, Strided<T>{dg_first, 1, G}, Strided<T>{h0, H, 1}, dw, H, threads, true);
}

template <class T>
void lstm_forward(int64_t steps, int64_t B, int64_t H, const T* gx, const T* bias, const T* h0, const T* c0,
                  Strided<T> w, bool reverse, T* out, T* cache) {
    const int64_t G = 4 * H;
    const PackedWeights<T> wt(w.p, w.cs, w.rs, H, G);  // W_hh^T (H, G*H)
    const int threads = gemm_threads(B, G, H);
    const T *h = h0, *c = c0;
    int64_t ldc = H;
    for (int64_t k = 0; k < steps; ++k) {
        const int64_t t = step_at(k, steps, reverse);
        T* gates = cache + t * B * 6 * H;
        gemm<T>(B, G, H, StridedA<T>({h, H, 1}), wt, gates, 6 * H, threads, false);
        run_step<LstmForward>(LstmForwardArgs<T>{B, H, gx + t * B * G, bias, gates, c, ldc, out + t * B * H});
        h = out + t * B * H;
        c = gates + 5 * H;
        ldc = 6 * H;
    }
    for (int64_t b = 0; b < B; ++b) std::copy(c + b * ldc, c + b * ldc + H, out + steps * B * H + b * H);
}

template <class T>
void lstm_backward(int64_t steps, int64_t B, int64_t H, const T* grad, const T* cache, const T* out, const T* h0,
                   const T* c0, Strided<T> w, bool reverse, T* dgates, T* dh0, T* dc0, T* dw, T* dbias) {
    const int64_t G = 4 * H;
    const int threads = gemm_threads(B, H, G);
    const PackedWeights<T> wp(w.p, w.rs, w.cs, G, H);
    T* dh_rec = state_scratch.get<T>(B * H);
    std::fill(dh_rec, dh_rec + B * H, T(0));
    std::copy(grad + steps * B * H, grad + (steps + 1) * B * H, dc0);  // dc0 holds the running dc
    std::fill(dbias, dbias + G, T(0));
    for (int64_t k = steps - 1; k >= 0; --k) {
        const int64_t t = step_at(k, steps, reverse);
        const T* c = k ? cache + step_at(k - 1, steps, reverse) * B * 6 * H + 5 * H : c0;
        T* dg = dgates + t * B * G;
        run_step<LstmBackward>(LstmBackwardArgs<T>{B, H, grad + t * B * H, dh_rec, dc0, cache + t * B * 6 * H, c,
                                                   k ? 6 * H : H, dg});
        run_step<ColumnSum>(ColumnSumArgs<T>{B, G, dg, dbias});
        gemm<T>(B, H, G, StridedA<T>({dg, G, 1}), wp, k ? dh_rec : dh0, H, threads, false);
    }
    weight_grad(steps, B, H, 4, dgates, out, h0, reverse, dw);
}

template <class T>
void gru_forward(int64_t steps, int64_t B, int64_t H, const T* gx, const T* bias, const T* h0, Strided<T> w,
                 const T* b_hh, bool reverse, T* out, T* cache) {
    const int64_t G = 3 * H;
    const PackedWeights<T> wt(w.p, w.cs, w.rs, H, G);  // W_hh^T (H, G*H)
    T* hw = state_scratch.get<T>(B * G);
    const int threads = gemm_threads(B, G, H);
    const T* h = h0;
    for (int64_t k = 0; k < steps; ++k) {
        const int64_t t = step_at(k, steps, reverse);
        gemm<T>(B, G, H, StridedA<T>({h, H, 1}), wt, hw, G, threads, false);
        run_step<GruForward>(GruForwardArgs<T>{B, H, gx + t * B * G, bias, hw, b_hh, h, out + t * B * H,
                                               cache + t * B * 4 * H});
        h = out + t * B * H;
    }
}

template <class T>
void gru_backward(int64_t steps, int64_t B, int64_t H, const T* grad, const T* cache, const T* out, const T* h0,
                  Strided<T> w, bool reverse, T* dgx, T* dh0, T* dw, T* db_hh, T* dbias) {
    const int64_t G = 3 * H;
    const int threads = gemm_threads(B, H, G);
    const PackedWeights<T> wp(w.p, w.rs, w.cs, G, H);
    T* dgh = dgh_scratch.get<T>(steps * B * G);  // the gradient of gates_h: for dW_hh and b_hh
    std::fill(dh0, dh0 + B * H, T(0));           // dh0 holds the gradient reaching h' of each step
    std::fill(db_hh, db_hh + G, T(0));
    std::fill(dbias, dbias + G, T(0));
    for (int64_t k = steps - 1; k >= 0; --k) {
        const int64_t t = step_at(k, steps, reverse);
        const T* h = k ? out + step_at(k - 1, steps, reverse) * B * H : h0;
        run_step<GruBackward>(GruBackwardArgs<T>{B, H, grad + t * B * H, dh0, cache + t * B * 4 * H, h,
                                                 dgx + t * B * G, dgh + t * B * G});
        run_step<ColumnSum>(ColumnSumArgs<T>{B, G, dgx + t * B * G, dbias});
        run_step<ColumnSum>(ColumnSumArgs<T>{B, G, dgh + t * B * G, db_hh});
        gemm<T>(B, H, G, StridedA<T>({dgh + t * B * G, G, 1}), wp, dh0, H, threads, true);  // h enters gates_h
    }
    weight_grad(steps, B, H, 3, dgh, out, h0, reverse, dw);
}

// ---- Python bindings -------------------------------------------------------------------------------------

// Checks of the arguments of one call: one dtype (float32 or float64) for all, shapes as expected,
// C-contiguous (except the weights, read with their strides).
struct Checker {
    std::string fn;
    py::dtype dtype;
    const char* first;  // the array whose dtype the others must have

    void operator()(const char* name, const py::array& x, std::vector<int64_t> shape, bool contiguous = true) const {
        if (!x.dtype().equal(dtype))
            throw py::type_error(fn + ": " + name + " is " + std::string(py::str(x.dtype())) +
                                 " but " + first + " is " + std::string(py::str(dtype)));
        bool ok = x.ndim() == static_cast<py::ssize_t>(shape.size());
        for (size_t d = 0; ok && d < shape.size(); ++d) ok = x.shape(d) == shape[d];
        if (!ok) {
            std::string want = "(";
            for (size_t d = 0; d < shape.size(); ++d) want += (d ? ", " : "") + std::to_string(shape[d]);
            throw py::value_error(fn + ": expected " + name + " of shape " + want + (shape.size() == 1 ? ",)" : ")") +
                                  ", got " + shape_of(x));
        }
        if (contiguous && !(x.flags() & py::array::c_style))
            throw py::value_error(fn + ": " + name + " must be C-contiguous (got a strided array of shape " +
                                  shape_of(x) + ")");
    }
};

Checker checker(const char* fn, const char* name, const py::array& first) {
    if (!first.dtype().equal(py::dtype::of<float>()) && !first.dtype().equal(py::dtype::of<double>()))
        throw py::type_error(std::string(fn) + ": expected float32 or float64 arrays, got " + name + " of " +
                             std::string(py::str(first.dtype())));
    return Checker{fn, first.dtype(), name};
}

// (T, B, G*H) gates_x -> T, B, H; T >= 1.
std::vector<int64_t> scan_dims(const char* fn, const py::array& gates_x, const py::array& h0, int gates) {
    if (gates_x.ndim() != 3 || h0.ndim() != 2 || gates_x.shape(0) < 1 || gates_x.shape(1) != h0.shape(0) ||
        gates_x.shape(2) != gates * h0.shape(1) || h0.shape(1) < 1)
        throw py::value_error(std::string(fn) + ": expected gates_x (T, B, " + std::to_string(gates) +
                              "H) with T >= 1 and h0 (B, H), got " + shape_of(gates_x) + " and " + shape_of(h0));
    return {gates_x.shape(0), gates_x.shape(1), h0.shape(1)};
}

template <class T>
Strided<T> weights(const char* fn, const py::array& w) {
    if (w.strides(0) % w.itemsize() || w.strides(1) % w.itemsize() ||
        reinterpret_cast<uintptr_t>(w.data()) % w.itemsize())
        throw py::value_error(std::string(fn) + ": w_hh's strides are not whole elements");
    return {static_cast<const T*>(w.data()), w.strides(0) / w.itemsize(), w.strides(1) / w.itemsize()};
}

template <class T>
const T* ptr(const py::array& x) { return static_cast<const T*>(x.data()); }
template <class T>
const T* ptr_or_null(const std::optional<py::array>& x) { return x ? ptr<T>(*x) : nullptr; }
template <class T>
T* mut(py::array& x) { return static_cast<T*>(x.mutable_data()); }

// Run body(zero) with zero a T of the arrays' dtype (float or double).
template <class F>
auto by_dtype(const py::dtype& dtype, F body) {
    return dtype.equal(py::dtype::of<float>()) ? body(0.0f) : body(0.0);
}

py::tuple lstm_scan_forward(py::array gates_x, std::optional<py::array> bias, py::array h0, py::array c0,
                            py::array w_hh, bool reverse) {
    const char* fn = "lstm_scan_forward";
    const auto check = checker(fn, "gates_x", gates_x);
    const auto d = scan_dims(fn, gates_x, h0, 4);
    const int64_t T_ = d[0], B = d[1], H = d[2];
    check("gates_x", gates_x, {T_, B, 4 * H});
    if (bias) check("bias", *bias, {4 * H});
    check("h0", h0, {B, H});
    check("c0", c0, {B, H});
    check("w_hh", w_hh, {4 * H, H}, false);
    return by_dtype(gates_x.dtype(), [&](auto zero) {
        using T = decltype(zero);
        const Strided<T> w = weights<T>(fn, w_hh);  // checked here, with the GIL
        py::array out = pooled_array<T>({T_ + 1, B, H}), cache = pooled_array<T>({T_, B, 6 * H});
        {
            py::gil_scoped_release release;
            lstm_forward<T>(T_, B, H, ptr<T>(gates_x), ptr_or_null<T>(bias), ptr<T>(h0), ptr<T>(c0),
                            w, reverse, mut<T>(out), mut<T>(cache));
        }
        return py::make_tuple(out, cache);
    });
}

py::tuple lstm_scan_backward(py::array grad, py::array cache, py::array out, py::array h0, py::array c0,
                             py::array w_hh, bool reverse) {
    const char* fn = "lstm_scan_backward";
    const auto check = checker(fn, "grad", grad);
    if (cache.ndim() != 3 || cache.shape(2) % 6)
        throw py::value_error(std::string(fn) + ": expected cache (T, B, 6H), got " + shape_of(cache));
    const int64_t T_ = cache.shape(0), B = cache.shape(1), H = cache.shape(2) / 6;
    if (T_ < 1 || H < 1) throw py::value_error(std::string(fn) + ": empty cache " + shape_of(cache));
    check("grad", grad, {T_ + 1, B, H});
    check("cache", cache, {T_, B, 6 * H});
    check("out", out, {T_ + 1, B, H});
    check("h0", h0, {B, H});
    check("c0", c0, {B, H});
    check("w_hh", w_hh, {4 * H, H}, false);
    return by_dtype(grad.dtype(), [&](auto zero) {
        using T = decltype(zero);
        const Strided<T> w = weights<T>(fn, w_hh);  // checked here, with the GIL
        py::array dgates = pooled_array<T>({T_, B, 4 * H}), dh0 = py::array_t<T>({B, H}),
                  dc0 = py::array_t<T>({B, H}), dw = py::array_t<T>({4 * H, H}), dbias = py::array_t<T>(4 * H);
        {
            py::gil_scoped_release release;
            lstm_backward<T>(T_, B, H, ptr<T>(grad), ptr<T>(cache), ptr<T>(out), ptr<T>(h0), ptr<T>(c0),
                             w, reverse, mut<T>(dgates), mut<T>(dh0), mut<T>(dc0), mut<T>(dw),
                             mut<T>(dbias));
        }
        return py::make_tuple(dgates, dh0, dc0, dw, dbias);
    });
}

py::tuple gru_scan_forward(py::array gates_x, std::optional<py::array> bias, py::array h0, py::array w_hh,
                           py::array b_hh, bool reverse) {
    const char* fn = "gru_scan_forward";
    const auto check = checker(fn, "gates_x", gates_x);
    const auto d = scan_dims(fn, gates_x, h0, 3);
    const int64_t T_ = d[0], B = d[1], H = d[2];
    check("gates_x", gates_x, {T_, B, 3 * H});
    if (bias) check("bias", *bias, {3 * H});
    check("h0", h0, {B, H});
    check("w_hh", w_hh, {3 * H, H}, false);
    check("b_hh", b_hh, {3 * H});
    return by_dtype(gates_x.dtype(), [&](auto zero) {
        using T = decltype(zero);
        const Strided<T> w = weights<T>(fn, w_hh);  // checked here, with the GIL
        py::array out = pooled_array<T>({T_, B, H}), cache = pooled_array<T>({T_, B, 4 * H});
        {
            py::gil_scoped_release release;
            gru_forward<T>(T_, B, H, ptr<T>(gates_x), ptr_or_null<T>(bias), ptr<T>(h0), w,
                           ptr<T>(b_hh), reverse, mut<T>(out), mut<T>(cache));
        }
        return py::make_tuple(out, cache);
    });
}

py::tuple gru_scan_backward(py::array grad, py::array cache, py::array out, py::array h0, py::array w_hh,
                            bool reverse) {
    const char* fn = "gru_scan_backward";
    const auto check = checker(fn, "grad", grad);
    if (cache.ndim() != 3 || cache.shape(2) % 4)
        throw py::value_error(std::string(fn) + ": expected cache (T, B, 4H), got " + shape_of(cache));
    const int64_t T_ = cache.shape(0), B = cache.shape(1), H = cache.shape(2) / 4;
    if (T_ < 1 || H < 1) throw py::value_error(std::string(fn) + ": empty cache " + shape_of(cache));
    check("grad", grad, {T_, B, H});
    check("cache", cache, {T_, B, 4 * H});
    check("out", out, {T_, B, H});
    check("h0", h0, {B, H});
    check("w_hh", w_hh, {3 * H, H}, false);
    return by_dtype(grad.dtype(), [&](auto zero) {
        using T = decltype(zero);
        const Strided<T> w = weights<T>(fn, w_hh);  // checked here, with the GIL
        py::array dgx = pooled_array<T>({T_, B, 3 * H}), dh0 = py::array_t<T>({B, H}), dw = py::array_t<T>({3 * H, H}),
                  db_hh = py::array_t<T>(3 * H), dbias = py::array_t<T>(3 * H);
        {
            py::gil_scoped_release release;
            gru_backward<T>(T_, B, H, ptr<T>(grad), ptr<T>(cache), ptr<T>(out), ptr<T>(h0), w,
                            reverse, mut<T>(dgx), mut<T>(dh0), mut<T>(dw), mut<T>(db_hh), mut<T>(dbias));
        }
        return py::make_tuple(dgx, dh0, dw, db_hh, dbias);
    });
}

// The activations alone, elementwise over a C-contiguous array of n elements, for their accuracy tests.
template <class T>
struct ActivationArgs {
    int64_t n;
    const T* x;
    T* y;
};

template <bool Tanh>
struct Activation {
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void run(const ActivationArgs<T>& a) {
        for_each_vector<S>(a.n, [&](int64_t j, auto k) MG_LAMBDA {
            const auto x = load<S>(a.x + j, k, 0);
            store<S>(a.y + j, Tanh ? vtanh<S>(x) : vsigmoid<S>(x), k);
        });
    }
};

template <bool Tanh>
void activation(py::array out, py::array x) {
    const char* fn = Tanh ? "rnn_tanh" : "rnn_sigmoid";
    const auto check = checker(fn, "x", x);
    std::vector<int64_t> shape(x.shape(), x.shape() + x.ndim());
    check("x", x, shape);
    check("out", out, shape);
    if (!out.writeable()) throw py::value_error(std::string(fn) + ": out is read-only");
    by_dtype(x.dtype(), [&](auto zero) {
        using T = decltype(zero);
        run_step<Activation<Tanh>>(ActivationArgs<T>{static_cast<int64_t>(x.size()), ptr<T>(x), mut<T>(out)});
        return 0;
    });
}

}  // namespace

void register_rnn(py::module_& m) {
    m.def("lstm_scan_forward", &lstm_scan_forward, py::arg("gates_x").noconvert(), py::arg("bias").noconvert(),
          py::arg("h0").noconvert(), py::arg("c0").noconvert(), py::arg("w_hh").noconvert(), py::arg("reverse"),
          "An LSTM layer in one direction (see minigrad/backend/base.py): gates_x (T, B, 4H), bias (4H,) or None,\n"
          "h0, c0 (B, H), w_hh (4H, H) (any strides) -> (out (T+1, B, H), cache (T, B, 6H)). C-contiguous inputs.");
    m.def("lstm_scan_backward", &lstm_scan_backward, py::arg("grad").noconvert(), py::arg("cache").noconvert(),
          py::arg("out").noconvert(), py::arg("h0").noconvert(), py::arg("c0").noconvert(),
          py::arg("w_hh").noconvert(), py::arg("reverse"),
          "-> (dgates (T, B, 4H), dh0, dc0 (B, H), dw_hh (4H, H), dbias (4H,)).");
    m.def("gru_scan_forward", &gru_scan_forward, py::arg("gates_x").noconvert(), py::arg("bias").noconvert(),
          py::arg("h0").noconvert(), py::arg("w_hh").noconvert(), py::arg("b_hh").noconvert(), py::arg("reverse"),
          "A GRU layer in one direction: gates_x (T, B, 3H), bias (3H,) or None, h0 (B, H), w_hh (3H, H),\n"
          "b_hh (3H,) -> (out (T, B, H), cache (T, B, 4H)).");
    m.def("gru_scan_backward", &gru_scan_backward, py::arg("grad").noconvert(), py::arg("cache").noconvert(),
          py::arg("out").noconvert(), py::arg("h0").noconvert(), py::arg("w_hh").noconvert(), py::arg("reverse"),
          "-> (dgates_x (T, B, 3H), dh0 (B, H), dw_hh (3H, H), db_hh (3H,), dbias (3H,)).");
    m.def("rnn_sigmoid", &activation<false>, py::arg("out").noconvert(), py::arg("x").noconvert(),
          "out = sigmoid(x) elementwise with the scan kernels' vector sigmoid (C-contiguous, one thread).");
    m.def("rnn_tanh", &activation<true>, py::arg("out").noconvert(), py::arg("x").noconvert(),
          "out = tanh(x) elementwise with the scan kernels' vector tanh (C-contiguous, one thread).");
}

}  // namespace minigrad
