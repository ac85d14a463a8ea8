"""Bad input gets a clear error, before any sampling starts.

Every check asserts the error *type* (a ``cw.CausalWMError`` subclass that is also a
``ValueError``) and that the message names the culprit and, where it can, the fix.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import causal_wm as cw
import causal_wm.backends.numpyro as numpyro_backend
import causal_wm.fitting

# ---------------------------------------------------------------------------------- helpers


def check(exc_type, *fragments):
    """``pytest.raises(exc_type)`` that also asserts each fragment appears in the message."""
    return _Check(exc_type, fragments)


class _Check:
    def __init__(self, exc_type, fragments):
        self.exc_type, self.fragments = exc_type, fragments

    def __enter__(self):
        self._ctx = pytest.raises(self.exc_type)
        self.info = self._ctx.__enter__()
        return self.info

    def __exit__(self, *exc):
        suppressed = self._ctx.__exit__(*exc)
        if not suppressed:  # another exception type: let it propagate
            return False
        err = self.info.value
        assert isinstance(err, cw.CausalWMError) and isinstance(err, ValueError), type(err)
        msg = str(err)
        for f in self.fragments:
            assert f in msg, f"{f!r} not in message: {msg}"
        return suppressed


def model(**nodes):
    return {"name": "m", "nodes": nodes}


def _no_sampling(*args, **kwargs):
    raise AssertionError("sampling started although the input was invalid")


@pytest.fixture
def no_sampling(monkeypatch):
    """Make any attempt to sample fail the test (everything before it still runs)."""
    monkeypatch.setattr(numpyro_backend, "sample", _no_sampling)


@pytest.fixture
def no_fit(monkeypatch):
    """Make any attempt to fit (for studies) or to sample fail the test."""
    monkeypatch.setattr(numpyro_backend, "sample", _no_sampling)
    monkeypatch.setattr(causal_wm.fitting, "fit", _no_sampling)


TOY = model(
    x={"family": "normal"},
    treat={"family": "bernoulli", "formula": "x"},
    c={"family": "poisson", "formula": "x"},
    w={"family": "lognormal"},
    g={"family": "categorical", "levels": ["a", "b", "c"]},
    y={"family": "normal", "formula": "treat + x + c + w + g"},
)


def toy_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "treat": rng.integers(0, 2, n),
            "c": rng.poisson(2.0, n),
            "w": rng.lognormal(size=n),
            "g": rng.choice(["a", "b", "c"], n),
            "y": rng.normal(size=n),
        },
        index=[f"u{i}" for i in range(n)],
    )


@pytest.fixture(scope="module")
def toy():
    return cw.SCM.from_dict(TOY)


@pytest.fixture(scope="module")
def post(toy):
    """One tiny fit shared by every query test of this module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cw.ConvergenceWarning)
        return toy.fit(toy_data(), chains=1, draws=100, warmup=100, seed=0)


# ---------------------------------------------------------------------------------- model spec


def test_error_family_subclasses_value_error():
    for cls in (cw.ModelSpecError, cw.DataError, cw.QueryError, cw.StudyError, cw.NotIdentifiable):
        assert issubclass(cls, cw.CausalWMError) and issubclass(cls, ValueError)


def test_cycle_names_the_path():
    with check(cw.ModelSpecError, "cycle", "a -> b -> c -> a", "acyclic") as info:
        cw.SCM.from_dict(model(a={"formula": "c"}, b={"formula": "a"}, c={"formula": "b"}))
    assert "remove one" in str(info.value)


def test_self_loop():
    with check(cw.ModelSpecError, "'y'", "itself"):
        cw.SCM.from_dict(model(y={"formula": "y"}))


def test_unknown_parent_suggests_close_name():
    with check(cw.ModelSpecError, "'y'", "'tret'", "Did you mean 'treat'?", "latent: true"):
        cw.SCM.from_dict(model(treat={}, y={"formula": "tret"}))


def test_bad_family_name():
    with check(cw.ModelSpecError, "'gausian'", "normal", "bernoulli"):
        cw.SCM.from_dict(model(y={"family": "gausian"}))
    with check(cw.ModelSpecError, "'y'", "'family' must be a string"):
        cw.SCM.from_dict(model(y={"family": 3}))


@pytest.mark.parametrize("name", ["my-var", "a__b", "1a", "re 78", "_x"])
def test_bad_node_name(name):
    with check(cw.ModelSpecError, repr(name), "single underscores"):
        cw.SCM.from_dict(model(**{name: {}}))


