"""Queries read what the user passes as it is meant: categorical values by label, boolean masks and
units by their index, an intervened outcome at its own value; bad values get a QueryError.

Posteriors are set by hand (:func:`causal_wm.testing.posterior_from_params`), so every expected
number is computed here from the data and the parameters.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import causal_wm as cw
from causal_wm.errors import QueryError
from causal_wm.testing import parameter_shapes, posterior_from_params

S = 200


def _post(scm_dict, df, seed=0, **fixed):
    """A posterior with every parameter drawn N(0, 0.3) (``fixed``: sites set to a value)."""
    scm = cw.SCM.from_dict(scm_dict)
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in parameter_shapes(scm, df).items():
        params[name] = np.full((1, S, *shape), fixed[name]) if name in fixed else rng.normal(0, 0.3, (1, S, *shape))
        if name.endswith(("__sigma", "__phi", "__nu")):
            params[name] = np.abs(params[name]) + 0.5
    return posterior_from_params(scm, df, params, seed=seed)


@pytest.fixture(scope="module")
def families():
    rng = np.random.default_rng(0)
    n = 120
    z = rng.normal(0, 1, n)
    df = pd.DataFrame({"z": z, "x": z + rng.normal(0, 1, n), "lx": np.exp(0.3 * z + rng.normal(0, 0.5, n)),
                       "c": rng.poisson(np.exp(0.5 + 0.3 * z)), "y": z + rng.normal(0, 1, n)})
    return df, _post({"name": "fam", "nodes": {
        "z": {}, "x": {"formula": "z"}, "lx": {"family": "lognormal", "formula": "z"},
        "c": {"family": "poisson", "formula": "z"}, "y": {"formula": "x + lx + c"}}}, df)


@pytest.mark.parametrize("engine", ["generic", "fused"])
@pytest.mark.parametrize("node", ["x", "lx", "c"])
def test_the_effect_of_shifting_a_node_on_itself_is_exactly_the_shift(families, node, engine):
    """Both worlds read the node's own value: do(x = x + 1) vs nothing is 1 for every unit and draw
    (before, the world without intervention used E[x | parents], so the effect carried noise)."""
    _, post = families
    eff = post.effect(node, do={node: cw.shift(1.0)}, engine=engine)
    np.testing.assert_allclose(eff.draws, 1.0, rtol=1e-12)
    if node != "c":  # (counts are shifted by whole numbers only)
        doubled = post.effect(node, do={node: cw.scale(2.0)}, engine=engine)  # 2x - x = x: the data's mean
        np.testing.assert_allclose(doubled.draws, post.plan.frame[node].mean(), rtol=1e-12)
    # an untouched outcome: exactly zero in every draw
    np.testing.assert_array_equal(post.effect("z", do={"x": 1.0}, engine=engine).draws, 0.0)


def test_simulate_hands_callables_the_labels_of_a_categorical_node():
    df = pd.DataFrame({"g": ["a", "b", "c", "a"] * 10, "y": np.arange(40.0)})
    post = _post({"name": "cat", "nodes": {"g": {"family": "categorical", "levels": ["a", "b", "c"]},
                                           "y": {"formula": "g"}}}, df)
    seen = []

    def to_c(v):
        seen.append(set(np.asarray(v).tolist()))
        return np.where(v == "a", "c", v)

    sim = post.simulate(do={"g": to_c}, n=500, seed=1)
    assert seen[0] <= {"a", "b", "c"} and "a" in seen[0]
    assert set(sim["g"].tolist()) <= {"b", "c"}
    # the summary has a row per level: the share of samples at it (none at "a" now)
    tab = sim.summary()
    np.testing.assert_allclose(tab.loc[["g[a]", "g[b]", "g[c]"], "estimate"].to_numpy(),
                               [0.0, (sim["g"] == "b").mean(), (sim["g"] == "c").mean()])
    assert "y" in tab.index
    base = post.simulate(n=500, seed=1)  # same noise: the units drawn as "b" stay "b"
    np.testing.assert_array_equal(sim["g"] == "b", base["g"] == "b")
    # integer levels: a callable that moves every unit up one level
    df2 = pd.DataFrame({"e": [1, 2, 3, 2] * 10, "y": np.arange(40.0)})
    post2 = _post({"name": "edu", "nodes": {"e": {"family": "categorical", "levels": [1, 2, 3]},
                                            "y": {"formula": "e"}}}, df2)
    base2 = post2.simulate(n=500, seed=2)["e"]
    up = post2.simulate(do={"e": lambda v: np.minimum(v + 1, 3)}, n=500, seed=2)["e"]
    np.testing.assert_array_equal(up.astype(int), np.minimum(base2.astype(int) + 1, 3))


def test_a_boolean_is_not_taken_for_an_integer_category():
    # True == 1 in Python: do(e=True) used to set e to level 1 of levels [0, 1, 2] without a word
    df = pd.DataFrame({"e": [0, 1, 2, 1] * 10, "y": np.arange(40.0)})
    post = _post({"name": "edu", "nodes": {"e": {"family": "categorical", "levels": [0, 1, 2]},
                                           "y": {"formula": "e"}}}, df)
    for bad in (True, np.bool_(False)):
        with pytest.raises(QueryError, match=r"not a category of 'e'; levels are \[0, 1, 2\]"):
            post.effect("y", do={"e": bad}, vs={"e": 0})
        with pytest.raises(QueryError, match=r"given: .* is not a category of 'e'"):
            post.effect("y", do={"e": 1}, vs={"e": 0}, given={"e": bad})
    assert np.isfinite(post.effect("y", do={"e": 1}, vs={"e": 0}, given={"e": 1}).mean())  # 1 is a level


def test_a_boolean_series_given_is_matched_by_label():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"x": rng.normal(0, 1, 80), "y": rng.normal(0, 1, 80)})
    post = _post({"name": "xy", "nodes": {"x": {}, "y": {"formula": "x"}}}, df)
    mask = df["x"] > 0.5
    by_array = post.effect("y", do={"x": cw.shift(1.0)}, given=mask.to_numpy())
    shuffled = mask.sample(frac=1.0, random_state=0)  # same labels, another order
    by_series = post.effect("y", do={"x": cw.shift(1.0)}, given=shuffled)
    np.testing.assert_array_equal(by_series.draws, by_array.draws)
    # a mask over a longer frame (e.g. the user's frame before rows were dropped) aligns too
    longer = pd.concat([mask, pd.Series([True], index=[999])])
    np.testing.assert_array_equal(post.effect("y", do={"x": cw.shift(1.0)}, given=longer).draws, by_array.draws)
    with pytest.raises(QueryError, match=r"given=<boolean Series>.*missing"):
        post.effect("y", do={"x": cw.shift(1.0)}, given=mask.iloc[:40])


@pytest.fixture(scope="module")
def latent():
    rng = np.random.default_rng(4)
    n = 60
    df = pd.DataFrame({"t": rng.normal(0, 1, n), "y": rng.normal(0, 1, n)}, index=np.arange(100, 100 + n))
    return df, _post({"name": "lat", "nodes": {"a": {"latent": True}, "t": {"formula": "a"},
                                                "y": {"formula": "t + a"}}}, df)


def test_units_of_a_latent_model_must_be_the_fitted_rows(latent):
    df, post = latent
    units = df.iloc[:3].copy()
    units["y"] = 100.0
    with pytest.raises(QueryError, match=r"column 'y' differs from the fitting data.*do="):
        post.counterfactual(units=units, do={"t": 0.0})
    # rows given by their index alone: the fitted values are used, and reported as factual
    res = post.counterfactual(units=df.iloc[:3][[]], do={"t": cw.shift(0.0)})
    pd.testing.assert_frame_equal(res.factual, df.iloc[:3], check_dtype=False)
    np.testing.assert_array_equal(res["y"], np.broadcast_to(df["y"].to_numpy()[:3], res["y"].shape))
    same = post.counterfactual(units=df.iloc[:3], do={"t": cw.shift(0.0)})
    np.testing.assert_array_equal(same["y"], res["y"])


def test_mediation_takes_the_level_of_a_categorical_outcome_and_refuses_no_mediators():
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"t": rng.integers(0, 2, 90), "m": rng.normal(0, 1, 90), "g": rng.choice(["a", "b", "c"], 90)})
    post = _post({"name": "med", "nodes": {"t": {"family": "bernoulli"}, "m": {"formula": "t"},
                                           "g": {"family": "categorical", "levels": ["a", "b", "c"],
                                                 "formula": "t + m"}}}, df)
    med = post.mediation("t", "m", "g", level="b")
    total = post.effect("g", do={"t": 1}, vs={"t": 0}, level="b")
    np.testing.assert_allclose(med.total.draws, total.draws, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(med.direct.draws + med.indirect.draws, med.total.draws, atol=1e-12)
    with pytest.raises(QueryError, match="non-empty"):
        post.mediation("t", [], "g", level="b")
    with pytest.raises(QueryError, match=r"level=.*not categorical"):
        post.effect("m", do={"t": 1}, level="b")


@pytest.mark.parametrize("bad", ["a", None, [1, 2], float("nan"), True])
def test_shift_and_scale_refuse_anything_but_one_finite_number(bad):
    with pytest.raises(QueryError, match=r"shift\(delta="):
        cw.shift(bad)
    with pytest.raises(QueryError, match=r"scale\(factor="):
        cw.scale(bad)


def test_a_shift_or_scale_past_float64s_range_is_refused_naming_the_node(families):
    df, post = families
    with pytest.raises(QueryError, match=r"do\(x=Scale\(factor=1e\+308\)\) takes 'x' past the largest"):
        post.effect("y", do={"x": cw.scale(1e308)})
    with pytest.raises(QueryError, match=r"do\(lx=Scale\(factor=1e\+308\)\) takes 'lx' past"):
        post.counterfactual(units=df, do={"lx": cw.scale(1e308)})


def test_summary_only_must_be_a_boolean(families):
    df, post = families
    with pytest.raises(QueryError, match="summary_only must be True or False"):
        post.counterfactual(units=df, do={"x": 0.0}, summary_only="no")


@pytest.mark.parametrize("engine", ["generic", "fused"])
def test_an_overflowing_counterfactual_or_simulation_is_refused_like_an_effect(families, engine):
    df, _ = families
    # slopes of 1 on z: every draw overflows (a draw with a slope near 0 would give a count mean in the
    # thousands, whose CDF walk a forced fused engine runs in lockstep: minutes, not the point here)
    post = _post({"name": "fam", "nodes": {
        "z": {}, "x": {"formula": "z"}, "lx": {"family": "lognormal", "formula": "z"},
        "c": {"family": "poisson", "formula": "z"}, "y": {"formula": "x + lx + c"}}}, df, c__b=1.0, lx__b=1.0)
    with pytest.raises(QueryError, match="overflowed"):
        post.effect("c", do={"z": 1e4}, engine=engine)
    for summary_only in (False, True):
        with pytest.raises(QueryError, match=r"counterfactual: 'lx' .*not finite"):
            post.counterfactual(units=df, do={"z": 1e4}, summary_only=summary_only, engine=engine)
    with pytest.raises(QueryError, match=r"simulate: 'lx' .*not finite"):
        post.simulate(do={"z": 1e4}, n=50)
    with pytest.raises(QueryError, match=r"simulate: 'lx' .*not finite"):  # below a lognormal's support
        post.simulate(do={"lx": cw.shift(-1e6)}, n=50)


def test_effects_identified_only_by_an_instrument_or_of_a_latent_node_warn():
    rng = np.random.default_rng(6)
    n = 100
    df = pd.DataFrame({"z": rng.integers(0, 2, n), "t": rng.normal(0, 1, n), "y": rng.normal(0, 1, n)})
    post = _post({"name": "iv", "nodes": {"z": {"family": "bernoulli"}, "U": {"latent": True},
                                          "t": {"formula": "z + U"}, "y": {"formula": "t + U"}}}, df)
    with pytest.warns(cw.IdentificationWarning, match=r"only by the instrument z .*parametric"):
        eff = post.effect("y", do={"t": cw.shift(1.0)})
    assert any("not identified" in w for w in eff.warnings)
    with pytest.warns(cw.IdentificationWarning, match=r"of latent \['U'\] is not identified by the data"):
        post.effect("y", do={"U": 1.0}, vs={"U": 0.0})
    # a back-door effect in the same model does not warn
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", cw.IdentificationWarning)
        assert not any("identified" in w for w in post.effect("t", do={"z": 1}, vs={"z": 0}).warnings)


def test_a_callable_that_raises_or_returns_the_wrong_shape_is_a_query_error_naming_the_node(families):
    """A user's function is user code: its failure comes back as a QueryError naming the node and
    what the function is given, in every query that calls it (before, its own exception escaped)."""
    df, post = families

    def broken(x):
        raise KeyError("salary")

    units = df.head(5)
    for call in (lambda: post.effect("y", do={"x": broken}),
                 lambda: post.counterfactual(units=units, do={"x": broken}),
                 lambda: post.simulate(do={"x": broken}, n=10)):
        with pytest.raises(QueryError, match=r"do\(x=<callable>\): the function raised KeyError: 'salary'") as err:
            call()
        assert isinstance(err.value.__cause__, KeyError)
    with pytest.raises(QueryError, match=r"do\(x=<callable>\): it must return one value per unit"):
        post.counterfactual(units=units, do={"x": lambda x: x[:2]})


def test_auto_leaves_count_walks_to_the_generic_kernel_on_the_cpu(families, monkeypatch):
    """XLA runs count CDF walks in lockstep (each element steps as often as the longest walk of its
    chunk): a counterfactual whose counts had means in the thousands took minutes. "auto" gives queries
    that abduct or redraw a count to the generic kernel; others still take the fused engine."""
    from causal_wm import fused

    df, post = families
    calls = []
    monkeypatch.setattr(fused, "AUTO_MIN_WORK", 0)  # "auto" would take the fused engine for any size
    real = fused.counterfactual_draws
    monkeypatch.setattr(fused, "counterfactual_draws", lambda *a, **k: calls.append(1) or real(*a, **k))
    walked = post.counterfactual(units=df.head(20), do={"z": 0.5})  # abducts the poisson node c
    assert calls == [] and walked["c"].shape == (S, 20)
    post.counterfactual(units=df.head(20), do={"x": 0.5})  # only y changes: no count walk
    assert calls == [1]
    # the same numbers as the forced engines
    np.testing.assert_array_equal(walked["c"], post.counterfactual(units=df.head(20), do={"z": 0.5},
                                                                   engine="generic")["c"])


def test_given_takes_any_list_like_of_values_and_refuses_values_that_are_not_categories():
    """pandas hands users Series, Index and extension arrays (``df.t.unique()``); before, anything
    but a list, tuple, set or ndarray was wrapped as one value, so an IntegerArray([1]) selected the
    controls and a Series of labels crashed in pyarrow; and a misspelt label in a list was ignored."""
    rng = np.random.default_rng(4)
    n = 90
    df = pd.DataFrame({"region": rng.choice(["north", "south", "east"], n), "t": rng.integers(0, 2, n)})
    df["y"] = df["t"] + (df["region"] == "north") + rng.normal(0, 1, n)
    post = _post({"name": "g", "nodes": {"region": {"family": "categorical"}, "t": {"family": "bernoulli"},
                                         "y": {"formula": "t + region"}}}, df)
    ns = {"north", "south"}
    want = post.effect("y", do={"t": 1}, vs={"t": 0}, given={"region": ["north", "south"], "t": [1]})
    assert want.n_units == int((df.region.isin(ns) & (df.t == 1)).sum())
    for regions, treated in ((pd.Series(["north", "south"]), pd.array([1], dtype="Int64")),
                             (pd.Index(["south", "north"]), np.array([1])),
                             (pd.array(["north", "south"], dtype="string"), pd.Series([True])),
                             ({"north", "south"}, df.t[df.t == 1].unique())):
        got = post.effect("y", do={"t": 1}, vs={"t": 0}, given={"region": regions, "t": treated})
        np.testing.assert_array_equal(got.draws, want.draws)
    with pytest.raises(QueryError, match="'suoth' is not a category of 'region'"):
        post.effect("y", do={"t": 1}, given={"region": ["north", "suoth"]})
    with pytest.raises(QueryError, match="'t' holds numbers, and 'yes' is not a number"):
        post.effect("y", do={"t": 1}, given={"t": "yes"})


def test_numbers_stored_as_text_categories_reach_callables_and_given_as_numbers():
    """A 0/1 column held as a pandas category of '0'/'1' (as some shipped tables are) is fitted as
    numbers; before, callables were handed the strings ('1' == 0 is False: every unit set to 0) and
    given={'t': 1} selected nobody."""
    rng = np.random.default_rng(5)
    n = 60
    t = rng.integers(0, 2, n)
    plain = pd.DataFrame({"t": t, "y": t + rng.normal(0, 1, n)})
    text = plain.assign(t=pd.Categorical(plain["t"].astype(str)))
    model = {"name": "c", "nodes": {"t": {"family": "bernoulli"}, "y": {"formula": "t"}}}
    a, b = _post(model, plain), _post(model, text)
    flip = lambda v: (v == 0).astype(int)  # noqa: E731
    np.testing.assert_array_equal(b.effect("y", do={"t": flip}, given={"t": 1}).draws,
                                  a.effect("y", do={"t": flip}, given={"t": 1}).draws)
    np.testing.assert_array_equal(b.counterfactual(units=text.head(6), do={"t": flip})["t"][0], 1 - t[:6])


def test_stochastic_policies_read_their_table_between_midpoints_and_refuse_what_they_cannot_be(families):
    """Entry i of a policy's table is its quantile at (i + 0.5) / M. Before, a continuous policy read
    half a cell high: the top value took 1/M of the draws and the bottom none. Per-unit parameters,
    an unfrozen scipy distribution and a NumPyro distribution got raw errors (or, with exactly 4,096
    units, a silently mixed table); a custom rv_discrete was interpolated like a continuous one."""
    from scipy import stats

    df, post = families
    x = np.asarray(post.simulate(do={"z": cw.uniform(0.0, 1.0)}, n=100_000)["z"]).ravel()
    lo, hi = x.min(), x.max()
    # the end values are the first and last midpoints, each with half a cell (1/8192: 12 of 100,000)
    np.testing.assert_allclose([lo, hi], [0.5 / 4096, 1 - 0.5 / 4096], rtol=1e-12)
    assert 3 <= (x == lo).sum() <= 30 and 3 <= (x == hi).sum() <= 30
    assert abs((x < 0.001).mean() - 0.001) < 4 * np.sqrt(0.001 / x.size)
    steps = stats.rv_discrete(values=([0, 2, 5], [0.2, 0.5, 0.3]))  # a pmf, no .dist
    c = np.asarray(post.simulate(do={"c": steps}, n=20_000)["c"]).ravel()
    assert set(np.unique(c)) == {0.0, 2.0, 5.0}
    for loc in (df["x"].to_numpy() + 1, np.linspace(0, 1, 4096)):  # (4,096: the table's own length)
        with pytest.raises(QueryError, match="per-unit values"):
            post.simulate(do={"x": stats.norm(loc, 0.1)}, n=len(loc))
    with pytest.raises(QueryError, match=r"frozen with its parameters \(e\.g\. scipy\.stats\.poisson\(4\)"):
        post.effect("y", do={"c": stats.poisson})
    with pytest.raises(QueryError, match="'c' is poisson \\(whole numbers\\), and the distribution is continuous"):
        post.effect("y", do={"c": stats.expon(1.0)})

    class NumPyroLike:  # callable, with sample and log_prob but no quantile function
        def __call__(self, *a, **k):
            raise KeyError("rng_key")

        def sample(self, key):
            return 0.0

        def log_prob(self, x):
            return 0.0

    with pytest.raises(QueryError, match=r"needs a quantile function \(ppf\)"):
        post.effect("y", do={"x": NumPyroLike()})


def test_simulation_mcse_counts_the_posterior_draws_the_samples_share():
    """n = 20,000 samples over 1,000 posterior draws: the mean's Monte Carlo error is
    sqrt(Var(E[z | draw]) / draws + Var(noise) / n), not sd / sqrt(n) (before: about half of it)."""
    df = pd.DataFrame({"z": np.random.default_rng(8).normal(5.0, 2.0, 300)})
    scm = cw.SCM.from_dict({"name": "m", "nodes": {"z": {}}})
    rng = np.random.default_rng(9)
    post = posterior_from_params(scm, df, {"z__intercept": rng.normal(0.0, 0.5, (2, 500)),
                                           "z__sigma": np.ones((2, 500))})
    sim = post.simulate(n=20_000, seed=1)
    scale = post.plan.scales["z"].scale
    truth = scale * np.sqrt(0.25 / 1000 + 1.0 / 20_000)
    got = sim.summary().loc["z", "mcse"]
    assert abs(got / truth - 1) < 0.25, (got, truth)
    assert got > 1.8 * np.asarray(sim["z"]).std() / np.sqrt(20_000)


def test_every_summary_carries_whether_its_fit_converged(families):
    """A summary table passed on alone said nothing of its fit; its attrs now hold the verdict,
    the diagnostics, the warnings and the seed (and an effect's repr flags a fit that failed)."""
    import dataclasses

    df, post = families
    eff = post.effect("y", do={"x": 1.0}, vs={"x": 0.0})
    for result in (eff, post.simulate(n=50), post.counterfactual(units=df.head(3), do={"x": 0.0}),
                   post.mediation("z", "x", "y", treat_value=1.0, control_value=0.0)):
        table = result.summary()
        assert table.attrs["converged"] is True and table.attrs["seed"] is not None
        assert "max_rhat" in table.attrs["diagnostics"]
    failed = dataclasses.replace(eff, diagnostics={**eff.diagnostics, "ok": False}, warnings=("R-hat 1.2",))
    assert failed.summary().attrs["converged"] is False and failed.summary().attrs["warnings"] == ["R-hat 1.2"]
    assert "FIT NOT CONVERGED" in repr(failed) and "NOT" not in repr(eff)


@pytest.mark.parametrize("nodes, warns", [
    # a latent mediator-outcome confounder: the total effect is identified, the split is not
    ({"u": {"latent": True}, "t": {"family": "bernoulli"}, "m": {"formula": "t + u"}, "y": {"formula": "t + m + u"}},
     "latent \\['u'\\] confounds the mediator and the outcome"),
    # a confounder of mediator and outcome that the treatment affects (a recanting witness)
    ({"t": {"family": "bernoulli"}, "L": {"formula": "t"}, "m": {"formula": "t + L"}, "y": {"formula": "t + m + L"}},
     "\\['L'\\], affected by the treatment, confounds"),
    # an observed confounder not affected by the treatment: identified, no warning
    ({"c": {}, "t": {"family": "bernoulli", "formula": "c"}, "m": {"formula": "t + c"}, "y": {"formula": "t + m + c"}},
     None),
])
def test_mediation_warns_where_natural_effects_are_not_identified(nodes, warns):
    """Before, mediation returned natural direct and indirect effects with no warning where the graph
    leaves them unidentified; the numbers are the model's cross-world answer, and now say so."""
    import warnings

    rng = np.random.default_rng(10)
    n = 80
    df = pd.DataFrame({k: rng.normal(size=n) for k in nodes if not nodes[k].get("latent")})
    df["t"] = rng.integers(0, 2, n)
    post = _post({"name": "med", "nodes": nodes}, df)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        med = post.mediation("t", "m", "y")
    said = [str(w.message) for w in caught if issubclass(w.category, cw.IdentificationWarning)]
    if warns is None:
        assert said == [] and med.direct.warnings == ()
    else:
        assert len(said) == 1 and re.search(warns, said[0]) and "not identified" in said[0]
        assert said[0] in med.direct.warnings and said[0] in med.indirect.warnings
        assert said[0] not in med.total.warnings


def test_an_effect_whose_mean_is_infinite_under_the_model_is_refused():
    """E[exp(b T)] is infinite when T is student_t: an exp-link outcome of a redrawn student_t node has
    no mean, and the engine returned 527 to 1.8e20 depending on the seed. A bounded node between them
    (binary) or a normal one instead keeps the mean finite, and those effects are answered."""
    rng = np.random.default_rng(11)
    n = 60
    df = pd.DataFrame({"t": rng.integers(0, 2, n), "m": rng.normal(size=n), "b": rng.integers(0, 2, n),
                       "y": np.exp(rng.normal(size=n))})
    heavy = {"t": {"family": "bernoulli"}, "m": {"family": "student_t", "formula": "t"},
             "y": {"family": "lognormal", "formula": "t + m"}}
    post = _post({"name": "h", "nodes": heavy}, df)
    for call in (lambda: post.effect("y", do={"t": 1}, vs={"t": 0}), lambda: post.mediation("t", "m", "y")):
        with pytest.raises(QueryError, match=r"E\[y\] is infinite.*student_t node \['m'\]"):
            call()
    assert np.isfinite(post.effect("m", do={"t": 1}, vs={"t": 0}).mean())  # the mediator's own mean exists
    for nodes in ({**heavy, "m": {"family": "normal", "formula": "t"}},
                  {**heavy, "b": {"family": "bernoulli", "formula": "m"}, "y": {"family": "lognormal",
                                                                                "formula": "t + b"}}):
        assert np.isfinite(_post({"name": "f", "nodes": nodes}, df).effect("y", do={"t": 1}, vs={"t": 0}).mean())


def test_results_record_interventions_as_data_not_reprs():
    """Before, results.json held '<scipy.stats...rv_discrete_frozen object at 0x7f...>' for a policy (its
    parameters lost, and two identical runs wrote different files) and 'Shift(delta=1.0)' for a shift."""
    import json

    df = pd.DataFrame({"t": [0, 1] * 20, "x": np.linspace(-1, 1, 40), "y": np.arange(40.0)})
    post = _post({"name": "rec", "nodes": {"t": {"family": "bernoulli"}, "x": {},
                                           "y": {"formula": "t + x"}}}, df)
    cases = [({"t": cw.bernoulli(0.3)}, {"t": {"distribution": "bernoulli", "p": 0.3}}),
             ({"x": cw.normal(1.0, 2.0)}, {"x": {"distribution": "normal", "loc": 1.0, "scale": 2.0}}),
             ({"x": cw.uniform(-1.0, 3.0)}, {"x": {"distribution": "uniform", "low": -1.0, "high": 3.0}}),
             ({"x": cw.shift(0.5)}, {"x": {"shift": 0.5}}), ({"x": cw.scale(2.0)}, {"x": {"scale": 2.0}}),
             ({"t": 1, "x": np.float64(0.25)}, {"t": 1, "x": 0.25})]
    for do, want in cases:
        rec = post.effect("y", do=do).to_dict()
        assert rec["do"] == want
        assert json.dumps(rec["do"]) == json.dumps(post.effect("y", do=do).to_dict()["do"])
    rec = post.simulate(do={"x": np.sin}, n=50, seed=1).to_dict()["do"]
    assert rec == {"x": {"callable": "numpy.sin"}}


def test_a_shift_that_takes_simulated_counts_below_zero_is_refused_and_messages_point_the_right_way():
    """Before, simulate(do={'visits': shift(-2)}) returned 43% negative counts (and children computed
    from them) without a word; shift on a binary node advised 'whole numbers'; a misspelt level= read
    as if level= had been left out."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"visits": rng.poisson(1.5, 60), "t": rng.integers(0, 2, 60),
                       "mode": rng.choice(["bus", "car", "walk"], 60)})
    df["y"] = df["visits"] + rng.normal(size=60)
    post = _post({"name": "c", "nodes": {"visits": {"family": "poisson"}, "t": {"family": "bernoulli"},
                                         "mode": {"family": "categorical", "formula": "t"},
                                         "y": {"formula": "visits + t"}}}, df)
    with pytest.raises(QueryError, match=r"simulate: do\(visits=...\) takes \d+ of 500 simulated counts of 'visits' "
                                         r"below zero"):
        post.simulate(do={"visits": cw.shift(-2)}, n=500, seed=1)
    sim = post.simulate(do={"visits": lambda v: np.maximum(v - 2, 0)}, n=500, seed=1)  # the advised form
    assert sim["visits"].min() >= 0
    assert post.simulate(do={"visits": cw.shift(2)}, n=500, seed=1)["visits"].min() >= 2
    with pytest.raises(QueryError, match=r"shift is not defined for bernoulli 't'; use cw.bernoulli\(p\)"):
        post.effect("y", do={"t": cw.shift(1)})
    with pytest.raises(QueryError, match=r"scale is not defined for categorical 'mode'; use a value"):
        post.effect("y", do={"mode": cw.scale(2)})
    with pytest.raises(QueryError, match=r"level='Car' is not a category of 'mode'.*Did you mean 'car'"):
        post.effect("mode", do={"t": 1}, vs={"t": 0}, level="Car")
    with pytest.raises(QueryError, match=r"pass level= one of \['bus', 'car', 'walk'\]"):
        post.effect("mode", do={"t": 1}, vs={"t": 0})


def test_a_fit_that_did_not_converge_is_flagged_on_every_result():
    """Before, counterfactual and simulate results printed their arrays with 'ok': False some 4,000
    characters in, their summaries' warnings were empty, and to_frame() and ppc() carried nothing."""
    df = pd.DataFrame({"x": np.linspace(-1, 1, 30), "y": np.arange(30.0)})
    scm = cw.SCM.from_dict({"name": "stuck", "nodes": {"x": {}, "y": {"formula": "x"}}})
    rng = np.random.default_rng(0)
    params = {}
    for name, shape in parameter_shapes(scm, df).items():
        p = rng.normal(0, 0.1, (2, S, *shape)) + np.array([0.0, 3.0]).reshape(2, 1, *[1] * len(shape))
        params[name] = np.abs(p) + 0.5 if name.endswith("__sigma") else p  # two chains far apart
    post = posterior_from_params(scm, df, params, seed=0)
    from causal_wm.diagnostics import diagnose

    post.__dict__["_diagnostics"] = diagnose(post.idata)  # hand-set draws are not diagnosed; these must be
    assert not post.ok
    sim = post.simulate(n=40, seed=1)
    cf = post.counterfactual(units=df.head(4), do={"x": 0.0})
    for result in (sim, cf, post.effect("y", do={"x": 1.0}, vs={"x": 0.0})):
        text = repr(result)
        assert "FIT NOT CONVERGED" in text and len(text) < 300, text
        table = result.summary()
        assert table.attrs["converged"] is False
        assert any(w.startswith("fit not converged: R-hat") for w in table.attrs["warnings"])
    for table in (sim.to_frame(), post.ppc(draws=20), cf.average()):
        assert table.attrs["converged"] is False and table.attrs["warnings"]
    assert "FIT NOT CONVERGED" not in repr(_post({"name": "fine", "nodes": {"x": {}, "y": {"formula": "x"}}},
                                                 df).simulate(n=10))
