// softmax.cu: softmax and log-softmax over the last dimension of a contiguous (rows, n) array,
// forward and backward, float32 and float64. Loaded with NVRTC (CuPy RawModule); no host code; the
// helpers (online softmax statistics, warp/block merges) are in common.cuh. The oracle is
// minigrad.backend.numpy_ref (softmax_forward, log_softmax_forward, and their backward), special values
// included:
//   * -inf entries get probability 0 (log-softmax: -inf); a row of all -inf gives nan (0/0), as PyTorch;
//   * +inf or nan anywhere in a row makes the whole row nan.
//
// Entry points (T = f32 | f64; pointers to contiguous row-major arrays; rows >= 0, n >= 1):
//   softmax_forward_{warp,block}_T(T* out, const T* x, long long rows, int n)
//   log_softmax_forward_{warp,block}_T(T* out, const T* x, long long rows, int n)
//   softmax_backward_{warp,block}_T(T* dx, const T* dout, const T* out, long long rows, int n)
//       dx = out * (dout - sum(dout * out))
//   log_softmax_backward_{warp,block}_T(T* dx, const T* dout, const T* out, long long rows, int n)
//       dx = dout - exp(out) * sum(dout)
//
// Two parallel decompositions, same results up to rounding (both are deterministic):
//   *_warp_*  one warp per row: for short rows (n <= ~1024). block = (32 * W) threads for any W in 1..32,
//             any grid: warp w of block b takes rows b*W + w, then + gridDim.x*W, ... Lane l reads
//             elements l, l+32, ... (coalesced), the row statistics are combined with a butterfly of
//             __shfl_xor_sync, so every lane ends with the same value and no shared memory or
//             __syncthreads is needed.
//   *_block_* one block per row: for long rows. block = (B) threads, B a multiple of 32 up to 1024, any
//             grid (grid-stride over the rows). Thread t reads t, t+B, ...; warp butterflies, then the
//             per-warp results go through shared memory (32 slots) and every warp combines them again,
//             so all threads have the row's statistics after two __syncthreads.
//
// Numerics: the forward pass is the online softmax (Milakov & Gimelshein 2018): one read of the row
// keeps a running max m and a running sum s = sum exp(x - m), rescaling s when m grows; partial (m, s)
// pairs merge the same way. Every exponent is <= 0, so nothing overflows for any finite input (+-1e4
// included). The output pass reads the row a second time. The max propagates nan, and the rescaling of
// (m, s) turns inf - inf into nan, which gives the special-value semantics above for free; the only
// special case is m = -inf (the row so far is all -inf), where s stays 0 and the shift is 0.

#include "common.cuh"  // Real<T>, max_nan, warp/block reductions, online softmax statistics

// The output pass over one row, threads `first`, `first + stride`, ...
template <typename T, bool LOG>
__device__ __forceinline__ void write_row(T* y, const T* x, int n, int first, int stride, T m, T s) {
    const T shift = (m == Real<T>::neg_inf()) ? T(0) : m;  // all -inf: x - 0 stays -inf, then 0/0 = nan
    if (LOG) {
        const T lse = Real<T>::log_(s);
        for (int j = first; j < n; j += stride) y[j] = (x[j] - shift) - lse;
    } else {
        for (int j = first; j < n; j += stride) y[j] = Real<T>::exp_(x[j] - shift) / s;
    }
}

template <typename T, bool LOG>
__device__ __forceinline__ void softmax_forward_warp(T* __restrict__ out, const T* __restrict__ x, long long rows,
                                                     int n) {
    const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    for (long long row = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows;
         row += (long long)gridDim.x * wpb) {
        const T* xr = x + row * n;
        T m = Real<T>::neg_inf(), s = T(0);
        for (int j = lane; j < n; j += 32) online_add(m, s, xr[j]);
        warp_merge(m, s);
        write_row<T, LOG>(out + row * n, xr, n, lane, 32, m, s);
    }
}

template <typename T, bool LOG>
__device__ __forceinline__ void softmax_forward_block(T* __restrict__ out, const T* __restrict__ x, long long rows,
                                                      int n) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {  // uniform across the block
        const T* xr = x + row * n;
        T m = Real<T>::neg_inf(), s = T(0);
        for (int j = threadIdx.x; j < n; j += blockDim.x) online_add(m, s, xr[j]);
        block_merge(m, s);
        write_row<T, LOG>(out + row * n, xr, n, threadIdx.x, blockDim.x, m, s);
    }
}

