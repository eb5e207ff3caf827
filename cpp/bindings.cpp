// The module minigrad._C: one PYBIND11_MODULE that collects the kernel families, plus the thread
// count that all of them use.
//
// Threads: the kernels parallelize with OpenMP (libgomp with GCC), the same runtime that Numba's
// "omp" threading layer loads, so minigrad's C++ and Numba kernels share one pool of threads.
#include <omp.h>

#include <atomic>
#include <stdexcept>

#include "minigrad.h"

namespace py = pybind11;

namespace minigrad {

static std::atomic<int> g_num_threads{omp_get_max_threads()};  // OMP_NUM_THREADS, or the cores

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }

}  // namespace minigrad

PYBIND11_MODULE(_C, m) {
    m.doc() = "minigrad's C++ kernels (OpenMP-parallel): matmul, softmax";
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
        minigrad::g_num_threads = n;
        omp_set_num_threads(n);  // also for OpenMP regions of other libraries run from this thread
    }, py::arg("n"), "Threads of every OpenMP kernel in this module.");
    m.def("get_num_threads", &minigrad::num_threads, "Threads of every OpenMP kernel in this module.");
    minigrad::register_gemm(m);
    minigrad::register_softmax(m);
    minigrad::register_conv(m);
    minigrad::register_optim(m);
}
