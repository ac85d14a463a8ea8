"""CounterfactualResult.summary() for nodes reported by label (categorical outputs)."""

import numpy as np
import pandas as pd
import pytest

from causal_wm import SCM
from causal_wm.errors import QueryError
from causal_wm.testing import posterior_from_params

LEVELS = ["a", "b", "c"]
SCM_DICT = {"name": "toy", "nodes": {
    "t": {"family": "bernoulli"},
    "g": {"family": "categorical", "levels": LEVELS, "formula": "t"},
}}


@pytest.fixture(scope="module")
def cf():
    scm = SCM.from_dict(SCM_DICT)
    df = pd.DataFrame({"t": [0, 1, 0, 1, 0, 1], "g": ["a", "b", "c", "a", "b", "c"]})
    S = 400
    rng = np.random.default_rng(0)
    params = {"t__intercept": np.zeros((1, S)), "g__intercept": rng.normal(0, 0.3, (1, S, 2)),
              "g__b": np.broadcast_to(np.array([[1.5], [-1.0]]), (1, S, 2, 1)).copy()}
    post = posterior_from_params(scm, df, params, seed=3)
    return df, post.counterfactual(units=df, do={"t": 1})


def test_categorical_rows_are_level_probabilities_over_draws(cf):
    df, res = cf
    tab = res.summary(prob=0.9, node="g")
    assert set(tab["node"]) == {f"g[{v}]" for v in LEVELS}
    assert len(tab) == len(LEVELS) * len(df)
    draws = res["g"]
    for level in LEVELS:
        rows = tab[tab["node"] == f"g[{level}]"].set_index("unit")
        np.testing.assert_array_equal(rows["estimate"].to_numpy(), (draws == level).mean(axis=0))
        np.testing.assert_array_equal(rows["factual"].to_numpy(), (df["g"] == level).to_numpy().astype(float))
        # the predictive interval of the level indicator, as for a binary node
        lo, hi = np.quantile((draws == level).astype(float), [0.05, 0.95], axis=0)
        np.testing.assert_array_equal(rows["lower"].to_numpy(), lo)
        np.testing.assert_array_equal(rows["upper"].to_numpy(), hi)
    # per unit, the level probabilities sum to one
    np.testing.assert_allclose(tab.groupby("unit")["estimate"].sum().to_numpy(), 1.0)
    # consistency: units already treated keep their observed level in every draw
    treated = df.index[df["t"] == 1]
    own = tab[tab["unit"].isin(treated)]
    hit = own[own["node"] == "g[" + own["unit"].map(df["g"]) + "]"]
    np.testing.assert_array_equal(hit["estimate"].to_numpy(), 1.0)


def test_all_nodes_summary_mixes_numeric_and_categorical_rows(cf):
    _, res = cf
    tab = res.summary()
    assert {"t", "g[a]", "g[b]", "g[c]"} <= set(tab["node"])
    assert res.to_dict()["rows"]


@pytest.mark.parametrize("engine", ["generic", "fused"])
def test_summary_only_gives_the_level_rows_of_every_draw(engine, monkeypatch):
    """summary_only summarises a categorical node's levels as the all-draws result does, exactly,
    also when its draws are computed a few units at a time."""
    from causal_wm import queries

    scm = SCM.from_dict(SCM_DICT)
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"t": rng.integers(0, 2, 50), "g": rng.choice(LEVELS, 50)})
    S = 300
    params = {"t__intercept": np.zeros((1, S)), "g__intercept": rng.normal(0, 0.3, (1, S, 2)),
              "g__b": rng.normal(0, 1.0, (1, S, 2, 1))}
    post = posterior_from_params(scm, df, params, seed=3)
    full = post.counterfactual(units=df, do={"t": 1}, prob=0.8, engine=engine).summary()
    monkeypatch.setattr(queries, "LEVEL_CHUNK_BYTES", 8 * S * 7)  # 7 units per chunk
    reduced = post.counterfactual(units=df, do={"t": 1}, summary_only=True, prob=0.8, engine=engine)
    pd.testing.assert_frame_equal(reduced.summary(), full)
    assert set(reduced.summary()["node"]) == {"t", "g[a]", "g[b]", "g[c]"}
    assert reduced.to_dict()["rows"]
    with pytest.raises(QueryError, match=r"prob=0\.8"):
        reduced.summary(prob=0.5)


