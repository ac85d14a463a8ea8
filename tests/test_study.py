"""The flagship study end to end through the CLI, on the real NSW data, and atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import causal_wm as cw
from causal_wm.cli import app

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "job_training.yaml"
PUBLISHED_ATE = 1794.0  # Dehejia & Wahba (1999), experimental estimate


@pytest.fixture(scope="module")
def flagship(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    r = CliRunner().invoke(app, ["run", str(STUDY), "--out", str(out), "--draws", "1000", "--chains", "2",
                                 "--warmup", "500", "--quiet"])
    assert r.exit_code == 0, r.output
    return out / "job_training", r.output


def test_flagship_ate_matches_published_experimental_estimate(flagship):
    folder, output = flagship
    res = json.loads((folder / "results.json").read_text())
    ate = res["queries"]["ate"]
    sd = ate["sd"]
    print(f"NSW ATE: posterior mean {ate['estimate']:.0f}, sd {sd:.0f}, "
          f"90% interval [{ate['lower']:.0f}, {ate['upper']:.0f}]; published {PUBLISHED_ATE:.0f}")
    assert abs(ate["estimate"] - PUBLISHED_ATE) < sd
    assert ate["lower"] < PUBLISHED_ATE < ate["upper"]
    assert ate["diagnostics"]["ok"] and res["diagnostics"]["ok"]
    assert all(c["passed"] for c in res["expect"])
    assert "effect" in output and "expect: PASS" in output


def test_results_folder_contents(flagship):
    folder, _ = flagship
    names = {p.name for p in folder.iterdir()}
    assert {"posterior.nc", "results.json", "summary.csv", "manifest.json",
            "counterfactual_treated_without_training.csv"} <= names
    figures = sorted((folder / "figures").glob("figure_*.png"))
    assert figures and all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
    man = json.loads((folder / "manifest.json").read_text())
    assert man["seed"] == 0 and len(man["data_sha256"]) == 64 and man["versions"]["numpyro"]
    import arviz as az

    idata = az.from_netcdf(folder / "posterior.nc")
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood"} <= set(idata.groups())
    assert idata.posterior["re78__b"].dims == ("chain", "draw", "re78__term")


def test_same_study_same_seed_identical_summary(flagship, tmp_path):
    folder, _ = flagship
    r = CliRunner().invoke(app, ["run", str(STUDY), "--out", str(tmp_path), "--draws", "1000", "--chains", "2",
                                 "--warmup", "500", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "job_training" / "summary.csv").read_bytes() == (folder / "summary.csv").read_bytes()


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    from causal_wm import study as study_mod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(study_mod.Study, "_write", boom)
    with pytest.raises(RuntimeError), pytest.warns(cw.ConvergenceWarning):  # 100 draws: too few, flagged
        cw.Study.load(STUDY).run(tmp_path, draws=100, chains=1, warmup=100)
    assert list(tmp_path.iterdir()) == []  # neither the results folder nor its temporary sibling


def test_cli_error_is_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: job_training\nqueries:\n  - {name: q, kind: effect, outcome: re78, do: {tret: 1}}\n")
    r = CliRunner().invoke(app, ["run", str(bad), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert "tret" in r.output and "treat" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_cli_models_lists_library():
    r = CliRunner().invoke(app, ["models"])
    assert r.exit_code == 0 and "job_training" in r.output


def test_query_saved_results_without_refitting(flagship, monkeypatch):
    import causal_wm.fitting

    folder, _ = flagship
    monkeypatch.setattr(causal_wm.fitting, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("refit")))
    r = CliRunner().invoke(app, ["query", str(folder), "--outcome", "re78", "--do", "treat=1", "--vs", "treat=0"])
    assert r.exit_code == 0, r.output
    saved = json.loads((folder / "results.json").read_text())["queries"]["ate"]
    post = __import__("causal_wm.saved", fromlist=["load_posterior"]).load_posterior(folder)
    again = post.effect("re78", do={"treat": 1}, vs={"treat": 0})
    assert again.mean() == pytest.approx(saved["estimate"], rel=1e-12)  # same draws, same seed: same numbers
    assert f"{saved['estimate']:.1f}"[:4] in r.output.replace(",", "")
    r = CliRunner().invoke(app, ["query", str(folder), "--outcome", "re78", "--do", "treat=1", "--vs", "treat=0",
                                 "--units", "age > 30 and black == 1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["query", str(folder), "--outcome", "re78", "--do", "treat=1",
                                 "--units", "agee > 30"])
    assert r.exit_code == 2 and "age" in r.output


def test_fit_command_saves_a_queryable_posterior(tmp_path):
    r = CliRunner().invoke(app, ["fit", "job_training", "--out", str(tmp_path), "--draws", "300", "--chains", "1",
                                 "--warmup", "300", "--quiet"])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "job_training"
    assert {"posterior.nc", "model.yaml", "data.csv", "manifest.json"} <= {p.name for p in folder.iterdir()}
    r = CliRunner().invoke(app, ["query", str(folder), "--do", "treat=0", "--counterfactual", "--outcome", "re78",
                                 "--units", "treat == 1"])
    assert r.exit_code == 0, r.output
    assert "re78" in r.output


def test_cli_shows_sampler_progress_bars_only_on_a_terminal(monkeypatch):
    from causal_wm import cli

    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(cli.sys, "stderr", Stream(True))
    assert cli._bars(quiet=False) is True
    assert cli._bars(quiet=True) is False
    monkeypatch.setattr(cli.sys, "stderr", Stream(False))  # a log file: redrawn bars would interleave
    assert cli._bars(quiet=False) is False
