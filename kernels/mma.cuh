// mma.cuh: the tensor-core primitives of kernels/gemm_tc.cu. The 16-bit floating-point formats (IEEE
// binary16, "f16", and bfloat16, "bf16") stored as raw bits (unsigned short) with their conversions to
// and from float32, and the warp-level instructions of sm_80 and later that a tensor-core GEMM is made of:
//   mma.sync m16n8k16     D = A·B + C for one 16 x 16 A, 16 x 8 B and 16 x 8 float32 C, D per warp
//   ldmatrix .x4 (.trans) four 8 x 8 matrices of 16-bit elements from shared memory into registers, in
//                         the fragment layout that mma expects
//   cp.async              16-byte copies global -> shared that bypass the registers and run in the
//                         background, in groups (commit) that a thread waits for (wait_group)
//
// Two implementations of the instructions, chosen at compile time:
//   * inline PTX, on the GPU (NVRTC or nvcc, sm_80 and later);
//   * portable CUDA C, with MG_CUDA_EMU (defined by the CPU emulator, tests/cuda_emu/cuda_emu.h) or
//     MG_MMA_PORTABLE (to compile it with NVRTC, e.g. to compare it with the PTX on a GPU): warp
//     shuffles and plain loads and stores that follow the fragment layouts of the PTX ISA element by
//     element (below). A kernel that gets a fragment index wrong computes a wrong product in the
//     emulator too: the emulated tests check the kernel's use of the layouts, not only its arithmetic.
//     Lanes are threadIdx.x % 32: one-dimensional blocks only.
// The conversions are software (integer operations) in both: bit-identical on the GPU and in the
// emulator, equal to numpy's for float16, and no header needed (cuda_fp16.h / cuda_bf16.h are not
// available to NVRTC here). They run once per output element of a GEMM, so their cost does not matter.
//
// Fragment layouts of mma.m16n8k16 with 16-bit inputs (PTX ISA, "Matrix Fragments for mma.m16n8k16 with
// floating point type"). lane = threadIdx.x % 32, g = lane / 4 (the "groupID"), t = lane % 4 (the
// "threadID_in_group"). A 32-bit register holds two 16-bit elements, the lower-indexed one in the low half.
//   A, 16 x 16 (.row):  a[0] = A[g][2t, 2t+1]     a[1] = A[g+8][2t, 2t+1]
//                       a[2] = A[g][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
//   B, 16 x 8 (.col):   b[0] = B[2t, 2t+1][g]     b[1] = B[2t+8, 2t+9][g]   (pairs along k, like A's)
//   C, D, 16 x 8 fp32:  c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
// So a warp's 32 lanes hold the 16 rows of A as 8 groups of 4 lanes, the 8 columns of B likewise, and
// every lane's two rows g, g+8 and two columns 2t, 2t+1 of the product need elements that other lanes
// hold: the tensor core does that exchange in hardware; the portable mma does it with shuffles.
//
// ldmatrix.sync.aligned.m8n8.x4.shared.b16 (PTX ISA, "ldmatrix"): matrix j (j < 4) is 8 rows of 8
// 16-bit elements, each row 16 contiguous bytes of shared memory (16-byte aligned) anywhere; lane l gives
// the address of row l % 8 of matrix l / 8, and receives r[j] = row g, elements 2t, 2t+1 of matrix j:
// the layout of a[] and b[] above, one register per 8 x 8 block. With .trans, r[j] = elements (2t, g)
// and (2t+1, g): row g of the transposed matrix, for an operand stored the other way around in memory.
//
// No include guard (see common.cuh): include it once per .cu file, from nothing but that file.

// ---- the 16-bit formats ---------------------------------------------------------------------------------

// bfloat16 is the upper half of a float32 (sign, the 8-bit exponent, 7 of the 23 mantissa bits).
__device__ __forceinline__ float bf16_to_f32(unsigned short h) { return __uint_as_float((unsigned)h << 16); }

// float32 -> bfloat16, rounded to nearest even: adding 0x7fff plus the lowest kept bit carries into the
// kept bits exactly when the dropped half is above one half, or equal to it with the kept part odd; a
// carry into the exponent is the right result (up to inf). nan stays nan: sign and upper payload bits
// kept, the quiet bit set (so that the truncation cannot make it inf).
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// binary16 (sign, 5-bit exponent of bias 15, 10-bit mantissa) -> float32, exact. inf and nan keep their
// payload (as numpy); a subnormal m * 2^-24 becomes a normal float32: its leading one moves to bit 10.
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    const unsigned sign = (unsigned)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    unsigned bits = 0;  // +-0
    if (e == 0x1fu) {
        bits = 0x7f800000u | (m << 13);
    } else if (e != 0) {
        bits = ((e + 112u) << 23) | (m << 13);  // exponent bias 15 -> 127
    } else if (m != 0) {
        const unsigned s = (unsigned)__clz((int)m) - 21u;  // shift that puts the leading one at bit 10
        bits = ((113u - s) << 23) | (((m << s) & 0x3ffu) << 13);
    }
    return __uint_as_float(sign | bits);
}

