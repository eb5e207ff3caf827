// gemm.cu: batched, strided GEMM, C = alpha * A·B + beta * C, float32 and float64. Loaded with NVRTC
// (CuPy RawModule); no host code. The oracle is minigrad.backend.numpy_ref.matmul (numpy.matmul):
// operands are strided views, so the transposed operands of a backward pass (dA = dC·Bᵀ, dB = Aᵀ·dC)
// are the same call with swapped strides, and a batch dimension of stride 0 is a broadcast operand.
//
// Entry point (T = f32 | f64):
//   gemm_T(T* C, const T* A, const T* B, int M, int N, int K, int batch,
//          long long sa_m, long long sa_k, long long sb_k, long long sb_n, long long sc_m, long long sc_n,
//          long long sa_batch, long long sb_batch, long long sc_batch, T alpha, T beta)
//       For every batch index z < batch, every m < M, n < N:
//         C[z*sc_batch + m*sc_m + n*sc_n] = alpha * sum_k A[z*sa_batch + m*sa_m + k*sa_k]
//                                                       * B[z*sb_batch + k*sb_k + n*sb_n]
//                                           + beta * C[...]
//       All strides are in elements (numpy's byte strides / itemsize) and may be anything, 0 included
//       (sa_batch = 0 or sb_batch = 0 broadcasts that operand over the batch; sc_batch must not be 0 with
//       batch > 1, since the batch elements would then race on C). beta == 0: C is only written, never
//       read (it may hold nan, as numpy's empty); K == 0 gives alpha * 0 + beta * C. M, N, K, batch >= 0.
//   Launch: block = (256) threads, exactly (the 16 x 16 thread grid of a tile below). grid = (ceil(N / 64), ceil(M / 64), batch) for one tile per block; any
//       smaller grid also works (grid-stride loops over the tiles and the batch; gridDim.y and gridDim.z
//       are limited to 65535, so clamp them).
//
// Decomposition: the output of each batch element is cut into BM x BN = 64 x 64 tiles, one block per
// tile (blockIdx.x: the tile column, blockIdx.y: the tile row, blockIdx.z: the batch element, each with
// a grid-stride loop). The block walks K in steps of BK = 16: it copies the 64 x 16 slab of A and the
// 16 x 64 slab of B into shared memory (1024 elements each, 4 per thread; out-of-range elements, past
// M, N or K, are written as 0, so the inner loop needs no bounds checks and any M, N, K works), one
// __syncthreads, then every thread accumulates a TM x TN = 4 x 4 micro-tile in registers from them:
// per k, 4 values of A and 4 of B from shared memory feed 16 FMAs (register blocking: 8 shared loads per
// 16 FMAs instead of 2 per 1 for one output per thread), and a second __syncthreads before the slabs
// are overwritten. The 16 x 16 threads (tx = t % 16, ty = t / 16) own rows ty + 16 i and columns
// tx + 16 j (i, j < 4) of the tile: strided rather than 4 adjacent columns, so that the 16 lanes with
// the same ty read 16 consecutive shared-memory words of B (no bank conflicts; the A value is a
// broadcast) and write 16 consecutive columns of C (coalesced when sc_n == 1).
//
// Why these sizes: 64 x 64 x 16 with 4 x 4 per thread is the classic balance for a kernel without
// tensor cores that must also be correct and reasonable for small and odd shapes: 2 x 64 x 17 elements
// of shared memory (8.5 KiB in float32, 17 KiB in float64) leave room for several blocks per SM, 16
// float32 (or float64) accumulators keep the register count moderate in float64, and each slab element
// loaded from global memory is reused 64 times. Larger tiles (128 x 128, 8 x 8 per thread) go faster on
// big float32 problems but waste more of a block on the small and ragged matrices of minigrad's models.
//
// Loads: a slab is stored k-major, S[k][i] (i the row of A or the column of B within the tile), with one
// padding word per row (S[BK][64 + 1]). Which index the 256 threads walk fastest when they copy it is
// chosen at run time from the strides: along k when that stride is 1 (A row-major, or B given as a
// transposed row-major matrix: A·Bᵀ), along i otherwise (B row-major, or Aᵀ), so that consecutive
// threads read consecutive addresses for all four transpose combinations; the padding makes the k-fast
// stores (consecutive threads, consecutive k: words 65 apart) hit distinct banks. A and B share the same
// loader (B's slab is the 64 x 16 "tile" of Bᵀ).
//
// Summation: each output is a sum over k in increasing order in one thread (fused multiply-adds where the
// compiler contracts them): deterministic, and independent of the launch configuration.

#define MG_GEMM_BM 64       // tile rows (of C and A)
#define MG_GEMM_BN 64       // tile columns (of C and B); the loader below assumes BM == BN
#define MG_GEMM_BK 16       // depth of a slab
#define MG_GEMM_TM 4        // micro-tile rows per thread
#define MG_GEMM_TN 4        // micro-tile columns per thread
#define MG_GEMM_THREADS 256 // (BM / TM) * (BN / TN)

