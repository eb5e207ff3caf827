"""Pretrain a small BERT by masked-language modeling on Tiny Shakespeare (bundled with minigrad).

    python examples/bert_pretrain.py                            # the default run (see bench/RESULTS.md)
    python examples/bert_pretrain.py --max-iters 3000 --resume  # train on from the checkpoint
    python examples/bert_finetune.py --model out/bert-pretrain/hf   # fine-tune the result on a task

Data: the text's first 90% trains, the last 10% validates (nanoGPT's split). A WordPiece vocabulary of
--vocab-size entries is learned on the training part with the `tokenizers` package. An example is a
random window of --seq-len - 2 tokens, wrapped as [CLS] ... [SEP].

Masking, BERT's recipe: 15% of the tokens are chosen for prediction; of those 80% become [MASK], 10% a
random token and 10% stay as they are, so the model cannot tell which visible tokens it will be asked
about and must keep a good representation of every token. The loss is the cross-entropy on the chosen
tokens only, and only their logits are computed (the vocabulary projection is the largest matmul).

The run writes to --out-dir: ckpt.safetensors (model, optimizer, step, settings and the state of the
random generator, at every evaluation), the tokenizer files, hf/ (model and tokenizer in the Hugging Face
layout, readable by transformers' BertForMaskedLM) and loss.png (with matplotlib). Every random draw
follows --seed, and a resumed run continues exactly as the uninterrupted one. One caveat: the WordPiece
trainer of `tokenizers` breaks ties between equally frequent merges in hash-map order (tokenizers issue
#1794), so two fresh runs may learn slightly different vocabularies; --tokenizer DIR reuses a saved one
(e.g. --tokenizer out/bert-pretrain), and with the same vocabulary a rerun prints the same numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import minigrad as mg
from minigrad.data.text import load_tinyshakespeare
from minigrad.models import BertConfig, BertForMaskedLM, BertTokenizer
from minigrad.nn import functional as F
from minigrad.optim.lr_scheduler import WarmupCosineLR

from common import Progress, check_device, checkpoint_path, optimize, plot_losses, read_run_info

IGNORE = -100  # label of the tokens not chosen for prediction (cross_entropy's ignore_index)
FIXED_BY_CHECKPOINT = ("vocab_size", "seq_len", "hidden", "layers", "heads", "intermediate", "dropout", "max_chars")
FILL_MASK_DEMO = ["To be, or not to [MASK], that is the question.", "My lord, the [MASK] is dead.",
                  "O Romeo, Romeo! wherefore art thou [MASK]?"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out-dir", default=os.path.join("out", "bert-pretrain"))
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/ckpt.safetensors "
                   "(model and data settings then come from the checkpoint)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--max-chars", type=int, default=0, help="use only the first N characters (0: all; for tests)")
    p.add_argument("--vocab-size", type=int, default=4096, help="WordPiece vocabulary size")
    p.add_argument("--tokenizer", help="use the tokenizer saved in this directory instead of training one")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per example, [CLS] and [SEP] included")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--mask-prob", type=float, default=0.15, help="fraction of tokens chosen for prediction")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-iters", type=int, default=1000)
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW)")
    p.add_argument("--min-lr", type=float, default=5e-5, help="learning rate at the end of the cosine decay")
    p.add_argument("--warmup-iters", type=int, default=100)
    p.add_argument("--lr-decay-iters", type=int, help="where the cosine decay ends (default --max-iters)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm (0: off)")
    p.add_argument("--eval-interval", type=int, default=200, help="evaluate and checkpoint every N iterations")
    p.add_argument("--eval-iters", type=int, default=20, help="validation batches per evaluation")
    args = p.parse_args(argv)
    if args.resume:
        saved = read_run_info(args.out_dir)["settings"]
        for key in FIXED_BY_CHECKPOINT:
            setattr(args, key, saved[key])
    return args


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, mask_id: int, vocab_size: int, special_ids,
                mask_prob: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masking of a batch of token ids (B, T) -> (inputs (B, T), labels (B, T)).

    Each non-special token is chosen with probability mask_prob (at least one per batch); a chosen
    token's label is its id, every other label is IGNORE. Of the chosen inputs, 80% become [MASK], 10%
    a uniformly random token, 10% stay unchanged."""
    candidates = ~np.isin(ids, special_ids)
    chosen = candidates & (rng.random(ids.shape) < mask_prob)
    if not chosen.any():  # an empty loss would be 0/0
        chosen.flat[rng.choice(np.flatnonzero(candidates))] = True
    labels = np.where(chosen, ids, IGNORE)
    action = rng.random(ids.shape)  # one uniform draw per position picks its fate
    inputs = ids.copy()
    inputs[chosen & (action < 0.8)] = mask_id
    randomized = chosen & (action >= 0.8) & (action < 0.9)
    inputs[randomized] = rng.integers(0, vocab_size, size=int(randomized.sum()))
    return inputs, labels


