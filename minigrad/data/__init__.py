"""minigrad.data: datasets, batching and splitting, with PyTorch's names.

    dataset = TensorDataset(x, y)                          # x: (N, ...), y: (N,)
    train, test = random_split(dataset, [0.8, 0.2], generator=0)
    for xb, yb in DataLoader(train, batch_size=32, shuffle=True):
        ...

Randomness (shuffling, splitting) comes from a NumPy generator: pass `generator=` a seed or a
`numpy.random.Generator`, or leave it None to draw from minigrad's global seed (`minigrad.manual_seed`).
"""
from minigrad.data.dataloader import DataLoader, default_collate
from minigrad.data.dataset import Dataset, Subset, TensorDataset, random_split

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split", "DataLoader", "default_collate"]

# Text for language models: the bundled Tiny Shakespeare, a char-level tokenizer, nanoGPT's split, batches.
from minigrad.data.text import CharTokenizer, get_batch, load_tinyshakespeare, train_val_split  # noqa: E402

__all__ += ["load_tinyshakespeare", "CharTokenizer", "train_val_split", "get_batch"]
