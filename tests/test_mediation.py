"""Natural direct and indirect effects against truth computed from the generating model in NumPy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import causal_wm as cw
from tests.conftest import quiet_fit


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_mediation_with_binary_mediator_and_interaction_matches_truth():
    rng = np.random.default_rng(21)
    n = 3000
    x = rng.normal(size=n)
    t = (rng.uniform(size=n) < _sigmoid(0.4 * x)).astype(int)
    m = (rng.uniform(size=n) < _sigmoid(-0.5 + 1.5 * t + 0.5 * x)).astype(int)
    y = 1 + 0.5 * t + 2 * m + 0.8 * t * m + 0.3 * x + rng.normal(size=n)
    df = pd.DataFrame({"x": x, "t": t, "m": m, "y": y})
    scm = cw.SCM.from_dict({"name": "med", "nodes": {
        "x": {"family": "normal"}, "t": {"family": "bernoulli", "formula": "x"},
        "m": {"family": "bernoulli", "formula": "t + x"}, "y": {"family": "normal", "formula": "t * m + x"}}})
    post = quiet_fit(scm, df, chains=2, draws=1000, warmup=500, seed=3)
    med = post.mediation("t", "m", "y")
    # truth over the sample's covariates: E[M(t)] averages the true mediator probabilities
    m0, m1 = _sigmoid(-0.5 + 0.5 * x).mean(), _sigmoid(1.0 + 0.5 * x).mean()
    nde, nie = 0.5 + 0.8 * m0, (2 + 0.8) * (m1 - m0)
    for res, truth in ((med.direct, nde), (med.indirect, nie), (med.total, nde + nie)):
        lo, hi = res.interval(0.99)
        assert lo < truth < hi, (truth, lo, hi)
    np.testing.assert_allclose(med.direct.draws + med.indirect.draws, med.total.draws, rtol=1e-10)
    # the total effect is the ordinary average effect of the treatment
    np.testing.assert_allclose(med.total.draws, post.effect("y", do={"t": 1}, vs={"t": 0}).draws, rtol=1e-12)
    table = med.summary()
    assert list(table.index) == ["direct (NDE)", "indirect (NIE)", "total", "proportion mediated"]


def test_mediation_rejects_a_node_off_the_path(lg_fit):
    post = lg_fit[3]
    with pytest.raises(cw.QueryError, match="causal path"):
        post.mediation("m", "t", "y")
