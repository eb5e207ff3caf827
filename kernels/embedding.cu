// embedding.cu: embedding lookup and its deterministic backward, float32 and float64. Oracle:
// numpy_ref.embedding_forward / embedding_backward.
//
// Entry points (T = f32 | f64; weight/dweight (V, D), out/dout (n, D) contiguous; indices int64 (n,) in
// [0, V), the flattened index array):
//   embedding_forward_T(T* out, const T* weight, const long long* indices, long long n, int D)
//       out[i, :] = weight[indices[i], :]
//       Decomposition: grid-stride over rows i (blockIdx.y + k*gridDim.y) and columns
//       (blockIdx.x * blockDim.x + threadIdx.x + k*gridDim.x*blockDim.x): a warp copies 32 consecutive
//       floats of one row (coalesced). block = (B) threads, any B; grid = (ceil(D / B), min(n, 65535)).
//   embedding_backward_T(T* dweight, const T* dout, const long long* indices, long long n, int V, int D,
//                        long long padding_idx, int accumulate)
//       dweight[v, :] = sum of dout[i, :] over the i with indices[i] == v, in increasing i; the row
//       padding_idx stays 0 (padding_idx = -1: none). Writes every element of dweight (no zeroing needed).
//       accumulate = 1 (index_add_ of a row gather; padding_idx -1): the sum starts from dweight's own
//       value instead of 0, so dweight[v, :] = ((dweight[v, :] + dout[i1, :]) + dout[i2, :]) + ...: the
//       additions of np.add.at(dweight, indices, dout), in its order.
//       Deterministic without atomics and without sorting ("owner computes"): block (bx, by) owns the 32
//       vocabulary rows 32*bx .. 32*bx+31 (EMB_ROWS) and the columns by*B .. by*B+B-1; thread t owns
//       column by*B + t and keeps its 32 accumulators in shared memory (acc[32][B], only ever touched by
//       thread t: shared memory is just addressable register space here). The block walks the whole
//       index array in chunks of B: the B indices of a chunk are loaded into shared memory cooperatively
//       (coalesced), __syncthreads, then every thread scans the chunk in order and, for an index inside
//       the block's rows, adds the matching dout element (the branch is uniform across the block: no
//       divergence). Each dweight element is therefore a sequential sum in increasing i: the order of
//       np.add.at, bitwise the same result as numpy_ref in float32, independent of the launch.
//       block = (B) threads, B <= 128 (EMB_MAX_COLS); grid = (ceil(V / 32), ceil(D / B)) (grid-stride in
//       both, so any grid works). Cost: every block reads all n indices (from L2: n * 8 bytes), so
//       ceil(V / 32) * ceil(D / B) * n index reads in all, fine for the batch sizes of training
//       (n ~ 1e4, V ~ 5e4); a sort-based two-pass method would scale better for much larger n.

#define EMB_ROWS 32
#define EMB_MAX_COLS 128

template <typename T>
__device__ __forceinline__ void embedding_forward(T* __restrict__ out, const T* __restrict__ weight,
                                                  const long long* __restrict__ indices, long long n, int D) {
    for (long long i = blockIdx.y; i < n; i += gridDim.y) {
        const T* src = weight + indices[i] * D;
        T* dst = out + i * D;
        for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < D;
             c += (long long)gridDim.x * blockDim.x)
            dst[c] = src[c];
    }
}

template <typename T>
__device__ __forceinline__ void embedding_backward(T* __restrict__ dweight, const T* __restrict__ dout,
                                                   const long long* __restrict__ indices, long long n, int V,
                                                   int D, long long padding_idx, int accumulate) {
    __shared__ T acc[EMB_ROWS][EMB_MAX_COLS];
    __shared__ long long chunk_idx[EMB_MAX_COLS];
    const int t = threadIdx.x, B = blockDim.x;
    if (B > EMB_MAX_COLS) return;  // a launch error of the caller; uniform, so no barrier is left waiting
    // all loops below are uniform across the block: every thread reaches every __syncthreads
    for (long long v0 = (long long)blockIdx.x * EMB_ROWS; v0 < V; v0 += (long long)gridDim.x * EMB_ROWS) {
        for (long long c0 = (long long)blockIdx.y * B; c0 < D; c0 += (long long)gridDim.y * B) {
            const long long col = c0 + t;
            for (int r = 0; r < EMB_ROWS; ++r)
                acc[r][t] = (accumulate && col < D && v0 + r < V) ? dweight[(v0 + r) * D + col] : T(0);
            for (long long base = 0; base < n; base += B) {
                chunk_idx[t] = base + t < n ? indices[base + t] : -1;
                __syncthreads();
                const int count = n - base < B ? (int)(n - base) : B;
                if (col < D) {
                    for (int k = 0; k < count; ++k) {
                        const long long r = chunk_idx[k] - v0;
                        if (r >= 0 && r < EMB_ROWS) acc[r][t] += dout[(base + k) * D + col];
                    }
                }
                __syncthreads();  // before the next chunk overwrites chunk_idx
            }
            if (col < D) {
                for (int r = 0; r < EMB_ROWS && v0 + r < V; ++r)
                    dweight[(v0 + r) * D + col] = (v0 + r == padding_idx) ? T(0) : acc[r][t];
            }
        }
    }
}

#define MG_EMBEDDING_ENTRIES(T, SUF)                                                                         \
    extern "C" __global__ void embedding_forward_##SUF(T* __restrict__ out, const T* __restrict__ weight,  \
                                                       const long long* __restrict__ indices, long long n, \
                                                       int D) {                                            \
        embedding_forward<T>(out, weight, indices, n, D);                                                  \
    }                                                                                                      \
    extern "C" __global__ void embedding_backward_##SUF(T* __restrict__ dweight, const T* __restrict__ dout,\
                                                        const long long* __restrict__ indices, long long n,\
                                                        int V, int D, long long padding_idx,               \
                                                        int accumulate) {                                  \
        embedding_backward<T>(dweight, dout, indices, n, V, D, padding_idx, accumulate);                   \
    }

MG_EMBEDDING_ENTRIES(float, f32)
MG_EMBEDDING_ENTRIES(double, f64)