@pytest.mark.parametrize(
    ("formula", "culprit"),
    [("log(x)", "log(x)"), ("np.log(x)", "'.'"), ("I(x**2)", "**"), ("x**2", "'**'"),
     ("x + 3", "3"), ("x / z", "'/'"), ("x %in% z", "'%'"), ("{x + z}", "'{'")],
)
def test_formula_with_code_or_operators_is_refused(formula, culprit):
    with check(cw.ModelSpecError, "'y'", culprit, "derived column"):
        cw.SCM.from_dict(model(x={}, z={}, y={"formula": formula}))


def test_formula_bar_outside_parentheses():
    with check(cw.ModelSpecError, "'x|z'", "'(1 | g)'"):
        cw.SCM.from_dict(model(x={}, z={}, y={"formula": "x|z"}))


def test_formula_with_tilde():
    with check(cw.ModelSpecError, "'y'", "'~'", "right-hand side"):
        cw.SCM.from_dict(model(x={}, y={"formula": "y ~ x"}))


def test_formula_not_a_string_or_unparsable():
    with check(cw.ModelSpecError, "'y'", "must be a string"):
        cw.SCM.from_dict(model(x={}, y={"formula": 3}))
    with check(cw.ModelSpecError, "'y'", "'x +'", "cannot parse"):
        cw.SCM.from_dict(model(x={}, y={"formula": "x +"}))


def test_unknown_node_key():
    with check(cw.ModelSpecError, "'y'", "'famly'", "Did you mean 'family'?"):
        cw.SCM.from_dict(model(y={"famly": "normal"}))


def test_unknown_top_level_key():
    with check(cw.ModelSpecError, "'nodse'", "Did you mean 'nodes'?"):
        cw.SCM.from_dict({"name": "m", "nodse": {"y": {}}})


def test_model_shape_errors():
    with check(cw.ModelSpecError, "mapping"):
        cw.SCM.from_dict(["y"])
    with check(cw.ModelSpecError, "'nodes:'"):
        cw.SCM.from_dict({"name": "m", "nodes": {}})
    with check(cw.ModelSpecError, "'y'", "expected a mapping"):
        cw.SCM.from_dict(model(y="normal"))
    with check(cw.ModelSpecError, "'u'", "'latent' must be true or false"):
        cw.SCM.from_dict(model(u={"latent": "yes"}))
    with check(cw.ModelSpecError, "'data'", "path"):
        cw.SCM.from_dict({"name": "m", "nodes": {"y": {}}, "data": ["x.csv"]})


def test_levels_errors():
    with check(cw.ModelSpecError, "'u'", "only for categorical"):
        cw.SCM.from_dict(model(u={"levels": [1, 2]}))
    with check(cw.ModelSpecError, "'u'", "at least two distinct"):
        cw.SCM.from_dict(model(u={"family": "categorical", "levels": ["a", "a"]}))
    with check(cw.ModelSpecError, "'u'", "category labels"):
        cw.SCM.from_dict(model(u={"family": "categorical", "levels": [[1], [2]]}))


def test_grouping_variable_must_be_categorical():
    with check(cw.ModelSpecError, "'y'", "'g'", "categorical"):
        cw.SCM.from_dict(model(g={}, y={"formula": "(1 | g)"}))


def _prior_model(priors, family="normal", formula="x"):
    return model(x={}, y={"family": family, "formula": formula, "priors": priors})


@pytest.mark.parametrize(
    ("priors", "fragments"),
    [
        ({"sigma": {"dist": "halfnormall", "scale": 1}}, ["y.sigma", "'halfnormall'", "Did you mean 'halfnormal'?"]),
        ({"sigma": {"dist": ["a"], "scale": 1}}, ["y.sigma", "unknown distribution"]),
        ({"sigma": {"dist": "halfnormal"}}, ["y.sigma", "missing ['scale']"]),
        ({"sigma": {"dist": "halfnormal", "scale": 1, "loc": 0}}, ["y.sigma", "unexpected ['loc']"]),
        ({"intercept": {"dist": "normal", "loc": 0, "scale": -1}}, ["y.intercept", "scale must be positive", "-1"]),
        ({"intercept": {"dist": "normal", "loc": float("nan"), "scale": 1}}, ["y.intercept", "finite", "nan"]),
        ({"b": {"dist": "normal", "loc": 0, "scale": float("inf")}}, ["y.b", "finite"]),
        ({"sigma": {"dist": "halfnormal", "scale": "one"}}, ["y.sigma", "must be a number", "'one'"]),
        ({"sigma": 1.0}, ["y.sigma", "expected a mapping"]),
        ({"nu": {"dist": "gamma", "concentration": 2, "rate": 0.1}}, ["'y'", "'nu'", "normal node has"]),
        ({"b[z]": {"dist": "normal", "loc": 0, "scale": 1}}, ["'y'", "'b[z]'", "terms are ['x']"]),
        ({"b[x": {"dist": "normal", "loc": 0, "scale": 1}}, ["'y'", "'b[x'", "malformed"]),
        ({"sigma": {"dist": "normal", "loc": 0, "scale": 1}}, ["'y'", "'sigma'", "positive", "halfnormal"]),
        ({"sd": {"dist": "halfnormal", "scale": 1}}, ["'y'", "'sd'", "no effect", "no group terms"]),
    ],
)
def test_bad_prior(priors, fragments):
    with check(cw.ModelSpecError, *fragments):
        cw.SCM.from_dict(_prior_model(priors))


