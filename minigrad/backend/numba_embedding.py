"""Numba embedding: the row lookup and its scatter-add backward, free of races between threads.

Forward: out[i, :] = weight[indices[i], :], one task per output row (a copy of D contiguous elements).

Backward: dweight[indices[i], :] += dout[i, :] for every i. Two rows i with the same index add into
the same table row, so splitting the i's between threads would race. Instead the embedding dim is
split: each task owns a block of columns (64 float32, 256 bytes: whole cache lines, so tasks do not
even share lines) and walks all the i's in order for those columns. No two tasks write the same
element, no atomics are needed, and every element receives its additions in the order of i, the
order of the reference's `np.add.at` (so the results are the same to the bit). The price: at most
ceil(D / 64) tasks, e.g. 2 for D = 128; sorting the indices and giving each task a range of table
rows would scale with the vocabulary instead, at the cost of a sort.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minigrad.backend import numpy_ref
from minigrad.backend.numba_common import kernel_array, launch, supported

BLOCK_BYTES = 256  # columns per backward task, in bytes


@njit(parallel=True, cache=True)
def _forward(out, weight, indices):
    for i in prange(indices.shape[0]):
        out[i, :] = weight[indices[i], :]


@njit(parallel=True, cache=True)
def _backward(dweight, dout, indices, block):
    d = dweight.shape[1]
    for b in prange((d + block - 1) // block):
        j0 = b * block
        j1 = j0 + block if j0 + block < d else d
        for i in range(indices.shape[0]):
            row = indices[i]
            for j in range(j0, j1):
                dweight[row, j] += dout[i, j]


def embedding_forward(weight, indices):
    if not supported(weight) or indices.dtype != np.int64 or indices.size == 0 or weight.shape[1] == 0:
        return numpy_ref.embedding_forward(weight, indices)
    flat = kernel_array(indices).reshape(-1)
    out = np.empty((flat.shape[0], weight.shape[1]), weight.dtype)
    launch(_forward, out.size, out, kernel_array(weight), flat)
    return out.reshape(indices.shape + (weight.shape[1],))


def embedding_backward(dout, indices, num_embeddings, padding_idx):
    if not supported(dout) or indices.dtype != np.int64 or indices.size == 0 or dout.shape[-1] == 0:
        return numpy_ref.embedding_backward(dout, indices, num_embeddings, padding_idx)
    dim = dout.shape[-1]
    dweight = np.zeros((num_embeddings, dim), dout.dtype)
    launch(_backward, dout.size, dweight, kernel_array(dout).reshape(-1, dim), kernel_array(indices).reshape(-1),
              BLOCK_BYTES // dout.itemsize)
    if padding_idx is not None:
        dweight[padding_idx] = 0
    return dweight
