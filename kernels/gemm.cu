// gemm.cu: batched, strided GEMM, C = alpha * A·B + beta * C, float32 and float64. Loaded with NVRTC
// (CuPy RawModule); no host code. The oracle is minigrad.backend.numpy_ref.matmul (numpy.matmul):
// operands are strided views, so the transposed operands of a backward pass (dA = dC·Bᵀ, dB = Aᵀ·dC)
// are the same call with swapped strides, and a batch dimension of stride 0 is a broadcast operand.
//
// Entry points (T = f32 | f64), two tile sizes of one kernel with the same arguments and results:
//   gemm_T    (64 x 64 tiles: small and ragged problems)
//   gemm128_T (128 x 128 tiles: large problems)
//   (T* C, const T* A, const T* B, int M, int N, int K, int batch,
//    long long sa_m, long long sa_k, long long sb_k, long long sb_n, long long sc_m, long long sc_n,
//    long long sa_batch, long long sb_batch, long long sc_batch, T alpha, T beta)
//       For every batch index z < batch, every m < M, n < N:
//         C[z*sc_batch + m*sc_m + n*sc_n] = alpha * sum_k A[z*sa_batch + m*sa_m + k*sa_k]
//                                                       * B[z*sb_batch + k*sb_k + n*sb_n]
//                                           + beta * C[...]
//       All strides are in elements (numpy's byte strides / itemsize) and may be anything, 0 included
//       (sa_batch = 0 or sb_batch = 0 broadcasts that operand over the batch; sc_batch must not be 0 with
//       batch > 1, since the batch elements would then race on C). beta == 0: C is only written, never
//       read (it may hold nan, as numpy's empty); K == 0 gives alpha * 0 + beta * C. M, N, K, batch >= 0.
//   Launch: block = (256) threads, exactly (the 16 x 16 thread grid of a tile below). grid =
//       (ceil(N / BN), ceil(M / BM), batch) for one tile per block, BM = BN = 64 for gemm_T and 128 for
//       gemm128_T; any smaller grid also works (grid-stride loops over the tiles and the batch; gridDim.y
//       and gridDim.z are limited to 65535, so clamp them). Which one to launch is the caller's choice
//       (minigrad/backend/cuda.py's _gemm picks by problem size, see there): both compute every output
//       with the same sequence of operations, so they give the same bits.
//
// Decomposition (the classic register-blocked SGEMM; the two sizes differ only in the constants):
//   * Block tile. The output of each batch element is cut into BM x BN tiles, one block per tile
//     (blockIdx.x: the tile column, blockIdx.y: the tile row, blockIdx.z: the batch element, each with a
//     grid-stride loop). The block walks K in slabs of BK: the BM x BK slab of A and the BK x BN slab of B
//     go to shared memory, where every element is reused by BN (or BM) outputs.
//   * Micro-tile. The 256 threads form a 16 x 16 grid (tx = t % 16, ty = t / 16); each accumulates a
//     TM x TN micro-tile in registers (4 x 4 for 64 x 64, 8 x 8 for 128 x 128), made of R x R groups of
//     4 x 4 (R = BM / 64): rows g * 64 + 4 ty + i and columns h * 64 + 4 tx + j (g, h < R; i, j < 4). Per k
//     a thread reads TM values of A and TN of B from shared memory, 4 consecutive at a time (one 128-bit
//     read in float32), and does TM * TN fused multiply-adds: register blocking, (TM + TN) shared reads
//     for TM * TN FMAs instead of 2 per 1. The 16 lanes of a half-warp (same ty) read 16 consecutive
//     groups of 4 words of B (256 bytes, no bank conflicts) and one group of A (a broadcast), and write 16
//     consecutive groups of 4 columns of C.
//   * Shared layout. A slab is stored k-major, S[k][i] (i the row of A or the column of B within the
//     tile), so that the 4 consecutive rows of A a thread needs at one k are adjacent, like those of B; A
//     and B share the same loader (B's slab is the BN x BK "tile" of Bᵀ). Each row is padded by 4
//     elements (S[BK][BM + 4]): a multiple of 16 bytes, so the 128-bit reads stay aligned, and it spreads
//     the scattered stores of the k-fast loader below over the banks (conflict-free for 128 x 8; 2-way
//     for 64 x 16).
//   * Loads. Each thread copies one chunk of 4 consecutive elements of each slab per step (64 x 16 and
//     128 x 8 slabs both have 1024 = 256 x 4 elements), along the operand's unit-stride direction,
//     chosen at run time from the strides: along k when sa_k (sb_k) == 1 (A row-major, or B given as a
//     transposed row-major matrix: A·Bᵀ), along i otherwise (B row-major, or Aᵀ), so that a warp reads
//     whole 32-byte sectors for all four transpose combinations. The chunk is read with 128-bit loads
//     (one in float32, two in float64) when the operand allows it for every chunk of every tile and
//     batch element: the chunk direction has stride 1, the other two strides (row or k, and batch) are
//     multiples of 16 bytes, the base pointer is 16-byte aligned, and (per chunk) all 4 elements are in
//     range. Otherwise (a misaligned view, an odd leading dimension, a strided or broadcast direction,
//     the ragged edge of the matrix) it reads the 4 elements one by one, 0 past M, N or K, so the inner
//     loop needs no bounds checks and any M, N, K works.
//   * Double buffering. There are two copies of each slab in shared memory. While the threads compute
//     from slab s, their loads of slab s + 1 from global memory are already in flight (issued into
//     registers before the FMAs, stored into the other copy after them), so the memory latency hides
//     behind the arithmetic; one __syncthreads per slab then both publishes slab s + 1 and retires slab s
//     (nobody reads slab s's copy again before it is overwritten with slab s + 2, one barrier later).
//   * Stores. C is written with 128-bit stores (and, for beta != 0, read with 128-bit loads) under the
//     same conditions as the loads (sc_n == 1, sc_m and sc_batch multiples of 16 bytes, C 16-byte
//     aligned, the 4 columns in range), one element at a time otherwise.
//
// Why these sizes: 128 x 128 x 8 with 8 x 8 per thread is the classic balance of a float32 GEMM without
// tensor cores for large problems: 64 FMAs per 4 128-bit shared reads, every element loaded from global
// memory used 128 times, 2 x 2 x 8 x 132 elements of shared memory (16.5 KiB float32, 33 KiB float64),
// 64 accumulators per thread (128 registers in float64, still under the 255 limit). 64 x 64 x 16 with 4 x 4
// wastes less of a block on the small and ragged matrices of minigrad's models and makes 4 times more
// blocks, which keeps every SM busy on problems that have too few 128 x 128 tiles.
//
// Summation: each output is a sum over k in increasing order in one thread, acc = acc + a * b (fused
// multiply-adds where the compiler contracts them), whatever the tile size: deterministic, and
// independent of the launch configuration and of the entry point.
//
// GEMM_TUNING (what the sizes should give on an H100 SXM: 132 SMs, 4 x 32 float32 FMA lanes and one
// shared-memory wavefront of 128 bytes per SM and clock; derived from the sizes, nothing here is measured):
//   * Shared memory per FMA. Per k, a warp of the 128 x 128 kernel issues 64 FMA instructions and 4
//     128-bit shared reads: 2 of A (2 distinct addresses: 1 wavefront each) and 2 of B (256 distinct
//     bytes: 2 wavefronts each), 6 wavefronts, i.e. 2 x 64 flops per 64 bytes read per thread. The SM
//     retires 4 FMA instructions per clock, so shared memory is busy ~6 / 64 x 4 = 38% of the FMA time;
//     for 64 x 64 (16 FMAs per 3 wavefronts) it is ~75%, before the slab stores and barriers: the large
//     tile leaves the FMA pipes as the limit, the small one is close to shared-memory bound.
//   * Global (L2) traffic. (BM + BN) BK elements per 2 BM BN BK flops: 32 flops per byte in float32 for
//     128 x 128 x 8, 16 for 64 x 64 x 16; at the 67 TFLOPS float32 peak, 2.1 and 4.2 TB/s, served mostly
//     by L2 (neighbouring blocks read the same slabs), more than HBM's 3.35 TB/s for the small tile.
//   * Occupancy. float32 128 x 128: 128 registers x 256 threads = 2 blocks, 16 warps per SM (a block's 64
//     independent accumulator chains and its prefetched slab hide the latencies); float32 64 x 64: 64
//     registers, 4 blocks; float64: half of each. A problem with fewer 128 x 128 tiles than SMs leaves SMs
//     idle with the large tile, hence the wrapper's choice of the small one there (a single 1024 x 1024:
//     64 tiles of 128 x 128, 256 of 64 x 64).