def windows(stream: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator, cls_id: int,
            sep_id: int) -> np.ndarray:
    """batch_size random windows of seq_len - 2 tokens of `stream`, each as [CLS] window [SEP]: (B, seq_len)."""
    n = seq_len - 2
    starts = rng.integers(0, len(stream) - n, size=batch_size)
    body = stream[starts[:, None] + np.arange(n)]  # (B, n)
    ends = np.full((batch_size, 1), 1)
    return np.concatenate([ends * cls_id, body, ends * sep_id], axis=1)


def mlm_loss(model: BertForMaskedLM, inputs: np.ndarray, labels: np.ndarray, device: str,
             with_accuracy: bool = False) -> tuple[mg.Tensor, float | None]:
    """Cross-entropy over the chosen tokens (logits computed only there), and (with_accuracy, for the
    evaluations: not per training step) their top-1 accuracy."""
    chosen = labels != IGNORE
    logits = model(mg.tensor(inputs, device=device), positions=mg.tensor(chosen, device=device))  # (N, V)
    targets = mg.tensor(labels[chosen], device=device)  # (N,)
    return F.cross_entropy(logits, targets), mg.metrics.accuracy(logits, targets) if with_accuracy else None


def main(argv=None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    os.makedirs(args.out_dir, exist_ok=True)
    ckpt = checkpoint_path(args.out_dir)
    t_start = time.perf_counter()

    text = load_tinyshakespeare()
    text = text[:args.max_chars] if args.max_chars else text
    split = int(0.9 * len(text))
    if args.resume or args.tokenizer:  # resuming: the vocabulary the checkpoint was trained with
        tokenizer = BertTokenizer.from_pretrained(args.out_dir if args.resume else args.tokenizer)
    else:
        tokenizer = BertTokenizer.train([text[:split]], vocab_size=args.vocab_size, model_max_length=args.seq_len)
    tokenizer.save_pretrained(args.out_dir)
    train_ids, val_ids = (np.array(tokenizer.encode_stream(part), dtype=np.int64) for part in (text[:split], text[split:]))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    masking = dict(mask_id=tokenizer.mask_token_id, vocab_size=tokenizer.vocab_size,
                   special_ids=tokenizer.special_ids, mask_prob=args.mask_prob)
    print(f"data: {len(train_ids):,} train / {len(val_ids):,} val tokens, WordPiece vocabulary "
          f"{tokenizer.vocab_size} (trained in {time.perf_counter() - t_start:.1f} s)")

    # The validation batches and their masks are drawn once: every evaluation scores the same predictions.
    val_rng = np.random.default_rng(args.seed + 1)
    val_batches = [mask_tokens(windows(val_ids, args.batch_size, args.seq_len, val_rng, cls_id, sep_id),
                               val_rng, **masking) for _ in range(args.eval_iters)]

    mg.manual_seed(args.seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=args.intermediate,
                        hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout,
                        max_position_embeddings=args.seq_len, pad_token_id=tokenizer.pad_token_id)
    model = BertForMaskedLM(config).to(args.device).train()
    optimizer = mg.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)  # all training randomness: windows, masks, dropout seeds
    start, history = 0, {"loss": [], "eval": [], "seconds": 0.0}  # eval rows: [step, val loss, val accuracy]
    if args.resume:
        info = mg.load_checkpoint(ckpt, model, optimizer)
        start, history = info["step"], info["extra"]["history"]
        rng.bit_generator.state = info["extra"]["rng_state"]
        print(f"resumed from {ckpt} at iteration {start}")
    decay_iters = args.lr_decay_iters or args.max_iters
    scheduler = WarmupCosineLR(optimizer, min(args.warmup_iters, decay_iters - 1), decay_iters, args.min_lr,
                               last_epoch=start - 1)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"BertForMaskedLM: {n_params / 1e6:.2f}M parameters, {args.layers} layers, hidden {args.hidden}, "
          f"{args.heads} heads, {args.seq_len} tokens per example")

    @mg.no_grad()
    def evaluate_and_save(step: int) -> None:
        model.eval()
        scores = [mlm_loss(model, inputs, labels, args.device, with_accuracy=True) for inputs, labels in val_batches]
        model.train()
        loss, acc = float(np.mean([s[0].item() for s in scores])), float(np.mean([s[1] for s in scores]))
        history["eval"].append([step, loss, acc])
        history["seconds"] = seconds_before + time.perf_counter() - started
        progress.write(f"step {step}: val MLM loss {loss:.4f}, masked-token accuracy {acc:.3f}")
        extra = {"settings": vars(args), "history": history, "rng_state": rng.bit_generator.state}
        mg.save_checkpoint(ckpt, model, optimizer, step=step, extra=extra)

    progress = Progress(start, args.max_iters)
    seconds_before, started = history["seconds"], time.perf_counter()
    for it in range(start, args.max_iters):
        if it % args.eval_interval == 0 and (it == 0 or it > start):
            evaluate_and_save(it)
        t0 = time.perf_counter()
        mg.manual_seed(int(rng.integers(2**62)))  # this step's dropout masks
        inputs, labels = mask_tokens(windows(train_ids, args.batch_size, args.seq_len, rng, cls_id, sep_id),
                                     rng, **masking)
        loss, _ = mlm_loss(model, inputs, labels, args.device)
        lr = optimize(loss, model, optimizer, scheduler, args.grad_clip)
        history["loss"].append(loss.item())
        progress.update(it + 1, history["loss"][-1], lr, inputs.size / (time.perf_counter() - t0))
    progress.close()
    if start < args.max_iters or not history["eval"]:
        evaluate_and_save(args.max_iters)
    step, val_loss, val_acc = history["eval"][-1]
    print(f"trained to step {step} in {history['seconds']:.1f} s of training (this run: "
          f"{time.perf_counter() - t_start:.1f} s wall); val MLM loss {val_loss:.4f} "
          f"(uniform guess: {np.log(tokenizer.vocab_size):.2f}), masked-token accuracy {val_acc:.3f}")

    hf_dir = os.path.join(args.out_dir, "hf")
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    print(f"checkpoint: {ckpt}; Hugging Face layout: {hf_dir}")
    plot_losses(history["loss"], [row[:2] for row in history["eval"]], ["val"], "BERT masked-LM on Tiny Shakespeare",
                os.path.join(args.out_dir, "loss.png"))
    fill_mask_demo(model.eval(), tokenizer, args.device)


@mg.no_grad()
def fill_mask_demo(model: BertForMaskedLM, tokenizer: BertTokenizer, device: str, k: int = 5) -> None:
    """The model's top-k guesses for the [MASK] of each demo sentence."""
    for sentence in FILL_MASK_DEMO:
        batch = tokenizer(sentence, device=device)
        where = batch["input_ids"] == tokenizer.mask_token_id
        if not where.any().item():
            print(f"{sentence}\n    (the [MASK] lies beyond the model's {batch['input_ids'].shape[1]} tokens)")
            continue
        probs = model(**batch, positions=where).softmax(-1)[0].cpu().numpy()  # (V,)
        top = np.argsort(probs)[::-1][:k]
        guesses = ", ".join(f"{tokenizer.decode([i])} ({probs[i]:.2f})" for i in top)
        print(f"{sentence}\n    -> {guesses}")


if __name__ == "__main__":
    sys.exit(main())
