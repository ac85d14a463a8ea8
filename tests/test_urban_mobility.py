"""The synthetic city (causal_wm.synthetic.urban_mobility): its generator, its true effects, the naive
comparison that fails, the model and study that ship with it, and the engine recovering the truth.

The truths are checked against path coefficients worked out here from the structural equations, and
the naive comparisons are computed here with plain pandas. The shipped study (tests/test_study_files.py
runs it under ``slow``) expects each 90% interval to cover its truth; the slow test below fits a second
city, drawn with another seed, to show that recovery is not one seed's luck.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import causal_wm as cw
from causal_wm.sources import load_source
from causal_wm.synthetic import urban_mobility as um

ROOT = Path(__file__).resolve().parents[1]
P = um.PARAMS
SIZE = {k: um.SHIPPED[k] for k in ("n_districts", "households_per_district")}


@pytest.fixture(scope="module")
def city() -> pd.DataFrame:
    return um.simulate_city(**um.SHIPPED)


def _path_truths(df: pd.DataFrame) -> dict:
    """True effects by path analysis of the equations (every mechanism below the policies is linear)."""
    _, c_car, _, c_pr = P.congestion
    _, e_car, e_cong = P.emissions
    r_em = P.respiratory[1]

    def d_car(t, p, t0, p0):  # change in car share when the policies go from (t0, p0) to (t, p)
        return P.car_transit * (t - t0) + P.car_pricing * (p - p0) + P.car_both * (t * p - t0 * p0)

    def d_emissions(t, p, t0, p0):
        dc = d_car(t, p, t0, p0)
        return e_car * dc + e_cong * (c_car * dc + c_pr * (p - p0))

    T, Pr = df["transit"].to_numpy(float), df["pricing"].to_numpy(float)
    return {
        "transit_on_car_share": float(np.mean(d_car(1, Pr, 0, Pr))),
        "pricing_on_congestion": float(np.mean(c_car * d_car(T, 1, T, 0) + c_pr)),
        "package_on_emissions": d_emissions(1, 1, 0, 0),
        "transit_only_on_respiratory": r_em * d_emissions(1, 0, 0, 0),
        "pricing_only_on_respiratory": r_em * d_emissions(0, 1, 0, 0),
        "package_on_respiratory": r_em * d_emissions(1, 1, 0, 0),
        "car_share_cut_on_respiratory": r_em * (e_car + e_cong * c_car) * -10,
    }


# ------------------------------------------------------------------ the generator
def test_city_shape_and_district_level_variables(city):
    assert city.shape == (1000, 10) and list(city.columns) == list(um.COLUMNS)
    assert city["district"].nunique() == 40 and (city.groupby("district").size() == 25).all()
    per_district = city.groupby("district")[["density", "transit", "pricing"]].nunique()
    assert (per_district == 1).all().all()  # density and the policies are district attributes
    cells = city.groupby("district")[["transit", "pricing"]].first().value_counts()
    assert len(cells) == 4 and cells.min() >= 4  # every policy package occurs in several districts
    assert city.equals(um.simulate_city(**um.SHIPPED))  # one seed, one city


def test_intervening_keeps_the_households_and_their_noise(city):
    done = um.simulate_city(**um.SHIPPED, do={"transit": 1, "pricing": 0})
    for col in ("district", "density", "income", "green_space"):  # not downstream of the policies
        assert done[col].equals(city[col])
    assert (done["transit"] == 1).all() and (done["pricing"] == 0).all()
    # linear mechanisms with the same noise: the change in car share is the policy's coefficient exactly
    was = city[(city.transit == 0) & (city.pricing == 0)].index
    assert np.allclose(done.loc[was, "car_share"] - city.loc[was, "car_share"], P.car_transit)


def test_true_effects_match_path_analysis(city):
    paths = _path_truths(city)
    for name, outcome, do, vs in um.QUESTIONS:
        assert um.true_effect(outcome, do, vs, **um.SHIPPED) == pytest.approx(paths[name], abs=1e-9), name


def test_bad_interventions_and_sizes_are_errors():
    with pytest.raises(cw.QueryError, match=r"'income' cannot be intervened on"):
        um.true_effect("respiratory", {"income": 1}, {})
    with pytest.raises(cw.QueryError, match="a policy is 0 or 1"):
        um.simulate_city(4, 2, do={"transit": 2})
    with pytest.raises(cw.QueryError, match="n_districts must be an integer >= 2"):
        um.simulate_city(1, 2)
    with pytest.raises(cw.QueryError, match="not a node of the city"):
        um.true_effect("district", {"transit": 1}, {"transit": 0})


# ------------------------------------------------------------------ the naive comparison fails
def _district_means_difference(df: pd.DataFrame, outcome: str, a: dict, b: dict) -> tuple[float, float]:
    """Difference in household means between districts with policies ``a`` and ``b``, and its standard
    error with the district as the unit (households of a district share its density and its effects)."""
    def select(pol):
        mask = np.logical_and.reduce([df[k] == v for k, v in pol.items()])
        return df[mask]

    ga, gb = select(a), select(b)
    ma, mb = ga.groupby("district")[outcome].mean(), gb.groupby("district")[outcome].mean()
    se = np.sqrt(ma.var(ddof=1) / len(ma) + mb.var(ddof=1) / len(mb))
    return float(ga[outcome].mean() - gb[outcome].mean()), float(se)


# (pricing alone occurs in 4 districts only: its naive difference has the wrong sign too, but within its noise)
@pytest.mark.parametrize("name", ["transit_only_on_respiratory", "package_on_respiratory", "transit_on_car_share"])
def test_naive_comparison_is_biased_beyond_its_noise(city, name):
    _, outcome, do, vs = next(q for q in um.QUESTIONS if q[0] == name)
    truth = um.true_effect(outcome, do, vs, **um.SHIPPED)
    naive, se = _district_means_difference(city, outcome, do, vs)
    assert naive == pytest.approx(um.naive_difference(city, outcome, do, vs))
    assert abs(naive - truth) > 3 * se, (naive, truth, se)
    if outcome == "respiratory":  # dense districts got the policies: health looks worse where they are
        assert truth < 0 < naive


def test_naive_regression_on_car_share_gets_the_sign_wrong(city):
    x, y = city["car_share"].to_numpy(), city["respiratory"].to_numpy()
    slope = np.cov(x, y)[0, 1] / np.var(x, ddof=1)
    assert -10 * slope > 0 > um.true_effect("respiratory", {"car_share": {"shift": -10}}, {}, **um.SHIPPED)


# ------------------------------------------------------------------ model, data source and study files
def test_model_loads_its_data_offline_and_identifies_the_policies(city):
    scm = cw.load_model("urban_mobility")
    assert scm.load_data().equals(city)
    assert load_source({"package": "causal_wm", "table": "urban_mobility"}).equals(city)
    with pytest.raises(cw.DataError, match="Did you mean 'urban_mobility'"):
        load_source({"package": "causal_wm", "table": "urban_mobilty"})
    assert scm.latent == ("neighbourhood",)
    for treatment, outcome in ((["transit", "pricing"], "respiratory"), ("pricing", "congestion")):
        ident = scm.identify(treatment, outcome)
        assert ident.kind == "backdoor" and ident.adjustment_set == ("density",)
    assert scm.identify("car_share", "respiratory").is_identified  # through congestion and emissions


def test_study_asks_the_questions_and_expects_the_truth():
    study = yaml.safe_load((ROOT / "studies" / "urban_mobility.yaml").read_text())
    cw.Study.load(ROOT / "studies" / "urban_mobility.yaml")
    queries = {q["name"]: q for q in study["queries"]}
    expect = {e["query"]: e["interval_covers"] for e in study["expect"]}
    assert set(queries) == set(expect) == {q[0] for q in um.QUESTIONS}
    for name, outcome, do, vs in um.QUESTIONS:
        q = queries[name]
        assert (q["outcome"], q["do"], q.get("vs", {})) == (outcome, do, vs)
        assert expect[name] == pytest.approx(um.true_effect(outcome, do, vs, **um.SHIPPED), abs=5e-4)


def test_docs_page_shows_the_generated_truth_table():
    text = (ROOT / "docs" / "models" / "urban_mobility.md").read_text(encoding="utf-8")
    for r in um.truth_table().itertuples():
        row = rf"\|\s*`{r.question}`\s*\|\s*{r.outcome}\s*\|\s*{r.truth:.3f}\s*\|\s*{r.naive:.3f}\s*\|"
        assert re.search(row, text), row


# ------------------------------------------------------------------ the engine recovers the truth
@pytest.mark.slow
def test_engine_recovers_the_truth_in_a_second_city():
    # a city drawn with another seed than the shipped one, fitted as the study does
    seed = 101
    df = um.simulate_city(**SIZE, seed=seed)
    scm = cw.load_model("urban_mobility")
    with warnings.catch_warnings():
        warnings.simplefilter("error", cw.ConvergenceWarning)
        post = scm.fit(df, chains=2, draws=1000, warmup=1000, seed=1)
    assert post.ok, post.diagnostics().problems
    covered = 0
    for _, outcome, do, vs in um.QUESTIONS:
        do_ = {k: cw.shift(v["shift"]) if isinstance(v, dict) else v for k, v in do.items()}
        eff = post.effect(outcome, do=do_, vs=vs)
        truth = um.true_effect(outcome, do, vs, **SIZE, seed=seed)
        assert abs(eff.mean() - truth) < 3 * eff.sd(), (outcome, do, eff, truth)
        lo, hi = eff.interval(0.9)
        covered += lo <= truth <= hi
    assert covered >= 5  # of 7 correlated 90% intervals
