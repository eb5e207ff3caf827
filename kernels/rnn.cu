// rnn.cu: the gate math of one LSTM / GRU step, forward and backward, float32 and float64. Loaded with
// NVRTC (CuPy RawModule); no host code. The recurrent and input matmuls (gates_x = x W_ih^T + b_ih,
// gates_h = h W_hh^T + b_hh) are separate GEMMs (gemm.cu); these kernels fuse everything between them.
// The oracle is minigrad.backend.numpy_ref (lstm_cell_forward / _backward, gru_cell_forward / _backward),
// with the layouts of base.PRIMITIVES: gate blocks H columns wide in PyTorch's order (LSTM i, f, g, o;
// GRU r, z, n), and caches holding the activated gates, so that backward needs no transcendental calls.
//
// Entry points (T = f32 | f64; every array contiguous, row-major; B >= 0 rows, H >= 1 units):
//   lstm_cell_forward_T(T* hc, T* cache, const T* gates_x, const T* gates_h, const T* c, long long B, int H)
//       gates_x, gates_h (B, 4H); c (B, H) -> hc (2, B, H): hc[0] = h', hc[1] = c'; cache (B, 5H): the
//       activated gates i, f, g, o and tanh(c'). c' = f c + i g, h' = o tanh(c').
//   lstm_cell_backward_T(T* dgates, T* dc, const T* dh, const T* dc_new, const T* cache, const T* c,
//                        long long B, int H)
//       dh = dL/dh', dc_new = dL/dc' (B, H), dc_new may be null (a zero gradient: the last step) ->
//       dgates (B, 4H) (the gradient of gates_x and of gates_h alike), dc = dL/dc (B, H).
//   gru_cell_forward_T(T* h_new, T* cache, const T* gates_x, const T* gates_h, const T* h, long long B, int H)
//       gates_x, gates_h (B, 3H); h (B, H) -> h' (B, H) = n + z (h - n); cache (B, 4H): r, z, n and
//       gates_h's n block (the reset gate scales it, so backward needs it).
//   gru_cell_backward_T(T* dgates_x, T* dgates_h, T* dh, const T* dh_new, const T* cache, const T* h,
//                       long long B, int H)
//       -> dgates_x, dgates_h (B, 3H) (they differ only in the n block: dn vs dn * r), dh (B, H).
//
// Decomposition: one thread per (row b, unit j), the flat index b * H + j, with a grid-stride loop, so
// any 1-D launch works: block = (B) threads, e.g. 256, grid = min(ceil(B * H / 256), a few per SM). A
// thread reads the 4 (3) gate pre-activations of its unit, H elements apart in the row, and writes its
// unit of every output block; consecutive threads touch consecutive addresses in every block (coalesced).
// No shared memory, no barriers, no reductions: every output element is written by exactly one thread.
//
// Numerics: the operations are those of numpy_ref in its order (same rounding where the compiler forms
// no FMAs). sigmoid uses e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e) for x < 0, the form of
// numpy_ref.sigmoid: e <= 1, so nothing overflows for any pre-activation (+-30, +-1e4, inf included:
// sigmoid(+-inf) = 1 / 0 exactly); tanh is the C library's (tanhf / tanh), which saturates to +-1.

#include "common.cuh"  // Real<T>

template <typename T> __device__ __forceinline__ T sigmoid(T x) {
    const bool pos = x >= T(0);
    const T e = Real<T>::exp_(pos ? -x : x);  // exp(-|x|) <= 1
    return pos ? T(1) / (T(1) + e) : e / (T(1) + e);
}

// The grid-stride loop over the B * H units: f(t, b, j) for t = b * H + j, each by one thread.
template <typename F> __device__ __forceinline__ void for_each_unit(long long B, int H, F f) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < B * H;
         t += (long long)gridDim.x * blockDim.x) {
        const long long b = t / H;
        f(t, b, t - b * H);
    }
}

template <typename T>
__device__ __forceinline__ void lstm_cell_forward(T* __restrict__ hc, T* __restrict__ cache,
                                                  const T* __restrict__ gx, const T* __restrict__ gh,
                                                  const T* __restrict__ c, long long B, int H) {
    for_each_unit(B, H, [&](long long t, long long b, long long j) {
        const long long g4 = b * 4 * H + j, g5 = b * 5 * H + j;
        const T i = sigmoid(gx[g4] + gh[g4]);
        const T f = sigmoid(gx[g4 + H] + gh[g4 + H]);
        const T g = Real<T>::tanh_(gx[g4 + 2 * H] + gh[g4 + 2 * H]);
        const T o = sigmoid(gx[g4 + 3 * H] + gh[g4 + 3 * H]);
        const T c_new = f * c[t] + i * g;
        const T tc = Real<T>::tanh_(c_new);
        hc[t] = o * tc;
        hc[B * H + t] = c_new;
        cache[g5] = i;
        cache[g5 + H] = f;
        cache[g5 + 2 * H] = g;
        cache[g5 + 3 * H] = o;
        cache[g5 + 4 * H] = tc;
    });
}

