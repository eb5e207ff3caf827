"""Train a character-level GPT on Tiny Shakespeare (bundled with minigrad), as Karpathy's nanoGPT does.

    python examples/train_gpt.py --preset demo                # the README demo: ~half a minute on 2 cores
    python examples/train_gpt.py --preset cpu-tiny            # nanoGPT's CPU recipe: val loss ~1.90
    python examples/train_gpt.py --preset baby --device cuda  # nanoGPT's shakespeare_char: ~1.47 on a GPU
    python examples/train_gpt.py --preset baby --device cuda --amp bf16   # matmuls in bfloat16 (tensor cores)
    python examples/train_gpt.py --preset cpu-tiny --max-iters 3000 --resume   # train on from the checkpoint
    python examples/sample_gpt.py --out-dir out/gpt-cpu-tiny  # more text from the trained model

Every setting of a preset can be overridden (`--n-layer 2 --lr 3e-4 ...`). The run writes to --out-dir:
ckpt.safetensors (model, optimizer, step, settings and the state of the random generator, saved at every
evaluation and at the end), tokenizer.json and loss.png (with matplotlib). All randomness (init, batches,
dropout) follows --seed, so two runs with the same settings print the same numbers, and a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

import minigrad as mg
from minigrad.data import CharTokenizer, get_batch, load_tinyshakespeare, train_val_split
from minigrad.models import GPT, GPTConfig
from minigrad.optim.lr_scheduler import WarmupCosineLR

from common import Progress, check_device, checkpoint_path, optimize, plot_losses, read_run_info, run_settings


MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias")
SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias")
# nanoGPT's shakespeare_char settings (AdamW betas (0.9, 0.99), weight decay 0.1, clipping at 1.0,
# 100 warmup iterations then cosine decay to lr / 10), at three sizes.
COMMON = dict(bias=False, lr=1e-3, min_lr=1e-4, warmup_iters=100, weight_decay=0.1, beta1=0.9, beta2=0.99,
              grad_clip=1.0, temperature=0.8, top_k=200)
PRESETS = {
    # Small enough to train in about a minute on a laptop, big enough to write Shakespeare-shaped text.
    "demo": dict(COMMON, n_layer=3, n_head=4, n_embd=96, block_size=64, batch_size=16, dropout=0.0,
                 max_iters=600, lr=2e-3, min_lr=2e-4, warmup_iters=50, eval_interval=200, eval_iters=10,
                 sample_tokens=300),
    # nanoGPT's README recipe for a CPU (it reports val loss 1.88 after 2000 iterations; this run and the
    # same recipe in PyTorch both give 1.90-1.92 depending on the seed: bench/RESULTS.md).
    "cpu-tiny": dict(COMMON, n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0,
                     max_iters=2000, eval_interval=250, eval_iters=20, sample_tokens=500),
    # config/train_shakespeare_char.py: val loss about 1.47 on one GPU.
    "baby": dict(COMMON, n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2,
                 max_iters=5000, eval_interval=250, eval_iters=200, sample_tokens=500),
}


def parse_args(argv=None) -> argparse.Namespace:
    """The preset's settings, overridden by those saved in the checkpoint (with --resume), overridden by
    the flags given on the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " Options without a default shown take the "
                                "preset's value (or, with --resume, the checkpointed run's).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-tiny")
    p.add_argument("--out-dir", help="where checkpoints and plots go (default out/gpt-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/ckpt.safetensors")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default cpu")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"],
                   help="mixed precision: the forward pass under autocast in bfloat16, or float16 with a GradScaler "
                        "(default off)")
    p.add_argument("--seed", type=int, help="default 1337")
    model = p.add_argument_group("model (its shape is fixed by the checkpoint when resuming)")
    model.add_argument("--n-layer", type=int)
    model.add_argument("--n-head", type=int)
    model.add_argument("--n-embd", type=int)
    model.add_argument("--block-size", type=int, help="context length in characters")
    model.add_argument("--dropout", type=float)
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, help="biases in Linear and LayerNorm")
    train = p.add_argument_group("training")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--max-iters", type=int, help="train until this iteration")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay")
    train.add_argument("--warmup-iters", type=int)
    train.add_argument("--lr-decay-iters", type=int, help="where the cosine decay ends (default --max-iters)")
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--beta1", type=float)
    train.add_argument("--beta2", type=float)
    train.add_argument("--grad-clip", type=float, help="clip the gradient norm at this value (0: off)")
    train.add_argument("--eval-interval", type=int, help="evaluate and checkpoint every N iterations")
    train.add_argument("--eval-iters", type=int, help="batches per split in an evaluation")
    sample = p.add_argument_group("the sample printed at the end")
    sample.add_argument("--sample-tokens", type=int, help="characters to generate (0: none)")
    sample.add_argument("--temperature", type=float)
    sample.add_argument("--top-k", type=int)
    args = p.parse_args(argv)

    out_dir = args.out_dir or os.path.join("out", f"gpt-{args.preset}")
    defaults = dict(PRESETS[args.preset], device="cpu", amp="off", seed=1337, lr_decay_iters=None)  # None: max_iters
    settings = run_settings(p, args, defaults, SHAPE_KEYS, out_dir)
    settings["out_dir"] = out_dir
    return argparse.Namespace(**settings)


def load_model(out_dir: str, device: str = "cpu") -> tuple[GPT, CharTokenizer, dict]:
    """The GPT, its tokenizer and the run info saved in `out_dir` by this script."""
    info = read_run_info(out_dir)
    model = GPT(GPTConfig(**info["config"])).to(device)
    mg.load_checkpoint(checkpoint_path(out_dir), model)
    return model, CharTokenizer.load(os.path.join(out_dir, "tokenizer.json")), info


