// cuda_emu.h: enough of CUDA's execution model to run minigrad's kernels/*.cu on the CPU (C++20).
//
// What it emulates
//   * The launch: `cuda_emu::launch(kernel, grid, block, args...)` runs the blocks of the grid one at a
//     time (blockIdx.x fastest, then y, then z). Within a block, every CUDA thread is a fiber (a ucontext
//     with its own stack), all on the calling OS thread. A fiber runs until it reaches a barrier
//     (`__syncthreads`, `__syncwarp`, a warp shuffle or vote) or returns; then another one runs. Warps
//     run one at a time, each as far as it can go (its warp-level barriers released as soon as all its
//     lanes arrive) until all its threads wait at __syncthreads or have exited; when every thread of the
//     block waits at __syncthreads, that barrier is released (see run_block). Nothing is preemptive, so
//     `atomicAdd` and friends are plain read-modify-writes.
//   * threadIdx / blockIdx / blockDim / gridDim (thread_local, set by the scheduler), warpSize, dim3.
//   * `__shared__` is `static`: one instance per kernel (per template instantiation), shared by the
//     threads of the running block, and reused, uninitialized, by the next block, as on a GPU.
//   * Warp shuffles (__shfl_sync, __shfl_xor_sync, __shfl_down_sync, __shfl_up_sync) and votes
//     (__ballot_sync, __any_sync, __all_sync) exchange values through a per-warp buffer between two
//     warp barriers. Warps are 32 consecutive linear thread ids, as on a GPU.
//   * Math: the C library's expf, erff, tanhf, ...; plus CUDA's rsqrtf, __expf, __int_as_float,
//     __umulhi, min/max, __ldg, ...
//   * Not inline PTX (asm): a kernel source that has some selects portable CUDA C instead when
//     MG_CUDA_EMU is defined (kernels/mma.cuh: mma.sync, ldmatrix and cp.async as warp shuffles and plain
//     copies that follow the PTX ISA's fragment layouts).
//
// What it checks (a kernel that breaks a rule fails its launch with a message instead of computing a
// wrong answer silently or hanging)
//   * launch limits: <= 1024 threads per block, block.z <= 64, grid.y and grid.z <= 65535;
//   * `__syncthreads` reached by some threads while others have exited or wait elsewhere (deadlock);
//   * a shuffle/vote/__syncwarp whose mask names a lane that has exited or waits elsewhere, that does
//     not include the calling lane, or that reads a lane outside the mask or the block;
//   * fiber stack overflow (guard page: a crash rather than silent corruption).
//
// Race detection: the order in which warps, and lanes within a warp, run between barriers is selectable
// (ascending, descending, or a seeded random permutation, see set_schedule), and one warp running ahead
// of the others up to the next __syncthreads is the most adversarial legal schedule for a missing
// barrier. Such a kernel gives results that depend on the order; the tests run each launch under two
// orders and require bitwise-identical results (the kernels are deterministic by design).
//
// The .cu sources are included after this header (see driver.cpp); they must not include system headers
// (NVRTC provides none), which is what makes this possible.
#pragma once

// Kernel sources test this to pick portable code over inline PTX, which g++ cannot compile for the CPU.
#define MG_CUDA_EMU 1

#include <math.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---- CUDA's keywords and built-in variables --------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __shared__ static
#define __constant__ static const
#define __launch_bounds__(...)

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr int warpSize = 32;

// ---- the scheduler -----------------------------------------------------------------------------------

