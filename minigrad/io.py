"""Saving and loading tensors in the safetensors format, and training checkpoints built on it.

safetensors is a flat file: an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range (plus a `__metadata__` dict of strings), then the raw bytes. Loading it
runs no code, unlike pickle, so a checkpoint from anywhere is safe to open; the format is read by
PyTorch, JAX and NumPy alike.

    minigrad.save({"w": w, "b": b}, "weights.safetensors", metadata={"note": "epoch 3"})
    tensors = minigrad.load("weights.safetensors")          # {"w": Tensor, "b": Tensor}
    minigrad.io.load_metadata("weights.safetensors")        # {"note": "epoch 3"}

    minigrad.save_checkpoint("ckpt.safetensors", model, optimizer, step=1000, extra={"loss": 0.12})
    info = minigrad.load_checkpoint("ckpt.safetensors", model, optimizer)   # {"step": 1000, "extra": ...}

Writes are atomic: the file is written beside the target, flushed to disk, then renamed over it, so a
crash or an exception mid-save leaves the previous file as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid

import numpy as np
import safetensors
import safetensors.numpy
from safetensors import safe_open

from minigrad.creation import from_numpy
from minigrad.tensor import Tensor

__all__ = ["save", "load", "load_metadata", "save_checkpoint", "load_checkpoint"]

_MODEL = "model."
_OPTIM_STATE = "optimizer.state."
_OPTIM_GROUPS = "optimizer.param_groups"  # metadata keys; their values are JSON
_OPTIM_SCALARS = "optimizer.scalars"


def save(tensors: dict[str, Tensor], path, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (name -> Tensor of any shape, including 0-d and empty) and optional string
    `metadata` to `path` as safetensors, atomically. Tensors on a GPU are copied to the host."""
    if not isinstance(tensors, dict):
        raise TypeError(f"save expects a dict of name -> Tensor, got {type(tensors).__name__}")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise TypeError(f"save expects str keys and Tensor values; {name!r} maps to {type(value).__name__}")
        # C order: safetensors writes an array's memory as is, so a transposed view would come back scrambled.
        arrays[name] = np.asarray(value.detach().cpu().numpy(), order="C")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("save: metadata must map str to str (encode other values, e.g. with json.dumps)")
    _write_atomically(os.fspath(path), safetensors.numpy.save(arrays, metadata=metadata))


