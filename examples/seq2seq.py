"""Train an encoder-decoder Transformer (nn.Transformer) on a synthetic task made up on the fly, and decode greedily.

    python examples/seq2seq.py                              # reverse 1..12 digits: >= 99% exact match
    python examples/seq2seq.py --task add                   # "407+1985" -> "2392": >= 99% too
    python examples/seq2seq.py --steps 4000 --resume        # train on from the checkpoint
    python examples/seq2seq.py --device cuda

Tasks: `reverse` maps a string of 1..--max-digits digits to the same digits in reverse order ("3071" ->
"1703"); `add` maps two numbers of 1..--max-digits digits each to their sum ("407+1985" -> "2392"). Every
training batch is drawn fresh from a generator, so the model never sees the same batch twice.

Held-out set: a source string is reserved for evaluation when the CRC-32 of its text falls in the first
--holdout fraction of the 32-bit range. Training draws reject every reserved source, and the evaluation
set is --eval-size distinct reserved sources, so no evaluation sequence is ever trained on (whatever the
seed), and short strings are split between the two sides instead of all landing on one.

Model: a shared token embedding (scaled by sqrt(d_model)) plus sinusoidal position encodings feed
nn.Transformer (batch_first, pre-norm); a Linear maps the decoder's output to the vocabulary. Tokens:
<pad>, <bos>, <eos>, the digits and '+'. Sequences in a batch have different lengths, padded with <pad>:
the source padding is masked for the encoder's self-attention and the decoder's cross-attention
(src_key_padding_mask, memory_key_padding_mask), the target padding for the decoder (tgt_key_padding_mask),
and the decoder sees only earlier target positions (the causal tgt_mask). Training is teacher forcing:
the decoder reads <bos> + target and predicts target + <eos> (cross-entropy, <pad> ignored). Evaluation
decodes greedily: from <bos>, append the most likely token until every sequence has emitted <eos>; a
sequence counts as an exact match when it emitted exactly target + <eos>.

The run writes to --out-dir: ckpt.safetensors (model, optimizer, step, settings, loss history and the
state of the random generator; at every evaluation and at the end) and loss.png (with matplotlib). All
randomness follows --seed: two runs with the same settings print the same numbers, and a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import zlib

import numpy as np

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F
from minigrad.optim.lr_scheduler import WarmupCosineLR

from common import Progress, check_device, checkpoint_path, optimize, plot_losses, read_run_info, run_settings

# ---- vocabulary ----------------------------------------------------------------------------------------

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
CHARS = "0123456789+"
TOKEN_OF = {c: i + len(SPECIALS) for i, c in enumerate(CHARS)}
VOCAB_SIZE = len(SPECIALS) + len(CHARS)
TASKS = ("reverse", "add")

# Settings a checkpoint fixes: the model's shape and the data (task, lengths, held-out split).
FIXED_BY_CHECKPOINT = ("task", "max_digits", "holdout", "eval_size", "d_model", "nhead", "encoder_layers",
                       "decoder_layers", "dim_feedforward")
DEFAULTS = dict(task="reverse", holdout=0.05, eval_size=1000, device="cpu", seed=1337,
                d_model=64, nhead=4, encoder_layers=2, decoder_layers=2, dim_feedforward=256, dropout=0.0,
                batch_size=64, lr=2e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.01,
                label_smoothing=0.0, grad_clip=1.0, eval_interval=250, eval_batch_size=500, examples=8)
# Each task's defaults reach >= 99% exact match on the held-out set in a few minutes on one CPU core.
TASK_DEFAULTS = {"reverse": dict(max_digits=12, steps=2000), "add": dict(max_digits=4, steps=3000)}


def tokenize(text: str) -> list[int]:
    return [TOKEN_OF[c] for c in text]


def detokenize(ids) -> str:
    """Token ids -> text; special tokens are shown by name."""
    return "".join(CHARS[i - len(SPECIALS)] if i >= len(SPECIALS) else SPECIALS[i] for i in ids)


# ---- data: problems made up on the fly, with a held-out split by hash -----------------------------------


def max_source_len(task: str, max_digits: int) -> int:
    return max_digits if task == "reverse" else 2 * max_digits + 1


def max_target_len(task: str, max_digits: int) -> int:
    """Without <eos>."""
    return max_digits if task == "reverse" else max_digits + 1


def random_number(rng: np.random.Generator, max_digits: int) -> int:
    """A number with a uniformly random count of digits in 1..max_digits, then uniform with that count."""
    n = int(rng.integers(1, max_digits + 1))
    return int(rng.integers(0 if n == 1 else 10 ** (n - 1), 10 ** n))


def random_source(task: str, max_digits: int, rng: np.random.Generator) -> str:
    if task == "reverse":
        n = int(rng.integers(1, max_digits + 1))
        return "".join(map(str, rng.integers(0, 10, size=n)))
    return f"{random_number(rng, max_digits)}+{random_number(rng, max_digits)}"


def solve(task: str, source: str) -> str:
    """The target string of a source string."""
    if task == "reverse":
        return source[::-1]
    a, b = source.split("+")
    return str(int(a) + int(b))


def is_held_out(source: str, holdout: float) -> bool:
    """Whether `source` is reserved for evaluation: the CRC-32 of its text (stable across runs and
    machines, unlike Python's hash) lies in the first `holdout` fraction of its range."""
    return zlib.crc32(source.encode()) < holdout * 2 ** 32


def training_pairs(task: str, max_digits: int, holdout: float, n: int, rng: np.random.Generator) -> list:
    """n (source, target) pairs drawn from `rng`, never a held-out source."""
    pairs = []
    while len(pairs) < n:
        source = random_source(task, max_digits, rng)
        if not is_held_out(source, holdout):
            pairs.append((source, solve(task, source)))
    return pairs


def held_out_pairs(task: str, max_digits: int, holdout: float, n: int, seed: int) -> list:
    """Up to n distinct held-out (source, target) pairs, the same for the same arguments."""
    rng = np.random.default_rng([seed, 1])  # not the training stream (though disjoint sources make it moot)
    found: dict[str, str] = {}
    for _ in range(int(50 * n / max(holdout, 1e-9)) + 1000):
        source = random_source(task, max_digits, rng)
        if source not in found and is_held_out(source, holdout):
            found[source] = solve(task, source)
            if len(found) == n:
                break
    if not found:
        raise SystemExit(f"no held-out {task} problems with --max-digits {max_digits} and --holdout {holdout}: "
                         f"raise --holdout or --max-digits")
    return list(found.items())


class Batch:
    """Padded token ids of (source, target) pairs: src (N, S), tgt_in = <bos> target (N, T + 1),
    tgt_out = target <eos> (N, T + 1), <pad> after the end of each sequence."""

    def __init__(self, pairs: list, device: str = "cpu"):
        sources = [tokenize(s) for s, _ in pairs]
        targets = [tokenize(t) for _, t in pairs]
        n, S, T = len(pairs), max(map(len, sources)), max(map(len, targets)) + 1
        src = np.full((n, S), PAD, dtype=np.int64)
        tgt_in = np.full((n, T), PAD, dtype=np.int64)
        tgt_out = np.full((n, T), PAD, dtype=np.int64)
        for i, (s, t) in enumerate(zip(sources, targets)):
            src[i, :len(s)] = s
            tgt_in[i, 0] = BOS
            tgt_in[i, 1:len(t) + 1] = t
            tgt_out[i, :len(t)] = t
            tgt_out[i, len(t)] = EOS
        self.pairs = pairs
        self.src, self.tgt_in, self.tgt_out = (mg.tensor(a, device=device) for a in (src, tgt_in, tgt_out))


# ---- the model -----------------------------------------------------------------------------------------


def sinusoidal_positions(length: int, d_model: int) -> np.ndarray:
    """(length, d_model) float32: sin / cos of position * 10000^(-2i / d_model) (Vaswani et al., 2017)."""
    position = np.arange(length)[:, None]
    frequency = np.exp(-math.log(10000.0) * np.arange(0, d_model, 2) / d_model)
    table = np.zeros((length, d_model))
    table[:, 0::2] = np.sin(position * frequency)
    table[:, 1::2] = np.cos(position * frequency)[:, :d_model // 2]
    return table.astype(np.float32)


class Seq2Seq(nn.Module):
    """Token embedding + sinusoidal positions -> nn.Transformer -> Linear to the vocabulary."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, nhead: int, encoder_layers: int,
                 decoder_layers: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)  # times sqrt(d_model) below: unit variance
        with mg.no_grad():
            self.embed.weight[PAD] = 0.0
        self.register_buffer("positions", mg.tensor(sinusoidal_positions(max_len, d_model)), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.transformer = nn.Transformer(d_model, nhead, encoder_layers, decoder_layers, dim_feedforward,
                                          dropout, batch_first=True, norm_first=True)
        self.head = nn.Linear(d_model, vocab_size)

    def embed_tokens(self, ids):
        """(N, L) ids -> (N, L, E)."""
        return self.dropout(self.embed(ids) * math.sqrt(self.d_model) + self.positions[:ids.shape[1]])

    def encode(self, src):
        """src (N, S) -> (memory (N, S, E), source padding mask (N, S), True at <pad>)."""
        src_padding = src == PAD
        memory = self.transformer.encoder(self.embed_tokens(src), src_key_padding_mask=src_padding)
        return memory, src_padding

    def decode(self, memory, src_padding, tgt):
        """tgt (N, T) ids, each position seeing itself and those before -> logits (N, T, vocab)."""
        T = tgt.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=tgt.device)
        out = self.transformer.decoder(self.embed_tokens(tgt), memory, tgt_mask=causal, tgt_is_causal=True,
                                       tgt_key_padding_mask=tgt == PAD, memory_key_padding_mask=src_padding)
        return self.head(out)

    def forward(self, src, tgt):
        """Teacher forcing: src (N, S), tgt (N, T) -> logits (N, T, vocab)."""
        return self.decode(*self.encode(src), tgt)


@mg.no_grad()
def greedy_decode(model, src, max_len: int) -> list[list[int]]:
    """Decode every source of src (N, S) greedily, one token per step, for at most max_len steps or
    until every sequence has emitted <eos>: per sequence, its tokens after <bos>, ending with <eos> when
    it emitted one (what came after is dropped). Once a sequence is done, <pad> is fed in its place."""
    memory, src_padding = model.encode(src)
    n = src.shape[0]
    tokens = np.full((n, 1), BOS, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    for _ in range(max_len):
        logits = model.decode(memory, src_padding, mg.tensor(tokens, device=src.device))  # (N, t, vocab)
        next_ids = np.where(done, PAD, logits[:, -1].argmax(dim=-1).cpu().numpy())
        tokens = np.concatenate([tokens, next_ids[:, None]], axis=1)
        done |= next_ids == EOS
        if done.all():
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[:row.index(EOS) + 1] if EOS in row else row)
    return out


@mg.no_grad()
def evaluate(model, batches: list[Batch], args) -> dict:
    """On the held-out set: teacher-forced loss per target token, exact match of greedy decoding, and
    every decoded sequence (as token ids)."""
    model.eval()
    loss_sum, tokens, correct, decoded = 0.0, 0, 0, []
    for batch in batches:
        logits = model(batch.src, batch.tgt_in)
        loss_sum += F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), batch.tgt_out.reshape(-1), ignore_index=PAD,
                                    reduction="sum").item()
        tokens += int((batch.tgt_out != PAD).sum().item())
        out = greedy_decode(model, batch.src, max_target_len(args.task, args.max_digits) + 1)
        correct += sum(ids == tokenize(t) + [EOS] for ids, (_, t) in zip(out, batch.pairs))
        decoded += out
    model.train()
    return {"loss": loss_sum / tokens, "exact": correct / len(decoded), "correct": correct, "total": len(decoded),
            "decoded": decoded}


# ---- the command line and the training loop ------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    """The defaults, overridden by the settings saved in the checkpoint (with --resume), overridden by
    the flags given on the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " With --resume, options not given take "
                                "the checkpointed run's values instead of the defaults shown.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out-dir", help="where checkpoints and plots go (default out/seq2seq)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/ckpt.safetensors")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default cpu")
    p.add_argument("--seed", type=int, help="default 1337")
    data = p.add_argument_group("data (fixed by the checkpoint when resuming)")
    data.add_argument("--task", choices=TASKS, help="default reverse")
    data.add_argument("--max-digits", type=int, help="digits per string (reverse) or per number (add), from 1; "
                      "default 12 (reverse), 4 (add)")
    data.add_argument("--holdout", type=float, help="fraction of all sources reserved for evaluation; default 0.05")
    data.add_argument("--eval-size", type=int, help="distinct held-out problems evaluated; default 1000")
    model = p.add_argument_group("model (its shape is fixed by the checkpoint when resuming)")
    model.add_argument("--d-model", type=int, help="default 64")
    model.add_argument("--nhead", type=int, help="default 4")
    model.add_argument("--encoder-layers", type=int, help="default 2")
    model.add_argument("--decoder-layers", type=int, help="default 2")
    model.add_argument("--dim-feedforward", type=int, help="default 256")
    model.add_argument("--dropout", type=float, help="default 0 (the data never repeats)")
    train = p.add_argument_group("training")
    train.add_argument("--batch-size", type=int, help="default 64")
    train.add_argument("--steps", type=int, help="train until this step; default 2000 (reverse), 3000 (add)")
    train.add_argument("--lr", type=float, help="peak learning rate (AdamW); default 2e-3")
    train.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay; default 1e-4")
    train.add_argument("--warmup-steps", type=int, help="linear warmup; default 100")
    train.add_argument("--weight-decay", type=float, help="default 0.01")
    train.add_argument("--label-smoothing", type=float, help="default 0")
    train.add_argument("--grad-clip", type=float, help="clip the gradient norm at this value (0: off); default 1")
    train.add_argument("--eval-interval", type=int, help="evaluate and checkpoint every N steps; default 250")
    train.add_argument("--eval-batch-size", type=int, help="default 500")
    p.add_argument("--examples", type=int, help="held-out decodings printed at the end; default 8")
    args = p.parse_args(argv)

    out_dir = args.out_dir or os.path.join("out", "seq2seq")
    task = args.task or (read_run_info(out_dir)["settings"]["task"] if args.resume else DEFAULTS["task"])
    settings = run_settings(p, args, dict(DEFAULTS, **TASK_DEFAULTS[task]), FIXED_BY_CHECKPOINT, out_dir)
    settings["out_dir"] = out_dir
    args = argparse.Namespace(**settings)
    if not 1 <= args.max_digits <= 18:  # int64 numbers
        p.error(f"--max-digits must be in 1..18, got {args.max_digits}")
    if not 0 < args.holdout < 1:
        p.error(f"--holdout must be in (0, 1), got {args.holdout}")
    for key in ("steps", "batch_size", "eval_interval", "eval_size", "eval_batch_size"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    if args.d_model % args.nhead or args.d_model % 2:
        p.error(f"--d-model {args.d_model} must be even and a multiple of --nhead {args.nhead}")
    return args


def make_model(args) -> Seq2Seq:
    max_len = max(max_source_len(args.task, args.max_digits), max_target_len(args.task, args.max_digits) + 1)
    return Seq2Seq(VOCAB_SIZE, max_len, args.d_model, args.nhead, args.encoder_layers, args.decoder_layers,
                   args.dim_feedforward, args.dropout)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    os.makedirs(args.out_dir, exist_ok=True)
    ckpt = checkpoint_path(args.out_dir)

    held_out = held_out_pairs(args.task, args.max_digits, args.holdout, args.eval_size, args.seed)
    eval_batches = [Batch(held_out[i:i + args.eval_batch_size], args.device)
                    for i in range(0, len(held_out), args.eval_batch_size)]

    mg.manual_seed(args.seed)
    model = make_model(args).to(args.device)
    decay, no_decay = [], []  # no weight decay on biases, LayerNorms and the embedding
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and not name.startswith("embed.") else no_decay).append(p)
    optimizer = mg.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    # All the randomness of training (batches, dropout masks) is drawn from `rng`, whose state the
    # checkpoint keeps: a resumed run continues exactly as an uninterrupted one.
    rng = np.random.default_rng(args.seed)
    # loss: per step; eval: [step, held-out loss, held-out exact match] rows; seconds: training time so far
    start, history = 0, {"loss": [], "eval": [], "seconds": 0.0}
    if args.resume:
        info = mg.load_checkpoint(ckpt, model, optimizer)
        start, history = info["step"], info["extra"]["history"]
        rng.bit_generator.state = info["extra"]["rng_state"]
        if start > args.steps:
            raise SystemExit(f"{ckpt} is at step {start}, past --steps {args.steps}")
        print(f"resumed from {ckpt} at step {start}")
    scheduler = WarmupCosineLR(optimizer, min(args.warmup_steps, args.steps - 1), args.steps, args.min_lr,
                               last_epoch=start - 1)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Seq2Seq: {n_params:,} parameters; d_model {args.d_model}, {args.nhead} heads, {args.encoder_layers}+"
          f"{args.decoder_layers} layers, feed-forward {args.dim_feedforward}")
    print(f"task {args.task}, 1..{args.max_digits} digits; held-out set: {len(held_out)} problems "
          f"({args.holdout:.0%} of all sources reserved), e.g. {held_out[0][0]} -> {held_out[0][1]}")

    def evaluate_and_save(step: int) -> dict:
        result = evaluate(model, eval_batches, args)
        history["eval"].append([step, result["loss"], result["exact"]])
        history["seconds"] = seconds_before + time.perf_counter() - started
        progress.write(f"step {step}: held-out loss {result['loss']:.4g}, exact match {result['exact']:.2%} "
                       f"({result['correct']}/{result['total']})")
        run_info = {"settings": vars(args), "history": history, "rng_state": rng.bit_generator.state}
        mg.save_checkpoint(ckpt, model, optimizer, step=step, extra=run_info)
        return result

    progress = Progress(start, args.steps)
    seconds_before, started = history["seconds"], time.perf_counter()
    result = None
    for step in range(start, args.steps):
        if step % args.eval_interval == 0 and (step == 0 or step > start):
            evaluate_and_save(step)
        t0 = time.perf_counter()
        mg.manual_seed(int(rng.integers(2 ** 62)))  # this step's dropout masks
        batch = Batch(training_pairs(args.task, args.max_digits, args.holdout, args.batch_size, rng), args.device)
        logits = model(batch.src, batch.tgt_in)  # (N, T, vocab)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE), batch.tgt_out.reshape(-1), ignore_index=PAD,
                               label_smoothing=args.label_smoothing)
        lr = optimize(loss, model, optimizer, scheduler, args.grad_clip)
        history["loss"].append(loss.item())
        progress.update(step + 1, history["loss"][-1], lr, args.batch_size / (time.perf_counter() - t0), "seq/s")
    progress.close()
    if start < args.steps or not history["eval"]:
        result = evaluate_and_save(args.steps)
    else:  # nothing to train: evaluate the checkpoint for the report below
        result = evaluate(model, eval_batches, args)
    elapsed = time.perf_counter() - started
    trained = args.steps - start
    print(f"trained {trained} steps in {elapsed:.1f} s with evaluations "
          f"({trained * args.batch_size / max(elapsed, 1e-9):,.0f} sequences/s); {history['seconds']:.1f} s "
          f"of training in all")
    print(f"checkpoint: {ckpt}")
    rows = [[step, loss, 1.0 - exact] for step, loss, exact in history["eval"]]
    plot_losses(history["loss"], rows, ["held-out loss", "held-out error rate (1 - exact match)"],
                f"nn.Transformer on '{args.task}', 1..{args.max_digits} digits",
                os.path.join(args.out_dir, "loss.png"), ylabel="cross-entropy (nats / token); error rate")

    wrong = {i for i, (ids, (_, t)) in enumerate(zip(result["decoded"], held_out)) if ids != tokenize(t) + [EOS]}
    shown = list(range(min(args.examples, len(held_out))))
    shown += [i for i in sorted(wrong) if i not in shown][:args.examples]
    if shown:
        print("---------- greedy decoding of held-out problems ----------")
        width = max(len(held_out[i][0]) for i in shown)
        for i in shown:
            source, target = held_out[i]
            ids = result["decoded"][i]
            ended = ids[-1:] == [EOS]
            text = (detokenize(ids[:-1] if ended else ids) or "(empty)") + ("" if ended else " (no <eos>)")
            mark = "ok" if i not in wrong else f"WRONG, expected {target}"
            print(f"{source:>{width}} -> {text}   {mark}")
    print(f"final held-out exact match: {result['exact']:.2%} ({result['correct']}/{result['total']})")


if __name__ == "__main__":
    sys.exit(main())
