"""Fused recurrent ops: the gate math of one LSTM / GRU step, and a whole LSTM / GRU layer over a sequence.

Written with elementwise ops, one step is about ten graph nodes, each with its own arrays and backward.
The cells (LSTMCellFn, GRUCellFn: what nn.LSTMCell / nn.GRUCell run) are one node per step; their
inputs are the step's two gate projections, gates_x = x W_ih^T + b_ih and gates_h = h W_hh^T + b_hh
(matmuls of their own), and the state.

The scans (LSTMScan, GRUScan: what nn.LSTM / nn.GRU run, one per layer and direction) are one node per
sequence and one primitive call each way (`lstm_scan_forward` / `_backward`, `gru_scan_*`): the time
loop itself runs inside the backend (in C++ on the CPU: per step the recurrent GEMM h W_hh^T and the fused
cell math, no Python in between). Backward also returns the recurrent weight gradient, one product
over all steps, dW_hh = dgates^T h (T*B rows), and the bias gradients (sums of the gate gradients).
The input projection x W_ih^T of all steps stays outside, one matmul (and its gradient one more); its
bias is added inside the scan, at no extra pass, instead of in a broadcast add over (T, B, G*H).

A Function has one output, so results are stacked: the LSTM cell returns (2, B, H) = [h', c'], the LSTM
scan (T + 1, B, H) = [h_1 .. h_T, c_T], the GRU scan (T, B, H) (its final state is its last h).
"""
from __future__ import annotations

from minigrad.autograd import Function


class LSTMCellFn(Function):
    """gates_x, gates_h (B, 4H) (gate order i, f, g, o), c (B, H) -> (2, B, H): [h', c'] with
    c' = sigmoid(f) c + sigmoid(i) tanh(g) and h' = sigmoid(o) tanh(c')."""

    def forward(self, gates_x, gates_h, c):
        hc, cache = self.backend.lstm_cell_forward(gates_x, gates_h, c)
        self.save_for_backward(cache, c)
        return hc

    def backward(self, grad):
        cache, c = self.saved_arrays
        bk = self.backend
        dgates, dc = bk.lstm_cell_backward(bk.getitem(grad, 0), bk.getitem(grad, 1), cache, c)
        return dgates, dgates, dc  # gates = gates_x + gates_h: both get the same gradient


class GRUCellFn(Function):
    """gates_x, gates_h (B, 3H) (gate order r, z, n), h (B, H) -> h' (B, H) with r, z = sigmoid(gates_x
    + gates_h), n = tanh(gates_x_n + r * gates_h_n), h' = (1 - z) n + z h."""

    def forward(self, gates_x, gates_h, h):
        h_new, cache = self.backend.gru_cell_forward(gates_x, gates_h, h)
        self.save_for_backward(cache, h)
        return h_new

    def backward(self, grad):
        cache, h = self.saved_arrays
        return self.backend.gru_cell_backward(grad, cache, h)  # (dgates_x, dgates_h, dh)


class LSTMScan(Function):
    """An LSTM layer in one direction: gates_x (T, B, 4H) (x W_ih^T for every step), h0, c0 (B, H), w_hh
    (4H, H), optionally a bias (4H,) added to gates_x at every step (the layer passes b_ih + b_hh) ->
    (T + 1, B, H): h_t for t < T (step t's output), then the final c. `reverse` runs the steps from T - 1
    down to 0 (the backward direction); the final h is out[T - 1], or out[0]."""

    def forward(self, gates_x, h0, c0, w_hh, *bias, reverse):
        out, cache = self.backend.lstm_scan_forward(gates_x, bias[0] if bias else None, h0, c0, w_hh, reverse)
        self.save_for_backward(cache, out, h0, c0, w_hh)
        self.reverse = reverse
        return out

    def backward(self, grad):
        cache, out, h0, c0, w_hh = self.saved_arrays
        dgates, dh0, dc0, dw_hh, dbias = self.backend.lstm_scan_backward(grad, cache, out, h0, c0, w_hh,
                                                                         self.reverse)
        return (dgates, dh0, dc0, dw_hh) + ((dbias,) if len(self.needs_input_grad) == 5 else ())


class GRUScan(Function):
    """A GRU layer in one direction: gates_x (T, B, 3H) (x W_ih^T for every step), h0 (B, H), w_hh
    (3H, H), b_hh (3H,), optionally b_ih (3H,) added to gates_x at every step -> (T, B, H): h_t for each
    step t (`reverse`: as in LSTMScan)."""

    def forward(self, gates_x, h0, w_hh, b_hh, *b_ih, reverse):
        out, cache = self.backend.gru_scan_forward(gates_x, b_ih[0] if b_ih else None, h0, w_hh, b_hh, reverse)
        self.save_for_backward(cache, out, h0, w_hh)
        self.reverse = reverse
        return out

    def backward(self, grad):
        cache, out, h0, w_hh = self.saved_arrays
        dgates_x, dh0, dw_hh, db_hh, db_ih = self.backend.gru_scan_backward(grad, cache, out, h0, w_hh,
                                                                            self.reverse)
        return (dgates_x, dh0, dw_hh, db_hh) + ((db_ih,) if len(self.needs_input_grad) == 5 else ())
