"""Text for language models: the bundled Tiny Shakespeare corpus, a character-level tokenizer, nanoGPT's
train/val split and random-window batches.

    text = load_tinyshakespeare()                      # 1,115,394 characters
    tok = CharTokenizer.from_text(text)                # 65 symbols
    train, val = train_val_split(tok.encode(text))     # int64 tensors: first 90%, last 10%
    rng = numpy.random.default_rng(0)
    x, y = get_batch(train, block_size=64, batch_size=12, generator=rng)   # (12, 64) each; y is x shifted by 1
"""
from __future__ import annotations

import json
import os
from importlib import resources

import numpy as np

from minigrad import dtypes
from minigrad.creation import from_numpy
from minigrad.data.dataset import make_rng
from minigrad.tensor import Tensor

__all__ = ["load_tinyshakespeare", "CharTokenizer", "train_val_split", "get_batch"]


def load_tinyshakespeare() -> str:
    """Tiny Shakespeare (Karpathy's char-rnn corpus: 40,000 lines of the plays, public domain), bundled
    with the package as minigrad/data/tinyshakespeare.txt."""
    return resources.files("minigrad.data").joinpath("tinyshakespeare.txt").read_text(encoding="utf-8")


class CharTokenizer:
    """One token per character: the vocabulary is the sorted set of characters of a text, and a
    character's id is its position in it (as nanoGPT's shakespeare_char)."""

    def __init__(self, chars):
        chars = list(chars)
        if not chars or len(set(chars)) != len(chars) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("CharTokenizer: expected a non-empty sequence of distinct single characters")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is every character of `text`, sorted."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """text -> (len(text),) int64 token ids. A character outside the vocabulary raises a ValueError."""
        try:
            ids = [self.stoi[c] for c in text]
        except KeyError as err:
            raise ValueError(f"CharTokenizer.encode: character {err.args[0]!r} is not in the vocabulary") from None
        return from_numpy(np.array(ids, dtype=np.int64))

    def decode(self, ids) -> str:
        """Token ids (a 1-D tensor, array or list of ints) -> text."""
        ids = ids.tolist() if isinstance(ids, Tensor) else np.asarray(ids).tolist()
        if not all(isinstance(i, int) and 0 <= i < len(self.chars) for i in ids):
            raise ValueError(f"CharTokenizer.decode: expects 1-D ids in [0, {len(self.chars)})")
        return "".join(self.chars[i] for i in ids)

    def save(self, path) -> None:
        """Write the vocabulary as JSON, {"type": "char", "chars": [...]}, e.g. next to a checkpoint."""
        with open(os.fspath(path), "w", encoding="utf-8") as f:
            json.dump({"type": "char", "chars": self.chars}, f, ensure_ascii=False)

    @classmethod
    def load(cls, path) -> CharTokenizer:
        """The tokenizer saved by `save` at `path`."""
        with open(os.fspath(path), encoding="utf-8") as f:
            saved = json.load(f)
        if not isinstance(saved, dict) or saved.get("type") != "char":
            raise ValueError(f"{os.fspath(path)} is not a CharTokenizer file (no \"type\": \"char\")")
        return cls(saved["chars"])


def train_val_split(data: Tensor, train_fraction: float = 0.9) -> tuple[Tensor, Tensor]:
    """nanoGPT's split of a token sequence (N,): the first int(N * train_fraction) tokens for training,
    the rest for validation (a contiguous tail, so no validation text leaks into training windows)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_val_split: train_fraction must be in (0, 1), got {train_fraction}")
    n = int(data.shape[0] * train_fraction)
    return data[:n], data[n:]


def get_batch(data: Tensor, block_size: int, batch_size: int, generator=None) -> tuple[Tensor, Tensor]:
    """batch_size windows of block_size + 1 consecutive tokens at uniformly random offsets in data (N,)
    int64: x (batch_size, block_size) the inputs, y (batch_size, block_size) the targets, y[b, t] =
    x[b, t + 1] (the next token). `generator`: a numpy.random.Generator (pass the same one every call),
    an int seed, or None for minigrad's global generator."""
    if not isinstance(data, Tensor) or data.ndim != 1 or data.dtype is not dtypes.int64:
        raise TypeError(f"get_batch: data must be a 1-D int64 Tensor, got "
                        f"{f'{data.dtype} {data.shape}' if isinstance(data, Tensor) else type(data).__name__}")
    if data.shape[0] <= block_size:
        raise ValueError(f"get_batch: data has {data.shape[0]} tokens, needs more than block_size={block_size}")
    offsets = make_rng(generator).integers(0, data.shape[0] - block_size, size=batch_size)  # (batch_size,)
    windows = offsets[:, None] + np.arange(block_size + 1)  # (batch_size, block_size + 1) token positions
    tokens = data[from_numpy(windows).to(data.device)]  # (batch_size, block_size + 1)
    return tokens[:, :-1], tokens[:, 1:]
