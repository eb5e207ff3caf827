// elementwise.cu: fused elementwise kernels, float32 and float64. Oracle: numpy_ref.bias_gelu_forward,
// bias_gelu_backward, bias_residual_forward, dropout_forward (its semantics; the random numbers differ:
// here they come from Philox4x32-10), dropout_backward.
//
// Entry points (T = f32 | f64; (R, D) arrays contiguous; bias (D,), broadcast over the rows, may be null):
//   bias_gelu_forward_T(T* out, const T* x, const T* bias, long long rows, int D, int approximate)
//       out = gelu(x + bias); approximate 0: exact, x * Phi(x) with erf; 1: the tanh form.
//   bias_gelu_backward_T(T* dx, const T* dout, const T* x, const T* bias, long long rows, int D,
//                        int approximate)
//       dx = dout * gelu'(x + bias). dbias = dx summed over the rows is NOT computed here: use
//       reduce_sum_strided_T of reduce.cu on dx seen as (outer 1, n rows, inner D) (deterministic, no
//       atomics), as for bias_residual's bias gradient (the sum of dout over the rows).
//   bias_residual_forward_T(T* out, const T* x, const T* bias, const T* residual, long long rows, int D)
//       out = (x + bias) + residual
//   dropout_forward_T(T* out, unsigned char* mask, const T* x, long long numel, float p, T scale,
//                     unsigned long long seed, unsigned long long offset)
//       mask[i] = u_i >= p (1 keeps), out = x * mask * scale, with scale = 1 / (1 - p) (0 when p == 1),
//       computed by the caller in double precision as numpy_ref._dropout_scale.
//   dropout_backward_T(T* dx, const T* dout, const unsigned char* mask, long long numel, T scale)
//       dx = dout * mask * scale
//
// Decomposition:
//   bias kernels: a 2-D grid-stride loop: rows over blockIdx.y (+ k*gridDim.y), columns over
//       blockIdx.x * blockDim.x + threadIdx.x (+ k*gridDim.x*blockDim.x), so the bias index is the column
//       (no modulo) and a warp touches 32 consecutive elements (coalesced). block = (B) threads, any B;
//       grid = (ceil(D / B), min(rows, 65535)) for example, any grid works.
//   dropout: one thread per group of 4 consecutive elements (one Philox call gives 4 random words),
//       grid-stride over the groups; block = (B) threads, any B and grid.
//
// Random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11;
// the generator of cuRAND and PyTorch's CUDA generator), a counter-based generator: the words for
// element i are a pure function of (seed, offset, i), so a mask is reproducible from (seed, offset) and
// independent of the launch configuration. key = (seed low 32 bits, seed high 32 bits); counter =
// (g low, g high, offset low, offset high) with g = i / 4, and element i uses word i % 4. The caller
// gives every dropout call its own offset (e.g. a per-generator counter incremented by 1 per call):
// counters of different offsets never coincide, so the streams do not overlap. A word w becomes
// u = (w >> 8) * 2^-24, uniform on [0, 1) with 24 bits, and the element is kept when u >= p (as numpy_ref,
// which keeps when rand >= p).

#include "common.cuh"  // Real<T>

// The constants of numpy_ref (Python doubles, rounded to T as NumPy rounds a Python float operand).
#define MG_SQRT_2_OVER_PI 0.7978845608028654
#define MG_INV_SQRT_2 0.7071067811865475
#define MG_INV_SQRT_2PI 0.3989422804014327
#define MG_GELU_C 0.044715
#define MG_GELU_3C 0.134145  // 3 * 0.044715, folded by Python in numpy_ref

// gelu and its derivative, in the order of operations of numpy_ref (same rounding where no FMA forms)
template <typename T> __device__ __forceinline__ T gelu(T x, int approximate) {
    if (approximate)
        return T(0.5) * x * (T(1) + Real<T>::tanh_(T(MG_SQRT_2_OVER_PI) * (x + T(MG_GELU_C) * (x * x * x))));
    return T(0.5) * x * (T(1) + Real<T>::erf_(x * T(MG_INV_SQRT_2)));
}

template <typename T> __device__ __forceinline__ T gelu_grad(T x, int approximate) {
    if (approximate) {
        const T t = Real<T>::tanh_(T(MG_SQRT_2_OVER_PI) * (x + T(MG_GELU_C) * (x * x * x)));
        const T dinner = T(MG_SQRT_2_OVER_PI) * (T(1) + T(MG_GELU_3C) * (x * x));
        return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dinner;
    }
    const T cdf = T(0.5) * (T(1) + Real<T>::erf_(x * T(MG_INV_SQRT_2)));
    const T pdf = T(MG_INV_SQRT_2PI) * Real<T>::exp_(T(-0.5) * x * x);
    return cdf + x * pdf;
}

// The 2-D grid-stride loop of the bias kernels: calls f(flat index, column).
#define MG_FOR_ROWS_COLS(rows, D, BODY)                                                                      \
    for (long long r_ = blockIdx.y; r_ < (rows); r_ += gridDim.y)                                          \
        for (long long c_ = (long long)blockIdx.x * blockDim.x + threadIdx.x; c_ < (D);                    \
             c_ += (long long)gridDim.x * blockDim.x) {                                                    \
            const long long i = r_ * (D) + c_;                                                             \
            const long long col = c_;                                                                      \
            BODY                                                                                           \
        }

template <typename T>
__device__ __forceinline__ void bias_gelu_forward(T* __restrict__ out, const T* __restrict__ x,
                                                  const T* __restrict__ bias, long long rows, int D,
                                                  int approximate) {
    MG_FOR_ROWS_COLS(rows, D, { out[i] = gelu(bias ? x[i] + bias[col] : x[i], approximate); })
}