// float32 -> binary16, rounded to nearest even, bit for bit as numpy's astype(float16) (npy_half.c), nan
// included (payload's upper bits kept, never turned into inf).
__device__ __forceinline__ unsigned short f32_to_f16(float f) {
    const unsigned u = __float_as_uint(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    unsigned h = 0;  // below 2^-25, and 2^-25 itself (a tie with 0, which is even): +-0
    if (a > 0x7f800000u) {
        h = 0x7c00u | ((a >> 13) & 0x3ffu);
        if (h == 0x7c00u) h = 0x7c01u;
    } else if (a >= 0x477ff000u) {  // >= 65520 = 65504 (the largest half) + half an ulp, or inf
        h = 0x7c00u;
    } else if (a >= 0x38800000u) {  // >= 2^-14: a normal half. Rebias the exponent, round as f32_to_bf16
        const unsigned v = a - 0x38000000u;
        h = (v + 0xfffu + ((v >> 13) & 1u)) >> 13;
    } else if (a > 0x33000000u) {  // (2^-25, 2^-14): a subnormal half, a multiple of 2^-24
        const unsigned mant = (a & 0x7fffffu) | 0x800000u, shift = 126u - (a >> 23);  // shift 14 .. 24
        const unsigned rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        h = mant >> shift;
        h += (rest > half || (rest == half && (h & 1u))) ? 1u : 0u;  // 0x3ff + 1 is the smallest normal
    }
    return (unsigned short)(sign | h);
}

// Pack / unpack two 32-bit fragment registers in one 64-bit shuffle (the portable instructions).
__device__ __forceinline__ unsigned long long mma_pack(unsigned lo, unsigned hi) {
    return (unsigned long long)lo | ((unsigned long long)hi << 32);
}
__device__ __forceinline__ unsigned mma_lo(unsigned long long v) { return (unsigned)v; }
__device__ __forceinline__ unsigned mma_hi(unsigned long long v) { return (unsigned)(v >> 32); }

#if defined(MG_CUDA_EMU) || defined(MG_MMA_PORTABLE)

// ---- portable instructions (the emulator; MG_MMA_PORTABLE) -----------------------------------------------

// mma.sync m16n8k16 with float32 accumulation. Every lane gathers the two rows of A (g, g+8) and the two
// columns of B (2t, 2t+1) it needs, 16 k each, from the lanes that hold them (layouts above: row r of A
// is held by lanes 4 (r % 8) + s, s < 4, as a[0], a[2] for r < 8 and a[1], a[3] for r >= 8, covering k
// pairs s and s + 4; column n of B by lanes 4 n + s as b[0], b[1]), then computes its 4 accumulators in
// float32, k in increasing order. A product of two 16-bit values is exact in float32 (11 + 11 significant
// bits at most), so contracting it into an fma changes nothing: the result does not depend on the
// compiler. (The tensor core's own order and internal precision of the 16 additions are unspecified.)
template <class Fmt>
__device__ __forceinline__ void mma_portable(float c[4], const unsigned a[4], const unsigned b[2]) {
    const unsigned full = 0xffffffffu;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    unsigned rows[2][8], cols[2][8];  // [which][w]: the k pair w (elements 2w, 2w+1) of row g + 8 which,
                                      // and of column 2t + which
    const unsigned long long a_top = mma_pack(a[0], a[2]), a_bottom = mma_pack(a[1], a[3]), bb = mma_pack(b[0], b[1]);
    for (int s = 0; s < 4; ++s) {
        const unsigned long long r0 = __shfl_sync(full, a_top, 4 * g + s);
        const unsigned long long r1 = __shfl_sync(full, a_bottom, 4 * g + s);
        const unsigned long long c0 = __shfl_sync(full, bb, 4 * (2 * t) + s);
        const unsigned long long c1 = __shfl_sync(full, bb, 4 * (2 * t + 1) + s);
        rows[0][s] = mma_lo(r0), rows[0][s + 4] = mma_hi(r0);
        rows[1][s] = mma_lo(r1), rows[1][s + 4] = mma_hi(r1);
        cols[0][s] = mma_lo(c0), cols[0][s + 4] = mma_hi(c0);
        cols[1][s] = mma_lo(c1), cols[1][s + 4] = mma_hi(c1);
    }
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
            float sum = c[2 * i + j];
            // a reference, not a fast path: kept rolled, since unrolled NVRTC takes 10 s to compile it
#pragma unroll 1
            for (int k = 0; k < 16; ++k) {
                const unsigned short x = (unsigned short)(rows[i][k >> 1] >> (16 * (k & 1)));
                const unsigned short y = (unsigned short)(cols[j][k >> 1] >> (16 * (k & 1)));
                sum += Fmt::to_f32(x) * Fmt::to_f32(y);
            }
            c[2 * i + j] = sum;
        }
}
#define MG_MMA_BODY(FMT, PTX_TYPE) mma_portable<FMT>(c, a, b)

