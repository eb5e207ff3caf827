// pool.cu: 2-D max and average pooling, float32 and float64. Oracle: numpy_ref.max_pool2d_forward,
// avg_pool2d_forward, avg_pool2d_backward. (max_pool2d's backward adds each output's gradient at its
// argmax: scatter.cu's deterministic scatter-add.)
//
// Geometry: P = N * C planes, contiguous; x / dx (P, H, W), out / dout / argmax (P, Ho, Wo). Window (i, j)
// covers the rows i*sh - ph + a*dh (a < kh) and the columns j*sw - pw + b*dw (b < kw); positions outside
// the input are padding. Ho and Wo come from the caller (numpy_ref._pool_geometry: PyTorch's sizes, with
// ceil_mode), so windows may run past the padded input.
//
// Entry points (T = f32 | f64):
//   max_pool2d_forward_T(T* out, long long* argmax, const T* x, long long P, int H, int W, int Ho, int Wo,
//                        int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
//       out = the max of the window's real elements (padding counts as -inf: never the max); argmax = its
//       flat index h * W + w in the plane: the first in row-major window order at ties, the first nan if
//       there is one (nan is the max, as for np.argmax and PyTorch); a window whose real elements are all
//       -inf points at its first real element (PyTorch's choice). Every window has a real element
//       (nn.functional's pooling refuses a geometry where a dilation steps over the input).
//   avg_pool2d_forward_T(T* out, const T* x, const T* divisor, long long P, int H, int W, int Ho, int Wo,
//                        int kh, int kw, int sh, int sw, int ph, int pw)
//       out = (sum of the window's real elements) / divisor[i, j]; divisor (Ho, Wo) is
//       numpy_ref.avg_pool_divisor's element count (with or without the padding: count_include_pad).
//   avg_pool2d_backward_T(T* dx, const T* dout, const T* divisor, long long P, int H, int W, int Ho, int Wo,
//                         int kh, int kw, int sh, int sw, int ph, int pw)
//       dx[h, w] = the sum, over the windows (i, j) that cover (h, w), of dout[i, j] / divisor[i, j].
//
// Decomposition: one thread per output element (forward) or per input element (backward), grid-stride
// over P*Ho*Wo (P*H*W). The backward is the gather form of col2im's scatter ("owner computes"): the
// thread of input (h, w) visits the windows covering it, rows i with i*sh - ph <= h <= i*sh - ph + kh - 1,
// that is ceil((h + ph - kh + 1) / sh) <= i <= floor((h + ph) / sh) clipped to [0, Ho), and columns alike.
// No two threads write one element (no atomics) and every sum has a fixed order: deterministic. Neighbouring
// threads take neighbouring columns, so a warp's loads are coalesced for stride 1 (strided by sw
// otherwise, from L1/L2). block = (B) threads, any B; grid = any.

#include "common.cuh"  // Real<T>

// [first, last) of the offsets a (< k) with 0 <= start + a*d < size: the real elements of a window's side
__device__ __forceinline__ void pool_valid_range(int k, int size, int start, int d, int& first, int& last) {
    first = start < 0 ? (-start + d - 1) / d : 0;
    last = start > size - 1 ? 0 : min(k, (size - 1 - start) / d + 1);
}

// Output element o of the flat (P, Ho, Wo): its plane's offset in x, its window (i, j) and the window's
// top-left corner (r0, c0) in the input (negative inside the padding)
struct PoolWindow {
    long long plane;
    int i, j, r0, c0;
};

__device__ __forceinline__ PoolWindow pool_window(long long o, int H, int W, int Ho, int Wo, int sh, int sw, int ph,
                                                  int pw) {
    PoolWindow win;
    win.j = (int)(o % Wo);
    win.i = (int)((o / Wo) % Ho);
    win.plane = (o / ((long long)Ho * Wo)) * H * W;
    win.r0 = win.i * sh - ph;
    win.c0 = win.j * sw - pw;
    return win;
}

