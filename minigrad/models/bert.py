"""BERT (Devlin et al., 2018): a bidirectional Transformer encoder, its masked-LM and sequence
classification heads, and loading/saving in the Hugging Face directory layout.

    from minigrad.models import BertModel, BertTokenizer
    model = BertModel.from_pretrained("all-MiniLM-L6-v2/")     # config.json + model.safetensors
    tokenizer = BertTokenizer.from_pretrained("all-MiniLM-L6-v2/")
    batch = tokenizer(["a sentence", "a longer second sentence"])  # input_ids, token_type_ids, attention_mask: (B, T)
    hidden, pooled = model(**batch)                             # (B, T, H), (B, H)

The network (post-LN: the LayerNorm comes after each residual sum, as in the paper):

    x = dropout(LayerNorm(word_emb[ids] + pos_emb[0..T-1] + type_emb[token_type_ids]))      (B, T, H)
    each layer:  x = LayerNorm(x + dropout(W_o SelfAttention(x, padding mask)))
                 x = LayerNorm(x + dropout(W_2 act(W_1 x)))
    pooled = tanh(W_p x[:, 0])                     the [CLS] token's state, for classification   (B, H)

Checkpoints. Modules and parameters carry the names of Hugging Face's modeling_bert.py, so a
checkpoint's tensor names are this model's state_dict keys, up to three rules (`hf_to_minigrad`):
  1. the prefix "bert.": a head model (BertForMaskedLM, BertForSequenceClassification) holds the
     encoder as `bert`, a bare BertModel checkpoint has no prefix; it is added or stripped to fit;
  2. TensorFlow-era names "LayerNorm.gamma" / "LayerNorm.beta" read as "LayerNorm.weight" / ".bias";
  3. dropped: the buffers embeddings.position_ids / token_type_ids that some checkpoints carry, and
     the masked-LM decoder cls.predictions.decoder.*, which is tied: its weight is the word embedding
     table and its bias cls.predictions.bias.
save_pretrained writes exactly state_dict() (prefix included), which is what transformers writes.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, fields
from functools import partial
from typing import NamedTuple

from minigrad import creation, io
from minigrad.autograd import no_grad
from minigrad.nn import functional as F
from minigrad.nn import init
from minigrad.nn.containers import ModuleDict, ModuleList
from minigrad.nn.layers import Dropout, Embedding, LayerNorm, Linear
from minigrad.nn.module import Module
from minigrad.nn.parameter import Parameter
from minigrad.tensor import Tensor

__all__ = ["BertConfig", "BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertModelOutput",
           "hf_to_minigrad"]

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"

# config.json's hidden_act -> the function. HF's "gelu" is the exact (erf) GELU; "gelu_new" and
# "gelu_pytorch_tanh" are two implementations of the tanh approximation.
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": F.tanh,
}


@dataclass
class BertConfig:
    """The hyperparameters of config.json (defaults: bert-base-uncased). Entries this class does not
    use are kept in `extra` and written back by save_pretrained. The classification labels are
    `id2label` ({0: "LABEL_0", 1: "LABEL_1"} unless given; config.json's `num_labels` also works)."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    initializer_range: float = 0.02
    classifier_dropout: float | None = None
    id2label: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"BertConfig: hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if self.extra.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"BertConfig: only absolute position embeddings are implemented, got "
                             f"position_embedding_type={self.extra['position_embedding_type']!r}")
        if self.extra.get("is_decoder") or self.extra.get("add_cross_attention"):
            raise ValueError("BertConfig: BERT as a decoder (is_decoder / add_cross_attention) is not implemented")
        self.id2label = {int(i): label for i, label in (self.id2label or {0: "LABEL_0", 1: "LABEL_1"}).items()}
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ValueError(f"BertConfig: id2label must number the labels 0..n-1, got {self.id2label}")

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @classmethod
    def from_dict(cls, entries: dict) -> BertConfig:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in entries.items() if k in names}
        if "id2label" not in known and "num_labels" in entries:
            known["id2label"] = {i: f"LABEL_{i}" for i in range(entries["num_labels"])}
        derived = ("label2id", "num_labels", "model_type", "architectures")  # recomputed by to_dict
        extra = {k: v for k, v in entries.items() if k not in names and k not in derived}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        entries = {**self.extra, "model_type": "bert"}
        entries.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"})
        entries["id2label"] = {str(i): label for i, label in self.id2label.items()}  # JSON keys are strings
        entries["label2id"] = {label: i for i, label in self.id2label.items()}
        return entries

    @classmethod
    def from_pretrained(cls, path, **overrides) -> BertConfig:
        """The config.json in directory `path`, with `overrides` (e.g. id2label=..., hidden_dropout_prob=0.0)."""
        with open(_existing(path, CONFIG_NAME), encoding="utf-8") as f:
            return cls.from_dict({**json.load(f), **overrides})

    def save_pretrained(self, path, architecture: str | None = None) -> None:
        os.makedirs(path, exist_ok=True)
        entries = self.to_dict()
        if architecture is not None:
            entries["architectures"] = [architecture]
        with open(os.path.join(path, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(entries, f, indent=2, sort_keys=True)
            f.write("\n")


def _existing(path, name: str) -> str:
    file = os.path.join(os.fspath(path), name)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file} not found: expected a Hugging Face model directory with {CONFIG_NAME} "
                                f"and {WEIGHTS_NAME} (pickled pytorch_model.bin files are not read)")
    return file