namespace cuda_emu {

enum class State : unsigned char { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
    ucontext_t ctx;
    State state = State::Ready;
    unsigned warp_mask = 0;  // the mask of the warp barrier this fiber waits at
    dim3 tid;
};

struct Stack {
    void* base = nullptr;  // mmap'ed, lowest page is a PROT_NONE guard page
    size_t size = 0;
};

struct BlockRun {
    std::vector<Fiber> fibers;
    ucontext_t sched;
    unsigned current = 0;
    unsigned nthreads = 0;
    std::vector<unsigned long long> exchange;  // 32 slots per warp, for shuffles and votes
    const std::function<void()>* body = nullptr;
    std::string error;
};

inline thread_local BlockRun* g_run = nullptr;
inline thread_local std::vector<Stack> g_stacks;  // reused across blocks and launches
inline thread_local int g_schedule = 0;           // 0 ascending, 1 descending, 2 random permutation
inline thread_local unsigned long long g_schedule_seed = 1;
constexpr size_t kStackSize = 256 * 1024;

/// Select the order in which the fibers of a block run between barriers (see the header comment).
inline void set_schedule(int mode, unsigned long long seed) {
    g_schedule = mode;
    g_schedule_seed = seed ? seed : 1;
}

inline Fiber& current_fiber() { return g_run->fibers[g_run->current]; }

inline void yield_as(State s) {
    Fiber& f = current_fiber();
    f.state = s;
    swapcontext(&f.ctx, &g_run->sched);
}

/// Record an error and abandon the calling fiber (its stack is simply reused later).
[[noreturn]] inline void fail(const std::string& msg) {
    BlockRun& r = *g_run;
    if (r.error.empty()) {
        const dim3 t = r.fibers[r.current].tid;
        r.error = msg + " (block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
                  std::to_string(blockIdx.z) + "), thread (" + std::to_string(t.x) + "," + std::to_string(t.y) +
                  "," + std::to_string(t.z) + "))";
    }
    yield_as(State::Done);
    __builtin_unreachable();  // a Done fiber is never resumed
}

inline void fiber_entry() {
    BlockRun* r = g_run;
    (*r->body)();
    r->fibers[r->current].state = State::Done;
    // returning resumes uc_link, the scheduler
}

inline Stack& stack_for(unsigned i) {
    while (g_stacks.size() <= i) {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        Stack s;
        s.size = kStackSize + page;
        s.base = mmap(nullptr, s.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (s.base == MAP_FAILED) {
            std::fprintf(stderr, "cuda_emu: mmap of a fiber stack failed\n");
            std::abort();
        }
        mprotect(s.base, page, PROT_NONE);  // stacks grow down: overflow hits the guard page
        g_stacks.push_back(s);
    }
    return g_stacks[i];
}

inline std::string describe_states(const BlockRun& r) {
    unsigned ready = 0, block = 0, warp = 0, done = 0;
    for (const Fiber& f : r.fibers) {
        ready += f.state == State::Ready;
        block += f.state == State::AtBlockBarrier;
        warp += f.state == State::AtWarpBarrier;
        done += f.state == State::Done;
    }
    return std::to_string(block) + " threads at __syncthreads, " + std::to_string(warp) +
           " at a warp-level barrier (shuffle/vote/__syncwarp), " + std::to_string(done) + " exited";
}

/// Release the warp-level barriers of warp w whose participants have all arrived (one group per mask).
/// Returns whether any was released; sets r.error if a mask names a lane that has exited.
inline bool release_warp_barriers(BlockRun& r, unsigned w) {
    const unsigned lanes = std::min(32u, r.nthreads - w * 32);
    bool released = false;
    for (unsigned l = 0; l < lanes; ++l) {
        const Fiber& f = r.fibers[w * 32 + l];
        if (f.state != State::AtWarpBarrier) continue;
        const unsigned mask = f.warp_mask;
        bool complete = true;
        for (unsigned j = 0; j < lanes; ++j) {
            if (!((mask >> j) & 1u)) continue;
            const Fiber& g = r.fibers[w * 32 + j];
            if (g.state == State::Done) {
                char hex[16];
                std::snprintf(hex, sizeof hex, "%08x", mask);
                r.error = "warp " + std::to_string(w) + ": lane " + std::to_string(j) + " has exited but is named in "
                          "the mask 0x" + hex + " of a shuffle/vote/__syncwarp of lane " + std::to_string(l) +
                          " (block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
                          std::to_string(blockIdx.z) + "))";
                return false;
            }
            if (g.state != State::AtWarpBarrier || g.warp_mask != mask) complete = false;
        }
        if (!complete) continue;
        for (unsigned j = 0; j < lanes; ++j)
            if ((mask >> j) & 1u) r.fibers[w * 32 + j].state = State::Ready;
        released = true;
    }
    return released;
}

inline unsigned long long splitmix64(unsigned long long& s) {
    unsigned long long z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/// `count` indices in the order of the schedule mode: ascending, descending, or a random permutation.
inline void schedule_order(std::vector<unsigned>& order, unsigned count, unsigned long long& rng) {
    order.resize(count);
    for (unsigned i = 0; i < count; ++i) order[i] = g_schedule == 1 ? count - 1 - i : i;
    if (g_schedule == 2)
        for (unsigned i = count; i > 1; --i) std::swap(order[i - 1], order[splitmix64(rng) % i]);
}

/// Run one block to completion; returns an error message, empty on success.
///
/// The schedule is one legal CUDA schedule chosen to expose missing barriers: warps run one at a time,
/// in the order of the schedule mode, and each runs as far as it can (its warp-level barriers are
/// released as soon as its lanes have all arrived) until every lane waits at __syncthreads or has
/// exited. So a warp races arbitrarily far ahead of the others between two __syncthreads; within a warp,
/// lanes run in the mode's order between two warp-level barriers. When every thread waits at
/// __syncthreads, the barrier is released and the next round starts.
inline std::string run_block(BlockRun& r) {
    const unsigned n = r.nthreads, nwarps = (n + 31) / 32;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = r.fibers[i];
        f.state = State::Ready;
        f.warp_mask = 0;
        Stack& s = stack_for(i);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = static_cast<char*>(s.base) + page;
        f.ctx.uc_stack.ss_size = s.size - page;
        f.ctx.uc_link = &r.sched;
        makecontext(&f.ctx, fiber_entry, 0);
    }
    std::vector<unsigned> warps, lanes;
    unsigned long long rng = g_schedule_seed ^ (0x51ED27ull * (blockIdx.x + 1)) ^
                             ((unsigned long long)blockIdx.y << 32) ^ ((unsigned long long)blockIdx.z << 48);
    for (;;) {
        schedule_order(warps, nwarps, rng);
        for (unsigned w : warps) {
            const unsigned nl = std::min(32u, n - w * 32);
            do {
                schedule_order(lanes, nl, rng);
                for (unsigned l : lanes) {
                    const unsigned i = w * 32 + l;
                    Fiber& f = r.fibers[i];
                    if (f.state != State::Ready) continue;
                    r.current = i;
                    threadIdx = f.tid;
                    swapcontext(&r.sched, &f.ctx);
                    if (!r.error.empty()) return r.error;
                }
            } while (release_warp_barriers(r, w));
            if (!r.error.empty()) return r.error;
        }
        unsigned at_block = 0, done = 0;
        for (const Fiber& f : r.fibers) {
            at_block += f.state == State::AtBlockBarrier;
            done += f.state == State::Done;
        }
        if (done == n) return {};
        if (at_block == n) {  // every thread is at __syncthreads: release it
            for (Fiber& f : r.fibers) f.state = State::Ready;
            continue;
        }
        return "deadlock in block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
               std::to_string(blockIdx.z) + "): " + describe_states(r) +
               (done && at_block ? " (__syncthreads must be reached by every thread of the block)" : "");
    }
}

/// Run `body` as every thread of every block of the grid; returns an error message, empty on success.
inline std::string run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
    const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z) return "empty grid or block";
    if (nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64)
        return "block too large: (" + std::to_string(block.x) + "," + std::to_string(block.y) + "," +
               std::to_string(block.z) + ") (at most 1024 threads, z <= 64)";
    if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) return "grid too large (y and z <= 65535)";
    BlockRun r;
    r.nthreads = (unsigned)nthreads;
    r.fibers.resize(nthreads);
    r.exchange.assign(((nthreads + 31) / 32) * 32, 0);
    r.body = &body;
    for (unsigned z = 0, i = 0; z < block.z; ++z)
        for (unsigned y = 0; y < block.y; ++y)
            for (unsigned x = 0; x < block.x; ++x, ++i) r.fibers[i].tid = dim3(x, y, z);
    BlockRun* outer = g_run;
    g_run = &r;
    gridDim = grid;
    blockDim = block;
    std::string err;
    for (unsigned bz = 0; bz < grid.z && err.empty(); ++bz)
        for (unsigned by = 0; by < grid.y && err.empty(); ++by)
            for (unsigned bx = 0; bx < grid.x && err.empty(); ++bx) {
                blockIdx = dim3(bx, by, bz);
                err = run_block(r);
            }
    g_run = outer;
    return err;
}

