"""Errors at the API boundary: bad input raises ValueError / TypeError / RuntimeError (IndexError for
indices and dims, as in PyTorch) with a message that names the offending shapes, dtypes or dims."""
from __future__ import annotations

import re

import numpy as np
import pytest

import minigrad as mg
import minigrad.backend as backend
from minigrad.backend import numpy_ref


def shape_re(*shapes) -> str:
    """A regex matching every shape, in order, e.g. '(2, 3)' ... '(4, 5)'."""
    return ".*".join(re.escape(str(tuple(s))) for s in shapes)


# ---- shapes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b, mg.maximum,
    lambda a, b: a < b, lambda a, b: mg.where(mg.ones(2, 3, dtype=mg.bool), a, b),
])
def test_incompatible_broadcast_names_both_shapes(op):
    a, b = mg.ones(2, 3), mg.ones(4, 3)
    with pytest.raises(ValueError, match=shape_re((2, 3), (4, 3))):
        op(a, b)


def test_matmul_inner_dim_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=shape_re((2, 3), (4, 5))):
        mg.ones(2, 3) @ mg.ones(4, 5)
    with pytest.raises(ValueError, match=shape_re((7, 2, 3), (2,))):
        mg.matmul(mg.ones(7, 2, 3), mg.ones(2))


def test_matmul_batch_dims_that_do_not_broadcast():
    with pytest.raises(ValueError, match=shape_re((2,), (3,))):
        mg.ones(2, 4, 5) @ mg.ones(3, 5, 6)


def test_matmul_of_0d_names_the_shape():
    with pytest.raises(ValueError, match=re.escape("()")):
        mg.tensor(2.0) @ mg.ones(2)
    with pytest.raises(ValueError, match="at least 1 dim"):
        mg.ones(2) @ mg.tensor(2.0)


@pytest.mark.parametrize("call", [
    lambda x: x.sum(dim=3), lambda x: x.sum(dim=-4), lambda x: x.softmax(dim=5), lambda x: x.size(3),
    lambda x: x.transpose(0, 3), lambda x: x.max(dim=3), lambda x: x.argmax(dim=3),
    lambda x: mg.cat([x, x], dim=3), lambda x: x.flatten(0, 7), lambda x: x.mean(dim=(0, 9)),
])
def test_bad_dim_names_dim_and_ndim(call):
    x = mg.ones(2, 3, 4)
    with pytest.raises(IndexError, match=r"dim -?\d+ .*3 dims"):
        call(x)
    with pytest.raises(ValueError):  # also catchable as ValueError
        call(x)


def test_bad_dim_message_names_the_given_dim():
    with pytest.raises(IndexError, match=r"dim 7 .* 2 dims"):
        mg.ones(2, 3).sum(dim=7)


def test_unsqueeze_bad_dim_names_the_allowed_range():
    # unsqueeze of a 3-d tensor accepts dims in [-4, 3]
    with pytest.raises(IndexError, match=r"dim 5 .*\[-4, 3\]"):
        mg.ones(2, 3, 4).unsqueeze(5)


def test_reshape_to_wrong_numel():
    with pytest.raises(ValueError, match=shape_re((4, 4)) + ".*" + shape_re((2, 3)) + r".*6 elements"):
        mg.ones(2, 3).reshape(4, 4)
    with pytest.raises(ValueError, match=re.escape("(-1, 4)")):
        mg.ones(2, 3).reshape(-1, 4)
    with pytest.raises(ValueError, match="only one dimension can be -1"):
        mg.ones(2, 3).reshape(-1, -1)


def test_permute_with_a_non_permutation():
    with pytest.raises(ValueError, match=re.escape("(0, 0, 1)") + ".*" + shape_re((2, 3, 4))):
        mg.ones(2, 3, 4).permute(0, 0, 1)
    with pytest.raises(ValueError, match=re.escape("(1, 0)") + ".*3 dims"):
        mg.ones(2, 3, 4).permute(1, 0)


def test_cat_with_mismatched_shapes():
    with pytest.raises(ValueError, match=shape_re((2, 3), (2, 4))):
        mg.cat([mg.ones(2, 3), mg.ones(2, 4)], dim=0)
    with pytest.raises(ValueError, match=shape_re((2, 3), (3,))):
        mg.cat([mg.ones(2, 3), mg.ones(3)], dim=0)
    with pytest.raises(ValueError, match=shape_re((2, 3), (3, 2))):
        mg.stack([mg.ones(2, 3), mg.ones(3, 2)])


