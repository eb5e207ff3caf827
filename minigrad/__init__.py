"""minigrad: a small, readable deep-learning engine with a PyTorch-style API.

    import minigrad as mg
    x = mg.randn(3, 4, requires_grad=True)
    y = (x @ x.T).softmax(dim=-1).sum()
    y.backward()          # x.grad now holds dy/dx

Layers: user code -> Tensor (tensor.py) -> Function (autograd.py, ops/) -> backend primitive
(backend/) -> kernel. See README.md for a tour.
"""
from minigrad import backend, cuda, nn, optim, viz
from minigrad import amp  # (after nn: amp reads minigrad.tensor, which the ops import)
from minigrad.amp import autocast
from minigrad.autograd import Function, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from minigrad.creation import (
    arange, empty, empty_like, eye, from_numpy, full, full_like, linspace, ones, ones_like, rand, rand_like,
    randint, randint_like, randn, randn_like, tensor, zeros, zeros_like,
)
from minigrad.device import Device as device
from minigrad.dtypes import DType, bfloat16, bool_, float16, float32, float64, int64
from minigrad.ops import (
    abs, add, all, amax, amin, any, argmax, argmin, cat, chunk, clamp, clip, cos, div, eq, exp, expand,
    flatten, gather, ge, gelu, gt, isfinite, le, log, log_softmax, logical_and, logical_not, logical_or,
    logsumexp, lt, masked_fill, matmul, max, maximum, mean, min, minimum, mul, ne, neg, pad, permute, pow,
    relu, repeat, reshape, rsqrt, sigmoid, sign, silu, sin, softmax, split, sqrt, squeeze, stack, std, sub,
    sum, tanh, transpose, tril, triu, unsqueeze, var, where,
)
from minigrad.random import initial_seed, manual_seed
from minigrad.threads import get_num_threads, set_num_threads
from minigrad.tensor import Tensor

bool = bool_  # minigrad.bool, like torch.bool (only inside this namespace)
float = float32  # minigrad.float / minigrad.double / minigrad.long, PyTorch's aliases
double = float64
half = float16
long = int64

__version__ = "0.1.0"

from minigrad import data, metrics  # noqa: E402
from minigrad.io import load, load_checkpoint, save, save_checkpoint  # noqa: E402