template <typename T>
__device__ __forceinline__ void lstm_cell_backward(T* __restrict__ dgates, T* __restrict__ dc,
                                                   const T* __restrict__ dh, const T* __restrict__ dc_new,
                                                   const T* __restrict__ cache, const T* __restrict__ c, long long B,
                                                   int H) {
    for_each_unit(B, H, [&](long long t, long long b, long long j) {
        const long long g4 = b * 4 * H + j, g5 = b * 5 * H + j;
        const T i = cache[g5], f = cache[g5 + H], g = cache[g5 + 2 * H], o = cache[g5 + 3 * H],
                tc = cache[g5 + 4 * H];
        const T d = dh[t];
        // the gradient reaching c': through h' = o tanh(c') and directly
        const T dct = (dc_new ? dc_new[t] : T(0)) + d * o * (T(1) - tc * tc);
        dgates[g4] = dct * g * i * (T(1) - i);
        dgates[g4 + H] = dct * c[t] * f * (T(1) - f);
        dgates[g4 + 2 * H] = dct * i * (T(1) - g * g);
        dgates[g4 + 3 * H] = d * tc * o * (T(1) - o);
        dc[t] = dct * f;
    });
}

template <typename T>
__device__ __forceinline__ void gru_cell_forward(T* __restrict__ h_new, T* __restrict__ cache,
                                                 const T* __restrict__ gx, const T* __restrict__ gh,
                                                 const T* __restrict__ h, long long B, int H) {
    for_each_unit(B, H, [&](long long t, long long b, long long j) {
        const long long g3 = b * 3 * H + j, g4 = b * 4 * H + j;
        const T r = sigmoid(gx[g3] + gh[g3]);
        const T z = sigmoid(gx[g3 + H] + gh[g3 + H]);
        const T hn = gh[g3 + 2 * H];
        const T n = Real<T>::tanh_(gx[g3 + 2 * H] + r * hn);  // the reset gate scales the recurrent part
        h_new[t] = n + z * (h[t] - n);
        cache[g4] = r;
        cache[g4 + H] = z;
        cache[g4 + 2 * H] = n;
        cache[g4 + 3 * H] = hn;
    });
}

template <typename T>
__device__ __forceinline__ void gru_cell_backward(T* __restrict__ dgx, T* __restrict__ dgh, T* __restrict__ dh,
                                                  const T* __restrict__ dh_new, const T* __restrict__ cache,
                                                  const T* __restrict__ h, long long B, int H) {
    for_each_unit(B, H, [&](long long t, long long b, long long j) {
        const long long g3 = b * 3 * H + j, g4 = b * 4 * H + j;
        const T r = cache[g4], z = cache[g4 + H], n = cache[g4 + 2 * H], hn = cache[g4 + 3 * H];
        const T d = dh_new[t];
        // h' = n + z (h - n): dn = dh' (1 - z), dz = dh' (h - n), dh = dh' z; then the activations
        const T dn = d * (T(1) - z) * (T(1) - n * n);
        const T dr = dn * hn * r * (T(1) - r);
        const T dz = d * (h[t] - n) * z * (T(1) - z);
        dgx[g3] = dr;
        dgx[g3 + H] = dz;
        dgx[g3 + 2 * H] = dn;
        dgh[g3] = dr;
        dgh[g3 + H] = dz;
        dgh[g3 + 2 * H] = dn * r;
        dh[t] = d * z;
    });
}

// ---- extern "C" entry points (unmangled names for RawModule.get_function) ---------------------------

#define MG_RNN_ENTRIES(T, SUF)                                                                                 \
    extern "C" __global__ void lstm_cell_forward_##SUF(T* __restrict__ hc, T* __restrict__ cache,             \
                                                       const T* __restrict__ gates_x,                         \
                                                       const T* __restrict__ gates_h, const T* __restrict__ c, \
                                                       long long B, int H) {                                  \
        lstm_cell_forward<T>(hc, cache, gates_x, gates_h, c, B, H);                                            \
    }                                                                                                          \
    extern "C" __global__ void lstm_cell_backward_##SUF(T* __restrict__ dgates, T* __restrict__ dc,           \
                                                        const T* __restrict__ dh, const T* __restrict__ dc_new, \
                                                        const T* __restrict__ cache, const T* __restrict__ c, \
                                                        long long B, int H) {                                 \
        lstm_cell_backward<T>(dgates, dc, dh, dc_new, cache, c, B, H);                                         \
    }                                                                                                          \
    extern "C" __global__ void gru_cell_forward_##SUF(T* __restrict__ h_new, T* __restrict__ cache,           \
                                                      const T* __restrict__ gates_x,                          \
                                                      const T* __restrict__ gates_h, const T* __restrict__ h, \
                                                      long long B, int H) {                                   \
        gru_cell_forward<T>(h_new, cache, gates_x, gates_h, h, B, H);                                          \
    }                                                                                                          \
    extern "C" __global__ void gru_cell_backward_##SUF(T* __restrict__ dgates_x, T* __restrict__ dgates_h,    \
                                                       T* __restrict__ dh, const T* __restrict__ dh_new,      \
                                                       const T* __restrict__ cache, const T* __restrict__ h,  \
                                                       long long B, int H) {                                  \
        gru_cell_backward<T>(dgates_x, dgates_h, dh, dh_new, cache, h, B, H);                                  \
    }

MG_RNN_ENTRIES(float, f32)
MG_RNN_ENTRIES(double, f64)
