// adamw.cu: the fused Adam / AdamW step, in place, float32 and float64. Oracle: numpy_ref.adam_step_
// (minigrad.optim.Adam / AdamW's step), operation for operation, so that float32 results round alike.
//
// Entry point (T = f32 | f64; all arrays (n,) contiguous; max_exp_avg_sq null unless amsgrad):
//   adamw_step_T(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, long long n,
//                T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T weight_decay, T param_decay,
//                T sqrt_bias_correction2, T step_size, T eps, int decoupled, int amsgrad, int maximize)
//   The scalars are computed by the caller in double precision, as numpy_ref does in Python, then
//   rounded to T (as NumPy rounds a Python float operand):
//       one_minus_beta1 = 1 - beta1, one_minus_beta2 = 1 - beta2,
//       param_decay = 1 - lr * weight_decay                         (used when decoupled: AdamW)
//       sqrt_bias_correction2 = sqrt(1 - beta2 ** step), step_size = lr / (1 - beta1 ** step)
//   Per element:
//       g = maximize ? -grad : grad
//       if weight_decay != 0: decoupled ? param *= param_decay : g += weight_decay * param
//       m = m * beta1 + g * (1 - beta1);  v = v * beta2 + (g * g) * (1 - beta2)
//       if amsgrad: vmax = max(vmax, v) (nan-propagating, as np.maximum), v = vmax
//       param -= (m / (sqrt(v) / sqrt_bias_correction2 + eps)) * step_size
//
// Decomposition: purely elementwise; one thread per element in a grid-stride loop (block = (B), any B
// and grid, e.g. B = 256 and grid = min(ceil(n / B), 4 * number of SMs)). Each element's param, grad and
// state are read once and written once: the step is memory-bound, and fusing its ~15 NumPy passes into
// one is the point. (Under NVRTC's default --fmad=true some multiply-adds may contract to FMAs, which
// changes float32 results in the last bit compared with NumPy.)

#include "common.cuh"  // Real<T>, max_nan

template <typename T>
__device__ __forceinline__ void adamw_step(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                                           T* __restrict__ exp_avg_sq, T* __restrict__ max_exp_avg_sq, long long n,
                                           T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T weight_decay,
                                           T param_decay, T sqrt_bias_correction2, T step_size, T eps,
                                           int decoupled, int amsgrad, int maximize) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T p = param[i];
        T g = maximize ? -grad[i] : grad[i];
        if (weight_decay != T(0)) {
            if (decoupled)
                p = p * param_decay;
            else
                g = g + weight_decay * p;
        }
        const T m = exp_avg[i] * beta1 + g * one_minus_beta1;
        T v = exp_avg_sq[i] * beta2 + (g * g) * one_minus_beta2;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (amsgrad) {
            const T vmax = max_exp_avg_sq[i];
            v = max_nan(vmax, v);  // np.maximum(vmax, v): nan wins
            max_exp_avg_sq[i] = v;
        }
        const T denom = Real<T>::sqrt_(v) / sqrt_bias_correction2 + eps;
        param[i] = p - (m / denom) * step_size;
    }
}

#define MG_ADAMW_ENTRIES(T, SUF)                                                                             \
    extern "C" __global__ void adamw_step_##SUF(T* __restrict__ param, const T* __restrict__ grad,         \
                                                T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,       \
                                                T* __restrict__ max_exp_avg_sq, long long n, T beta1,      \
                                                T one_minus_beta1, T beta2, T one_minus_beta2,             \
                                                T weight_decay, T param_decay, T sqrt_bias_correction2,    \
                                                T step_size, T eps, int decoupled, int amsgrad,            \
                                                int maximize) {                                            \
        adamw_step<T>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, beta1, one_minus_beta1, beta2,  \
                      one_minus_beta2, weight_decay, param_decay, sqrt_bias_correction2, step_size, eps,   \
                      decoupled, amsgrad, maximize);                                                       \
    }

MG_ADAMW_ENTRIES(float, f32)
MG_ADAMW_ENTRIES(double, f64)