def test_expand_to_incompatible_shape():
    with pytest.raises(ValueError, match=shape_re((2, 3)) + ".*" + re.escape("(4, 3)")):
        mg.ones(2, 3).expand(4, 3)


def test_split_sizes_that_do_not_add_up():
    with pytest.raises(ValueError, match=r"\[1, 1\].*5.*" + shape_re((5, 2))):
        mg.ones(5, 2).split([1, 1])


# ---- dtypes --------------------------------------------------------------------------------------------

def test_gather_with_float_index_names_the_dtype():
    with pytest.raises(TypeError, match="int64.*float32"):
        mg.ones(2, 3).gather(1, mg.zeros(2, 1))


def test_gather_with_index_of_the_wrong_shape():
    with pytest.raises(ValueError, match=shape_re((3, 1), (2, 3))):
        mg.ones(2, 3).gather(1, mg.zeros(3, 1, dtype=mg.int64))


def test_masked_fill_with_non_bool_mask_names_the_dtype():
    with pytest.raises(TypeError, match="bool.*float32"):
        mg.ones(2, 3).masked_fill(mg.ones(2, 3), 0.0)
    with pytest.raises(TypeError, match="bool.*int64"):
        mg.ones(2, 3).masked_fill(mg.ones(2, 3, dtype=mg.int64), 0.0)


def test_masked_fill_with_mask_that_does_not_broadcast():
    with pytest.raises(ValueError, match=shape_re((2, 3), (3, 2))):
        mg.ones(2, 3).masked_fill(mg.ones(3, 2, dtype=mg.bool), 0.0)


def test_where_with_non_bool_condition_names_the_dtype():
    with pytest.raises(TypeError, match="bool.*float32"):
        mg.where(mg.ones(2), mg.ones(2), mg.zeros(2))
    with pytest.raises(TypeError, match="bool.*int64"):
        mg.where(mg.tensor([1, 0]), mg.ones(2), mg.zeros(2))


@pytest.mark.parametrize("fn", [mg.mean, mg.var, mg.std, lambda x: x.softmax(0), lambda x: x.log_softmax(0),
                                lambda x: x.logsumexp(0)])
def test_float_only_reductions_of_int_tensors_name_the_dtype(fn):
    with pytest.raises(TypeError, match="int64"):
        fn(mg.tensor([1, 2, 3]))


def test_requires_grad_on_int_tensor_names_the_dtype():
    with pytest.raises(RuntimeError, match="int64"):
        mg.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="int64"):
        mg.zeros(2, dtype=mg.int64, requires_grad=True)
    with pytest.raises(RuntimeError, match="bool"):
        mg.tensor([True]).requires_grad_()


@pytest.mark.parametrize("np_dtype", [np.int32, np.int16, np.uint8, np.complex64])
def test_from_numpy_unsupported_dtype_names_it(np_dtype):
    with pytest.raises(TypeError, match=np.dtype(np_dtype).name):
        mg.from_numpy(np.zeros(3, dtype=np_dtype))


@pytest.mark.parametrize("data", [np.zeros(2, np.complex64), [1 + 2j], np.array(["a"])])
def test_tensor_from_unsupported_data_names_the_dtype(data):
    with pytest.raises(TypeError, match=re.escape(str(np.asarray(data).dtype))):
        mg.tensor(data)


def test_unsupported_dtype_argument():
    with pytest.raises(TypeError, match="int32.*float32"):
        mg.zeros(2, dtype=np.int32)
    with pytest.raises(TypeError, match="complex"):
        mg.tensor([1.0], dtype="complex64")


def test_from_numpy_of_a_non_array():
    with pytest.raises(TypeError, match="list"):
        mg.from_numpy([1.0, 2.0])


def test_inplace_result_dtype_that_cannot_be_stored():
    with pytest.raises(TypeError, match="float32.*int64"):
        mg.tensor([1, 2]).mul_(0.5)


# ---- backward ------------------------------------------------------------------------------------------

