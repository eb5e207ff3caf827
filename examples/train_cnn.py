"""Train a small convolutional network on Fashion-MNIST: conv / BatchNorm / max-pool / dropout, 91.5% test accuracy.

    python examples/train_cnn.py                              # the default run: 91.5% test accuracy (see below)
    python examples/train_cnn.py --device cuda                # the same on a GPU
    python examples/train_cnn.py --epochs 3 --lr-decay-epochs 6 && \\
        python examples/train_cnn.py --resume --epochs 6      # stop after 3 of 6 epochs, then train on
    python examples/train_cnn.py --data-dir ~/data/fashion-mnist     # the IDX files elsewhere
    python examples/train_cnn.py --train-subset 5000 --test-subset 1000 --epochs 2   # a quick look

Data: Fashion-MNIST (70,000 28x28 grayscale images of clothes in 10 classes: 60,000 to train on, 10,000
to test on), read from the four IDX files (gzip'd or not) of the Debian package dataset-fashion-mnist in
/usr/share/datasets/fashion-mnist, or from --data-dir. When that directory does not exist the script says
so and falls back to scikit-learn's bundled digits (1,797 8x8 images of handwritten digits, split 80/20 with
the class proportions kept): a smaller and different task, which the same network learns at 8x8.
Pixels are scaled to [0, 1] and standardized with the training set's mean and standard deviation.

Model: one block per --channels entry, each Conv2d 3x3 (padding 1) -> BatchNorm2d -> ReLU -> MaxPool2d 2
(halving the image), then Flatten -> Dropout -> Linear(--hidden) -> ReLU -> Dropout -> Linear(10).
Training: AdamW (weight decay on the conv and linear weights only), linear warmup then cosine decay of the
learning rate per step, shuffled mini-batches; the test split is evaluated after every epoch.

The default run (4 epochs; about 4.5 minutes of CPU time with one thread) ends at 91.6% test accuracy on
Fashion-MNIST (91.5% with --seed 1), and at 96% on the digits. It writes to --out-dir (default out/cnn):
ckpt.safetensors (model, optimizer, step, settings, the normalization, the history and the state of the
random generator; saved after every epoch) and loss.png (with matplotlib). All randomness (init, shuffling,
dropout) follows --seed, so two runs with the same settings print the same numbers, and a run resumed from
a checkpoint continues exactly as the uninterrupted run would have (an interrupted run resumes from its last
finished epoch). The learning-rate schedule spans --lr-decay-epochs (default: the --epochs of the current
invocation): to stop a run early and resume it exactly, give the first invocation --lr-decay-epochs the
final --epochs, as in the example above; resuming a finished run with a larger --epochs instead stretches
the cosine to the new length, so the learning rate goes back up to where that longer schedule is.
"""
from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
import time
import zlib

import numpy as np

import minigrad as mg
from minigrad import metrics, nn
from minigrad.data import DataLoader, TensorDataset
from minigrad.nn import functional as F
from minigrad.optim.lr_scheduler import WarmupCosineLR

from common import Progress, check_device, checkpoint_path, optimize, plot_losses, read_run_info, run_settings

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DEFAULTS = dict(seed=0, device="cpu", data_dir=DEFAULT_DATA_DIR, channels=[32, 64], hidden=128, dropout=0.3,
                epochs=4, lr_decay_epochs=None, batch_size=128, lr=2e-3, min_lr=2e-5, warmup_steps=100,
                weight_decay=0.05, eval_batch_size=1000, train_subset=0, test_subset=0)
SHAPE_KEYS = ("channels", "hidden")  # fixed by the checkpoint's weights
WHERE_KEYS = ("data_dir", "device")  # where a run trains, not how: not taken from the checkpoint on --resume


# ---- data ----------------------------------------------------------------------------------------------