def test_prior_for_parameter_the_family_lacks():
    with check(cw.ModelSpecError, "'y'", "'sigma'", "bernoulli node has ['b', 'intercept', 'sd']"):
        cw.SCM.from_dict(_prior_model({"sigma": {"dist": "halfnormal", "scale": 1}}, family="bernoulli"))


def test_prior_naming_a_term_not_in_the_formula():
    with check(cw.ModelSpecError, "'b[treet]'", "Did you mean 'treat'?"):
        cw.SCM.from_dict(model(treat={}, y={"formula": "treat", "priors": {
            "b[treet]": {"dist": "normal", "loc": 0, "scale": 1}}}))


def test_prior_that_would_do_nothing():
    with check(cw.ModelSpecError, "'y'", "'b'", "no effect"):
        cw.SCM.from_dict(model(y={"priors": {"b": {"dist": "normal", "loc": 0, "scale": 1}}}))


def test_per_term_priors_of_one_parameter_must_share_a_distribution():
    with check(cw.ModelSpecError, "'y'", "'b'", "student_t"):
        cw.SCM.from_dict(model(a={}, x={}, y={"formula": "a + x", "priors": {
            "b[a]": {"dist": "student_t", "df": 3, "loc": 0, "scale": 1}}}))


def test_prior_lookup_of_unknown_parameter():
    node = cw.SCM.from_dict(model(y={})).node("y")
    with check(cw.ModelSpecError, "'zeta'", "intercept, b, sigma"):
        node.prior("zeta")


def test_latent_node_must_be_normal():
    with check(cw.ModelSpecError, "'u'", "latent", "'normal'", "'bernoulli'"):
        cw.SCM.from_dict(model(u={"family": "bernoulli", "latent": True}))


def test_errors_from_builder():
    with check(cw.ModelSpecError, "'y'", "'x'", "not a node"):
        cw.SCMBuilder("m").node("y", "normal", "x").build()


# ---------------------------------------------------------------------------------- data


def fit_with(toy, df, **kw):
    return toy.fit(df, chains=1, draws=10, warmup=10, **kw)


def test_valid_data_reaches_the_sampler(toy, no_sampling):
    # the guard works: valid input gets as far as the backend
    with pytest.raises(AssertionError, match="sampling started"):
        fit_with(toy, toy_data())


@pytest.mark.parametrize("data", [{"x": [1.0]}, np.zeros((3, 6)), None])
def test_data_not_a_dataframe(toy, no_sampling, data):
    with check(cw.DataError, "pandas DataFrame", type(data).__name__):
        fit_with(toy, data)


def test_empty_frame(toy, no_sampling):
    with check(cw.DataError, "'m'", "no rows"):
        fit_with(toy, toy_data().iloc[:0])


def test_missing_column_suggests_close_name(toy, no_sampling):
    with check(cw.DataError, "'treat'", "missing", "Did you mean 'treatment'?", "latent: true"):
        fit_with(toy, toy_data().rename(columns={"treat": "treatment"}))


def test_duplicate_column(toy, no_sampling):
    df = toy_data()
    with check(cw.DataError, "'x'", "2 times"):
        fit_with(toy, pd.concat([df, df[["x"]]], axis=1))


def test_nan_gives_count_and_row_labels(toy, no_sampling):
    df = toy_data()
    df.loc[["u3", "u7"], "x"] = np.nan
    with check(cw.DataError, "'x'", "2 missing", "['u3', 'u7']", "drop or impute"):
        fit_with(toy, df)


def test_nan_in_categorical(toy, no_sampling):
    df = toy_data()
    df.loc["u5", "g"] = None
    with check(cw.DataError, "'g'", "1 missing", "['u5']"):
        fit_with(toy, df)


def test_many_bad_rows_are_abbreviated(toy, no_sampling):
    df = toy_data()
    df["x"] = np.nan
    with check(cw.DataError, "40 missing", "and 32 more"):
        fit_with(toy, df)


