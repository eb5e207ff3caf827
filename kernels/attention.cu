// attention.cu: scaled dot-product attention, FlashAttention-style (the (Tq, Tk) scores are never stored in
// global memory), forward and backward, float32 and float64. Loaded with NVRTC (CuPy RawModule); no host
// code; the warp reductions are in common.cuh. The oracle is minigrad.backend.numpy_ref.attention_forward /
// attention_backward (semantics in minigrad/backend/base.py; the CPU flash version is
// minigrad/backend/numba_attention.py):
//   out = softmax(S) v, S = (scale q) k^T + bias, with S = -inf where is_causal hides key j > query i (top-left
//   aligned, as torch's is_causal: query i sees keys j <= i whatever Tq and Tk are); lse = logsumexp of each
//   row of S. A fully masked row (every key hidden, by the causal mask or by -inf bias) gives out = 0 and
//   lse = -inf; its gradients are 0.
//
// Layouts: q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv), out / dout (B, H, Tq, Dv), lse / delta
// (B, H, Tq), dq, dk, dv like q, k, v: all contiguous. 1 <= D, Dv <= MG_ATT_MAXD = 128 (the caller checks).
// The bias is an additive float mask broadcastable to (B, H, Tq, Tk), given as a pointer and element strides
// (sb, sh, si, sj): bias(b, h, i, j) = bias[b*sb + h*sh + i*si + j*sj]; a broadcast dimension has stride 0
// (numpy.broadcast_to(bias, (B, H, Tq, Tk)).strides / itemsize). bias = NULL: no bias (strides ignored).
// is_causal: 0 or 1.
//
// Entry points (T = f32 | f64; "..." = const T* bias, long long sb, long long sh, long long si, long long sj,
// int B, int H, int Tq, int Tk, int D, int Dv, int is_causal, T scale):
//   attention_forward_T(T* out, T* lse, const T* q, const T* k, const T* v, ...)
//       block = (128) threads, exactly; grid = (ceil(Tq / L), B * H), any smaller grid also works (grid-stride
//       loops; gridDim.y is limited to 65535, so clamp it).
//   attention_backward_delta_T(T* delta, const T* dout, const T* out, long long rows, int Dv)
//       delta[row] = sum_d dout[row, d] * out[row, d] over the B*H*Tq rows. block = (32 * W) threads, W in
//       1..32; any grid (warp w of block b takes rows b*W + w, + gridDim.x*W, ...).
//   attention_backward_dkv_T(T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* lse,
//                            const T* delta, ...)
//       block = (128); grid = (ceil(Tk / O), B * H) or smaller.
//   attention_backward_dq_T(T* dq, const T* dout, const T* q, const T* k, const T* v, const T* lse,
//                           const T* delta, ...)
//       block = (128); grid = (ceil(Tq / O), B * H) or smaller.
//   The backward pass is the three launches in this order: delta, then dkv and dq (independent of each
//   other). Every output element is written by exactly one thread, every sum is in a fixed order: no atomics,
//   deterministic, independent of the grid.
//
// Tile sizes (AttTile<T>): L = 32 in float32, 16 in float64; O = 8 in float32, 4 in float64. The kernels are
// warp-centric, 4 warps per block: a warp owns rows (queries, or keys) one at a time, its lanes take either
// the L keys (or queries) of a tile, one each, to compute scores, or the feature dimensions d = lane + 32 c
// (c < 4) to accumulate outputs; the two views are joined by __shfl_sync of the per-lane probability.
// Everything staged in shared memory is static and under the 48 KiB limit of static shared memory in
// float64 too, which is what fixes L and O with D up to 128: the forward stages three L x 128 tiles (48 KiB
// exactly, in both types, hence L = 16 in float64: lanes 16..31 idle while scores are computed); the
// backward kernels stage two tiles of L rows padded to 129 columns (lanes walk their rows: the padding makes
// the strided reads hit distinct banks) and two of O rows (read as broadcasts), 41.5 KiB.
//
// Forward: one block per (b, h, block of L queries). The block stages its queries (times scale) once, then
// walks the key blocks of L keys (causal: only those with a key <= the block's last query; the blocks wholly
// above the diagonal are skipped), staging K transposed (Kt[d][j]: lane j reads consecutive words) and V
// in shared memory. Warp w owns query rows w, w + 4, ... of the block; for each row, lane j computes the
// score of key j0 + j, the warp reduces the tile max (butterfly), and the row's running max m, running sum
// l = sum exp(s - m) and accumulator acc = sum exp(s - m) v (lane owns d = lane + 32 c) are rescaled by
// exp(m_old - m_new) when m grows (the online softmax). At the end out = acc * (1 / l), lse = m + log(l); l == 0
// (every key hidden) gives out = 0, lse = -inf. A tile max of -inf (every key of the tile hidden so far)
// uses shift 0, so exp(-inf - 0) = 0 and no nan appears.
//
// Backward (FlashAttention-2 decomposition, no atomics): with P = exp(S - lse) recomputed tile by tile from
// the saved lse (shift 0 where lse = -inf: then the row's P is 0), dP = dO V^T and delta = rowsum(dO * O)
// (= rowsum(P * dP), the FlashAttention identity, so no (Tq, Tk) reduction is needed):
//   dS = P * (dP - delta),  dV = P^T dO,  dK = dS^T (scale q),  dQ = (dS K) * scale.
//   * delta: one warp per row.
//   * dkv: a block owns O keys of one (b, h) (warp w: keys w, w + 4, ...; lane owns d = lane + 32 c of that
//     key's dK and dV accumulators, in registers) and walks all the query blocks of L queries that can see
//     them (causal: from the block of query j0), staging scale q, dO, lse and delta; per owned key, lane i
//     computes P and dS of query i0 + i, then dV += sum_i P_i dO_i and dK += sum_i dS_i (scale q_i), the
//     P_i / dS_i broadcast by shuffles, in increasing i.
//   * dq: the mirror image: a block owns O queries, walks the key blocks of L keys (causal: up to its last
//     query), staging K and V; lane j computes dS of key j0 + j, dQ += sum_j dS_j K_j.
//   The scores are recomputed in both dkv and dq (the price of having no atomics and no dS in memory).
//
// Numerics: q is scaled before the product (as numpy_ref); every dot product and every accumulation is a
// sequential sum in one thread (fused multiply-adds where the compiler contracts them); the row sums of
// the forward are warp butterflies. Every exponent is <= 0 (s - running max, s - lse), so nothing overflows.
// Scores far from the max underflow to 0, as in the reference.

