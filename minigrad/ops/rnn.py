"""Fused recurrent ops: the gate math of one LSTM / GRU step, and a whole LSTM / GRU layer over a sequence.

Written with elementwise ops, one step is about ten graph nodes, each with its own arrays and backward.
The cells (LSTMCellFn, GRUCellFn: what nn.LSTMCell / nn.GRUCell run) are one node per step; their
inputs are the step's two gate projections, gates_x = x W_ih^T + b_ih and gates_h = h W_hh^T + b_hh
(matmuls of their own), and the state.

The scans (LSTMScan, GRUScan: what nn.LSTM / nn.GRU run, one per layer and direction) are one node per
sequence: forward loops over the time steps calling the `matmul` primitive (h W_hh^T) and the cell
primitive, backward loops back calling the cell's backward primitive and `matmul` (dh = dgates W_hh).
So a step costs two kernel calls each way instead of a dozen autograd nodes, and the recurrent weight
gradient is one matmul over all steps, dW_hh = dgates^T h (T*B rows), instead of T small ones summed.
The input projection x W_ih^T of all steps stays outside, one matmul (and its gradient one more).

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
    """An LSTM layer in one direction: gates_x (T, B, 4H) (x W_ih^T + b_ih + b_hh for every step), h0, c0
    (B, H), w_hh (4H, H) -> (T + 1, B, H): h_t for t < T (step t's output), then the final c. `reverse`
    runs the steps from T - 1 down to 0 (the backward direction); the final h is out[T - 1], or out[0]."""

    def forward(self, gates_x, h0, c0, w_hh, reverse):
        bk = self.backend
        steps = gates_x.shape[0]
        w_t = bk.contiguous(bk.transpose(w_hh, (1, 0)))  # copied once: h @ w_t runs 1.4x faster than on a view
        out = bk.empty((steps + 1,) + h0.shape, h0.dtype)
        hcs, caches = [], []  # per step, in the order run: [h', c'] (2, B, H) and the cell's cache
        h, c = h0, c0
        for t in _order(steps, reverse):
            hc, cache = bk.lstm_cell_forward(bk.getitem(gates_x, t), bk.matmul(h, w_t), c)
            h, c = bk.getitem(hc, 0), bk.getitem(hc, 1)
            bk.setitem_(out, t, h)
            hcs.append(hc)
            caches.append(cache)
        bk.setitem_(out, steps, c)
        self.save_for_backward(w_hh, h0, c0, *hcs, *caches)
        self.reverse = reverse
        return out

    def backward(self, grad):
        bk = self.backend
        w_hh, h0, c0, *saved = self.saved_arrays
        steps = len(saved) // 2
        hcs, caches, order = saved[:steps], saved[steps:], _order(steps, self.reverse)
        dgates = bk.empty((steps,) + caches[0].shape[:1] + w_hh.shape[:1], w_hh.dtype)  # (T, B, 4H)
        dh, dc = bk.zeros(h0.shape, h0.dtype), bk.getitem(grad, steps)
        for k in reversed(range(steps)):  # the k-th step run is step t = order[k]
            c_in = c0 if k == 0 else bk.getitem(hcs[k - 1], 1)
            dg, dc = bk.lstm_cell_backward(bk.add(bk.getitem(grad, order[k]), dh), dc, caches[k], c_in)
            bk.setitem_(dgates, order[k], dg)
            dh = bk.matmul(dg, w_hh)  # the gradient reaching the h that entered the step
        h_in = _entering(bk, h0, [bk.getitem(hc, 0) for hc in hcs], order)
        return dgates, dh, dc, _weight_grad(bk, dgates, h_in)


class GRUScan(Function):
    """A GRU layer in one direction: gates_x (T, B, 3H) (x W_ih^T + b_ih for every step), h0 (B, H), w_hh
    (3H, H), b_hh (3H,) -> (T, B, H): h_t for each step t (`reverse`: as in LSTMScan)."""

    def forward(self, gates_x, h0, w_hh, b_hh, reverse):
        bk = self.backend
        steps = gates_x.shape[0]
        w_t = bk.contiguous(bk.transpose(w_hh, (1, 0)))
        out = bk.empty((steps,) + h0.shape, h0.dtype)
        hs, caches = [], []
        h = h0
        for t in _order(steps, reverse):
            h, cache = bk.gru_cell_forward(bk.getitem(gates_x, t), bk.add(bk.matmul(h, w_t), b_hh), h)
            bk.setitem_(out, t, h)
            hs.append(h)
            caches.append(cache)
        self.save_for_backward(w_hh, h0, *hs, *caches)
        self.reverse = reverse
        return out

    def backward(self, grad):
        bk = self.backend
        w_hh, h0, *saved = self.saved_arrays
        steps = len(saved) // 2
        hs, caches, order = saved[:steps], saved[steps:], _order(steps, self.reverse)
        shape = (steps,) + caches[0].shape[:1] + w_hh.shape[:1]  # (T, B, 3H)
        dgates_x, dgates_h = bk.empty(shape, w_hh.dtype), bk.empty(shape, w_hh.dtype)
        dh = bk.zeros(h0.shape, h0.dtype)
        for k in reversed(range(steps)):
            h_in = h0 if k == 0 else hs[k - 1]
            dgx, dgh, dh_direct = bk.gru_cell_backward(bk.add(bk.getitem(grad, order[k]), dh), caches[k], h_in)
            bk.setitem_(dgates_x, order[k], dgx)
            bk.setitem_(dgates_h, order[k], dgh)
            dh = bk.add(dh_direct, bk.matmul(dgh, w_hh))  # h enters h' directly and through gates_h
        dw_hh = _weight_grad(bk, dgates_h, _entering(bk, h0, hs, order))
        db_hh = bk.sum(bk.reshape(dgates_h, (-1, shape[2])), 0, False)
        return dgates_x, dh, dw_hh, db_hh


def _order(steps: int, reverse: bool) -> list[int]:
    """The time steps in the order a scan runs them."""
    return list(range(steps - 1, -1, -1) if reverse else range(steps))


def _entering(bk, h0, hs, order):
    """(T, B, H): at row t, the h that entered step t (h0 for the first step run, else the previous h')."""
    entering = [None] * len(order)
    for k, t in enumerate(order):
        entering[t] = h0 if k == 0 else hs[k - 1]
    return bk.concatenate([bk.reshape(h, (1,) + h.shape) for h in entering], 0)


def _weight_grad(bk, dgates, h_in):
    """dW_hh (G*H, H) = sum over steps and rows of dgates^T h: one matmul over the T * B rows."""
    rows = dgates.shape[0] * dgates.shape[1]
    return bk.matmul(bk.transpose(bk.reshape(dgates, (rows, -1)), (1, 0)), bk.reshape(h_in, (rows, -1)))
