"""The flagship study end to end through the CLI, on the real NSW data, and atomic outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
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
    # how the chains ran is part of what the seed's numbers depend on: recorded with them
    assert man["chain_method"] in ("parallel", "sequential") and man["chain_method"] == idata.attrs["chain_method"]


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


# ------------------------------------------------------------------ outputs checked before fitting
TINY_MODEL = "name: tiny\nnodes:\n  x: {}\n  y: {formula: x}\n"
TINY_STUDY = ("name: docs\nmodel: model.yaml\ndata: {path: data.csv}\nseed: 1\n"
              "fit: {chains: 1, draws: 20, warmup: 20}\n"
              "queries:\n  - {name: slope, kind: effect, outcome: y, do: {x: 1}, vs: {x: 0}}\n")


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """A small study whose fit must never start (every check here happens before sampling)."""
    import causal_wm.fitting

    def no_fit(*a, **k):
        raise AssertionError("this output problem must be found before fitting")

    monkeypatch.setattr(causal_wm.fitting, "fit", no_fit)
    (tmp_path / "model.yaml").write_text(TINY_MODEL)
    (tmp_path / "data.csv").write_text("x,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(20)))
    (tmp_path / "docs.yaml").write_text(TINY_STUDY)
    return tmp_path / "docs.yaml"


def test_a_folder_of_user_files_with_the_study_name_is_never_replaced(tiny, tmp_path):
    thesis = tmp_path / "victim" / "docs" / "thesis.tex"
    thesis.parent.mkdir(parents=True)
    thesis.write_text("two years of work")
    with pytest.raises(cw.StudyError, match=r"docs.*not write.*refusing to delete it.*another --out"):
        cw.Study.load(tiny).run(tmp_path / "victim")
    r = CliRunner().invoke(app, ["run", str(tiny), "--out", str(tmp_path / "victim")])
    assert r.exit_code == 2 and "refusing to delete" in r.output and "Traceback" not in r.output
    assert thesis.read_text() == "two years of work"
    assert sorted(p.name for p in thesis.parent.parent.iterdir()) == ["docs"]  # no temporary folder either


def test_study_results_and_saved_fits_do_not_replace_each_other(tiny, tmp_path):
    import json

    from causal_wm.study import check_output, folder_kind

    fit_dir, study_dir = tmp_path / "r" / "docs", tmp_path / "s" / "tiny"
    fit_dir.mkdir(parents=True)
    (fit_dir / "manifest.json").write_text(json.dumps({"folder": "fit", "model": "docs"}))
    study_dir.mkdir(parents=True)
    (study_dir / "manifest.json").write_text(json.dumps({"folder": "study", "study": "tiny"}))
    assert (folder_kind(fit_dir), folder_kind(study_dir)) == ("fit", "study")
    check_output(fit_dir, "fit")  # a run replaces a results folder of its own kind
    check_output(study_dir, "study")
    (tmp_path / "s" / "empty").mkdir()
    check_output(tmp_path / "s" / "empty", "study")  # and an empty folder
    with pytest.raises(cw.StudyError, match=r"holds a saved fit \(causal-wm fit\)"):
        cw.Study.load(tiny).run(tmp_path / "r")
    r = CliRunner().invoke(app, ["fit", str(tmp_path / "model.yaml"), "--data", str(tmp_path / "data.csv"),
                                 "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "holds the results of a study (causal-wm run)" in r.output, r.output
    assert {p.name for p in fit_dir.iterdir()} == {"manifest.json"}
    assert {p.name for p in study_dir.iterdir()} == {"manifest.json"}


def test_out_that_is_a_file_is_refused_before_fitting(tiny, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for out in (afile, afile / "deeper"):
        with pytest.raises(cw.StudyError, match=r"is a file, not a folder"):
            cw.Study.load(tiny).run(out)
        r = CliRunner().invoke(app, ["run", str(tiny), "--out", str(out)])
        assert r.exit_code == 2 and "is a file, not a folder" in r.output and "Traceback" not in r.output
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("seed", [2**63, 2**64, -1])
def test_seed_out_of_range_is_refused_before_fitting(tiny, tmp_path, seed):
    bad = tmp_path / "bad_seed.yaml"
    bad.write_text(TINY_STUDY.replace("seed: 1", f"seed: {seed}"))
    with pytest.raises(cw.StudyError, match=r"'seed' must be a non-negative integer \(0 <= seed < 2\*\*63\).*line 4"):
        cw.Study.load(bad)
    r = CliRunner().invoke(app, ["run", str(tiny), "--out", str(tmp_path / "out"), "--seed", str(seed)])
    assert r.exit_code == 2 and "0 <= seed < 2**63" in r.output and "Traceback" not in r.output
    from causal_wm.fitting import settings

    with pytest.raises(cw.QueryError, match=r"0 <= seed < 2\*\*63"):  # what SCM.fit checks first
        settings(seed=seed)
    assert not (tmp_path / "out").exists()
    cw.Study.load(tiny.parent / "docs.yaml")  # the largest accepted seed loads
    ok = tmp_path / "ok_seed.yaml"
    ok.write_text(TINY_STUDY.replace("seed: 1", f"seed: {2**63 - 1}"))
    assert cw.Study.load(ok).spec["seed"] == 2**63 - 1


def test_cli_shows_the_results_before_failing_on_expectations(tiny, tmp_path, monkeypatch):
    import json
    import warnings

    from causal_wm.study import Study

    written = tmp_path / "written"
    written.mkdir()
    (written / "summary.csv").write_text("query,kind,quantity,estimate,lower,upper,mcse\n"
                                         "slope,effect,effect,1.98,1.9,2.05,0.01\n")
    (written / "results.json").write_text(json.dumps({
        "diagnostics": {"ok": False, "max_rhat": 1.08, "min_ess_bulk": 40.0, "divergences": 0},
        "expect": [{"description": "slope: estimate 1.98 within [5, 6]", "passed": False}]}))

    def run(self, out, on_written=None, **kw):  # what Study.run does when an expectation fails
        warnings.warn("the fit did not pass convergence checks", cw.ConvergenceWarning, stacklevel=1)
        on_written(written)
        raise cw.StudyError("expectations failed: slope: estimate 1.98 within [5, 6] (results in out/docs)")

    monkeypatch.setattr(Study, "run", run)
    r = CliRunner().invoke(app, ["run", str(tiny), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    out = r.output
    for line in ("warning: the fit did not pass convergence checks", "slope", "1.98",
                 "diagnostics: ok=False max R-hat=1.08", "expect: FAIL slope: estimate 1.98 within [5, 6]",
                 "error: expectations failed"):
        assert line in out, (line, out)
    assert out.index("expect: FAIL") < out.index("error: expectations failed")
    assert "results written to" not in out


@pytest.mark.parametrize("name", ["a/b", "a\\\\b", "..", "tab\\there", " padded", "x" * 101])
def test_query_names_that_cannot_name_a_file_are_refused_at_load(tiny, tmp_path, name):
    bad = tmp_path / "bad_name.yaml"
    bad.write_text(TINY_STUDY.replace("{name: slope,", f'{{name: "{name}",'))
    with pytest.raises(cw.StudyError, match=r"cannot be used in a file name.*counterfactual_<name>\.csv.*line 7"):
        cw.Study.load(bad)


PRE_FIT_MODEL = ("name: pre\nnodes:\n  g: {family: bernoulli}\n  t: {family: bernoulli, formula: g}\n"
                 "  x: {formula: t, missing: drop}\n  m: {formula: t}\n  y: {formula: t + m + x + g}\n")


@pytest.mark.parametrize(
    ("query", "fragments"),
    [
        ("{name: q, kind: mediation, treatment: t, mediator: g, outcome: y}",
         ["query 'q'", "'g' must lie on a causal path 't' -> 'g' -> 'y'"]),
        ("{name: q, kind: mediation, treatment: m, mediator: x, outcome: y}",
         ["'x' must lie on a causal path 'm' -> 'x' -> 'y'"]),
        ("{name: q, kind: mediation, treatment: t, mediator: m, outcome: y, treat_value: 2}",
         ["query 'q': treat_value 2", "'t' is bernoulli"]),
        ("{name: q, kind: mediation, treatment: t, mediator: m, outcome: y, control_value: low}",
         ["query 'q': control_value"]),
        ("{name: q, kind: counterfactual, do: {}}", ["query 'q': 'do' must name at least one intervention"]),
        ("{name: q, kind: counterfactual, do: {t: 0}, units: {g: 1}}",
         ["query 'q'", "selects no units of the data left after 'missing: drop'"]),
        ("{name: q, kind: effect, outcome: y, do: {t: 1}, vs: {t: 0}, given: {g: 1}}",
         ["selects no units of the data left after 'missing: drop'"]),
        ("{name: q, kind: counterfactual, do: {t: 0}, draws: 41}",
         ["query 'q': draws: 41 is more than the fit's 40 posterior draws (2 chains x 20 draws)"]),
    ],
)
def test_query_problems_are_found_before_fitting(tmp_path, monkeypatch, query, fragments):
    import causal_wm.fitting

    def no_fit(*a, **k):
        raise AssertionError("this query problem must be found before fitting")

    monkeypatch.setattr(causal_wm.fitting, "fit", no_fit)
    (tmp_path / "model.yaml").write_text(PRE_FIT_MODEL)
    rows = [(i % 2, i % 2, "" if i % 2 else float(i), float(i), float(2 * i)) for i in range(20)]  # g=1: x missing
    (tmp_path / "data.csv").write_text("g,t,x,m,y\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    (tmp_path / "s.yaml").write_text("name: s\nmodel: model.yaml\ndata: {path: data.csv}\n"
                                     "fit: {chains: 2, draws: 20, warmup: 20}\nqueries:\n"
                                     "  - {name: fine, kind: effect, outcome: y, do: {t: 1}, vs: {t: 0}}\n"
                                     f"  - {query}\n")
    with pytest.raises(cw.StudyError) as err:
        cw.Study.load(tmp_path / "s.yaml").run(tmp_path / "out")
    msg = str(err.value)
    for f in fragments:
        assert f in msg, (f, msg)
    assert "s.yaml, line 7]" in msg
    assert not (tmp_path / "out").exists()


def test_reproducibility_record_hashes_column_names_and_the_study_as_loaded(tiny):
    import pandas as pd

    from causal_wm.study import data_sha256

    df = pd.DataFrame({"re74": [1.0, 2.0, 3.0], "re75": [4.0, 5.0, 6.0]})
    assert data_sha256(df) == data_sha256(df.copy())
    assert data_sha256(df) != data_sha256(df.rename(columns={"re74": "re75", "re75": "re74"}))  # labels swapped
    assert data_sha256(df) != data_sha256(df.astype("float32"))  # same values, another dtype
    original = tiny.read_bytes()
    study = cw.Study.load(tiny)
    tiny.write_text(TINY_STUDY.replace("seed: 1", "seed: 2"))  # edited while the study runs
    assert study._text() == original  # what results.json's study_sha256 and study.yaml are written from


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--outcome", "re78", "--do", "treat=1", "--units", "age > abc"], "'abc' is not a number"),
        (["--outcome", "re78", "--do", "treat=1", "--units", "age > 30 AND black == 1"], None),
        (["--outcome", "re78", "--do", "treat=1", "--units", "age > 30 AND blak == 1"], "Did you mean 'black'?"),
        (["--counterfactual", "--do", "treat=0", "--outcome", "re87", "--units", "treat == 1"],
         "--outcome 're87' is not a node these counterfactuals change"),
    ],
)
def test_cli_query_input_errors_are_one_line(flagship, args, fragment):
    folder, _ = flagship
    r = CliRunner().invoke(app, ["query", str(folder), *args])
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    if fragment is None:  # 'AND' joins conditions like 'and'
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 2 and fragment in r.output, r.output


def test_cli_query_on_a_damaged_folder_is_a_clear_error(flagship, tmp_path):
    import shutil

    folder = Path(shutil.copytree(flagship[0], tmp_path / "job_training"))
    (folder / "posterior.nc").write_bytes(b"not a netcdf file")
    r = CliRunner().invoke(app, ["query", str(folder), "--outcome", "re78", "--do", "treat=1"])
    assert r.exit_code == 2 and "posterior.nc could not be read" in r.output and "Traceback" not in r.output
    (folder / "manifest.json").write_text("{broken")
    r = CliRunner().invoke(app, ["query", str(folder), "--outcome", "re78", "--do", "treat=1"])
    assert r.exit_code == 2 and "manifest.json could not be read" in r.output


def test_cli_version():
    import causal_wm

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"causal-wm {causal_wm.__version__}"


def test_expectations_are_not_judged_on_a_fit_that_did_not_converge(tmp_path):
    """Before, expect: printed PASS (and the run exited 0) on a fit with R-hat 1.97 and ESS 4, and
    summary.csv did not say the fit had failed."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    pd.DataFrame({"x": x, "y": 2 * x + 1 + rng.normal(size=60)}).to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "model.yaml").write_text(TINY_MODEL)
    (tmp_path / "docs.yaml").write_text(TINY_STUDY.replace("draws: 20, warmup: 20", "draws: 20, warmup: 5")
                                        + "expect:\n  - {query: slope, estimate_within: [-100, 100]}\n")
    with pytest.warns(cw.ConvergenceWarning):
        with pytest.raises(cw.StudyError, match=r"expectations failed: .*not judged: the fit did not converge"):
            cw.Study.load(tmp_path / "docs.yaml").run(tmp_path / "out")
    summary = pd.read_csv(tmp_path / "out" / "docs" / "summary.csv")
    assert {"prob", "converged"} <= set(summary.columns)
    assert (~summary["converged"]).all() and (summary["prob"] == 0.9).all()
    res = json.loads((tmp_path / "out" / "docs" / "results.json").read_text())
    assert not res["diagnostics"]["ok"] and not res["expect"][0]["passed"]
