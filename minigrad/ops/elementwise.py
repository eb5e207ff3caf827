"""Elementwise ops: arithmetic with broadcasting, unary math, activations, comparisons.

Binary ops first bring their operands to a common dtype (PyTorch promotion; Python scalars adopt the
tensor's dtype) and check the shapes broadcast; each backward then sums its gradient back to the
input's shape with the one `unbroadcast`.
"""
from __future__ import annotations

from minigrad import dtypes
from minigrad.amp.autocast_mode import autocast_inputs
from minigrad.autograd import Function
from minigrad.ops.shapes import broadcast_shapes, unbroadcast
from minigrad.backend import dispatch
from minigrad.tensor import Tensor, as_tensor_like


def binary_operands(a, b, op: str, floating: bool = False) -> tuple[Tensor, Tensor]:
    """Tensors of one dtype and device for a binary op; scalars take the other operand's dtype (int
    scalars with a float tensor stay float, float scalars with an int tensor give float32).
    `floating=True` (true division) promotes integer results to float32."""
    if type(a) is Tensor and type(b) is Tensor and a.data.dtype == b.data.dtype and a.device is b.device \
            and not (floating and a.data.dtype.kind != "f"):
        if a.data.shape != b.data.shape:  # the common case first: same dtype and device
            broadcast_shapes(a.shape, b.shape)
        return a, b
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op} needs at least one Tensor, got {type(a).__name__} and {type(b).__name__}")
    a = as_tensor_like(a, b)
    b = as_tensor_like(b, a)
    if a.device != b.device:  # a 0-d CPU tensor counts as a scalar, as in PyTorch: it joins the other's device
        if a.ndim == 0 and a.device == "cpu":
            a = a.to(b.device)
        elif b.ndim == 0 and b.device == "cpu":
            b = b.to(a.device)
        else:
            raise RuntimeError(f"{op}: expected both tensors on the same device, got {a.device} and {b.device}")
    broadcast_shapes(a.shape, b.shape)  # raises a ValueError naming both shapes
    dtype = dtypes.promote_types(a.dtype, b.dtype)
    if floating and not dtype.is_floating_point:
        dtype = dtypes.float32
    return a.to(dtype), b.to(dtype)


# ---- arithmetic ----------------------------------------------------------------------------------

class Add(Function):
    def forward(self, a, b):
        self.shapes = (tuple(a.shape), tuple(b.shape))
        return self.backend.add(a, b)

    def backward(self, grad):
        return tuple(unbroadcast(self.backend, grad, s) for s in self.shapes)


