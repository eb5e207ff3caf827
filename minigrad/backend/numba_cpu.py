"""The Numba CPU backend: parallel, fused kernels compiled by Numba, one module per family of primitives.

`minigrad.backend` registers this module for the CPU (priority 5: above the NumPy reference, below the
C++ kernels where those exist) when Numba is installed, so it becomes the default for every primitive
it exports and the C++ extension does not (with the extension built, conv2d, attention, the LSTM / GRU
scans and the optimizer steps run in C++; the Numba versions serve builds without it);
`MINIGRAD_BACKEND=numpy` or `minigrad.backend.use("numpy")` still selects the reference.
Each primitive has exactly the semantics of its `numpy_ref` namesake and is tested against it
(tests/test_numba_kernels.py); inputs a kernel does not cover (integer dtypes, mixed dtypes) go to
the reference.

Layout (each family module is a short read: its kernels, then the Python wrappers that prepare
operands, allocate outputs and call them):

    numba_common.py       threading layer ("omp"), fast-math flags, operand preparation
    numba_math.py         exp / tanh / erf that LLVM can vectorize in float32 (float64: libm, exact)
    numba_reduce.py       sum, max, min, argmax, argmin, logsumexp along any dims; softmax, log-softmax
    numba_norm.py         layer_norm forward / backward
    numba_loss.py         cross-entropy fused with log-softmax (ignore_index, label smoothing)
    numba_embedding.py    embedding lookup and its race-free scatter-add backward
    numba_elementwise.py  dropout; fused bias + GELU, bias + residual (and GELU alone); ReLU forward / backward
    numba_optim.py        fused SGD and Adam / AdamW steps, in place (one tensor at a time, or a list)
    numba_attention.py    scaled dot-product attention, flash-style
    numba_gemm.py         the tile product c = a b^T that attention and conv2d's weight gradient share
    numba_conv.py         conv2d (im2col / col2im around the GEMM primitive), max / avg pooling
    numba_rnn.py          the fused gate math of one LSTM / GRU step, and the sequence scans around it

Compilation is lazy (a kernel compiles on its first call, for the dtypes it is called with) and cached
on disk (`cache=True`, in __pycache__ next to the sources), so importing this module costs only the
import of Numba, and a later process loads the machine code instead of compiling it again. Operands
are made C-contiguous before a call, so each kernel compiles once per dtype.
"""
from __future__ import annotations

from minigrad.backend.numba_attention import attention_backward, attention_forward  # noqa: F401
from minigrad.backend.numba_conv import (  # noqa: F401
    avg_pool2d_backward, avg_pool2d_forward, conv2d_backward, conv2d_forward, max_pool2d_backward, max_pool2d_forward,
)
from minigrad.backend.numba_elementwise import (  # noqa: F401
    bias_gelu_backward, bias_gelu_forward, bias_residual_forward, dropout_backward, dropout_forward, gelu_backward,
    gelu_forward, relu, relu_backward,
)
from minigrad.backend.numba_embedding import embedding_backward, embedding_forward  # noqa: F401
from minigrad.backend.numba_loss import cross_entropy_backward, cross_entropy_forward  # noqa: F401
from minigrad.backend.numba_norm import layer_norm_backward, layer_norm_forward  # noqa: F401
from minigrad.backend.numba_optim import adam_foreach_, adam_step_, sgd_foreach_, sgd_step_  # noqa: F401
from minigrad.backend.numba_reduce import (  # noqa: F401
    argmax, argmin, log_softmax_backward, log_softmax_forward, logsumexp, max, min, softmax_backward,
    softmax_forward, sum,
)
from minigrad.backend.numba_rnn import (  # noqa: F401
    gru_cell_backward, gru_cell_forward, gru_scan_backward, gru_scan_forward, lstm_cell_backward, lstm_cell_forward,
    lstm_scan_backward, lstm_scan_forward,
)
