"""Result memory kept for reuse (causal_wm/pool.py): a buffer is reused only once nothing views it,
and a query answered in reused memory gives the same numbers as in fresh memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import causal_wm as cw
from causal_wm import pool
from causal_wm.testing import parameter_shapes, posterior_from_params


@pytest.fixture
def small_pool(monkeypatch):
    """Pool every array (so that small tests exercise it); empty before and after."""
    pool.release()
    monkeypatch.setattr(pool, "MIN_BYTES", 1)
    yield
    pool.set_idle_limit(None)
    pool.release()


def _addr(a):
    return a.__array_interface__["data"][0]


def test_a_dropped_result_is_reused_and_a_viewed_one_is_not(small_pool):
    a = pool.empty((4, 1000))
    where = _addr(a)
    a[:] = 1.0
    view = a[2]  # a slice keeps the whole buffer leased
    del a
    b = pool.empty((4, 1000))
    assert _addr(b) != where
    b[:] = 7.0
    assert np.all(view == 1.0)  # writing the new array did not touch the viewed one
    del view
    assert pool.idle_bytes() == 32_000
    c = pool.empty((1000, 4))  # same size, other shape: the same memory
    assert _addr(c) == where and c.shape == (1000, 4) and c.flags.c_contiguous and c.flags.writeable
    assert pool.idle_bytes() == 0


def test_sizes_limits_and_release(small_pool):
    a = pool.empty(10_000)
    del a
    assert pool.idle_bytes() == 80_000
    small = pool.empty(1_000)  # far smaller than the idle buffer: not carved out of it
    assert pool.idle_bytes() == 80_000 and small.nbytes == 8_000
    big = pool.empty(20_000)  # larger than anything kept: fresh
    assert pool.idle_bytes() == 80_000
    del big
    assert pool.idle_bytes() == 240_000
    pool.set_idle_limit(100_000)  # lowering the limit releases what is over it
    assert pool.idle_bytes() <= 100_000
    kept = pool.idle_bytes()
    assert pool.release() == kept and pool.idle_bytes() == 0
    pool.set_idle_limit(0)
    d = pool.empty(10_000)
    del d
    assert pool.idle_bytes() == 0  # nothing kept at limit 0
    for bad in (-1, 1.5, True, "1 GiB"):
        with pytest.raises(cw.QueryError, match="set_idle_limit"):
            pool.set_idle_limit(bad)


def test_below_min_bytes_arrays_are_plain():
    a = pool.empty((2, 3), np.int64)
    assert a.base is None and a.dtype == np.int64 and a.shape == (2, 3)


def test_counterfactuals_in_reused_memory_equal_fresh_ones(small_pool):
    spec = {"name": "pool", "nodes": {
        "x": {"family": "normal"},
        "t": {"family": "bernoulli", "formula": "x"},
        "y": {"family": "normal", "formula": "t + x"},
        "yb": {"family": "bernoulli", "formula": "t + y"},
    }}
    rng = np.random.default_rng(3)
    n = 200
    x = rng.normal(size=n)
    t = (rng.random(n) < 1 / (1 + np.exp(-x))).astype(int)
    y = t + x + rng.normal(size=n)
    df = pd.DataFrame({"x": x, "t": t, "y": y, "yb": (rng.random(n) < 0.5).astype(int)})
    scm = cw.SCM.from_dict(spec)
    params = {site: rng.normal(0.0, 0.5, (2, 50, *shape)) for site, shape in parameter_shapes(scm, df).items()}
    params = {k: (np.abs(v) + 0.5 if k.endswith("__sigma") else v) for k, v in params.items()}
    post = posterior_from_params(scm, df, params, seed=0)
    for engine in ("fused", "generic"):
        first = post.counterfactual(df, do={"t": 0}, engine=engine)
        want = {k: np.array(first[k]) for k in ("y", "yb")}
        del first
        assert pool.idle_bytes() > 0, engine  # the first result's buffer waits for reuse
        other = post.counterfactual(df, do={"t": 1}, engine=engine)
        assert pool.idle_bytes() == 0, engine  # written into that buffer
        del other
        again = post.counterfactual(df, do={"t": 0}, engine=engine)
        for k, v in want.items():
            assert np.array_equal(np.asarray(again[k]), v), (engine, k)
        del again