def _write_atomically(path: str, data: bytes) -> None:
    """Write to a temporary file in the target's directory, fsync it, then rename it over `path`
    (os.replace is atomic on POSIX and Windows). On any failure the temporary file is removed."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    # Mode 0o666 less the umask, like open(path, "wb") (tempfile.mkstemp would make it owner-only).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # persist the rename itself (POSIX)
        dir_fd = os.open(directory, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _open(path):
    """safe_open, with a clear error naming the path for a missing, truncated or corrupt file."""
    path = os.fspath(path)
    try:
        with safe_open(path, framework="numpy") as f:
            yield f
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except safetensors.SafetensorError as err:
        raise ValueError(f"{path} is not a valid safetensors file: {err}") from None


def _read(path) -> tuple[dict, dict[str, str]]:
    """The NumPy arrays (by name) and the metadata of a safetensors file. (safetensors reads BF16 as
    ml_dtypes' bfloat16, which NumPy knows once minigrad.dtypes has imported ml_dtypes.)"""
    with _open(path) as f:
        try:
            return {name: f.get_tensor(name) for name in f.keys()}, (f.metadata() or {})
        except TypeError as err:  # "data type 'bfloat16' not understood"
            raise TypeError(f"{os.fspath(path)}: {err}; bfloat16 tensors need the ml_dtypes package: "
                            f"pip install ml_dtypes") from None


def load(path, device="cpu") -> dict[str, Tensor]:
    """The tensors of the safetensors file at `path`, by name, on `device`. Raises FileNotFoundError
    for a missing file and ValueError for a truncated or corrupt one (both naming the path)."""
    return _to_tensors(_read(path)[0], path, device)


def load_metadata(path) -> dict[str, str]:
    """The string metadata stored in the safetensors file at `path` (empty if none)."""
    with _open(path) as f:
        return f.metadata() or {}


def _to_tensors(arrays: dict, path, device) -> dict[str, Tensor]:
    out = {}
    for name, array in arrays.items():
        try:
            out[name] = from_numpy(array).to(device)
        except TypeError as err:  # a dtype minigrad has no type for (int32, uint8, ...)
            raise TypeError(f"{os.fspath(path)}: tensor {name!r}: {err}") from None
    return out


# ---- training checkpoints ------------------------------------------------------------------------


def save_checkpoint(path, model, optimizer=None, step: int | None = None, extra: dict | None = None) -> None:
    """Save `model.state_dict()` (as "model.<key>"), the optimizer's state (tensors as
    "optimizer.state.<index>.<name>", numbers and param_groups as JSON metadata), `step` and the
    JSON-serializable `extra` dict in one safetensors file, atomically."""
    tensors = {_MODEL + key: value for key, value in model.state_dict().items()}
    metadata = {"format": "minigrad.checkpoint", "step": _to_json("step", step), "extra": _to_json("extra", extra)}
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars = {}
        for index, entries in state["state"].items():
            for name, value in entries.items():
                if isinstance(value, Tensor):
                    tensors[f"{_OPTIM_STATE}{index}.{name}"] = value
                else:
                    scalars.setdefault(str(index), {})[name] = value
        metadata[_OPTIM_SCALARS] = _to_json("optimizer state", scalars)
        metadata[_OPTIM_GROUPS] = _to_json("optimizer param_groups", state["param_groups"])
    save(tensors, path, metadata)


def _to_json(what: str, value) -> str:
    try:
        return json.dumps(value)
    except TypeError as err:
        raise TypeError(f"save_checkpoint: {what} must be JSON-serializable: {err}") from None


def load_checkpoint(path, model, optimizer=None) -> dict:
    """Restore `model` (and `optimizer`) from a file written by `save_checkpoint`; returns
    {"step": step, "extra": extra}. Names and shapes are checked by `model.load_state_dict`
    (KeyError / ValueError naming the keys) and dtypes here (TypeError naming the keys), all before the
    model is changed; the optimizer's own load_state_dict checks its state. Loaded tensors go to the
    device of the model's parameters."""
    arrays, metadata = _read(path)
    if metadata.get("format") != "minigrad.checkpoint":
        raise ValueError(f"{os.fspath(path)} is not a minigrad checkpoint (no 'format' metadata); "
                         f"use minigrad.load for plain tensor files")
    device = next((p.device for p in model.parameters()), "cpu")
    tensors = _to_tensors(arrays, path, device)
    model_state = {k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    own = model.state_dict()
    wrong = [f"{key}: checkpoint {value.dtype} vs model {own[key].dtype}"
             for key, value in model_state.items() if key in own and value.dtype is not own[key].dtype]
    if wrong:
        raise TypeError(f"load_checkpoint {os.fspath(path)}: dtype mismatch for " + "; ".join(wrong))
    if optimizer is not None and _OPTIM_GROUPS not in metadata:
        raise KeyError(f"load_checkpoint: {os.fspath(path)} holds no optimizer state")
    info = {"step": _from_json(metadata, "step", path), "extra": _from_json(metadata, "extra", path)}
    optimizer_state = None if optimizer is None else _optimizer_state(tensors, metadata, path)
    model.load_state_dict(model_state)
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state)
    return info


def _from_json(metadata: dict[str, str], key: str, path):
    try:
        return json.loads(metadata[key])
    except (KeyError, ValueError) as err:
        raise ValueError(f"{os.fspath(path)}: checkpoint metadata {key!r} is missing or not JSON ({err})") from None


def _optimizer_state(tensors: dict[str, Tensor], metadata: dict[str, str], path) -> dict:
    """Rebuild torch's optimizer state_dict layout: {'state': {index: {name: value}}, 'param_groups': [...]}."""
    state: dict[int, dict] = {}
    for index, entries in _from_json(metadata, _OPTIM_SCALARS, path).items():
        state.setdefault(int(index), {}).update(entries)
    for key, value in tensors.items():
        if key.startswith(_OPTIM_STATE):
            index, name = key[len(_OPTIM_STATE):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    return {"state": dict(sorted(state.items())), "param_groups": _from_json(metadata, _OPTIM_GROUPS, path)}
