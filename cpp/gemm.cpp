// GEMM, C = A · B in float32 and float64, after Goto and van de Geijn ("Anatomy of
// high-performance matrix multiplication", 2008) and BLIS.
//
// Five loops around a register-blocked micro-kernel; each loop keeps one operand in one level
// of the cache hierarchy:
//
//   for jc in [0, N) step NC:                       B block, KC x NC, in L3
//     for pc in [0, K) step KC:
//       pack B[pc:pc+kc, jc:jc+nc]  -> Bp           NR-column panels, k-major
//       for ic in [0, M) step MC:
//         pack A[ic:ic+mc, pc:pc+kc] -> Ap          MR-row panels, k-major
//         for jr in [0, nc) step NR:                A block, MC x KC, in L2
//           for ir in [0, mc) step MR:              B panel, KC x NR, in L1
//             micro-kernel: C[ir:+MR, jr:+NR] (+)= Ap panel · Bp panel      (MR x NR tile in registers)
//
// Threads each take one block of C and run these loops on it (see gemm() for why).
//
// Packing copies each block into the order the micro-kernel reads it (contiguous, aligned,
// zero-padded to whole MR / NR panels), so the inner loop sees unit-stride streams whatever the
// layout of A and B: a transposed operand (Aᵀ·B, A·Bᵀ in backward), a broadcast batch (stride 0)
// or any other strided view only changes the strides the packing reads with, never a copy.
//
// The micro-kernel holds an MR x NR tile of C in vector registers. Per step k it loads one row of
// the B panel (NR/W vectors of W lanes), broadcasts the MR values of the A panel's column k, and
// issues MR * NR/W fused multiply-adds into the tile. The accumulators must outnumber (FMA latency
// x FMA units), here 4 x 2 = 8 on Zen 5, or the FMA pipes stall; MR x NR also sets the ratio of
// FMAs to loads (MR*NR/W FMAs per MR + NR/W loads).
//
// Instruction sets are chosen at run time: the kernels for AVX-512 and AVX2+FMA are compiled
// with function-level target attributes (the rest of the file, and so the extension, needs only
// baseline x86-64), and the best one that __builtin_cpu_supports reports is used; a scalar
// kernel serves any other CPU.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MINIGRAD_X86 1
#endif

#include "gemm.h"
#include "minigrad.h"

namespace py = pybind11;

