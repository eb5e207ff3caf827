// Multi-tensor ("foreach") optimizer steps: SGD (momentum, Nesterov) and Adam / AdamW over all the
// parameters of a param group in one call, updating the parameters and their state in place.
//
// Why: an optimizer step is a few flops per element and bound by memory traffic, but a model has many
// parameters, most of them small (a LayerNorm weight is 128 floats): one call per parameter pays the
// Python call, the argument checks and a wake-up of the thread pool each time, which is most of the
// step for a small model. Here one call, and one parallel region, covers every parameter.
//
// Work split: number the elements of all the tensors one after another (tensor 0's, then tensor 1's,
// ...) and cut that range into chunks of kChunk elements. Chunk c covers [c * kChunk, (c + 1) * kChunk):
// a part of a big tensor, or several small tensors, or the end of one and the start of the next. One
// OpenMP loop runs over the chunks; in a chunk, each piece of a tensor is walked with SIMD vectors
// (for_each_vector of simd.h, a partial vector at the piece's end). The schedule is static: each thread
// takes a contiguous run of chunks, the same at every step, so it finds its part of the arrays still in
// its own L2 cache where that fits (dynamic scheduling measured 1.6x slower on the tiny GPT's SGD step).
// Every element's update reads only that element (of the parameter, its gradient and its state), so
// the results do not depend on the cut or the thread count at all.
//
// Math: exactly numpy_ref.sgd_step_ / adam_step_, operation by operation and in the same order, in the
// parameter's dtype: the Python floats (lr, betas, ...) are converted to it first, as NumPy converts a
// Python float operand; every product and sum is rounded on its own (this file's kernels are compiled
// with fp-contract=off: GCC would otherwise fuse a * b + c into one FMA, which rounds once and differs
// from NumPy in the last bit); sqrt and division are the correctly rounded vector instructions. The
// results equal numpy_ref's bit for bit (tests/test_cpp_optim.py). The bias corrections of Adam
// (1 - beta^t, with the same libm pow as Python's `**`) are computed per tensor in double, as the
// reference does.
//
// SIMD: as softmax.cpp, the kernels are written once on GCC vector extensions and compiled for
// AVX-512, AVX2 and the baseline; the version set_simd_kernel chose (simd_isa()) runs here.
//
// Which tensors: float32 or float64 parameters whose gradient and state arrays have their dtype and
// shape; the parameter and state arrays must be C-contiguous and writeable (they are written in
// place), a strided gradient is copied. The functions return the positions of the tensors they did not
// update (another dtype, mixed dtypes, a strided parameter or state), which the Python wrapper
// (minigrad/backend/cpp.py) gives to the reference's single-tensor step.
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "minigrad.h"
#include "simd.h"

namespace py = pybind11;

namespace minigrad {
namespace {

// One parameter as the kernels see it: its arrays as typed pointers, and its position in the call's
// lists (for the per-parameter values: SGD's first step, Adam's step count).
template <class T>
struct TensorRef {
    T* param;
    const T* grad;
    T* state[3];  // the state arrays in the primitive's order; nullptr where unused
    int64_t n;    // elements
    int64_t index;
};

// ---- the kernels: one piece [begin, end) of one tensor ------------------------------------------------
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")  // no FMA contraction: NumPy's rounding (see the top)

// sqrt of each lane, correctly rounded. Vector extensions have no sqrt operator, but a loop over the
// lanes compiles to the one vector instruction (sqrtps / sqrtpd of the function's vector width), since
// setup.py compiles with -fno-math-errno (else each sqrt must be able to set errno, which is a branch
// and a scalar call per lane).
template <class V>
MG_INLINE V vsqrt(const V& x) {
    V r;
    for (size_t j = 0; j < sizeof(V) / sizeof(x[0]); ++j) r[j] = std::sqrt(x[j]);
    return r;
}

// SGD, per element (numpy_ref.sgd_step_): g = -g if maximize; g = g + weight_decay * p; with momentum,
// b = g on the first step, else b = b * momentum + g * (1 - dampening), and g = g + momentum * b
// (Nesterov) or g = b; p = p - g * lr. state[0] is the momentum buffer (nullptr without momentum).
template <class T>
struct Sgd {
    using Scalar = T;
    T lr, momentum, undamped, weight_decay;  // undamped = 1 - dampening
    bool decay, nesterov, maximize;          // decay: weight_decay != 0 (tested before the conversion to T)
    const std::vector<bool>& first_steps;    // per tensor

