"""Every shipped study runs from the CLI with small draws and meets its expectations; a study file can
integrate data declaratively and ask mediation questions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from causal_wm.cli import app
from causal_wm.library import list_library

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_library("studies") if n != "job_training"])
def test_every_shipped_study_runs_and_meets_expectations(name, tmp_path):
    # job_training, the flagship, runs in the default suite (tests/test_study.py)
    # with the study's own fit settings: what a user runs, and what its convergence was checked at
    r = CliRunner().invoke(app, ["run", str(ROOT / "studies" / f"{name}.yaml"), "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / name / "results.json").read_text())
    assert all(c["passed"] for c in res["expect"])


def test_study_with_integrated_data_and_mediation(tmp_path):
    rng = np.random.default_rng(5)
    n = 800
    people = pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n), "t": rng.integers(0, 2, n)})
    people["m"] = 0.5 + people["t"] + 0.5 * people["x"] + rng.normal(size=n)
    people["y"] = 1 + 0.5 * people["t"] + 1.5 * people["m"] + rng.normal(size=n)
    people.iloc[: n // 2].to_csv(tmp_path / "wave1.csv", index=False)
    people.iloc[n // 2:].to_csv(tmp_path / "wave2.csv", index=False)
    (tmp_path / "model.yaml").write_text(
        "name: med\nnodes:\n  x: {}\n  t: {family: bernoulli}\n  m: {formula: 't + x'}\n  y: {formula: 't + m'}\n")
    (tmp_path / "study.yaml").write_text(
        "name: med_study\nmodel: model.yaml\nseed: 1\nfit: {chains: 2, draws: 1000, warmup: 500}\n"
        "data:\n  sources: {w1: {path: wave1.csv}, w2: {path: wave2.csv}}\n  stack: [w1, w2]\n"
        "  source_column: wave\n  filter: [{column: x, op: '>', value: -3}]\n"
        "queries:\n"
        "  - {name: total, kind: effect, outcome: y, do: {t: 1}, vs: {t: 0}}\n"
        "  - {name: med, kind: mediation, treatment: t, mediator: m, outcome: y}\n"
        "expect:\n  - {query: total, interval_covers: 2.0}\n")
    r = CliRunner().invoke(app, ["run", str(tmp_path / "study.yaml"), "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "med_study" / "results.json").read_text())
    rows = {row["quantity"]: row for row in res["queries"]["med"]["rows"]}
    # truth: NIE = 1 x 1.5, NDE = 0.5; within 3 posterior SDs (SD from the 90% interval's width)
    for label, truth in (("indirect (NIE)", 1.5), ("direct (NDE)", 0.5)):
        row = rows[label]
        sd = (row["upper"] - row["lower"]) / (2 * 1.645)
        assert abs(row["estimate"] - truth) < 3 * sd, (label, row)
    summary = pd.read_csv(tmp_path / "out" / "med_study" / "summary.csv")
    assert {"direct (NDE)", "indirect (NIE)"} <= set(summary["quantity"])
    assert (tmp_path / "out" / "med_study" / "report.html").is_file()