// The alignment that the PTX instructions require (16 bytes): a violation traps, as on the GPU (where it
// is a misaligned-address error), instead of passing unnoticed.
__device__ __forceinline__ void mma_check_aligned(const void* p) {
    if ((unsigned long long)p & 15u) __trap();
}

// ldmatrix .x4: the row addresses travel by shuffle, and every lane reads its own two elements of
// matrix j from the row that lane 8 j + g gave (row g of matrix j).
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const unsigned short* row) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    mma_check_aligned(row);
    for (int j = 0; j < 4; ++j) {
        const unsigned short* p = (const unsigned short*)__shfl_sync(0xffffffffu, (unsigned long long)row, 8 * j + g);
        r[j] = (unsigned)p[2 * t] | ((unsigned)p[2 * t + 1] << 16);
    }
}

// ldmatrix .x4 .trans: elements (2t, g) and (2t+1, g) of matrix j, from the rows of lanes 8 j + 2t, + 1.
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const unsigned short* row) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    mma_check_aligned(row);
    for (int j = 0; j < 4; ++j) {
        const unsigned short* p0 = (const unsigned short*)__shfl_sync(0xffffffffu, (unsigned long long)row, 8 * j + 2 * t);
        const unsigned short* p1 =
            (const unsigned short*)__shfl_sync(0xffffffffu, (unsigned long long)row, 8 * j + 2 * t + 1);
        r[j] = (unsigned)p0[g] | ((unsigned)p1[g] << 16);
    }
}

// cp.async of 16 bytes (8 elements), of which the first `n` come from src and the rest are zeros: here a
// plain copy, complete when it returns, so committing and waiting have nothing to do (the barrier that
// follows a wait in the kernel is what makes other threads' copies visible, on the GPU as here).
__device__ __forceinline__ void cp_async_16(unsigned short* dst, const unsigned short* src, int n) {
    mma_check_aligned(dst);
    mma_check_aligned(src);
    for (int i = 0; i < 8; ++i) dst[i] = i < n ? src[i] : (unsigned short)0;
}
__device__ __forceinline__ void cp_async_commit() {}
template <int N> __device__ __forceinline__ void cp_async_wait() {}

#else

// ---- PTX (sm_80 and later) --------------------------------------------------------------------------------

// "+f": c is both the accumulator input and the result (D = A·B + C in place).
#define MG_MMA_BODY(FMT, PTX_TYPE)                                                                      \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX_TYPE "." PTX_TYPE ".f32 "                 \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"                    \
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                        \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))

// The shared-memory (32-bit) address of a generic pointer into shared memory, as these instructions want.
__device__ __forceinline__ unsigned mma_smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const unsigned short* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(mma_smem_addr(row)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const unsigned short* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(mma_smem_addr(row)));
}

// cp.async.cg (cache in L2 only: the tile is reused from shared memory, not L1) of 16 bytes; the source
// size (bytes, < 16 at the ragged end of a matrix, 0 past it) says how many are read, the rest of the 16
// are zero-filled. dst and src must be 16-byte aligned.
__device__ __forceinline__ void cp_async_16(unsigned short* dst, const unsigned short* src, int n) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(mma_smem_addr(dst)), "l"(src), "r"(2 * n));
}
// Close the group of this thread's cp.async issued since the last commit.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

#endif

// The two formats, from one definition: the conversions and mma.sync with that input type (PTX_TYPE is
// the type's name in the instruction).
#define MG_HALF_FORMAT(FMT, PTX_TYPE, TO_F32, FROM_F32)                                                      \
    struct FMT {                                                                                             \
        static __device__ __forceinline__ float to_f32(unsigned short h) { return TO_F32(h); }              \
        static __device__ __forceinline__ unsigned short from_f32(float f) { return FROM_F32(f); }          \
        /* c += a·b for one m16n8k16 fragment triple (layouts above) */                                     \
        static __device__ __forceinline__ void mma(float c[4], const unsigned a[4], const unsigned b[2]) { \
            MG_MMA_BODY(FMT, PTX_TYPE);                                                                      \
        }                                                                                                    \
    };
MG_HALF_FORMAT(F16, "f16", f16_to_f32, f32_to_f16)
MG_HALF_FORMAT(BF16, "bf16", bf16_to_f32, f32_to_bf16)
#undef MG_HALF_FORMAT
#undef MG_MMA_BODY
