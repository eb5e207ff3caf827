"""examples/seq2seq.py: its data generator (targets of both tasks, the held-out split), the padded
batches, greedy decoding (stops at <eos>; batching with padding changes nothing), and the script run as
users run it on a tiny configuration: it evaluates, checkpoints and plots; a run stopped at step 3 and
resumed with --resume continues exactly as the uninterrupted run; the checkpoint fixes the model's shape."""
from __future__ import annotations

import importlib.util
import re
import subprocess

import numpy as np
import pytest

import minigrad as mg
from example_support import load_example, run_example, run_info  # tests/ is on sys.path under pytest

SCRIPT = "seq2seq.py"
TINY = ["--max-digits", 4, "--d-model", 16, "--nhead", 2, "--encoder-layers", 1, "--decoder-layers", 1,
        "--dim-feedforward", 32, "--dropout", 0.1, "--batch-size", 8, "--warmup-steps", 2, "--eval-interval", 3,
        "--eval-size", 20, "--eval-batch-size", 8, "--examples", 3]
FINAL = re.compile(r"^final held-out exact match: ([\d.]+)% \((\d+)/(\d+)\)$", re.M)


@pytest.fixture(scope="module")
def s2s():
    """The example script as a module."""
    return load_example("seq2seq")


# ---- the data ------------------------------------------------------------------------------------------


def test_reverse_targets(s2s):
    rng = np.random.default_rng(0)
    lengths = set()
    for _ in range(300):
        source = s2s.random_source("reverse", 6, rng)
        lengths.add(len(source))
        assert re.fullmatch(r"\d{1,6}", source)
        target = s2s.solve("reverse", source)
        assert len(target) == len(source) and all(target[i] == source[-1 - i] for i in range(len(source)))
    assert lengths == set(range(1, 7))  # every length from 1 to max_digits occurs


def test_add_targets(s2s):
    rng = np.random.default_rng(0)
    digit_counts = set()
    for _ in range(300):
        source = s2s.random_source("add", 5, rng)
        match = re.fullmatch(r"(0|[1-9]\d{0,4})\+(0|[1-9]\d{0,4})", source)  # no leading zeros
        assert match, source
        a, b = match.groups()
        digit_counts.update((len(a), len(b)))
        assert int(s2s.solve("add", source)) == int(a) + int(b)
        assert s2s.solve("add", source) == str(int(a) + int(b))
    assert digit_counts == set(range(1, 6))
    assert s2s.solve("add", "999+1") == "1000" and s2s.solve("add", "0+0") == "0"
    assert s2s.max_target_len("add", 3) == len(s2s.solve("add", "999+999"))
    assert s2s.max_source_len("add", 3) == len("999+999")


def test_held_out_sources_never_appear_in_training_batches(s2s):
    task, digits, holdout = "reverse", 3, 0.2  # 1,110 sources, about 220 of them held out
    held_out = s2s.held_out_pairs(task, digits, holdout, 100, seed=0)
    sources = [s for s, _ in held_out]
    assert len(sources) == len(set(sources)) == 100
    assert all(s2s.is_held_out(s, holdout) and t == s2s.solve(task, s) for s, t in held_out)
    assert held_out == s2s.held_out_pairs(task, digits, holdout, 100, seed=0)  # fixed by the seed

    rng = np.random.default_rng(0)
    trained = [pair for _ in range(50) for pair in s2s.training_pairs(task, digits, holdout, 64, rng)]
    assert all(t == s2s.solve(task, s) for s, t in trained)
    assert not set(sources) & {s for s, _ in trained}
    assert not any(s2s.is_held_out(s, holdout) for s, _ in trained)
    # Not vacuous: the unfiltered generator draws held-out sources often at this size.
    rng = np.random.default_rng(0)
    assert sum(s2s.is_held_out(s2s.random_source(task, digits, rng), holdout) for _ in range(3200)) > 100

    # The split is by source text, so it holds for any seed, and the add task splits as well.
    other = s2s.held_out_pairs("add", 2, holdout, 50, seed=1)
    rng = np.random.default_rng(1)
    trained = {s for s, _ in s2s.training_pairs("add", 2, holdout, 3000, rng)}
    assert other and not trained & {s for s, _ in other}