# ---- the encoder ---------------------------------------------------------------------------------


class BertEmbeddings(Module):
    """Sum of word, position and token-type (segment A/B) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.word_embeddings = Embedding(config.vocab_size, H, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, H)
        self.token_type_embeddings = Embedding(config.type_vocab_size, H)
        self.LayerNorm = LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """input_ids, token_type_ids (default all 0): int64 (B, T) -> (B, T, H)."""
        T = input_ids.shape[1]
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"BERT: sequence length {T} exceeds max_position_embeddings "
                             f"{self.position_embeddings.num_embeddings}")
        if token_type_ids is None:
            token_type_ids = creation.zeros_like(input_ids)
        positions = creation.arange(T, device=input_ids.device)  # (T,), broadcast over the batch
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(positions))  # (B, T, H)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(Module):
    """Multi-head self-attention: separate query/key/value projections (HF's layout), attention per head."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.num_heads, self.dropout_p = config.num_attention_heads, config.attention_probs_dropout_prob
        self.query, self.key, self.value = Linear(H, H), Linear(H, H), Linear(H, H)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, T, H), mask bool (B, 1, 1, T), True for keys to attend (None: all) -> (B, T, H)."""
        B, T, H = x.shape
        nh = self.num_heads
        q, k, v = (proj(x).reshape(B, T, nh, H // nh).transpose(1, 2)  # (B, nh, T, hs)
                   for proj in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout_p if self.training else 0.0)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, H)  # heads side by side again


class BertAddNorm(Module):
    """LayerNorm(residual + dropout(dense(x))): the output of both sublayers (HF's BertSelfOutput and
    BertOutput, the same computation). x (B, T, in_features), residual (B, T, H) -> (B, T, H)."""

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = Linear(in_features, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class BertAttention(Module):
    """The attention sublayer: `self` (the attention proper) and `output` (projection, residual, norm)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertAddNorm(config, config.hidden_size)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.output(self.self(x, mask), x)  # (B, T, H)


