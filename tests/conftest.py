"""Shared fixtures: data simulated by plain NumPy with known truth, and fits reused across tests."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import causal_wm as cw

# Linear-Gaussian SCM with a confounder c, a continuous treatment t and a mediator m.
LG = {"a_t": 0.8, "a_m_t": 1.5, "a_m_c": 0.5, "a_y_m": 2.0, "a_y_t": 1.0, "a_y_c": 3.0,
      "sd_c": 2.0, "sd_t": 1.0, "sd_m": 1.0, "sd_y": 1.5, "mu_c": 1.0}
LG_TOTAL = LG["a_y_t"] + LG["a_y_m"] * LG["a_m_t"]  # closed-form effect of do(t=1) vs do(t=0)

LG_MODEL = {
    "name": "linear_gaussian",
    "nodes": {
        "c": {"family": "normal"},
        "t": {"family": "normal", "formula": "c"},
        "m": {"family": "normal", "formula": "t + c"},
        "y": {"family": "normal", "formula": "m + t + c"},
    },
}


def simulate_lg(n: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Data from the linear-Gaussian SCM and the true noise of every unit."""
    rng = np.random.default_rng(seed)
    e = {k: rng.normal(size=n) for k in "ctmy"}
    c = LG["mu_c"] + LG["sd_c"] * e["c"]
    t = LG["a_t"] * c + LG["sd_t"] * e["t"]
    m = LG["a_m_t"] * t + LG["a_m_c"] * c + LG["sd_m"] * e["m"]
    y = LG["a_y_m"] * m + LG["a_y_t"] * t + LG["a_y_c"] * c + LG["sd_y"] * e["y"]
    return pd.DataFrame({"c": c, "t": t, "m": m, "y": y}), e


def quiet_fit(scm, df, **kw):
    """Fit, turning a ConvergenceWarning into a test failure message rather than an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", cw.ConvergenceWarning)
        return scm.fit(df, **kw)


@pytest.fixture(scope="session")
def lg_fit():
    df, noise = simulate_lg(1000, seed=1)
    scm = cw.SCM.from_dict(LG_MODEL)
    # 2 x 500 draws left R-hat of m__sigma at 1.014 (chance, at that length); 2 x 1000 gives 1.006
    post = quiet_fit(scm, df, chains=2, draws=1000, warmup=500, seed=3)
    return scm, df, noise, post


@pytest.fixture
def spy(monkeypatch):
    """The loops built during a test: a list that gets each _looped result (None: not covered)."""
    built = []
    from causal_wm import fused

    real = fused._looped.__wrapped__

    def record(*a):
        loop = real(*a)
        built.append(loop)
        return loop

    monkeypatch.setattr(fused, "_looped", record)
    return built