#include "common.cuh"  // Real<T>, max_nan, warp_reduce / warp_sum

#define MG_ATT_MAXD 128   // the largest D and Dv
#define MG_ATT_WARPS 4    // warps per block of the forward, dkv and dq kernels (block = 128 threads)
#define MG_ATT_C (MG_ATT_MAXD / 32)  // feature dimensions per lane (d = lane + 32 c)

template <typename T> struct AttTile;
template <> struct AttTile<float> {
    static constexpr int L = 32;  // keys (forward, dq) or queries (dkv) of a tile walked by the lanes
    static constexpr int O = 8;   // queries (dq) or keys (dkv) owned by a backward block
};
template <> struct AttTile<double> {
    static constexpr int L = 16;
    static constexpr int O = 4;
};

// The bias of (i, j), boff = b*sb + h*sh already applied; 0 without a bias.
template <typename T>
__device__ __forceinline__ T att_bias(const T* __restrict__ bias, long long boff, long long si, long long sj, int i,
                                      int j) {
    return bias ? bias[boff + i * si + j * sj] : T(0);
}

// The slices of head bh = b * H + h of q, k, v and dout (NULL in the forward), and the bias offset of (b, h).
template <typename T> struct AttHead {
    const T *q, *k, *v, *dout;
    long long boff;
    __device__ __forceinline__ AttHead(const T* q_, const T* k_, const T* v_, const T* dout_, int bh, int H, int Tq,
                                       int Tk, int D, int Dv, long long sb, long long sh)
        : q(q_ + (long long)bh * Tq * D), k(k_ + (long long)bh * Tk * D), v(v_ + (long long)bh * Tk * Dv),
          dout(dout_ ? dout_ + (long long)bh * Tq * Dv : dout_),
          boff((long long)(bh / H) * sb + (long long)(bh % H) * sh) {}
};

// Copy rows first.. of a (rows, n) matrix (times mul) into S[r][d] (r < R, d < n; zero past `rows`), with
// all the threads of the block.
template <typename T, int R, int W>
__device__ __forceinline__ void att_load_rows(T (*S)[W], const T* __restrict__ X, int first, int rows, int n, T mul) {
    for (int e = threadIdx.x; e < R * n; e += blockDim.x) {
        const int r = e / n, d = e % n;
        S[r][d] = first + r < rows ? X[(long long)(first + r) * n + d] * mul : T(0);
    }
}

