"""Differentiable ops, one Function class per op, grouped by family, and their public functions."""
from minigrad.ops.attention import Attention
from minigrad.ops.conv import AvgPool2d, Conv2d, MaxPool2d
from minigrad.ops.dropout import Dropout
from minigrad.ops.elementwise import (
    Abs, Add, Cast, Clamp, Cos, Div, Exp, Gelu, Log, Maximum, Minimum, Mul, Neg, Pow, Relu, Rsqrt, Sigmoid,
    Sign, Silu, Sin, Sqrt, Sub, Tanh, Where, abs, add, all, any, binary_operands, clamp, clip, cos, div, eq, exp,
    ge, gelu, gt, isfinite, le, log, logical_and, logical_not, logical_or, lt, maximum, minimum, mul, ne,
    neg, pow, relu, rsqrt, sigmoid, sign, silu, sin, sqrt, sub, tanh, where,
)
from minigrad.ops.fused import BiasGelu, BiasResidual, bias_gelu, bias_residual
from minigrad.ops.linalg import Matmul, matmul
from minigrad.ops.loss import CrossEntropy
from minigrad.ops.movement import (
    Cat, Contiguous, Expand, Gather, GetItem, MaskedFill, Pad, Permute, Repeat, Reshape, Tril, Triu, cat,
    chunk, contiguous, expand, flatten, gather, getitem, masked_fill, normalize_index, pad, permute, repeat,
    reshape, split, squeeze, stack, transpose, tril, triu, unsqueeze,
)
from minigrad.ops.normalization import LayerNorm
from minigrad.ops.reduce import (
    Amax, LogSumExp, LogSoftmax, MaxMinResult, Softmax, Sum, amax, amin, argmax, argmin, log_softmax,
    logsumexp, max, mean, min, softmax, std, sum, var,
)
from minigrad.ops.rnn import GRUCellFn, GRUScan, LSTMCellFn, LSTMScan
from minigrad.ops.shapes import DimensionError, broadcast_shapes, normalize_dim, normalize_dims, unbroadcast
from minigrad.ops.sparse import Embedding
from minigrad.ops.transfer import ToDevice, to_device

