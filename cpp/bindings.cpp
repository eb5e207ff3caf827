// The module minigrad._C: one PYBIND11_MODULE that collects the kernel families, plus the thread
// count that all of them use.
//
// Threads: the kernels parallelize with OpenMP (libgomp with GCC), the same runtime that Numba's
// "omp" threading layer loads, so minigrad's C++ and Numba kernels share one pool of threads.
#include <omp.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "minigrad.h"

namespace py = pybind11;

namespace minigrad {

static std::atomic<int> g_num_threads{omp_get_max_threads()};  // OMP_NUM_THREADS, or the cores

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }

std::string shape_of(const py::array& x) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < x.ndim(); ++d) s += (d ? ", " : "") + std::to_string(x.shape(d));
    return s + (x.ndim() == 1 ? ",)" : ")");
}

// The versions of the SIMD row kernels (simd.h), best first; g_isa indexes the one in use: the best this
// CPU runs, unless a test or a benchmark picks another with set_simd_kernel.
static const char* const kIsaNames[] = {"avx512", "avx2", "portable"};
constexpr int kIsaCount = 3;

static bool isa_supported(int isa) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa == 0) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    if (isa == 1) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return isa == kIsaCount - 1;
}

static std::atomic<int> g_isa{[] {
    int isa = 0;
    while (!isa_supported(isa)) ++isa;
    return isa;
}()};

int simd_isa() { return g_isa.load(std::memory_order_relaxed); }

}  // namespace minigrad

PYBIND11_MODULE(_C, m) {
    m.doc() = "minigrad's C++ kernels (OpenMP-parallel): matmul, softmax, attention";
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
        minigrad::g_num_threads = n;
        omp_set_num_threads(n);  // also for OpenMP regions of other libraries run from this thread
    }, py::arg("n"), "Threads of every OpenMP kernel in this module.");
    m.def("get_num_threads", &minigrad::num_threads, "Threads of every OpenMP kernel in this module.");
    m.def("simd_kernels", [] {
        std::vector<std::string> names;
        for (int isa = 0; isa < minigrad::kIsaCount; ++isa)
            if (minigrad::isa_supported(isa)) names.push_back(minigrad::kIsaNames[isa]);
        return names;
    }, "Versions of the SIMD row kernels (softmax, attention, LSTM / GRU steps) this CPU runs, best first.");
    m.def("simd_kernel", [] { return std::string(minigrad::kIsaNames[minigrad::simd_isa()]); },
          "The version of the SIMD row kernels in use.");
    m.def("set_simd_kernel", [](const std::string& name) {
        for (int isa = 0; isa < minigrad::kIsaCount; ++isa)
            if (name == minigrad::kIsaNames[isa] && minigrad::isa_supported(isa)) return minigrad::g_isa.store(isa);
        throw std::invalid_argument("set_simd_kernel: '" + name + "' is not one of simd_kernels()");
    }, py::arg("name"), "Use another version of the SIMD row kernels (for tests and benchmarks).");
    minigrad::register_gemm(m);
    minigrad::register_softmax(m);
    minigrad::register_conv(m);
    minigrad::register_attention(m);
    minigrad::register_rnn(m);
    minigrad::register_optim(m);
}
