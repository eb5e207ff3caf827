"""Random number generation: one generator per device type, all reseeded by `manual_seed`."""
from __future__ import annotations

import secrets

from minigrad.backend import dispatch

_generators: dict[str, object] = {}
_seed: int | None = None


def manual_seed(seed: int) -> None:
    """Make every later random draw (rand, randn, randint, dropout, init) reproducible."""
    global _seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"manual_seed expects an int, got {type(seed).__name__}")
    _seed = seed
    _generators.clear()


def seed_device(device_type: str, seed: int) -> None:
    """Reseed only the generator of one device type (minigrad.cuda.manual_seed); the others keep theirs."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"manual_seed expects an int, got {type(seed).__name__}")
    _generators[device_type] = dispatch(device_type).make_generator(seed)


def initial_seed() -> int:
    """The seed of the current generators (a random one if manual_seed was never called)."""
    global _seed
    if _seed is None:
        _seed = secrets.randbits(63)
    return _seed


def generator(device) -> object:
    """The backend generator for `device`, created from the current seed on first use."""
    kind = device.type
    if kind not in _generators:
        _generators[kind] = dispatch(device).make_generator(initial_seed())
    return _generators[kind]
