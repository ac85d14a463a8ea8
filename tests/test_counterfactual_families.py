"""Counterfactuals for every family: consistency, effectiveness, and calibration of discrete
counterfactuals against truth generated with the same (monotone CDF) coupling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import causal_wm as cw
from tests.conftest import quiet_fit

ALL_FAMILIES = {
    "name": "all_families",
    "nodes": {
        "x": {"family": "normal"},
        "g": {"family": "categorical", "levels": ["a", "b", "c"]},
        "t": {"family": "bernoulli", "formula": "x"},
        "yn": {"family": "normal", "formula": "t + x + g"},
        "yt": {"family": "student_t", "formula": "t + x"},
        "yl": {"family": "lognormal", "formula": "t + x"},
        "yb": {"family": "bernoulli", "formula": "t + x"},
        "yp": {"family": "poisson", "formula": "t + x"},
        "ynb": {"family": "negative_binomial", "formula": "t + x"},
        "yc": {"family": "categorical", "formula": "t + x"},
        "z": {"family": "normal", "formula": "yb + yp + yc"},
    },
}


def simulate_all(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    g = rng.choice(["a", "b", "c"], size=n)
    t = (rng.uniform(size=n) < 1 / (1 + np.exp(-0.5 * x))).astype(int)
    geff = pd.Series(g).map({"a": -0.5, "b": 0.0, "c": 0.5}).to_numpy()
    yn = 1 + 2 * t + x + geff + rng.normal(size=n)
    yt = 1 + 2 * t + x + stats.t.rvs(5, size=n, random_state=rng)
    yl = np.exp(0.5 + 0.4 * t + 0.3 * x + 0.3 * rng.normal(size=n))
    yb = (rng.uniform(size=n) < 1 / (1 + np.exp(-(-0.3 + t + x)))).astype(int)
    yp = rng.poisson(np.exp(0.5 + 0.5 * t + 0.3 * x))
    ynb = rng.negative_binomial(4, 4 / (4 + np.exp(1 + 0.5 * t + 0.3 * x)))
    logits = np.stack([np.zeros(n), 0.5 + t - x, -0.5 + 2 * t + 0.5 * x], axis=1)
    gumbel = rng.gumbel(size=(n, 3))
    yc = np.array(["lo", "mid", "hi"])[np.argmax(logits + gumbel, axis=1)]
    z = yb + 0.5 * yp + (yc == "hi") + rng.normal(size=n)
    return pd.DataFrame(dict(x=x, g=g, t=t, yn=yn, yt=yt, yl=yl, yb=yb, yp=yp, ynb=ynb, yc=yc, z=z))


@pytest.fixture(scope="module")
def all_fit():
    df = simulate_all(400, seed=2)
    scm = cw.SCM.from_dict(ALL_FAMILIES)
    post = quiet_fit(scm, df, chains=2, draws=1000, warmup=500, seed=1)
    return df, post


def test_consistency_every_family_exact(all_fit):
    df, post = all_fit
    units = df.iloc[:60]
    # intervening to each unit's own observed treatment returns every factual value exactly
    cf = post.counterfactual(units=units, do={"t": units["t"].to_numpy()})
    for node in ("yn", "yt", "yl", "yb", "yp", "ynb", "yc", "z"):
        fact = units[node].to_numpy()
        vals = cf[node]
        assert vals.shape == (post.program.n_draws, 60)
        assert np.all(vals == fact[None, :]), node
    # the same through a categorical node
    cf2 = post.counterfactual(units=units, do={"yc": units["yc"].to_numpy()})
    assert np.all(cf2["z"] == units["z"].to_numpy()[None, :])


def test_effectiveness_and_non_descendants(all_fit):
    df, post = all_fit
    units = df.iloc[:30]
    cf = post.counterfactual(units=units, do={"t": 1})
    assert np.all(cf["t"] == 1)
    assert set(cf.nodes) == {"t", "yn", "yt", "yl", "yb", "yp", "ynb", "yc", "z"}
    # nodes upstream of t are not changed: they are the factual values
    assert np.all(cf["x"] == units["x"].to_numpy()[None, :])
    # values stay in their support
    assert set(np.unique(cf["yb"])) <= {0.0, 1.0}
    assert np.all(cf["yp"] >= 0) and np.all(cf["yp"] == np.round(cf["yp"]))
    assert np.all(cf["yl"] > 0)
    assert set(np.unique(cf["yc"])) <= {"lo", "mid", "hi"}


def test_monotone_coupling_never_reverses(all_fit):
    df, post = all_fit
    units = df[df.t == 0].iloc[:80]
    cf = post.counterfactual(units=units, do={"t": 1})
    b = post.idata.posterior["yb__b"].sel(yb__term="t").values.reshape(-1)
    # under the monotone coupling a unit whose outcome was 1 stays 1 when the effect is positive
    pos = b > 0
    was_one = units["yb"].to_numpy() == 1
    assert np.all(cf["yb"][pos][:, was_one] == 1)


def test_effect_on_every_family_has_the_right_sign(all_fit):
    _, post = all_fit
    for node in ("yn", "yt", "yl", "yb", "yp", "ynb"):
        eff = post.effect(node, do={"t": 1}, vs={"t": 0})
        assert eff.interval(0.9)[0] > 0, node
    eff = post.effect("yc", do={"t": 1}, vs={"t": 0}, level="hi")
    assert eff.interval(0.9)[0] > 0
    with pytest.raises(cw.QueryError, match="level"):
        post.effect("yc", do={"t": 1})


def _coupled_binary_and_count(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = (rng.uniform(size=n) < 1 / (1 + np.exp(-0.5 * x))).astype(int)
    u_b, u_p = rng.uniform(size=n), rng.uniform(size=n)
    p = lambda tt: 1 / (1 + np.exp(-(-0.5 + 1.2 * tt + 0.8 * x)))  # noqa: E731
    mu = lambda tt: np.exp(0.3 + 0.5 * tt + 0.4 * x)  # noqa: E731
    yb = (u_b > 1 - p(t)).astype(int)
    yp = stats.poisson.ppf(u_p, mu(t)).astype(int)
    cf_b = (u_b > 1 - p(1 - t)).astype(int)  # truth under the same coupling
    cf_p = stats.poisson.ppf(u_p, mu(1 - t)).astype(int)
    return pd.DataFrame({"x": x, "t": t, "yb": yb, "yp": yp}), cf_b, cf_p


def test_discrete_counterfactuals_calibrated_against_coupled_truth():
    df, cf_b, cf_p = _coupled_binary_and_count(3000, seed=7)
    scm = cw.SCM.from_dict({"name": "coupled", "nodes": {
        "x": {"family": "normal"}, "t": {"family": "bernoulli", "formula": "x"},
        "yb": {"family": "bernoulli", "formula": "t + x"}, "yp": {"family": "poisson", "formula": "t + x"}}})
    post = quiet_fit(scm, df, chains=2, draws=1000, warmup=500, seed=0)
    flip = 1 - df["t"].to_numpy()
    cf = post.counterfactual(units=df, do={"t": flip})
    # binary: binned calibration of P(y' = 1) against the coupled truth
    prob = cf["yb"].mean(axis=0)
    bins = np.quantile(prob, np.linspace(0, 1, 11))
    idx = np.clip(np.searchsorted(bins, prob, side="right") - 1, 0, 9)
    for b in range(10):
        sel = idx == b
        if sel.sum() < 30:
            continue
        pm, tm = prob[sel].mean(), cf_b[sel].mean()
        se = np.sqrt(max(pm * (1 - pm), 0.01) / sel.sum())
        assert abs(pm - tm) < 4 * se + 0.02, (b, pm, tm)
    brier = np.mean((prob - cf_b) ** 2)
    # the best interventional (rung-2) prediction ignores the unit's factual outcome: even with
    # the true parameters it must lose to the counterfactual, which uses it
    x, t = df["x"].to_numpy(), df["t"].to_numpy()
    p_int = 1 / (1 + np.exp(-(-0.5 + 1.2 * (1 - t) + 0.8 * x)))
    brier_int = np.mean((p_int - cf_b) ** 2)
    print(f"binary counterfactual Brier score {brier:.4f} (oracle interventional {brier_int:.4f})")
    assert brier < 0.9 * brier_int
    # counts: the posterior mean counterfactual count tracks the coupled truth
    mean_p = cf["yp"].mean(axis=0)
    assert abs(mean_p.mean() - cf_p.mean()) < 4 * cf_p.std() / np.sqrt(len(cf_p))
    assert np.corrcoef(mean_p, cf_p)[0, 1] > 0.8
