// gemm_tc.cu: batched, strided GEMM on tensor cores, C = alpha * A·B + beta * C, for 16-bit inputs
// (float16 or bfloat16) with float32 accumulation. Loaded with NVRTC (CuPy RawModule); no host code; sm_80
// or later (mma.sync with bf16 inputs, ldmatrix and cp.async are sm_80 instructions). The instructions and
// the 16-bit formats are in mma.cuh. The oracle: numpy.matmul of the inputs converted to float32, in
// float32, then alpha, beta, and one rounding (to nearest even) to the 16-bit type.
//
// Entry points (T = f16 | bf16; every 16-bit array holds raw bits, unsigned short: numpy's float16 viewed
// as uint16, or bfloat16 bits):
//   gemm_tc_T(unsigned short* C, const unsigned short* A, const unsigned short* B, int M, int N, int K,
//             int batch, long long sa_m, long long sa_k, long long sb_k, long long sb_n, long long sc_m,
//             long long sc_n, long long sa_batch, long long sb_batch, long long sc_batch, float alpha,
//             float beta)
//       For every batch index z < batch, every m < M, n < N:
//         C[z*sc_batch + m*sc_m + n*sc_n] = round_T(alpha * sum_k A[z*sa_batch + m*sa_m + k*sa_k]
//                                                              * B[z*sb_batch + k*sb_k + n*sb_n]
//                                                   + beta * C[...])
//       the sum and the alpha / beta arithmetic in float32, rounded to T once. The same semantics as gemm_T
//       of gemm.cu: element strides, any value (0 included: sa_batch = 0 or sb_batch = 0 broadcasts that
//       operand over the batch; sc_batch must not be 0 with batch > 1); beta == 0: C is only written,
//       never read (it may hold nan); K == 0 gives alpha * 0 + beta * C; M, N, K, batch >= 0, any sizes.
//   gemm_tc_convert_T(unsigned short* h_out, float* f_out, const float* f_in, const unsigned short* h_in,
//                     long long n)
//       h_out[i] = round_T(f_in[i]), f_out[i] = float(h_in[i]) for i < n: the conversions of the GEMM
//       (mma.cuh), exposed to test them bit for bit. Any 1-D launch (grid-stride loop).
//   Launch of gemm_tc_T: block = (256) threads, exactly (8 warps, below), one-dimensional. grid =
//       (ceil(N / 128), ceil(M / 128), batch) for one tile per block; any smaller grid also works
//       (grid-stride loops over the tiles and the batch; clamp gridDim.y and gridDim.z to 65535). Shared
//       memory: 48 KiB, static (no dynamic shared memory, no attribute to set).
//   Paths: chosen inside the kernel, per operand and batch element, from its pointer and strides (nothing
//       for the caller to pick). The fast path (cp.async, 16-byte copies) needs one of the operand's two
//       strides to be 1 (sa_k or sa_m for A, sb_k or sb_n for B), the other one a multiple of 8 elements,
//       and the batch element's matrix to start 16-byte aligned (CuPy's allocations are 256-byte aligned,
//       so a contiguous matrix or batch of matrices whose row length is a multiple of 8 qualifies, and so
//       does its transpose). Any other operand goes through the generic loader (element by element, any
//       strides): the same results, bit for bit, only slower.
//
// Decomposition. The output of each batch element is cut into BM x BN = 128 x 128 tiles, one block per
// tile (blockIdx.x: the tile column, blockIdx.y: the tile row, blockIdx.z: the batch element, each with a
// grid-stride loop). The 8 warps of a block form a 2 x 4 grid over the tile: warp w owns the 64 x 32
// warp tile at rows 64 (w / 4), columns 32 (w % 4). The block walks K in steps of BK = 32: per step it has
// the 128 x 32 slab of A and the 32 x 128 slab of B in shared memory, and each warp, for each of the two
// k16 halves of the step, loads its A fragments (4 row blocks of 16: 4 ldmatrix.x4) and B fragments (4
// column blocks of 8: 2 ldmatrix.x4, two blocks each) and issues 4 x 4 = 16 mma.sync m16n8k16 into its
// 4 x 4 x 4 = 64 float32 accumulators per lane (fragment layouts: mma.cuh). A warp tile of 64 x 32
// reuses each A fragment 4 times and each B fragment 4 times: 6 ldmatrix per 16 mma. A warp whose tile
// starts past M or N skips the math (the loads and barriers are the block's, it still takes part).
//
// Shared memory and ldmatrix. A slab of either operand is stored as 128 "rows" (m of A, n of B) x 32 k,
// in one of two layouts, chosen per operand from its strides so that global memory is read along its
// contiguous dimension:
//   k-major  S[row][k] (64 bytes per row) when k is contiguous (A row-major, B given as Bᵀ row-major:
//            A·Bᵀ) or neither stride is 1. A fragment's 8 x 8 blocks are 8 rows x 8 consecutive k:
//            ldmatrix without .trans, 16 bytes per row.
//   mn-major S[k][row] (256 bytes per k) when the rows are contiguous (B row-major, or Aᵀ). A block is
//            8 k x 8 rows: ldmatrix .trans turns it into the k-pairs that the fragments hold.
// The 16-byte chunks of a row are swizzled to avoid bank conflicts: ldmatrix reads 8 rows of 16 bytes per
// 8 x 8 block, and shared memory serves 128 bytes (32 banks of 4 bytes) at a time, so the 8 rows must
// fall in 8 different 16-byte bank groups. Unswizzled, the 64-byte rows of the k-major layout would hit
// only 2 groups (4-way conflicts), the 256-byte rows of the mn-major one a single group (8-way). Chunk c
// of row r is stored at chunk c ^ ((r / 2) % 4) (k-major: rows r, r + 2, r + 4, r + 6 then use different
// chunks, and r, r + 1 differ by the 64 bytes of the row) or c ^ (k % 8) (mn-major: 8 consecutive k, 8
// different chunks). An XOR permutes the chunks of a row, so nothing is wasted (no padding): the three
// stages of two 128 x 32 slabs fill exactly the 48 KiB of static shared memory.
//
// Pipeline: 3 stages. Slab s goes to stage s % 3; slabs 0 and 1 are requested before the loop, and at
// step kt the block waits for slab kt (cp.async.wait_group 1: all but the newest group, slab kt + 1, have
// landed, for this thread; then __syncthreads for all threads), requests slab kt + 2 into the stage that
// step kt - 1 has just finished reading (the same barrier guarantees that), and computes on slab kt while
// the copies of slabs kt + 1 and kt + 2 are in flight. Every thread commits one group per step, empty or
// not, so that the group count says which slab has landed.
//
// Loads. Fast path: a slab is 512 chunks of 8 elements (16 bytes), 2 per thread, each one cp.async
// (consecutive threads, consecutive chunks of a row: coalesced); a chunk that straddles the end of the
// matrix (M, N or K not a multiple of 8) copies only its valid elements and cp.async zero-fills the rest,
// one entirely past the end copies nothing (and is all zeros). Generic path: 4096 elements, 16 per
// thread, plain loads (out-of-range ones are 0) with consecutive threads along the slab's contiguous
// dimension, stored into the same swizzled layout; the barriers of the pipeline order them as they order
// the cp.async. Zeros past M, N, K make the mma inner loop free of bounds checks.
//
// Epilogue: each lane holds c[0..3] of its 16 fragments (rows g, g + 8, columns 2t, 2t + 1 of each 16 x 8
// block), computes alpha * acc + beta * C in float32 and stores the rounded value, skipping rows >= M and
// columns >= N. Per output, the result does not depend on the launch configuration (grid-stride loops
// change which block computes a tile, not how).
//
// Why these sizes: 128 x 128 x 32 tiles with 8 warps of 64 x 32 are a classic Ampere mma.sync
// configuration: each element loaded from global memory is used 128 times, and 64 accumulators per lane
// fit with the fragments. ptxas (CUDA 13.0, sm_90) gives it about 230 registers and no spills, so one
// block (8 warps) per SM; __launch_bounds__(256, 2) would force 128 registers and two blocks per SM at
// the cost of ~200 bytes of spills. Which is faster, and how close either comes to cuBLAS, has not been
// measured: the kernel is written for correctness on every shape first (Hopper's fastest path, wgmma
// with TMA, is another, sm_90a-only, kernel).

