"""Write text with a GPT trained by examples/train_gpt.py.

    python examples/sample_gpt.py --out-dir out/gpt-cpu-tiny
    python examples/sample_gpt.py --out-dir out/gpt-cpu-tiny --start "ROMEO:" --num-samples 3 --output romeo.txt

Loads <out-dir>/ckpt.safetensors (the model and its config) and <out-dir>/tokenizer.json, then samples
--max-new-tokens characters after --start, --num-samples times, with a KV cache.
"""
from __future__ import annotations

import argparse
import os
import sys

import minigrad as mg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # train_gpt.py, next to this file
from common import check_device  # noqa: E402
from train_gpt import load_model  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.path.join("out", "gpt-cpu-tiny"), help="the training run's directory")
    p.add_argument("--start", default="\n", help="the prompt (characters from the training text)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="below 1: safer, above 1: wilder")
    p.add_argument("--top-k", type=int, default=200, help="sample among the k likeliest characters only")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--output", help="write the samples to this file instead of the terminal")
    args = p.parse_args(argv)
    if not args.start:
        p.error("--start must have at least one character")

    check_device(args.device)
    model, tokenizer, info = load_model(args.out_dir, args.device)
    model.eval()
    mg.manual_seed(args.seed)
    prompt = tokenizer.encode(args.start).reshape(1, -1).to(args.device)  # (1, T)
    samples = []
    for _ in range(args.num_samples):
        out = model.generate(prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k)
        samples.append(tokenizer.decode(out[0]))
    text = "\n---------------\n".join(samples) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.num_samples} sample(s) of {args.max_new_tokens} characters to {args.output} "
              f"(model at iteration {info['history']['eval'][-1][0]}, val loss {info['history']['eval'][-1][2]:.4f})")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
