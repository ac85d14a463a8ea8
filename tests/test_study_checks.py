"""Study-level checks (``checks:``) and expectations on mediation queries (``expect:`` with ``part:``).

One small study on data simulated here with known effects runs all four check kinds; its
results.json, its report and a re-rendered report are checked. Malformed entries fail at load.
"""

from __future__ import annotations

import html
import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import causal_wm as cw
import causal_wm.checks
from causal_wm.cli import app
from causal_wm.study import run_checks

# y = 1 + 0.5 t + 1.5 m + x + 0.7 w + e, m = 0.5 + t + e, t = 0.8 x + e: the total effect of one unit of t
# on y is 0.5 + 1.5 * 1.0 = 2.0, its indirect part through m 1.5, its direct part 0.5; on m it is 1.0.
# Triangulation looks at t -> m: DoWhy bootstraps the regression interval (minutes on 2 cores) when the
# outcome has parents other than the treatment and its confounders, as y has; m has none. A continuous
# treatment needs no propensity-weighting bootstrap (tests/test_checks.py covers the estimators).
TOTAL, INDIRECT, DIRECT, ON_M = 2.0, 1.5, 0.5, 1.0
MODEL = """name: toy_checks
nodes:
  x: {}
  w: {}
  t: {formula: "x"}
  m: {formula: "t"}
  y: {formula: "t + m + x + w"}
"""
FAILING = "<b>estimator</b> exploded"


def simulate(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=n), rng.normal(size=n)
    t = 0.8 * x + rng.normal(size=n)
    m = 0.5 + 1.0 * t + rng.normal(size=n)
    y = 1 + DIRECT * t + 1.5 * m + x + 0.7 * w + rng.normal(size=n)
    return pd.DataFrame({"x": x, "w": w, "t": t, "m": m, "y": y})


STUDY = """name: toy_study
model: model.yaml
data: {path: data.csv}
seed: 3
fit: {chains: 2, draws: 300, warmup: 300}
queries:
  - {name: ate, kind: effect, outcome: y, do: {t: 1}, vs: {t: 0}}
  - {name: med, kind: mediation, treatment: t, mediator: m, outcome: y}
  - {name: t_on_m, kind: effect, outcome: m, do: {t: {shift: 1}}}
expect:
  - {query: med, part: indirect, estimate_within: [1.0, 2.0]}
  - {query: med, part: total, estimate_within: [1.4, 2.6], prob_positive_above: 0.95}
  - {query: med, part: direct, estimate_within: [5.0, 6.0]}
checks:
  - {kind: triangulate, outcome: m, treatment: t}
  - {kind: refute, outcome: y, treatment: t, num_simulations: 10}
  - {kind: sensitivity, outcome: y, treatment: t, strengths: [0.0, 0.5], draws: 100, chains: 1, warmup: 100}
  - {kind: falsify}
  - {kind: refute, outcome: m, treatment: t, num_simulations: 10}
"""


def _write(folder: Path, study: str = STUDY, model: str = MODEL) -> Path:
    (folder / "model.yaml").write_text(model)
    (folder / "study.yaml").write_text(study)
    return folder / "study.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The study run once; the refute of t on m is made to fail inside its estimator."""
    src = tmp_path_factory.mktemp("src")
    simulate(600, seed=11).to_csv(src / "data.csv", index=False)
    path = _write(src)
    original = causal_wm.checks.refute

    def refute(post, outcome, treatment, **kw):
        if outcome == "m":
            raise RuntimeError(FAILING)
        return original(post, outcome, treatment, **kw)

    out = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setattr(causal_wm.checks, "refute", refute)
        warnings.simplefilter("ignore", cw.ConvergenceWarning)  # few draws; the report says so if it happens
        with pytest.raises(cw.StudyError, match=r"expectations failed: med \(direct effect\)") as err:
            cw.Study.load(path).run(out)
    folder = out / "toy_study"
    res = json.loads((folder / "results.json").read_text())
    return SimpleNamespace(folder=folder, res=res, checks=res["checks"], error=str(err.value))


