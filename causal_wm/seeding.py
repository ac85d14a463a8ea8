"""One seed in, independent streams out, derived by purpose.

Adding a new purpose never shifts the numbers of another, because each stream is a function of
``(seed, purpose)`` alone.
"""

from __future__ import annotations

import zlib

import numpy as np

# Seeds are recorded as 64-bit signed integers (posterior.nc attributes, results.json readers), so
# the accepted range is 0 <= seed < 2**63.
SEED_LIMIT = 2**63


def valid_seed(seed) -> bool:
    """Whether ``seed`` is an accepted seed: an integer with ``0 <= seed < 2**63``.

    Examples
    --------
    >>> valid_seed(0), valid_seed(2**63 - 1), valid_seed(2**63), valid_seed(-1), valid_seed(True)
    (True, True, False, False, False)
    """
    return not isinstance(seed, bool) and isinstance(seed, (int, np.integer)) and 0 <= seed < SEED_LIMIT


def stream(seed: int, purpose: str) -> int:
    """A 63-bit integer seed for ``purpose`` derived from ``seed``.

    Examples
    --------
    >>> stream(0, "fit") == stream(0, "fit") != stream(0, "effect")
    True
    """
    if not valid_seed(seed):
        from causal_wm.errors import QueryError

        raise QueryError(f"seed must be a non-negative integer (0 <= seed < 2**63), got {seed!r}.")
    ss = np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(purpose.encode("utf-8")),))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def rng(seed: int, purpose: str) -> np.random.Generator:
    """A NumPy Generator for ``purpose`` (never the global state)."""
    return np.random.default_rng(stream(seed, purpose))
