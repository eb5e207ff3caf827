"""BERT's WordPiece tokenizer, on the Hugging Face `tokenizers` library (pip install "minigrad[models]").

    tokenizer = BertTokenizer.from_pretrained("all-MiniLM-L6-v2/")   # tokenizer.json, or vocab.txt
    batch = tokenizer(["Hello world!", "A second, longer text."])      # dict of int64 (B, T) tensors:
    batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    tokenizer.decode(batch["input_ids"][0].tolist())                   # "hello world!"

The pipeline, step by step (what BERT's original tokenizer does too):
  normalize   clean control characters, split CJK characters, lowercase and strip accents (uncased models)
  pre-split   on whitespace and around each punctuation character
  WordPiece   each word greedily as the longest vocabulary prefix, then the longest "##"-continuation,
              and so on ("unaffable" -> "un", "##aff", "##able"); a word it cannot cover becomes [UNK]
  template    [CLS] A [SEP] for one text, [CLS] A [SEP] B [SEP] for a pair (token types 0 for A, 1 for B)
Batches are padded here, to the longest sequence, with [PAD] and attention_mask 0.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np

from minigrad.creation import from_numpy
from minigrad.tensor import Tensor

__all__ = ["BertTokenizer"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_NAME, VOCAB_NAME, TOKENIZER_CONFIG_NAME = "tokenizer.json", "vocab.txt", "tokenizer_config.json"


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError('BertTokenizer needs the `tokenizers` package: pip install "minigrad[models]"') from None
    return tokenizers


def _wordpiece_pipeline(vocab: dict | None, lowercase: bool):
    """An untrained (vocab None) or ready WordPiece `tokenizers.Tokenizer` with BERT's normalizer,
    pre-tokenizer and decoder. The [CLS]/[SEP] template is added by `_add_template` once ids exist."""
    tk = _tokenizers()
    tokenizer = tk.Tokenizer(tk.models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = tk.normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                         strip_accents=None, lowercase=lowercase)
    tokenizer.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = tk.decoders.WordPiece(prefix="##")
    return tokenizer


def _add_template(tokenizer) -> None:
    """Special tokens are never split, and each text gets [CLS] ... [SEP] (a pair: [CLS] A [SEP] B [SEP])."""
    tk = _tokenizers()
    tokenizer.add_special_tokens([t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is not None])
    cls, sep = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]"))
    if cls is None or sep is None:
        raise ValueError("BertTokenizer: the vocabulary has no [CLS] or [SEP] token")
    tokenizer.post_processor = tk.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])


class BertTokenizer:
    """Text <-> token ids for BERT models. Wraps a `tokenizers.Tokenizer` (kept as `.backend`);
    sequences longer than `model_max_length` tokens are truncated."""

    def __init__(self, tokenizer, model_max_length: int = 512, lowercase: bool = True):
        self.backend, self.model_max_length, self.lowercase = tokenizer, model_max_length, lowercase
        self.backend.no_padding()  # padding is done in __call__; a tokenizer.json may ask for its own
        for name in SPECIAL_TOKENS:
            if tokenizer.token_to_id(name) is None and name != "[MASK]":
                raise ValueError(f"BertTokenizer: the vocabulary has no {name} token")

    # ---- construction, loading and saving ---------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path) -> BertTokenizer:
        """From a Hugging Face model directory: tokenizer.json if present, else vocab.txt (with
        tokenizer_config.json's do_lower_case, default True)."""
        path = os.fspath(path)
        config = {}
        if os.path.isfile(os.path.join(path, TOKENIZER_CONFIG_NAME)):
            with open(os.path.join(path, TOKENIZER_CONFIG_NAME), encoding="utf-8") as f:
                config = json.load(f)
        max_length = min(config.get("model_max_length", 512), 512)  # some configs say 1e30 for "unbounded"
        lowercase = config.get("do_lower_case", True)
        if os.path.isfile(os.path.join(path, TOKENIZER_NAME)):
            tokenizer = _tokenizers().Tokenizer.from_file(os.path.join(path, TOKENIZER_NAME))
        elif os.path.isfile(os.path.join(path, VOCAB_NAME)):
            vocab = _tokenizers().models.WordPiece.read_file(os.path.join(path, VOCAB_NAME))
            tokenizer = _wordpiece_pipeline(vocab, lowercase)
            _add_template(tokenizer)
        else:
            raise FileNotFoundError(f"{path}: neither {TOKENIZER_NAME} nor {VOCAB_NAME} found")
        return cls(tokenizer, max_length, lowercase)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = True,
              min_frequency: int = 2, model_max_length: int = 512) -> BertTokenizer:
        """Learn a WordPiece vocabulary of at most `vocab_size` entries (the 5 special tokens first:
        [PAD]=0, [UNK], [CLS], [SEP], [MASK]) from an iterable of strings."""
        tokenizer = _wordpiece_pipeline(None, lowercase)
        trainer = _tokenizers().trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                                          special_tokens=SPECIAL_TOKENS, show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        _add_template(tokenizer)
        return cls(tokenizer, model_max_length, lowercase)

    def save_pretrained(self, path) -> None:
        """Write tokenizer.json, vocab.txt (one token per line, line number = id) and
        tokenizer_config.json to directory `path`, the files transformers' BertTokenizerFast reads."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.backend.save(os.path.join(path, TOKENIZER_NAME))
        vocab = sorted(self.backend.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1])
        with open(os.path.join(path, VOCAB_NAME), "w", encoding="utf-8") as f:
            f.writelines(token + "\n" for token, _ in vocab)
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.lowercase,
                  "model_max_length": self.model_max_length,
                  **{f"{t[1:-1].lower()}_token": t for t in SPECIAL_TOKENS}}  # "pad_token": "[PAD]", ...
        with open(os.path.join(path, TOKENIZER_CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")

    # ---- vocabulary --------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def pad_token_id(self) -> int:
        return self.token_to_id("[PAD]")

    @property
    def mask_token_id(self) -> int | None:
        return self.token_to_id("[MASK]")

    @property
    def special_ids(self) -> list[int]:
        """Ids of the special tokens in the vocabulary ([PAD], [UNK], [CLS], [SEP], [MASK])."""
        return [i for i in map(self.token_to_id, SPECIAL_TOKENS) if i is not None]

    # ---- encoding and decoding ---------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of `text`, without [CLS]/[SEP]."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str, text_pair: str | None = None, max_length: int | None = None) -> list[int]:
        """Token ids of [CLS] text [SEP] (text_pair [SEP]), truncated to max_length (default model_max_length)."""
        self._truncate_to(max_length)
        return self.backend.encode(text, text_pair).ids

    def encode_stream(self, text: str) -> list[int]:
        """Token ids of all of `text`, without [CLS]/[SEP] and untruncated: a corpus as one stream of
        tokens, to cut into training windows."""
        self.backend.no_truncation()
        return self.backend.encode(text, add_special_tokens=False).ids

    def __call__(self, texts, text_pairs=None, max_length: int | None = None, device="cpu") -> dict[str, Tensor]:
        """Encode a string or a list of B strings (and optional second segments) as a padded batch:
        {"input_ids", "token_type_ids", "attention_mask"}, each int64 (B, T), T the longest encoding
        (at most max_length, default model_max_length). attention_mask is 1 on tokens and 0 on padding."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if text_pairs is not None:
            text_pairs = [text_pairs] if isinstance(text_pairs, str) else list(text_pairs)
            if len(text_pairs) != len(texts):
                raise ValueError(f"BertTokenizer: {len(texts)} texts but {len(text_pairs)} text_pairs")
        if not all(isinstance(t, str) for t in texts + (text_pairs or [])):
            raise TypeError("BertTokenizer: texts and text_pairs must be strings")
        self._truncate_to(max_length)
        inputs = texts if text_pairs is None else list(zip(texts, text_pairs))
        encodings = self.backend.encode_batch(inputs)
        T = max((len(e.ids) for e in encodings), default=0)
        batch = {name: np.zeros((len(encodings), T), dtype=np.int64)
                 for name in ("input_ids", "token_type_ids", "attention_mask")}
        batch["input_ids"][:] = self.pad_token_id
        for row, e in enumerate(encodings):  # left-aligned; the rest stays padding
            n = len(e.ids)
            batch["input_ids"][row, :n], batch["token_type_ids"][row, :n] = e.ids, e.type_ids
            batch["attention_mask"][row, :n] = 1
        return {name: from_numpy(array).to(device) for name, array in batch.items()}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text from token ids (a list or a 1-D tensor): "##" continuations are joined to their word."""
        ids = ids.tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def _truncate_to(self, max_length: int | None) -> None:
        max_length = self.model_max_length if max_length is None else max_length
        if max_length < 3:
            raise ValueError(f"BertTokenizer: max_length must be at least 3 ([CLS] x [SEP]), got {max_length}")
        self.backend.enable_truncation(max_length)