def _sd(row) -> float:
    """Posterior (or sampling) SD from a 90% interval."""
    return (row["upper"] - row["lower"]) / (2 * 1.645)


# ------------------------------------------------------------------ results.json
def test_every_check_is_recorded_in_order(run):
    assert [c["kind"] for c in run.checks] == ["triangulate", "refute", "sensitivity", "falsify", "refute"]
    assert [c["status"] for c in run.checks] == ["ok", "ok", "ok", "ok", "failed"]
    assert all(c["seconds"] >= 0 for c in run.checks)


def test_triangulation_rows_cover_the_true_effect(run):
    tri = run.checks[0]
    assert (tri["treatment"], tri["outcome"]) == ("t", "m") and "do(t + 1)" in tri["contrast"]
    rows = {r["method"]: r for r in tri["rows"]}
    assert set(rows) == {"bayes (causal_wm)", "backdoor.linear_regression"}
    for r in rows.values():
        assert abs(r["estimate"] - ON_M) < 4 * _sd(r), r  # every estimator finds the true effect
    bayes = rows["bayes (causal_wm)"]
    assert bayes["estimate"] == pytest.approx(run.res["queries"]["t_on_m"]["estimate"])  # the same question
    for r in rows.values():  # the verdict agrees with the recorded intervals
        assert r["overlaps_bayes"] == (r["lower"] <= bayes["upper"] and r["upper"] >= bayes["lower"])


def test_refutations_pass_on_a_correct_graph(run):
    ref = run.checks[1]
    assert ref["num_simulations"] == 10
    rows = {r["refuter"]: r for r in ref["rows"]}
    assert set(rows) == {"placebo_treatment_refuter", "random_common_cause", "data_subset_refuter"}
    assert abs(rows["placebo_treatment_refuter"]["new_effect"]) < 0.1 * TOTAL  # a permuted treatment does nothing
    assert abs(rows["random_common_cause"]["new_effect"] - TOTAL) < 0.3


def test_sensitivity_refits_and_moves_the_effect_toward_zero(run):
    sens = run.checks[2]
    assert sens["fit"] == {"backend": "numpyro", "method": "nuts", "chains": 1, "draws": 100, "warmup": 100}
    rows = sens["rows"]
    assert [r["strength"] for r in rows] == [0.0, 0.5]
    # a confounder loading positively on t and y explains part of their association away
    assert rows[1]["estimate"] < rows[0]["estimate"] - 2 * (_sd(rows[0]) / np.sqrt(100))
    assert abs(rows[0]["estimate"] - TOTAL) < 4 * _sd(rows[0])
    covers = [r["strength"] for r in rows if r["lower"] <= 0 <= r["upper"]]
    assert sens["breakdown"] == (min(covers) if covers else None)
    assert all(r["covers_zero"] == (r["lower"] <= 0 <= r["upper"]) for r in rows)


def test_falsification_tests_the_implied_independences(run):
    fal = run.checks[3]
    pairs = {(r["x"], r["y"], r["given"]) for r in fal["rows"]}
    # x ⟂ w; w ⟂ t | x; x ⟂ m | t; w ⟂ m | t: what the graph implies among nodes without an edge
    assert pairs == {("x", "w", ""), ("w", "t", "x"), ("x", "m", "t"), ("w", "m", "t")}
    assert all(0 <= r["p_value"] <= 1 and r["rejected"] == (r["p_value"] < 0.05) for r in fal["rows"])
    assert fal["summary"].startswith(f"{sum(r['rejected'] for r in fal['rows'])} of 4 implied independences")


def test_a_failing_estimator_is_recorded_with_its_reason(run):
    failed = run.checks[4]
    assert failed["reason"] == f"RuntimeError: {FAILING}" and failed["rows"] == []
    assert (run.folder / "report.html").is_file()  # the study went on