/// kernel<<<grid, block>>>(args...), synchronously; returns an error message, empty on success.
template <class... P, class... A>
std::string launch(void (*kernel)(P...), dim3 grid, dim3 block, A... args) {
    static_assert(sizeof...(P) == sizeof...(A), "wrong number of kernel arguments");
    const std::function<void()> body = [&] { kernel(static_cast<P>(args)...); };
    return run_grid(grid, block, body);
}

// ---- warp-level exchange -----------------------------------------------------------------------------

inline void check_in_mask(unsigned mask, unsigned lane, const char* what) {
    if (!((mask >> lane) & 1u)) fail(std::string(what) + ": the calling lane is not in the mask");
}

inline void warp_barrier(unsigned mask) {
    current_fiber().warp_mask = mask;
    yield_as(State::AtWarpBarrier);
}

/// The shuffle core: publish `var`, wait for the warp, read lane `src` (own value if src < 0), wait again
/// so that nobody overwrites the slots before everyone has read.
template <class T>
T exchange(unsigned mask, T var, int src, const char* what) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of an unsupported type");
    BlockRun& r = *g_run;
    const unsigned me = r.current, lane = me & 31, base = me & ~31u;
    check_in_mask(mask, lane, what);
    unsigned long long slot = 0;
    std::memcpy(&slot, &var, sizeof(T));
    r.exchange[me] = slot;
    warp_barrier(mask);
    T result = var;
    if (src >= 0) {
        if (!((mask >> src) & 1u) || base + (unsigned)src >= r.nthreads)
            fail(std::string(what) + ": reads lane " + std::to_string(src) +
                 ", which is not in the mask or not a thread of the block");
        std::memcpy(&result, &r.exchange[base + (unsigned)src], sizeof(T));
    }
    warp_barrier(mask);
    return result;
}

