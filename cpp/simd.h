// SIMD building blocks shared by the row kernels of the extension (softmax.cpp, rnn.cpp, ...):
// vectors on GCC/Clang vector extensions, whole-and-partial vector loads and stores along a row,
// horizontal reductions, and a vectorized exp accurate to under 1 ulp.
//
// Everything here is always_inline and carries no target attribute of its own: it compiles with the
// instruction set of the function it is inlined into, so a kernel written once on Simd<T, Bytes> is
// compiled once per target (AVX-512, AVX2+FMA, baseline) by the file that uses it (see softmax.cpp).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

// Vectors are returned by value only from always_inline functions (never across an ABI boundary), and
// passed by const reference, which keeps GCC's notes on the vector ABI quiet.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace minigrad {

#define MG_INLINE inline __attribute__((always_inline))
// For the lambdas passed to for_each_vector: always_inline, so that they get the instruction set of the
// function they end up in.
#define MG_LAMBDA __attribute__((always_inline))

// ---- SIMD vectors of Bytes bytes holding T -----------------------------------------------------------

template <class T, int Bytes>
struct Simd {
    using Scalar = T;
    using Int = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;  // an integer of T's width
    typedef T V __attribute__((vector_size(Bytes)));
    typedef Int I __attribute__((vector_size(Bytes)));
    static constexpr int64_t lanes = Bytes / sizeof(T);
};

template <class V, class T>
MG_INLINE V splat(T x) {
    return V{} + x;  // vector + scalar broadcasts the scalar
}

// A row is walked one vector at a time: body(i, FullVector{}) for every whole vector at element i,
// then body(i, k) once for a last, partial vector of k < lanes elements. The body is instantiated
// twice, so the loads and stores of whole vectors compile to plain vector moves with no test.
struct FullVector {};

template <class S, class Body>
MG_INLINE void for_each_vector(int64_t n, Body body) {
    int64_t i = 0;
    for (; i + S::lanes <= n; i += S::lanes) body(i, FullVector{});
    if (i < n) body(i, n - i);
}

// Load a vector from p: a whole one (an unaligned load), or k elements with `fill` in the other lanes.
template <class S, class Count>
MG_INLINE typename S::V load(const typename S::Scalar* p, Count k, typename S::Scalar fill) {
    typename S::V v;
    if constexpr (std::is_same_v<Count, FullVector>) {
        std::memcpy(&v, p, sizeof v);
    } else {
        v = splat<typename S::V>(fill);
        for (int64_t j = 0; j < k; ++j) v[j] = p[j];
    }
    return v;
}

// Store a whole vector, or its first k lanes, to p.
template <class S, class Count>
MG_INLINE void store(typename S::Scalar* p, const typename S::V& v, Count k) {
    if constexpr (std::is_same_v<Count, FullVector>) {
        std::memcpy(p, &v, sizeof v);
    } else {
        for (int64_t j = 0; j < k; ++j) p[j] = v[j];
    }
}

struct Add {
    template <class A>
    MG_INLINE A operator()(const A& a, const A& b) const { return a + b; }
};
// max(a, b) and min(a, b) for scalars and vectors alike; like the maxps / minps instructions, they
// return b when a or b is nan.
struct Max {
    template <class A>
    MG_INLINE A operator()(const A& a, const A& b) const { return a > b ? a : b; }
};
struct Min {
    template <class A>
    MG_INLINE A operator()(const A& a, const A& b) const { return a < b ? a : b; }
};

// Horizontal reduction of a vector: combine its two halves until two lanes remain (log2(lanes) steps).
template <class T, int Bytes, class Op>
MG_INLINE T fold(const typename Simd<T, Bytes>::V& v, Op op) {
    if constexpr (Bytes == 2 * sizeof(T)) {
        return op(v[0], v[1]);
    } else {
        typename Simd<T, Bytes / 2>::V lo, hi;
        std::memcpy(&lo, &v, Bytes / 2);
        std::memcpy(&hi, reinterpret_cast<const char*>(&v) + Bytes / 2, Bytes / 2);
        return fold<T, Bytes / 2>(op(lo, hi), op);
    }
}

template <class S, class Op>
MG_INLINE typename S::Scalar reduce(const typename S::V& v, Op op) {
    return fold<typename S::Scalar, sizeof(typename S::V)>(v, op);
}