@mg.no_grad()
def estimate_loss(model: GPT, splits: dict, args, seed: int) -> dict:
    """Mean loss over args.eval_iters batches of each split, in eval mode. The batches come from a
    generator seeded the same way at every evaluation, so successive evaluations see the same text."""
    model.eval()
    out = {}
    for name, data in splits.items():
        rng = np.random.default_rng(seed)
        losses = [model(*get_batch(data, args.block_size, args.batch_size, rng))[1].item()
                  for _ in range(args.eval_iters)]
        out[name] = float(np.mean(losses))
    model.train()
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    os.makedirs(args.out_dir, exist_ok=True)
    ckpt = checkpoint_path(args.out_dir)

    text = load_tinyshakespeare()
    tokenizer = CharTokenizer.from_text(text)
    tokenizer.save(os.path.join(args.out_dir, "tokenizer.json"))
    train_data, val_data = (d.to(args.device) for d in train_val_split(tokenizer.encode(text)))
    splits = {"train": train_data, "val": val_data}

    mg.manual_seed(args.seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, **{k: getattr(args, k) for k in MODEL_KEYS})
    model = GPT(config).to(args.device)
    optimizer = model.configure_optimizers(args.weight_decay, args.lr, (args.beta1, args.beta2))
    # All the randomness of training (batches, dropout masks) is drawn from `rng`, whose state the
    # checkpoint keeps: a resumed run continues exactly as an uninterrupted one.
    rng = np.random.default_rng(args.seed)
    # loss: per iteration; eval: [iteration, train loss, val loss] rows; seconds: training time so far
    start, history = 0, {"loss": [], "eval": [], "seconds": 0.0}
    if args.resume:
        info = mg.load_checkpoint(ckpt, model, optimizer)
        extra = info["extra"]
        start, history = info["step"], extra["history"]
        rng.bit_generator.state = extra["rng_state"]
        if start > args.max_iters:
            raise SystemExit(f"{ckpt} is at iteration {start}, past --max-iters {args.max_iters}")
        print(f"resumed from {ckpt} at iteration {start}")
    decay_iters = args.lr_decay_iters or args.max_iters
    scheduler = WarmupCosineLR(optimizer, min(args.warmup_iters, decay_iters - 1), decay_iters, args.min_lr,
                               last_epoch=start - 1)
    amp_dtype = {"off": None, "bf16": mg.bfloat16, "fp16": mg.float16}[args.amp]
    # float16's range needs loss scaling; bfloat16 has float32's. (The scale starts afresh on --resume.)
    scaler = mg.amp.GradScaler(args.device) if args.amp == "fp16" else None
    print(f"GPT: {model.num_params():,} parameters (without the position embedding), {config}")
    print(f"data: {train_data.shape[0]:,} train / {val_data.shape[0]:,} val characters, vocab {config.vocab_size}")

    def evaluate_and_save(it: int) -> None:
        losses = estimate_loss(model, splits, args, seed=args.seed + 1)
        history["eval"].append([it, losses["train"], losses["val"]])
        history["seconds"] = seconds_before + time.perf_counter() - started
        progress.write(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        run_info = {"settings": vars(args), "config": dataclasses.asdict(config), "history": history,
                    "rng_state": rng.bit_generator.state}
        mg.save_checkpoint(ckpt, model, optimizer, step=it, extra=run_info)

    progress = Progress(start, args.max_iters)
    tokens_per_iter = args.batch_size * args.block_size
    seconds_before, started = history["seconds"], time.perf_counter()
    for it in range(start, args.max_iters):
        if it % args.eval_interval == 0 and (it == 0 or it > start):
            evaluate_and_save(it)
        t0 = time.perf_counter()
        mg.manual_seed(int(rng.integers(2**62)))  # this iteration's dropout masks
        x, y = get_batch(train_data, args.block_size, args.batch_size, rng)  # (B, T) each
        with mg.autocast(args.device, dtype=amp_dtype, enabled=amp_dtype is not None):
            _, loss = model(x, y)
        lr = optimize(loss, model, optimizer, scheduler, args.grad_clip, scaler)
        history["loss"].append(loss.item())
        progress.update(it + 1, history["loss"][-1], lr, tokens_per_iter / (time.perf_counter() - t0))
    progress.close()
    if start < args.max_iters or not history["eval"]:
        evaluate_and_save(args.max_iters)
    elapsed = time.perf_counter() - started
    trained = args.max_iters - start
    print(f"trained {trained} iterations in {elapsed:.1f} s with evaluations "
          f"({trained * tokens_per_iter / elapsed:,.0f} tokens/s); final train loss {history['eval'][-1][1]:.4f}, "
          f"val loss {history['eval'][-1][2]:.4f}")
    print(f"checkpoint: {ckpt}")
    plot_losses(history["loss"], history["eval"], ["train", "val"], "GPT on Tiny Shakespeare",
                os.path.join(args.out_dir, "loss.png"), ylabel="cross-entropy (nats / char)")

    if args.sample_tokens:
        model.eval()
        start_ids = tokenizer.encode("\n").reshape(1, -1).to(args.device)
        out = model.generate(start_ids, args.sample_tokens, temperature=args.temperature, top_k=args.top_k)
        print("---------- sample ----------")
        print(tokenizer.decode(out[0, 1:]))


if __name__ == "__main__":
    sys.exit(main())
