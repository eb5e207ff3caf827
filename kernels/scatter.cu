// scatter.cu: a deterministic scatter-add into arbitrary positions of an array, float32 and float64.
// Oracle: np.add.at(out.ravel(), targets, values), as numpy_ref.index_add_ and scatter_add_along_axis
// call it. (Also the CUDA max_pool2d's backward, whose reference sums with np.bincount in float64: equal
// up to rounding.)
//
// Entry point (T = f32 | f64):
//   scatter_add_sorted_T(T* out, const long long* targets, const long long* order, const T* values,
//                        long long n)
//       out[targets[j]] += values[order[j]] for j = 0 .. n-1, where `targets` (n,) are the positions
//       sorted ascending by a STABLE sort and `order` (n,) the permutation that sorted them (the caller's
//       argsort: targets[j] = unsorted[order[j]]); values (n,) are in the unsorted order. A target is an
//       element offset from `out` (the caller computes it from the array's strides, so out need not be
//       contiguous), and names an element of the array.
//
// Decomposition ("segment heads", no atomics): after the sort, the additions into one element form a run
// of equal targets (a segment). Threads grid-stride over j; thread j is the head of a segment when
// j == 0 or targets[j] != targets[j - 1], and only heads work: a head reads out[t] once, adds the values
// of its whole segment one after another in a register, and writes out[t] once. Every element of out
// thus has one owner (no races, no atomics), and, the sort being stable, its values arrive in
// increasing original position: the additions of np.add.at in its order, starting from the same value,
// so the result is numpy_ref's to the bit (on a GPU, for float32 values above the subnormal range: CuPy
// compiles with -ftz=true), on every run and for every launch shape.
// block = (B) threads, any B; grid = any (grid-stride).
// Cost: the sort (CuPy's stable radix sort) plus one pass over the values; a segment of length L costs its
// head L sequential steps, so this suits short segments (the windows of a pooling, a gather's repeats).
// embedding.cu's "owner computes" kernel is the better choice for row gathers with very frequent rows.

template <typename T>
__device__ __forceinline__ void scatter_add_sorted(T* __restrict__ out, const long long* __restrict__ targets,
                                                   const long long* __restrict__ order,
                                                   const T* __restrict__ values, long long n) {
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < n;
         j += (long long)gridDim.x * blockDim.x) {
        const long long t = targets[j];
        if (j > 0 && targets[j - 1] == t) continue;  // not a head: the head of this segment adds it
        T acc = out[t];
        for (long long k = j; k < n && targets[k] == t; ++k) acc += values[order[k]];
        out[t] = acc;
    }
}

#define MG_SCATTER_ENTRIES(T, SUF)                                                                          \
    extern "C" __global__ void scatter_add_sorted_##SUF(T* __restrict__ out,                               \
                                                        const long long* __restrict__ targets,             \
                                                        const long long* __restrict__ order,               \
                                                        const T* __restrict__ values, long long n) {       \
        scatter_add_sorted<T>(out, targets, order, values, n);                                             \
    }

MG_SCATTER_ENTRIES(float, f32)
MG_SCATTER_ENTRIES(double, f64)
