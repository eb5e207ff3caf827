"""float16 and bfloat16: the dtypes, their promotion (against torch's), conversions, the primitives'
16-bit contract (float32 compute, one rounding; base.PRIMITIVES) on every CPU backend, and every op of
the gradient-check table run forward and backward in 16 bits.

Gradient checks stay float64 (tests/test_gradcheck.py); here 16-bit results are compared with float32
computations on the same (rounded) inputs, to within a few roundings.
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import dtypes
from minigrad.backend import numpy_ref

HALVES = [mg.float16, mg.bfloat16]
EPS = {mg.float16: 2.0 ** -10, mg.bfloat16: 2.0 ** -7}  # the spacing of values in [1, 2)
BACKENDS = mg.backend.available("cpu")


def as_torch_dtype(dtype):
    return getattr(torch, dtype.name)


def rounded(values, dtype) -> np.ndarray:
    """values rounded to dtype, returned as float32 (the exact values a 16-bit tensor holds)."""
    return np.asarray(values, dtype=np.float32).astype(dtype.np_dtype).astype(np.float32)


# ---- the dtypes and their promotion ------------------------------------------------------------------

PROMOTION_PAIRS = [(a, b) for a in dtypes.ALL_DTYPES for b in dtypes.ALL_DTYPES]


@pytest.mark.parametrize("a, b", PROMOTION_PAIRS, ids=str)
def test_promotion_matches_torch(a, b):
    expected = torch.promote_types(as_torch_dtype_name(a), as_torch_dtype_name(b))
    assert dtypes.promote_types(a, b).name == str(expected).removeprefix("torch.")
    x, y = mg.zeros(2, dtype=a), mg.zeros(2, dtype=b)
    assert (x + y).dtype is dtypes.promote_types(a, b)


def as_torch_dtype_name(dtype):
    return torch.bool if dtype is mg.bool_ else as_torch_dtype(dtype)


@pytest.mark.parametrize("dtype", dtypes.ALL_DTYPES, ids=str)
@pytest.mark.parametrize("scalar", [True, 3, 0.5], ids=type)
def test_python_scalars_promote_as_in_torch(dtype, scalar):
    expected = (torch.zeros(2, dtype=as_torch_dtype_name(dtype)) * scalar).dtype
    assert (mg.zeros(2, dtype=dtype) * scalar).dtype.name == str(expected).removeprefix("torch.")


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_conversions_and_properties(dtype):
    values = [0.1, -2.5, 65504.0, 1e-3]
    x = mg.tensor(values, dtype=dtype)
    assert x.dtype is dtype and x.is_floating_point() and dtype.is_floating_point and x.element_size() == 2
    np.testing.assert_array_equal(x.float().numpy(), rounded(values, dtype))
    method = {mg.float16: mg.Tensor.half, mg.bfloat16: mg.Tensor.bfloat16}[dtype]
    assert method(mg.tensor(values)).dtype is dtype
    assert mg.tensor(values).to(dtype).dtype is dtype and mg.zeros(3, dtype=dtype.name).dtype is dtype
    assert mg.tensor(np.asarray(values, dtype=dtype.np_dtype)).dtype is dtype  # NumPy arrays keep it
    assert f"dtype=minigrad.{dtype.name}" in repr(x)
    assert not mg.tensor([1, 2]).is_floating_point()


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_casts_carry_gradients_back_in_the_source_dtype(dtype):
    w = mg.tensor([0.5, -1.25, 3.0], requires_grad=True)
    (w.to(dtype) * mg.tensor([2.0, 4.0, 8.0], dtype=dtype)).sum().backward()
    assert w.grad.dtype is mg.float32
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 4.0, 8.0])


def test_minigrad_imports_without_ml_dtypes_and_names_it_when_bfloat16_is_used():
    code = ("import sys; sys.modules['ml_dtypes'] = None\n"  # `import ml_dtypes` now raises ImportError
            "import minigrad as mg\n"
            "assert mg.float16.np_dtype.itemsize == 2 and mg.bfloat16.is_floating_point\n"
            "for use in (lambda: mg.zeros(2, dtype=mg.bfloat16), lambda: mg.ones(2).bfloat16(),\n"
            "            lambda: mg.tensor([1.0], dtype='bfloat16')):\n"
            "    try:\n"
            "        use()\n"
            "    except TypeError as e:\n"
            "        assert 'pip install ml_dtypes' in str(e), e\n"
            "    else:\n"
            "        raise AssertionError('bfloat16 worked without ml_dtypes')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---- reductions accumulate in float32 ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape, dim", [((10_000,), None), ((3, 4000), 1), ((4000, 3), 0), ((50, 40, 30), (0, 2))])
def test_sum_and_mean_accumulate_in_float32_as_torch(dtype, backend, shape, dim):
    values = np.random.default_rng(0).uniform(0.5, 1.5, shape).astype(np.float32)
    x, t = mg.tensor(values).to(dtype), torch.tensor(values).to(as_torch_dtype(dtype))
    with mg.backend.use(backend):
        total, mean = x.sum(dim), x.mean(dim)
    t_dim = () if dim is None else dim
    for ours, theirs in ((total, t.sum(t_dim)), (mean, t.mean(t_dim))):
        assert ours.dtype is dtype
        exact = theirs.double().numpy()  # torch accumulates in float32 and rounds once too
        np.testing.assert_allclose(ours.double().numpy(), exact, rtol=EPS[dtype], atol=0)


# ---- the matmul and attention primitives: float32 compute, one rounding -------------------------------

def one_rounding_tolerance(exact: np.ndarray, dtype, terms: int, scale: np.ndarray) -> np.ndarray:
    """Half a 16-bit ulp of the exact result (the one rounding), plus float32 accumulation error."""
    ulp = np.exp2(np.floor(np.log2(np.maximum(np.abs(exact), 1e-30)))) * EPS[dtype]
    return ulp / 2 + terms * 2.0 ** -24 * scale


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape_a, shape_b", [((5, 64), (64, 7)), ((2, 3, 33, 16), (16, 9)),
                                              ((4, 8, 40), (4, 40, 6))])
def test_matmul_of_16_bit_operands_is_rounded_once(dtype, backend, shape_a, shape_b):
    rng = np.random.default_rng(1)
    a32, b32 = (rounded(rng.standard_normal(s), dtype) for s in (shape_a, shape_b))
    with mg.backend.use(backend):
        out = mg.tensor(a32).to(dtype) @ mg.tensor(b32).to(dtype)
    assert out.dtype is dtype
    exact = a32.astype(np.float64) @ b32.astype(np.float64)
    scale = np.abs(a32).astype(np.float64) @ np.abs(b32).astype(np.float64)
    error = np.abs(out.double().numpy() - exact)
    assert np.all(error <= one_rounding_tolerance(exact, dtype, shape_a[-1], scale))


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("is_causal", [False, True])
def test_attention_in_16_bits_matches_float32_with_float32_lse(dtype, backend, is_causal):
    rng = np.random.default_rng(2)
    q, k, v, dout = (rounded(rng.standard_normal((2, 3, 6, 8)), dtype) for _ in range(4))
    with mg.backend.use(backend):
        bk = mg.backend.dispatch("cpu")
        half = [a.astype(dtype.np_dtype) for a in (q, k, v, dout)]
        out, lse = bk.attention_forward(*half[:3], None, is_causal, 0.35)
        grads = bk.attention_backward(half[3], *half[:3], out, lse, None, is_causal, 0.35)
    out32, lse32 = numpy_ref.attention_forward(q, k, v, None, is_causal, 0.35)
    grads32 = numpy_ref.attention_backward(dout, q, k, v, out32, lse32, None, is_causal, 0.35)
    assert out.dtype == dtype.np_dtype and lse.dtype == np.float32
    np.testing.assert_allclose(lse, lse32, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out, out32.astype(dtype.np_dtype))  # one rounding of the float32 result
    for g, g32 in zip(grads, grads32):
        assert g.dtype == dtype.np_dtype
        # backward reads the rounded out, so it is float32's up to a few roundings of the inputs
        np.testing.assert_allclose(g.astype(np.float32), g32, rtol=4 * EPS[dtype], atol=4 * EPS[dtype])


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_layer_norm_keeps_its_statistics_in_float32(dtype):
    x = rounded(np.random.default_rng(3).standard_normal((4, 16)) * 3 + 1, dtype)
    out, mean, rstd = numpy_ref.layer_norm_forward(x.astype(dtype.np_dtype), None, None, 1e-5)
    out32, mean32, rstd32 = numpy_ref.layer_norm_forward(x, None, None, 1e-5)
    assert out.dtype == dtype.np_dtype and mean.dtype == rstd.dtype == np.float32
    np.testing.assert_array_equal(out, out32.astype(dtype.np_dtype))
    np.testing.assert_array_equal(mean, mean32)


# ---- every op of the gradient-check table, in 16 bits -------------------------------------------------

# Cases whose function fixes a dtype itself, so that their output is not in the inputs' dtype by design:
# a float32 constant or a cast to float64 in the function, or a layer built in float64 inside it.
FIXED_DTYPE_CASES = {
    "mixed_dtype_promotion", "cast_to_float64_is_identity", "multihead_attention_forward",
    "transformer_encoder_layer_forward", "transformer_decoder_layer_forward", "Conv2d_layer", "Conv1d_layer",
    "BatchNorm_layers", "layer_norm_module", "embedding", "rnn_tanh_forward", "rnn_relu_forward", "lstm_forward",
    "gru_forward", "rnn_cell", "lstm_cell", "gru_cell", "loss_layers_class", "loss_layers_elementwise",
}


def _gradcheck_cases():
    from test_gradcheck import CASES  # tests/ is on sys.path under pytest
    assert FIXED_DTYPE_CASES <= {c.name for c in CASES}
    return [c for c in CASES if c.name not in FIXED_DTYPE_CASES]


def _in_dtype(args, dtype):
    """The float64 leaves of a gradcheck case as leaves of `dtype` (rounded), other arguments as they are."""
    return tuple(mg.tensor(a.detach().numpy(), dtype=dtype, requires_grad=a.requires_grad)
                 if isinstance(a, mg.Tensor) and a.dtype is mg.float64 else a for a in args)


def _outputs(result):
    return [t for t in (result if isinstance(result, (tuple, list)) else (result,))
            if isinstance(t, mg.Tensor) and t.is_floating_point()]


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("case", _gradcheck_cases(), ids=lambda c: c.name)
@settings(max_examples=3, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_every_op_runs_in_16_bits_without_upcasting(dtype, case, data):
    """Forward and backward of each op keep the 16-bit dtype (outputs and gradients), and agree with the
    op on float32 copies of the same rounded inputs to within a few 16-bit roundings of the values."""
    args = data.draw(case.strategy(), label="args")
    half_args, float_args = _in_dtype(args, dtype), None
    float_args = tuple(mg.tensor(a.detach().float().numpy(), requires_grad=a.requires_grad)
                       if isinstance(a, mg.Tensor) and a.dtype is dtype else a for a in half_args)
    half_out, float_out = _outputs(case.fn(*half_args)), _outputs(case.fn(*float_args))
    for h, f in zip(half_out, float_out, strict=True):
        assert h.dtype is dtype, f"{case.name}: output of dtype {h.dtype}"
        scale = np.max(np.abs(f.detach().numpy()), initial=1.0)
        np.testing.assert_allclose(h.detach().float().numpy(), f.detach().numpy(), rtol=8 * EPS[dtype],
                                   atol=8 * EPS[dtype] * scale, err_msg=case.name)
    differentiable = [(h, f) for h, f in zip(half_out, float_out) if h.requires_grad]
    if not differentiable:
        return
    for h, f in differentiable:
        cotangent = np.random.default_rng(4).uniform(0.5, 1.0, h.shape).astype(np.float32)
        h.backward(mg.tensor(cotangent).to(dtype), retain_graph=True)
        f.backward(mg.tensor(rounded(cotangent, dtype)), retain_graph=True)
    for h, f in zip(half_args, float_args):
        if isinstance(h, mg.Tensor) and h.requires_grad and h.grad is not None:
            assert h.grad.dtype is dtype, f"{case.name}: gradient of dtype {h.grad.dtype}"
            scale = np.max(np.abs(f.grad.numpy()), initial=1.0)
            np.testing.assert_allclose(h.grad.float().numpy(), f.grad.numpy(), rtol=16 * EPS[dtype],
                                       atol=16 * EPS[dtype] * scale, err_msg=case.name)