def test_inf(toy, no_sampling):
    df = toy_data()
    df.loc["u4", "y"] = np.inf
    with check(cw.DataError, "'y'", "infinite", "['u4']", "finite"):
        fit_with(toy, df)


@pytest.mark.parametrize("values", [["a"] * 40, pd.date_range("2020", periods=40), np.ones(40) + 1j])
def test_non_numeric_column_for_normal_node(toy, no_sampling, values):
    df = toy_data()
    df["x"] = values
    with check(cw.DataError, "'x'", "normal", "needs numbers", "categorical"):
        fit_with(toy, df)


def test_bernoulli_column_with_a_two(toy, no_sampling):
    df = toy_data()
    df["treat"] = [0, 1, 2, 0] * 10
    with check(cw.DataError, "'treat'", "bernoulli", "0/1", "[2.0]", "'u2'"):
        fit_with(toy, df)


@pytest.mark.parametrize("bad", [-1, 1.5])
def test_poisson_column_out_of_support(toy, no_sampling, bad):
    df = toy_data().astype({"c": float})
    df.loc["u0", "c"] = bad
    with check(cw.DataError, "'c'", "poisson", "non-negative integers", f"[{float(bad)}]", "['u0']"):
        fit_with(toy, df)


@pytest.mark.parametrize("bad", [0.0, -2.0])
def test_lognormal_column_not_positive(toy, no_sampling, bad):
    df = toy_data()
    df.loc["u1", "w"] = bad
    with check(cw.DataError, "'w'", "lognormal", "positive", "['u1']"):
        fit_with(toy, df)


def test_categorical_value_outside_levels(toy, no_sampling):
    df = toy_data()
    df.loc["u6", "g"] = "z"
    with check(cw.DataError, "'g'", "['z']", "['a', 'b', 'c']", "['u6']"):
        fit_with(toy, df)


def test_categorical_with_a_single_category(no_sampling):
    scm = cw.SCM.from_dict(model(g={"family": "categorical"}))
    with check(cw.DataError, "'g'", "single category"):
        scm.fit(pd.DataFrame({"g": ["a"] * 5}))


@pytest.mark.parametrize(
    ("kw", "fragments"),
    [
        ({"chain": 2}, ["'chain'", "Did you mean 'chains'?"]),
        ({"chains": 0}, ["chains", ">= 1", "0"]),
        ({"draws": 2.5}, ["draws", "2.5"]),
        ({"target_accept": 1.5}, ["target_accept", "(0, 1)", "1.5"]),
        ({"backend": "stan"}, ["'stan'", "numpyro"]),
        ({"method": "hmc"}, ["'hmc'", "nuts"]),
        ({"seed": -1}, ["seed", "-1"]),
    ],
)
def test_bad_fit_settings(toy, no_sampling, kw, fragments):
    # a FitError, as DESIGN.md files fitting problems, and still a QueryError for callers that caught it
    with check(cw.FitSettingsError, *fragments) as caught:
        toy.fit(toy_data(), **kw)
    assert isinstance(caught.value, cw.FitError) and isinstance(caught.value, cw.QueryError)


def test_spec_and_data_are_checked_before_the_backend_is_touched(toy, monkeypatch):
    # even an import of the backend would be too late for a data error: it is checked first
    def no_backend(name):
        raise AssertionError("backend loaded although the data were invalid")

    monkeypatch.setattr(causal_wm.fitting, "backend_module", no_backend)
    df = toy_data()
    df.loc["u2", "treat"] = 3
    with pytest.raises(cw.DataError, match="'treat'"):
        toy.fit(df)


# ---------------------------------------------------------------------------------- queries


def test_unknown_outcome(post):
    with check(cw.QueryError, "'yy'", "Did you mean 'y'?", "Nodes are"):
        post.effect("yy", do={"treat": 1}, vs={"treat": 0})


@pytest.mark.parametrize(
    "query",
    [
        lambda p: p.effect("y", do={"tret": 1}, vs={"treat": 0}),
        lambda p: p.effect("y", do={"treat": 1}, vs={"tret": 0}),
        lambda p: p.simulate(do={"tret": 1}, n=5),
        lambda p: p.counterfactual(units=toy_data().iloc[:3], do={"tret": 0}),
    ],
    ids=["effect-do", "effect-vs", "simulate", "counterfactual"],
)
def test_misspelt_intervention_never_does_nothing(post, query):
    with check(cw.QueryError, "'tret'", "Did you mean 'treat'?"):
        query(post)