#define MG_GEMM_GROUP 64      // rows (columns) covered by one 4 x 4 group of the 16 x 16 threads
#define MG_GEMM_THREADS 256   // 16 x 16
#define MG_GEMM_PAD 4         // padding elements per shared row (16 bytes in float32)

// 16 bytes of T (4 floats, 2 doubles), 16-byte aligned: one 128-bit memory access.
template <typename T> struct alignas(16) GemmVec {
    static constexpr int N = 16 / sizeof(T);
    T v[N];
};

// 4 consecutive elements at p, 16-byte aligned, through 128-bit accesses.
template <typename T> __device__ __forceinline__ void gemm_load4(T* r, const T* p) {
#pragma unroll
    for (int q = 0; q < 4; q += GemmVec<T>::N) {
        const GemmVec<T> w = *reinterpret_cast<const GemmVec<T>*>(p + q);
#pragma unroll
        for (int j = 0; j < GemmVec<T>::N; ++j) r[q + j] = w.v[j];
    }
}
template <typename T> __device__ __forceinline__ void gemm_store4(T* p, const T* r) {
#pragma unroll
    for (int q = 0; q < 4; q += GemmVec<T>::N) {
        GemmVec<T> w;
#pragma unroll
        for (int j = 0; j < GemmVec<T>::N; ++j) w.v[j] = r[q + j];
        *reinterpret_cast<GemmVec<T>*>(p + q) = w;
    }
}