#include "mma.cuh"

#define MG_TC_BM 128     // tile rows (of C and A)
#define MG_TC_BN 128     // tile columns (of C and B); the slabs of A and B share one layout: BM == BN
#define MG_TC_BK 32      // depth of a slab
#define MG_TC_STAGES 3   // slabs in flight
#define MG_TC_WARPS_N 4  // the warp grid over the tile: 2 x 4
#define MG_TC_WM 64      // warp tile rows: 4 m16 blocks
#define MG_TC_WN 32      // warp tile columns: 4 n8 blocks
#define MG_TC_THREADS 256
#define MG_TC_SLAB (MG_TC_BM * MG_TC_BK)  // elements of one operand's slab

// One operand (A: rows are m; B: rows are n, so that B is read as Bᵀ, rows x k like A) of one batch element.
struct TcOperand {
    const unsigned short* X;  // element (row, k) is X[row * s_row + k * s_k]
    long long s_row, s_k;
    int rows;       // M or N
    bool mn_major;  // the slab's layout: S[k][row] (rows contiguous in X) or S[row][k]
    bool async;     // the fast path: cp.async of 16-byte chunks along the contiguous stride
};

__device__ __forceinline__ TcOperand tc_operand(const unsigned short* X, long long s_row, long long s_k, int rows) {
    TcOperand op;
    op.X = X;
    op.s_row = s_row;
    op.s_k = s_k;
    op.rows = rows;
    op.mn_major = s_row == 1 && s_k != 1;
    const long long lead = op.mn_major ? s_k : s_row;  // the stride between two 16-byte chunks' rows
    op.async = (op.mn_major || s_k == 1) && lead % 8 == 0 && ((unsigned long long)X & 15u) == 0;
    return op;
}

