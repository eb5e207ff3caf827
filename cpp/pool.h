// A free list of large output blocks, shared by the kernels of the extension (rnn.cpp, conv.cpp).
#pragma once

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace minigrad {

namespace py = pybind11;

// Large kernel outputs (an LSTM scan's cache holds T*B*6H elements: 6 MiB at B = 32, H = 128, T = 64; a
// convolution's output 4 MiB at conv2d_step's sizes) live for a training step and are then freed. Fresh
// memory from the system costs a page fault per 4 KiB on first touch (about 1 us each in a VM: 1.6 ms for
// one LSTM forward at those sizes, as much as its arithmetic), and glibc returns large freed blocks to the
// system. So these arrays own blocks of a free
// list instead: when NumPy frees such an array, its block goes back on the list (up to kPoolBytes in
// all; the rest is freed), and the next request of the same size takes it, already mapped.

inline constexpr size_t kPoolBytes = size_t(256) << 20;

class BufferPool {
   public:
    void* get(size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = free_.find(bytes);
            if (it != free_.end()) {
                void* p = it->second;
                free_.erase(it);
                cached_ -= bytes;
                return p;
            }
        }
        void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!p) throw std::bad_alloc();
        return p;
    }
    void put(void* p, size_t bytes) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (cached_ + bytes <= kPoolBytes) {
                free_.emplace(bytes, p);
                cached_ += bytes;
                return;
            }
        }
        std::free(p);
    }

   private:
    std::mutex mutex_;
    std::multimap<size_t, void*> free_;  // size in bytes -> block
    size_t cached_ = 0;
};

// Never destroyed: arrays freed while the interpreter shuts down still return their blocks.
inline BufferPool& buffer_pool() {
    static BufferPool* pool = new BufferPool;
    return *pool;
}

// An uninitialized C-contiguous array whose memory comes from (and returns to) the buffer pool.
template <class T>
inline py::array_t<T> pooled_array(std::vector<py::ssize_t> shape) {
    size_t count = 1;
    for (py::ssize_t d : shape) count *= static_cast<size_t>(d);
    const size_t bytes = std::max<size_t>(count, 1) * sizeof(T);
    struct Block {
        void* p;
        size_t bytes;
    };
    auto* block = new Block{buffer_pool().get(bytes), bytes};
    py::capsule owner(block, [](void* b) {
        auto* block = static_cast<Block*>(b);
        buffer_pool().put(block->p, block->bytes);
        delete block;
    });
    return py::array_t<T>(shape, static_cast<T*>(block->p), owner);
}

}  // namespace minigrad