@pytest.mark.parametrize(
    ("do", "fragments"),
    [
        ({"treat": 2}, ["'treat'", "bernoulli", "0 or 1"]),
        ({"treat": True}, None),  # a bool is a 0/1 value: fine
        ({"c": -1}, ["'c'", "count", "non-negative integers"]),
        ({"c": 1.5}, ["'c'", "count", "non-negative integers"]),
        ({"w": 0}, ["'w'", "lognormal", "positive"]),
        ({"g": "z"}, ["'z'", "'g'", "['a', 'b', 'c']"]),
        ({"x": "high"}, ["do(x=...)", "expected numbers"]),
        ({"x": None}, ["do(x=None)", "expected a value"]),
    ],
)
def test_intervention_value_out_of_support(post, do, fragments):
    if fragments is None:
        post.effect("y", do=do, vs={"treat": 0})
        return
    with check(cw.QueryError, *fragments):
        post.effect("y", do=do, vs={"treat": 0})


def test_out_of_support_in_simulate_and_counterfactual(post):
    with check(cw.QueryError, "'treat'", "0 or 1"):
        post.simulate(do={"treat": 2}, n=5)
    with check(cw.QueryError, "'c'", "non-negative"):
        post.counterfactual(units=toy_data().iloc[:3], do={"c": -1})


@pytest.mark.parametrize("iv", [cw.shift(1.0), cw.scale(2.0)])
def test_shift_or_scale_of_a_bernoulli_node(post, iv):
    with check(cw.QueryError, "'treat'", "bernoulli", "not defined", "a value"):
        post.effect("y", do={"treat": iv})


def test_fractional_shift_of_a_count_and_negative_lognormal_scale(post):
    with check(cw.QueryError, "'c'", "whole numbers"):
        post.effect("y", do={"c": cw.shift(0.5)})
    with check(cw.QueryError, "'w'", "positive factor"):
        post.effect("y", do={"w": cw.scale(-1.0)})


def test_stochastic_policy_out_of_support(post):
    with check(cw.QueryError, "'treat'", "0 or 1"):
        post.effect("y", do={"treat": cw.normal(0.5, 1.0)})
    with check(cw.QueryError, "'w'", "positive"):
        post.effect("y", do={"w": cw.uniform(-1.0, 1.0)})
    with check(cw.QueryError, "do(treat=<distribution>)", "not finite"):
        post.effect("y", do={"treat": cw.bernoulli(2.0)})


def test_given_that_selects_no_units(post):
    with check(cw.QueryError, "x=12345", "selects no units"):
        post.effect("y", do={"treat": 1}, vs={"treat": 0}, given={"x": 12345})


def test_given_naming_unknown_node(post):
    with check(cw.QueryError, "given", "'blak'", "not a node"):
        post.effect("y", do={"treat": 1}, vs={"treat": 0}, given={"blak": 1})
    with check(cw.QueryError, "boolean mask of length 40"):
        post.effect("y", do={"treat": 1}, given=[True, False])


def test_do_must_be_a_non_empty_mapping(post):
    with check(cw.QueryError, "non-empty mapping"):
        post.effect("y", do={})
    with check(cw.QueryError, "mapping", "list"):
        post.simulate(do=["treat"], n=5)


@pytest.mark.parametrize("units", [[0, 1], np.zeros((2, 6)), "u1"])
def test_counterfactual_units_not_a_dataframe(post, units):
    with check(cw.QueryError, "units", "DataFrame", type(units).__name__):
        post.counterfactual(units=units, do={"treat": 0})


def test_counterfactual_units_empty(post):
    with check(cw.QueryError, "units is empty"):
        post.counterfactual(units=toy_data().iloc[:0], do={"treat": 0})


def test_counterfactual_units_with_bad_data(post):
    with check(cw.DataError, "'x'", "missing"):
        post.counterfactual(units=toy_data().drop(columns="x"), do={"treat": 0})


@pytest.mark.parametrize("v", [float("nan"), np.inf, -np.inf])
def test_non_finite_intervention_value(post, v):
    with check(cw.QueryError, "do(x=", "finite"):
        post.effect("y", do={"x": v})
    with check(cw.QueryError, "shift(delta=inf)", "finite"):  # refused when the shift is made
        cw.shift(np.inf)


def test_per_unit_values_of_wrong_length(post):
    with check(cw.QueryError, "do(x=...)", "length 3", "40 units"):
        post.effect("y", do={"x": np.zeros(3)})
    with check(cw.QueryError, "length 3", "5 units"):
        post.simulate(do={"x": np.zeros(3)}, n=5)
    with check(cw.QueryError, "length 2", "3 units"):
        post.counterfactual(units=toy_data().iloc[:3], do={"x": [1.0, 2.0]})