# The IDX format (http://yann.lecun.com/exdb/mnist/): a big-endian header, then the values in C order.
# Magic number: two zero bytes, a type code, the number of dimensions; then one uint32 size per dimension.
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """The array stored in the IDX file at `path` (gzip'd or not), in native byte order, shaped as its
    header says. Raises ValueError naming the file if it is not an IDX file or its size does not match
    its header (a truncated or corrupt file)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # the gzip magic number
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt gzip data ({err})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zeros, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zeros != 0 or type_code not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file: magic number 0x{raw[:4].hex()} (expected 0x0000, a type code "
                         f"among {', '.join(f'0x{c:02x}' for c in IDX_TYPES)}, then the number of dimensions)")
    data_start = 4 + 4 * ndim
    if len(raw) < data_start:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", raw[4:data_start])
    dtype = IDX_TYPES[type_code]
    expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: the header says {dtype.name} values of shape {shape} ({expected:,} bytes with "
                         f"the header), but the file holds {len(raw):,} bytes: truncated or corrupt")
    return np.frombuffer(raw, dtype, offset=data_start).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_path(data_dir: str, name: str) -> str:
    for candidate in (name + ".gz", name):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    raise SystemExit(f"{data_dir} holds no {name}.gz or {name}: a Fashion-MNIST directory has "
                     f"train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                     f"t10k-labels-idx1-ubyte, each gzip'd or not")


def load_fashion_mnist(data_dir: str) -> dict:
    """{'train': (images, labels), 'test': (images, labels)}: uint8 (N, 28, 28) images, int64 (N,) labels."""
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_idx_path(data_dir, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_path(data_dir, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{data_dir}: {split} images of shape {images.shape} and labels of shape "
                             f"{labels.shape} do not make a dataset of (N, H, W) images and (N,) labels")
        if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_CLASSES)):
            raise ValueError(f"{data_dir}: {split} labels outside 0..{len(FASHION_CLASSES) - 1}")
        splits[split] = (images, labels)
    return splits


def load_digits_split() -> dict:
    """scikit-learn's digits as {'train': ..., 'test': ...}: float (N, 8, 8) images in [0, 16], int64 labels;
    a fixed stratified 80/20 split (the same test set whatever --seed)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("the fallback dataset needs scikit-learn (pip install scikit-learn)") from None
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(digits.images, digits.target.astype(np.int64),
                                                        test_size=0.2, stratify=digits.target, random_state=0)
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def load_data(args, norm: dict | None = None) -> tuple[str, tuple, dict, dict]:
    """(dataset name, class names, {split: (x float32 (N, 1, H, W) standardized, y int64 (N,))} as tensors
    on the CPU, normalization {'scale', 'mean', 'std'}). The normalization is `norm` if given (a resumed
    run keeps its own), else the training images' pixel mean and standard deviation after scaling."""
    if os.path.isdir(args.data_dir):
        name, classes, scale = "fashion-mnist", FASHION_CLASSES, 255.0
        try:
            splits = load_fashion_mnist(args.data_dir)
        except ValueError as err:
            raise SystemExit(f"cannot load Fashion-MNIST: {err}") from None
        print(f"data: Fashion-MNIST from {args.data_dir}")
    else:
        name, classes, scale = "digits", tuple(str(d) for d in range(10)), 16.0
        print(f"Fashion-MNIST not found: no directory {args.data_dir} (install the Debian package "
              f"dataset-fashion-mnist, or pass --data-dir).\nFalling back to scikit-learn's digits: 8x8 "
              f"images of handwritten digits, a smaller and easier task than Fashion-MNIST.")
        splits = load_digits_split()
    for split, limit in (("train", args.train_subset), ("test", args.test_subset)):
        if limit:  # the first `limit` samples (the files' order is already random)
            splits[split] = tuple(a[:limit] for a in splits[split])
    if norm is None:
        pixels = splits["train"][0].astype(np.float64) / scale
        norm = {"scale": scale, "mean": float(pixels.mean()), "std": float(pixels.std()) or 1.0}
    tensors = {}
    for split, (images, labels) in splits.items():
        x = ((images.astype(np.float32) / scale - norm["mean"]) / norm["std"]).astype(np.float32)
        tensors[split] = (mg.tensor(x[:, None]), mg.tensor(labels))  # (N, 1, H, W): one input channel
    return name, classes, tensors, norm


# ---- model ---------------------------------------------------------------------------------------------

def make_model(image_size: tuple[int, int], channels: list[int], hidden: int, dropout: float,
               num_classes: int) -> nn.Sequential:
    """Conv blocks (Conv 3x3 -> BatchNorm -> ReLU -> MaxPool 2), then a two-layer classifier with dropout."""
    layers, c_in, (h, w) = [], 1, image_size
    for c_out in channels:
        if h < 2 or w < 2:
            raise SystemExit(f"--channels: {len(channels)} blocks halve the {image_size[0]}x{image_size[1]} "
                             f"images below 1x1; use fewer")
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),  # the BatchNorm's bias replaces the conv's
                   nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, h, w = c_out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * h * w, hidden), nn.ReLU(), nn.Dropout(dropout),
               nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def make_optimizer(model: nn.Module, args) -> mg.optim.AdamW:
    """AdamW with weight decay on the conv and linear weights, none on biases and BatchNorm parameters."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return mg.optim.AdamW(groups, lr=args.lr)


@mg.no_grad()
def evaluate(model: nn.Module, x: mg.Tensor, y: mg.Tensor, batch_size: int, device: str) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over (x, y) in eval mode, and the predicted classes (N,) as a NumPy array."""
    model.eval()
    total, preds = 0.0, []
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size].to(device))
        total += F.cross_entropy(logits, y[i:i + batch_size].to(device), reduction="sum").item()
        preds.append(logits.argmax(dim=1).cpu().numpy())
    model.train()
    return total / len(y), np.concatenate(preds)