// Whether every group of 4 elements along a unit stride, starting at an element index that is a multiple of
// 4 in the other two strides' directions, is 16-byte aligned: the base and both strides are.
template <typename T>
__device__ __forceinline__ bool gemm_vectorizable(const T* base, long long unit, long long s1, long long s2) {
    constexpr int V = GemmVec<T>::N;
    return unit == 1 && s1 % V == 0 && s2 % V == 0 && reinterpret_cast<unsigned long long>(base) % 16 == 0;
}

// The shared memory of one block: two copies (double buffering) of the slabs of A and B, k-major.
template <typename T, int BM, int BK> struct alignas(16) GemmShared {
    T a[2][BK][BM + MG_GEMM_PAD];
    T b[2][BK][BM + MG_GEMM_PAD];
};

// One thread's share of copying the BM x BK slabs of one operand X (rows: the tile rows from `first`, of
// `rows` in all; columns: k0 .. k0 + BK - 1, of K): a chunk of 4 elements along the unit-stride direction,
// fetched into registers, then stored into S[k][row]. s_row / s_k / s_batch: X's element strides.
// begin() gives the thread's chunk of a tile's slab 0; fetch() reads the chunk of slab s and steps on.
template <typename T, int BM, int BK> struct GemmSlabLoader {
    long long s_row, s_k;
    int rows, K;
    bool k_fast;  // the chunk runs along k (else along the rows); uniform across the block
    bool vec;     // 128-bit loads allowed (for chunks wholly in range)
    int ii, kk;   // the chunk's first row and k within the slab

    struct Cursor {
        const T* p;     // the chunk's first element in the current slab
        int rows_left;  // rows from the chunk's first row to the end of X (<= 0: past the end)
        int k_left;     // the same along k, for the current slab
    };

    __device__ __forceinline__ GemmSlabLoader(const T* X, long long s_row_, long long s_k_, long long s_batch,
                                              int rows_, int K_)
        : s_row(s_row_), s_k(s_k_), rows(rows_), K(K_) {
        static_assert(BM * BK == 4 * MG_GEMM_THREADS, "one chunk of 4 per thread and slab");
        k_fast = (s_k == 1);
        vec = k_fast ? gemm_vectorizable(X, s_k, s_row, s_batch) : gemm_vectorizable(X, s_row, s_k, s_batch);
        const int t = threadIdx.x;
        // consecutive threads take consecutive chunks: along k (BK / 4 chunks per row), or along the rows
        ii = k_fast ? t / (BK / 4) : (t % (BM / 4)) * 4;
        kk = k_fast ? (t % (BK / 4)) * 4 : t / (BM / 4);
    }

    __device__ __forceinline__ Cursor begin(const T* Xz, int first) const {
        return {Xz + (first + ii) * s_row + kk * s_k, rows - first - ii, K - kk};
    }

    // the 4 elements of the cursor's chunk, 0 out of range; then the cursor moves to the next slab
    __device__ __forceinline__ void fetch(T* r, Cursor& c) const {
        const int along = k_fast ? c.k_left : c.rows_left, across = k_fast ? c.rows_left : c.k_left;
        if (vec && across > 0 && along >= 4) {
            gemm_load4(r, c.p);
        } else {
            const long long step = k_fast ? s_k : s_row;
#pragma unroll
            for (int j = 0; j < 4; ++j) r[j] = (across > 0 && j < along) ? c.p[j * step] : T(0);
        }
        c.p += BK * s_k;
        c.k_left -= BK;
    }

    __device__ __forceinline__ void store(T (*S)[BM + MG_GEMM_PAD], const T* r) const {
        if (k_fast) {
#pragma unroll
            for (int j = 0; j < 4; ++j) S[kk + j][ii] = r[j];
        } else {
            gemm_store4(&S[kk][ii], r);
        }
    }
};