    template <class S>
    MG_INLINE void piece(const TensorRef<T>& t, int64_t begin, int64_t end) const {
        using V = typename S::V;
        T* p = t.param + begin;
        const T* g = t.grad + begin;
        T* buf = t.state[0] ? t.state[0] + begin : nullptr;
        const bool first = first_steps[t.index];
        for_each_vector<S>(end - begin, [&](int64_t i, auto k) MG_LAMBDA {
            V d = load<S>(g + i, k, T(0));
            if (maximize) d = -d;
            const V x = load<S>(p + i, k, T(0));
            if (decay) d = d + weight_decay * x;
            if (buf) {
                const V b = first ? d : load<S>(buf + i, k, T(0)) * momentum + d * undamped;
                store<S>(buf + i, b, k);
                d = nesterov ? d + momentum * b : b;
            }
            store<S>(p + i, x - d * lr, k);
        });
    }
};

// Adam / AdamW, per element (numpy_ref.adam_step_): g = -g if maximize; p = p * (1 - lr * weight_decay)
// (decoupled, AdamW) or g = g + weight_decay * p (Adam); m = m * beta1 + g * (1 - beta1); v = v * beta2 +
// (g * g) * (1 - beta2); with amsgrad v = v_max = maximum(v_max, v) (nan-propagating, as np.maximum);
// p = p - (m / (sqrt(v) / sqrt(1 - beta2^t) + eps)) * (lr / (1 - beta1^t)). state: m, v, v_max (nullptr
// without amsgrad).
template <class T>
struct Adam {
    using Scalar = T;
    T beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay, shrink;  // shrink = 1 - lr * weight_decay
    bool decay, decoupled, maximize;
    const std::vector<double>& step_sizes;  // per tensor: lr / (1 - beta1^t)
    const std::vector<double>& sqrt_bias_corrections2;  // per tensor: sqrt(1 - beta2^t)

