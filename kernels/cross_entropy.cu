// cross_entropy.cu: cross-entropy fused with log-softmax, with ignore_index and label smoothing,
// float32 and float64. Oracle: numpy_ref.cross_entropy_forward / cross_entropy_backward (PyTorch's
// definitions). Deterministic: fixed reduction trees, no atomics.
//
// Entry points (T = f32 | f64; logits/logprobs/dlogits (N, C) contiguous, targets int64 (N,)):
//   cross_entropy_forward_T(T* losses, T* logprobs, const T* logits, const long long* targets,
//                           long long N, int C, long long ignore_index, T label_smoothing)
//       logprobs = log_softmax(logits) (every row, ignored ones too);
//       losses[r] = (1 - ls) * -logprobs[r, y] + ls * mean_c(-logprobs[r, c]), 0 where y == ignore_index.
//       Targets of other rows must be in [0, C) (the ops layer validates).
//   cross_entropy_backward_T(T* dlogits, const T* dlosses, const T* logprobs, const long long* targets,
//                            long long N, int C, long long ignore_index, T label_smoothing)
//       dlogits[r, c] = (exp(logprobs[r, c]) - (1 - ls) [c == y] - ls / C) * dlosses[r]; exactly 0 on
//       ignored rows (even where dlosses is inf or nan).
//
// Decomposition:
//   forward: one block per row (grid-stride over the rows; block = (B) threads, B a multiple of 32 up
//       to 1024: 256 or so for a vocabulary of thousands, 32 for a handful of classes). Pass 1: thread t
//       keeps an online (max, sum of exp) pair over elements t, t+B, ... (every exponent <= 0: stable at
//       any magnitude, +-1e4 included); the pairs merge in a warp butterfly (__shfl_xor_sync) and then
//       across warps through shared memory. Pass 2: each thread writes its logprobs and, with label
//       smoothing, sums them; that sum is reduced the same way. Thread 0 writes the loss, recomputing
//       logprobs[y] with the same expression (bitwise the value written) rather than reading it back.
//       Special values follow log_softmax: a row of all -inf gives nan logprobs and a nan loss (0 if
//       ignored); +inf or nan in a row makes it nan.
//   backward: elementwise, a grid-stride loop over the N*C elements (row = i / C); block = (B), any grid.

#include "common.cuh"  // Real<T>, max_nan, warp/block reductions, online softmax statistics

template <typename T>
__device__ __forceinline__ void cross_entropy_forward(T* __restrict__ losses, T* __restrict__ logprobs,
                                                      const T* __restrict__ logits,
                                                      const long long* __restrict__ targets, long long N, int C,
                                                      long long ignore_index, T ls) {
    for (long long row = blockIdx.x; row < N; row += gridDim.x) {  // uniform across the block
        const T* xr = logits + row * C;
        T* lp = logprobs + row * C;
        T m = Real<T>::neg_inf(), s = T(0);
        for (int j = threadIdx.x; j < C; j += blockDim.x) online_add(m, s, xr[j]);
        block_merge(m, s);
        const T shift = (m == Real<T>::neg_inf()) ? T(0) : m, lse = Real<T>::log_(s);
        T sum_lp = T(0);
        for (int j = threadIdx.x; j < C; j += blockDim.x) {
            const T v = (xr[j] - shift) - lse;
            lp[j] = v;
            sum_lp += v;
        }
        if (ls != T(0)) sum_lp = block_sum(sum_lp);  // ls is uniform: all threads or none reach the barriers
        if (threadIdx.x == 0) {
            const long long y = targets[row];
            T loss = T(0);
            if (y != ignore_index) {
                loss = -((xr[y] - shift) - lse);
                if (ls != T(0)) loss = (T(1) - ls) * loss - ls * (sum_lp / T(C));
            }
            losses[row] = loss;
        }
    }
}

template <typename T>
__device__ __forceinline__ void cross_entropy_backward(T* __restrict__ dlogits, const T* __restrict__ dlosses,
                                                       const T* __restrict__ logprobs,
                                                       const long long* __restrict__ targets, long long N, int C,
                                                       long long ignore_index, T ls) {
    const long long total = N * C;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long row = i / C, col = i - row * C;
        const long long y = targets[row];
        if (y == ignore_index) {
            dlogits[i] = T(0);
            continue;
        }
        T d = Real<T>::exp_(logprobs[i]);
        if (col == y) d -= T(1) - ls;
        if (ls != T(0)) d -= ls / T(C);
        dlogits[i] = d * dlosses[row];
    }
}

#define MG_CROSS_ENTROPY_ENTRIES(T, SUF)                                                                     \
    extern "C" __global__ void cross_entropy_forward_##SUF(T* __restrict__ losses, T* __restrict__ logprobs,\
                                                           const T* __restrict__ logits,                   \
                                                           const long long* __restrict__ targets,          \
                                                           long long N, int C, long long ignore_index,     \
                                                           T label_smoothing) {                            \
        cross_entropy_forward<T>(losses, logprobs, logits, targets, N, C, ignore_index, label_smoothing);  \
    }                                                                                                      \
    extern "C" __global__ void cross_entropy_backward_##SUF(T* __restrict__ dlogits,                       \
                                                            const T* __restrict__ dlosses,                 \
                                                            const T* __restrict__ logprobs,                \
                                                            const long long* __restrict__ targets,         \
                                                            long long N, int C, long long ignore_index,    \
                                                            T label_smoothing) {                           \
        cross_entropy_backward<T>(dlogits, dlosses, logprobs, targets, N, C, ignore_index, label_smoothing);\
    }

MG_CROSS_ENTROPY_ENTRIES(float, f32)
MG_CROSS_ENTROPY_ENTRIES(double, f64)
