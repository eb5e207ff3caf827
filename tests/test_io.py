"""minigrad.save / load / load_metadata and save_checkpoint / load_checkpoint: round trips of every
dtype and shape, atomic writes, corrupt files, the checkpoint layout, resuming training identically,
and mismatch errors. Also: no pickle anywhere in the package."""
from __future__ import annotations

import json
import os
import pathlib
import re
import struct

import numpy as np
import pytest
import safetensors.numpy

import minigrad as mg
import minigrad.io
from minigrad import nn, optim

DTYPES = [mg.float16, mg.bfloat16, mg.float32, mg.float64, mg.int64, mg.bool_]
SHAPES = [(), (0,), (2, 0, 3), (5,), (3, 4), (2, 3, 1, 2)]


def random_tensor(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if dtype is mg.bool_:
        values = rng.random(shape) < 0.5
    elif dtype is mg.int64:
        values = rng.integers(-2**62, 2**62, size=shape)
    else:
        values = rng.standard_normal(shape) * 1e3
    return mg.tensor(np.asarray(values).astype(dtype.np_dtype))


def assert_same(a: mg.Tensor, b: mg.Tensor):
    assert a.dtype is b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


# ---- save / load ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_every_dtype_and_shape(tmp_path, dtype, shape):
    tensors = {"x": random_tensor(shape, dtype), "y.nested.name": random_tensor((2,), dtype, seed=1)}
    path = tmp_path / "t.safetensors"
    mg.save(tensors, path)
    loaded = mg.load(path)
    assert loaded.keys() == tensors.keys()
    for name, t in tensors.items():
        assert_same(loaded[name], t)


def test_round_trip_special_values_views_and_parameters(tmp_path):
    base = mg.tensor(np.arange(12, dtype=np.float64).reshape(3, 4))
    special = mg.tensor([np.nan, np.inf, -np.inf, -0.0, np.finfo(np.float32).tiny], dtype=mg.float32)
    param = nn.Parameter(mg.randn(3))  # requires grad: saved detached
    tensors = {"transposed": base.T, "sliced": base[:, 1::2], "special": special, "param": param}
    mg.save(tensors, tmp_path / "t.safetensors")
    loaded = mg.load(str(tmp_path / "t.safetensors"))
    for name, t in tensors.items():
        assert_same(loaded[name], t)
    assert np.signbit(loaded["special"].numpy()[3])
    assert not loaded["param"].requires_grad


def test_loaded_tensors_are_independent_and_writable(tmp_path):
    mg.save({"a": mg.zeros(3)}, tmp_path / "t.safetensors")
    a = mg.load(tmp_path / "t.safetensors")["a"]
    a.add_(1.0)
    np.testing.assert_array_equal(a.numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(mg.load(tmp_path / "t.safetensors")["a"].numpy(), [0.0, 0.0, 0.0])


def test_metadata_round_trip(tmp_path):
    path = tmp_path / "t.safetensors"
    mg.save({"a": mg.ones(2)}, path, metadata={"note": "epoch 3", "unicode": "λ→∞"})
    assert minigrad.io.load_metadata(path) == {"note": "epoch 3", "unicode": "λ→∞"}
    mg.save({"a": mg.ones(2)}, path)
    assert minigrad.io.load_metadata(path) == {}


def test_file_opens_with_safetensors_own_loader(tmp_path):
    tensors = {"w": random_tensor((3, 2), mg.float32), "n": random_tensor((4,), mg.int64),
               "m": random_tensor((2, 2), mg.bool_), "s": random_tensor((), mg.float64)}
    path = tmp_path / "t.safetensors"
    mg.save(tensors, path, metadata={"k": "v"})
    theirs = safetensors.numpy.load_file(str(path))
    assert theirs.keys() == tensors.keys()
    for name, t in tensors.items():
        assert theirs[name].dtype == t.dtype.np_dtype
        np.testing.assert_array_equal(theirs[name], t.numpy())
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8:8 + header_len])
    assert header["__metadata__"] == {"k": "v"}
    assert header["w"]["dtype"] == "F32" and header["w"]["shape"] == [3, 2]