// Copy the 64 x BK slab of a matrix X (rows: the 64 tile rows from `first`, of `rows` in all; columns:
// k0 .. k0 + BK - 1, of K) into S[k][row], zero past the ends. s_row / s_k: X's element strides.
template <typename T>
__device__ __forceinline__ void gemm_load_slab(T (*S)[MG_GEMM_BM + 1], const T* __restrict__ X, long long s_row,
                                               long long s_k, int first, int rows, int k0, int K) {
    const bool k_fast = (s_k == 1);  // uniform across the block: consecutive threads, consecutive addresses
#pragma unroll
    for (int r = 0; r < (MG_GEMM_BM * MG_GEMM_BK) / MG_GEMM_THREADS; ++r) {
        const int e = threadIdx.x + r * MG_GEMM_THREADS;
        const int kk = k_fast ? e % MG_GEMM_BK : e / MG_GEMM_BM;
        const int ii = k_fast ? e / MG_GEMM_BK : e % MG_GEMM_BM;
        const int row = first + ii, k = k0 + kk;
        S[kk][ii] = (row < rows && k < K) ? X[row * s_row + k * s_k] : T(0);
    }
}

template <typename T>
__device__ __forceinline__ void gemm(T* __restrict__ C, const T* __restrict__ A, const T* __restrict__ B, int M,
                                     int N, int K, int batch, long long sa_m, long long sa_k, long long sb_k,
                                     long long sb_n, long long sc_m, long long sc_n, long long sa_batch,
                                     long long sb_batch, long long sc_batch, T alpha, T beta) {
    __shared__ T As[MG_GEMM_BK][MG_GEMM_BM + 1];
    __shared__ T Bs[MG_GEMM_BK][MG_GEMM_BN + 1];
    const int tx = threadIdx.x % (MG_GEMM_BN / MG_GEMM_TN), ty = threadIdx.x / (MG_GEMM_BN / MG_GEMM_TN);
    const int tiles_m = (M + MG_GEMM_BM - 1) / MG_GEMM_BM, tiles_n = (N + MG_GEMM_BN - 1) / MG_GEMM_BN;
    // every loop bound below is uniform across the block, so every thread reaches every __syncthreads
    for (int z = blockIdx.z; z < batch; z += gridDim.z) {
        const T* Az = A + z * sa_batch;
        const T* Bz = B + z * sb_batch;
        T* Cz = C + z * sc_batch;
        for (int tm = blockIdx.y; tm < tiles_m; tm += gridDim.y) {
            for (int tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
                const int m0 = tm * MG_GEMM_BM, n0 = tn * MG_GEMM_BN;
                T acc[MG_GEMM_TM][MG_GEMM_TN];
#pragma unroll
                for (int i = 0; i < MG_GEMM_TM; ++i)
#pragma unroll
                    for (int j = 0; j < MG_GEMM_TN; ++j) acc[i][j] = T(0);
                for (int k0 = 0; k0 < K; k0 += MG_GEMM_BK) {
                    gemm_load_slab<T>(As, Az, sa_m, sa_k, m0, M, k0, K);
                    gemm_load_slab<T>(Bs, Bz, sb_n, sb_k, n0, N, k0, K);
                    __syncthreads();
#pragma unroll
                    for (int kk = 0; kk < MG_GEMM_BK; ++kk) {
                        T a[MG_GEMM_TM], b[MG_GEMM_TN];
#pragma unroll
                        for (int i = 0; i < MG_GEMM_TM; ++i) a[i] = As[kk][ty + i * (MG_GEMM_BM / MG_GEMM_TM)];
#pragma unroll
                        for (int j = 0; j < MG_GEMM_TN; ++j) b[j] = Bs[kk][tx + j * (MG_GEMM_BN / MG_GEMM_TN)];
#pragma unroll
                        for (int i = 0; i < MG_GEMM_TM; ++i)
#pragma unroll
                            for (int j = 0; j < MG_GEMM_TN; ++j) acc[i][j] += a[i] * b[j];
                    }
                    __syncthreads();  // the slabs are overwritten by the next step (or the next tile)
                }
#pragma unroll
                for (int i = 0; i < MG_GEMM_TM; ++i) {
                    const int m = m0 + ty + i * (MG_GEMM_BM / MG_GEMM_TM);
                    if (m >= M) continue;
#pragma unroll
                    for (int j = 0; j < MG_GEMM_TN; ++j) {
                        const int n = n0 + tx + j * (MG_GEMM_BN / MG_GEMM_TN);
                        if (n >= N) continue;
                        T* c = Cz + m * sc_m + n * sc_n;
                        *c = (beta == T(0)) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
                    }
                }
            }
        }
    }
}

// ---- extern "C" entry points (unmangled names for RawModule.get_function) ---------------------------

#define MG_GEMM_ENTRIES(T, SUF)                                                                                \
    extern "C" __global__ void gemm_##SUF(T* __restrict__ C, const T* __restrict__ A, const T* __restrict__ B, \
                                          int M, int N, int K, int batch, long long sa_m, long long sa_k,      \
                                          long long sb_k, long long sb_n, long long sc_m, long long sc_n,      \
                                          long long sa_batch, long long sb_batch, long long sc_batch, T alpha, \
                                          T beta) {                                                            \
        gemm<T>(C, A, B, M, N, K, batch, sa_m, sa_k, sb_k, sb_n, sc_m, sc_n, sa_batch, sb_batch, sc_batch,     \
                alpha, beta);                                                                                  \
    }

MG_GEMM_ENTRIES(float, f32)
MG_GEMM_ENTRIES(double, f64)
