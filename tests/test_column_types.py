"""Declared column types and ranges (checked on the data before sampling) and the integration summary
that travels with the fitting data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import causal_wm as cw
import causal_wm.backends.numpyro as numpyro_backend
from causal_wm.data import check_declared, prepare
from causal_wm.fitting import make_plan
from causal_wm.integration import load_data


@pytest.fixture
def no_sampling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("sampling started although the data break a declared type or range")

    monkeypatch.setattr(numpyro_backend, "sample", refuse)


def one(node: dict, name: str = "v") -> cw.SCM:
    return cw.SCM.from_dict({"name": "types", "nodes": {name: node}})


def test_types_default_to_the_family():
    expected = {"normal": "real", "student_t": "real", "lognormal": "positive", "bernoulli": "binary",
                "poisson": "count", "negative_binomial": "count", "categorical": "category"}
    for fam, t in expected.items():
        assert one({"family": fam}).node("v").column_type == t
    assert one({"family": "normal", "type": "count"}).node("v").column_type == "count"


@pytest.mark.parametrize("node, values, bad, rows", [
    ({"type": "binary"}, [0.0, 1.0, 2.0, 1.0, 0.5], [0.5, 2.0], ["r2", "r4"]),
    ({"type": "count"}, [0.0, 3.0, -1.0, 2.5, 7.0], [-1.0, 2.5], ["r2", "r3"]),
    ({"type": "positive"}, [1.0, 0.0, 2.0, -3.0, 4.0], [-3.0, 0.0], ["r1", "r3"]),
    ({"family": "categorical", "type": "binary"}, [0, 1, 1, 3, 0], [3], ["r3"]),
])
def test_declared_type_is_checked_before_sampling(node, values, bad, rows, no_sampling):
    df = pd.DataFrame({"v": values}, index=[f"r{i}" for i in range(len(values))])
    scm = one(node)
    with pytest.raises(cw.DataError) as e:
        scm.fit(df)
    msg = str(e.value)
    t = node["type"]
    for part in ("'v'", f"'type: {t}'", str(bad), str(rows), "change 'type:'"):
        assert part in msg, (part, msg)


def test_range_with_open_ends_names_values_rows_and_fix(no_sampling):
    df = pd.DataFrame({"age": [17.0, 30.0, 45.0, 99.0, 16.0]})
    with pytest.raises(cw.DataError) as e:
        one({"range": [18, None]}, "age").fit(df)
    msg = str(e.value)
    for part in ("'age'", "2 values outside its declared range [18, inf]", "[16.0, 17.0]", "rows [0, 4]",
                 "widen 'range:'"):
        assert part in msg, (part, msg)
    with pytest.raises(cw.DataError, match=r"range \[-inf, 50\]: \[99.0\] in rows \[3\]"):
        one({"range": [None, 50]}, "age").fit(df)
    check_declared(one({"range": [16, 99]}, "age"), df)  # inclusive ends: nothing raised


def test_missing_values_are_left_to_their_policy_and_dropped_rows_are_not_checked():
    df = pd.DataFrame({"x": [1.0, np.nan, 3.0, 4.0], "y": [0.0, -5.0, 1.0, np.nan]})
    scm = cw.SCM.from_dict({"nodes": {"x": {"missing": "drop", "type": "count"},
                                      "y": {"formula": "x", "missing": "impute", "range": [0, None]}}})
    kept, summary = prepare(scm, df)  # row 1's y = -5 is out of range, but row 1 is dropped (x missing)
    assert kept.index.tolist() == [0, 2, 3] and summary["imputed"] == {"y": 1}
    df.loc[2, "y"] = -1.0
    with pytest.raises(cw.DataError, match=r"'y' has 1 values outside .* \[-1.0\] in rows \[2\]"):
        prepare(scm, df)


def test_bool_and_category_columns():
    check_declared(one({"family": "bernoulli", "type": "binary"}), pd.DataFrame({"v": [True, False, True]}))
    scm = one({"family": "categorical", "type": "category"})
    check_declared(scm, pd.DataFrame({"v": ["a", "b", "a"]}))
    plan = make_plan(one({"family": "categorical", "type": "count"}), pd.DataFrame({"v": [0, 2, 1, 2]}))
    assert plan.scales["v"].levels == (0, 1, 2)


@pytest.mark.parametrize("node, words", [
    ({"family": "bernoulli", "type": "real"}, ["real column cannot come from a bernoulli", "normal or student_t"]),
    ({"type": "category"}, ["category column cannot come from a normal", "categorical"]),
    ({"family": "lognormal", "type": "count"}, ["count column cannot come from a lognormal"]),
    ({"type": "integer"}, ["'type' must be one of", "'integer'"]),
    ({"type": "cont"}, ["Did you mean 'count'?"]),
    ({"range": [5, 1]}, ["low > high"]),
    ({"range": [0, "ten"]}, ["'range' must be [low, high]"]),
    ({"range": 3}, ["'range' must be [low, high]"]),
    ({"range": [0, 1, 2]}, ["'range' must be [low, high]"]),
    ({"family": "categorical", "range": [0, 1]}, ["holds categories"]),
    ({"latent": True, "type": "real"}, ["latent", "no data column"]),
])
def test_bad_declarations_are_model_errors(node, words):
    with pytest.raises(cw.ModelSpecError) as e:
        one(node)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_declarations_round_trip_through_files(tmp_path):
    (tmp_path / "m.yaml").write_text(
        "name: m\nnodes:\n  kids: {family: poisson, type: count, range: [0, 20]}\n"
        "  income: {family: lognormal, formula: kids, range: [null, 1e6], missing: impute}\n")
    scm = cw.load_model(tmp_path / "m.yaml")
    assert scm.node("kids").range == (0, 20) and scm.node("income").range == (None, 1.0e6)
    d = scm.to_dict()
    assert d["nodes"]["kids"]["type"] == "count" and d["nodes"]["income"]["range"] == [None, 1.0e6]
    assert "type" not in d["nodes"]["income"]  # the default is not written back
    assert cw.SCM.from_dict(d).nodes == scm.nodes


def test_integration_summary_travels_into_the_plan(tmp_path):
    pd.DataFrame({"id": [1, 2, 3, 4], "x": [1.0, 2.0, 3.0, 4.0]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"id": [1, 2, 4], "y": [0.5, np.nan, 1.5]}).to_csv(tmp_path / "b.csv", index=False)
    bundle = load_data({"sources": {"a": {"path": "a.csv"}, "b": {"path": "b.csv"}},
                        "join": {"left": "a", "right": "b", "on": "id", "how": "inner"}}, base=tmp_path)
    scm = cw.SCM.from_dict({"nodes": {"x": {"type": "positive"}, "y": {"formula": "x", "missing": "drop"}}})
    plan = make_plan(scm, bundle.frame)
    s = plan.data_summary
    assert s["integration"]["rows"] == {"a": 4, "b": 3, "joined": 3, "after filter": 3}
    assert s["integration"]["join"]["unmatched_left_rows"] == 1
    assert (s["rows_in"], s["rows_dropped"], s["rows_used"], s["dropped"]) == (3, 1, 2, {"y": 1})
    # a plain DataFrame has no integration steps to report
    assert "integration" not in make_plan(scm, bundle.frame.reset_index(drop=True).copy().pipe(
        lambda f: pd.DataFrame(f.to_dict("list")))).data_summary


def test_a_category_written_as_n_a_is_explained_and_can_be_kept(tmp_path):
    """Before, a CSV whose category is the text "N/A" failed with "99 missing (NaN) values" in a file
    without any, and with that level declared and 'missing: drop', a quarter of the rows left the fit
    without a word."""
    from causal_wm.data_checks import check_data
    from causal_wm.errors import DataError
    from causal_wm.sources import load_source

    status = np.array(["yes", "no", "N/A", "no"] * 10)
    path = tmp_path / "survey.csv"
    pd.DataFrame({"status": status, "y": np.arange(40.0)}).to_csv(path, index=False)
    scm = cw.SCM.from_dict({"name": "s", "nodes": {"status": {"family": "categorical"},
                                                   "y": {"formula": "status"}}})
    default = load_source({"path": str(path)})
    assert default["status"].isna().sum() == 10  # pandas' reading, kept as the default
    with pytest.raises(DataError, match=r"10 missing .*the text \['N/A'\] in the file.*missing_text: \[''\]"):
        make_plan(scm, default)
    kept = load_source({"path": str(path), "missing_text": [""]})
    assert kept["status"].tolist() == status.tolist()
    plan = make_plan(scm, kept)
    assert list(plan.scales["status"].levels) == ["N/A", "no", "yes"]
    # declared but never seen (here: dropped as missing): a warning naming the level
    declared = cw.SCM.from_dict({"name": "s", "nodes": {
        "status": {"family": "categorical", "levels": ["no", "yes", "N/A"], "missing": "drop"},
        "y": {"formula": "status"}}})
    found = [w for w in check_data(make_plan(declared, default)) if "no rows at its level(s) ['N/A']" in w]
    assert found and "missing_text" in found[0]
    assert not [w for w in check_data(make_plan(declared, kept)) if "no rows at" in w]
    with pytest.raises(DataError, match="'missing_text' must be a list of texts"):
        load_source({"path": str(path), "missing_text": "N/A"})