// The kernel, for BM = BN = 64 R (R = 1: 64 x 64 tiles, BK = 16; R = 2: 128 x 128, BK = 8).
template <typename T, int R, int BK>
__device__ __forceinline__ void gemm(T* __restrict__ C, const T* __restrict__ A, const T* __restrict__ B, int M,
                                     int N, int K, int batch, long long sa_m, long long sa_k, long long sb_k,
                                     long long sb_n, long long sc_m, long long sc_n, long long sa_batch,
                                     long long sb_batch, long long sc_batch, T alpha, T beta) {
    constexpr int BM = MG_GEMM_GROUP * R, TM = 4 * R;  // BN = BM, TN = TM
    __shared__ GemmShared<T, BM, BK> sh;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int tiles_m = (M + BM - 1) / BM, tiles_n = (N + BM - 1) / BM, slabs = (K + BK - 1) / BK;
    const GemmSlabLoader<T, BM, BK> load_a(A, sa_m, sa_k, sa_batch, M, K);
    const GemmSlabLoader<T, BM, BK> load_b(B, sb_n, sb_k, sb_batch, N, K);
    const bool c_vec = gemm_vectorizable(C, sc_n, sc_m, sc_batch);
    // every loop bound below is uniform across the block, so every thread reaches every __syncthreads
    for (int z = blockIdx.z; z < batch; z += gridDim.z) {
        const T* Az = A + z * sa_batch;
        const T* Bz = B + z * sb_batch;
        T* Cz = C + z * sc_batch;
        for (int tm = blockIdx.y; tm < tiles_m; tm += gridDim.y) {
            for (int tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
                const int m0 = tm * BM, n0 = tn * BM;
                T acc[TM][TM];
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TM; ++j) acc[i][j] = T(0);
                T ra[4], rb[4];  // this thread's chunks of the next slabs, on their way to shared memory
                auto ca = load_a.begin(Az, m0);
                auto cb = load_b.begin(Bz, n0);
                if (slabs > 0) {
                    load_a.fetch(ra, ca);
                    load_b.fetch(rb, cb);
                    load_a.store(sh.a[0], ra);
                    load_b.store(sh.b[0], rb);
                }
                __syncthreads();  // slab 0 is in copy 0
                for (int s = 0; s < slabs; ++s) {
                    const int cur = s & 1;
                    const bool more = s + 1 < slabs;
                    if (more) {  // issue the global loads of slab s + 1; they complete during the FMAs below
                        load_a.fetch(ra, ca);
                        load_b.fetch(rb, cb);
                    }
#pragma unroll
                    for (int kk = 0; kk < BK; ++kk) {
                        T a[TM], b[TM];
#pragma unroll
                        for (int g = 0; g < R; ++g) {
                            gemm_load4(a + 4 * g, &sh.a[cur][kk][g * MG_GEMM_GROUP + 4 * ty]);
                            gemm_load4(b + 4 * g, &sh.b[cur][kk][g * MG_GEMM_GROUP + 4 * tx]);
                        }
#pragma unroll
                        for (int i = 0; i < TM; ++i)
#pragma unroll
                            for (int j = 0; j < TM; ++j) acc[i][j] += a[i] * b[j];
                    }
                    if (more) {  // into the other copy, which nobody reads since the last barrier
                        load_a.store(sh.a[cur ^ 1], ra);
                        load_b.store(sh.b[cur ^ 1], rb);
                    }
                    // slab s + 1 is complete; copy cur is free (for slab s + 2, or the next tile's slab 0)
                    __syncthreads();
                }
#pragma unroll
                for (int i = 0; i < TM; ++i) {
                    const int m = m0 + (i / 4) * MG_GEMM_GROUP + 4 * ty + i % 4;
                    if (m >= M) continue;
#pragma unroll
                    for (int h = 0; h < R; ++h) {
                        const int n = n0 + h * MG_GEMM_GROUP + 4 * tx;
                        T* c = Cz + m * sc_m + n * sc_n;
                        const T* out = &acc[i][4 * h];
                        if (c_vec && n + 3 < N) {
                            T v[4];
                            if (beta != T(0)) gemm_load4(v, c);
#pragma unroll
                            for (int j = 0; j < 4; ++j)
                                v[j] = (beta == T(0)) ? alpha * out[j] : alpha * out[j] + beta * v[j];
                            gemm_store4(c, v);
                        } else {
#pragma unroll
                            for (int j = 0; j < 4; ++j)
                                if (n + j < N)
                                    c[j * sc_n] = (beta == T(0)) ? alpha * out[j] : alpha * out[j] + beta * c[j * sc_n];
                        }
                    }
                }
            }
        }
    }
}