def test_per_unit_values_as_a_series_are_aligned_by_label(post):
    units = toy_data().iloc[:4]
    x = pd.Series([0.1, 0.2, 0.3, 0.4], index=units.index)
    by_label = post.counterfactual(units=units, do={"x": x[::-1]}, engine="generic")  # reversed rows
    assert np.allclose(by_label["x"][0], x.to_numpy())
    eff = post.effect("y", do={"x": pd.Series(np.arange(40.0), index=toy_data().index)[::-1]}, engine="generic")
    ref = post.effect("y", do={"x": np.arange(40.0)}, engine="generic")
    assert np.array_equal(eff.draws, ref.draws)
    with check(cw.QueryError, "do(x=<Series>)", "1 of the units' labels are missing", "'u3'",
               "array in the units' order"):
        post.counterfactual(units=units, do={"x": x.iloc[:3]})
    with check(cw.QueryError, "do(x=<Series>)", "missing", "'u0'"):  # a positional match would be silent
        post.counterfactual(units=units, do={"x": x.reset_index(drop=True)})
    with check(cw.QueryError, "vs(x=<Series>)", "repeated labels"):
        post.effect("y", do={"x": 0.0}, vs={"x": pd.Series(np.zeros(41), index=[*toy_data().index, "u0"])})


def test_callable_must_return_one_value_per_unit(post):
    with check(cw.QueryError, "do(x=<callable>)", "one value per unit"):
        post.effect("y", do={"x": lambda v: 1.0})
    with check(cw.QueryError, "'c'", "non-negative integers"):
        post.effect("y", do={"c": lambda v: v + 0.5})


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed(post, seed):
    with check(cw.QueryError, "seed", "non-negative integer", repr(seed)):
        post.effect("y", do={"treat": 1}, seed=seed)
    with check(cw.QueryError, "seed"):
        post.simulate(do={"treat": 1}, n=5, seed=seed)
    with check(cw.QueryError, "seed"):
        post.counterfactual(units=toy_data().iloc[:3], do={"treat": 1}, seed=seed)


def test_other_bad_query_arguments(post):
    with check(cw.QueryError, "n must be a positive integer", "0"):
        post.simulate(n=0)
    with check(cw.QueryError, "draws", "[1, 100]"):
        post.counterfactual(units=toy_data().iloc[:3], do={"treat": 0}, draws=0)
    with check(cw.QueryError, "'g'", "level=", "['a', 'b', 'c']"):
        post.effect("g", do={"x": 1.0})
    with check(cw.QueryError, "prob", "(0, 1)"):
        post.effect("y", do={"treat": 1}).interval(1.5)


# ---------------------------------------------------------------------------------- YAML files


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_model_file_that_does_not_exist(tmp_path):
    with check(cw.ModelSpecError, "nope.yaml", "does not exist"):
        cw.load_model(tmp_path / "nope.yaml")
    with check(cw.ModelSpecError, "folder"):
        cw.load_model(tmp_path)


def test_invalid_yaml(tmp_path):
    p = write(tmp_path, "bad.yaml", "name: m\nnodes: {y: [\n")
    with check(cw.ModelSpecError, str(p), "not valid YAML", "line"):
        cw.load_model(p)


def test_python_tag_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    p = write(tmp_path, "evil.yaml", f"name: !!python/object/apply:os.system ['touch {marker}']\nnodes: {{y: {{}}}}\n")
    with check(cw.ModelSpecError, str(p), "python/object/apply:os.system", "not allowed"):
        cw.load_model(p)
    assert not marker.exists()


def test_model_not_in_library_suggests():
    with check(cw.ModelSpecError, "'job_trainin'", "Did you mean 'job_training'?", "Available"):
        cw.load_model("job_trainin")
    with check(cw.ModelSpecError, "'modelz'", "Did you mean 'models'?"):
        cw.list_library("modelz")


def test_model_file_errors_give_file_and_line(tmp_path):
    p = write(tmp_path, "m.yaml", """\
        name: m
        nodes:
          x: {}
          y: {famly: normal}
        """)
    with check(cw.ModelSpecError, "'famly'", f"[{p}, line 4]"):
        cw.load_model(p)
    p = write(tmp_path, "m2.yaml", """\
        name: m
        nodse:
          x: {}
        """)
    with check(cw.ModelSpecError, "'nodse'", f"[{p}, line 2]"):
        cw.load_model(p)
    p = write(tmp_path, "m3.yaml", "name: m\nnodes:\n  x: {formula: y}\n  y: {formula: x}\n")
    with check(cw.ModelSpecError, "cycle", str(p)):
        cw.load_model(p)