def test_batch_pads_and_wraps_sequences(s2s):
    pairs = [("123", "321"), ("9", "9"), ("40+7", "47")]
    batch = s2s.Batch(pairs)
    src, tgt_in, tgt_out = batch.src.numpy(), batch.tgt_in.numpy(), batch.tgt_out.numpy()
    assert src.shape == (3, 4) and tgt_in.shape == tgt_out.shape == (3, 4)
    for i, (source, target) in enumerate(pairs):
        n, t = len(source), len(target)
        assert s2s.detokenize(src[i, :n]) == source and (src[i, n:] == s2s.PAD).all()
        assert tgt_in[i, 0] == s2s.BOS and s2s.detokenize(tgt_in[i, 1:t + 1]) == target
        assert (tgt_in[i, t + 1:] == s2s.PAD).all()
        assert s2s.detokenize(tgt_out[i, :t]) == target and tgt_out[i, t] == s2s.EOS
        assert (tgt_out[i, t + 1:] == s2s.PAD).all()
    assert len({s2s.PAD, s2s.BOS, s2s.EOS, *s2s.TOKEN_OF.values()}) == s2s.VOCAB_SIZE


def test_each_task_has_its_defaults(s2s, tmp_path):
    reverse = s2s.parse_args(["--out-dir", str(tmp_path)])
    add = s2s.parse_args(["--task", "add", "--out-dir", str(tmp_path)])
    assert (reverse.task, add.task) == ("reverse", "add")
    assert reverse.max_digits == s2s.TASK_DEFAULTS["reverse"]["max_digits"]
    assert add.max_digits == s2s.TASK_DEFAULTS["add"]["max_digits"] and add.steps == s2s.TASK_DEFAULTS["add"]["steps"]
    given = s2s.parse_args(["--task", "add", "--max-digits", "7", "--steps", "11", "--out-dir", str(tmp_path)])
    assert (given.max_digits, given.steps) == (7, 11)


# ---- decoding ------------------------------------------------------------------------------------------


class Scripted:
    """A stand-in model whose logits make sequence i emit script[i][t] at step t; it records what it was fed."""

    def __init__(self, s2s, script):
        self.s2s, self.script, self.fed = s2s, np.array(script), []

    def encode(self, src):
        return "memory", "padding"

    def decode(self, memory, src_padding, tgt):
        assert (memory, src_padding) == ("memory", "padding")
        ids = tgt.numpy()
        self.fed.append(ids)
        n, t = ids.shape
        logits = np.zeros((n, t, self.s2s.VOCAB_SIZE), dtype=np.float32)
        logits[np.arange(n)[:, None], np.arange(t), self.script[:, :t]] = 5.0
        return mg.tensor(logits)


def test_greedy_decoding_stops_at_eos(s2s):
    EOS, PAD, BOS = s2s.EOS, s2s.PAD, s2s.BOS
    script = [[5, 6, EOS, 7, 8, 9, 9, 9],
              [EOS, 5, 5, 5, 5, 5, 5, 5],
              [5, 5, 5, 5, EOS, 3, 3, 3]]
    model = Scripted(s2s, script)
    out = s2s.greedy_decode(model, mg.zeros(3, 2, dtype=mg.int64), max_len=8)
    assert out == [[5, 6, EOS], [EOS], [5, 5, 5, 5, EOS]]
    assert len(model.fed) == 5  # stopped once the last sequence emitted <eos>, not after max_len steps
    last = model.fed[-1]  # <bos> + 4 tokens, <pad> fed after a sequence's <eos>
    np.testing.assert_array_equal(last, [[BOS, 5, 6, EOS, PAD], [BOS, EOS, PAD, PAD, PAD], [BOS, 5, 5, 5, 5]])

    # Without <eos>, decoding runs max_len steps and returns what it produced.
    model = Scripted(s2s, [[5, 6, 7, 8, EOS], [EOS, 4, 4, 4, 4]])
    out = s2s.greedy_decode(model, mg.zeros(2, 2, dtype=mg.int64), max_len=3)
    assert out == [[5, 6, 7], [EOS]] and len(model.fed) == 3


def small_model(s2s, task="reverse", max_digits=5):
    mg.manual_seed(0)
    args = dict(s2s.DEFAULTS, task=task, max_digits=max_digits, d_model=16, nhead=2, encoder_layers=1,
                decoder_layers=1, dim_feedforward=32)
    model = s2s.make_model(type("Args", (), args))
    model.eval()
    return model


def test_padding_masks_make_batching_invisible(s2s):
    """The logits and greedy decodings of a padded batch equal those of each sequence alone: padded source
    positions are hidden from the encoder and the cross-attention, padded target positions from the decoder."""
    model = small_model(s2s)
    pairs = [("31", "13"), ("90817", "71809"), ("5", "5"), ("246", "642")]
    batch = s2s.Batch(pairs)
    with mg.no_grad():
        logits = model(batch.src, batch.tgt_in).numpy()
    decoded = s2s.greedy_decode(model, batch.src, max_len=6)
    for i, pair in enumerate(pairs):
        alone = s2s.Batch([pair])
        with mg.no_grad():
            want = model(alone.src, alone.tgt_in).numpy()[0]
        t = want.shape[0]
        np.testing.assert_allclose(logits[i, :t], want, rtol=1e-4, atol=1e-5)
        assert decoded[i] == s2s.greedy_decode(model, alone.src, max_len=6)[0]


