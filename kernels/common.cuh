// common.cuh: the device helpers shared by kernels/*.cu (float32 and float64 through templates). Every
// .cu file that uses them includes it, `#include "common.cuh"`, before its own code; nothing here is a
// kernel (no __global__ entry points).
//
// Finding it: NVRTC (CuPy RawModule) must be given the kernels directory, options=("--include-path=" +
// kernels_dir,) (see kernels/__init__.py); nvcc: -I kernels; g++ (the CPU emulator, tests/cuda_emu)
// finds it next to the including .cu file.
//
// No include guard, on purpose (and no #pragma once): the emulator (tests/test_cuda_emulated.py)
// compiles all the .cu files in one translation unit, each inside its own namespace (namespace
// mg_softmax { #include ".../softmax.cu" } ...), so every namespace needs its own copy of these helpers;
// a guard would leave all but the first namespace without them. Under NVRTC and nvcc every .cu file is a
// program of its own and includes this header once. So: include it exactly once per .cu file, from
// nothing but that file.
//
// Contents:
//   Real<T>                  per-type math: inf, neg_inf, exp_, log_, sqrt_, tanh_, erf_ (the float
//                            functions for float, the double ones for double; IEEE-rounded, no fast-math
//                            intrinsics)
//   max_nan, min_nan         max / min that propagate nan (as numpy.max / numpy.min), unlike fmaxf / fminf
//   SumOp, MaxOp, MinOp      reduction operators: identity() and apply(a, b) (max / min: nan wins)
//   warp_reduce<T, Op>       butterfly over the 32 lanes of a warp (__shfl_xor_sync): every lane gets the
//                            result, bitwise the same in every lane; warp_sum = warp_reduce<T, SumOp<T>>
//   block_reduce<T, Op>      block-wide reduction (blockDim.x a multiple of 32, one-dimensional in x);
//                            every thread gets the result; block_sum = block_reduce<T, SumOp<T>>
//   online_add, online_merge the online-softmax statistics (Milakov & Gimelshein 2018): a running max m
//                            and s = sum exp(x_j - m), rescaled when m grows
//   warp_merge, block_merge  online_merge over a warp / a block, as warp_reduce / block_reduce
//
// The block-wide helpers contain __syncthreads: every thread of the block must call them (the call must
// be uniform across the block). They use 32 shared-memory slots per value, read back after one barrier
// and released by a second, so they may be called again right away.

