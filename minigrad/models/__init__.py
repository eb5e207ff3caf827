"""minigrad.models: complete models built from minigrad.nn, ready to train.

    from minigrad.models import GPT, GPTConfig
"""
from minigrad.models.gpt import GPT, GPTConfig  # noqa: F401