// acc[c] += sum_j w_j X[j][d] for the lane's dimensions d = lane + 32 c < n, w_j the w of lane j (j < NJ),
// in increasing j: the product of a row of per-lane weights (P or dS) with a shared-memory tile. Every lane
// of the warp must call it (shuffles).
template <typename T, int NJ, int W>
__device__ __forceinline__ void att_accumulate(T (&acc)[MG_ATT_C], T w, T (*X)[W], int n) {
    const int lane = threadIdx.x & 31;
    for (int j = 0; j < NJ; ++j) {
        const T wj = __shfl_sync(0xffffffffu, w, j);
#pragma unroll
        for (int c = 0; c < MG_ATT_C; ++c) {
            const int d = lane + 32 * c;
            if (d < n) acc[c] += wj * X[j][d];
        }
    }
}

// dst[d] = acc[c] * mul for the lane's dimensions d = lane + 32 c < n.
template <typename T>
__device__ __forceinline__ void att_store(T* __restrict__ dst, const T (&acc)[MG_ATT_C], int n, T mul) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int c = 0; c < MG_ATT_C; ++c) {
        const int d = lane + 32 * c;
        if (d < n) dst[d] = acc[c] * mul;
    }
}

template <typename T>
__device__ __forceinline__ void attention_forward(T* __restrict__ out, T* __restrict__ lse, const T* __restrict__ q,
                                                  const T* __restrict__ k, const T* __restrict__ v,
                                                  const T* __restrict__ bias, long long sb, long long sh,
                                                  long long si, long long sj, int B, int H, int Tq, int Tk, int D,
                                                  int Dv, int causal, T scale) {
    constexpr int L = AttTile<T>::L, ROWS = L / MG_ATT_WARPS;
    __shared__ T Qs[L][MG_ATT_MAXD];  // scale q of the block's queries
    __shared__ T Kt[MG_ATT_MAXD][L];  // the key tile, transposed
    __shared__ T Vs[L][MG_ATT_MAXD];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int qblocks = (Tq + L - 1) / L;
    for (int bh = blockIdx.y; bh < B * H; bh += gridDim.y) {  // uniform across the block
        const AttHead<T> hd(q, k, v, (const T*)0, bh, H, Tq, Tk, D, Dv, sb, sh);
        for (int qb = blockIdx.x; qb < qblocks; qb += gridDim.x) {
            const int i0 = qb * L;
            __syncthreads();  // the previous block's readers of Qs are done
            att_load_rows<T, L, MG_ATT_MAXD>(Qs, hd.q, i0, Tq, D, scale);
            T m[ROWS], l[ROWS], acc[ROWS][MG_ATT_C];
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                m[r] = Real<T>::neg_inf();
                l[r] = T(0);
#pragma unroll
                for (int c = 0; c < MG_ATT_C; ++c) acc[r][c] = T(0);
            }
            const int last = (i0 + L < Tq ? i0 + L : Tq) - 1;  // the block's last query
            const int kend = causal && last + 1 < Tk ? last + 1 : Tk;  // causal: keys > last are hidden
            for (int j0 = 0; j0 < kend; j0 += L) {
                __syncthreads();  // Qs written; the previous tile's readers are done
                for (int e = threadIdx.x; e < L * D; e += blockDim.x) {
                    const int jj = e / D, d = e % D;
                    Kt[d][jj] = j0 + jj < Tk ? hd.k[(long long)(j0 + jj) * D + d] : T(0);
                }
                att_load_rows<T, L, MG_ATT_MAXD>(Vs, hd.v, j0, Tk, Dv, T(1));
                __syncthreads();
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
                    const int ii = warp + MG_ATT_WARPS * r, i = i0 + ii;
                    if (i >= Tq) continue;  // uniform across the warp
                    const int j = j0 + lane;
                    T s = Real<T>::neg_inf();
                    if (lane < L && j < Tk && !(causal && j > i)) {
                        T dot = T(0);
                        for (int d = 0; d < D; ++d) dot += Qs[ii][d] * Kt[d][lane];
                        s = dot + att_bias(bias, hd.boff, si, sj, i, j);
                    }
                    const T nm = max_nan(m[r], warp_reduce<T, MaxOp<T>>(s));
                    const T shift = nm == Real<T>::neg_inf() ? T(0) : nm;  // all hidden so far: exp(-inf) = 0
                    const T p = Real<T>::exp_(s - shift);
                    const T alpha = Real<T>::exp_(m[r] - shift);  // 0 when m was -inf
                    l[r] = l[r] * alpha + warp_sum(p);
                    m[r] = nm;
#pragma unroll
                    for (int c = 0; c < MG_ATT_C; ++c) acc[r][c] *= alpha;
                    att_accumulate<T, L>(acc[r], p, Vs, Dv);  // acc += P V
                }
            }
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                const int i = i0 + warp + MG_ATT_WARPS * r;
                if (i >= Tq) continue;
                const long long row = (long long)bh * Tq + i;
                att_store(out + row * Dv, acc[r], Dv, l[r] > T(0) ? T(1) / l[r] : T(0));  // (all hidden: acc = 0)
                if (lane == 0) lse[row] = l[r] > T(0) ? m[r] + Real<T>::log_(l[r]) : Real<T>::neg_inf();
            }
        }
    }
}