// Offset in a slab of element (row r, k), with the chunk swizzle of the header comment. For a chunk's
// first element (k, or r for mn-major, a multiple of 8) it is the address of the chunk: a row address for
// ldmatrix, a destination for cp.async.
__device__ __forceinline__ int tc_offset(bool mn_major, int r, int k) {
    return mn_major ? k * MG_TC_BM + (((r >> 3) ^ (k & 7)) << 3) + (r & 7)
                    : r * MG_TC_BK + ((((k >> 3) ^ (r >> 1)) & 3) << 3) + (k & 7);
}

// Request the slab of rows row0 .. row0 + 127, k0 .. k0 + 31 of the operand into S (zeros past the ends).
__device__ __forceinline__ void tc_load_slab(unsigned short* S, const TcOperand& op, int row0, int k0, int K) {
    if (op.async) {
        for (int c = threadIdx.x; c < MG_TC_SLAB / 8; c += MG_TC_THREADS) {
            int r, k, valid;  // the chunk's first element (r, k) and its number of in-range elements
            if (op.mn_major) {
                k = c / (MG_TC_BM / 8), r = (c % (MG_TC_BM / 8)) * 8;
                valid = k0 + k < K ? min(max(op.rows - (row0 + r), 0), 8) : 0;
            } else {
                r = c / (MG_TC_BK / 8), k = (c % (MG_TC_BK / 8)) * 8;
                valid = row0 + r < op.rows ? min(max(K - (k0 + k), 0), 8) : 0;
            }
            // a chunk with nothing to read still gets a valid address (the matrix's start)
            const unsigned short* src = valid > 0 ? op.X + (row0 + r) * op.s_row + (k0 + k) * op.s_k : op.X;
            cp_async_16(S + tc_offset(op.mn_major, r, k), src, valid);
        }
    } else {
        for (int e = threadIdx.x; e < MG_TC_SLAB; e += MG_TC_THREADS) {
            const int r = op.mn_major ? e % MG_TC_BM : e / MG_TC_BK, k = op.mn_major ? e / MG_TC_BM : e % MG_TC_BK;
            const int row = row0 + r, kk = k0 + k;
            S[tc_offset(op.mn_major, r, k)] =
                (row < op.rows && kk < K) ? op.X[row * op.s_row + kk * op.s_k] : (unsigned short)0;
        }
    }
}

