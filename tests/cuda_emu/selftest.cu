// selftest.cu: kernels that check the emulator itself (tests/test_cuda_emulated.py, test_emulator_*):
// the semantics of its warp shuffles and votes against CUDA's definitions, and that it reports the
// mistakes it is meant to catch (deadlocks, shuffles naming exited lanes, races) instead of computing
// something. Not a kernel of minigrad: it lives here, not in kernels/, and is never compiled by NVRTC.

// out[k * n + t] for n threads: the results of each shuffle / vote for thread t (one block)
extern "C" __global__ void selftest_shuffles(int* out) {
    const int t = threadIdx.x, n = blockDim.x, lane = t & 31;
    const unsigned full = 0xffffffffu;
    out[0 * n + t] = __shfl_xor_sync(full, t * 10, 5);
    out[1 * n + t] = __shfl_down_sync(full, t * 10, 3);
    out[2 * n + t] = __shfl_up_sync(full, t * 10, 2);
    out[3 * n + t] = __shfl_sync(full, t * 10, 7);
    out[4 * n + t] = __shfl_down_sync(full, t * 10, 1, 8);  // width 8: segments of 8 lanes
    out[5 * n + t] = __shfl_xor_sync(full, t * 10, 16, 16);  // lane ^ 16 leaves the segment: own value
    out[6 * n + t] = (int)__ballot_sync(full, lane % 3 == 0);
    out[7 * n + t] = __any_sync(full, t == 40) + 2 * __all_sync(full, lane < 32);
    double d = __shfl_xor_sync(full, 0.5 + t, 1);  // 8-byte values
    out[8 * n + t] = (int)(2 * d);
}

// every thread adds 1 to counter[0] and its id to counter[1]
extern "C" __global__ void selftest_atomics(int* counter) {
    atomicAdd(&counter[0], 1);
    atomicAdd(&counter[1], (int)(threadIdx.x + blockIdx.x * blockDim.x));
}

// shared-memory reversal of a block's values: with and without the barrier between write and read
extern "C" __global__ void selftest_reverse(float* out, const float* x, int with_barrier) {
    __shared__ float tile[1024];
    const int t = threadIdx.x, n = blockDim.x;
    tile[t] = x[blockIdx.x * n + t];
    if (with_barrier) __syncthreads();
    out[blockIdx.x * n + t] = tile[n - 1 - t];
}

// __syncthreads inside a branch that only some threads take: a deadlock on a GPU
extern "C" __global__ void selftest_divergent_barrier(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1;
}

// a full-mask shuffle after half the warp has returned
extern "C" __global__ void selftest_shuffle_after_exit(int* out) {
    if ((threadIdx.x & 31) >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

// a shuffle reading a lane that does not exist (block of 48 threads: warp 1 has 16 lanes)
extern "C" __global__ void selftest_shuffle_missing_lane(int* out) {
    out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 8);
}

// out[n] += 1 (one element past an array of n): the guard check must catch the write, even an addition
extern "C" __global__ void selftest_add_past_the_end(float* out, int n) {
    if (threadIdx.x == 0) out[n] += 1.0f;
}

// out[0] = x[n] (one element past x): the two runs' guards differ (finite, then nan), so must their results
extern "C" __global__ void selftest_read_past_the_end(float* out, const float* x, int n) {
    if (threadIdx.x == 0) out[0] = x[n];
}
