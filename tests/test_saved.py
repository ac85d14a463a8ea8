"""A saved fit (``causal-wm fit``, a study's results folder) loads as the posterior it was: the same
data of the same types, so the same categories in the same order; a folder whose parts do not belong
together is refused instead of answering with another fit's numbers.

Posteriors are set by hand (:func:`causal_wm.testing.posterior_from_params`): no sampling.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import causal_wm as cw
from causal_wm.errors import StudyError
from causal_wm.saved import TYPES_FILE, load_posterior, read_frame, write_frame
from causal_wm.study import save_fit
from causal_wm.testing import parameter_shapes, posterior_from_params

MODEL = {"name": "saved", "nodes": {
    "g": {"family": "categorical"}, "region": {"family": "categorical"}, "t": {"family": "bernoulli"},
    "y": {"formula": "g + region + t"}}}


def _frame(n=240, seed=0):
    """Labels a CSV reads back as something else: digit strings ("10" sorts before "2" as text, after
    it as a number), the label "NA" (read as missing), booleans, and unit labels with leading zeros."""
    rng = np.random.default_rng(seed)
    g = rng.choice(["1", "2", "10"], n)
    region = pd.Categorical(rng.choice(["EU", "NA", "AS"], n), categories=["NA", "EU", "AS", "OC"])
    t = rng.random(n) < 0.5
    y = np.where(g == "2", 5.0, np.where(g == "10", -5.0, 0.0)) + 2.0 * t + rng.normal(size=n)
    return pd.DataFrame({"g": g, "region": region, "t": t, "y": y}, index=[f"{i:04d}" for i in range(n)])


def _post(df, scm_dict=MODEL, seed=0):
    scm = cw.SCM.from_dict(scm_dict)
    rng = np.random.default_rng(seed)
    params = {k: (np.abs(rng.normal(0, 0.3, (1, 20, *s))) + 0.5 if k.endswith("sigma")
                  else rng.normal(0, 1.0, (1, 20, *s))) for k, s in parameter_shapes(scm, df).items()}
    return posterior_from_params(scm, df, params, seed=seed)


@pytest.fixture()
def saved(tmp_path):
    df = _frame()
    post = _post(df)
    return df, post, save_fit(post, tmp_path)


def test_a_saved_fit_loads_with_the_same_data_categories_and_answers(saved):
    """Before, data.csv was read back with pandas' guesses: "10" became 10 (so the categories
    re-sorted and the coefficients of levels "2" and "10" traded places, silently), "NA" became
    missing and "0001" became 1."""
    df, post, folder = saved
    loaded = load_posterior(folder)
    for name in ("g", "region", "t", "y"):
        assert loaded.plan.scales[name] == post.plan.scales[name], name
    assert loaded.plan.scales["g"].levels == ("1", "10", "2")
    assert list(loaded.plan.index) == list(df.index)
    pd.testing.assert_frame_equal(loaded.plan.frame, post.plan.frame)
    for do, vs in (({"g": "10"}, {"g": "2"}), ({"region": "NA"}, {"region": "EU"}), ({"t": 1}, {"t": 0})):
        np.testing.assert_array_equal(loaded.effect("y", do=do, vs=vs).draws, post.effect("y", do=do, vs=vs).draws)
    units = df.loc[["0001", "0007"]]
    np.testing.assert_array_equal(loaded.counterfactual(units=units, do={"g": "10"})["y"],
                                  post.counterfactual(units=units, do={"g": "10"})["y"])


def _rewrite_csv(folder, change):
    frame = pd.read_csv(folder / "data.csv", dtype=str, keep_default_na=False)
    change(frame)
    frame.to_csv(folder / "data.csv", index=False)


@pytest.mark.parametrize("tamper, fragment", [
    (lambda f: _rewrite_csv(f, lambda d: d.__setitem__("y", (d["y"].astype(float) * 10).astype(str))),
     "SHA-256 differs"),
    # the same in a folder without the recorded hash: the scales the fit stored differ
    (lambda f: (_rewrite_csv(f, lambda d: d.__setitem__("y", (d["y"].astype(float) * 10).astype(str))),
                (f / TYPES_FILE).write_text(json.dumps({k: v for k, v in json.loads((f / TYPES_FILE).read_text())
                                                        .items() if k != "sha256"}))),
     "node 'y' has center"),
    (lambda f: _rewrite_csv(f, lambda d: d.__setitem__("y", d["y"].iloc[::-1].to_numpy())), "SHA-256 differs"),
    (lambda f: (f / "model.yaml").write_text(yaml.safe_dump(
        {**MODEL, "nodes": {**MODEL["nodes"], "y": {"family": "student_t", "formula": "g + region + t"}}})),
     "no 'y__nu'"),
    (lambda f: (f / "model.yaml").write_text(yaml.safe_dump({**MODEL, "name": "other"})),
     "fit of model 'saved', model.yaml is 'other'"),
    (lambda f: (f / "manifest.json").write_text(json.dumps(
        {**json.loads((f / "manifest.json").read_text()),
         "settings": {**json.loads((f / "manifest.json").read_text())["settings"], "seed": "abc"}})),
     "seed 'abc'"),
])
def test_a_folder_whose_parts_do_not_belong_together_is_refused(saved, tamper, fragment):
    """Before, another model's posterior, or data changed after the fit, loaded without complaint and
    answered with wrong numbers (or failed later with a raw KeyError)."""
    _, _, folder = saved
    tamper(folder)
    with pytest.raises(StudyError, match=fragment):
        load_posterior(folder)


def test_a_folder_without_recorded_types_is_refused_where_its_categories_changed(saved):
    """A folder from before data_types.json: read with pandas' defaults, the labels "1", "2", "10" come
    back as numbers in another order (and "NA" as missing): loading stops instead of answering."""
    _, _, folder = saved
    (folder / TYPES_FILE).unlink()
    with pytest.raises(StudyError, match=r"no longer fit the saved model|node 'g' has categories"):
        load_posterior(folder)


def test_unusual_indexes_and_headers_give_a_posterior_that_saves_or_a_clear_error(tmp_path):
    """A (firm, year) MultiIndex or an index mixing ints and strings: the fit and queries worked but
    ``idata.to_netcdf()`` (and so a saved fit) failed with a raw TypeError; two levels of column
    headers passed the data checks and failed after sampling; a bool[pyarrow] bernoulli column was
    refused as not numeric."""
    rng = np.random.default_rng(2)
    n = 40
    base = pd.DataFrame({"x": rng.normal(size=n), "t": rng.random(n) < 0.5})
    base["y"] = base["x"] + base["t"] + rng.normal(size=n)
    model = {"name": "ix", "nodes": {"x": {}, "t": {"family": "bernoulli", "formula": "x"}, "y": {"formula": "x + t"}}}
    for index in (pd.MultiIndex.from_product([["a", "b"], range(2000, 2020)], names=["firm", "year"]),
                  pd.Index([i if i % 2 else f"u{i}" for i in range(n)], dtype=object)):
        post = _post(base.set_axis(index), model)
        post.idata.to_netcdf(tmp_path / "p.nc")
        assert list(post.idata.posterior.coords) and str(index[0]) in post.idata.observed_data["unit"].values
        assert save_fit(post, tmp_path / f"f{len(list(tmp_path.iterdir()))}").is_dir()
    with pytest.raises(cw.DataError, match="2 levels of column headers"):
        _post(base.set_axis(pd.MultiIndex.from_tuples([(c, "") for c in base.columns]), axis=1), model)
    pytest.importorskip("pyarrow")
    arrow = base.astype({"t": "bool[pyarrow]"})
    np.testing.assert_array_equal(_post(arrow, model).effect("y", do={"t": 1}, vs={"t": 0}).draws,
                                  _post(base, model).effect("y", do={"t": 1}, vs={"t": 0}).draws)


def test_units_of_a_latent_model_fitted_with_a_repeated_index_or_lacking_a_column_get_clear_errors():
    rng = np.random.default_rng(3)
    n = 30
    df = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n)})
    df["y"] = df["x"] + rng.normal(size=n)
    post = _post(df.set_axis([0, 0, *range(2, n)]), {"name": "lat", "nodes": {
        "u": {"latent": True}, "x": {"formula": "u"}, "y": {"formula": "x + u"}, "z": {}}})
    with pytest.raises(cw.QueryError, match=r"index repeats labels \(e\.g\. 0\).*reset_index"):
        post.counterfactual(units=post.plan.frame.iloc[2:4], do={"x": 0.0})
    plain = _post(df, {"name": "p", "nodes": {"x": {}, "y": {"formula": "x"}, "z": {}}})
    with pytest.raises(cw.DataError, match=r"column \['z'\] is missing from units"):
        plain.counterfactual(units=df[["x", "y"]], do={"x": 0.0})


def test_cli_query_reads_categories_as_labels_and_takes_a_level(saved):
    """`causal-wm query` parsed `--do g=10` as the number 10, which a saved fit whose labels are the
    strings "1", "2", "10" refuses; and it had no --level for a categorical outcome."""
    from typer.testing import CliRunner

    from causal_wm.cli import app

    df, post, folder = saved
    r = CliRunner().invoke(app, ["query", str(folder), "--outcome", "y", "--do", "g=10", "--vs", "g=2"])
    assert r.exit_code == 0, r.output
    want = post.effect("y", do={"g": "10"}, vs={"g": "2"}).mean()  # the table prints 6 significant digits
    assert abs(float(r.output.split("effect")[1].split()[0]) - want) < 1e-5 * max(1.0, abs(want))
    r = CliRunner().invoke(app, ["query", str(folder), "--outcome", "region", "--level", "NA", "--do", "region=NA"])
    assert r.exit_code == 0, r.output
    share = float((df["region"] == "NA").mean())  # do(region = NA) against its own value, per unit
    assert abs(float(r.output.split("effect")[1].split()[0]) - (1 - share)) < 1e-5


@pytest.mark.parametrize("as_category", [False, True])
def test_the_empty_label_comes_back_as_a_label_not_as_missing(tmp_path, as_category):
    """CSV writes the label "" as it writes a missing value; before, it came back missing."""
    g = np.array(["", "a", None, "b", ""] * 4, dtype=object)
    df = pd.DataFrame({"g": pd.Categorical(g, categories=["", "a", "b"]) if as_category else g,
                       "x": np.arange(20.0)}, index=[f"u{i}" for i in range(20)])
    write_frame(df, tmp_path)
    back = read_frame(tmp_path)
    assert back["g"].tolist()[:5] == ["", "a", back["g"].iloc[2], "b", ""] and pd.isna(back["g"].iloc[2])
    pd.testing.assert_frame_equal(back, df, check_index_type=False)

