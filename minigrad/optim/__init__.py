"""minigrad.optim: optimizers (SGD, Adam, AdamW, RMSprop) and learning-rate schedules (`lr_scheduler`).

    optimizer = minigrad.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    scheduler = minigrad.optim.lr_scheduler.WarmupCosineLR(optimizer, warmup_steps=100, max_steps=5000)

Gradient clipping lives in `minigrad.nn.utils` (clip_grad_norm_, clip_grad_value_), as in PyTorch.
"""
from minigrad.optim import lr_scheduler  # noqa: F401
from minigrad.optim.adam import Adam, AdamW  # noqa: F401
from minigrad.optim.optimizer import Optimizer  # noqa: F401
from minigrad.optim.rmsprop import RMSprop  # noqa: F401
from minigrad.optim.sgd import SGD  # noqa: F401