// Vector types cross inline functions of different targets below; all of it is inlined into one
// function per target (flatten), so the ABI the warning is about is never used.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace minigrad {
namespace {

// ---- vector operations, one struct per (instruction set, dtype) ------------------------------------

// Scalar "vectors" of one lane: the portable fallback (the compiler vectorizes what it can for
// the baseline instruction set).
template <class Scalar>
struct Plain {
    using T = Scalar;
    using reg = Scalar;
    static constexpr int W = 1;
    static reg zero() { return 0; }
    static reg load(const T* p) { return *p; }
    static reg broadcast(const T* p) { return *p; }
    static reg fma(reg a, reg b, reg c) { return a * b + c; }
    static reg add(reg a, reg b) { return a + b; }
    static void store(T* p, reg a) { *p = a; }
};

#ifdef MINIGRAD_X86
// The intrinsics of AVX2 and AVX-512 share their names up to a prefix (_mm256_ / _mm512_) and
// a suffix (_ps / _pd): one macro writes the six operations for each (target, width, dtype).
#define MINIGRAD_SIMD(Name, Scalar, Reg, lanes, isa, pre, suf)                         \
    struct Name {                                                                         \
        using T = Scalar;                                                                 \
        using reg = Reg;                                                                  \
        static constexpr int W = lanes;                                                   \
        __attribute__((target(isa))) static inline reg zero() { return pre##setzero_##suf(); } \
        __attribute__((target(isa))) static inline reg load(const T* p) { return pre##loadu_##suf(p); } \
        __attribute__((target(isa))) static inline reg broadcast(const T* p) { return pre##set1_##suf(*p); } \
        __attribute__((target(isa))) static inline reg fma(reg a, reg b, reg c) { return pre##fmadd_##suf(a, b, c); } \
        __attribute__((target(isa))) static inline reg add(reg a, reg b) { return pre##add_##suf(a, b); } \
        __attribute__((target(isa))) static inline void store(T* p, reg a) { pre##storeu_##suf(p, a); } \
    };
#define AVX512 "avx512f,fma"
#define AVX2 "avx2,fma"
MINIGRAD_SIMD(Avx512F32, float, __m512, 16, AVX512, _mm512_, ps)
MINIGRAD_SIMD(Avx512F64, double, __m512d, 8, AVX512, _mm512_, pd)
MINIGRAD_SIMD(Avx2F32, float, __m256, 8, AVX2, _mm256_, ps)
MINIGRAD_SIMD(Avx2F64, double, __m256d, 4, AVX2, _mm256_, pd)
#undef MINIGRAD_SIMD
#endif

// ---- the micro-kernel ------------------------------------------------------------------------------

// C[0:MR, 0:NR] (+)= A panel (k x MR, k-major) · B panel (k x NR, k-major), NR = NV * V::W.
// The tile lives in MR * NV registers for the whole k loop; C is read and written once.
template <class V, int MR, int NV>
inline void micro_kernel(int64_t k, const typename V::T* __restrict a, const typename V::T* __restrict b,
                         typename V::T* __restrict c, int64_t ldc, bool accumulate) {
    using reg = typename V::reg;
    reg acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = V::zero();
    for (int64_t p = 0; p < k; ++p, a += MR, b += NV * V::W) {
        reg bv[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) bv[j] = V::load(b + j * V::W);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            reg ai = V::broadcast(a + i);
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) acc[i][j] = V::fma(ai, bv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) {
            typename V::T* cij = c + i * ldc + j * V::W;
            V::store(cij, accumulate ? V::add(acc[i][j], V::load(cij)) : acc[i][j]);
        }
}

// Independent FMAs in 16 accumulators (no memory traffic) for `iters` steps: what the FMA units
// of one core sustain, the practical peak a micro-kernel can approach. Returns the FLOPs done.
template <class V>
inline double fma_loop(int64_t iters) {
    using reg = typename V::reg;
    constexpr int ACC = 16;
    typename V::T one = 1, tiny = typename V::T(1e-7), start[ACC];
    reg acc[ACC], x = V::broadcast(&one), y = V::broadcast(&tiny);
#pragma GCC unroll 16
    for (int r = 0; r < ACC; ++r) {  // distinct starting values, or the compiler merges equal chains
        start[r] = typename V::T(r);
        acc[r] = V::broadcast(&start[r]);
    }
    for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 16
        for (int r = 0; r < ACC; ++r) acc[r] = V::fma(x, y, acc[r]);
    alignas(64) typename V::T sink[64];
#pragma GCC unroll 16
    for (int r = 1; r < ACC; ++r) acc[0] = V::add(acc[0], acc[r]);
    V::store(sink, acc[0]);
    return sink[0] == typename V::T(-1) ? 0.0 : 2.0 * ACC * V::W * iters;  // uses the result
}

template <class T>
using TileFn = void (*)(int64_t k, const T* a, const T* b, T* c, int64_t ldc, bool accumulate);

// One micro-kernel with its register tile (MR x NR) and cache blocks (KC, MC, NC; see Kernels).
//
// `thin` is a tile of fewer rows (thin_mr) for products with few rows: m = 32 fills 4 tiles of 8 rows
// exactly where 3 tiles of 14 would compute 42 rows (the output channels of a small convolution, the
// batch of a recurrent step). Its accumulators (8 x 2) still outnumber FMA latency x units.
template <class T>
struct Kernel {
    const char* name;
    TileFn<T> tile;
    double (*fma_loop)(int64_t iters);
    int mr, nr;
    int64_t kc, mc, nc;
    TileFn<T> thin;
    int thin_mr;
};

// Each kernel is instantiated inside functions compiled for its target; `flatten` inlines the
// micro-kernel and the vector operations into them, so the whole loop uses that target. (An
// OpenMP region inside such a function would be outlined without the target: keep them out.)
#define MINIGRAD_KERNEL(isa, attributes, V, MR, NV)                                            \
    attributes void tile_##isa(int64_t k, const V::T* a, const V::T* b, V::T* c, int64_t ldc, \
                               bool accumulate) {                                               \
        micro_kernel<V, MR, NV>(k, a, b, c, ldc, accumulate);                                  \
    }                                                                                           \
    attributes double fma_loop_##isa(int64_t iters) { return fma_loop<V>(iters); }
#define MINIGRAD_THIN(isa, attributes, V, MR, NV)                                                   \
    attributes void thin_##isa(int64_t k, const V::T* a, const V::T* b, V::T* c, int64_t ldc,      \
                               bool accumulate) {                                                  \
        micro_kernel<V, MR, NV>(k, a, b, c, ldc, accumulate);                                     \
    }
#ifdef MINIGRAD_X86
MINIGRAD_KERNEL(avx512_f32, __attribute__((target(AVX512), flatten)), Avx512F32, 14, 2)  // 14 x 32
MINIGRAD_KERNEL(avx512_f64, __attribute__((target(AVX512), flatten)), Avx512F64, 14, 2)  // 14 x 16
MINIGRAD_THIN(avx512_f32, __attribute__((target(AVX512), flatten)), Avx512F32, 8, 2)     // 8 x 32
MINIGRAD_THIN(avx512_f64, __attribute__((target(AVX512), flatten)), Avx512F64, 8, 2)     // 8 x 16
MINIGRAD_KERNEL(avx2_f32, __attribute__((target(AVX2), flatten)), Avx2F32, 6, 2)         // 6 x 16
MINIGRAD_KERNEL(avx2_f64, __attribute__((target(AVX2), flatten)), Avx2F64, 6, 2)         // 6 x 8
#endif
MINIGRAD_KERNEL(plain_f32, __attribute__((flatten)), Plain<float>, 4, 8)
MINIGRAD_KERNEL(plain_f64, __attribute__((flatten)), Plain<double>, 4, 4)
#undef MINIGRAD_KERNEL
#undef MINIGRAD_THIN

// The kernels this build has, best first; `supported` filters them by the CPU at run time.
//
// Cache blocks (columns: MR, NR, KC, MC, NC), for the caches of this machine, AMD EPYC Zen 5
// (from /sys/devices/system/cpu/cpu0/cache: L1d 48 KiB 12-way, L2 1 MiB 16-way per core, L3
// 32 MiB shared):
//   KC: a B panel, KC x NR x sizeof(T) = 256 x 32 x 4 = 32 KiB, stays in L1 while the ir loop
//       runs MC/MR A panels (14 x 256 x 4 = 14 KiB each) past it;
//   MC: an A block, MC x KC x sizeof(T) = 224 x 256 x 4 = 224 KiB (448 KiB in float64), stays
//       in L2 through the jr loop, with room for the B panels streaming through;
//   NC: a B block, KC x NC x sizeof(T) = 4 MiB, stays in L3 (each thread has its own).
// MR = 14 fills the register file: 14 x 2 accumulators + 2 B vectors + 1 broadcast
// use 31 of the 32 zmm registers (6 x 16 uses 15 of 16 ymm for AVX2). The blocks follow from the
// cache sizes above (BLIS's analytical model), not from a sweep; at n >= 512 the kernel runs at about
// 80% of the measured FMA peak with them (bench/RESULTS.md). The AVX2 and scalar sizes assume the
// smaller L2 (256 KiB and up) of older x86 cores.
template <class T>
struct Kernels;
template <>
struct Kernels<float> {
    static constexpr Kernel<float> all[] = {
#ifdef MINIGRAD_X86
        {"avx512", tile_avx512_f32, fma_loop_avx512_f32, 14, 32, 256, 224, 4096, thin_avx512_f32, 8},
        {"avx2", tile_avx2_f32, fma_loop_avx2_f32, 6, 16, 256, 120, 4096, tile_avx2_f32, 6},
#endif
        {"scalar", tile_plain_f32, fma_loop_plain_f32, 4, 8, 256, 64, 2048, tile_plain_f32, 4},
    };
};
template <>
struct Kernels<double> {
    static constexpr Kernel<double> all[] = {
#ifdef MINIGRAD_X86
        {"avx512", tile_avx512_f64, fma_loop_avx512_f64, 14, 16, 256, 224, 2048, thin_avx512_f64, 8},
        {"avx2", tile_avx2_f64, fma_loop_avx2_f64, 6, 8, 256, 120, 2048, tile_avx2_f64, 6},
#endif
        {"scalar", tile_plain_f64, fma_loop_plain_f64, 4, 4, 256, 64, 1024, tile_plain_f64, 4},
    };
};

bool supported(const std::string& name) {
#ifdef MINIGRAD_X86
    __builtin_cpu_init();  // needed when called before the constructors that would run it
    if (name == "avx512") return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return name == "scalar";
}

// Kernels<float>::all and Kernels<double>::all list the same instruction sets in the same order.
std::vector<std::string> available_kernels() {
    std::vector<std::string> names;
    for (const auto& k : Kernels<float>::all)
        if (supported(k.name)) names.push_back(k.name);
    return names;
}

int kernel_index(const std::string& name) {
    for (int i = 0; i < static_cast<int>(std::size(Kernels<float>::all)); ++i)
        if (name == Kernels<float>::all[i].name && supported(name)) return i;
    return -1;
}

std::atomic<int> g_kernel{kernel_index(available_kernels().front())};  // the best this CPU runs

template <class T>
const Kernel<T>& current_kernel() {
    return Kernels<T>::all[g_kernel.load(std::memory_order_relaxed)];
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// ---- packing ---------------------------------------------------------------------------------------

thread_local Scratch a_scratch, b_scratch;

// Copy a w x k strip of a strided matrix (element (i, p) at src[i*si + p*sp]) into panels of W:
// panel q holds rows [qW, qW + W) as dst[q*k*W + p*W + r]; rows past w are zeros (their products
// only reach the discarded part of an edge tile, but stale data could hold denormals that slow
// the FMAs down). A blocks are packed with (i, p) = (row, k), B blocks with (i, p) = (column, k).
//
// The loops run along whichever source stride is 1, so that reads are sequential for A, Aᵀ, B and
// Bᵀ alike: one whole row of the strip at a time (across all panels) when si == 1, one whole
// k-run when sp == 1. Reading panel by panel instead would hop between rows of the source at every
// k, which with a power-of-two row length all fall into the same L1 set (measured: packing B of a
// 1024 x 1024 product took 4x longer).
template <class T>
void pack_block(T* dst, const T* src, int64_t w, int64_t k, int64_t si, int64_t sp, int W) {
    const int64_t panels = ceil_div(w, W), pad = panels * W - w;
    if (si == 1 || sp != 1) {
        for (int64_t p = 0; p < k; ++p)
            for (int64_t q = 0; q < panels; ++q) {
                T* d = dst + q * k * W + p * W;
                const T* s = src + q * W * si + p * sp;
                const int64_t wq = std::min<int64_t>(W, w - q * W);
                for (int64_t r = 0; r < wq; ++r) d[r] = s[r * si];
                for (int64_t r = wq; r < W; ++r) d[r] = T(0);
            }
    } else {
        for (int64_t i = 0; i < w; ++i) {
            T* d = dst + i / W * k * W + i % W;
            const T* s = src + i * si;
            for (int64_t p = 0; p < k; ++p) d[p * W] = s[p];
        }
        T* last = dst + (panels - 1) * k * W;
        for (int64_t p = 0; p < k; ++p)
            for (int64_t r = W - pad; r < W; ++r) last[p * W + r] = T(0);
    }
}

// ---- the driver ------------------------------------------------------------------------------------


// The jr/ir loops: C[0:mc, 0:nc] (+)= Ap (mc x kc, packed) · Bp (kc x nc, packed), one micro-kernel
// call per MR x NR tile. Tiles cut by the edge of C are computed into a local tile and copied.
template <class T>
void macro_kernel(const Kernel<T>& ker, int64_t mc, int64_t nc, int64_t kc, const T* ap, const T* bp, T* c,
                  int64_t ldc, bool accumulate) {
    const int MR = ker.mr, NR = ker.nr;
    alignas(64) T edge[16 * 32];  // >= MR * NR of every kernel
    for (int64_t jp = 0; jp * NR < nc; ++jp) {
        int64_t nr = std::min<int64_t>(NR, nc - jp * NR);
        for (int64_t ip = 0; ip * MR < mc; ++ip) {
            int64_t mr = std::min<int64_t>(MR, mc - ip * MR);
            T* cij = c + ip * MR * ldc + jp * NR;
            const T* a = ap + ip * MR * kc;
            const T* b = bp + jp * NR * kc;
            if (mr == MR && nr == NR) {
                ker.tile(kc, a, b, cij, ldc, accumulate);
                continue;
            }
            ker.tile(kc, a, b, edge, NR, false);
            for (int64_t i = 0; i < mr; ++i)
                for (int64_t j = 0; j < nr; ++j)
                    cij[i * ldc + j] = (accumulate ? cij[i * ldc + j] : T(0)) + edge[i * NR + j];
        }
    }
}

// The block of C at rows [r0, r0 + m), columns [c0, c0 + n) (+)= A[r0:, :] · B[:, c0:] on the calling
// thread: the five loops. c points at the block's first element.
template <class T>
void gemm_serial(const Kernel<T>& ker, int64_t r0, int64_t m, int64_t c0, int64_t n, int64_t k,
                 const Operand<T>& A, const Operand<T>& B, T* c, int64_t ldc, bool accumulate) {
    const int64_t MR = ker.mr, NR = ker.nr;
    const int64_t kc_max = std::min(ker.kc, k), nc_max = std::min(ker.nc, round_up(n, NR));
    const int64_t mc_max = std::min(ker.mc, round_up(m, MR));
    T* bp = b_scratch.get<T>(kc_max * nc_max);
    T* ap = a_scratch.get<T>(mc_max * kc_max);
    for (int64_t jc = 0; jc < n; jc += nc_max) {
        const int64_t nc = std::min(nc_max, n - jc);
        for (int64_t pc = 0; pc < k; pc += kc_max) {
            const int64_t kc = std::min(kc_max, k - pc);
            B.pack(bp, c0 + jc, nc, pc, kc, ker.nr);
            for (int64_t ic = 0; ic < m; ic += mc_max) {
                const int64_t mc = std::min(mc_max, m - ic);
                A.pack(ap, r0 + ic, mc, pc, kc, ker.mr);
                macro_kernel(ker, mc, nc, kc, ap, bp, c + ic * ldc + jc, ldc, accumulate || pc > 0);
            }
        }
    }
}

}  // namespace

// Products of at most this many rows use the thin tile when it computes fewer rows in vain.
constexpr int64_t kThinRows = 64;

// C (m x n, row-major, ldc) (+)= A (m x k) · B (k x n) on `threads` threads.
//
// Parallel split: C is cut into a grid of tm x tn blocks, one per thread, on tile boundaries, and
// each thread runs the serial loops on its block with its own packed panels. The threads never
// wait for one another (no barrier, nothing shared but the read-only inputs): on a small machine
// shared with other processes a descheduled thread then delays only its own block. The price is
// packing twice: each A row block is packed by the tn threads that use it (each B column block
// by tm threads), which costs K * (tn * M + tm * N) copies; the grid minimizes that.
template <class T>
void gemm(int64_t m, int64_t n, int64_t k, const Operand<T>& A, const Operand<T>& B, T* c, int64_t ldc,
          int threads, bool accumulate) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        if (!accumulate)
            for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
        return;
    }
    Kernel<T> ker = current_kernel<T>();
    if (m <= kThinRows && round_up(m, ker.thin_mr) < round_up(m, ker.mr)) {  // fewer rows computed in vain
        ker.tile = ker.thin;
        ker.mr = ker.thin_mr;
    }
    if (threads == 1) {  // no parallel region at all: entering one costs microseconds
        gemm_serial(ker, 0, m, 0, n, k, A, B, c, ldc, accumulate);
        return;
    }
    RegionErrors errors;  // (the scratch buffers may throw std::bad_alloc)
#pragma omp parallel num_threads(threads)
    errors.run([&] {
        const int64_t t = omp_get_num_threads(), id = omp_get_thread_num();
        const int64_t mtiles = ceil_div(m, ker.mr), ntiles = ceil_div(n, ker.nr);
        int64_t tm = 1;
        for (int64_t d = 1; d <= t; ++d)  // tm x tn = t, tm | t, minimizing tn * M + tm * N
            if (t % d == 0 && d <= mtiles && (t / d) * m + d * n < (t / tm) * m + tm * n) tm = d;
        const int64_t tn = t / tm, i = id / tn, j = id % tn;
        const int64_t r0 = mtiles * i / tm * ker.mr, r1 = std::min(m, mtiles * (i + 1) / tm * ker.mr);
        const int64_t c0 = ntiles * j / tn * ker.nr, c1 = std::min(n, ntiles * (j + 1) / tn * ker.nr);
        if (r0 < r1 && c0 < c1)  // more threads than tiles leaves some idle
            gemm_serial(ker, r0, r1 - r0, c0, c1 - c0, k, A, B, c + r0 * ldc + c0, ldc, accumulate);
    });
    errors.rethrow();
}

template <class T>
void gemm(int64_t m, int64_t n, int64_t k, Strided<T> A, Strided<T> B, T* c, int64_t ldc, int threads,
          bool accumulate) {
    gemm<T>(m, n, k, StridedA<T>(A), StridedB<T>(B), c, ldc, threads, accumulate);
}

template <class T>
void StridedA<T>::pack(T* dst, int64_t i0, int64_t w, int64_t p0, int64_t kc, int W) const {
    pack_block(dst, m.p + i0 * m.rs + p0 * m.cs, w, kc, m.rs, m.cs, W);
}
template <class T>
void StridedB<T>::pack(T* dst, int64_t i0, int64_t w, int64_t p0, int64_t kc, int W) const {
    pack_block(dst, m.p + p0 * m.rs + i0 * m.cs, w, kc, m.cs, m.rs, W);
}
const char* gemm_kernel_name() { return Kernels<float>::all[g_kernel.load(std::memory_order_relaxed)].name; }

template struct StridedA<float>;
template struct StridedA<double>;
template struct StridedB<float>;
template struct StridedB<double>;

template void gemm<float>(int64_t, int64_t, int64_t, const Operand<float>&, const Operand<float>&, float*,
                          int64_t, int, bool);
template void gemm<double>(int64_t, int64_t, int64_t, const Operand<double>&, const Operand<double>&, double*,
                           int64_t, int, bool);
template void gemm<float>(int64_t, int64_t, int64_t, Strided<float>, Strided<float>, float*, int64_t, int, bool);
template void gemm<double>(int64_t, int64_t, int64_t, Strided<double>, Strided<double>, double*, int64_t, int,
                           bool);

namespace {


// ---- Python entry point ----------------------------------------------------------------------------

constexpr int kMaxDims = 64;  // NumPy's NPY_MAXDIMS

// Strides of x in elements, or false when one is not a whole number of elements or the data is not
// aligned to the element size (a field of a packed record array, say).
bool element_strides(const py::array& x, int64_t* out) {
    const int64_t item = x.itemsize();
    if (reinterpret_cast<uintptr_t>(x.data()) % item) return false;
    for (py::ssize_t d = 0; d < x.ndim(); ++d) {
        if (x.strides(d) % item) return false;
        out[d] = x.strides(d) / item;
    }
    return true;
}


// a (..., m, k) @ b (..., k, n) with NumPy's batch broadcasting, or None when a stride is not whole
// elements. The batch loop walks a and b with their own strides (0 along a broadcast dim), so no
// operand is ever expanded or copied.
template <class T>
py::object matmul_typed(const py::array& a, const py::array& b) {
    int64_t sa[kMaxDims], sb[kMaxDims];
    if (!element_strides(a, sa) || !element_strides(b, sb)) return py::none();
    const int na = static_cast<int>(a.ndim()), nb = static_cast<int>(b.ndim());
    const int nbatch = std::max(na, nb) - 2;
    const int64_t m = a.shape(na - 2), k = a.shape(na - 1), n = b.shape(nb - 1);
    if (b.shape(nb - 2) != k)
        throw std::invalid_argument("matmul: shapes " + shape_of(a) + " and " + shape_of(b) +
                                    " do not match (inner dims " + std::to_string(k) + " != " +
                                    std::to_string(b.shape(nb - 2)) + ")");
    // Batch dims align from the right; a missing dim or one of size 1 is broadcast (stride 0).
    std::vector<py::ssize_t> shape(nbatch + 2);
    int64_t bsa[kMaxDims], bsb[kMaxDims];
    for (int d = 0; d < nbatch; ++d) {
        const int da = d - (nbatch - (na - 2)), db = d - (nbatch - (nb - 2));  // < 0: missing
        const int64_t size_a = da >= 0 ? a.shape(da) : 1, size_b = db >= 0 ? b.shape(db) : 1;
        if (size_a != size_b && size_a != 1 && size_b != 1)
            throw std::invalid_argument("matmul: batch dims of shapes " + shape_of(a) + " and " + shape_of(b) +
                                        " do not broadcast");
        shape[d] = size_a == 1 ? size_b : size_a;
        bsa[d] = size_a == 1 ? 0 : sa[da];
        bsb[d] = size_b == 1 ? 0 : sb[db];
    }
    shape[nbatch] = m;
    shape[nbatch + 1] = n;
    py::array_t<T> out(shape);
    int64_t batch = 1;
    for (int d = 0; d < nbatch; ++d) batch *= shape[d];

    const T* pa = static_cast<const T*>(a.data());
    const T* pb = static_cast<const T*>(b.data());
    T* pc = out.mutable_data();
    const int64_t rsa = sa[na - 2], csa = sa[na - 1], rsb = sb[nb - 2], csb = sb[nb - 1];
    // The A and B matrices of batch element `index` (row-major unravel of the index).
    auto operands = [&](int64_t index) {
        int64_t oa = 0, ob = 0;
        for (int d = nbatch - 1; d >= 0; --d) {
            const int64_t coord = index % shape[d];
            index /= shape[d];
            oa += coord * bsa[d];
            ob += coord * bsb[d];
        }
        return std::make_pair(Strided<T>{pa + oa, rsa, csa}, Strided<T>{pb + ob, rsb, csb});
    };
    const int threads = num_threads();
    const bool small = m * n * k < kParallelWork;
    py::gil_scoped_release release;
    if (small && batch >= threads && threads > 1) {
        // Many small products: one thread per matrix beats several threads per matrix.
        RegionErrors errors;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < batch; ++i)
            errors.run([&] {
                auto [A, B] = operands(i);
                gemm<T>(m, n, k, A, B, pc + i * m * n, n, 1);
            });
        errors.rethrow();
    } else {
        for (int64_t i = 0; i < batch; ++i) {
            auto [A, B] = operands(i);
            gemm<T>(m, n, k, A, B, pc + i * m * n, n, small ? 1 : threads);
        }
    }
    return std::move(out);
}

py::object matmul(const py::array& a, const py::array& b) {
    if (a.ndim() >= 2 && b.ndim() >= 2) {
        if (py::isinstance<py::array_t<float>>(a) && py::isinstance<py::array_t<float>>(b))
            return matmul_typed<float>(a, b);
        if (py::isinstance<py::array_t<double>>(a) && py::isinstance<py::array_t<double>>(b))
            return matmul_typed<double>(a, b);
    }
    return py::none();
}

// ---- peak FLOP/s -----------------------------------------------------------------------------------

// GFLOP/s of the current kernel's FMA loop on num_threads() threads at once.
template <class T>
double fma_peak_gflops(int64_t iters) {
    const Kernel<T>& ker = current_kernel<T>();
    const int threads = num_threads();
    double flops = 0, start = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += ker.fma_loop(iters);
    return flops / (omp_get_wtime() - start) / 1e9;
}

}  // namespace

void register_gemm(py::module_& m) {
    m.def("matmul", &matmul, py::arg("a"), py::arg("b"),
          "a (..., m, k) @ b (..., k, n) -> (..., m, n) with NumPy's batch broadcasting, for a and b both\n"
          "float32 or both float64 with >= 2 dims; any strides (transposed operands are read in place).\n"
          "Returns None for anything else (other dtypes, 1-D operands, strides that are not whole elements):\n"
          "the caller then uses the NumPy reference.");
    m.def("gemm_kernels", &available_kernels, "Micro-kernels this CPU can run, best first.");
    m.def("gemm_kernel", [] { return std::string(gemm_kernel_name()); },
          "The micro-kernel matmul uses now.");
    m.def("set_gemm_kernel", [](const std::string& name) {
        int index = kernel_index(name);
        if (index < 0)
            throw std::invalid_argument("set_gemm_kernel: '" + name + "' is not one of gemm_kernels()");
        g_kernel = index;
    }, py::arg("name"), "Use another micro-kernel (for tests and benchmarks).");
    m.def("fma_peak_gflops", [](const std::string& dtype, int64_t iters) {
        if (dtype != "float32" && dtype != "float64")
            throw std::invalid_argument("fma_peak_gflops: dtype must be 'float32' or 'float64'");
        py::gil_scoped_release release;
        return dtype == "float32" ? fma_peak_gflops<float>(iters) : fma_peak_gflops<double>(iters);
    }, py::arg("dtype") = "float32", py::arg("iters") = 10000000,
          "GFLOP/s of independent FMAs (no memory traffic) on get_num_threads() threads, with the\n"
          "instruction set of the current micro-kernel: the practical peak of this machine.");
}

}  // namespace minigrad