def _binary_cf(summary_only=False, S=4000):
    """do(t=0) for treated units of y ~ bernoulli(logit a + b t), the same (a, b) in every draw: a unit
    with y = 1 keeps it with probability q = p0 / p1 under the monotone coupling, one with y = 0 keeps 0,
    so the per-draw mean over units is exactly Binomial(n1, q) / n."""
    from causal_wm.testing import parameter_shapes

    scm = SCM.from_dict({"name": "bin", "nodes": {"t": {"family": "bernoulli"},
                                                  "y": {"family": "bernoulli", "formula": "t"}}})
    df = pd.DataFrame({"t": [1] * 60 + [0] * 20, "y": [1] * 40 + [0] * 20 + [1] * 10 + [0] * 10})
    a, b = -0.5, 1.5
    params = {k: np.full((1, S, *shape), {"t__intercept": 0.0, "y__intercept": a}.get(k, b))
              for k, shape in parameter_shapes(scm, df).items()}
    post = posterior_from_params(scm, df, params, seed=5)
    units = df[df.t == 1]
    q = (1 / (1 + np.exp(-a))) / (1 / (1 + np.exp(-(a + b))))
    return post.counterfactual(units=units, do={"t": 0}, summary_only=summary_only, engine="generic"), 40, 60, q


def test_the_mean_over_units_has_the_interval_of_its_posterior_not_the_units_average_interval():
    """Before, a study's '(mean over N units)' row averaged the units' own interval bounds: [0, 0.67]
    here, where the mean over units lies in about [0.33, 0.52]."""
    from scipy import stats

    res, n1, n, q = _binary_cf()
    avg = res.average(0.9).loc["y"]
    truth = stats.binom(n1, q)
    assert abs(avg["estimate"] - n1 * q / n) < 4 * avg["mcse"] + 1e-12
    # 4,000 draws: the 5% and 95% quantiles of a binomial / n land within one unit of its own
    assert abs(avg["lower"] - truth.ppf(0.05) / n) <= 1.01 / n
    assert abs(avg["upper"] - truth.ppf(0.95) / n) <= 1.01 / n
    assert avg["factual"] == pytest.approx(n1 / n)
    units = res.summary(0.9)
    units = units[units["node"] == "y"]
    assert units["upper"].mean() - units["lower"].mean() > 2 * (avg["upper"] - avg["lower"])  # the old, wrong width
    # the study's rows and results.json carry the same numbers
    from causal_wm.study import _summary_rows

    row = next(r for r in _summary_rows("cf", res) if r["quantity"].startswith("y "))
    assert (row["estimate"], row["lower"], row["upper"]) == (avg["estimate"], avg["lower"], avg["upper"])
    assert row["quantity"] == f"y (mean over {n} units)"
    assert res.to_dict()["average"][[a["node"] for a in res.to_dict()["average"]].index("y")]["lower"] == avg["lower"]


def test_summary_only_gives_the_mean_over_units_without_an_interval_and_says_why():
    res, *_ = _binary_cf(summary_only=True, S=400)
    full, *_ = _binary_cf(S=400)
    avg, ref = res.average(), full.average()
    assert avg.loc["y", "estimate"] == pytest.approx(ref.loc["y", "estimate"], abs=1e-12)
    assert avg.loc["y", ["sd", "lower", "upper", "mcse"]].isna().all()
    assert any("summary_only kept no draws" in w for w in avg.attrs["warnings"])
    assert res.to_dict()["average_notes"]


def test_the_level_shares_of_a_categorical_node_average_per_draw(cf):
    df, res = cf
    avg = res.average(0.9)
    shares = np.stack([(res["g"] == lv).mean(axis=1) for lv in LEVELS])  # (levels, draws)
    np.testing.assert_allclose(avg.loc[[f"g[{lv}]" for lv in LEVELS], "estimate"].to_numpy(), shares.mean(axis=1))
    np.testing.assert_allclose(avg.loc[[f"g[{lv}]" for lv in LEVELS], "estimate"].sum(), 1.0)
    np.testing.assert_allclose(avg.loc["g[a]", ["lower", "upper"]].to_numpy(float),
                               np.quantile(shares[0], [0.05, 0.95]))
    assert avg.loc["g[b]", "factual"] == pytest.approx((df["g"] == "b").mean())


def test_a_counterfactual_with_no_affected_node_still_summarises():
    from causal_wm.results import CounterfactualResult

    cf = CounterfactualResult({}, pd.DataFrame({"y": [1.0, 2.0]}), {"t": 0}, 0, {})
    assert cf.summary().empty and cf.average().empty and cf.to_dict()["average"] == []
