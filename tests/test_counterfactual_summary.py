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
