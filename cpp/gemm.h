// The GEMM of gemm.cpp as other kernels of the extension call it (conv.cpp, rnn.cpp).
//
// The driver never reads A or B itself: it asks each operand to pack one block at a time into the
// micro-kernel's panel layout (see pack_block in gemm.cpp). A strided matrix is one kind of operand;
// a kernel can pass its own, e.g. a convolution whose "matrix" of image patches exists only as a rule
// for where each element is in the image (implicit im2col, conv.cpp): nothing else of the GEMM changes.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>

namespace minigrad {

// One operand of C (m x n) = A (m x k) · B (k x n), seen as a w-by-k "strip" indexed (i, p): for A,
// i is the row of C and p the inner index; for B, i is the column of C and p the inner index.
template <class T>
struct Operand {
    // Copy the block i in [i0, i0 + w), p in [p0, p0 + kc) into panels of W lanes: panel q holds
    // i in [i0 + qW, i0 + qW + W) as dst[q*kc*W + (p - p0)*W + (i - i0 - qW)]; lanes past w are zeros.
    virtual void pack(T* dst, int64_t i0, int64_t w, int64_t p0, int64_t kc, int W) const = 0;

   protected:
    ~Operand() = default;
};

// A strided matrix: element (row r, column c) at p[r*rs + c*cs] (strides in elements, any sign, 0 when
// broadcast).
template <class T>
struct Strided {
    const T* p;
    int64_t rs, cs;
};

// A strided matrix as the operand A (i = row, p = column) or B (i = column, p = row).
template <class T>
struct StridedA final : Operand<T> {
    Strided<T> m;
    explicit StridedA(Strided<T> m) : m(m) {}
    void pack(T* dst, int64_t i0, int64_t w, int64_t p0, int64_t kc, int W) const override;
};
template <class T>
struct StridedB final : Operand<T> {
    Strided<T> m;
    explicit StridedB(Strided<T> m) : m(m) {}
    void pack(T* dst, int64_t i0, int64_t w, int64_t p0, int64_t kc, int W) const override;
};

// C (m x n, row-major with leading dimension ldc) = A · B, or C += A · B with `accumulate`, on
// `threads` OpenMP threads (1: on the calling thread, no parallel region). T is float or double.
template <class T>
void gemm(int64_t m, int64_t n, int64_t k, const Operand<T>& A, const Operand<T>& B, T* c, int64_t ldc,
          int threads, bool accumulate = false);
template <class T>
void gemm(int64_t m, int64_t n, int64_t k, Strided<T> A, Strided<T> B, T* c, int64_t ldc, int threads,
          bool accumulate = false);

// The name of the micro-kernel gemm() uses now ("avx512", "avx2" or "scalar"; set_gemm_kernel in Python
// changes it): kernels built around the GEMM (conv.cpp) follow the same instruction-set choice.
const char* gemm_kernel_name();

// Below this many multiply-adds a GEMM is best run on one thread: waking a second costs more than it
// saves (measured here: one and two threads break even around n = 48, 2.5 us).
constexpr int64_t kParallelWork = 48 * 48 * 48;

int num_threads();  // (minigrad.h)

// The threads for an m x n x k product run alone: 1 below kParallelWork, else all of them.
inline int gemm_threads(int64_t m, int64_t n, int64_t k) { return m * n * k < kParallelWork ? 1 : num_threads(); }

// Per-thread scratch memory, kept between calls (a fresh multi-MiB allocation per call would
// page-fault on every use), 64-byte aligned. Each user keeps its own thread_local instances.
struct Scratch {
    void* ptr = nullptr;
    size_t bytes = 0;
    Scratch() = default;
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    ~Scratch() { std::free(ptr); }
    template <class T>
    T* get(size_t count) {
        size_t need = (count * sizeof(T) + 63) / 64 * 64;
        if (need > bytes) {
            std::free(ptr);
            ptr = std::aligned_alloc(64, need);
            if (!ptr) {
                bytes = 0;
                throw std::bad_alloc();
            }
            bytes = need;
        }
        return static_cast<T*>(ptr);
    }
};

}  // namespace minigrad
