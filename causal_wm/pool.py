"""Memory for large query results, kept for the next query once a result is dropped.

An all-draws counterfactual of 100,000 units x 1,000 draws writes 2.3 GiB. Memory that large
comes straight from the operating system, which zeroes every page when it is first written and
takes it back when the array is freed; on the 2-core machine of docs/performance.md that first
touch ran at a third of the speed of writing memory already mapped, and was the larger part of
such a query's time. A scenario sweep (one query after another, each result summarised and
dropped) paid it every time.

So results of :data:`MIN_BYTES` or more are carved out of buffers this module keeps: when the
last array viewing a buffer is gone, the buffer waits here (up to :func:`idle_limit` bytes in all)
for a later result of about its size. Only whole buffers are reused, never one still viewed: an
array keeps its buffer leased for as long as it, or any view or slice of it, lives.
:func:`release` hands the waiting buffers back to the operating system.

Examples
--------
>>> from causal_wm import pool
>>> a = pool.empty((2, 3))  # below MIN_BYTES: an ordinary array
>>> a.shape, a.dtype
((2, 3), dtype('float64'))
>>> pool.release() >= 0
True
"""

from __future__ import annotations

import os
import threading

import numpy as np

from causal_wm.errors import QueryError

# Smaller arrays are cheap to allocate (the C library keeps and reuses such memory itself).
MIN_BYTES = 64 << 20
# A buffer serves a request of at least this fraction of its size (so one huge idle buffer does
# not end up holding a small result).
MIN_FILL = 0.5

_lock = threading.Lock()
_idle: list[np.ndarray] = []  # raw uint8 buffers waiting for reuse
_limit: list[int | None] = [None]  # set_idle_limit's value; None: the default


def idle_limit() -> int:
    """Bytes of dropped results kept for reuse at most: :func:`set_idle_limit`'s value, else a
    quarter of the machine's memory, at most 4 GiB."""
    if _limit[0] is not None:
        return _limit[0]
    try:
        phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not every platform reports it
        phys = 16 << 30
    return min(4 << 30, phys // 4)


def set_idle_limit(nbytes: int | None) -> None:
    """Keep at most ``nbytes`` of dropped results for reuse (0: keep none; None: the default).
    Buffers over a lowered limit are released at once."""
    if nbytes is not None and (isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer))
                               or nbytes < 0):
        raise QueryError(f"set_idle_limit: expected a number of bytes >= 0 or None, got {nbytes!r}.")
    _limit[0] = None if nbytes is None else int(nbytes)
    with _lock:
        while _idle and sum(b.nbytes for b in _idle) > idle_limit():
            _idle.pop(0)


def idle_bytes() -> int:
    """Bytes kept for reuse now."""
    with _lock:
        return sum(b.nbytes for b in _idle)


def release() -> int:
    """Hand every buffer kept for reuse back to the operating system; the bytes released."""
    with _lock:
        freed = sum(b.nbytes for b in _idle)
        _idle.clear()
    return freed


def empty(shape, dtype=np.float64) -> np.ndarray:
    """An uninitialised C-contiguous array, in a kept buffer where one fits.

    Examples
    --------
    >>> import numpy as np
    >>> from causal_wm import pool
    >>> a = pool.empty((3, 1000, 4000))  # 96 MB: leased from the pool
    >>> a.shape, a.flags.c_contiguous, a.flags.writeable
    ((3, 1000, 4000), True, True)
    >>> del a  # its buffer now waits for the next result of about its size
    >>> pool.idle_bytes() >= 96_000_000 or pool.idle_limit() < 96_000_000
    True
    >>> pool.release() >= 0
    True
    """
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(n) for n in shape)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if need < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        fits = [i for i, b in enumerate(_idle) if need <= b.nbytes and need >= MIN_FILL * b.nbytes]
        raw = _idle.pop(min(fits, key=lambda i: _idle[i].nbytes)) if fits else None
    if raw is None:
        raw = np.empty(need, np.uint8)
    return np.asarray(_Lease(raw, shape, dtype))


class _Lease:
    """A raw buffer lent to one result; back to the pool when no array views it any more."""

    __slots__ = ("__array_interface__", "_raw")

    def __init__(self, raw: np.ndarray, shape: tuple, dtype: np.dtype):
        self._raw = raw
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "data": (raw.ctypes.data, False),
                                    "version": 3}

    def __del__(self):
        try:
            # never wait here: a finaliser may run while this thread holds the lock (the buffer
            # is then simply freed)
            if not _lock.acquire(blocking=False):
                return
        except Exception:  # at interpreter exit this module may be gone already
            return
        try:
            if sum(b.nbytes for b in _idle) + self._raw.nbytes <= idle_limit():
                _idle.append(self._raw)
        finally:
            _lock.release()
