// Softmax and log-softmax over the last dim of a C-contiguous (rows, n) array, forward and backward.
//
// Every row is independent: OpenMP gives each thread a contiguous block of rows, and one thread
// walks its rows with SIMD vectors. Per row (x the input, y the output, dy the upstream gradient):
//
//   softmax forward       m = max(x);  y = exp(x - m), s = sum(y);  y *= 1 / s
//   log_softmax forward   m = max(x);  s = sum(exp(x - m));         y = (x - m) - log(s)
//   softmax backward      d = sum(dy * y);                          dx = y * (dy - d)
//   log_softmax backward  s = sum(dy);                              dx = dy - exp(y) * s
//
// Numerical stability: subtracting the row max makes every exponent <= 0, so nothing overflows and
// the largest term is exactly 1 (s >= 1). No special case is needed for rows without a finite max:
// IEEE arithmetic gives numpy_ref's results. A row of all -inf has m = -inf and x - m = -inf - -inf =
// nan, so the row is nan, as in PyTorch; a +inf anywhere makes the max +inf and the row nan (inf -
// inf), a nan anywhere makes the sum nan, so the row is nan, as numpy_ref.
//
// Memory: a row is read from memory once. The second and third passes find it in L1/L2 (a row of
// 4096 floats is 16 KiB), so a large softmax costs one read of x and one write of y, which is why its
// speed is compared with a plain copy. The exponentials are computed once, stored in y, and rescaled
// in place (multiplying by 1/s: one division per row instead of one per element).
//
// SIMD: the kernels are written once, on GCC/Clang vector extensions (`V a = b * c + d` works lane by
// lane on a vector of 16, 8 or 4 floats), and compiled three times, inside functions carrying the
// target attributes AVX-512, AVX2+FMA and the baseline (SSE2 on x86-64). The always_inline helpers take
// the instruction set of the function they are inlined into; the best version the CPU supports is
// chosen once at run time with __builtin_cpu_supports. The row length needs no multiple of the vector
// width: the last, partial vector of a row is loaded with a neutral filler (-inf for a max and for
// exp, 0 for a sum) and only its valid lanes are stored.
#include <omp.h>
#include <pybind11/numpy.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "minigrad.h"
#include "simd.h"

namespace py = pybind11;

namespace minigrad {
namespace {

// ---- the row kernels -------------------------------------------------------------------------------
// Each kernel K has row<S>(out, a, b, n) for one row of n elements (b unused by forward kernels).

// The body of the loops below, `[&](int64_t i, auto k) MG_LAMBDA {...}`, handles the vector at element
// i (k: FullVector or a count, see for_each_vector).

// m = max(x) (with a nan in x, m may or may not be nan: the row comes out nan either way).
template <class S>
MG_INLINE typename S::Scalar row_max(const typename S::Scalar* x, int64_t n) {
    using T = typename S::Scalar;
    constexpr T ninf = -std::numeric_limits<T>::infinity();
    auto m = splat<typename S::V>(ninf);
    for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA {
        m = Max{}(m, load<S>(x + i, k, ninf));
    });
    return reduce<S>(m, Max{});
}

struct SoftmaxForward {  // out = softmax(a)
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void row(T* y, const T* x, const T*, int64_t n) {
        using V = typename S::V;
        constexpr T ninf = -std::numeric_limits<T>::infinity();
        const V m = splat<V>(row_max<S>(x, n));
        V sum{};
        for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA {  // filler: exp(-inf - m) = 0 adds 0
            const V e = vexp<S>(load<S>(x + i, k, ninf) - m);
            sum += e;
            store<S>(y + i, e, k);
        });
        const V inv = splat<V>(T(1) / reduce<S>(sum, Add{}));
        for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA {
            store<S>(y + i, load<S>(y + i, k, 0) * inv, k);
        });
    }
};

