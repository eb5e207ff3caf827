"""Recurrent layers: RNN, LSTM and GRU (stacked, optionally bidirectional) and their one-step cells.

One step of each kind is a function of minigrad ops (the gate math below; for the LSTM and the GRU one
fused op each, from minigrad.ops.rnn), shared by the cells and the full layers. A full layer projects
the whole input sequence through W_ih in one matmul per layer and direction, then loops over time
with the recurrent matmul h W_hh^T and the gate math; for the LSTM and the GRU that loop is itself one
fused op per layer and direction (LSTMScan, GRUScan), so a step costs no autograd nodes.

Shapes: T time, B batch, I input_size, H hidden_size, G gates (1 for RNN, 4 for LSTM, 3 for GRU),
L num_layers, D directions (2 if bidirectional). Gate order and parameter names are PyTorch's, so its
state_dicts load directly.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

from minigrad import creation
from minigrad.nn import functional as F
from minigrad.nn import init
from minigrad.nn.module import Module
from minigrad.nn.parameter import Parameter
from minigrad.ops import GRUCellFn, GRUScan, LSTMCellFn, LSTMScan, cat, stack
from minigrad.tensor import Tensor

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

# ---- the gate math: one time step --------------------------------------------------------------------
# Each step takes gi = x W_ih^T + b_ih (B, G*H), the state (a tuple: (h,), or (h, c) for the LSTM, each
# (B, H)) and the recurrent weights; it returns the next state.


def _rnn_tanh_step(gi, state, w_hh, b_hh):
    """h' = tanh(gi + h W_hh^T + b_hh)."""
    (h,) = state
    return ((gi + F.linear(h, w_hh, b_hh)).tanh(),)


def _rnn_relu_step(gi, state, w_hh, b_hh):
    """h' = relu(gi + h W_hh^T + b_hh)."""
    (h,) = state
    return ((gi + F.linear(h, w_hh, b_hh)).relu(),)


def _lstm_step(gi, state, w_hh, b_hh):
    """Gates i, f, g, o (input, forget, cell candidate, output) from gi + h W_hh^T + b_hh;
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g), h' = sigmoid(o) * tanh(c') (one fused op: LSTMCellFn)."""
    h, c = state
    hc = LSTMCellFn.apply(gi, F.linear(h, w_hh, b_hh), c)  # (2, B, H): h', c'
    return hc[0], hc[1]


def _gru_step(gi, state, w_hh, b_hh):
    """Reset and update gates r, z = sigmoid(gi_{r,z} + gh_{r,z}) with gh = h W_hh^T + b_hh; the
    candidate n = tanh(gi_n + r * gh_n) (the reset gate scales the recurrent part, bias included);
    h' = (1 - z) * n + z * h (one fused op: GRUCellFn)."""
    (h,) = state
    return (GRUCellFn.apply(gi, F.linear(h, w_hh, b_hh), h),)


# ---- the full layers' LSTM and GRU: a whole sequence (one layer, one direction) as one fused op ----------
# Each takes x (T, B, in), the state, the four parameters and the direction; returns (outputs (T, B, H),
# last state). The input projection of all steps is one matmul, as in RNNBase._scan.


def _lstm_scan(x, state, w_ih, w_hh, b_ih, b_hh, reverse):
    """LSTMScan; both biases go into the input projection (the gates only ever see their sum), which the
    scan adds step by step (no separate pass over the (T, B, 4H) projection)."""
    steps = x.shape[0]
    bias = () if b_ih is None else (b_ih + b_hh,)
    out = LSTMScan.apply(F.linear(x, w_ih), *state, w_hh, *bias, reverse=reverse)  # (T + 1, B, H): h's, last c
    return out[:steps], (out[0 if reverse else steps - 1], out[steps])


def _gru_scan(x, state, w_ih, w_hh, b_ih, b_hh, reverse):
    """GRUScan; b_ih is added by the scan to the input projection, b_hh stays in the recurrent part (the
    reset gate scales it)."""
    if b_hh is None:
        b_hh = creation.zeros(w_hh.shape[0], dtype=w_hh.dtype, device=w_hh.device)
    b_ih = () if b_ih is None else (b_ih,)
    out = GRUScan.apply(F.linear(x, w_ih), state[0], w_hh, b_hh, *b_ih, reverse=reverse)  # (T, B, H)
    return out, (out[0 if reverse else x.shape[0] - 1],)


class _Kind(NamedTuple):
    gates: int  # G: W_ih has G * H rows
    states: int  # 1 (h) or 2 (h, c)
    step: Callable
    scan: Callable | None = None  # a fused whole-sequence op for the full layers (else: `step` in a loop)