class Sub(Function):
    def forward(self, a, b):
        self.shapes = (tuple(a.shape), tuple(b.shape))
        return self.backend.sub(a, b)

    def backward(self, grad):
        ga = unbroadcast(self.backend, grad, self.shapes[0])
        gb = unbroadcast(self.backend, self.backend.neg(grad), self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


class Mul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self.backend.mul(a, b)

    def backward(self, grad):
        a, b = self.saved_arrays
        bk = self.backend
        ga = unbroadcast(bk, bk.mul(grad, b), tuple(a.shape)) if self.needs_input_grad[0] else None
        gb = unbroadcast(bk, bk.mul(grad, a), tuple(b.shape)) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self.backend.div(a, b)

    def backward(self, grad):
        a, b = self.saved_arrays
        bk = self.backend
        grad_over_b = bk.div(grad, b)
        ga = unbroadcast(bk, grad_over_b, tuple(a.shape)) if self.needs_input_grad[0] else None
        # d(a/b)/db = -a / b^2
        gb = unbroadcast(bk, bk.neg(bk.mul(grad_over_b, bk.div(a, b))), tuple(b.shape)) \
            if self.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    def forward(self, a, b):
        out = self.backend.pow(a, b)
        self.save_for_backward(a, b, out)
        return out

    def backward(self, grad):
        a, b, out = self.saved_arrays
        bk = self.backend
        ga = gb = None
        zero = bk.zeros((), grad.dtype)
        if self.needs_input_grad[0]:  # b * a^(b-1); 0 where b == 0 (not 0 * 0^-1 = nan at a == 0), as in PyTorch
            da = bk.where(bk.eq(b, 0), zero, bk.mul(b, bk.pow(a, bk.sub(b, 1))))
            ga = unbroadcast(bk, bk.mul(grad, da), tuple(a.shape))
        if self.needs_input_grad[1]:  # a^b * log(a); 0 where a == 0 and b >= 0 (not 0 * -inf = nan), as in PyTorch
            db = bk.where(bk.logical_and(bk.eq(a, 0), bk.ge(b, 0)), zero, bk.mul(out, bk.log(a)))
            gb = unbroadcast(bk, bk.mul(grad, db), tuple(b.shape))
        return ga, gb


class Maximum(Function):
    """max(a, b) elementwise; at ties the gradient is split equally, as in PyTorch."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self.backend.maximum(a, b)

    def backward(self, grad):
        a, b = self.saved_arrays
        return _select_backward(self.backend, grad, a, b, self.backend.gt(a, b), self.needs_input_grad)


class Minimum(Function):
    """min(a, b) elementwise; at ties the gradient is split equally, as in PyTorch."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return self.backend.minimum(a, b)

    def backward(self, grad):
        a, b = self.saved_arrays
        return _select_backward(self.backend, grad, a, b, self.backend.lt(a, b), self.needs_input_grad)


def _select_backward(bk, grad, a, b, a_wins, needs):
    """Gradient of an elementwise selection: all to the winner, half each where a == b."""
    weight_a = bk.astype(bk.where(a_wins, 1.0, bk.where(bk.eq(a, b), 0.5, 0.0)), grad.dtype)
    ga = unbroadcast(bk, bk.mul(grad, weight_a), tuple(a.shape)) if needs[0] else None
    gb = unbroadcast(bk, bk.mul(grad, bk.sub(1, weight_a)), tuple(b.shape)) if needs[1] else None
    return ga, gb


class Where(Function):
    """where(cond, a, b); `cond` is a bool array attribute (not differentiable)."""

    def forward(self, a, b, cond):
        self.cond = cond
        self.shapes = (tuple(a.shape), tuple(b.shape))
        return self.backend.where(cond, a, b)

    def backward(self, grad):
        bk = self.backend
        zero = bk.zeros((), grad.dtype)
        ga = unbroadcast(bk, bk.where(self.cond, grad, zero), self.shapes[0]) if self.needs_input_grad[0] else None
        gb = unbroadcast(bk, bk.where(self.cond, zero, grad), self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


# ---- unary math ----------------------------------------------------------------------------------

class Neg(Function):
    def forward(self, x):
        return self.backend.neg(x)

    def backward(self, grad):
        return self.backend.neg(grad)


class Sign(Function):
    """-1, 0 or 1. Differentiable for the graph's sake, as in PyTorch: its derivative is 0 everywhere
    it exists, so a loss through sign() backpropagates zeros rather than failing."""

    def forward(self, x):
        return self.backend.sign(x)

    def backward(self, grad):
        return self.backend.zeros(grad.shape, grad.dtype)


class Abs(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return self.backend.abs(x)

    def backward(self, grad):
        (x,) = self.saved_arrays
        return self.backend.mul(grad, self.backend.sign(x))


class Exp(Function):
    def forward(self, x):
        out = self.backend.exp(x)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_arrays
        return self.backend.mul(grad, out)


class Log(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return self.backend.log(x)

    def backward(self, grad):
        (x,) = self.saved_arrays
        return self.backend.div(grad, x)


class Sqrt(Function):
    def forward(self, x):
        out = self.backend.sqrt(x)
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_arrays
        return self.backend.div(grad, self.backend.mul(out, 2))


class Rsqrt(Function):
    def forward(self, x):
        out = self.backend.rsqrt(x)
        self.save_for_backward(x, out)
        return out

    def backward(self, grad):  # d x^(-1/2) = -1/2 x^(-3/2) = -out / (2x)
        x, out = self.saved_arrays
        bk = self.backend
        return bk.neg(bk.mul(grad, bk.div(out, bk.mul(x, 2))))


class Sin(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return self.backend.sin(x)

    def backward(self, grad):
        (x,) = self.saved_arrays
        return self.backend.mul(grad, self.backend.cos(x))


class Cos(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return self.backend.cos(x)

    def backward(self, grad):
        (x,) = self.saved_arrays
        return self.backend.neg(self.backend.mul(grad, self.backend.sin(x)))


class Tanh(Function):
    def forward(self, x):
        out = self.backend.tanh(x)
        self.save_for_backward(out)
        return out

    def backward(self, grad):  # 1 - tanh^2
        (out,) = self.saved_arrays
        bk = self.backend
        return bk.mul(grad, bk.sub(1, bk.mul(out, out)))


class Sigmoid(Function):
    def forward(self, x):
        out = self.backend.sigmoid(x)
        self.save_for_backward(out)
        return out

    def backward(self, grad):  # s (1 - s)
        (out,) = self.saved_arrays
        bk = self.backend
        return bk.mul(grad, bk.mul(out, bk.sub(1, out)))


class Relu(Function):
    def forward(self, x):
        out = self.backend.relu(x)
        self.save_for_backward(out)
        return out

    def backward(self, grad):  # the subgradient 0 at x == 0; a nan passes the gradient, as in PyTorch
        (out,) = self.saved_arrays
        return self.backend.relu_backward(grad, out)


class Gelu(Function):
    def forward(self, x, approximate):
        self.approximate = approximate
        self.save_for_backward(x)
        return self.backend.gelu_forward(x, approximate)

    def backward(self, grad):
        (x,) = self.saved_arrays
        return self.backend.gelu_backward(grad, x, self.approximate)


class Silu(Function):
    def forward(self, x):
        s = self.backend.sigmoid(x)
        self.save_for_backward(x, s)
        return self.backend.mul(x, s)

    def backward(self, grad):  # d x s(x) = s (1 + x (1 - s))
        x, s = self.saved_arrays
        bk = self.backend
        return bk.mul(grad, bk.mul(s, bk.add(1, bk.mul(x, bk.sub(1, s)))))


class Clamp(Function):
    """clamp(x, min, max) with scalar bounds; the gradient passes where min <= x <= max."""

    def forward(self, x, lo, hi):
        self.save_for_backward(x)
        self.lo, self.hi = lo, hi
        return self.backend.clip(x, lo, hi)

    def backward(self, grad):
        (x,) = self.saved_arrays
        bk = self.backend
        if self.lo is None:
            inside = bk.le(x, self.hi)
        elif self.hi is None:
            inside = bk.ge(x, self.lo)
        else:
            inside = bk.logical_and(bk.ge(x, self.lo), bk.le(x, self.hi))
        return bk.where(inside, grad, bk.zeros((), grad.dtype))


class Cast(Function):
    """Convert to another dtype; the gradient is converted back."""

    def forward(self, x, dtype):
        self.in_dtype = x.dtype
        return self.backend.astype(x, dtype)

    def backward(self, grad):
        return self.backend.astype(grad, self.in_dtype)


# ---- public functions ----------------------------------------------------------------------------

def add(a, b) -> Tensor:
    """a + b with broadcasting."""
    return Add.apply(*binary_operands(a, b, "add"))


def sub(a, b) -> Tensor:
    """a - b with broadcasting."""
    return Sub.apply(*binary_operands(a, b, "sub"))


def mul(a, b) -> Tensor:
    """a * b with broadcasting."""
    return Mul.apply(*binary_operands(a, b, "mul"))


def div(a, b) -> Tensor:
    """a / b (true division: integer inputs give float32) with broadcasting."""
    return Div.apply(*binary_operands(a, b, "div", floating=True))


def pow(a, b) -> Tensor:
    """a ** b with broadcasting; either side may be a Python number."""
    return Pow.apply(*binary_operands(*autocast_inputs("pow", a, b), "pow"))


def maximum(a, b) -> Tensor:
    """Elementwise max of a and b (gradient split equally at ties)."""
    return Maximum.apply(*binary_operands(a, b, "maximum"))


def minimum(a, b) -> Tensor:
    """Elementwise min of a and b (gradient split equally at ties)."""
    return Minimum.apply(*binary_operands(a, b, "minimum"))


def where(condition, a, b) -> Tensor:
    """Elementwise `a if condition else b`; condition is a bool tensor, all three broadcast together."""
    if not isinstance(condition, Tensor) or condition.dtype is not dtypes.bool_:
        raise TypeError(f"where: condition must be a bool tensor, got "
                        f"{condition.dtype if isinstance(condition, Tensor) else type(condition).__name__}")
    a, b = binary_operands(a, b, "where")
    if condition.device != a.device:
        raise RuntimeError(f"where: condition on {condition.device}, values on {a.device}")
    broadcast_shapes(condition.shape, a.shape, b.shape)
    return Where.apply(a, b, cond=condition.data)


def _floating(x: Tensor, op: str) -> Tensor:
    """Math functions of integer tensors compute in float32, as in PyTorch; under autocast, those on
    its float32 list (exp, log, rsqrt) also compute 16-bit tensors in float32."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op} expects a Tensor, got {type(x).__name__}")
    (x,) = autocast_inputs(op, x)
    return x if x.dtype.is_floating_point else x.to(dtypes.float32)


def neg(x) -> Tensor:
    return Neg.apply(x)


def abs(x) -> Tensor:
    return Abs.apply(x)


def exp(x) -> Tensor:
    return Exp.apply(_floating(x, "exp"))


def log(x) -> Tensor:
    return Log.apply(_floating(x, "log"))


def sqrt(x) -> Tensor:
    return Sqrt.apply(_floating(x, "sqrt"))


def rsqrt(x) -> Tensor:
    """1 / sqrt(x)."""
    return Rsqrt.apply(_floating(x, "rsqrt"))


def sin(x) -> Tensor:
    return Sin.apply(_floating(x, "sin"))


def cos(x) -> Tensor:
    return Cos.apply(_floating(x, "cos"))


def tanh(x) -> Tensor:
    return Tanh.apply(_floating(x, "tanh"))


def sigmoid(x) -> Tensor:
    """1 / (1 + exp(-x)), stable for large |x|."""
    return Sigmoid.apply(_floating(x, "sigmoid"))


def relu(x) -> Tensor:
    """max(x, 0)."""
    return Relu.apply(x)


def gelu(x, approximate: str = "none") -> Tensor:
    """x * Phi(x) with the exact normal CDF (approximate='none') or the tanh approximation ('tanh')."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(_floating(x, "gelu"), approximate=approximate)


def silu(x) -> Tensor:
    """x * sigmoid(x) (a.k.a. swish)."""
    return Silu.apply(_floating(x, "silu"))


def clamp(x, min=None, max=None) -> Tensor:
    """Limit x to [min, max]; either bound may be None, a number, or a tensor (then elementwise)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        # where() rather than maximum/minimum: at x == bound the gradient goes to x, as in PyTorch (maximum
        # would split it); `b != b` keeps the nan of a nan bound, as maximum/minimum do.
        out = x if min is None else where((x < min) | (min != min), min, x)
        return out if max is None else where((out > max) | (max != max), max, out)
    return Clamp.apply(x, lo=min, hi=max)


clip = clamp


def _compare(primitive: str, a, b) -> Tensor:
    a, b = binary_operands(a, b, primitive)
    return Tensor._wrap(getattr(dispatch(a.device), primitive)(a.data, b.data), a.device)


def eq(a, b) -> Tensor:
    return _compare("eq", a, b)


def ne(a, b) -> Tensor:
    return _compare("ne", a, b)


def lt(a, b) -> Tensor:
    return _compare("lt", a, b)


def le(a, b) -> Tensor:
    return _compare("le", a, b)


def gt(a, b) -> Tensor:
    return _compare("gt", a, b)


def ge(a, b) -> Tensor:
    return _compare("ge", a, b)


def logical_and(a, b) -> Tensor:
    return _compare("logical_and", a, b)


def logical_or(a, b) -> Tensor:
    return _compare("logical_or", a, b)


def _elementwise_nondiff(primitive: str, x: Tensor) -> Tensor:
    return Tensor._wrap(getattr(dispatch(x.device), primitive)(x.data), x.device)


def logical_not(x) -> Tensor:
    return _elementwise_nondiff("logical_not", x)


def sign(x) -> Tensor:
    """-1, 0 or 1 (its gradient is 0)."""
    return Sign.apply(x)


def isfinite(x) -> Tensor:
    return _elementwise_nondiff("isfinite", x)


def any(x) -> Tensor:
    """A 0-d bool tensor: is any element true (non-zero)?"""
    return Tensor(dispatch(x.device).any(x.data), device=x.device)


def all(x) -> Tensor:
    """A 0-d bool tensor: are all elements true (non-zero)?"""
    return Tensor(dispatch(x.device).all(x.data), device=x.device)