template <typename T>
__device__ __forceinline__ void bias_gelu_backward(T* __restrict__ dx, const T* __restrict__ dout,
                                                   const T* __restrict__ x, const T* __restrict__ bias,
                                                   long long rows, int D, int approximate) {
    MG_FOR_ROWS_COLS(rows, D, { dx[i] = dout[i] * gelu_grad(bias ? x[i] + bias[col] : x[i], approximate); })
}

template <typename T>
__device__ __forceinline__ void bias_residual_forward(T* __restrict__ out, const T* __restrict__ x,
                                                      const T* __restrict__ bias, const T* __restrict__ residual,
                                                      long long rows, int D) {
    MG_FOR_ROWS_COLS(rows, D, { out[i] = (x[i] + bias[col]) + residual[i]; })
}

// ---- Philox4x32-10 ------------------------------------------------------------------------------------

struct Philox4 {
    unsigned int x, y, z, w;
};

__device__ __forceinline__ Philox4 philox_round(Philox4 c, unsigned int k0, unsigned int k1) {
    const unsigned int M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    const unsigned int hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
    const unsigned int hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
    Philox4 r;
    r.x = hi1 ^ c.y ^ k0;
    r.y = lo1;
    r.z = hi0 ^ c.w ^ k1;
    r.w = lo0;
    return r;
}

// Ten rounds, the key bumped by the Weyl constants between rounds (Random123's philox4x32_10).
__device__ __forceinline__ Philox4 philox4x32_10(Philox4 c, unsigned int k0, unsigned int k1) {
    for (int round = 0; round < 10; ++round) {
        if (round) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        c = philox_round(c, k0, k1);
    }
    return c;
}

__device__ __forceinline__ float philox_uniform(unsigned int word) {
    return (float)(word >> 8) * 5.9604644775390625e-08f;  // 2^-24: [0, 1), every value exact in float
}

template <typename T>
__device__ __forceinline__ void dropout_forward(T* __restrict__ out, unsigned char* __restrict__ mask,
                                                const T* __restrict__ x, long long numel, float p, T scale,
                                                unsigned long long seed, unsigned long long offset) {
    const long long groups = (numel + 3) / 4;
    for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups;
         g += (long long)gridDim.x * blockDim.x) {
        Philox4 c;
        c.x = (unsigned int)((unsigned long long)g & 0xffffffffu);
        c.y = (unsigned int)((unsigned long long)g >> 32);
        c.z = (unsigned int)(offset & 0xffffffffu);
        c.w = (unsigned int)(offset >> 32);
        const Philox4 r = philox4x32_10(c, (unsigned int)(seed & 0xffffffffu), (unsigned int)(seed >> 32));
        const unsigned int words[4] = {r.x, r.y, r.z, r.w};
        for (int k = 0; k < 4; ++k) {
            const long long i = g * 4 + k;
            if (i < numel) {
                const bool keep = philox_uniform(words[k]) >= p;
                mask[i] = keep ? 1 : 0;
                out[i] = (x[i] * T(keep ? 1 : 0)) * scale;  // x * mask * scale: inf * 0 = nan, as numpy_ref
            }
        }
    }
}

template <typename T>
__device__ __forceinline__ void dropout_backward(T* __restrict__ dx, const T* __restrict__ dout,
                                                 const unsigned char* __restrict__ mask, long long numel, T scale) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < numel;
         i += (long long)gridDim.x * blockDim.x)
        dx[i] = (dout[i] * T(mask[i] ? 1 : 0)) * scale;
}

#define MG_ELEMENTWISE_ENTRIES(T, SUF)                                                                       \
    extern "C" __global__ void bias_gelu_forward_##SUF(T* __restrict__ out, const T* __restrict__ x,       \
                                                       const T* __restrict__ bias, long long rows, int D,  \
                                                       int approximate) {                                  \
        bias_gelu_forward<T>(out, x, bias, rows, D, approximate);                                          \
    }                                                                                                      \
    extern "C" __global__ void bias_gelu_backward_##SUF(T* __restrict__ dx, const T* __restrict__ dout,    \
                                                        const T* __restrict__ x,                           \
                                                        const T* __restrict__ bias, long long rows, int D, \
                                                        int approximate) {                                 \
        bias_gelu_backward<T>(dx, dout, x, bias, rows, D, approximate);                                    \
    }                                                                                                      \
    extern "C" __global__ void bias_residual_forward_##SUF(T* __restrict__ out, const T* __restrict__ x,   \
                                                           const T* __restrict__ bias,                     \
                                                           const T* __restrict__ residual, long long rows, \
                                                           int D) {                                        \
        bias_residual_forward<T>(out, x, bias, residual, rows, D);                                         \
    }                                                                                                      \
    extern "C" __global__ void dropout_forward_##SUF(T* __restrict__ out, unsigned char* __restrict__ mask, \
                                                     const T* __restrict__ x, long long numel, float p,    \
                                                     T scale, unsigned long long seed,                     \
                                                     unsigned long long offset) {                          \
        dropout_forward<T>(out, mask, x, numel, p, scale, seed, offset);                                   \
    }                                                                                                      \
    extern "C" __global__ void dropout_backward_##SUF(T* __restrict__ dx, const T* __restrict__ dout,      \
                                                      const unsigned char* __restrict__ mask,              \
                                                      long long numel, T scale) {                          \
        dropout_backward<T>(dx, dout, mask, numel, scale);                                                 \
    }

MG_ELEMENTWISE_ENTRIES(float, f32)
MG_ELEMENTWISE_ENTRIES(double, f64)