def test_data_source_errors(tmp_path):
    from causal_wm.sources import load_source

    with check(cw.DataError, "missing.csv", "does not exist"):
        load_source({"path": "missing.csv"}, base=tmp_path)
    with check(cw.DataError, "'os'", "causaldata"):
        load_source({"package": "os", "table": "system"})
    with check(cw.DataError, "'nsw_mixtap'", "Did you mean 'nsw_mixtape'?"):
        load_source({"package": "causaldata", "table": "nsw_mixtap"})
    (tmp_path / "empty.csv").write_text("")
    with check(cw.DataError, "empty.csv", "could not be read"):
        load_source({"path": "empty.csv"}, base=tmp_path)
    with check(cw.DataError, "expected a mapping"):
        load_source("data.csv")


# ---------------------------------------------------------------------------------- study files

STUDY = """\
name: s
model: job_training
seed: 0
fit: {chains: 1, draws: 10, warmup: 10}
queries:
  - name: ate
    kind: effect
    outcome: re78
    do: {treat: 1}
    vs: {treat: 0}
  - name: sim
    kind: simulate
    do: {re74: {shift: 1000}}
    n: 100
"""


def study(tmp_path, text, name="study.yaml"):
    return cw.Study.load(write(tmp_path, name, text))


def test_valid_study_loads(tmp_path):
    assert study(tmp_path, STUDY).name == "s"


def test_study_description_must_be_text(tmp_path):
    with check(cw.StudyError, "'description' must be text", "['a', 'b']", "line 3"):
        study(tmp_path, STUDY.replace("seed: 0", "description: [a, b]\nseed: 0"))


def test_study_unknown_top_level_key_has_line(tmp_path):
    with check(cw.StudyError, "'expectt'", "line 15", "Did you mean 'expect'?"):
        study(tmp_path, STUDY + "expectt: []\n")


def test_study_unknown_query_kind(tmp_path):
    with check(cw.StudyError, "'ate'", "'efect'", "effect", "line 6"):
        study(tmp_path, STUDY.replace("kind: effect", "kind: efect"))


def test_study_unknown_key_inside_query(tmp_path):
    with check(cw.StudyError, "'ate'", "'givn'", "Did you mean 'given'?", "line 6"):
        study(tmp_path, STUDY.replace("outcome: re78", "outcome: re78\n    givn: {black: 1}"))


def test_study_duplicate_query_names(tmp_path):
    with check(cw.StudyError, "'ate'", "used twice"):
        study(tmp_path, STUDY + "  - {name: ate, kind: simulate}\n")


def test_study_expect_naming_unknown_query(tmp_path):
    with check(cw.StudyError, "'atee'", "Did you mean 'ate'?", "line 15"):
        study(tmp_path, STUDY + "expect:\n  - {query: atee, estimate_within: [0, 1]}\n")


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        ("{query: ate, estimate_in: [0, 1]}", ["'estimate_in'", "Did you mean 'estimate_within'?"]),
        ("{query: ate, estimate_within: [1]}", ["estimate_within", "malformed"]),
        ("{query: ate, prob_positive_above: 2}", ["prob_positive_above", "malformed"]),
        ("{query: sim, interval_covers: 0}", ["'sim'", "only effect queries"]),
    ],
)
def test_study_bad_expectation_is_caught_at_load(tmp_path, entry, fragments):
    with check(cw.StudyError, *fragments):
        study(tmp_path, STUDY + f"expect:\n  - {entry}\n")


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ("fit: {chains: 1,", "fit: {chain: 1,", ["'chain'", "Did you mean 'chains'?", "line 4"]),
        ("fit: {chains: 1,", "fit: {chains: 0,", ["chains", ">= 1", "line 4"]),
        ("seed: 0", "seed: -1", ["'seed'", "non-negative", "line 3"]),
        ("    do: {treat: 1}\n", "", ["'ate'", "needs 'do'"]),
        ("do: {treat: 1}", "do: [treat]", ["'ate'", "'do' must be a mapping"]),
        ("n: 100", "n: many", ["'sim'", "'n'", "positive integer"]),
        ("{shift: 1000}", "{shift: lots}", ["do.re74.shift", "number"]),
        ("- name: ate", "- name: [ate]", ["'name' (a string)"]),
        ("model: job_training\n", "", ["missing 'model:'"]),
    ],
)
def test_study_malformed_at_load(tmp_path, old, new, fragments):
    assert old in STUDY
    with check(cw.StudyError, *fragments):
        study(tmp_path, STUDY.replace(old, new))


