// reduce.cu: sum / max / min along one dimension, float32 and float64. Oracle: numpy_ref.sum / max / min.
// The reduced dimension is seen as the middle one of a contiguous (outer, n, inner) array (any
// reduction of one axis of a C-contiguous array is this with outer = product of the dims before it and
// inner = product of the dims after it); the result is (outer, inner). max/min propagate nan, as numpy.
// Deterministic: fixed reduction trees, no atomics.
//
// Both kernels can split n into chunks of `chunk` elements and write one partial result per chunk:
// out has shape (outer, nchunks, inner) with nchunks = ceil(n / chunk). A second launch of the same
// kernel with n = nchunks (and chunk >= nchunks) reduces the partials: that is how a long reduction
// (e.g. dbias = sum over the rows of dx, a (1, R, D) reduction) gets more than one block per output while
// staying deterministic. chunk = n gives the result in one launch.
//
// Entry points (OP = sum | max | min, T = f32 | f64):
//   reduce_OP_lastdim_T(T* out, const T* x, long long rows, long long n, long long chunk)
//       inner == 1: rows = outer, each row contiguous.
//       Decomposition: block (rows r, chunk c) for r = blockIdx.x + k*gridDim.x, c = blockIdx.y +
//       k*gridDim.y; block = (B) threads, B a multiple of 32 up to 1024. Thread t reads elements t,
//       t+B, ... of the chunk (coalesced) and reduces them sequentially; then a __shfl_xor_sync butterfly
//       per warp and a second one over the per-warp results (shared memory, 32 slots).
//   reduce_OP_strided_T(T* out, const T* x, long long outer, long long n, long long inner, long long chunk)
//       inner > 1: the reduced elements of an output are `inner` apart.
//       Decomposition: block = (32, BY) threads, BY in 1..32; grid = (ceil(inner / 32), outer, nchunks)
//       (each grid-stride, so any grid works: gridDim.y and gridDim.z may be smaller than outer and
//       nchunks). Block (bx, o, c) owns outputs 32*bx .. 32*bx+31 of outer index o and chunk c; thread
//       (tx, ty) reduces inner index 32*bx + tx over the chunk's positions ty, ty + BY, ... (a warp reads
//       32 consecutive elements: coalesced); the BY partials of an output meet in shared memory ([32][33])
//       and thread ty = 0 combines them in order.

#include "common.cuh"  // SumOp, MaxOp, MinOp, warp_reduce, block_reduce

template <typename T, typename Op>
__device__ __forceinline__ void reduce_lastdim(T* __restrict__ out, const T* __restrict__ x, long long rows,
                                               long long n, long long chunk) {
    const long long nchunks = (n + chunk - 1) / chunk;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {  // uniform across the block
        for (long long c = blockIdx.y; c < nchunks; c += gridDim.y) {
            const long long lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
            const T* xr = x + r * n;
            T acc = Op::identity();
            for (long long j = lo + threadIdx.x; j < hi; j += blockDim.x) acc = Op::apply(acc, xr[j]);
            acc = block_reduce<T, Op>(acc);
            if (threadIdx.x == 0) out[r * nchunks + c] = acc;
        }
    }
}

template <typename T, typename Op>
__device__ __forceinline__ void reduce_strided(T* __restrict__ out, const T* __restrict__ x, long long outer,
                                               long long n, long long inner, long long chunk) {
    __shared__ T part[32][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long nchunks = (n + chunk - 1) / chunk;
    for (long long o = blockIdx.y; o < outer; o += gridDim.y) {  // all three loops are uniform
        for (long long c = blockIdx.z; c < nchunks; c += gridDim.z) {
            const long long lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
            for (long long i0 = (long long)blockIdx.x * 32; i0 < inner; i0 += (long long)gridDim.x * 32) {
                const long long i = i0 + tx;
                T acc = Op::identity();
                if (i < inner)
                    for (long long k = lo + ty; k < hi; k += blockDim.y) acc = Op::apply(acc, x[(o * n + k) * inner + i]);
                part[ty][tx] = acc;
                __syncthreads();
                if (ty == 0 && i < inner) {
                    for (int k = 1; k < (int)blockDim.y; ++k) acc = Op::apply(acc, part[k][tx]);
                    out[(o * nchunks + c) * inner + i] = acc;
                }
                __syncthreads();  // before the next tile overwrites part
            }
        }
    }
}

#define MG_REDUCE_ENTRIES(OPNAME, OP, T, SUF)                                                                \
    extern "C" __global__ void reduce_##OPNAME##_lastdim_##SUF(T* __restrict__ out, const T* __restrict__ x, \
                                                               long long rows, long long n, long long chunk) { \
        reduce_lastdim<T, OP<T> >(out, x, rows, n, chunk);                                                 \
    }                                                                                                      \
    extern "C" __global__ void reduce_##OPNAME##_strided_##SUF(T* __restrict__ out, const T* __restrict__ x, \
                                                               long long outer, long long n, long long inner, \
                                                               long long chunk) {                          \
        reduce_strided<T, OP<T> >(out, x, outer, n, inner, chunk);                                         \
    }

MG_REDUCE_ENTRIES(sum, SumOp, float, f32)
MG_REDUCE_ENTRIES(sum, SumOp, double, f64)
MG_REDUCE_ENTRIES(max, MaxOp, float, f32)
MG_REDUCE_ENTRIES(max, MaxOp, double, f64)
MG_REDUCE_ENTRIES(min, MinOp, float, f32)
MG_REDUCE_ENTRIES(min, MinOp, double, f64)
