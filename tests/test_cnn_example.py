"""examples/train_cnn.py, run as users run it on a tiny configuration: its IDX reader on files written here
byte by byte from the format's description; training on a small Fashion-MNIST-shaped directory of IDX files
evaluates, checkpoints the final model and plots; a run stopped after epoch 1 and resumed with --resume ends
exactly as the uninterrupted run; without the data directory it says so and falls back to scikit-learn's
digits; missing files, a corrupt file, another model shape or dataset on --resume and --device cuda without
a CUDA backend fail clearly."""
from __future__ import annotations

import gzip
import importlib.util
import os
import pathlib
import re
import struct
import subprocess

import numpy as np
import pytest

import minigrad as mg

from example_support import load_example, run_example, run_info  # tests/ is on sys.path under pytest

TRAIN = "train_cnn.py"
TINY = ["--channels", "4", "8", "--hidden", "16", "--batch-size", "16", "--warmup-steps", "2",
        "--eval-batch-size", "32", "--seed", "3"]
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def run(*args, cwd) -> subprocess.CompletedProcess:
    return run_example(TRAIN, *args, cwd=cwd)


@pytest.fixture(scope="module")
def train_cnn():
    """The script as a module."""
    return load_example("train_cnn")


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """The IDX encoding: 0x0000, the type code, the number of dims, big-endian uint32 sizes, big-endian data."""
    big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=big_endian).tobytes()


def write_idx(path, array, type_code=0x08, compress=True):
    data = idx_bytes(array, type_code)
    pathlib.Path(path).write_bytes(gzip.compress(data) if compress else data)


# ---- the IDX reader ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, type_code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                              (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)])
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(train_cnn, tmp_path, dtype, type_code, compress):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    array = (rng.integers(info.min, info.max, (5, 3, 4), endpoint=True) if info else rng.standard_normal((5, 3, 4)))
    array = array.astype(dtype)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array, type_code, compress)
    got = train_cnn.read_idx(path)
    assert got.shape == (5, 3, 4) and got.dtype == np.dtype(dtype)  # native byte order
    np.testing.assert_array_equal(got, array)


def test_read_idx_one_dim_labels(train_cnn, tmp_path):
    labels = np.array([9, 0, 3, 3, 7], dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", labels)
    np.testing.assert_array_equal(train_cnn.read_idx(tmp_path / "labels.gz"), labels)


def test_read_idx_rejects_a_wrong_magic_number(train_cnn, tmp_path):
    data = bytearray(idx_bytes(np.zeros((2, 2), np.uint8), 0x08))
    for position, value in ((0, 0x01), (2, 0x07)):  # nonzero leading bytes; an unknown type code
        bad = bytearray(data)
        bad[position] = value
        (tmp_path / "bad").write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=r"not an IDX file: magic number 0x"):
            train_cnn.read_idx(tmp_path / "bad")


def test_read_idx_rejects_truncated_or_corrupt_files(train_cnn, tmp_path):
    data = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)
    for name, content in (("short", data[:-1]), ("long", data + b"\0"), ("header", data[:10]), ("tiny", data[:3])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=r"truncated|too short"):
            train_cnn.read_idx(tmp_path / name)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:-6])  # a gzip stream cut short
    with pytest.raises(ValueError, match="corrupt gzip data"):
        train_cnn.read_idx(tmp_path / "cut.gz")


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="dataset-fashion-mnist absent")
def test_reads_the_installed_fashion_mnist_test_labels(train_cnn):
    labels = train_cnn.read_idx(train_cnn._idx_path("/usr/share/datasets/fashion-mnist", "t10k-labels-idx1-ubyte"))
    assert labels.shape == (10_000,) and np.array_equal(np.bincount(labels), [1000] * 10)  # balanced test set


# ---- training runs -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_like(tmp_path_factory.mktemp("fashion"))