@pytest.mark.parametrize("dtype, code", [(mg.float16, "F16"), (mg.bfloat16, "BF16")], ids=str)
def test_16_bit_floats_are_stored_as_f16_and_bf16_and_read_by_torch(tmp_path, dtype, code):
    torch = pytest.importorskip("torch", reason="torch (the test extra) reads the files minigrad writes")
    import safetensors.torch
    t = random_tensor((3, 4), dtype)
    mine, theirs = tmp_path / "mine.safetensors", tmp_path / "theirs.safetensors"
    mg.save({"x": t}, mine)
    header_len = struct.unpack("<Q", mine.read_bytes()[:8])[0]
    assert json.loads(mine.read_bytes()[8:8 + header_len])["x"]["dtype"] == code
    read = safetensors.torch.load_file(str(mine))["x"]
    assert read.dtype == getattr(torch, dtype.name)
    np.testing.assert_array_equal(read.float().numpy(), t.float().numpy())
    safetensors.torch.save_file({"y": read * 2}, str(theirs))
    assert_same(mg.load(theirs)["y"], t * 2)  # doubling is exact in any binary float


def test_files_written_by_safetensors_load(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], dtype=np.int64)}
    safetensors.numpy.save_file(arrays, str(tmp_path / "t.safetensors"))
    loaded = mg.load(tmp_path / "t.safetensors")
    for name, array in arrays.items():
        assert loaded[name].dtype.np_dtype == array.dtype
        np.testing.assert_array_equal(loaded[name].numpy(), array)


def test_unsupported_dtype_in_file_names_key_and_path(tmp_path):
    path = tmp_path / "int32.safetensors"
    safetensors.numpy.save_file({"h": np.ones(2, dtype=np.int32)}, str(path))
    with pytest.raises(TypeError, match=r"int32\.safetensors.*'h'.*int32"):
        mg.load(path)


@pytest.mark.parametrize("tensors, metadata, match", [
    ([mg.ones(2)], None, "dict"),
    ({1: mg.ones(2)}, None, "str keys"),
    ({"a": np.ones(2)}, None, "ndarray"),
    ({"a": mg.ones(2)}, {"k": 1}, "metadata"),
])
def test_save_rejects_wrong_types(tmp_path, tensors, metadata, match):
    with pytest.raises(TypeError, match=match):
        mg.save(tensors, tmp_path / "t.safetensors", metadata)
    assert list(tmp_path.iterdir()) == []


# ---- atomic writes -------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["fsync", "replace"])
@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch, failing, error):
    path = tmp_path / "model.safetensors"
    old = {"w": random_tensor((4, 3), mg.float32, seed=1)}
    mg.save(old, path)
    before = path.read_bytes()
    seen = []

    def fail(*args, **kwargs):
        # The save is interrupted midway: the new bytes sit in a temporary file beside the target.
        temps = [p for p in tmp_path.iterdir() if p.name != path.name]
        assert len(temps) == 1 and temps[0].stat().st_size > 0
        seen.append(temps[0])
        raise error

    monkeypatch.setattr(minigrad.io.os, failing, fail)
    with pytest.raises(type(error)):
        mg.save({"w": random_tensor((4, 3), mg.float32, seed=2)}, path)
    monkeypatch.undo()
    assert seen, "the failure was not injected"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    assert path.read_bytes() == before
    assert_same(mg.load(path)["w"], old["w"])


def test_save_replaces_existing_file_and_honours_umask(tmp_path):
    path = tmp_path / "t.safetensors"
    mg.save({"a": mg.zeros(2)}, path)
    mg.save({"b": mg.ones(3)}, path)
    assert list(mg.load(path)) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ---- corrupt and missing files -------------------------------------------------------------------


def _valid_bytes(tmp_path) -> bytes:
    mg.save({"a": random_tensor((3, 4), mg.float32), "b": random_tensor((5,), mg.int64)},
            tmp_path / "valid.safetensors", metadata={"k": "v"})
    return (tmp_path / "valid.safetensors").read_bytes()