struct LogSoftmaxForward {  // out = log_softmax(a)
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void row(T* y, const T* x, const T*, int64_t n) {
        using V = typename S::V;
        constexpr T ninf = -std::numeric_limits<T>::infinity();
        const V m = splat<V>(row_max<S>(x, n));
        V sum{};
        for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA {
            sum += vexp<S>(load<S>(x + i, k, ninf) - m);
        });
        const V log_sum = splat<V>(std::log(reduce<S>(sum, Add{})));
        for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA {  // (x - m) - log(s): numpy_ref's rounding
            store<S>(y + i, (load<S>(x + i, k, 0) - m) - log_sum, k);
        });
    }
};

struct SoftmaxBackward {  // out = dx from a = dy and b = y (the softmax output)
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void row(T* dx, const T* dy, const T* y, int64_t n) {
        using V = typename S::V;
        V dot{};
        for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA {
            dot += load<S>(dy + i, k, 0) * load<S>(y + i, k, 0);
        });
        const V d = splat<V>(reduce<S>(dot, Add{}));
        for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA {
            store<S>(dx + i, load<S>(y + i, k, 0) * (load<S>(dy + i, k, 0) - d), k);
        });
    }
};

struct LogSoftmaxBackward {  // out = dx from a = dy and b = y (the log_softmax output)
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void row(T* dx, const T* dy, const T* y, int64_t n) {
        using V = typename S::V;
        V sum{};
        for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA { sum += load<S>(dy + i, k, 0); });
        const V s = splat<V>(reduce<S>(sum, Add{}));
        for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA {
            store<S>(dx + i, load<S>(dy + i, k, 0) - vexp<S>(load<S>(y + i, k, 0)) * s, k);
        });
    }
};

struct Exp {  // out = exp(a), elementwise: the vector exp on its own, for its accuracy test
    template <class S, class T = typename S::Scalar>
    static MG_INLINE void row(T* y, const T* x, const T*, int64_t n) {
        for_each_vector<S>(n, [&](int64_t i, auto k) MG_LAMBDA {
            store<S>(y + i, vexp<S>(load<S>(x + i, k, 0)), k);
        });
    }
};

// ---- one compiled version per instruction set, chosen at run time ---------------------------------

template <class T>
using RowsFn = void (*)(T* out, const T* a, const T* b, int64_t r0, int64_t r1, int64_t n);

#define MG_ROWS(NAME, TARGET, BYTES)                                                                   \
    template <class K, class T>                                                                        \
    TARGET void NAME(T* out, const T* a, const T* b, int64_t r0, int64_t r1, int64_t n) {              \
        for (int64_t r = r0; r < r1; ++r)                                                              \
            K::template row<Simd<T, BYTES>>(out + r * n, a + r * n, b ? b + r * n : nullptr, n);      \
    }
#if defined(__x86_64__) || defined(__i386__)
MG_ROWS(rows_avx512, __attribute__((target("avx512f,fma"))), 64)
MG_ROWS(rows_avx2, __attribute__((target("avx2,fma"))), 32)
#endif
MG_ROWS(rows_portable, , 16)  // the baseline: SSE2 on x86-64, NEON on arm64
#undef MG_ROWS

// The version in use: simd_isa() (minigrad.h), the best this CPU runs unless set_simd_kernel chose another.
template <class K, class T>
RowsFn<T> rows_fn() {
    switch (simd_isa()) {
#if defined(__x86_64__) || defined(__i386__)
        case 0: return &rows_avx512<K, T>;
        case 1: return &rows_avx2<K, T>;
#endif
        default: return &rows_portable<K, T>;
    }
}

// Below this many elements, one thread does the whole array (starting the others costs more).
constexpr int64_t kParallelMin = 1 << 15;

template <class K, class T>
void run_rows(T* out, const T* a, const T* b, int64_t rows, int64_t n) {
    const RowsFn<T> fn = rows_fn<K, T>();
    const int threads = rows * n < kParallelMin ? 1 : int(std::min<int64_t>(num_threads(), rows));
#pragma omp parallel num_threads(threads) if (threads > 1)
    {  // a contiguous block of rows per thread
        const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        fn(out, a, b, rows * t / nt, rows * (t + 1) / nt, n);
    }
}