// Real<float> and Real<double>, from one definition: F is the C library's suffix of the type's math
// functions (expf / exp, ...), INF the bits of +inf.
template <typename T> struct Real;
#define MG_REAL(T, F, INF)                                                                                   \
    template <> struct Real<T> {                                                                           \
        static __device__ __forceinline__ T inf() { return INF; }                                          \
        static __device__ __forceinline__ T neg_inf() { return -inf(); }                                   \
        static __device__ __forceinline__ T exp_(T x) { return exp##F(x); }                                \
        static __device__ __forceinline__ T log_(T x) { return log##F(x); }                                \
        static __device__ __forceinline__ T sqrt_(T x) { return sqrt##F(x); }                              \
        static __device__ __forceinline__ T tanh_(T x) { return tanh##F(x); }                              \
        static __device__ __forceinline__ T erf_(T x) { return erf##F(x); }                                \
    };
MG_REAL(float, f, __int_as_float(0x7f800000))
MG_REAL(double, , __longlong_as_double(0x7ff0000000000000LL))
#undef MG_REAL

// max / min that propagate nan (as numpy's max / min): a nan in either argument wins (the first one's
// when both are nan)
template <typename T> __device__ __forceinline__ T max_nan(T a, T b) { return (a != a || a > b) ? a : b; }
template <typename T> __device__ __forceinline__ T min_nan(T a, T b) { return (a != a || a < b) ? a : b; }

// ---- reductions of one value -----------------------------------------------------------------------------

template <typename T> struct SumOp {
    static __device__ __forceinline__ T identity() { return T(0); }
    static __device__ __forceinline__ T apply(T a, T b) { return a + b; }
};
template <typename T> struct MaxOp {  // nan wins, as numpy.max
    static __device__ __forceinline__ T identity() { return Real<T>::neg_inf(); }
    static __device__ __forceinline__ T apply(T a, T b) { return max_nan(a, b); }
};
template <typename T> struct MinOp {  // nan wins, as numpy.min
    static __device__ __forceinline__ T identity() { return Real<T>::inf(); }
    static __device__ __forceinline__ T apply(T a, T b) { return min_nan(a, b); }
};

// Butterfly over the warp: after step k every lane holds the combination of its 2^k-lane group, and the
// two partners of a step compute the same value (apply is commutative), so all lanes end bitwise equal.
template <typename T, typename Op> __device__ __forceinline__ T warp_reduce(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = Op::apply(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Block-wide reduction; every thread gets the result. Warp butterflies, the per-warp results through
// shared memory (32 slots), a second butterfly over them in every warp. Two __syncthreads: one before
// reading the per-warp slots, one after, so that the slots may be reused by the next call.
template <typename T, typename Op> __device__ __forceinline__ T block_reduce(T v) {
    __shared__ T warp_v[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_reduce<T, Op>(v);
    if (lane == 0) warp_v[warp] = v;
    __syncthreads();
    v = lane < nwarps ? warp_v[lane] : Op::identity();
    v = warp_reduce<T, Op>(v);
    __syncthreads();
    return v;
}

template <typename T> __device__ __forceinline__ T warp_sum(T v) { return warp_reduce<T, SumOp<T>>(v); }
template <typename T> __device__ __forceinline__ T block_sum(T v) { return block_reduce<T, SumOp<T>>(v); }

// ---- online softmax statistics ------------------------------------------------------------------------
// A pair (m, s): m the max so far (nan-propagating), s = sum of exp(x_j - m) so far. Every exponent is
// <= 0, so nothing overflows for any finite input; the rescaling turns inf - inf into nan, which gives
// softmax's special values (a +inf or nan makes the row nan); the one special case is m = -inf (all -inf
// so far), where s stays 0. The empty pair is (-inf, 0).

// (m, s) += x
template <typename T> __device__ __forceinline__ void online_add(T& m, T& s, T x) {
    const T nm = max_nan(m, x);
    s = (nm == Real<T>::neg_inf()) ? T(0) : s * Real<T>::exp_(m - nm) + Real<T>::exp_(x - nm);
    m = nm;
}

// (m, s) += (m2, s2). Symmetric up to the order of one addition, which is commutative: both partners of a
// butterfly step compute bitwise the same pair.
template <typename T> __device__ __forceinline__ void online_merge(T& m, T& s, T m2, T s2) {
    const T nm = max_nan(m, m2);
    s = (nm == Real<T>::neg_inf()) ? T(0) : s * Real<T>::exp_(m - nm) + s2 * Real<T>::exp_(m2 - nm);
    m = nm;
}

// online_merge over the warp (butterfly): every lane ends with the same pair.
template <typename T> __device__ __forceinline__ void warp_merge(T& m, T& s) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T m2 = __shfl_xor_sync(0xffffffffu, m, offset);
        const T s2 = __shfl_xor_sync(0xffffffffu, s, offset);
        online_merge(m, s, m2, s2);
    }
}

// online_merge over the block, as block_reduce: every thread gets the pair; two __syncthreads.
template <typename T> __device__ __forceinline__ void block_merge(T& m, T& s) {
    __shared__ T warp_m[32];
    __shared__ T warp_s[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    warp_merge(m, s);
    if (lane == 0) {
        warp_m[warp] = m;
        warp_s[warp] = s;
    }
    __syncthreads();
    m = lane < nwarps ? warp_m[lane] : Real<T>::neg_inf();
    s = lane < nwarps ? warp_s[lane] : T(0);
    warp_merge(m, s);
    __syncthreads();
}