def _with_header(header, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _lying_header(valid: bytes, tensor: str, field: str, value) -> bytes:
    """The valid file with one field of one tensor's header entry changed."""
    header_len = struct.unpack("<Q", valid[:8])[0]
    header = json.loads(valid[8:8 + header_len])
    header[tensor][field] = value
    return _with_header(header, valid[8 + header_len:])


CORRUPTIONS = {
    **{f"truncated to {n} bytes": lambda v, n=n: v[:n] for n in (1, 7, 8, 9, 40)},
    "truncated inside the data": lambda v: v[:-1],
    "truncated after the header": lambda v: v[:8 + struct.unpack("<Q", v[:8])[0]],
    "empty": lambda v: b"",
    **{f"{n} random bytes": lambda v, n=n: np.random.default_rng(n).bytes(n) for n in (3, 64, 1000)},
    "header length beyond the file": lambda v: struct.pack("<Q", len(v) * 2) + v[8:],
    "header not JSON": lambda v: struct.pack("<Q", 10) + b"{not json!" + v[-68:],
    "header not an object": lambda v: _with_header([1, 2], b""),
    "shape disagrees with byte range": lambda v: _lying_header(v, "a", "shape", [3, 5]),
    "dtype disagrees with byte range": lambda v: _lying_header(v, "b", "dtype", "F32"),
    "byte range past the end": lambda v: _lying_header(v, "b", "data_offsets", [48, 96]),
    "unknown dtype": lambda v: _lying_header(v, "a", "dtype", "F33"),
    "trailing garbage": lambda v: v + bytes(16),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("read", [mg.load, minigrad.io.load_metadata], ids=["load", "load_metadata"])
def test_corrupt_file_raises_value_error_naming_the_path(tmp_path, corruption, read):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(CORRUPTIONS[corruption](_valid_bytes(tmp_path)))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.safetensors"))):
        mg.load(tmp_path / "nope.safetensors")
    with pytest.raises((ValueError, OSError)):
        mg.load(tmp_path)


# ---- checkpoints ---------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.fc1 = nn.Linear(5, hidden)
        self.fc2 = nn.Linear(hidden, 3)
        self.register_buffer("seen", mg.zeros((), dtype=mg.int64))

    def forward(self, x):
        with mg.no_grad():
            self.seen.add_(x.shape[0])
        return self.fc2(self.fc1(x).relu())


def make_optimizer(kind, model):
    if kind == "SGD":
        return optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1, amsgrad=True)


def train(model, optimizer, batches):
    for x, y in batches:
        loss = ((model(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def make_batches(n, seed):
    rng = np.random.default_rng(seed)
    return [(mg.tensor(rng.standard_normal((4, 5)), dtype=mg.float32),
             mg.tensor(rng.standard_normal((4, 3)), dtype=mg.float32)) for _ in range(n)]


@pytest.mark.parametrize("kind", ["SGD", "AdamW"])
def test_training_resumes_identically_after_reload(tmp_path, kind):
    batches = make_batches(10, seed=0)
    mg.manual_seed(0)
    model = Net()
    optimizer = make_optimizer(kind, model)
    train(model, optimizer, batches[:4])
    path = tmp_path / "ckpt.safetensors"
    mg.save_checkpoint(path, model, optimizer, step=4, extra={"loss": 0.5, "tags": ["a", "b"]})
    train(model, optimizer, batches[4:])

    mg.manual_seed(1)  # a different initialization, overwritten by the checkpoint
    resumed = Net()
    resumed_optimizer = make_optimizer(kind, resumed)
    info = mg.load_checkpoint(path, resumed, resumed_optimizer)
    assert info == {"step": 4, "extra": {"loss": 0.5, "tags": ["a", "b"]}}
    train(resumed, resumed_optimizer, batches[4:])

    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert_same(a, b)
    assert resumed.seen.item() == 4 * 10


def test_checkpoint_layout(tmp_path):
    mg.manual_seed(0)
    model = Net()
    optimizer = make_optimizer("AdamW", model)
    train(model, optimizer, make_batches(2, seed=0))
    path = tmp_path / "ckpt.safetensors"
    mg.save_checkpoint(path, model, optimizer, step=2)
    theirs = safetensors.numpy.load_file(str(path))
    expected = {f"model.{k}" for k in model.state_dict()} | {
        f"optimizer.state.{i}.{name}" for i in range(4) for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}
    assert set(theirs) == expected
    np.testing.assert_array_equal(theirs["model.fc1.weight"], model.fc1.weight.detach().numpy())
    np.testing.assert_array_equal(theirs["model.seen"], model.seen.numpy())
    np.testing.assert_array_equal(theirs["optimizer.state.3.exp_avg_sq"],
                                  optimizer.state[model.fc2.bias]["exp_avg_sq"].numpy())
    metadata = minigrad.io.load_metadata(path)
    assert json.loads(metadata["step"]) == 2 and json.loads(metadata["extra"]) is None
    groups = optimizer.state_dict()["param_groups"]
    assert json.loads(metadata["optimizer.param_groups"]) == json.loads(json.dumps(groups))  # tuples -> lists
    assert json.loads(metadata["optimizer.scalars"]) == {str(i): {"step": 2} for i in range(4)}


def test_checkpoint_without_optimizer(tmp_path):
    mg.manual_seed(0)
    model, other = Net(), Net()
    mg.save_checkpoint(tmp_path / "ckpt.safetensors", model)
    assert mg.load_checkpoint(tmp_path / "ckpt.safetensors", other) == {"step": None, "extra": None}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert_same(a, b)
    with pytest.raises(KeyError, match="no optimizer state"):
        mg.load_checkpoint(tmp_path / "ckpt.safetensors", other, make_optimizer("SGD", other))


class Wider(Net):
    def __init__(self):
        super().__init__(hidden=9)


class Renamed(Net):
    def __init__(self):
        super().__init__()
        self.head = self.fc2
        del self.fc2


@pytest.mark.parametrize("make, error, match", [
    (Wider, ValueError, r"fc1\.weight: checkpoint \(8, 5\) vs model \(9, 5\)"),
    (Renamed, KeyError, r"missing keys \['head\.weight', 'head\.bias'\].*unexpected keys \['fc2\.\w+', 'fc2\.\w+'\]"),
    (lambda: Net().double(), TypeError, r"fc1\.weight: checkpoint minigrad\.float32 vs model minigrad\.float64"),
])
def test_checkpoint_mismatch_errors_name_the_keys_and_change_nothing(tmp_path, make, error, match):
    mg.manual_seed(0)
    mg.save_checkpoint(tmp_path / "ckpt.safetensors", Net())
    target = make()
    before = {k: v.numpy().copy() for k, v in target.state_dict().items()}
    with pytest.raises(error, match=match):
        mg.load_checkpoint(tmp_path / "ckpt.safetensors", target)
    for key, value in target.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), before[key])


def test_checkpoint_into_a_different_optimizer_layout_is_refused_by_the_optimizer(tmp_path):
    mg.manual_seed(0)
    model = Net()
    mg.save_checkpoint(tmp_path / "ckpt.safetensors", model, make_optimizer("SGD", model))
    fc1_only = optim.SGD(model.fc1.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="group 0 has 4 parameters, the optimizer's has 2"):
        mg.load_checkpoint(tmp_path / "ckpt.safetensors", model, fc1_only)


def test_plain_tensor_file_is_not_a_checkpoint(tmp_path):
    mg.save({"fc1.weight": mg.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not a minigrad checkpoint"):
        mg.load_checkpoint(tmp_path / "plain.safetensors", Net())


def test_checkpoint_with_broken_metadata(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    mg.save({}, path, metadata={"format": "minigrad.checkpoint", "step": "{oops", "extra": "null"})
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*'step'"):
        mg.load_checkpoint(path, Net())


def test_non_json_extra_is_rejected_before_writing(tmp_path):
    with pytest.raises(TypeError, match="extra must be JSON-serializable"):
        mg.save_checkpoint(tmp_path / "ckpt.safetensors", Net(), extra={"t": mg.ones(1)})
    assert list(tmp_path.iterdir()) == []


# ---- no pickle -----------------------------------------------------------------------------------


def test_no_pickle_anywhere_in_the_package():
    package = pathlib.Path(mg.__file__).parent
    importing = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b", re.M)
    offenders = []
    sources = sorted(package.rglob("*.py"))
    assert len(sources) > 10
    for source in sources:
        text = source.read_text(encoding="utf-8")
        if importing.search(text) or "allow_pickle=True" in text or "torch.load(" in text:
            offenders.append(str(source.relative_to(package)))
    assert offenders == []