def write_fashion_like(path):
    """A Fashion-MNIST-shaped directory at `path`: 64 train and 40 test 28x28 uint8 images (noise with a bright
    row that depends on the class), the images gzip'd, the labels not. Returns `path`."""
    rng = np.random.default_rng(1)
    for split, n in (("train", 64), ("test", 40)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), 2 + 2 * labels.astype(int)] = 250
        images_file, labels_file = FILES[split]
        write_idx(path / (images_file + ".gz"), images)
        write_idx(path / labels_file, labels, compress=False)  # plain IDX is read too
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir):
    """2 epochs in one go: (out_dir, stdout)."""
    tmp = tmp_path_factory.mktemp("full")
    result = run(*TINY, "--data-dir", data_dir, "--epochs", 2, "--out-dir", tmp / "run", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return tmp / "run", result.stdout


def final_accuracy(stdout: str) -> float:
    return float(re.search(r"final test accuracy (\S+) on fashion-mnist \(40 images", stdout).group(1))


def test_training_evaluates_checkpoints_and_plots(full_run, data_dir, train_cnn):
    out_dir, stdout = full_run
    assert f"Fashion-MNIST from {data_dir}" in stdout and "64 train / 40 test images of 28x28" in stdout
    assert "epoch 1: train loss" in stdout and "epoch 2: train loss" in stdout
    assert (out_dir / "loss.png").exists() == (importlib.util.find_spec("matplotlib") is not None)
    info = run_info(out_dir)
    steps_per_epoch = 4  # 64 images in batches of 16
    assert info["dataset"] == "fashion-mnist" and info["epoch"] == 2 and info["settings"]["channels"] == [4, 8]
    assert [row[0] for row in info["history"]["eval"]] == [steps_per_epoch, 2 * steps_per_epoch]
    assert len(info["history"]["loss"]) == 2 * steps_per_epoch
    assert mg.io.load_metadata(out_dir / "ckpt.safetensors")["step"] == str(2 * steps_per_epoch)
    # Per-class lines name the Fashion-MNIST classes and count every test image once.
    counts = re.findall(r"^  (.+?) +(?:[\d.]+|n/a) +\((\d+) of (\d+)\)$", stdout, re.M)
    assert [name for name, _, _ in counts] == list(train_cnn.FASHION_CLASSES)
    assert sum(int(total) for _, _, total in counts) == 40
    assert sum(int(right) for _, right, _ in counts) == round(final_accuracy(stdout) * 40)

    # The checkpoint holds the final model: rebuilt from it, it predicts the reported accuracy.
    model = train_cnn.make_model((28, 28), [4, 8], 16, 0.0, 10)
    mg.load_checkpoint(out_dir / "ckpt.safetensors", model)
    norm = info["normalization"]  # the training pixels' statistics, after scaling to [0, 1]
    train_pixels = train_cnn.read_idx(data_dir / "train-images-idx3-ubyte.gz") / 255.0
    assert norm["mean"] == pytest.approx(train_pixels.mean()) and norm["std"] == pytest.approx(train_pixels.std())
    images = train_cnn.read_idx(data_dir / "t10k-images-idx3-ubyte.gz")
    labels = train_cnn.read_idx(data_dir / "t10k-labels-idx1-ubyte").astype(np.int64)
    x = mg.tensor(((images.astype(np.float32) / norm["scale"] - norm["mean"]) / norm["std"])[:, None]
                  .astype(np.float32))
    _, pred = train_cnn.evaluate(model, x, mg.tensor(labels), 32, "cpu")
    assert np.mean(pred == labels) == pytest.approx(final_accuracy(stdout), abs=1e-4)
    assert info["history"]["eval"][-1][3] == pytest.approx(final_accuracy(stdout), abs=1e-4)


def test_resume_continues_exactly(full_run, data_dir, tmp_path):
    out_dir, full_stdout = full_run
    first = run(*TINY, "--data-dir", data_dir, "--epochs", 1, "--lr-decay-epochs", 2, "--out-dir", tmp_path / "run",
                cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert run_info(tmp_path / "run")["epoch"] == 1
    resumed = run("--resume", "--data-dir", data_dir, "--epochs", 2, "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at epoch 1 (step 4)" in resumed.stdout
    assert "epoch 1: train loss" not in resumed.stdout and "epoch 2: train loss" in resumed.stdout
    got, want = run_info(tmp_path / "run")["history"], run_info(out_dir)["history"]
    np.testing.assert_array_equal(got["loss"], want["loss"])
    np.testing.assert_array_equal(got["eval"], want["eval"])
    got_tensors = mg.io.load(tmp_path / "run" / "ckpt.safetensors")
    want_tensors = mg.io.load(out_dir / "ckpt.safetensors")
    assert got_tensors.keys() == want_tensors.keys()
    for key in want_tensors:  # weights, BatchNorm buffers, AdamW moments
        np.testing.assert_array_equal(got_tensors[key].numpy(), want_tensors[key].numpy(), err_msg=key)
    assert final_accuracy(resumed.stdout) == final_accuracy(full_stdout)


def main_in_process(train_cnn, *args) -> None:
    """Run the script's main() in this process (no interpreter to start); SystemExit propagates."""
    train_cnn.main(list(map(str, args)))


def test_resume_refuses_another_model_or_dataset(full_run, tmp_path, train_cnn, capsys):
    out_dir, _ = full_run
    with pytest.raises(SystemExit) as exit_info:
        main_in_process(train_cnn, "--resume", "--channels", 4, 16, "--out-dir", out_dir)
    assert exit_info.value.code != 0
    assert "--channels [4, 16] differs from the checkpoint's [4, 8]" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"was trained on fashion-mnist \(\[28, 28\] images\), this run loads digits"):
        main_in_process(train_cnn, "--resume", "--data-dir", tmp_path / "no-such-dir", "--out-dir", out_dir)


def test_falls_back_to_digits_without_the_data_dir(tmp_path, train_cnn, capsys):
    missing = tmp_path / "no-such-dir"
    main_in_process(train_cnn, *TINY, "--data-dir", missing, "--epochs", 1, "--train-subset", 160,
                    "--test-subset", 50, "--out-dir", tmp_path / "run")
    stdout = capsys.readouterr().out
    assert f"Fashion-MNIST not found: no directory {missing}" in stdout
    assert "Falling back to scikit-learn's digits" in stdout
    assert "digits: 160 train / 50 test images of 8x8" in stdout and "epoch 1: train loss" in stdout
    assert re.search(r"final test accuracy [\d.]+ on digits \(50 images", stdout)
    info = run_info(tmp_path / "run")
    assert info["dataset"] == "digits" and info["image_size"] == [8, 8] and info["classes"] == list("0123456789")


def test_missing_and_corrupt_files_fail_clearly(data_dir, tmp_path, train_cnn):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="holds no train-images-idx3-ubyte.gz or train-images-idx3-ubyte"):
        main_in_process(train_cnn, *TINY, "--data-dir", empty, "--out-dir", tmp_path / "run")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in os.listdir(data_dir):
        (corrupt / name).write_bytes((data_dir / name).read_bytes())
    (corrupt / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x28" + bytes(10))  # 10 of 40
    with pytest.raises(SystemExit, match=r"cannot load Fashion-MNIST: .*t10k-labels.*truncated or corrupt"):
        main_in_process(train_cnn, *TINY, "--data-dir", corrupt, "--out-dir", tmp_path / "run")


@pytest.mark.skipif(bool(mg.backend.available("cuda")), reason="a CUDA backend is available here")
def test_cuda_without_backend_fails_clearly(tmp_path, train_cnn):
    with pytest.raises(SystemExit, match="CUDA backend is not available"):
        main_in_process(train_cnn, *TINY, "--device", "cuda", "--out-dir", tmp_path / "run")