class BertIntermediate(Module):
    """The first half of the feed-forward sublayer: act(x W_1^T + b_1), (B, T, H) -> (B, T, I)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class BertLayer(Module):
    """One encoder block: attention sublayer, then feed-forward sublayer, each post-LN. (B, T, H) -> same."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertAddNorm(config, config.intermediate_size)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(Module):
    """tanh(dense(the first token's state)): (B, T, H) -> (B, H), the sentence summary for classifiers."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense(x[:, 0]).tanh()


def init_bert_weights(module: Module, std: float) -> None:
    """BERT's initialization (apply it with module.apply): linear and embedding weights N(0, std^2),
    biases 0, the padding embedding row 0; LayerNorm keeps its ones/zeros."""
    if isinstance(module, (Linear, Embedding)):
        init.normal_(module.weight, 0.0, std)
    if isinstance(module, Linear) and module.bias is not None:
        init.zeros_(module.bias)
    if isinstance(module, Embedding) and module.padding_idx is not None:
        with no_grad():
            module.weight[module.padding_idx] = 0.0


# ---- loading and saving --------------------------------------------------------------------------

_ENCODER_PARTS = ("embeddings.", "encoder.", "pooler.")
_DROPPED = ("embeddings.position_ids", "embeddings.token_type_ids",  # buffers, recomputed here
            "cls.predictions.decoder.weight", "cls.predictions.decoder.bias")  # tied to other tensors


def hf_to_minigrad(tensors: dict, prefixed: bool) -> dict:
    """A Hugging Face BERT state dict renamed for a minigrad model by the three rules of this module's
    docstring. `prefixed`: whether the target model holds its encoder as `bert` (the head models)."""
    out = {}
    for key, value in tensors.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        base = key.removeprefix("bert.")
        if base.startswith(_ENCODER_PARTS):
            key = "bert." + base if prefixed else base
        if not key.endswith(_DROPPED):
            out[key] = value
    return out


class BertPreTrainedModel(Module):
    """What BertModel and the heads share: the config, initialization, from_pretrained/save_pretrained."""

    def __init__(self, config: BertConfig):
        if not isinstance(config, BertConfig):
            raise TypeError(f"{type(self).__name__} expects a BertConfig, got {type(config).__name__}")
        super().__init__()
        self.config = config

    def init_weights(self) -> None:
        self.apply(partial(init_bert_weights, std=self.config.initializer_range))

    @classmethod
    def from_pretrained(cls, path, device="cpu", **overrides):
        """The model stored in the Hugging Face directory `path` (config.json + model.safetensors),
        in eval mode, on `device`. `overrides` change config entries (e.g. id2label for a new
        classifier). Parameters the checkpoint lacks (a new head) keep their random initialization
        and tensors the model does not use are ignored; both are named in a warning."""
        model = cls(BertConfig.from_pretrained(path, **overrides))
        prefixed = any(key.startswith("bert.") for key in model.state_dict())
        state = hf_to_minigrad(io.load(_existing(path, WEIGHTS_NAME)), prefixed)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            warnings.warn(f"{cls.__name__}.from_pretrained({os.fspath(path)!r}): not in the checkpoint, "
                          f"randomly initialized (train before use): {missing}", stacklevel=2)
        if unexpected:
            warnings.warn(f"{cls.__name__}.from_pretrained({os.fspath(path)!r}): checkpoint tensors not "
                          f"used by {cls.__name__}: {unexpected}", stacklevel=2)
        return model.to(device).eval()

    def save_pretrained(self, path) -> None:
        """Write config.json and model.safetensors to directory `path`, as transformers does."""
        os.makedirs(path, exist_ok=True)
        # transformers refuses a safetensors file whose metadata does not name its format
        io.save(dict(self.state_dict()), os.path.join(path, WEIGHTS_NAME), metadata={"format": "pt"})
        self.config.save_pretrained(path, architecture=type(self).__name__)


class BertModelOutput(NamedTuple):
    last_hidden_state: Tensor  # (B, T, H)
    pooler_output: Tensor | None  # (B, H), None without a pooler


class BertModel(BertPreTrainedModel):
    """The encoder: embeddings, config.num_hidden_layers BertLayers, and (by default) the pooler."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> BertModelOutput:
        """input_ids int64 (B, T); attention_mask (B, T), 1 (or True) for tokens and 0 for padding,
        which no token attends to (None: no padding); token_type_ids int64 (B, T), 0 for the first
        segment and 1 for the second (None: all 0). Returns (last_hidden_state (B, T, H),
        pooler_output (B, H) or None)."""
        if not isinstance(input_ids, Tensor) or input_ids.ndim != 2:
            raise ValueError(f"BertModel: input_ids must be a (batch, seq_len) Tensor, got "
                             f"{input_ids.shape if isinstance(input_ids, Tensor) else type(input_ids).__name__}")
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"BertModel: {name} of shape {t.shape} does not match input_ids {input_ids.shape}")
        B, T = input_ids.shape
        mask = None if attention_mask is None else (attention_mask != 0).reshape(B, 1, 1, T)  # over heads, queries
        x = self.encoder(self.embeddings(input_ids, token_type_ids), mask)  # (B, T, H)
        return BertModelOutput(x, None if self.pooler is None else self.pooler(x))


# ---- heads ---------------------------------------------------------------------------------------


class BertLMPredictionHead(Module):
    """Masked-LM logits: transform (dense, act, LayerNorm), then a decoder tied to the word embeddings,
    plus a bias of its own. x (*, H), word_embeddings (V, H) -> (*, V)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = ModuleDict({"dense": Linear(config.hidden_size, config.hidden_size),
                                     "LayerNorm": LayerNorm(config.hidden_size, eps=config.layer_norm_eps)})
        self.act = ACTIVATIONS[config.hidden_act]
        self.bias = Parameter(creation.zeros(config.vocab_size))

    def forward(self, x: Tensor, word_embeddings: Tensor) -> Tensor:
        x = self.transform["LayerNorm"](self.act(self.transform["dense"](x)))  # (*, H)
        return F.linear(x, word_embeddings, self.bias)  # (*, V)


class BertForMaskedLM(BertPreTrainedModel):
    """BERT with the masked-language-model head (no pooler, as in transformers)."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        if config.extra.get("tie_word_embeddings") is False:
            raise ValueError("BertForMaskedLM: untied decoder weights are not implemented "
                             "(config.json has tie_word_embeddings: false)")
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = ModuleDict({"predictions": BertLMPredictionHead(config)})
        self.init_weights()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                positions: Tensor | None = None) -> Tensor:
        """Logits over the vocabulary: (B, T, V); with `positions`, a bool (B, T) mask, only for the
        positions where it is True, in row-major order: (N, V). Pretraining predicts ~15% of the
        tokens, so that saves most of the (largest) vocabulary matmul."""
        x = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state  # (B, T, H)
        if positions is not None:
            x = x[positions]  # (N, H)
        return self.cls["predictions"](x, self.bert.embeddings.word_embeddings.weight)


class BertForSequenceClassification(BertPreTrainedModel):
    """BERT with a classifier on the pooled [CLS] state: pooler -> dropout -> linear."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        p = config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = Dropout(p)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """Class logits (B, num_labels); inputs as BertModel.forward."""
        pooled = self.bert(input_ids, attention_mask, token_type_ids).pooler_output  # (B, H)
        return self.classifier(self.dropout(pooled))