// delta = rowsum(dout * out), one warp per row (as softmax_backward_warp).
template <typename T>
__device__ __forceinline__ void attention_backward_delta(T* __restrict__ delta, const T* __restrict__ dout,
                                                         const T* __restrict__ out, long long rows, int Dv) {
    const int lane = threadIdx.x & 31, wpb = blockDim.x >> 5;
    for (long long row = (long long)blockIdx.x * wpb + (threadIdx.x >> 5); row < rows;
         row += (long long)gridDim.x * wpb) {
        T acc = T(0);
        for (int d = lane; d < Dv; d += 32) acc += dout[row * Dv + d] * out[row * Dv + d];
        acc = warp_sum(acc);
        if (lane == 0) delta[row] = acc;
    }
}

// P and dS of one (query, key) pair that is not hidden: qr, dor (the query's rows of scale q and dO), kr, vr
// (the key's rows of K and V) in shared memory; s_bias, the query's lse and delta.
template <typename T>
__device__ __forceinline__ void att_p_ds(T& p, T& ds, const T* qr, const T* dor, const T* kr, const T* vr, int D,
                                         int Dv, T s_bias, T row_lse, T row_delta) {
    T dot = T(0);
    for (int d = 0; d < D; ++d) dot += qr[d] * kr[d];
    const T shift = row_lse == Real<T>::neg_inf() ? T(0) : row_lse;  // fully masked row: P = exp(-inf) = 0
    p = Real<T>::exp_(dot + s_bias - shift);
    T dp = T(0);
    for (int d = 0; d < Dv; ++d) dp += dor[d] * vr[d];
    ds = p * (dp - row_delta);
}

