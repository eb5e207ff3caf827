"""examples/train_gpt.py and examples/sample_gpt.py, run as users run them on a tiny configuration: training
evaluates, checkpoints and prints a sample; a run stopped at iteration 3 and resumed with --resume
continues exactly as the uninterrupted run; the checkpoint fixes the model's shape on resume;
sample_gpt.py writes text from the checkpoint; --device cuda fails clearly without a CUDA backend."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import minigrad as mg
from minigrad.data import CharTokenizer

from example_support import run_example as run, run_info  # tests/ is on sys.path under pytest

TRAIN, SAMPLE = "train_gpt.py", "sample_gpt.py"
TINY = ["--preset", "demo", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "4", "--warmup-iters", "2", "--lr-decay-iters", "6", "--eval-interval", "3",
        "--eval-iters", "2", "--sample-tokens", "20"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """6 iterations in one go: (out_dir, stdout)."""
    tmp = tmp_path_factory.mktemp("full")
    result = run(TRAIN, *TINY, "--max-iters", 6, "--out-dir", tmp / "run", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return tmp / "run", result.stdout


def test_training_evaluates_checkpoints_and_samples(full_run):
    out_dir, stdout = full_run
    for it in (0, 3, 6):
        assert f"iter {it}: train loss" in stdout
    assert (out_dir / "ckpt.safetensors").exists() and (out_dir / "tokenizer.json").exists()
    assert (out_dir / "loss.png").exists() == (importlib.util.find_spec("matplotlib") is not None)
    info = run_info(out_dir)
    assert [row[0] for row in info["history"]["eval"]] == [0, 3, 6] and len(info["history"]["loss"]) == 6
    assert info["config"]["n_layer"] == 1 and info["settings"]["max_iters"] == 6
    sample = stdout.split("---------- sample ----------\n", 1)[1]
    vocab = set(CharTokenizer.load(out_dir / "tokenizer.json").chars)
    assert len(sample) == 20 + 1 and set(sample[:-1]) <= vocab  # 20 characters, then print's newline


def test_resume_continues_exactly(full_run, tmp_path):
    out_dir, _ = full_run
    first = run(TRAIN, *TINY, "--max-iters", 3, "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert mg.io.load_metadata(tmp_path / "run" / "ckpt.safetensors")["step"] == "3"
    resumed = run(TRAIN, "--resume", "--max-iters", 6, "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at iteration 3" in resumed.stdout
    got, want = run_info(tmp_path / "run")["history"], run_info(out_dir)["history"]
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
    np.testing.assert_allclose(got["eval"], want["eval"], rtol=1e-6)


def test_resume_refuses_another_model_shape(full_run, tmp_path):
    out_dir, _ = full_run
    result = run(TRAIN, "--resume", "--n-layer", 2, "--out-dir", out_dir, cwd=tmp_path)
    assert result.returncode != 0 and "differs from the checkpoint" in result.stderr


def test_sample_script_writes_text(full_run, tmp_path):
    out_dir, _ = full_run
    output = tmp_path / "samples.txt"
    result = run(SAMPLE, "--out-dir", out_dir, "--start", "ROMEO:", "--max-new-tokens", 30, "--num-samples", 2,
                 "--output", output, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    samples = output.read_text(encoding="utf-8").rstrip("\n").split("\n---------------\n")
    vocab = set(CharTokenizer.load(out_dir / "tokenizer.json").chars)
    assert len(samples) == 2
    for text in samples:
        assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 30 and set(text) <= vocab


@pytest.mark.skipif(bool(mg.backend.available("cuda")), reason="a CUDA backend is available here")
def test_cuda_without_backend_fails_clearly(tmp_path):
    result = run(TRAIN, *TINY, "--device", "cuda", "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert result.returncode != 0 and "CUDA backend is not available" in result.stderr


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_runs_and_learns(tmp_path, amp):
    """--amp: the forward pass under autocast (float16 with a GradScaler); a few steps lower the loss."""
    result = run(TRAIN, *TINY, "--max-iters", 6, "--lr", "1e-2", "--amp", amp, "--out-dir", tmp_path / "run",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    losses = run_info(tmp_path / "run")["history"]["loss"]
    assert run_info(tmp_path / "run")["settings"]["amp"] == amp
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
