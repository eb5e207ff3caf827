"""Fused scaled dot-product attention: out = softmax(q k^T * scale + bias) v, one Function.

Composed of ops, attention would keep the (B, H, Tq, Tk) scores and probabilities in the graph for
backward. The fused Function keeps only its inputs, its output and the per-row logsumexp `lse` of the
scores, (B, H, Tq), and its backward recomputes the probabilities from them, as FlashAttention does:

    P  = exp(S - lse)                                  the softmax, recomputed from the scores
    dV = P^T dout,  dP = dout V^T
    dS = P * (dP - rowsum(dout * out))                 softmax backward; rowsum(P * dP) = rowsum(dout * out)
    dQ = dS K * scale,  dK = dS^T Q * scale

The middle line is the FlashAttention identity: the softmax backward needs, for each row, the sum over
keys of P * dP, and since out = P V that sum equals the sum over features of dout * out, a (Tq, Dv)
product instead of a (Tq, Tk) one.

The bias (an additive float mask, -inf where a key is masked) is an attribute, not an input: the
fused Function gives no gradient to it (`minigrad.nn.functional.scaled_dot_product_attention` takes
the composite path when a float mask requires grad).
"""
from __future__ import annotations

from minigrad.autograd import Function


class Attention(Function):
    """q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv) -> (B, H, Tq, Dv). Attributes: `bias`, an array
    broadcastable to (B, H, Tq, Tk) or None; `is_causal` masks key j > query i; `scale` multiplies q k^T.
    A query row whose keys are all masked gives 0 (and gradient 0), as in PyTorch."""

    def forward(self, q, k, v, bias, is_causal, scale):
        out, lse = self.backend.attention_forward(q, k, v, bias, is_causal, scale)
        self.save_for_backward(q, k, v, out, lse)
        self.bias, self.is_causal, self.scale = bias, is_causal, scale
        return out

    def backward(self, grad):
        q, k, v, out, lse = self.saved_arrays
        return self.backend.attention_backward(grad, q, k, v, out, lse, self.bias, self.is_causal, self.scale)