    template <class S>
    MG_INLINE void piece(const TensorRef<T>& t, int64_t begin, int64_t end) const {
        using V = typename S::V;
        T* p = t.param + begin;
        const T* g = t.grad + begin;
        T *m = t.state[0] + begin, *v = t.state[1] + begin, *vmax = t.state[2] ? t.state[2] + begin : nullptr;
        const T step_size = T(step_sizes[t.index]), sqrt_bc2 = T(sqrt_bias_corrections2[t.index]);
        for_each_vector<S>(end - begin, [&](int64_t i, auto k) MG_LAMBDA {
            V d = load<S>(g + i, k, T(0));
            if (maximize) d = -d;
            V x = load<S>(p + i, k, T(0));
            if (decay) {
                if (decoupled) x = x * shrink;
                else d = d + weight_decay * x;
            }
            const V mi = load<S>(m + i, k, T(0)) * beta1 + d * one_minus_beta1;
            V vi = load<S>(v + i, k, T(0)) * beta2 + (d * d) * one_minus_beta2;
            store<S>(m + i, mi, k);
            store<S>(v + i, vi, k);
            if (vmax) {
                const V w = load<S>(vmax + i, k, T(0));
                vi = (vi > w) | (vi != vi) ? vi : w;
                store<S>(vmax + i, vi, k);
            }
            store<S>(p + i, x - (mi / (vsqrt(vi) / sqrt_bc2 + eps)) * step_size, k);
        });
    }
};

// ---- one compiled version per instruction set, chosen at run time (as in softmax.cpp) ----------------

template <class K>
using PieceFn = void (*)(const K& kernel, const TensorRef<typename K::Scalar>& t, int64_t begin, int64_t end);

#define MG_PIECE(NAME, TARGET, BYTES)                                                                      \
    template <class K>                                                                                     \
    TARGET void NAME(const K& kernel, const TensorRef<typename K::Scalar>& t, int64_t begin, int64_t end) { \
        kernel.template piece<Simd<typename K::Scalar, BYTES>>(t, begin, end);                             \
    }
#if defined(__x86_64__) || defined(__i386__)
MG_PIECE(piece_avx512, __attribute__((target("avx512f,fma"))), 64)
MG_PIECE(piece_avx2, __attribute__((target("avx2,fma"))), 32)
#endif
MG_PIECE(piece_portable, , 16)
#undef MG_PIECE

#pragma GCC pop_options

template <class K>
PieceFn<K> piece_fn() {
    switch (simd_isa()) {
#if defined(__x86_64__) || defined(__i386__)
        case 0: return &piece_avx512<K>;
        case 1: return &piece_avx2<K>;
#endif
        default: return &piece_portable<K>;
    }
}

// ---- the parallel loop over chunks of all the tensors' elements ----------------------------------------

constexpr int64_t kChunk = 1 << 14;        // elements per chunk (64 KiB of each float32 array)
constexpr int64_t kParallelMin = 1 << 15;  // below this many elements in all, one thread does the call

// kernel on every element of the (non-empty) tensors.
template <class K>
void run_chunks(const K& kernel, const std::vector<TensorRef<typename K::Scalar>>& tensors) {
    if (tensors.empty()) return;
    std::vector<int64_t> start(tensors.size() + 1, 0);  // start[j]: where tensor j begins in the numbering
    for (size_t j = 0; j < tensors.size(); ++j) start[j + 1] = start[j] + tensors[j].n;
    const int64_t total = start.back(), chunks = (total + kChunk - 1) / kChunk;
    const PieceFn<K> fn = piece_fn<K>();
    const int threads = total < kParallelMin ? 1 : int(std::min<int64_t>(num_threads(), chunks));
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t lo = c * kChunk, hi = std::min(lo + kChunk, total);
        // the tensor holding element lo (the last that starts at or before it: no tensor is empty), then
        // the following ones up to hi
        size_t j = std::upper_bound(start.begin(), start.end(), lo) - start.begin() - 1;
        for (; j < tensors.size() && start[j] < hi; ++j)
            fn(kernel, tensors[j], std::max(lo, start[j]) - start[j], std::min(hi, start[j + 1]) - start[j]);
    }
}

// ---- the arguments: lists of arrays, sorted into what the kernels take --------------------------------

// The tensors of a call, as the kernels take them (by dtype), and the positions of the others.
struct Sorted {
    std::vector<TensorRef<float>> f32;
    std::vector<TensorRef<double>> f64;
    std::vector<py::array> copies;  // contiguous copies of strided gradients, kept alive until the step ran
    std::vector<int64_t> skipped;   // for the single-tensor primitive
};

py::array array_at(const std::string& fn, const char* list, const py::sequence& arrays, size_t i) {
    py::object x = arrays[i];
    if (!py::isinstance<py::array>(x))
        throw py::type_error(fn + ": " + list + "[" + std::to_string(i) + "] is a " + Py_TYPE(x.ptr())->tp_name +
                             ", not a NumPy array");
    return py::reinterpret_borrow<py::array>(x);
}

template <class T>
TensorRef<T> tensor_ref(py::array& p, const py::array& g, std::vector<py::array>& states, int64_t i) {
    TensorRef<T> t{static_cast<T*>(p.mutable_data()), static_cast<const T*>(g.data()), {}, p.size(), i};
    for (size_t s = 0; s < states.size(); ++s) t.state[s] = static_cast<T*>(states[s].mutable_data());
    return t;
}

bool writeable_contiguous(const py::array& x) { return x.writeable() && (x.flags() & py::array::c_style); }

// params[i], grads[i] and states[s][i] for the state lists given (name, list), checked: NumPy arrays of
// params[i]'s shape (else TypeError / ValueError). A state list that is None is unused; only the last
// ones may be, so that the kernels find list s at TensorRef::state[s]. `per_tensor` names the list of
// per-tensor values and gives its length, which must be the others' too.
Sorted sort_tensors(const std::string& fn, const py::sequence& params, const py::sequence& grads,
                    const std::vector<std::pair<const char*, py::object>>& state_lists,
                    std::pair<const char*, size_t> per_tensor) {
    const size_t count = params.size();
    auto check_length = [&](const char* name, size_t n) {
        if (n != count)
            throw py::value_error(fn + ": " + name + " has " + std::to_string(n) + " entries, params has " +
                                  std::to_string(count));
    };
    check_length("grads", grads.size());
    check_length(per_tensor.first, per_tensor.second);
    std::vector<std::pair<const char*, py::sequence>> lists;  // the state lists in use
    for (const auto& [name, list] : state_lists) {
        if (list.is_none()) continue;
        lists.emplace_back(name, py::reinterpret_borrow<py::sequence>(list));
        check_length(name, lists.back().second.size());
    }
    const py::dtype f32 = py::dtype::of<float>(), f64 = py::dtype::of<double>();
    Sorted sorted;
    for (size_t i = 0; i < count; ++i) {
        py::array p = array_at(fn, "params", params, i), g = array_at(fn, "grads", grads, i);
        auto check_shape = [&](const char* name, const py::array& x) {
            if (x.ndim() != p.ndim() || !std::equal(p.shape(), p.shape() + p.ndim(), x.shape()))
                throw py::value_error(fn + ": " + name + "[" + std::to_string(i) + "] has shape " +
                                      std::string(py::repr(x.attr("shape"))) + ", params[" + std::to_string(i) +
                                      "] has shape " + std::string(py::repr(p.attr("shape"))));
        };
        check_shape("grads", g);
        const py::dtype dtype = p.dtype();
        bool ok = (dtype.equal(f32) || dtype.equal(f64)) && g.dtype().equal(dtype) && writeable_contiguous(p);
        std::vector<py::array> states;
        for (const auto& [name, list] : lists) {
            states.push_back(array_at(fn, name, list, i));
            check_shape(name, states.back());
            ok = ok && states.back().dtype().equal(dtype) && writeable_contiguous(states.back());
        }
        if (!ok) {
            sorted.skipped.push_back(int64_t(i));
            continue;
        }
        if (p.size() == 0) continue;
        if (!(g.flags() & py::array::c_style)) {
            g = py::array::ensure(g, py::array::c_style);
            sorted.copies.push_back(g);
        }
        if (dtype.equal(f32))
            sorted.f32.push_back(tensor_ref<float>(p, g, states, int64_t(i)));
        else
            sorted.f64.push_back(tensor_ref<double>(p, g, states, int64_t(i)));
    }
    return sorted;
}

// ---- the primitives --------------------------------------------------------------------------------

std::vector<int64_t> sgd_foreach(const py::sequence& params, const py::sequence& grads, const py::object& bufs,
                                 double lr, double momentum, double dampening, double weight_decay, bool nesterov,
                                 bool maximize, const std::vector<bool>& first_steps) {
    if (momentum != 0 && bufs.is_none())
        throw py::value_error("sgd_foreach_: momentum != 0 needs momentum_bufs");
    const Sorted sorted = sort_tensors("sgd_foreach_", params, grads,
                                       {{"momentum_bufs", momentum != 0 ? bufs : py::none()}},
                                       {"first_steps", first_steps.size()});
    auto kernel = [&](auto zero) {
        using T = decltype(zero);
        return Sgd<T>{T(lr), T(momentum), T(1 - dampening), T(weight_decay), weight_decay != 0, nesterov, maximize,
                      first_steps};
    };
    {
        py::gil_scoped_release release;
        run_chunks(kernel(0.0f), sorted.f32);
        run_chunks(kernel(0.0), sorted.f64);
    }
    return sorted.skipped;
}

std::vector<int64_t> adam_foreach(const py::sequence& params, const py::sequence& grads, const py::object& exp_avgs,
                                  const py::object& exp_avg_sqs, const py::object& max_exp_avg_sqs,
                                  const std::vector<int64_t>& steps, double lr, double beta1, double beta2, double eps,
                                  double weight_decay, bool decoupled, bool amsgrad, bool maximize) {
    if (exp_avgs.is_none() || exp_avg_sqs.is_none() || (amsgrad && max_exp_avg_sqs.is_none()))
        throw py::value_error("adam_foreach_: exp_avgs and exp_avg_sqs (and max_exp_avg_sqs with amsgrad) are "
                              "needed");
    if (!(0 <= beta1 && beta1 < 1) || !(0 <= beta2 && beta2 <= 1))  // (else 1 / 0 or sqrt(< 0), where numpy_ref raises)
        throw py::value_error("adam_foreach_: betas must be in [0, 1) and [0, 1], got " + std::to_string(beta1) +
                              " and " + std::to_string(beta2));
    std::vector<double> step_sizes, sqrt_bc2;  // the bias corrections, per tensor, as numpy_ref computes them
    for (int64_t step : steps) {
        if (step < 1) throw py::value_error("adam_foreach_: step counts start at 1, got " + std::to_string(step));
        step_sizes.push_back(lr / (1 - std::pow(beta1, double(step))));
        sqrt_bc2.push_back(std::sqrt(1 - std::pow(beta2, double(step))));
    }
    const Sorted sorted = sort_tensors("adam_foreach_", params, grads,
                                       {{"exp_avgs", exp_avgs}, {"exp_avg_sqs", exp_avg_sqs},
                                        {"max_exp_avg_sqs", amsgrad ? max_exp_avg_sqs : py::none()}},
                                       {"steps", steps.size()});
    auto kernel = [&](auto zero) {
        using T = decltype(zero);
        return Adam<T>{T(beta1), T(beta2), T(1 - beta1), T(1 - beta2), T(eps), T(weight_decay),
                       T(1 - lr * weight_decay), weight_decay != 0, decoupled, maximize, step_sizes, sqrt_bc2};
    };
    {
        py::gil_scoped_release release;
        run_chunks(kernel(0.0f), sorted.f32);
        run_chunks(kernel(0.0), sorted.f64);
    }
    return sorted.skipped;
}

}  // namespace

void register_optim(py::module_& m) {
    m.def("sgd_foreach_", &sgd_foreach, py::arg("params"), py::arg("grads"), py::arg("momentum_bufs"), py::arg("lr"),
          py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"),
          py::arg("maximize"), py::arg("first_steps"),
          "numpy_ref.sgd_step_ on every tensor of the lists (momentum_bufs: a list, or None when momentum == 0;\n"
          "first_steps: a bool per tensor), in one parallel region; returns the positions of the tensors it\n"
          "left alone (not float32/float64 throughout, or a parameter or state array that is not\n"
          "C-contiguous and writeable).");
    m.def("adam_foreach_", &adam_foreach, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_avg_sqs"), py::arg("max_exp_avg_sqs"), py::arg("steps"), py::arg("lr"), py::arg("beta1"),
          py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"), py::arg("amsgrad"),
          py::arg("maximize"),
          "numpy_ref.adam_step_ on every tensor of the lists (steps: a step count >= 1 per tensor;\n"
          "max_exp_avg_sqs: None unless amsgrad), in one parallel region; returns the positions of the\n"
          "tensors it left alone, as sgd_foreach_.");
}

}  // namespace minigrad
