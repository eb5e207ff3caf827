// minigrad._C: what the source files of the extension share.
//
// Each kernel family lives in its own file and adds its functions to the module in a register_*
// function, called once from bindings.cpp (the only PYBIND11_MODULE).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <exception>
#include <string>

namespace minigrad {

// Threads used by every OpenMP region of the extension (set_num_threads() in Python sets it).
// One global instead of omp_set_num_threads, whose setting only reaches the calling thread.
int num_threads();

// x's shape as Python writes a tuple, "(2, 3)" or "(4,)", for error messages (no Python call: safe without
// the GIL).
std::string shape_of(const pybind11::array& x);

// The instruction set of the SIMD kernels written on simd.h (softmax, attention, rnn, optim): 0 AVX-512,
// 1 AVX2+FMA, 2 portable; the best this CPU runs, unless set_simd_kernel picked another (bindings.cpp).
int simd_isa();

// An exception must not leave an OpenMP region (the program would terminate): code inside one runs its
// work through `run`, which keeps the first exception, and the region's owner calls rethrow() after it.
class RegionErrors {
   public:
    template <class F>
    void run(F&& work) noexcept {
        try {
            work();
        } catch (...) {
#pragma omp critical(minigrad_region_errors)
            if (!first_) first_ = std::current_exception();
        }
    }
    void rethrow() const {
        if (first_) std::rethrow_exception(first_);
    }

   private:
    std::exception_ptr first_;
};

void register_gemm(pybind11::module_& m);     // gemm.cpp: matmul
void register_softmax(pybind11::module_& m);  // softmax.cpp: softmax / log_softmax, forward and backward
void register_conv(pybind11::module_& m);     // conv.cpp: conv2d forward and backward
void register_attention(pybind11::module_& m);  // attention.cpp: scaled dot-product attention, fwd and bwd
void register_rnn(pybind11::module_& m);      // rnn.cpp: LSTM / GRU layers over a sequence, forward and backward
void register_optim(pybind11::module_& m);    // optim.cpp: multi-tensor SGD and Adam / AdamW steps

}  // namespace minigrad