inline unsigned vote(unsigned mask, int pred, const char* what) {
    BlockRun& r = *g_run;
    const unsigned me = r.current, lane = me & 31, base = me & ~31u;
    check_in_mask(mask, lane, what);
    r.exchange[me] = pred != 0;
    warp_barrier(mask);
    unsigned ballot = 0;
    for (unsigned j = 0; j < 32 && base + j < r.nthreads; ++j)
        if (((mask >> j) & 1u) && r.exchange[base + j]) ballot |= 1u << j;
    warp_barrier(mask);
    return ballot;
}

// ---- the C ABI's view of a kernel: name, signature, and a launcher taking cuLaunchKernel-style args ----

template <class T>
std::string type_name() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer_v<U>) {
        return type_name<std::remove_pointer_t<U>>() + "*";
    } else if constexpr (std::is_same_v<U, float>) {
        return "f32";
    } else if constexpr (std::is_same_v<U, double>) {
        return "f64";
    } else if constexpr (std::is_same_v<U, bool>) {
        return "bool";
    } else if constexpr (std::is_integral_v<U>) {
        return (std::is_signed_v<U> ? "i" : "u") + std::to_string(8 * sizeof(U));
    } else if constexpr (std::is_void_v<U>) {
        return "void";
    } else {
        static_assert(sizeof(U) == 0, "unsupported kernel parameter type");
    }
}

struct KernelInfo {
    std::string name;
    std::string signature;  // comma-separated type names, e.g. "f32*,f32*,i64,i32"
    std::function<std::string(dim3, dim3, void**)> launch;
};

