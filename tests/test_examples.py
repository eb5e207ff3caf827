"""examples/mlp_digits.py: it trains to >= 95% test accuracy from the command line, its checkpoint
restores the same predictions, and training is deterministic given the seed."""
from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import minigrad as mg

pytest.importorskip("sklearn", reason="scikit-learn (test and examples extra) is not installed")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "mlp_digits.py"


@pytest.fixture(scope="module")
def digits():
    """The example script as a module, for calling its functions."""
    spec = importlib.util.spec_from_file_location("mlp_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_example_reaches_95_percent(tmp_path, digits):
    checkpoint = tmp_path / "digits.safetensors"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(SCRIPT), "--save", str(checkpoint)], capture_output=True,
                            text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    epochs = re.findall(r"^epoch +(\d+) +loss ([\d.]+) +test accuracy ([\d.]+)$", out, re.M)
    assert [int(e) for e, _, _ in epochs] == list(range(1, 21))
    assert float(epochs[-1][1]) < float(epochs[0][1])  # the loss fell
    assert re.search(r"^precision [\d.]+  recall [\d.]+  F1 [\d.]+", out, re.M)
    assert "confusion matrix" in out
    accuracy = float(re.search(r"^final test accuracy ([\d.]+)$", out, re.M).group(1))
    assert accuracy >= 0.95, out

    # The checkpoint restores a model that makes the same predictions.
    model = digits.make_model(hidden=128, dropout=0.1)
    info = mg.load_checkpoint(checkpoint, model)
    assert info["step"] == 20 and info["extra"]["args"]["seed"] == 0
    _, _, x_test, y_test = digits.load_data(seed=0)
    restored = mg.metrics.accuracy(digits.predict(model, x_test), y_test)
    assert f"{restored:.4f}" == f"{accuracy:.4f}"


def small_args(seed):
    return argparse.Namespace(epochs=2, lr=2e-3, batch_size=32, hidden=16, dropout=0.2, weight_decay=1e-2, seed=seed)


def test_training_is_deterministic_given_the_seed(digits):
    runs = []
    for seed in (3, 3, 4):
        logs = []
        model, _, _ = digits.train(small_args(seed), log=logs.append)
        runs.append((logs, {k: v.numpy() for k, v in model.state_dict().items()}))
    (logs_a, weights_a), (logs_b, weights_b), (logs_c, weights_c) = runs
    assert logs_a == logs_b and len(logs_a) == 2
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        np.testing.assert_array_equal(weights_a[key], weights_b[key])
    assert any(not np.array_equal(weights_a[k], weights_c[k]) for k in weights_a)  # the seed matters