template <typename T>
__device__ __forceinline__ void max_pool2d_forward(T* __restrict__ out, long long* __restrict__ argmax,
                                                   const T* __restrict__ x, long long P, int H, int W, int Ho,
                                                   int Wo, int kh, int kw, int sh, int sw, int ph, int pw,
                                                   int dh, int dw) {
    const long long total = P * Ho * Wo;
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < total;
         o += (long long)gridDim.x * blockDim.x) {
        const PoolWindow win = pool_window(o, H, W, Ho, Wo, sh, sw, ph, pw);
        const T* plane = x + win.plane;
        const int r0 = win.r0, c0 = win.c0;
        int a0, a1, b0, b1;
        pool_valid_range(kh, H, r0, dh, a0, a1);
        pool_valid_range(kw, W, c0, dw, b0, b1);
        T best = Real<T>::neg_inf();
        long long at = (long long)(r0 + a0 * dh) * W + c0 + b0 * dw;  // the first real element: all -inf
        for (int a = a0; a < a1 && best == best; ++a) {               // (stop at the first nan)
            for (int b = b0; b < b1; ++b) {
                const long long pos = (long long)(r0 + a * dh) * W + c0 + b * dw;
                const T v = plane[pos];
                if (v != v || v > best) {  // larger, or a nan (which then stays)
                    best = v;
                    at = pos;
                    if (v != v) break;
                }
            }
        }
        out[o] = best;
        argmax[o] = at;
    }
}

template <typename T>
__device__ __forceinline__ void avg_pool2d_forward(T* __restrict__ out, const T* __restrict__ x,
                                                   const T* __restrict__ divisor, long long P, int H, int W,
                                                   int Ho, int Wo, int kh, int kw, int sh, int sw, int ph,
                                                   int pw) {
    const long long total = P * Ho * Wo;
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < total;
         o += (long long)gridDim.x * blockDim.x) {
        const PoolWindow win = pool_window(o, H, W, Ho, Wo, sh, sw, ph, pw);
        int a0, a1, b0, b1;
        pool_valid_range(kh, H, win.r0, 1, a0, a1);
        pool_valid_range(kw, W, win.c0, 1, b0, b1);
        T acc = T(0);
        for (int a = a0; a < a1; ++a)
            for (int b = b0; b < b1; ++b) acc += x[win.plane + (long long)(win.r0 + a) * W + win.c0 + b];
        out[o] = acc / divisor[(long long)win.i * Wo + win.j];
    }
}

template <typename T>
__device__ __forceinline__ void avg_pool2d_backward(T* __restrict__ dx, const T* __restrict__ dout,
                                                    const T* __restrict__ divisor, long long P, int H, int W,
                                                    int Ho, int Wo, int kh, int kw, int sh, int sw, int ph,
                                                    int pw) {
    const long long total = P * H * W;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int w = (int)(e % W), h = (int)((e / W) % H);
        const T* grads = dout + (e / ((long long)H * W)) * Ho * Wo;
        // the windows covering (h, w): ceil((h + ph - kh + 1) / sh) <= i <= (h + ph) / sh, within [0, Ho)
        const int i0 = h + ph - kh + 1 > 0 ? (h + ph - kh + sh) / sh : 0, i1 = min(Ho - 1, (h + ph) / sh);
        const int j0 = w + pw - kw + 1 > 0 ? (w + pw - kw + sw) / sw : 0, j1 = min(Wo - 1, (w + pw) / sw);
        T acc = T(0);
        for (int i = i0; i <= i1; ++i)
            for (int j = j0; j <= j1; ++j) {
                const long long o = (long long)i * Wo + j;
                acc += grads[o] / divisor[o];
            }
        dx[e] = acc;
    }
}

#define MG_POOL_ENTRIES(T, SUF)                                                                              \
    extern "C" __global__ void max_pool2d_forward_##SUF(                                                    \
        T* __restrict__ out, long long* __restrict__ argmax, const T* __restrict__ x, long long P, int H,   \
        int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw) {            \
        max_pool2d_forward<T>(out, argmax, x, P, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw);             \
    }                                                                                                       \
    extern "C" __global__ void avg_pool2d_forward_##SUF(                                                    \
        T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ divisor, long long P, int H,    \
        int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw) {                            \
        avg_pool2d_forward<T>(out, x, divisor, P, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw);                    \
    }                                                                                                       \
    extern "C" __global__ void avg_pool2d_backward_##SUF(                                                   \
        T* __restrict__ dx, const T* __restrict__ dout, const T* __restrict__ divisor, long long P, int H,  \
        int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw) {                            \
        avg_pool2d_backward<T>(dx, dout, divisor, P, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw);                 \
    }

MG_POOL_ENTRIES(float, f32)
MG_POOL_ENTRIES(double, f64)
