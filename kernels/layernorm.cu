// layernorm.cu: LayerNorm over the last dimension of a contiguous (rows, D) array, float32 and float64.
// Oracle: minigrad.backend.numpy_ref.layer_norm_forward / layer_norm_backward. No float atomics: every
// result is computed in a fixed order, so runs are bitwise reproducible.
//
// Entry points (T = f32 | f64; weight and bias may be null, meaning 1 and 0):
//   layernorm_forward_T(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias,
//                       long long rows, int D, T eps)
//       out = (x - mean) * rstd * weight + bias, mean (rows,), rstd = 1 / sqrt(var + eps) (rows,),
//       var the biased variance, computed from the centered values (two passes over the row).
//   layernorm_backward_dx_T(T* dx, const T* dout, const T* x, const T* weight, const T* mean,
//                           const T* rstd, long long rows, int D)
//       dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight, xhat = (x - mean) * rstd
//   layernorm_backward_dparams_partial_T(T* part_dweight, T* part_dbias, const T* dout, const T* x,
//                                        const T* mean, const T* rstd, long long rows, int D,
//                                        long long rows_per_chunk)
//   layernorm_backward_dparams_finalize_T(T* dweight, T* dbias, const T* part_dweight,
//                                         const T* part_dbias, long long nchunks, int D)
//       dweight = sum over rows of dout * xhat, dbias = sum over rows of dout, in two deterministic
//       passes: partial sums per chunk of rows_per_chunk rows into (nchunks, D) scratch arrays
//       (nchunks = ceil(rows / rows_per_chunk)), then a sum over the chunks. dweight may be null in the
//       finalize kernel (no weight: only dbias is wanted).
//
// Parallel decomposition:
//   forward, backward_dx: one warp per row (as llm.c's layernorm kernels): block = (32 * W) threads, W in
//       1..32, any grid (grid-stride: warp w of block b takes rows b*W + w, then + gridDim.x*W, ...).
//       Lane l reads elements l, l+32, ... (coalesced); row sums are __shfl_xor_sync butterflies, so all
//       lanes get them without shared memory or __syncthreads. The row is read two (forward: three)
//       times; after the first read it is in L1/L2 for the D of transformer models.
//   dparams_partial: block = (32, BY) threads, BY in 1..32; grid = (ceil(D / 32), nchunks) (any grid:
//       both are grid-stride). Block (bx, by) owns columns 32*bx .. 32*bx+31 of chunk by; thread (tx, ty)
//       accumulates column 32*bx + tx over the chunk's rows ty, ty + BY, ... (so a warp reads 32
//       consecutive floats of one row: coalesced). The BY partial sums of a column meet in shared
//       memory ([32][33], padded against bank conflicts) and thread ty = 0 adds them in order.
//   dparams_finalize: one thread per column (grid-stride), summing the nchunks partials in order.
//   rows_per_chunk trades parallelism for scratch: e.g. rows_per_chunk = max(BY, ceil(rows / 256))
//   gives at most 256 chunks.

#include "common.cuh"  // Real<T>, warp_sum

template <typename T>
__device__ __forceinline__ void layernorm_forward(T* __restrict__ out, T* __restrict__ mean, T* __restrict__ rstd,
                                                  const T* __restrict__ x, const T* __restrict__ weight,
                                                  const T* __restrict__ bias, long long rows, int D, T eps) {
    const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    for (long long row = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows;
         row += (long long)gridDim.x * wpb) {
        const T* xr = x + row * D;
        T* yr = out + row * D;
        T sum = T(0);
        for (int j = lane; j < D; j += 32) sum += xr[j];
        const T mu = warp_sum(sum) / T(D);
        T sq = T(0);
        for (int j = lane; j < D; j += 32) {
            const T c = xr[j] - mu;
            sq += c * c;
        }
        const T r = T(1) / Real<T>::sqrt_(warp_sum(sq) / T(D) + eps);  // not rsqrt: IEEE-rounded, as numpy
        for (int j = lane; j < D; j += 32) {
            T v = (xr[j] - mu) * r;
            if (weight) v = v * weight[j];
            if (bias) v = v + bias[j];
            yr[j] = v;
        }
        if (lane == 0) {
            mean[row] = mu;
            rstd[row] = r;
        }
    }
}

template <typename T>
__device__ __forceinline__ void layernorm_backward_dx(T* __restrict__ dx, const T* __restrict__ dout,
                                                      const T* __restrict__ x, const T* __restrict__ weight,
                                                      const T* __restrict__ mean, const T* __restrict__ rstd,
                                                      long long rows, int D) {
    const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    for (long long row = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows;
         row += (long long)gridDim.x * wpb) {
        const long long o = row * D;
        const T mu = mean[row], r = rstd[row];
        T sg = T(0), sgx = T(0);
        for (int j = lane; j < D; j += 32) {
            const T g = weight ? dout[o + j] * weight[j] : dout[o + j];
            sg += g;
            sgx += g * ((x[o + j] - mu) * r);
        }
        const T mg = warp_sum(sg) / T(D), mgx = warp_sum(sgx) / T(D);
        for (int j = lane; j < D; j += 32) {
            const T g = weight ? dout[o + j] * weight[j] : dout[o + j];
            const T xhat = (x[o + j] - mu) * r;
            dx[o + j] = r * ((g - mg) - xhat * mgx);
        }
    }
}