def test_non_scalar_backward_without_gradient_names_the_shape():
    y = mg.ones(2, 3, requires_grad=True) * 2.0
    with pytest.raises(RuntimeError, match=r"scalar.*" + shape_re((2, 3))):
        y.backward()


def test_backward_with_wrongly_shaped_gradient_names_both_shapes():
    y = mg.ones(2, 3, requires_grad=True) * 2.0
    with pytest.raises(ValueError, match=shape_re((3, 2), (2, 3))):
        y.backward(mg.ones(3, 2))


def test_backward_with_gradient_of_the_wrong_dtype_names_both_dtypes():
    y = mg.ones(2, requires_grad=True) * 2.0
    with pytest.raises(TypeError, match="float64.*float32"):
        y.backward(mg.ones(2, dtype=mg.float64))


def test_backward_through_a_tensor_that_does_not_require_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (mg.ones(2) * 2.0).sum().backward()
    x = mg.ones(2, requires_grad=True)
    with mg.no_grad():
        y = (x * 2.0).sum()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


# ---- values and indexing -------------------------------------------------------------------------------

def test_item_on_multi_element_tensor_names_the_shape():
    with pytest.raises(ValueError, match=r"one element.*" + shape_re((2, 3))):
        mg.ones(2, 3).item()


def test_index_with_float_tensor_names_the_dtype():
    with pytest.raises(IndexError, match="int64 or bool.*float32"):
        mg.ones(4)[mg.tensor([0.0, 1.0])]


def test_index_with_unsupported_python_object():
    with pytest.raises(IndexError, match="float"):
        mg.ones(4)[1.5]


def test_bool_mask_of_wrong_shape_names_both_shapes():
    with pytest.raises(IndexError, match=shape_re((3,), (2,), (2, 5))):
        mg.ones(2, 5)[mg.tensor([True, False, True])]
    with pytest.raises(IndexError, match=shape_re((2, 4), (2, 5))):
        mg.ones(2, 5)[mg.ones(2, 4, dtype=mg.bool)]


def test_truth_value_of_multi_element_tensor():
    with pytest.raises(RuntimeError, match="6 elements"):
        bool(mg.ones(2, 3))


def test_bad_creation_arguments():
    with pytest.raises(TypeError, match="ints"):
        mg.zeros(2.5)
    with pytest.raises(ValueError, match="step"):
        mg.arange(0, 3, 0)
    with pytest.raises(ValueError, match=r"high \(2\).*low \(5\)"):
        mg.randint(5, 2, (3,))
    with pytest.raises(ValueError, match="-1"):
        mg.linspace(0, 1, -1)
    with pytest.raises(ValueError, match="'tpu'"):
        mg.zeros(2, device="tpu")


# ---- devices -------------------------------------------------------------------------------------------

@pytest.fixture
def fake_cuda():
    """Register the NumPy reference as the 'cuda' backend, so that tensors on two devices can be built
    on any machine (the arrays stay NumPy arrays; only the device check is exercised)."""
    saved_registry = {k: list(v) for k, v in backend._registry.items()}
    backend.register("fake-cuda", "cuda", numpy_ref, priority=0)
    try:
        yield
    finally:
        backend._registry.clear()
        backend._registry.update(saved_registry)
        backend._tables.clear()


@pytest.mark.parametrize("op", [
    lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a @ b, lambda a, b: mg.cat([a, b]),
    lambda a, b: mg.where(mg.ones(2, 2, dtype=mg.bool), a, b),
])
def test_tensors_on_different_devices_name_both(fake_cuda, op):
    a = mg.ones(2, 2)
    b = mg.ones(2, 2, device="cuda")
    assert b.device == "cuda" and a.device == "cpu"
    with pytest.raises(RuntimeError, match=r"cpu.*cuda|cuda.*cpu"):
        op(a, b)


def _real_cuda_available() -> bool:
    return any(name != "fake-cuda" for name in backend.available("cuda"))


@pytest.mark.skipif(not _real_cuda_available(),
                    reason="needs a CUDA GPU with the minigrad CUDA backend (CuPy); no 'cuda' backend is "
                           "registered on this machine")
def test_tensors_on_real_cpu_and_cuda_devices():
    a = mg.ones(2, 2)
    b = mg.ones(2, 2, device="cuda")
    with pytest.raises(RuntimeError, match=r"cpu.*cuda|cuda.*cpu"):
        a + b