def test_evaluate_counts_exact_matches(s2s):
    """evaluate() calls a decoding right exactly when it is target + <eos>: compare with a direct count."""
    model = small_model(s2s, max_digits=3)
    pairs = s2s.held_out_pairs("reverse", 3, 0.2, 30, seed=0)
    batches = [s2s.Batch(pairs[:16]), s2s.Batch(pairs[16:])]
    args = type("Args", (), dict(task="reverse", max_digits=3))
    result = s2s.evaluate(model, batches, args)
    assert result["total"] == 30 and len(result["decoded"]) == 30
    want = sum(ids == s2s.tokenize(t) + [s2s.EOS] for ids, (_, t) in zip(result["decoded"], pairs))
    assert result["correct"] == want and result["exact"] == want / 30
    assert np.isfinite(result["loss"]) and result["loss"] > 0


# ---- the script, run as users run it -------------------------------------------------------------------


def run(*args, cwd) -> subprocess.CompletedProcess:
    return run_example(SCRIPT, *args, cwd=cwd)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """6 steps in one go: (out_dir, stdout)."""
    tmp = tmp_path_factory.mktemp("full")
    result = run(*TINY, "--steps", 6, "--out-dir", tmp / "run", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return tmp / "run", result.stdout


def test_training_evaluates_checkpoints_and_plots(full_run, s2s):
    out_dir, stdout = full_run
    for step in (0, 3, 6):
        assert re.search(rf"^step {step}: held-out loss [\d.e+-]+, exact match [\d.]+% \(\d+/20\)$", stdout, re.M)
    assert (out_dir / "ckpt.safetensors").exists()
    assert (out_dir / "loss.png").exists() == (importlib.util.find_spec("matplotlib") is not None)
    info = run_info(out_dir)
    history = info["history"]
    assert [row[0] for row in history["eval"]] == [0, 3, 6] and len(history["loss"]) == 6
    assert info["settings"]["d_model"] == 16 and info["settings"]["steps"] == 6
    assert mg.io.load_metadata(out_dir / "ckpt.safetensors")["step"] == "6"

    # The final line reports the last evaluation; the decodings shown are held-out problems, marked right.
    percent, correct, total = FINAL.search(stdout).groups()
    assert int(total) == 20 and int(correct) == round(history["eval"][-1][2] * 20)
    assert percent == f"{history['eval'][-1][2] * 100:.2f}"
    lines = re.findall(r"^ *(\d+) -> (\S+)(?: \(no <eos>\))?   (ok|WRONG, expected (\d+))$", stdout, re.M)
    assert len(lines) >= 3
    for source, decoded, mark, expected in lines:
        assert s2s.is_held_out(source, info["settings"]["holdout"])
        assert (mark == "ok") == (decoded == source[::-1])
        assert mark == "ok" or expected == source[::-1]

    # The checkpoint restores the model.
    args = type("Args", (), info["settings"])
    model = s2s.make_model(args)
    assert mg.load_checkpoint(out_dir / "ckpt.safetensors", model)["step"] == 6


def test_resume_continues_exactly(full_run, tmp_path):
    out_dir, full_stdout = full_run
    first = run(*TINY, "--steps", 3, "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert mg.io.load_metadata(tmp_path / "run" / "ckpt.safetensors")["step"] == "3"
    resumed = run("--resume", "--steps", 6, "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 3" in resumed.stdout
    got, want = run_info(tmp_path / "run")["history"], run_info(out_dir)["history"]
    assert len(got["loss"]) == len(want["loss"]) == 6
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-6)
    np.testing.assert_allclose(got["eval"], want["eval"], rtol=1e-6)
    assert FINAL.search(resumed.stdout).group(0) == FINAL.search(full_stdout).group(0)


def test_resume_refuses_another_model_shape(full_run, tmp_path):
    out_dir, _ = full_run
    result = run("--resume", "--d-model", 32, "--out-dir", out_dir, cwd=tmp_path)
    assert result.returncode != 0 and "differs from the checkpoint" in result.stderr


@pytest.mark.skipif(bool(mg.backend.available("cuda")), reason="a CUDA backend is available here")
def test_cuda_without_backend_fails_clearly(tmp_path):
    result = run(*TINY, "--device", "cuda", "--out-dir", tmp_path / "run", cwd=tmp_path)
    assert result.returncode != 0 and "CUDA backend is not available" in result.stderr
