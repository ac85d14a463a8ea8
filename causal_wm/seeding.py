"""One seed in, independent streams out, derived by purpose.

Adding a new purpose never shifts the numbers of another, because each stream is a function of
``(seed, purpose)`` alone.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, purpose: str) -> int:
    """A 63-bit integer seed for ``purpose`` derived from ``seed``.

    Examples
    --------
    >>> stream(0, "fit") == stream(0, "fit") != stream(0, "effect")
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        from causal_wm.errors import QueryError

        raise QueryError(f"seed must be a non-negative integer, got {seed!r}.")
    ss = np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(purpose.encode("utf-8")),))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def rng(seed: int, purpose: str) -> np.random.Generator:
    """A NumPy Generator for ``purpose`` (never the global state)."""
    return np.random.default_rng(stream(seed, purpose))