# ------------------------------------------------------------------ expectations on mediation
def test_mediation_expectations_pass_and_fail(run):
    exp = run.res["expect"]
    assert [(e["check"], e["passed"]) for e in exp] == [
        ("estimate_within", True), ("estimate_within", True), ("prob_positive_above", True),
        ("estimate_within", False)]
    rows = {r["quantity"]: r for r in run.res["queries"]["med"]["rows"]}
    assert f"med (indirect effect): estimate {rows['indirect (NIE)']['estimate']:.4g} within [1.0, 2.0]" == \
        exp[0]["description"]
    assert abs(rows["indirect (NIE)"]["estimate"] - INDIRECT) < 4 * _sd(rows["indirect (NIE)"])
    assert abs(rows["direct (NDE)"]["estimate"] - DIRECT) < 4 * _sd(rows["direct (NDE)"])
    assert "med (direct effect)" in run.error and "med (indirect effect)" not in run.error


def test_results_json_is_strict_json_with_null_for_undefined_numbers(run):
    def refuse(constant):
        raise AssertionError(f"results.json holds a bare {constant}, which is not JSON")

    for name in ("results.json", "manifest.json", "data_summary.json"):
        json.loads((run.folder / name).read_text(), parse_constant=refuse)
    rows = {r["quantity"]: r for r in run.res["queries"]["med"]["rows"]}
    assert rows["proportion mediated"]["mcse"] is None  # a ratio's MCSE is not computed: null, not NaN


def test_report_shows_the_mediation_answer(run):
    text = html.unescape((run.folder / "report.html").read_text(encoding="utf-8"))
    med = run.res["queries"]["med"]
    assert "changes y by" in text and "through m (indirect effect" in text
    for part in ("total", "direct", "indirect"):
        r = med[part]
        lo, hi = (f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}" for x in (r["lower"], r["upper"]))
        assert f"{lo} to {hi}" in text


# ------------------------------------------------------------------ report
def _section(text: str) -> str:
    start = text.index('<section id="checks">')
    return text[start:text.index("</section>", start)]


def test_report_shows_the_checks_escaped(run):
    text = (run.folder / "report.html").read_text(encoding="utf-8")
    sec = _section(text)
    for title in ("Triangulation with classical estimators: t on m", "Refutation tests: t on y",
                  "Sensitivity to a hidden confounder: t on y", "Graph falsification", "Refutation tests: t on m"):
        assert f"<h3>{title}</h3>" in sec
    assert FAILING not in text and html.escape(FAILING) in sec  # the failure reason, escaped
    assert sec.count("<img ") == 1 and 'src="data:image/png;base64,' in sec  # the sensitivity curve
    assert "backdoor.linear_regression" in sec and "placebo treatment refuter" in sec
    bd = run.checks[2]["breakdown"]
    phrase = "excludes zero at every strength tried" if bd is None else f"first covers zero at strength {bd:g}"
    assert phrase in sec or f"covers zero already at strength {bd:g}" in sec


def test_report_rerenders_the_checks_without_refitting(run, tmp_path, monkeypatch):
    import causal_wm.fitting

    def no_fit(*a, **k):
        raise AssertionError("re-rendering a report must not fit")

    monkeypatch.setattr(causal_wm.fitting, "fit", no_fit)
    copy = Path(shutil.copytree(run.folder, tmp_path / "toy_study"))
    before = _section((copy / "report.html").read_text(encoding="utf-8"))
    (copy / "report.html").unlink()
    r = CliRunner().invoke(app, ["report", str(copy)])
    assert r.exit_code == 0, r.output
    assert _section((copy / "report.html").read_text(encoding="utf-8")) == before


def test_run_checks_records_any_failure(monkeypatch):
    def boom(*a, **k):
        raise ValueError("singular matrix")

    monkeypatch.setattr(causal_wm.checks, "falsify", boom)
    rec = run_checks(SimpleNamespace(), [{"kind": "falsify"}])
    assert rec[0]["status"] == "failed" and rec[0]["reason"] == "ValueError: singular matrix"


# ------------------------------------------------------------------ validation at load
LOAD_STUDY = """name: s
model: model.yaml
queries:
  - {name: ate, kind: effect, outcome: y, do: {t: 1}, vs: {t: 0}}
  - {name: med, kind: mediation, treatment: t, mediator: m, outcome: y}
"""
LATENT_MODEL = MODEL.replace("  x: {}\n", "  x: {}\n  u: {latent: true}\n  g: {family: categorical}\n")


