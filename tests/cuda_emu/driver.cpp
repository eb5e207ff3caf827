// driver.cpp: a C ABI over the kernels of kernels/*.cu run by the CPU emulation of cuda_emu.h, for ctypes.
//
// tests/test_cuda_emulated.py generates `emu_kernels.inc`, which includes each kernels/<family>.cu inside
// its own namespace (every .cu is compiled on its own by NVRTC, so helpers may repeat across files) and
// defines MG_EMU_KERNEL_LIST(X) with one X(namespace, entry point) per extern "C" __global__ function it
// found; then it compiles this file into a shared library:
//     g++ -std=c++20 -O1 -shared -fPIC -pthread -I<dir of emu_kernels.inc> -Itests/cuda_emu driver.cpp
//
// The C ABI:
//     int emu_kernel_count(void);
//     const char* emu_kernel_name(int i);
//     const char* emu_kernel_signature(int i);        e.g. "f32*,f32*,i64,i32"
//     int emu_launch(int i, unsigned gx, gy, gz, bx, by, bz, void** args, char* err, int errlen);
//         args as for cuLaunchKernel: args[k] points to the value of parameter k; 0 on success, else 1
//         with the emulator's message in err
//     void emu_set_schedule(int mode, unsigned long long seed);   fiber order, see cuda_emu.h
//     void emu_philox4x32_10(const unsigned* ctr4, const unsigned* key2, unsigned* out4);  (elementwise.cu)
#include "cuda_emu.h"

#include "emu_kernels.inc"

namespace {

const std::vector<cuda_emu::KernelInfo>& table() {
    static const std::vector<cuda_emu::KernelInfo> kernels = {
#define MG_EMU_X(ns, name) cuda_emu::make_kernel(#name, &ns::name),
        MG_EMU_KERNEL_LIST(MG_EMU_X)
#undef MG_EMU_X
    };
    return kernels;
}

}  // namespace

extern "C" {

int emu_kernel_count(void) { return (int)table().size(); }

const char* emu_kernel_name(int i) { return table().at(i).name.c_str(); }

const char* emu_kernel_signature(int i) { return table().at(i).signature.c_str(); }

int emu_launch(int i, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, void** args,
               char* err, int errlen) {
    const std::string msg = table().at(i).launch(dim3(gx, gy, gz), dim3(bx, by, bz), args);
    if (msg.empty()) return 0;
    std::snprintf(err, (size_t)errlen, "%s", msg.c_str());
    return 1;
}

void emu_set_schedule(int mode, unsigned long long seed) { cuda_emu::set_schedule(mode, seed); }

#ifdef MG_EMU_HAVE_elementwise
void emu_philox4x32_10(const unsigned* ctr, const unsigned* key, unsigned* out) {
    const mg_elementwise::Philox4 r =
        mg_elementwise::philox4x32_10(mg_elementwise::Philox4{ctr[0], ctr[1], ctr[2], ctr[3]}, key[0], key[1]);
    out[0] = r.x;
    out[1] = r.y;
    out[2] = r.z;
    out[3] = r.w;
}
#endif

}  // extern "C"