// Backward: one reduction per row (sum(dout * out) for softmax, sum(dout) for log-softmax), then an
// elementwise pass. The second read of dout/out hits L1/L2 for rows that fit.
template <typename T, bool LOG>
__device__ __forceinline__ T backward_partial(const T* g, const T* y, int n, int first, int stride) {
    T acc = T(0);
    for (int j = first; j < n; j += stride) acc += LOG ? g[j] : g[j] * y[j];
    return acc;
}

template <typename T, bool LOG>
__device__ __forceinline__ void backward_write(T* dx, const T* g, const T* y, int n, int first, int stride, T sum) {
    for (int j = first; j < n; j += stride) dx[j] = LOG ? g[j] - Real<T>::exp_(y[j]) * sum : y[j] * (g[j] - sum);
}

template <typename T, bool LOG>
__device__ __forceinline__ void softmax_backward_warp(T* __restrict__ dx, const T* __restrict__ dout,
                                                      const T* __restrict__ out, long long rows, int n) {
    const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    for (long long row = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows;
         row += (long long)gridDim.x * wpb) {
        const long long o = row * n;
        const T sum = warp_sum(backward_partial<T, LOG>(dout + o, out + o, n, lane, 32));
        backward_write<T, LOG>(dx + o, dout + o, out + o, n, lane, 32, sum);
    }
}

template <typename T, bool LOG>
__device__ __forceinline__ void softmax_backward_block(T* __restrict__ dx, const T* __restrict__ dout,
                                                       const T* __restrict__ out, long long rows, int n) {
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long o = row * n;
        const T sum = block_sum(backward_partial<T, LOG>(dout + o, out + o, n, threadIdx.x, blockDim.x));
        backward_write<T, LOG>(dx + o, dout + o, out + o, n, threadIdx.x, blockDim.x, sum);
    }
}

// ---- extern "C" entry points (unmangled names for RawModule.get_function) ---------------------------

#define MG_SOFTMAX_ENTRIES(T, SUF)                                                                           \
    extern "C" __global__ void softmax_forward_warp_##SUF(T* __restrict__ out, const T* __restrict__ x,    \
                                                          long long rows, int n) {                         \
        softmax_forward_warp<T, false>(out, x, rows, n);                                                   \
    }                                                                                                      \
    extern "C" __global__ void log_softmax_forward_warp_##SUF(T* __restrict__ out, const T* __restrict__ x,\
                                                              long long rows, int n) {                     \
        softmax_forward_warp<T, true>(out, x, rows, n);                                                    \
    }                                                                                                      \
    extern "C" __global__ void softmax_forward_block_##SUF(T* __restrict__ out, const T* __restrict__ x,   \
                                                           long long rows, int n) {                        \
        softmax_forward_block<T, false>(out, x, rows, n);                                                  \
    }                                                                                                      \
    extern "C" __global__ void log_softmax_forward_block_##SUF(T* __restrict__ out, const T* __restrict__ x,\
                                                               long long rows, int n) {                    \
        softmax_forward_block<T, true>(out, x, rows, n);                                                   \
    }                                                                                                      \
    extern "C" __global__ void softmax_backward_warp_##SUF(T* __restrict__ dx, const T* __restrict__ dout, \
                                                           const T* __restrict__ out, long long rows, int n) { \
        softmax_backward_warp<T, false>(dx, dout, out, rows, n);                                           \
    }                                                                                                      \
    extern "C" __global__ void log_softmax_backward_warp_##SUF(T* __restrict__ dx, const T* __restrict__ dout,\
                                                               const T* __restrict__ out, long long rows,  \
                                                               int n) {                                    \
        softmax_backward_warp<T, true>(dx, dout, out, rows, n);                                            \
    }                                                                                                      \
    extern "C" __global__ void softmax_backward_block_##SUF(T* __restrict__ dx, const T* __restrict__ dout,\
                                                            const T* __restrict__ out, long long rows, int n) {\
        softmax_backward_block<T, false>(dx, dout, out, rows, n);                                          \
    }                                                                                                      \
    extern "C" __global__ void log_softmax_backward_block_##SUF(T* __restrict__ dx,                        \
                                                                const T* __restrict__ dout,                \
                                                                const T* __restrict__ out, long long rows, \
                                                                int n) {                                   \
        softmax_backward_block<T, true>(dx, dout, out, rows, n);                                           \
    }

MG_SOFTMAX_ENTRIES(float, f32)
MG_SOFTMAX_ENTRIES(double, f64)