template <typename T>
__device__ __forceinline__ void layernorm_backward_dparams_partial(T* __restrict__ part_dw, T* __restrict__ part_db,
                                                                   const T* __restrict__ dout,
                                                                   const T* __restrict__ x,
                                                                   const T* __restrict__ mean,
                                                                   const T* __restrict__ rstd, long long rows,
                                                                   int D, long long rows_per_chunk) {
    __shared__ T sdw[32][33];
    __shared__ T sdb[32][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long nchunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
    // the loops are uniform across the block: every thread reaches every __syncthreads
    for (long long chunk = blockIdx.y; chunk < nchunks; chunk += gridDim.y) {
        const long long r0 = chunk * rows_per_chunk;
        const long long r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
        for (long long c0 = (long long)blockIdx.x * 32; c0 < D; c0 += (long long)gridDim.x * 32) {
            const long long col = c0 + tx;
            T dw = T(0), db = T(0);
            if (col < D) {
                for (long long r = r0 + ty; r < r1; r += blockDim.y) {
                    const T g = dout[r * D + col];
                    dw += g * ((x[r * D + col] - mean[r]) * rstd[r]);
                    db += g;
                }
            }
            sdw[ty][tx] = dw;
            sdb[ty][tx] = db;
            __syncthreads();
            if (ty == 0 && col < D) {
                for (int k = 1; k < (int)blockDim.y; ++k) {
                    dw += sdw[k][tx];
                    db += sdb[k][tx];
                }
                part_dw[chunk * D + col] = dw;
                part_db[chunk * D + col] = db;
            }
            __syncthreads();  // before the next tile overwrites sdw/sdb
        }
    }
}

template <typename T>
__device__ __forceinline__ void layernorm_backward_dparams_finalize(T* __restrict__ dweight, T* __restrict__ dbias,
                                                                    const T* __restrict__ part_dw,
                                                                    const T* __restrict__ part_db,
                                                                    long long nchunks, int D) {
    for (long long col = (long long)blockIdx.x * blockDim.x + threadIdx.x; col < D;
         col += (long long)gridDim.x * blockDim.x) {
        T dw = T(0), db = T(0);
        for (long long c = 0; c < nchunks; ++c) {
            dw += part_dw[c * D + col];
            db += part_db[c * D + col];
        }
        if (dweight) dweight[col] = dw;
        dbias[col] = db;
    }
}

#define MG_LAYERNORM_ENTRIES(T, SUF)                                                                         \
    extern "C" __global__ void layernorm_forward_##SUF(T* __restrict__ out, T* __restrict__ mean,           \
                                                       T* __restrict__ rstd, const T* __restrict__ x,      \
                                                       const T* __restrict__ weight,                       \
                                                       const T* __restrict__ bias, long long rows, int D,  \
                                                       T eps) {                                            \
        layernorm_forward<T>(out, mean, rstd, x, weight, bias, rows, D, eps);                              \
    }                                                                                                      \
    extern "C" __global__ void layernorm_backward_dx_##SUF(T* __restrict__ dx, const T* __restrict__ dout, \
                                                           const T* __restrict__ x,                        \
                                                           const T* __restrict__ weight,                   \
                                                           const T* __restrict__ mean,                     \
                                                           const T* __restrict__ rstd, long long rows,     \
                                                           int D) {                                        \
        layernorm_backward_dx<T>(dx, dout, x, weight, mean, rstd, rows, D);                                \
    }                                                                                                      \
    extern "C" __global__ void layernorm_backward_dparams_partial_##SUF(                                    \
        T* __restrict__ part_dw, T* __restrict__ part_db, const T* __restrict__ dout,                      \
        const T* __restrict__ x, const T* __restrict__ mean, const T* __restrict__ rstd, long long rows,   \
        int D, long long rows_per_chunk) {                                                                 \
        layernorm_backward_dparams_partial<T>(part_dw, part_db, dout, x, mean, rstd, rows, D,              \
                                              rows_per_chunk);                                             \
    }                                                                                                      \
    extern "C" __global__ void layernorm_backward_dparams_finalize_##SUF(                                   \
        T* __restrict__ dweight, T* __restrict__ dbias, const T* __restrict__ part_dw,                     \
        const T* __restrict__ part_db, long long nchunks, int D) {                                         \
        layernorm_backward_dparams_finalize<T>(dweight, dbias, part_dw, part_db, nchunks, D);              \
    }

MG_LAYERNORM_ENTRIES(float, f32)
MG_LAYERNORM_ENTRIES(double, f64)