# ---- the run -------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    """The defaults, overridden by the settings saved in the checkpoint (with --resume), overridden by the
    flags given on the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " Options without a default shown take the "
                                "script's default (or, with --resume, the checkpointed run's).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out-dir", default=os.path.join("out", "cnn"), help="where checkpoints and plots go "
                   "(default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/ckpt.safetensors")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default cpu")
    p.add_argument("--seed", type=int, help=f"default {DEFAULTS['seed']}")
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", help=f"the Fashion-MNIST IDX files (default {DEFAULT_DATA_DIR}; when it does "
                      f"not exist, scikit-learn's digits are used instead)")
    data.add_argument("--train-subset", type=int, metavar="N", help="train on the first N images only (0: all)")
    data.add_argument("--test-subset", type=int, metavar="N", help="test on the first N images only (0: all)")
    model = p.add_argument_group("model (its shape is fixed by the checkpoint when resuming)")
    model.add_argument("--channels", type=int, nargs="+", help="output channels of each conv block "
                       f"(default {' '.join(map(str, DEFAULTS['channels']))})")
    model.add_argument("--hidden", type=int, help=f"width of the hidden linear layer (default {DEFAULTS['hidden']})")
    model.add_argument("--dropout", type=float, help=f"before each linear layer (default {DEFAULTS['dropout']})")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, help=f"train until this epoch (default {DEFAULTS['epochs']})")
    train.add_argument("--lr-decay-epochs", type=int, help="where the cosine decay ends (default --epochs)")
    train.add_argument("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
    train.add_argument("--lr", type=float, help=f"peak learning rate (default {DEFAULTS['lr']})")
    train.add_argument("--min-lr", type=float, help=f"learning rate at the end of the decay (default "
                       f"{DEFAULTS['min_lr']})")
    train.add_argument("--warmup-steps", type=int, help=f"linear warmup, at most a tenth of the schedule (default "
                       f"{DEFAULTS['warmup_steps']})")
    train.add_argument("--weight-decay", type=float, help=f"AdamW's, on weights (default {DEFAULTS['weight_decay']})")
    train.add_argument("--eval-batch-size", type=int, help=f"default {DEFAULTS['eval_batch_size']}")
    args = p.parse_args(argv)

    settings = run_settings(p, args, DEFAULTS, SHAPE_KEYS, args.out_dir, not_from_checkpoint=WHERE_KEYS)
    for key in ("epochs", "batch_size", "eval_batch_size", "hidden"):
        if settings[key] < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1, got {settings[key]}")
    if any(c < 1 for c in settings["channels"]):
        p.error(f"--channels must be positive, got {settings['channels']}")
    if settings["lr_decay_epochs"] is not None and settings["lr_decay_epochs"] < 1:
        p.error(f"--lr-decay-epochs must be at least 1, got {settings['lr_decay_epochs']}")
    return argparse.Namespace(**settings)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    os.makedirs(args.out_dir, exist_ok=True)
    ckpt = checkpoint_path(args.out_dir)

    saved = read_run_info(args.out_dir) if args.resume else None
    dataset, classes, data, norm = load_data(args, saved and saved["normalization"])  # a resumed run keeps its own
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    image_size = tuple(x_train.shape[2:])
    if saved and (saved["dataset"] != dataset or saved["image_size"] != list(image_size)):
        raise SystemExit(f"{ckpt} was trained on {saved['dataset']} ({saved['image_size']} images), this run "
                         f"loads {dataset} ({list(image_size)}): point --data-dir at the data it was trained on")
    print(f"{dataset}: {len(y_train):,} train / {len(y_test):,} test images of {image_size[0]}x{image_size[1]}, "
          f"{len(classes)} classes")

    mg.manual_seed(args.seed)
    model = make_model(image_size, args.channels, args.hidden, args.dropout, len(classes)).to(args.device)
    optimizer = make_optimizer(model, args)
    # All the randomness of training (the order of the batches, dropout masks) is drawn from `rng`, whose
    # state the checkpoint keeps: a resumed run continues exactly as an uninterrupted one.
    rng = np.random.default_rng(args.seed)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch_size, shuffle=True, generator=rng)
    steps_per_epoch = len(loader)
    # loss: per step; eval: [step, mean train loss of the epoch, test loss, test accuracy] after each epoch
    start_epoch, history = 0, {"loss": [], "eval": [], "seconds": 0.0}
    if args.resume:
        info = mg.load_checkpoint(ckpt, model, optimizer)
        extra = info["extra"]
        start_epoch, history = extra["epoch"], extra["history"]
        rng.bit_generator.state = extra["rng_state"]
        if start_epoch > args.epochs:
            raise SystemExit(f"{ckpt} is at epoch {start_epoch}, past --epochs {args.epochs}")
        print(f"resumed from {ckpt} at epoch {start_epoch} (step {info['step']})")
    decay_steps = (args.lr_decay_epochs or args.epochs) * steps_per_epoch
    warmup = min(args.warmup_steps, decay_steps // 10)  # at most a tenth of a short schedule (e.g. the digits')
    scheduler = WarmupCosineLR(optimizer, warmup, decay_steps, args.min_lr,
                               last_epoch=start_epoch * steps_per_epoch - 1)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters, {args.epochs} epochs of {steps_per_epoch} steps (batch {args.batch_size})")

    def evaluate_and_save(epoch: int, train_loss: float) -> np.ndarray:
        test_loss, pred = evaluate(model, x_test, y_test, args.eval_batch_size, args.device)
        accuracy = metrics.accuracy(pred, y_test)
        step = epoch * steps_per_epoch
        history["eval"].append([step, train_loss, test_loss, accuracy])
        history["seconds"] = seconds_before + time.perf_counter() - started
        progress.write(f"epoch {epoch}: train loss {train_loss:.4f}, test loss {test_loss:.4f}, "
                       f"test accuracy {accuracy:.4f}")
        run_info = {"settings": vars(args), "dataset": dataset, "classes": list(classes),
                    "image_size": list(image_size), "normalization": norm, "epoch": epoch, "history": history,
                    "rng_state": rng.bit_generator.state}
        mg.save_checkpoint(ckpt, model, optimizer, step=step, extra=run_info)
        return pred

    progress = Progress(start_epoch * steps_per_epoch, args.epochs * steps_per_epoch)
    seconds_before, started = history["seconds"], time.perf_counter()
    for epoch in range(start_epoch, args.epochs):
        losses = []
        for i, (x, y) in enumerate(loader):
            t0 = time.perf_counter()
            mg.manual_seed(int(rng.integers(2**62)))  # this step's dropout masks
            loss = F.cross_entropy(model(x.to(args.device)), y.to(args.device))
            lr = optimize(loss, model, optimizer, scheduler)
            losses.append(loss.item())
            step = epoch * steps_per_epoch + i + 1
            progress.update(step, losses[-1], lr, len(y) / (time.perf_counter() - t0), unit="img/s")
        history["loss"] += losses
        pred = evaluate_and_save(epoch + 1, float(np.mean(losses)))
    progress.close()
    elapsed = time.perf_counter() - started
    trained = args.epochs - start_epoch
    if trained:
        print(f"trained {trained} epochs in {elapsed:.1f} s with evaluations "
              f"({trained * len(y_train) / elapsed:,.0f} images/s); {history['seconds']:.1f} s in all")
    else:  # resumed at --epochs: nothing to train, report on the checkpoint
        _, pred = evaluate(model, x_test, y_test, args.eval_batch_size, args.device)
    confusion = metrics.confusion_matrix(pred, y_test, num_classes=len(classes)).numpy()
    print("per-class test accuracy:")
    for c, name in enumerate(classes):
        support = confusion[c].sum()
        share = f"{confusion[c, c] / support:.4f}" if support else "  n/a "
        print(f"  {name:<12} {share}  ({confusion[c, c]} of {support})")
    print(f"checkpoint: {ckpt}")
    plot_losses(history["loss"], [row[:3] for row in history["eval"]], ["train (epoch mean)", "test"],
                f"CNN on {dataset}", os.path.join(args.out_dir, "loss.png"), ylabel="cross-entropy")
    print(f"final test accuracy {metrics.accuracy(pred, y_test):.4f} on {dataset} ({len(y_test):,} images, "
          f"epoch {args.epochs})")


if __name__ == "__main__":
    sys.exit(main())