// ldmatrix.x4 of the 16 rows x 16 k at (r0, k0) of a slab. Lane l addresses row l % 8 of 8 x 8 block
// j = l / 8; the blocks are ordered as the fragment registers want them: for A (a_order) j = (row half
// j % 2, k half j / 2), giving a[0..3]; for B j = (row half j / 2, k half j % 2), giving b[0], b[1] of the
// n8 block at r0 and then of the one at r0 + 8. k-major: the block's rows are slab rows; mn-major: slab
// k's, transposed by ldmatrix.
__device__ __forceinline__ void tc_fragment(unsigned f[4], const unsigned short* S, bool mn_major, int r0, int k0,
                                            bool a_order) {
    const int lane = threadIdx.x & 31, j = lane >> 3, i = lane & 7;
    const int row_half = a_order ? (j & 1) : (j >> 1), k_half = a_order ? (j >> 1) : (j & 1);
    if (mn_major)
        ldmatrix_x4_trans(f, S + tc_offset(true, r0 + 8 * row_half, k0 + 8 * k_half + i));
    else
        ldmatrix_x4(f, S + tc_offset(false, r0 + 8 * row_half + i, k0 + 8 * k_half));
}

// One slab's worth of math for one warp: acc[mi][ni] (the 16 x 8 block at warp rows 16 mi, columns 8 ni)
// += the warp tile's rows of As times its columns of Bs, k16 half by k16 half.
template <class Fmt>
__device__ __forceinline__ void tc_warp_slab(float acc[4][4][4], const unsigned short* As, const unsigned short* Bs,
                                             bool a_mn, bool b_mn, int wr, int wc) {
#pragma unroll
    for (int k16 = 0; k16 < MG_TC_BK; k16 += 16) {
        unsigned af[4][4], bf[4][2];
#pragma unroll
        for (int mi = 0; mi < 4; ++mi) tc_fragment(af[mi], As, a_mn, wr + 16 * mi, k16, true);
#pragma unroll
        for (int nj = 0; nj < 2; ++nj) {
            unsigned f[4];
            tc_fragment(f, Bs, b_mn, wc + 16 * nj, k16, false);
            bf[2 * nj][0] = f[0], bf[2 * nj][1] = f[1], bf[2 * nj + 1][0] = f[2], bf[2 * nj + 1][1] = f[3];
        }
#pragma unroll
        for (int mi = 0; mi < 4; ++mi)
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) Fmt::mma(acc[mi][ni], af[mi], bf[ni]);
    }
}