template <class... P, size_t... I>
std::string launch_from_args(void (*f)(P...), dim3 grid, dim3 block, void** args, std::index_sequence<I...>) {
    return launch(f, grid, block, *static_cast<std::remove_cv_t<P>*>(args[I])...);
}

template <class... P>
KernelInfo make_kernel(const char* name, void (*f)(P...)) {
    std::string sig;
    ((sig += (sig.empty() ? "" : ",") + type_name<P>()), ...);
    return {name, sig, [f](dim3 g, dim3 b, void** args) {
                return launch_from_args(f, g, b, args, std::index_sequence_for<P...>{});
            }};
}

}  // namespace cuda_emu

// ---- synchronization, shuffles, votes ----------------------------------------------------------------

inline void __syncthreads() { cuda_emu::yield_as(cuda_emu::State::AtBlockBarrier); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    cuda_emu::check_in_mask(mask, cuda_emu::g_run->current & 31, "__syncwarp");
    cuda_emu::warp_barrier(mask);
}
inline void __threadfence() {}
[[noreturn]] inline void __trap() { cuda_emu::fail("__trap() (a kernel's own check failed)"); }
inline void __threadfence_block() {}

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
    const int lane = (int)(cuda_emu::g_run->current & 31);
    return cuda_emu::exchange(mask, var, (lane & ~(width - 1)) + (src_lane & (width - 1)), "__shfl_sync");
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
    // CUDA: a lane may read from its own or an earlier segment of `width` lanes; a later one gives its own var
    const int lane = (int)(cuda_emu::g_run->current & 31), seg = lane & ~(width - 1), src = lane ^ lane_mask;
    return cuda_emu::exchange(mask, var, src < seg + width ? src : -1, "__shfl_xor_sync");
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    const int lane = (int)(cuda_emu::g_run->current & 31);
    const int src = ((lane & (width - 1)) + (int)delta < width) ? lane + (int)delta : -1;
    return cuda_emu::exchange(mask, var, src, "__shfl_down_sync");
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    const int lane = (int)(cuda_emu::g_run->current & 31);
    const int src = ((lane & (width - 1)) >= (int)delta) ? lane - (int)delta : -1;
    return cuda_emu::exchange(mask, var, src, "__shfl_up_sync");
}
inline unsigned __ballot_sync(unsigned mask, int pred) { return cuda_emu::vote(mask, pred, "__ballot_sync"); }
inline int __any_sync(unsigned mask, int pred) { return cuda_emu::vote(mask, pred, "__any_sync") != 0; }
inline int __all_sync(unsigned mask, int pred) {
    const unsigned b = cuda_emu::vote(mask, pred, "__all_sync");
    unsigned live = 0;
    const unsigned base = cuda_emu::g_run->current & ~31u;
    for (unsigned j = 0; j < 32 && base + j < cuda_emu::g_run->nthreads; ++j) live |= 1u << j;
    return (b & mask & live) == (mask & live);
}

// ---- atomics (fibers are not preemptive: a plain read-modify-write is atomic) --------------------------

template <class T> T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T> T atomicSub(T* p, T v) { T old = *p; *p = old - v; return old; }
template <class T> T atomicMax(T* p, T v) { T old = *p; *p = old < v ? v : old; return old; }
template <class T> T atomicMin(T* p, T v) { T old = *p; *p = v < old ? v : old; return old; }
template <class T> T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T> T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }

// ---- math and bit intrinsics ---------------------------------------------------------------------------

inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
inline float __uint_as_float(unsigned i) { return std::bit_cast<float>(i); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline double __longlong_as_double(long long i) { return std::bit_cast<double>(i); }
inline long long __double_as_longlong(double d) { return std::bit_cast<long long>(d); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
__extension__ typedef unsigned __int128 cuda_emu_u128;
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((cuda_emu_u128)a * b) >> 64);
}
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
template <class T> inline T __ldg(const T* p) { return *p; }

// CUDA's integer min/max overloads (the C library has only fminf/fmaxf)
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