// ---- extern "C" entry points (unmangled names for RawModule.get_function) ---------------------------
// MIN_BLOCKS, __launch_bounds__'s blocks per SM to fit, caps the registers per thread at
// 65536 / (MIN_BLOCKS x 256) (ptxas for sm_90, no spills unless said): float32 64 x 64: 4 (64 registers);
// float64 64 x 64: 2 (128); float32 128 x 128: 2 (128: the 8 x 8 accumulators, fragments and prefetch
// registers of the main loop fit, ptxas spills ~20 loop invariants to the stack outside it; uncapped it
// takes ~180 and one block per SM); float64 128 x 128: 1 (its accumulators alone are 128 registers; 252).
#define MG_GEMM_ENTRY(NAME, T, R, BK, MIN_BLOCKS)                                                            \
    extern "C" __global__ void __launch_bounds__(MG_GEMM_THREADS, MIN_BLOCKS)                                \
        NAME(T* __restrict__ C, const T* __restrict__ A, const T* __restrict__ B, int M, int N, int K,       \
             int batch, long long sa_m, long long sa_k, long long sb_k, long long sb_n, long long sc_m,      \
             long long sc_n, long long sa_batch, long long sb_batch, long long sc_batch, T alpha, T beta) { \
        gemm<T, R, BK>(C, A, B, M, N, K, batch, sa_m, sa_k, sb_k, sb_n, sc_m, sc_n, sa_batch, sb_batch,      \
                       sc_batch, alpha, beta);                                                               \
    }

MG_GEMM_ENTRY(gemm_f32, float, 1, 16, 4)
MG_GEMM_ENTRY(gemm_f64, double, 1, 16, 2)
MG_GEMM_ENTRY(gemm128_f32, float, 2, 8, 2)
MG_GEMM_ENTRY(gemm128_f64, double, 2, 8, 1)