template <typename T>
__device__ __forceinline__ void attention_backward_dkv(T* __restrict__ dk, T* __restrict__ dv,
                                                       const T* __restrict__ dout, const T* __restrict__ q,
                                                       const T* __restrict__ k, const T* __restrict__ v,
                                                       const T* __restrict__ lse, const T* __restrict__ delta,
                                                       const T* __restrict__ bias, long long sb, long long sh,
                                                       long long si, long long sj, int B, int H, int Tq, int Tk,
                                                       int D, int Dv, int causal, T scale) {
    constexpr int L = AttTile<T>::L, O = AttTile<T>::O, KPW = O / MG_ATT_WARPS;
    __shared__ T Qs[L][MG_ATT_MAXD + 1];  // scale q of the query tile
    __shared__ T dOs[L][MG_ATT_MAXD + 1];
    __shared__ T Ks[O][MG_ATT_MAXD];  // the block's keys
    __shared__ T Vs[O][MG_ATT_MAXD];
    __shared__ T lse_s[L];
    __shared__ T delta_s[L];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kblocks = (Tk + O - 1) / O;
    for (int bh = blockIdx.y; bh < B * H; bh += gridDim.y) {
        const AttHead<T> hd(q, k, v, dout, bh, H, Tq, Tk, D, Dv, sb, sh);
        for (int kb = blockIdx.x; kb < kblocks; kb += gridDim.x) {
            const int j0 = kb * O;
            __syncthreads();  // the previous block's readers of Ks / Vs are done
            att_load_rows<T, O, MG_ATT_MAXD>(Ks, hd.k, j0, Tk, D, T(1));
            att_load_rows<T, O, MG_ATT_MAXD>(Vs, hd.v, j0, Tk, Dv, T(1));
            T dka[KPW][MG_ATT_C], dva[KPW][MG_ATT_C];
#pragma unroll
            for (int r = 0; r < KPW; ++r)
#pragma unroll
                for (int c = 0; c < MG_ATT_C; ++c) dka[r][c] = dva[r][c] = T(0);
            const int qstart = causal ? (j0 / L) * L : 0;  // causal: queries < j0 see none of these keys
            for (int i0 = qstart; i0 < Tq; i0 += L) {
                __syncthreads();  // the previous tile's readers are done
                att_load_rows<T, L, MG_ATT_MAXD + 1>(Qs, hd.q, i0, Tq, D, scale);
                att_load_rows<T, L, MG_ATT_MAXD + 1>(dOs, hd.dout, i0, Tq, Dv, T(1));
                if (threadIdx.x < L) {
                    const int i = i0 + threadIdx.x;
                    lse_s[threadIdx.x] = i < Tq ? lse[(long long)bh * Tq + i] : T(0);
                    delta_s[threadIdx.x] = i < Tq ? delta[(long long)bh * Tq + i] : T(0);
                }
                __syncthreads();
#pragma unroll
                for (int r = 0; r < KPW; ++r) {
                    const int jr = warp + MG_ATT_WARPS * r, j = j0 + jr;
                    if (j >= Tk) continue;  // uniform across the warp
                    const int i = i0 + lane;
                    T p = T(0), ds = T(0);
                    if (lane < L && i < Tq && !(causal && j > i))
                        att_p_ds(p, ds, Qs[lane], dOs[lane], Ks[jr], Vs[jr], D, Dv,
                                 att_bias(bias, hd.boff, si, sj, i, j), lse_s[lane], delta_s[lane]);
                    att_accumulate<T, L>(dva[r], p, dOs, Dv);  // dV += P^T dO
                    att_accumulate<T, L>(dka[r], ds, Qs, D);   // dK += dS^T (scale q)
                }
            }
#pragma unroll
            for (int r = 0; r < KPW; ++r) {
                const int j = j0 + warp + MG_ATT_WARPS * r;
                if (j >= Tk) continue;
                const long long row = (long long)bh * Tk + j;
                att_store(dk + row * D, dka[r], D, T(1));
                att_store(dv + row * Dv, dva[r], Dv, T(1));
            }
        }
    }
}

