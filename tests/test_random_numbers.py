"""The query engine's counter-based uniforms (kernels.uniform, mirrored by traced.Trace.uniform):
uniform, and uncorrelated between neighbouring draws, units, nodes and slots. Every number here
is computed from fixed counters, so each check gives the same verdict on every run; thresholds
are a few standard errors of a test statistic under independence."""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import stats

from causal_wm import kernels as K

KEY = 0x1234ABCD


@njit(cache=True)
def _grid(key, n_s, n_u, k, slot, ds, du, dk, dslot):
    """uniform at (s, u, k, slot) and at its neighbour (s + ds, u + du, k + dk, slot + dslot)."""
    a = np.empty((n_s, n_u))
    b = np.empty((n_s, n_u))
    for s in range(n_s):
        for u in range(n_u):
            a[s, u] = K.uniform(key, s, u, k, slot)
            b[s, u] = K.uniform(key, s + ds, u + du, k + dk, slot + dslot)
    return a, b


def test_uniforms_are_uniform():
    a, _ = _grid(KEY, 1000, 2000, 3, 0, 0, 0, 0, 0)
    x = a.ravel()
    assert x.min() > 0.0 and x.max() < 1.0
    assert stats.kstest(x, "uniform").pvalue > 1e-4
    counts = np.histogram(x, bins=1000, range=(0.0, 1.0))[0]
    assert stats.chisquare(counts).pvalue > 1e-4
    assert len(np.unique(x)) == x.size  # 2e6 values of 53 bits: a repeat would be a defect


def test_neighbouring_counters_are_independent():
    n = 500 * 2000
    for step in ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 4096, 0, 0), (0, 0, 0, 4096 - 1)):
        a, b = _grid(KEY, 500, 2000, 2, 1, *step)
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) < 5 / np.sqrt(n), (step, r)
        # the joint distribution of neighbours: 16 x 16 cells, each 1/256 under independence
        cells = np.histogram2d(a.ravel(), b.ravel(), bins=16, range=[[0, 1], [0, 1]])[0].ravel()
        assert stats.chisquare(cells).pvalue > 1e-4, step
    # another key: another stream
    a, _ = _grid(KEY, 200, 2000, 2, 1, 0, 0, 0, 0)
    c, _ = _grid(KEY + 1, 200, 2000, 2, 1, 0, 0, 0, 0)
    assert abs(np.corrcoef(a.ravel(), c.ravel())[0, 1]) < 5 / np.sqrt(a.size)
