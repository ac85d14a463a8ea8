"""Checks: DoWhy triangulation and refutation, Bayesian sensitivity, graph falsification, real data."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import causal_wm as cw
from causal_wm.checks import classical, falsify, refute, sensitivity, triangulate
from tests.conftest import LG_TOTAL


def _obj(scm, df):
    """What falsify needs of a posterior: the SCM and the data (no fit)."""
    return SimpleNamespace(scm=scm, plan=SimpleNamespace(frame=df))


# ------------------------------------------------------------------ triangulation
def test_triangulation_overlaps_and_covers_truth(lg_fit):
    _, _, _, post = lg_fit
    tab = triangulate(post, "y", "t", prob=0.95)
    assert list(tab.method) == ["bayes (causal_wm)", "backdoor.linear_regression"]
    assert tab.overlaps_bayes.all()
    for _, r in tab.iterrows():
        assert r.lower <= LG_TOTAL <= r.upper, r
    assert "shift" not in tab.contrast[0] and "t + 1" in tab.contrast[0]


def test_refute_linear_gaussian(lg_fit):
    _, _, _, post = lg_fit
    ref = refute(post, "y", "t", num_simulations=10)
    assert list(ref.refuter) == ["placebo_treatment_refuter", "random_common_cause", "data_subset_refuter"]
    assert ref.passed.all(), ref
    assert abs(ref.new_effect[0]) < 0.5  # placebo effect near zero


# ------------------------------------------------------------------ falsification
FALS = {"name": "chain", "nodes": {"a": {}, "b": {"formula": "a"}, "c": {"formula": "b"}, "d": {"formula": "a"}}}


def _chain(n, seed, direct=0.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = 0.8 * a + rng.normal(size=n)
    c = 0.8 * b + direct * a + rng.normal(size=n)
    d = 0.8 * a + rng.normal(size=n)
    return pd.DataFrame({"a": a, "b": b, "c": c, "d": d})


def test_falsify_true_graph_few_rejections():
    scm = cw.SCM.from_dict(FALS)
    out = falsify(_obj(scm, _chain(2000, 0)))
    assert set(map(tuple, out[["x", "y"]].values)) == {("b", "d"), ("a", "c"), ("c", "d")}
    assert out.rejected.sum() <= 1
    assert "implied independences" in out.attrs["summary"]


def test_falsify_rejects_missing_edge():
    scm = cw.SCM.from_dict(FALS)
    out = falsify(_obj(scm, _chain(2000, 0, direct=0.5)))  # a -> c exists in the data, not in the graph
    row = out[(out.x == "a") & (out.y == "c")].iloc[0]
    assert row.rejected and row.p_value < 1e-6 and row.given == "b"


# ------------------------------------------------------------------ sensitivity
@pytest.mark.slow
def test_sensitivity_breakdown_brackets_true_strength():
    # t = a U + e_t, y = 0 * t + c U + e_y: no effect, all association from U.
    # With a = c = 0.75 the standardised loadings are 0.75 / 1.25 = 0.6 on t and on y, and the model
    # with loadings s implies the effect b = corr(t, y) - s^2 = 0.36 - s^2 (zero at s = 0.6).
    rng = np.random.default_rng(7)
    n, a = 400, 0.75
    u = rng.normal(size=n)
    t = a * u + rng.normal(size=n)
    y = a * u + rng.normal(size=n)
    scm = cw.SCM.from_dict({"name": "hidden", "nodes": {"t": {}, "y": {"formula": "t"}}})
    post = scm.fit(pd.DataFrame({"t": t, "y": y}), chains=1, draws=300, warmup=300, seed=1)
    grid = (0.0, 0.3, 0.6, 0.9)
    tab = sensitivity(post, "y", "t", strengths=grid)
    assert tab.lower[0] > 0  # the naive model finds a positive effect
    bd = tab.attrs["breakdown"]
    true = a / np.sqrt(1 + a**2)
    assert bd is not None and abs(bd - true) <= 0.3 + 1e-9  # within one grid step of the truth
    assert grid[grid.index(bd) - 1] < true  # the last strength that keeps the effect is below the truth
    assert abs(tab.set_index("strength").estimate[0.6]) < 0.15


# ------------------------------------------------------------------ Card (1995)
CARD_2SLS = 0.132


@pytest.fixture(scope="module")
def card():
    scm = cw.load_model("models/card_schooling.yaml")
    return scm, scm.load_data()


def test_card_identified_by_iv(card):
    scm, _ = card
    ident = scm.identify("educ", "lwage")
    assert ident.kind == "iv" and ident.instruments == ("nearc4",)


def test_card_2sls_matches_published(card):
    scm, df = card
    tab = classical(scm, df, "lwage", "educ")
    row = tab.iloc[0]
    assert row.method == "iv.instrumental_variable"
    assert abs(row.estimate - CARD_2SLS) < 0.01
    assert row.lower < CARD_2SLS < row.upper


def _binary_iv(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, n)
    u = rng.normal(size=n)
    t = 1.5 * z + u + rng.normal(size=n)
    y = t + 2.0 * u + rng.normal(size=n)
    scm = cw.SCM.from_dict({"name": "biv", "nodes": {
        "z": {"family": "bernoulli"}, "U": {"latent": True}, "t": {"formula": "z + U"}, "y": {"formula": "t + U"}}})
    return scm, pd.DataFrame({"z": z, "t": t, "y": y})


def test_a_binary_instrument_without_controls_gives_the_wald_estimate():
    """Before, the instrument was centred even without controls, and DoWhy's Wald estimator (z == 1 vs
    z == 0) found no units: a NaN row, called 'apart'."""
    scm, df = _binary_iv()
    row = classical(scm, df, "y", "t").iloc[0]
    wald = (df.y[df.z == 1].mean() - df.y[df.z == 0].mean()) / (df.t[df.z == 1].mean() - df.t[df.z == 0].mean())
    assert row.method == "iv.instrumental_variable" and abs(row.estimate - wald) < 1e-9
    assert row.lower < 1.0 < row.upper  # the truth


def test_refutations_that_need_a_backdoor_estimate_say_they_did_not_run():
    from causal_wm.checks import CheckResult

    scm, df = _binary_iv()
    tab = refute(SimpleNamespace(scm=scm, plan=SimpleNamespace(frame=df), seed=0), "y", "t", num_simulations=2)
    assert len(tab) == 3 and tab["passed"].isna().all()
    assert all("identified by iv" in n for n in tab["note"])
    tri = pd.DataFrame({"method": ["bayes (causal_wm)", "iv.instrumental_variable"], "estimate": [1.0, np.nan],
                        "lower": [0.9, np.nan], "upper": [1.1, np.nan], "overlaps_bayes": [True, False]})
    verdicts = CheckResult("t", "y", tri, tab).table()["verdict"].tolist()
    assert verdicts == ["overlaps", "failed", "not run", "not run", "not run"]


# ------------------------------------------------------------------ NHEFS (What If ch. 13)
@pytest.fixture(scope="module")
def nhefs():
    scm = cw.load_model("models/nhefs.yaml")
    return scm, scm.load_data()


def test_nhefs_backdoor_set(nhefs):
    scm, _ = nhefs
    ident = scm.identify("qsmk", "wt82_71")
    assert ident.kind == "backdoor"
    assert set(ident.adjustment_set) == {"sex", "race", "age", "education", "smokeintensity", "smokeyrs",
                                         "exercise", "active", "wt71"}


def test_nhefs_dowhy_estimators(nhefs):
    scm, df = nhefs
    tab = classical(scm, df, "wt82_71", "qsmk", prob=0.95).set_index("method")
    assert abs(tab.estimate["backdoor.linear_regression"] - 3.4) < 0.2
    assert tab.lower["backdoor.linear_regression"] < 3.5 < tab.upper["backdoor.linear_regression"]

# The Bayesian NHEFS effect is checked by studies/nhefs.yaml's expect: entries, run in
# tests/test_study_files.py::test_every_shipped_study_runs_and_meets_expectations (slow).
