// conv.cu: im2col and col2im for conv2d (stride, zero padding, dilation), float32 and float64. Loaded
// with NVRTC (CuPy RawModule); no host code. conv2d is then a GEMM (gemm.cu) per group:
//     out[n, g] (O/g, Ho*Wo) = weight[g] (O/g, K) · cols[n, g] (K, Ho*Wo),        K = C/g * kh * kw
// (gemm's batch over the images n, weight broadcast with batch stride 0, written straight into the
// (N, O, Ho, Wo) output), and backward dweight[g] = sum_n dout[n, g] · cols[n, g]ᵀ, dcols[n, g] =
// weight[g]ᵀ · dout[n, g] (transposed operands through gemm's strides), dx = col2im(dcols). The
// semantics are numpy_ref.conv2d_forward / conv2d_backward's (PyTorch's geometry, asymmetric padding).
//
// Layout: cols (N, C * kh * kw, Ho * Wo), contiguous: row (c, a, b) = (c * kh + a) * kw + b holds input
// channel c at kernel offset (a, b) for every output pixel (i, j), column i * Wo + j:
//     cols[n, (c, a, b), (i, j)] = x[n, c, i * sh - pad_top + a * dh, j * sw - pad_left + b * dw]
// and 0 where that position is in the padding. A group's rows are contiguous (channels c of group g are
// C/g consecutive channels), so cols[n, g] is a (K, Ho*Wo) block at row g * K.
//
// Entry points (T = f32 | f64; x and dx (N, C, H, W) contiguous; N, C, H, W, kh, kw, sh, sw, dh, dw >= 1,
// pad_top, pad_left >= 0; Ho, Wo >= 0, the output size the caller computed from the padding on both sides,
// Ho = (H + pad_top + pad_bottom - dh * (kh - 1) - 1) / sh + 1, and likewise Wo):
//   im2col_T(T* cols, const T* x, int N, int C, int H, int W, int kh, int kw, int sh, int sw, int pad_top,
//            int pad_left, int dh, int dw, int Ho, int Wo)
//   col2im_T(T* dx, const T* dcols, <the same geometry>)
//       dx[n, c, y, x] = sum over the (a, b) (a, then b, increasing) with y = i * sh - pad_top + a * dh and
//       x = j * sw - pad_left + b * dw for some output pixel 0 <= i < Ho, 0 <= j < Wo, of
//       dcols[n, (c, a, b), (i, j)]: the adjoint of im2col (what the padding received is dropped).
//
// Decomposition: both are one thread per OUTPUT element with a 1-D grid-stride loop over the flat index
// (64-bit), so any 1-D launch works (block = 256, grid = min(ceil(total / 256), a few per SM), say).
//   im2col: one thread per element of cols; consecutive threads take consecutive output pixels j of one
//       row of cols, so the writes are coalesced and the reads are sw apart.
//   col2im: one thread per element of dx, which gathers, rather than scatters, the at most kh * kw
//       entries of dcols that were read from its position: no atomics, no races, and the sum runs in a
//       fixed order (kernel offset (a, b) increasing, the order of numpy_ref._col2im, which adds one
//       offset at a time into zeros), so the result is deterministic, independent of the launch, and
//       bitwise the reference's. Consecutive threads take consecutive x, so the writes are coalesced.
//       For each a the thread solves y + pad_top - a * dh = i * sh for i (a division, no search over
//       the output rows), and likewise for b.

template <typename T>
__device__ __forceinline__ void im2col(T* __restrict__ cols, const T* __restrict__ x, int N, int C, int H, int W,
                                       int kh, int kw, int sh, int sw, int pad_top, int pad_left, int dh, int dw,
                                       int Ho, int Wo) {
    const long long pixels = (long long)Ho * Wo, rows = (long long)C * kh * kw;
    const long long total = (long long)N * rows * pixels;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long p = t % pixels, nr = t / pixels;  // nr = n * rows + (c * kh + a) * kw + b
        const int j = (int)(p % Wo), i = (int)(p / Wo);
        const int b = (int)(nr % kw), a = (int)((nr / kw) % kh);
        const long long nc = nr / ((long long)kh * kw);  // n * C + c
        const int y = i * sh - pad_top + a * dh, xx = j * sw - pad_left + b * dw;
        cols[t] = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[(nc * H + y) * W + xx] : T(0);
    }
}

template <typename T>
__device__ __forceinline__ void col2im(T* __restrict__ dx, const T* __restrict__ dcols, int N, int C, int H, int W,
                                       int kh, int kw, int sh, int sw, int pad_top, int pad_left, int dh, int dw,
                                       int Ho, int Wo) {
    const long long pixels = (long long)Ho * Wo;
    const long long total = (long long)N * C * H * W;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int xx = (int)(t % W), y = (int)((t / W) % H);
        const long long nc = t / ((long long)H * W);  // n * C + c: its kh * kw rows of dcols start here
        const T* col = dcols + nc * kh * kw * pixels;
        T acc = T(0);
        for (int a = 0; a < kh; ++a) {
            const int yi = y + pad_top - a * dh;  // = i * sh for the output row i that read (y, a), if any
            if (yi < 0) break;                    // decreasing in a
            if (yi % sh != 0 || yi / sh >= Ho) continue;
            const int i = yi / sh;
            for (int b = 0; b < kw; ++b) {
                const int xj = xx + pad_left - b * dw;
                if (xj < 0) break;
                if (xj % sw != 0 || xj / sw >= Wo) continue;
                acc += col[((long long)a * kw + b) * pixels + (long long)i * Wo + xj / sw];
            }
        }
        dx[t] = acc;
    }
}

// ---- extern "C" entry points (unmangled names for RawModule.get_function) ---------------------------

#define MG_CONV_ENTRIES(T, SUF)                                                                                \
    extern "C" __global__ void im2col_##SUF(T* __restrict__ cols, const T* __restrict__ x, int N, int C, int H, \
                                            int W, int kh, int kw, int sh, int sw, int pad_top, int pad_left, \
                                            int dh, int dw, int Ho, int Wo) {                                 \
        im2col<T>(cols, x, N, C, H, W, kh, kw, sh, sw, pad_top, pad_left, dh, dw, Ho, Wo);                     \
    }                                                                                                          \
    extern "C" __global__ void col2im_##SUF(T* __restrict__ dx, const T* __restrict__ dcols, int N, int C,     \
                                            int H, int W, int kh, int kw, int sh, int sw, int pad_top,        \
                                            int pad_left, int dh, int dw, int Ho, int Wo) {                   \
        col2im<T>(dx, dcols, N, C, H, W, kh, kw, sh, sw, pad_top, pad_left, dh, dw, Ho, Wo);                   \
    }

MG_CONV_ENTRIES(float, f32)
MG_CONV_ENTRIES(double, f64)