// ---- exp ---------------------------------------------------------------------------------------------
//
// e^x = 2^n * e^r with n = round(x / ln 2) and r = x - n ln 2, |r| <= ln(2)/2 (range reduction), then
// e^r by its Taylor polynomial sum_k r^k / k! in Horner form (one FMA per degree).
// - n: adding 1.5 * 2^(mantissa bits) to x * log2(e) rounds it to an integer in the float's last
//   place; subtracting it back gives n as a float, and the integer difference of the bit patterns
//   gives n as an integer (no float -> int conversion needed).
// - r: ln 2 is split Cody-Waite style into ln2_hi, which has so few significant bits that n * ln2_hi
//   is exact, plus the small remainder ln2_lo: x - n ln2_hi is exact, and r carries one rounding.
// - 2^n is built from the exponent bits, as 2^n1 * 2^n2 with n1 = floor(n / 2), so that both factors
//   are normal numbers: results down to the subnormal range and up to the largest finite float come
//   out right, and the final rounding happens only in the last product.
// - x is clamped to [lo, hi], outside which e^x rounds to 0 or to +inf; the comparisons are false for
//   nan, which passes through (exp(nan) = nan); exp(-inf) = 0 and exp(+inf) = +inf.
// Error bound, in ulps of e^x (|r| <= 0.3466, so e^r lies in [0.707, 1.414]): the final FMA of Horner's
// rule rounds once (0.5 ulp); the rounding of r moves e^r by up to 0.25 ulp; the rounding of the
// previous Horner step, multiplied by |r|, adds up to 0.17 ulp; the truncation of the degree-7 (float)
// or degree-13 (double) Taylor polynomial adds up to 0.11 resp. 0.04 ulp; the scaling by 2^n is exact
// (save for results in the subnormal range, rounded once). In total under 1 ulp with FMA (the AVX2
// and AVX-512 versions): tests/test_cpp_softmax.py measures 0.93 ulp in float32 and 0.87 in float64
// at worst over 3 million points. Without FMA (the portable version on x86-64: SSE2 has none) every
// Horner step rounds twice: under 1.25 ulp, 1.20 / 1.14 measured. A minimax polynomial would save a
// degree; the Taylor coefficients 1/k! need no table to check.

template <class T>
struct ExpConstants;

template <>
struct ExpConstants<float> {
    static constexpr float lo = -104.0f, hi = 88.8f;  // e^lo < smallest subnormal / 2, e^hi > FLT_MAX
    static constexpr float log2e = 1.44269504088896341f;
    static constexpr float ln2_hi = 0.693359375f;  // 355/512: 9 significant bits
    static constexpr float ln2_lo = -2.12194440054690583e-4f;
    static constexpr int degree = 7, mantissa_bits = 23, exponent_bias = 127;
};

template <>
struct ExpConstants<double> {
    static constexpr double lo = -746.0, hi = 709.8;
    static constexpr double log2e = 1.44269504088896340736;
    static constexpr double ln2_hi = 6.93145751953125e-1;  // 45426/65536: 16 significant bits
    static constexpr double ln2_lo = 1.42860682030941723212e-6;
    static constexpr int degree = 13, mantissa_bits = 52, exponent_bias = 1023;
};

// 1/k!, rounded once (the factorials up to 13! are exact in double)
template <class T>
constexpr T inverse_factorial(int k) {
    double f = 1;
    for (int i = 2; i <= k; ++i) f *= i;
    return T(1.0 / f);
}

// p(r) = sum_{k <= degree} r^k / k! by Horner's rule, p = p * r + 1/k! for k = degree - 1 ... 0, unrolled
// at compile time, so the coefficients are constants and each step compiles to one FMA. (As a plain
// loop it was not unrolled under -fwrapv, which Python's build flags add: it then recomputed the
// factorials at run time and lost its FMAs.)
template <class V, class T, int Degree, int... K>
MG_INLINE V taylor_exp(const V& r, std::integer_sequence<int, K...>) {
    V p = splat<V>(inverse_factorial<T>(Degree));
    ((p = p * r + inverse_factorial<T>(Degree - 1 - K)), ...);
    return p;
}

template <class S>
MG_INLINE typename S::V vexp(const typename S::V& x_in) {
    using T = typename S::Scalar;
    using V = typename S::V;
    using I = typename S::I;
    using C = ExpConstants<T>;
    const V x = Min{}(splat<V>(C::hi), Max{}(splat<V>(C::lo), x_in));  // a nan passes through both
    const V magic = splat<V>(T(3) * T(1ULL << (C::mantissa_bits - 1)));  // 1.5 * 2^mantissa_bits
    const V t = x * C::log2e + magic;
    const V n = t - magic;
    const V r = (x - n * C::ln2_hi) - n * C::ln2_lo;
    const V p = taylor_exp<V, T, C::degree>(r, std::make_integer_sequence<int, C::degree>{});
    const I ni = (I)t - (I)magic;  // (I) reinterprets the bits
    const I n1 = ni >> 1, n2 = ni - n1;
    const V scale1 = (V)((n1 + C::exponent_bias) << C::mantissa_bits);
    const V scale2 = (V)((n2 + C::exponent_bias) << C::mantissa_bits);
    return p * scale1 * scale2;
}

}  // namespace minigrad
