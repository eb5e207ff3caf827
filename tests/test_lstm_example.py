"""examples/train_lstm.py, run as users run it, on a tiny configuration: training evaluates, checkpoints,
plots and prints a sample; a run stopped at iteration 3 and resumed with --resume continues exactly as
the uninterrupted run; the checkpoint fixes the model's shape on resume; with --compare-torch the twin
starts from the same weights and sees the same batches, so the first losses of both sides agree, it
resumes from its own checkpoint, and minigrad's side trains exactly as without it."""
from __future__ import annotations

import importlib.util
import re
import subprocess

import numpy as np
import pytest

import minigrad as mg
from example_support import run_example, run_info  # tests/ is on sys.path under pytest
from minigrad.data import CharTokenizer

TRAIN = "train_lstm.py"
TINY = ["--n-embd", "8", "--hidden-size", "16", "--n-layer", "2", "--block-size", "16", "--batch-size", "4",
        "--lr-decay-iters", "6", "--eval-interval", "3", "--eval-iters", "2", "--sample-tokens", "20",
        "--threads", "1"]
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch (torch) is not installed: no --compare-torch")


def run(*args, cwd) -> subprocess.CompletedProcess:
    return run_example(TRAIN, *args, cwd=cwd)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """6 iterations in one go, minigrad only: (out_dir, stdout)."""
    tmp = tmp_path_factory.mktemp("full")
    result = run(*TINY, "--max-iters", 6, "--out-dir", tmp / "run", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return tmp / "run", result.stdout


def stop_and_resume(tmp_path, *extra) -> tuple[str, str]:
    """Train TINY (+ extra) to iteration 3, then resume to 6 with --resume alone: the two stdouts."""
    first = run(*TINY, *extra, "--max-iters", 3, "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert mg.io.load_metadata(tmp_path / "run" / "ckpt.safetensors")["step"] == "3"
    resumed = run("--resume", "--max-iters", 6, "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at iteration 3" in resumed.stdout
    return first.stdout, resumed.stdout


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    """With the PyTorch twin: 3 iterations, then resumed to 6: (out_dir, first stdout, resumed stdout)."""
    if not HAS_TORCH:
        pytest.skip("PyTorch (torch) is not installed: no --compare-torch")
    tmp = tmp_path_factory.mktemp("torch")
    return (tmp / "run", *stop_and_resume(tmp, "--compare-torch"))


def assert_same_history(got: dict, want: dict) -> None:
    assert len(got["loss"]) == 6 and [row[0] for row in got["eval"]] == [0, 3, 6]
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
    np.testing.assert_allclose(got["eval"], want["eval"], rtol=1e-6)


def test_training_evaluates_checkpoints_plots_and_samples(full_run):
    out_dir, stdout = full_run
    for it in (0, 3, 6):
        assert re.search(rf"^iter {it}: train loss [\d.]+, val loss [\d.]+$", stdout, re.M)
    assert "torch" not in stdout and not (out_dir / "torch_ckpt.pt").exists()
    assert (out_dir / "ckpt.safetensors").exists() and (out_dir / "tokenizer.json").exists()
    assert (out_dir / "loss.png").exists() == HAS_MATPLOTLIB
    info = run_info(out_dir)
    history = info["history"]
    assert [row[0] for row in history["eval"]] == [0, 3, 6] and len(history["loss"]) == 6
    assert np.isfinite(history["loss"]).all() and history["torch"]["loss"] == []
    assert history["eval"][-1][1] < history["eval"][0][1]  # it learns
    assert info["settings"]["hidden_size"] == 16 and info["settings"]["max_iters"] == 6
    assert mg.io.load_metadata(out_dir / "ckpt.safetensors")["step"] == "6"
    # the checkpoint holds the trained LSTM's weights, in PyTorch's names and layouts
    weights = mg.load(out_dir / "ckpt.safetensors")
    assert tuple(weights["model.lstm.weight_hh_l1"].shape) == (4 * 16, 16)
    assert tuple(weights["model.embedding.weight"].shape) == (65, 8)
    sample = stdout.split("---------- sample ----------\n", 1)[1]
    vocab = set(CharTokenizer.load(out_dir / "tokenizer.json").chars)
    assert len(sample) == 20 + 1 and set(sample[:-1]) <= vocab  # 20 characters, then print's newline


def test_resume_continues_exactly(full_run, tmp_path):
    stop_and_resume(tmp_path)
    assert_same_history(run_info(tmp_path / "run")["history"], run_info(full_run[0])["history"])


def test_resume_refuses_another_model_shape(full_run, tmp_path):
    result = run("--resume", "--hidden-size", 32, "--out-dir", full_run[0], cwd=tmp_path)
    assert result.returncode != 0 and "differs from the checkpoint" in result.stderr


@needs_torch
def test_torch_twin_starts_from_the_same_weights_and_batches(torch_run):
    out_dir, first, _ = torch_run
    history = run_info(out_dir)["history"]
    mine, twin = history, history["torch"]
    # same weights, same batch: the first step's losses and the evaluation before training agree
    np.testing.assert_allclose(mine["loss"][0], twin["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(mine["eval"][0], twin["eval"][0], rtol=1e-5)
    assert mine["loss"][0] != mine["loss"][1]  # another batch, and training moved the weights
    assert re.search(r"^iter 0: train loss [\d.]+, val loss [\d.]+ \| torch: train loss [\d.]+, val loss [\d.]+ "
                     r"\| val rel\. diff [-+][\d.]+%$", first, re.M)
    assert re.search(r"^minigrad: [\d.]+ s/step", first, re.M) and re.search(r"^PyTorch: +[\d.]+ s/step", first, re.M)


@needs_torch
def test_torch_twin_resumes_and_leaves_minigrad_unchanged(torch_run, full_run):
    out_dir, _, resumed = torch_run
    history = run_info(out_dir)["history"]
    # the twin changes nothing on minigrad's side: the same losses as the minigrad-only uninterrupted run
    assert_same_history(history, run_info(full_run[0])["history"])
    # the resumed twin trained on from its own checkpoint, beside minigrad: still within rounding of it
    twin = history["torch"]
    assert len(twin["loss"]) == 6 and [row[0] for row in twin["eval"]] == [0, 3, 6]
    np.testing.assert_allclose(twin["loss"], history["loss"], rtol=1e-4)
    np.testing.assert_allclose(twin["eval"], history["eval"], rtol=1e-4)
    assert (out_dir / "torch_ckpt.pt").exists() and (out_dir / "loss.png").exists() == HAS_MATPLOTLIB
    assert "| torch: train loss" in resumed  # the checkpointed --compare-torch setting holds on resume
    final = re.search(r"^final val loss: minigrad ([\d.]+), PyTorch ([\d.]+), relative difference ([\d.]+)%$",
                      resumed, re.M)
    assert final, resumed
    mg_val, torch_val, rel = map(float, final.groups())
    assert mg_val == pytest.approx(history["eval"][-1][2], abs=1e-4)
    assert torch_val == pytest.approx(twin["eval"][-1][2], abs=1e-4)
    assert rel == pytest.approx(100 * abs(mg_val - torch_val) / torch_val, abs=2e-3)


@pytest.mark.skipif(bool(mg.backend.available("cuda")), reason="a CUDA backend is available here")
def test_cuda_without_backend_fails_clearly(tmp_path):
    result = run(*TINY, "--device", "cuda", "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert result.returncode != 0 and "CUDA backend is not available" in result.stderr