template <typename T>
__device__ __forceinline__ void attention_backward_dq(T* __restrict__ dq, const T* __restrict__ dout,
                                                      const T* __restrict__ q, const T* __restrict__ k,
                                                      const T* __restrict__ v, const T* __restrict__ lse,
                                                      const T* __restrict__ delta, const T* __restrict__ bias,
                                                      long long sb, long long sh, long long si, long long sj, int B,
                                                      int H, int Tq, int Tk, int D, int Dv, int causal, T scale) {
    constexpr int L = AttTile<T>::L, O = AttTile<T>::O, QPW = O / MG_ATT_WARPS;
    __shared__ T Qs[O][MG_ATT_MAXD];  // scale q of the block's queries
    __shared__ T dOs[O][MG_ATT_MAXD];
    __shared__ T Ks[L][MG_ATT_MAXD + 1];  // the key tile
    __shared__ T Vs[L][MG_ATT_MAXD + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int qblocks = (Tq + O - 1) / O;
    for (int bh = blockIdx.y; bh < B * H; bh += gridDim.y) {
        const AttHead<T> hd(q, k, v, dout, bh, H, Tq, Tk, D, Dv, sb, sh);
        for (int qb = blockIdx.x; qb < qblocks; qb += gridDim.x) {
            const int i0 = qb * O;
            __syncthreads();  // the previous block's readers of Qs / dOs are done
            att_load_rows<T, O, MG_ATT_MAXD>(Qs, hd.q, i0, Tq, D, scale);
            att_load_rows<T, O, MG_ATT_MAXD>(dOs, hd.dout, i0, Tq, Dv, T(1));
            T acc[QPW][MG_ATT_C], row_lse[QPW], row_delta[QPW];
#pragma unroll
            for (int r = 0; r < QPW; ++r) {
                const int i = i0 + warp + MG_ATT_WARPS * r;
                row_lse[r] = i < Tq ? lse[(long long)bh * Tq + i] : T(0);
                row_delta[r] = i < Tq ? delta[(long long)bh * Tq + i] : T(0);
#pragma unroll
                for (int c = 0; c < MG_ATT_C; ++c) acc[r][c] = T(0);
            }
            const int last = (i0 + O < Tq ? i0 + O : Tq) - 1;
            const int kend = causal && last + 1 < Tk ? last + 1 : Tk;
            for (int j0 = 0; j0 < kend; j0 += L) {
                __syncthreads();  // Qs / dOs written; the previous tile's readers are done
                att_load_rows<T, L, MG_ATT_MAXD + 1>(Ks, hd.k, j0, Tk, D, T(1));
                att_load_rows<T, L, MG_ATT_MAXD + 1>(Vs, hd.v, j0, Tk, Dv, T(1));
                __syncthreads();
#pragma unroll
                for (int r = 0; r < QPW; ++r) {
                    const int ir = warp + MG_ATT_WARPS * r, i = i0 + ir;
                    if (i >= Tq) continue;  // uniform across the warp
                    const int j = j0 + lane;
                    T p = T(0), ds = T(0);
                    if (lane < L && j < Tk && !(causal && j > i))
                        att_p_ds(p, ds, Qs[ir], dOs[ir], Ks[lane], Vs[lane], D, Dv,
                                 att_bias(bias, hd.boff, si, sj, i, j), row_lse[r], row_delta[r]);
                    att_accumulate<T, L>(acc[r], ds, Ks, D);  // dQ += dS K
                }
            }
#pragma unroll
            for (int r = 0; r < QPW; ++r) {
                const int i = i0 + warp + MG_ATT_WARPS * r;
                if (i >= Tq) continue;
                const long long row = (long long)bh * Tq + i;
                att_store(dq + row * D, acc[r], D, scale);
            }
        }
    }
}

// ---- extern "C" entry points (unmangled names for RawModule.get_function) ---------------------------

#define MG_ATT_BIAS_ARGS(T)                                                                                   \
    const T *__restrict__ bias, long long sb, long long sh, long long si, long long sj, int B, int H, int Tq, \
        int Tk, int D, int Dv, int is_causal, T scale
#define MG_ATT_BIAS_PASS bias, sb, sh, si, sj, B, H, Tq, Tk, D, Dv, is_causal, scale

#define MG_ATTENTION_ENTRIES(T, SUF)                                                                          \
    extern "C" __global__ void attention_forward_##SUF(T* __restrict__ out, T* __restrict__ lse,              \
                                                       const T* __restrict__ q, const T* __restrict__ k,      \
                                                       const T* __restrict__ v, MG_ATT_BIAS_ARGS(T)) {        \
        attention_forward<T>(out, lse, q, k, v, MG_ATT_BIAS_PASS);                                            \
    }                                                                                                         \
    extern "C" __global__ void attention_backward_delta_##SUF(T* __restrict__ delta, const T* __restrict__ dout,\
                                                              const T* __restrict__ out, long long rows, int Dv) {\
        attention_backward_delta<T>(delta, dout, out, rows, Dv);                                              \
    }                                                                                                         \
    extern "C" __global__ void attention_backward_dkv_##SUF(                                                  \
        T* __restrict__ dk, T* __restrict__ dv, const T* __restrict__ dout, const T* __restrict__ q,          \
        const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ lse,                          \
        const T* __restrict__ delta, MG_ATT_BIAS_ARGS(T)) {                                                   \
        attention_backward_dkv<T>(dk, dv, dout, q, k, v, lse, delta, MG_ATT_BIAS_PASS);                       \
    }                                                                                                         \
    extern "C" __global__ void attention_backward_dq_##SUF(                                                   \
        T* __restrict__ dq, const T* __restrict__ dout, const T* __restrict__ q, const T* __restrict__ k,     \
        const T* __restrict__ v, const T* __restrict__ lse, const T* __restrict__ delta, MG_ATT_BIAS_ARGS(T)) { \
        attention_backward_dq<T>(dq, dout, q, k, v, lse, delta, MG_ATT_BIAS_PASS);                            \
    }

MG_ATTENTION_ENTRIES(float, f32)
MG_ATTENTION_ENTRIES(double, f64)
