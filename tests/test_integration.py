"""Declarative data integration: stacking and joining sources, filters, derived columns, checks."""

from __future__ import annotations

import pandas as pd
import pytest

import causal_wm as cw
from causal_wm.integration import load_data


def test_stack_two_shipped_tables_with_source_column():
    b = load_data({"sources": {"nsw": {"package": "causaldata", "table": "nsw_mixtape"},
                               "cps": {"package": "causaldata", "table": "cps_mixtape"}},
                   "stack": ["nsw", "cps"], "source_column": "source"})
    assert b.summary["rows"] == {"nsw": 445, "cps": 15992, "stacked": 16437, "after filter": 16437}
    assert b.frame["source"].value_counts().to_dict() == {"cps": 15992, "nsw": 445}


def test_join_reports_unmatched_and_rejects_duplicate_keys(tmp_path):
    pd.DataFrame({"id": [1, 2, 3], "x": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"id": [1, 2], "region": ["n", "s"]}).to_csv(tmp_path / "b.csv", index=False)
    spec = {"sources": {"a": {"path": "a.csv"}, "b": {"path": "b.csv"}},
            "join": {"left": "a", "right": "b", "on": "id", "how": "inner"}}
    b = load_data(spec, base=tmp_path)
    assert len(b.frame) == 2 and b.summary["join"]["unmatched_left_rows"] == 1
    pd.DataFrame({"id": [1, 1], "region": ["n", "s"]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(cw.DataError, match="not unique"):
        load_data(spec, base=tmp_path)


def test_filter_and_derive_are_data_not_code():
    b = load_data({"sources": {"a": {"package": "causaldata", "table": "nsw_mixtape"}},
                   "filter": [{"column": "age", "op": ">=", "value": 30}],
                   "derive": [{"name": "age2", "op": "square", "of": "age"},
                              {"name": "ratio", "op": "divide", "of": ["re75", "age"]}]})
    assert (b.frame["age"] >= 30).all()
    assert (b.frame["age2"] == b.frame["age"].astype(float) ** 2).all()
    with pytest.raises(cw.DataError, match="op"):
        load_data({"sources": {"a": {"package": "causaldata", "table": "nsw_mixtape"}},
                   "derive": [{"name": "z", "op": "__import__('os')", "of": "age"}]})
    with pytest.raises(cw.DataError, match="non-finite"):
        load_data({"sources": {"a": {"package": "causaldata", "table": "nsw_mixtape"}},
                   "derive": [{"name": "l", "op": "log", "of": "re74"}]})
    with pytest.raises(cw.DataError, match="Did you mean 'age'"):
        load_data({"sources": {"a": {"package": "causaldata", "table": "nsw_mixtape"}},
                   "filter": [{"column": "agee", "op": ">", "value": 1}]})


def test_one_source_applies_its_filter_derive_and_columns(tmp_path):
    pd.DataFrame({"age": [20, 35, 50], "y": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "d.csv", index=False)
    b = load_data({"path": "d.csv", "filter": [{"column": "age", "op": ">=", "value": 30}],
                   "derive": [{"name": "age2", "op": "square", "of": "age"}], "columns": ["age2", "y"]}, base=tmp_path)
    assert b.frame.to_dict("list") == {"age2": [35.0**2, 50.0**2], "y": [2.0, 3.0]}
    assert b.summary["rows"] == {"source": 3, "after filter": 2}
    assert load_data({"path": "d.csv"}, base=tmp_path).summary["rows"] == {"source": 3}


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ({"path": "d.csv", "fliter": []}, ["data: unknown key 'fliter'", "Did you mean 'filter'?"]),
        ({"path": "d.csv", "stack": ["a"]}, ["'stack' combines several sources", "'sources:'"]),
        ({"path": "d.csv", "filter": {"column": "age"}}, ["data.filter must be a list"]),
        ({"sources": {"a": {"path": "d.csv", "tabel": "x"}}}, ["data.sources.a: unknown key 'tabel'",
                                                               "Did you mean 'table'?"]),
        ({"sources": {"a": {"path": "d.csv"}}, "derive": "nonsense"}, ["data.derive must be a list"]),
    ],
)
def test_unknown_or_malformed_keys_in_a_data_block_are_errors(tmp_path, spec, fragments):
    pd.DataFrame({"age": [20, 35]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(cw.DataError) as err:
        load_data(spec, base=tmp_path)
    for f in fragments:
        assert f in str(err.value), (f, str(err.value))


def test_a_study_data_block_is_checked_at_load(tmp_path):
    (tmp_path / "m.yaml").write_text("name: m\nnodes:\n  age: {}\n")
    (tmp_path / "s.yaml").write_text("name: s\nmodel: m.yaml\ndata: {path: d.csv, fliter: 3}\n"
                                     "queries:\n  - {name: q, kind: simulate}\n")
    with pytest.raises(cw.StudyError, match=r"unknown key 'fliter'.*Did you mean 'filter'\? \[.*s\.yaml, line 3\]"):
        cw.Study.load(tmp_path / "s.yaml")


@pytest.fixture
def two(tmp_path):
    pd.DataFrame({"id": [1.0, 2.0, 3.0, None], "x": [1.0, None, 3.0, 4.0], "s": ["a", "b", "c", "d"]}).to_csv(
        tmp_path / "a.csv", index=False)
    pd.DataFrame({"id": [1.0, 2.0, None], "r": [10.0, 20.0, 30.0]}).to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame({"id": [1.0, 2.0], "x": [0.0, 0.0]}).to_csv(tmp_path / "c.csv", index=False)
    return tmp_path, {"a": {"path": "a.csv"}, "b": {"path": "b.csv"}}


@pytest.mark.parametrize(("extra", "match"), [
    ({"join": {"left": "a", "right": "b", "on": "id"}}, r"have a missing key \['id'\]"),  # NaN keys never match
    ({"join": {"left": "a", "right": "b", "on": ["id", ["x"]]}}, "on must be a key column"),
    ({"stack": ["a", "a"]}, "lists a source twice"),
    ({"stack": ["a"], "source_column": "s"}, "already has a column 's'"),
    ({"stack": ["a"], "filter": [{"column": "s", "op": ">=", "value": 3}]}, "cannot compare its values with 3"),
    ({"stack": ["a"], "filter": [{"column": "x", "op": ">=", "value": [1, 2]}]}, "for several values use op: in"),
    ({"stack": ["a"], "derive": [{"name": "s2", "op": "square", "of": "s"}]}, "needs numbers, and column 's'"),
    ({"stack": ["a"], "derive": [{"name": "x2", "op": "square", "of": 5}]}, "of must be a column"),
    ({"stack": ["a"], "derive": [{"name": ["x2"], "op": "square", "of": "x"}]}, "name and op must be text"),
])
def test_integration_mistakes_are_data_errors_naming_the_step(two, extra, match):
    base, sources = two
    spec = {"sources": sources, **extra}
    with pytest.raises(cw.DataError, match=match):
        load_data(spec, base=base)


def test_a_join_refuses_columns_in_both_sources_and_derive_keeps_missing_values(two):
    base, sources = two
    with pytest.raises(cw.DataError, match=r"columns \['x'\] are in both"):
        load_data({"sources": {"a": {"path": "a.csv", "filter": [{"column": "id", "op": ">=", "value": 0}]},
                               "c": {"path": "c.csv"}},
                   "join": {"left": "a", "right": "c", "on": "id"}}, base=base)
    # missing in, missing out (so that a missing: policy can act on it); equals keeps it missing too
    b = load_data({"sources": {"a": sources["a"]}, "stack": ["a"],
                   "derive": [{"name": "x2", "op": "square", "of": "x"},
                              {"name": "is3", "op": "equals", "of": "x", "value": 3.0}]}, base=base)
    assert b.frame["x2"].isna().tolist() == [False, True, False, False] and b.frame["x2"].iloc[2] == 9.0
    assert b.frame["is3"].isna().tolist() == [False, True, False, False] and b.frame["is3"].iloc[2] == 1.0