// ---- Python bindings -------------------------------------------------------------------------------

std::string dtype_of(const py::array& x) { return py::str(x.dtype()); }

// out = K(a[, b]) over the rows of 2-D arrays of one shape and dtype (float32 or float64), all
// C-contiguous; the GIL is released while the kernel runs.
template <class K>
void launch(const char* name, py::array& out, const py::array& a, const py::array* b, bool flat = false) {
    const std::string fn = name;
    for (const py::array* x : {static_cast<const py::array*>(&out), &a, b}) {
        if (!x) continue;
        if (!flat && x->ndim() != 2)
            throw py::value_error(fn + ": expected 2-D (rows, n) arrays, got shape " + shape_of(*x));
        if (!x->dtype().equal(out.dtype()))
            throw py::type_error(fn + ": all arrays must have one dtype, got " + dtype_of(out) + " and " +
                                 dtype_of(*x));
        if (x->ndim() != out.ndim() || !std::equal(x->shape(), x->shape() + x->ndim(), out.shape()))
            throw py::value_error(fn + ": shapes differ: " + shape_of(out) + " and " + shape_of(*x));
        if (!(x->flags() & py::array::c_style))
            throw py::value_error(fn + ": arrays must be C-contiguous (got a strided array of shape " +
                                  shape_of(*x) + ")");
    }
    if (!out.writeable()) throw py::value_error(fn + ": the output array is read-only");
    const int64_t rows = flat ? 1 : out.shape(0), n = flat ? out.size() : out.shape(1);
    auto call = [&](auto zero) {
        using T = decltype(zero);
        T* o = static_cast<T*>(out.mutable_data());
        const T* pa = static_cast<const T*>(a.data());
        const T* pb = b ? static_cast<const T*>(b->data()) : nullptr;
        py::gil_scoped_release release;
        run_rows<K, T>(o, pa, pb, rows, n);
    };
    if (out.dtype().equal(py::dtype::of<float>()))
        call(0.0f);
    else if (out.dtype().equal(py::dtype::of<double>()))
        call(0.0);
    else
        throw py::type_error(fn + ": expected float32 or float64 arrays, got " + dtype_of(out));
}

// The bindings: outputs first, then the inputs (backward: the upstream gradient dy, then the forward
// output y), as in llm.c; `noconvert` refuses anything but a NumPy array (a list would be copied into a
// temporary, and an output written there would be lost).
template <class K>
void def_forward(py::module_& m, const char* name, const char* doc) {
    m.def(name, [name](py::array out, py::array x) { launch<K>(name, out, x, nullptr); },
          py::arg("out").noconvert(), py::arg("x").noconvert(), doc);
}

template <class K>
void def_backward(py::module_& m, const char* name, const char* doc) {
    m.def(name, [name](py::array dx, py::array dy, py::array y) { launch<K>(name, dx, dy, &y); },
          py::arg("dx").noconvert(), py::arg("dy").noconvert(), py::arg("y").noconvert(), doc);
}

}  // namespace

void register_softmax(py::module_& m) {
    def_forward<SoftmaxForward>(m, "softmax_forward",
                                "out (rows, n) = softmax of each row of x (rows, n); float32/float64, "
                                "C-contiguous.");
    def_forward<LogSoftmaxForward>(m, "log_softmax_forward",
                                   "out (rows, n) = log_softmax of each row of x (rows, n).");
    def_backward<SoftmaxBackward>(m, "softmax_backward",
                                  "dx (rows, n) = y * (dy - sum(dy * y)) per row, y the softmax output.");
    def_backward<LogSoftmaxBackward>(m, "log_softmax_backward",
                                     "dx (rows, n) = dy - exp(y) * sum(dy) per row, y the log_softmax "
                                     "output.");
    m.def("vexp", [](py::array out, py::array x) { launch<Exp>("vexp", out, x, nullptr, true); },
          py::arg("out").noconvert(), py::arg("x").noconvert(),
          "out = exp(x) elementwise, the softmax kernels' vector exp (any shape, C-contiguous; one thread).");
}

}  // namespace minigrad
