"""Automatic mixed precision, as torch.amp: `autocast` runs chosen ops in float16 / bfloat16 (and the
numerically sensitive ones in float32), `GradScaler` scales the loss so that float16 gradients do not
underflow, and skips the steps whose gradients overflowed.

    scaler = minigrad.amp.GradScaler("cuda")
    with minigrad.autocast("cuda"):                 # float16 on CUDA; bfloat16 is the CPU default
        loss = F.cross_entropy(model(x), y)         # parameters stay float32
    scaler.scale(loss).backward()                   # their .grad is float32 too
    scaler.step(optimizer)                          # unscales, skips the step on inf / nan
    scaler.update()

autocast_mode.py holds the autocast state, the op lists and `autocast_inputs`, the one hook the ops
call; grad_scaler.py holds GradScaler.
"""
from minigrad.amp.autocast_mode import autocast, get_autocast_dtype, is_autocast_enabled
from minigrad.amp.grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler", "get_autocast_dtype", "is_autocast_enabled"]