def _load(tmp_path, extra: str):
    return cw.Study.load(_write(tmp_path, LOAD_STUDY + extra, LATENT_MODEL))


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        ("{kind: triangulat, outcome: y, treatment: t}", ["checks entry 1", "kind must be one of",
                                                          "Did you mean 'triangulate'?"]),
        ("{kind: refute, outcome: y, treatment: t, outcom: y}", ["checks entry 1 (refute)", "'outcom'",
                                                                "Did you mean 'outcome'?"]),
        ("{kind: sensitivity, outcome: y}", ["(sensitivity)", "needs 'treatment'"]),
        ("{kind: triangulate, outcome: y, treatment: tt}", ["treatment 'tt' is not a node", "Did you mean 't'?"]),
        ("{kind: refute, outcome: yy, treatment: t}", ["outcome 'yy' is not a node", "Did you mean 'y'?"]),
        ("{kind: triangulate, outcome: y, treatment: u}", ["treatment 'u' is latent"]),
        ("{kind: refute, outcome: y, treatment: g}", ["treatment 'g' is categorical"]),
        ("{kind: refute, outcome: t, treatment: t}", ["both 't'"]),
        ("{kind: triangulate, outcome: x, treatment: t}", ["'x' is not downstream of treatment 't'"]),
        ("{kind: sensitivity, outcome: y, treatment: t, strengths: [0.5, high]}", ["'strengths'", "[0.5, 'high']"]),
        ("{kind: sensitivity, outcome: y, treatment: t, strengths: []}", ["'strengths'", "non-empty"]),
        ("{kind: sensitivity, outcome: y, treatment: t, draws: 0}", ["'draws' must be a positive integer"]),
        ("{kind: sensitivity, outcome: y, treatment: t, chains: 1.5}", ["'chains' must be a positive integer"]),
        ("{kind: refute, outcome: y, treatment: t, num_simulations: -2}", ["'num_simulations'"]),
        ("{kind: falsify, alpha: 2}", ["'alpha' must be a probability"]),
        ("falsify", ["checks entry 1 must be a mapping"]),
    ],
)
def test_malformed_check_entry_is_caught_at_load(tmp_path, entry, fragments):
    with pytest.raises(cw.StudyError) as err:
        _load(tmp_path, f"checks:\n  - {{kind: falsify}}\n  - {entry}\n".replace("entry 1", "entry 2"))
    msg = str(err.value)
    for f in fragments:
        assert f.replace("entry 1", "entry 2") in msg, (f, msg)
    assert "line 8]" in msg  # the line of the entry itself


def test_checks_must_be_a_list(tmp_path):
    with pytest.raises(cw.StudyError, match=r"'checks' must be a list .* line 6\]"):
        _load(tmp_path, "checks: {kind: falsify}\n")


def test_valid_checks_load(tmp_path):
    s = _load(tmp_path, "checks:\n  - {kind: triangulate, outcome: y, treatment: t}\n"
                        "  - {kind: refute, outcome: y, treatment: t}\n"
                        "  - {kind: sensitivity, outcome: y, treatment: t, strengths: [0.0, 0.25, 0.5]}\n"
                        "  - {kind: falsify}\n")
    assert [c["kind"] for c in s.spec["checks"]] == ["triangulate", "refute", "sensitivity", "falsify"]


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        ("{query: med, estimate_within: [0, 1]}", ["'med'", "part: indirect | direct | total", "got None"]),
        ("{query: med, part: indirec, interval_covers: 1}", ["'indirec'", "Did you mean 'indirect'?"]),
        ("{query: ate, part: total, interval_covers: 1}", ["'part' is only for mediation queries"]),
        ("{query: med, part: total}", ["checks nothing"]),
        ("{query: med, part: total, interval_covers: [1]}", ["interval_covers", "malformed"]),
    ],
)
def test_malformed_mediation_expectation_is_caught_at_load(tmp_path, entry, fragments):
    with pytest.raises(cw.StudyError) as err:
        _load(tmp_path, f"expect:\n  - {entry}\n")
    for f in fragments:
        assert f in str(err.value), (f, str(err.value))