template <class Fmt>
__device__ __forceinline__ void gemm_tc(unsigned short* __restrict__ C, const unsigned short* __restrict__ A,
                                        const unsigned short* __restrict__ B, int M, int N, int K, int batch,
                                        long long sa_m, long long sa_k, long long sb_k, long long sb_n,
                                        long long sc_m, long long sc_n, long long sa_batch, long long sb_batch,
                                        long long sc_batch, float alpha, float beta) {
    alignas(16) __shared__ unsigned short smem[MG_TC_STAGES][2][MG_TC_SLAB];  // [stage][A, B][slab]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wr = (warp / MG_TC_WARPS_N) * MG_TC_WM, wc = (warp % MG_TC_WARPS_N) * MG_TC_WN;
    const int tiles_m = (M + MG_TC_BM - 1) / MG_TC_BM, tiles_n = (N + MG_TC_BN - 1) / MG_TC_BN;
    const int k_slabs = (K + MG_TC_BK - 1) / MG_TC_BK;
    // every loop bound below is uniform across the block, so every thread reaches every __syncthreads
    for (int z = blockIdx.z; z < batch; z += gridDim.z) {
        const TcOperand a = tc_operand(A + z * sa_batch, sa_m, sa_k, M);
        const TcOperand b = tc_operand(B + z * sb_batch, sb_n, sb_k, N);
        unsigned short* Cz = C + z * sc_batch;
        for (int tm = blockIdx.y; tm < tiles_m; tm += gridDim.y) {
            for (int tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
                const int m0 = tm * MG_TC_BM, n0 = tn * MG_TC_BN;
                const bool active = m0 + wr < M && n0 + wc < N;  // uniform across the warp
                float acc[4][4][4];
#pragma unroll
                for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
                        for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.0f;
#pragma unroll
                for (int s = 0; s < MG_TC_STAGES - 1; ++s) {
                    if (s < k_slabs) {
                        tc_load_slab(smem[s][0], a, m0, s * MG_TC_BK, K);
                        tc_load_slab(smem[s][1], b, n0, s * MG_TC_BK, K);
                    }
                    cp_async_commit();
                }
                for (int kt = 0; kt < k_slabs; ++kt) {
                    cp_async_wait<MG_TC_STAGES - 2>();  // slab kt has landed (this thread's copies)
                    __syncthreads();  // ... everyone's; and stage (kt - 1) % 3 is no longer read
                    const int next = kt + MG_TC_STAGES - 1;
                    if (next < k_slabs) {
                        tc_load_slab(smem[next % MG_TC_STAGES][0], a, m0, next * MG_TC_BK, K);
                        tc_load_slab(smem[next % MG_TC_STAGES][1], b, n0, next * MG_TC_BK, K);
                    }
                    cp_async_commit();
                    if (active)
                        tc_warp_slab<Fmt>(acc, smem[kt % MG_TC_STAGES][0], smem[kt % MG_TC_STAGES][1], a.mn_major,
                                          b.mn_major, wr, wc);
                }
                __syncthreads();  // the stages are overwritten by the next tile's first slabs
                if (!active) continue;
#pragma unroll
                for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            const int m = m0 + wr + 16 * mi + g + 8 * (i >> 1), n = n0 + wc + 8 * ni + 2 * t + (i & 1);
                            if (m >= M || n >= N) continue;
                            unsigned short* c = Cz + m * sc_m + n * sc_n;
                            const float v = alpha * acc[mi][ni][i];
                            *c = Fmt::from_f32(beta == 0.0f ? v : v + beta * Fmt::to_f32(*c));
                        }
            }
        }
    }
}

template <class Fmt>
__device__ __forceinline__ void gemm_tc_convert(unsigned short* h_out, float* f_out, const float* f_in,
                                                const unsigned short* h_in, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        h_out[i] = Fmt::from_f32(f_in[i]);
        f_out[i] = Fmt::to_f32(h_in[i]);
    }
}

// ---- extern "C" entry points (unmangled names for RawModule.get_function) ---------------------------

#define MG_GEMM_TC_ENTRIES(FMT, SUF)                                                                          \
    extern "C" __global__ void __launch_bounds__(MG_TC_THREADS)                                               \
        gemm_tc_##SUF(unsigned short* __restrict__ C, const unsigned short* __restrict__ A,                   \
                      const unsigned short* __restrict__ B, int M, int N, int K, int batch, long long sa_m,   \
                      long long sa_k, long long sb_k, long long sb_n, long long sc_m, long long sc_n,         \
                      long long sa_batch, long long sb_batch, long long sc_batch, float alpha, float beta) {  \
        gemm_tc<FMT>(C, A, B, M, N, K, batch, sa_m, sa_k, sb_k, sb_n, sc_m, sc_n, sa_batch, sb_batch,         \
                     sc_batch, alpha, beta);                                                                  \
    }                                                                                                         \
    extern "C" __global__ void gemm_tc_convert_##SUF(unsigned short* __restrict__ h_out, float* __restrict__ f_out, \
                                                     const float* __restrict__ f_in,                          \
                                                     const unsigned short* __restrict__ h_in, long long n) {  \
        gemm_tc_convert<FMT>(h_out, f_out, f_in, h_in, n);                                                    \
    }

MG_GEMM_TC_ENTRIES(F16, f16)
MG_GEMM_TC_ENTRIES(BF16, bf16)