def test_study_file_errors(tmp_path):
    with check(cw.StudyError, "nope.yaml", "does not exist"):
        cw.Study.load(tmp_path / "nope.yaml")
    with check(cw.StudyError, "not valid YAML"):
        study(tmp_path, "name: [unclosed\n")
    marker = tmp_path / "PWNED"
    with check(cw.StudyError, "not allowed"):
        study(tmp_path, f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    assert not marker.exists()
    with check(cw.StudyError, "no study called 'job_trainin'", "Did you mean 'job_training'?"):
        cw.Study.load("job_trainin")


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ("do: {treat: 1}", "do: {tret: 1}", ["'ate'", "'tret'", "Did you mean 'treat'?", "line 6"]),
        ("outcome: re78", "outcome: re87", ["'ate'", "'re87'", "Did you mean 're78'?"]),
        ("vs: {treat: 0}", "vs: {treat: 0}\n    given: {blak: 1}", ["'ate'", "'blak'", "Did you mean 'black'?"]),
        ("do: {treat: 1}", "do: {treat: 2}", ["'ate'", "'treat'", "0 or 1", "line 6"]),
        ("vs: {treat: 0}", "vs: {treat: 0}\n    given: {black: 7}", ["'ate'", "selects no units"]),
        ("do: {treat: 1}", "do: {treat: {distribution: normal, loc: 0, scale: 1}}", ["'ate'", "'treat'", "0 or 1"]),
    ],
)
def test_study_problems_found_before_any_sampling(tmp_path, no_fit, old, new, fragments):
    s = study(tmp_path, STUDY.replace(old, new))
    out = tmp_path / "results"
    with check(cw.StudyError, *fragments):
        s.run(out)
    assert not out.exists()  # nothing partial written


def test_study_file_users_get_fixes_they_can_write(tmp_path, no_fit):
    """Probing round 3: messages that named no file, showed True where the file said yes, or gave a fix
    in Python that a study or model file cannot hold."""
    from causal_wm.fitting import make_plan
    from causal_wm.sources import load_source

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"status": rng.choice(["no", "yes"], 40), "monthly income": rng.normal(size=40),
                       "y": rng.normal(size=40)})
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_csv(tmp_path / "semi.csv", index=False, sep=";")
    # a semicolon-separated file is named as such, not reported as a missing column
    with check(cw.DataError, "semi.csv", "separated by semicolons", "sep=';'"):
        load_source({"path": "semi.csv"}, base=tmp_path)
    # unquoted yes/no in YAML are booleans: the message says to quote them
    write(tmp_path, "m.yaml", "name: m\ndata: {path: d.csv}\nnodes:\n  status: {family: categorical, "
                              "levels: [no, yes]}\n  y: {formula: status}\n")
    scm = cw.load_model(tmp_path / "m.yaml")
    with check(cw.DataError, "'status'", "[False, True]", "quote them", "levels: ['no', 'yes']"):
        make_plan(scm, scm.load_data())
    # a column whose name cannot be a node's: rename it in the data source
    write(tmp_path, "m2.yaml", "name: m2\ndata: {path: d.csv}\nnodes:\n  monthly_income: {}\n"
                               "  y: {formula: monthly_income}\n")
    scm2 = cw.load_model(tmp_path / "m2.yaml")
    with check(cw.DataError, "'monthly_income'", "rename: {'monthly income': monthly_income}"):
        make_plan(scm2, scm2.load_data())
    write(tmp_path, "m3.yaml", "name: m3\ndata: {path: d.csv, rename: {monthly income: monthly_income}}\n"
                               "nodes:\n  monthly_income: {}\n  y: {formula: monthly_income}\n")
    renamed = cw.load_model(tmp_path / "m3.yaml").load_data()
    np.testing.assert_array_equal(renamed["monthly_income"], df["monthly income"])
    # a missing data file named in a model file names the model file
    write(tmp_path, "m4.yaml", "name: m4\ndata: {path: nowhere.csv}\nnodes:\n  y: {}\n")
    with check(cw.DataError, "nowhere.csv", "does not exist", "m4.yaml"):
        cw.load_model(tmp_path / "m4.yaml").load_data()
    # a shift that is not a finite number: the query's file and line, and a fix in study syntax
    text = STUDY.replace("do: {re74: {shift: 1000}}", "do: {re74: {shift: .nan}}")
    with check(cw.StudyError, "re74", "{shift: nan}", "one finite number", "{shift: 1000}", "study.yaml"):
        study(tmp_path, text)


def test_a_tab_in_a_study_file_says_to_indent_with_spaces(tmp_path):
    with check(cw.StudyError, "study.yaml", "line 7", "Indent with spaces"):
        study(tmp_path, STUDY.replace("    kind: effect", "\tkind: effect"))
