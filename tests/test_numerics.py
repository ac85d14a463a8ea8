"""Numerical robustness: columns on very different scales, large counts, separation and excess zeros.

Truth comes from plain NumPy simulations and closed forms (scipy's distributions); tolerances from
posterior SDs and Monte Carlo standard errors.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import causal_wm as cw
import causal_wm.backends.numpyro as numpyro_backend
from causal_wm import kernels as K
from causal_wm.data_checks import check_data
from causal_wm.families import NEGBIN, POISSON
from causal_wm.fitting import make_plan
from causal_wm.testing import posterior_from_params


class Reached(Exception):
    """Raised in place of sampling: everything before it (validation, data checks) has run."""


@pytest.fixture
def no_sampling(monkeypatch):
    def stop(*a, **k):
        raise Reached

    monkeypatch.setattr(numpyro_backend, "sample", stop)


# ------------------------------------------------------------------ scales: dollars next to rates
def test_dollars_next_to_rates_fit_without_divergences_in_original_units():
    rng = np.random.default_rng(3)
    n = 600
    income = rng.normal(52_000.0, 15_000.0, n)  # dollars
    rate = rng.uniform(0.0, 1.0, n)  # a share in [0, 1]
    spend = 1_500.0 + 0.04 * income + 2_500.0 * rate + rng.normal(0.0, 800.0, n)
    df = pd.DataFrame({"income": income, "rate": rate, "spend": spend})
    scm = cw.SCM.from_dict({"name": "scales", "nodes": {
        "income": {}, "rate": {}, "spend": {"formula": "income + rate"}}})
    with warnings.catch_warnings():
        warnings.simplefilter("error", cw.ConvergenceWarning)
        post = scm.fit(df, chains=2, draws=400, warmup=400, seed=1)
    assert post.diagnostics().divergences == 0 and post.ok
    # closed forms in original units: +$1,000 of income raises spending by 0.04 * 1000 = 40 dollars;
    # raising the rate from 0.2 to 0.7 raises it by 2500 * 0.5 = 1250 dollars
    for do, vs, truth in (({"income": cw.shift(1000.0)}, None, 40.0), ({"rate": 0.7}, {"rate": 0.2}, 1250.0)):
        eff = post.effect("spend", do=do, vs=vs)
        sd = float(np.std(eff.draws))
        assert abs(eff.mean() - truth) < 4 * sd, (do, eff.mean(), sd)
        # the posterior is informative about the truth on the dollar scale (not stuck at the prior)
        assert sd < 0.25 * truth
    # the same answer as ordinary least squares on the raw columns (flat-ish priors, n = 600)
    X = np.column_stack([np.ones(n), income, rate])
    beta = np.linalg.lstsq(X, spend, rcond=None)[0]
    eff = post.effect("spend", do={"income": cw.shift(1000.0)})
    assert abs(eff.mean() - 1000 * beta[1]) < 0.2 * float(np.std(eff.draws)) + 4 * eff.mcse()


@pytest.mark.parametrize(("scale", "rate_scale"), [(1e6, 1e-4), (1e-3, 1e3)])
def test_extreme_but_representable_scales_are_standardised(scale, rate_scale, no_sampling):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": scale * rng.normal(size=50), "b": rate_scale * rng.uniform(size=50)})
    scm = cw.SCM.from_dict({"name": "s", "nodes": {"a": {}, "b": {"formula": "a"}}})
    plan = make_plan(scm, df)
    for k in ("a", "b"):  # internal values are z-scores whatever the units
        z = plan.values[k]
        assert abs(z.mean()) < 1e-12 and abs(z.std() - 1) < 1e-12


@pytest.mark.parametrize("values", [[1e160, -1e160, 0.0, 1.0], [1e-300, 2e-300, 3e-300, 4e-300]])
def test_values_beyond_floating_point_standardisation_are_refused(values, no_sampling):
    scm = cw.SCM.from_dict({"name": "s", "nodes": {"x": {}, "y": {"formula": "x"}}})
    df = pd.DataFrame({"x": values, "y": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(cw.DataError, match=r"column 'x'.*rescale"):
        scm.fit(df)


# ------------------------------------------------------------------ counts with large means
@pytest.mark.parametrize("mu", [0.3, 40.0, 744.0, 800.0, 5_000.0, 2e5, 1e8])
def test_poisson_cdf_and_quantile_match_scipy_for_large_means(mu):
    d = stats.poisson(mu)
    for u in (1e-6, 0.01, 0.3, 0.5, 0.9, 0.999999):
        assert K.count_quantile(POISSON, mu, 0.0, u) == d.ppf(u)
    for y in {int(d.ppf(q)) for q in (0.001, 0.2, 0.5, 0.8, 0.999)}:
        lo, hi = K.count_cdf_pair(POISSON, mu, 0.0, y)
        # summing ~24 SDs of terms: rounding grows with the number of terms
        tol = 1e-12 * max(1.0, math.sqrt(mu))
        assert abs(lo - d.cdf(y - 1)) < tol and abs(hi - d.cdf(y)) < tol


@pytest.mark.parametrize(("mu", "phi"), [(2.0, 0.5), (1_000.0, 3.0), (3_000.0, 80.0), (5e4, 1e4)])
def test_negative_binomial_cdf_and_quantile_match_scipy(mu, phi):
    d = stats.nbinom(phi, phi / (phi + mu))
    for u in (1e-4, 0.3, 0.5, 0.97):
        assert K.count_quantile(NEGBIN, mu, phi, u) == d.ppf(u)
    for y in {int(d.ppf(q)) for q in (0.01, 0.5, 0.99)}:
        lo, hi = K.count_cdf_pair(NEGBIN, mu, phi, y)
        assert abs(lo - d.cdf(y - 1)) < 1e-9 and abs(hi - d.cdf(y)) < 1e-9


@pytest.mark.parametrize(("fam", "mu", "phi"), [(POISSON, 1.7, 0.0), (POISSON, 50.0, 0.0), (POISSON, 3e4, 0.0),
                                              (NEGBIN, 1.7, 2.0), (NEGBIN, 30.0, 0.5), (NEGBIN, 400.0, 40.0)])
def test_upper_tail_pair_and_quantile_match_scipy_far_out(fam, mu, phi):
    """Above the mean the coupling works on P(Y > y), which stays precise where F(y) rounds to 1
    (a count of 49 where the mean is 1.7 has P(Y > 49) = 2e-54)."""
    d = stats.poisson(mu) if fam == POISSON else stats.nbinom(phi, phi / (phi + mu))
    sd = d.std()
    for y in sorted({math.ceil(mu), math.ceil(mu + 3 * sd), math.ceil(mu + 10 * sd), math.ceil(mu + 30 * sd + 30)}):
        s_hi, s_lo = K.count_sf_pair(fam, mu, phi, float(y))
        ref_hi, ref_lo = d.sf(y), d.sf(y - 1)
        assert ref_hi > 0  # (the cases stay inside floating point)
        assert abs(s_hi / ref_hi - 1) < 1e-10 and abs(s_lo / ref_lo - 1) < 1e-10, (y, s_hi, ref_hi)
        for v in (1e-9, 0.3, 0.999):  # any tail mass inside (P(Y > y), P(Y >= y)] maps back to y
            w = s_hi + (1 - v) * (s_lo - s_hi)
            for guess in (y + 1.0, math.floor(mu) + 1.0, y + 40.0):
                assert K.count_quantile_sf(fam, mu, phi, w, guess) == y
    for w in (0.4, 1e-3, 1e-30):  # the quantile at 1 - w: P(Y > k) <= w < P(Y > k - 1)
        k = K.count_quantile_sf(fam, mu, phi, w, math.floor(mu) + 1.0)
        assert d.sf(k) <= w < d.sf(k - 1), (w, k)


def test_counterfactual_counts_far_above_their_mean_keep_their_value_under_a_tiny_change():
    """Before the upper-tail coupling, a count of 20 where the mean was 1.7 became 19-21 or ~195
    (F(y - 1) and F(y) both rounded to 1) under a change of the parent by 1e-9."""
    rng = np.random.default_rng(2)
    n = 300
    x = rng.normal(0.0, 1.0, n)
    c = rng.poisson(np.exp(0.5 + 0.3 * x))
    c[:4] = [20, 30, 45, 60]  # outliers far in the upper tail
    nb = rng.negative_binomial(2.0, 2.0 / (2.0 + np.exp(0.5 + 0.3 * x)))
    nb[:4] = [40, 80, 150, 300]
    df = pd.DataFrame({"x": x, "c": c, "nb": nb})
    scm = cw.SCM.from_dict({"name": "tail", "nodes": {
        "x": {}, "c": {"family": "poisson", "formula": "x"}, "nb": {"family": "negative_binomial", "formula": "x"}}})
    S = 200
    params = {"x__intercept": np.zeros((1, S)), "x__sigma": np.ones((1, S)),
              "c__intercept": np.full((1, S), 0.0), "c__b": np.full((1, S, 1), 0.3),
              "nb__intercept": np.full((1, S), 0.0), "nb__b": np.full((1, S, 1), 0.3), "nb__phi": np.full((1, S), 2.0)}
    post = posterior_from_params(scm, df, params, seed=0)
    for engine in ("generic", "fused"):
        cf = post.counterfactual(units=df.iloc[:4], do={"x": cw.shift(1e-9)}, engine=engine)
        np.testing.assert_array_equal(cf["c"], np.broadcast_to(c[:4], cf["c"].shape))
        np.testing.assert_array_equal(cf["nb"], np.broadcast_to(nb[:4], cf["nb"].shape))
        # a real change moves them monotonically, by a little: never to the other end of the tail
        up = post.counterfactual(units=df.iloc[:4], do={"x": cw.shift(0.5)}, engine=engine)
        assert np.all(up["c"] >= c[:4]) and np.all(up["c"] <= c[:4] + 3)


def test_absurd_count_means_answer_quickly():
    import time

    t0 = time.perf_counter()
    for mu in (1e12, 1e200):
        q = K.count_quantile(POISSON, mu, 0.0, 0.5)
        assert abs(q - mu) <= 1e-6 * mu  # normal approximation: the median of a huge Poisson is its mean
        lo, hi = K.count_cdf_pair(NEGBIN, mu, 2.0, 5)
        assert 0.0 <= lo <= hi <= 1.0
    assert K.count_quantile(POISSON, math.inf, 0.0, 0.5) == math.inf
    assert time.perf_counter() - t0 < 5.0  # bounded work, whatever the parameters


def test_counterfactuals_of_a_count_with_a_mean_in_the_thousands():
    # y ~ Poisson(exp(log 2000 + 0.02 x)): before the log-space walk, every CDF underflowed to 0 above a
    # mean of ~745 and each draw returned mean + 1
    rng = np.random.default_rng(1)
    n = 200
    x = rng.normal(size=n)
    y = rng.poisson(2000.0 * np.exp(0.02 * x))
    df = pd.DataFrame({"x": x, "y": y})
    scm = cw.SCM.from_dict({"name": "big", "nodes": {"x": {}, "y": {"family": "poisson", "formula": "x"}}})
    plan = make_plan(scm, df)
    xs = plan.scales["x"]
    one = lambda v: np.full((1, 400), v)  # noqa: E731 - one chain of identical draws
    # internal scale: x enters as (x - center) / scale, y's log link has offset log(mean y)
    params = {"x__intercept": one(0.0), "x__sigma": one(1.0),
              "y__intercept": one(math.log(2000.0) - plan.scales["y"].offset + 0.02 * xs.center),
              "y__b": one(0.02 * xs.scale)[..., None]}
    post = posterior_from_params(scm, df, params)
    draws = post.simulate(n=4000, seed=3).values
    sim, mu = draws["y"], 2000.0 * np.exp(0.02 * draws["x"])
    # closed form: E[y] = E[mu], Var[y] = E[mu] + Var[mu]
    assert abs(sim.mean() - mu.mean()) < 5 * math.sqrt((mu.mean() + mu.var()) / 4000)
    assert abs(sim.var() / (mu.mean() + mu.var()) - 1) < 5 * math.sqrt(2 / 4000)
    # Var[mu] is small beside the Poisson variance, so a sampler stuck at mean + 1 fails the second check.
    # Abduction: shifting x by +1 SD multiplies each unit's mean by exp(0.02 sd), and the monotone
    # coupling moves its count by about that factor; consistency holds exactly
    cf = post.counterfactual(units=df.iloc[:20], do={"x": df["x"].to_numpy()[:20]})
    assert np.all(cf["y"] == df["y"].to_numpy()[:20][None, :])
    moved = post.counterfactual(units=df.iloc[:20], do={"x": cw.shift(float(xs.scale))})["y"].mean(axis=0)
    ratio = moved / df["y"].to_numpy()[:20]
    assert abs(np.median(ratio) - math.exp(0.02 * xs.scale)) < 0.005


# ------------------------------------------------------------------ separation
def _warned(scm, df, no_sampling) -> list[str]:
    with pytest.warns(cw.DataWarning) as rec, pytest.raises(Reached):
        scm.fit(df)
    return [str(w.message) for w in rec if issubclass(w.category, cw.DataWarning)]


def test_complete_separation_warns_before_sampling(no_sampling):
    rng = np.random.default_rng(2)
    x, z = rng.normal(size=80), rng.normal(size=80)
    y = (x + 0.5 * z > 0.3).astype(int)  # a linear rule in both parents
    scm = cw.SCM.from_dict({"name": "sep", "nodes": {"x": {}, "z": {}, "y": {"family": "bernoulli",
                                                                             "formula": "x + z"}}})
    msgs = _warned(scm, pd.DataFrame({"x": x, "z": z, "y": y}), no_sampling)
    assert len(msgs) == 1 and "'y'" in msgs[0] and "perfectly separated by x + z" in msgs[0]


def test_quasi_complete_separation_by_a_binary_parent_warns(no_sampling):
    rng = np.random.default_rng(4)
    t = rng.integers(0, 2, 120)
    y = np.where(t == 1, 1, rng.integers(0, 2, 120))  # every treated unit has y = 1
    scm = cw.SCM.from_dict({"name": "q", "nodes": {"t": {"family": "bernoulli"},
                                                   "y": {"family": "bernoulli", "formula": "t"}}})
    msgs = _warned(scm, pd.DataFrame({"t": t, "y": y}), no_sampling)
    assert any("'y'" in m and "t = 1" in m and "quasi-complete" in m for m in msgs)


def test_constant_binary_outcome_warns(no_sampling):
    scm = cw.SCM.from_dict({"name": "c", "nodes": {"y": {"family": "bernoulli"}}})
    msgs = _warned(scm, pd.DataFrame({"y": np.ones(30, dtype=int)}), no_sampling)
    assert "'y'" in msgs[0] and "1 in every row" in msgs[0]


def test_separated_data_fit_and_the_results_say_so():
    rng = np.random.default_rng(5)
    x = rng.normal(size=60)
    df = pd.DataFrame({"x": x, "y": (x > 0).astype(int)})
    scm = cw.SCM.from_dict({"name": "sep", "nodes": {"x": {}, "y": {"family": "bernoulli", "formula": "x"}}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cw.ConvergenceWarning)
        with pytest.warns(cw.DataWarning, match="perfectly separated"):
            post = scm.fit(df, chains=1, draws=100, warmup=100, seed=0)
    eff = post.effect("y", do={"x": 1.0}, vs={"x": -1.0})
    assert np.all(np.isfinite(eff.draws)) and 0 < eff.mean() <= 1
    assert any("perfectly separated" in w for w in eff.warnings)


def test_ordinary_logistic_data_do_not_warn(no_sampling):
    scm = cw.SCM.from_dict({"name": "ok", "nodes": {"x": {}, "g": {"family": "bernoulli"},
                                                    "y": {"family": "bernoulli", "formula": "x + g"}}})
    for seed in range(10):
        rng = np.random.default_rng(seed)
        x, g = rng.normal(size=300), rng.integers(0, 2, 300)
        y = (rng.uniform(size=300) < 1 / (1 + np.exp(-(0.8 * x + g - 0.5)))).astype(int)
        assert check_data(make_plan(scm, pd.DataFrame({"x": x, "g": g, "y": y}))) == []


# ------------------------------------------------------------------ excess zeros
def _counts(family, n, seed, inflate):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    mu = np.exp(1.2 + 0.4 * x)
    y = rng.poisson(mu) if family == "poisson" else rng.negative_binomial(4.0, 4.0 / (4.0 + mu))
    y = np.where(rng.uniform(size=n) < inflate, 0, y)
    scm = cw.SCM.from_dict({"name": "z", "nodes": {"x": {}, "y": {"family": family, "formula": "x"}}})
    return scm, pd.DataFrame({"x": x, "y": y})


@pytest.mark.parametrize(("family", "inflate"), [("poisson", 0.3), ("negative_binomial", 0.45)])
def test_zero_inflated_counts_warn_before_sampling(family, inflate, no_sampling):
    scm, df = _counts(family, 600, 0, inflate)
    msgs = _warned(scm, df, no_sampling)
    assert len(msgs) == 1 and f"'y' ({family})" in msgs[0] and "zero-inflated" in msgs[0]
    assert f"has {int((df['y'] == 0).sum())} zeros" in msgs[0]


@pytest.mark.parametrize("family", ["poisson", "negative_binomial"])
def test_counts_without_extra_zeros_do_not_warn(family, no_sampling):
    for seed in range(10):
        scm, df = _counts(family, 600, seed, 0.0)
        assert check_data(make_plan(scm, df)) == [], seed


def test_a_constant_parent_warns_before_sampling(no_sampling):
    df = pd.DataFrame({"x": np.full(50, 3.0), "y": np.arange(50.0)})
    scm = cw.SCM.from_dict({"name": "const", "nodes": {"x": {}, "y": {"formula": "x"}}})
    with pytest.warns(cw.DataWarning, match=r"'x' is constant \(3.0 in every row\).*\['y'\]"), \
            pytest.raises(Reached):
        scm.fit(df)


def test_mcse_of_the_mean_is_unknown_with_too_few_draws_and_zero_for_a_constant():
    """With fewer than 4 draws per chain the ESS cannot be estimated: the MCSE is NaN, not a reassuring
    0 (before, it was 0). For independent draws it is close to sd / sqrt(n)."""
    from causal_wm.diagnostics import mcse_mean

    assert np.isnan(mcse_mean(np.array([[1.0, 2.0, 4.0]])))
    assert mcse_mean(np.full((2, 3), 5.0)) == 0.0
    x = np.random.default_rng(3).normal(0.0, 2.0, (4, 1000))
    # the ESS of 4,000 independent draws is itself estimated: within 10% of the n it should be
    assert mcse_mean(x) == pytest.approx(x.std() / np.sqrt(x.size), rel=0.1)