_KINDS = {
    "RNN_TANH": _Kind(1, 1, _rnn_tanh_step),
    "RNN_RELU": _Kind(1, 1, _rnn_relu_step),
    "LSTM": _Kind(4, 2, _lstm_step, _lstm_scan),
    "GRU": _Kind(3, 1, _gru_step, _gru_scan),
}


def _rnn_mode(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}: expected 'tanh' or 'relu'")
    return "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"


# ---- what cells and layers share: parameters, their init, input and state checks ------------------------

class _Recurrent(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, hidden_size, bias
        self._kind = _KINDS[mode]

    def _add_weights(self, suffix: str, in_size: int, dtype, device) -> list[str]:
        """Create weight_ih{suffix} (G*H, in_size), weight_hh{suffix} (G*H, H) and, with bias,
        bias_ih{suffix}, bias_hh{suffix} (G*H,) (registered as None without); return the four names."""
        rows = self._kind.gates * self.hidden_size
        names = [f"{kind}_{part}{suffix}" for kind in ("weight", "bias") for part in ("ih", "hh")]
        shapes = [(rows, in_size), (rows, self.hidden_size), (rows,), (rows,)]
        for name, shape in zip(names, shapes):
            wanted = name.startswith("weight") or self.bias
            param = Parameter(creation.empty(*shape, dtype=dtype, device=device)) if wanted else None
            self.register_parameter(name, param)
        return names

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), as in PyTorch."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _check_input(self, x, batched_ndim: int) -> bool:
        """Validate x (batched_ndim dims, or one fewer when unbatched); return whether it is batched."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expects a Tensor input, got {type(x).__name__}")
        if x.ndim not in (batched_ndim, batched_ndim - 1) or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: expected input of {batched_ndim - 1} or {batched_ndim} dims whose last dim "
                             f"is input_size={self.input_size}, got shape {x.shape}")
        if x.dtype is not self._param_dtype:
            raise TypeError(f"{name}: input is {x.dtype} but the parameters are {self._param_dtype}")
        return x.ndim == batched_ndim

    @property
    def _param_dtype(self):
        return next(iter(self.parameters())).dtype

    def _initial_state(self, hx, lead: tuple, batch: int, batched: bool, like: Tensor) -> tuple:
        """The state as a tuple of (*lead, B, H) tensors: zeros if hx is None, else hx (h, or (h, c) for
        an LSTM) checked against that shape (without the B dim for unbatched input)."""
        name, states = type(self).__name__, self._kind.states
        full = lead + (batch, self.hidden_size)
        if hx is None:
            return tuple(creation.zeros(*full, dtype=like.dtype, device=like.device) for _ in range(states))
        if states == 2 and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
        hx = tuple(hx) if states == 2 else (hx,)
        expected = full if batched else lead + (self.hidden_size,)
        for h in hx:
            if not isinstance(h, Tensor) or h.shape != expected:
                raise ValueError(f"{name}: expected hidden state of shape {expected}, got "
                                 f"{h.shape if isinstance(h, Tensor) else type(h).__name__}")
            if h.dtype is not like.dtype:
                raise TypeError(f"{name}: hidden state is {h.dtype} but the input is {like.dtype}")
        return hx if batched else tuple(h.unsqueeze(len(lead)) for h in hx)


# ---- cells: one time step --------------------------------------------------------------------------------

class _CellBase(_Recurrent):
    """One step of a recurrence, with parameters weight_ih, weight_hh, bias_ih, bias_hh (PyTorch's names)."""

    def __init__(self, mode, input_size, hidden_size, bias, dtype, device):
        super().__init__(mode, input_size, hidden_size, bias)
        self._names = self._add_weights("", input_size, dtype, device)
        self.reset_parameters()

    def forward(self, input, hx=None):
        batched = self._check_input(input, 2)
        x = input if batched else input.unsqueeze(0)  # (B, I)
        state = self._initial_state(hx, (), x.shape[0], batched, x)
        w_ih, w_hh, b_ih, b_hh = (getattr(self, n) for n in self._names)
        state = self._kind.step(F.linear(x, w_ih, b_ih), state, w_hh, b_hh)
        if not batched:
            state = tuple(s.squeeze(0) for s in state)
        return state if self._kind.states == 2 else state[0]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity=relu"
        return s


class RNNCell(_CellBase):
    """One Elman RNN step: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu).
    input (B, I) or (I,), hx (B, H) or (H,) (zeros if None) -> h' (B, H) or (H,)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 dtype=None, device=None):
        super().__init__(_rnn_mode(nonlinearity), input_size, hidden_size, bias, dtype, device)
        self.nonlinearity = nonlinearity


class LSTMCell(_CellBase):
    """One LSTM step (gates i, f, g, o). input (B, I) or (I,), hx = (h, c) each (B, H) or (H,)
    (zeros if None) -> (h', c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype=None, device=None):
        super().__init__("LSTM", input_size, hidden_size, bias, dtype, device)


class GRUCell(_CellBase):
    """One GRU step (gates r, z, n). input (B, I) or (I,), hx (B, H) or (H,) (zeros if None) -> h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, dtype=None, device=None):
        super().__init__("GRU", input_size, hidden_size, bias, dtype, device)


# ---- full layers: sequences, stacked layers, both directions ------------------------------------------------

class RNNBase(_Recurrent):
    """Stacked, optionally bidirectional recurrence over a sequence (see RNN, LSTM, GRU).

    input (T, B, I), or (B, T, I) with batch_first, or (T, I) unbatched. The initial state hx holds
    (L*D, B, H) tensors ((L*D, H) unbatched; zeros if None): h_0, or (h_0, c_0) for the LSTM.
    Returns (output, h_n) or, for the LSTM, (output, (h_n, c_n)): output (T, B, D*H) (batch_first:
    (B, T, D*H)) holds the last layer's h at every step, both directions concatenated; h_n and c_n
    hold the final state of every layer and direction, (L*D, B, H). Layer l > 0 reads the outputs of
    layer l - 1, through dropout(p=dropout) in training mode."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype=None, device=None):
        super().__init__(mode, input_size, hidden_size, bias)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"{type(self).__name__}: num_layers must be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1] representing the probability of an "
                             f"element being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers=1")
        self.num_layers, self.batch_first = num_layers, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        directions = 2 if bidirectional else 1
        self._all_weights = [  # the four parameter names of each (layer, direction), in h_n's order
            self._add_weights(f"_l{layer}{'_reverse' if direction else ''}",
                              input_size if layer == 0 else directions * hidden_size, dtype, device)
            for layer in range(num_layers) for direction in range(directions)]
        self.reset_parameters()

    @property
    def all_weights(self) -> list[list[Parameter]]:
        """[w_ih, w_hh, b_ih, b_hh] of each layer and direction (without the biases if bias=False)."""
        return [[getattr(self, n) for n in names if getattr(self, n) is not None] for names in self._all_weights]

    def forward(self, input, hx=None):
        batched = self._check_input(input, 3)
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)  # (T, B, I)
        steps, batch = x.shape[:2]
        if steps == 0:
            raise ValueError(f"{type(self).__name__}: the input sequence is empty (shape {input.shape})")
        directions = 2 if self.bidirectional else 1
        initial = self._initial_state(hx, (self.num_layers * directions,), batch, batched, x)
        finals = []  # the last state of each (layer, direction)
        for layer in range(self.num_layers):
            if layer:
                x = F.dropout(x, self.dropout, self.training)
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                state = tuple(s[k] for s in initial)
                output, state = self._scan(x, state, self._all_weights[k], reverse=direction == 1)
                outputs.append(output)
                finals.append(state)
            x = outputs[0] if directions == 1 else cat(outputs, -1)  # (T, B, D*H)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        h_n = tuple(stack([state[i] for state in finals]) for i in range(self._kind.states))  # (L*D, B, H)
        if not batched:
            x, h_n = x.squeeze(1), tuple(h.squeeze(1) for h in h_n)
        return x, (h_n if self._kind.states == 2 else h_n[0])

    def _scan(self, x, state, names, reverse: bool):
        """Run one layer in one direction over x (T, B, in): returns (outputs (T, B, H), last state)."""
        w_ih, w_hh, b_ih, b_hh = (getattr(self, n) for n in names)
        if self._kind.scan is not None:
            return self._kind.scan(x, state, w_ih, w_hh, b_ih, b_hh, reverse)
        gi = F.linear(x, w_ih, b_ih)  # (T, B, G*H): the input projection of every step in one matmul
        steps = x.shape[0]
        outputs = [None] * steps
        for t in (reversed(range(steps)) if reverse else range(steps)):
            state = self._kind.step(gi[t], state, w_hh, b_hh)
            outputs[t] = state[0]
        return stack(outputs), state

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (nonlinearity 'tanh' or 'relu'),
    stacked and optionally bidirectional; shapes and results as in RNNBase."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype=None, device=None):
        super().__init__(_rnn_mode(nonlinearity), input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, device)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory (Hochreiter & Schmidhuber, 1997), gates i, f, g, o as in PyTorch; stacked
    and optionally bidirectional; hx = (h_0, c_0); returns (output, (h_n, c_n)) (see RNNBase)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype=None, device=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, device)


class GRU(RNNBase):
    """Gated recurrent unit (Cho et al., 2014), gates r, z, n as in PyTorch; stacked and optionally
    bidirectional (see RNNBase)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype=None, device=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         dtype, device)
