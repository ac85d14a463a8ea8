"""report.html from a saved results folder: the numbers, escaping, figures, re-rendering and a real browser."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import causal_wm as cw
from causal_wm.cli import app

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "job_training.yaml"
MODEL = ROOT / "models" / "job_training.yaml"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr", "area", "base", "embed", "track"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One small run of the flagship study, with hostile text in the study, a question and the model."""
    src = tmp_path_factory.mktemp("study")
    model = yaml.safe_load(MODEL.read_text())
    model["description"] += f" {SCRIPT}"
    model["nodes"]["re78"]["description"] = "earnings <b>1978</b> & more"
    (src / "model.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
    study = yaml.safe_load(STUDY.read_text())
    study["model"] = "model.yaml"
    study["description"] += f" {SCRIPT}"
    study["queries"][0]["question"] = f"How much {IMG} did training raise 1978 earnings?"
    (src / "job_training.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    out = tmp_path_factory.mktemp("results")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cw.ConvergenceWarning)  # 300 draws may be flagged; the report says so
        try:
            return cw.Study.load(src / "job_training.yaml").run(out, draws=300, chains=2, warmup=300)
        except cw.StudyError as exc:  # a flagged fit's expectations are not judged; its results are written
            assert "not judged: the fit did not converge" in str(exc), exc
            return out / "job_training"


@pytest.fixture()
def copy(folder, tmp_path):
    """A private copy of the results folder (tests that re-render must not touch the shared one)."""
    return Path(shutil.copytree(folder, tmp_path / "job_training"))


def _html(d: Path) -> str:
    return (d / "report.html").read_text(encoding="utf-8")


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _expected_sentence(q: dict) -> str:
    p = q["prob_positive"]
    prob = "> 0.99" if 0.995 <= p < 1 else "< 0.01" if 0 < p < 0.005 else f"{p:.2f}"
    return (f"setting treat to 1 instead of 0 changes re78 by {_fmt(q['estimate'])} on average "
            f"(90% interval {_fmt(q['lower'])} to {_fmt(q['upper'])}); probability of a positive effect {prob}.")


class _Tags(HTMLParser):
    """Collects <img> attributes and checks that every non-void element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.imgs, self.errors, self.answers, self._in_answer = [], [], [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)
        self._in_answer = tag == "p" and ("class", "answer") in attrs

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)
        self._in_answer = False

    def handle_data(self, data):
        if self._in_answer:
            self.answers.append(data)


def _parse(text: str) -> _Tags:
    t = _Tags()
    t.feed(text)
    t.close()
    return t


def _without_images(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "data:image/png" not in line)


def test_run_writes_report_and_what_it_needs(folder):
    names = {p.name for p in folder.iterdir()}
    assert {"report.html", "model.yaml", "study.yaml", "data_summary.json"} <= names
    data = json.loads((folder / "data_summary.json").read_text())
    assert data["rows"] == 445 and {c["name"] for c in data["columns"]} >= {"treat", "re78"}
    assert cw.SCM.from_dict(yaml.safe_load((folder / "model.yaml").read_text())).parents("re78")[0] == "age"
    man = json.loads((folder / "manifest.json").read_text())
    assert "--draws 300 --chains 2 --warmup 300" in man["command"]  # the overrides reproduce the run
    assert man["command"] in html.unescape(_html(folder))


def test_effect_sentences_carry_the_saved_numbers(folder):
    res = json.loads((folder / "results.json").read_text())["queries"]
    answers = [html.unescape(a) for a in _parse(_html(folder)).answers]
    ate, cate = _expected_sentence(res["ate"]), _expected_sentence(res["cate_black"])
    assert ate[0].upper() + ate[1:] in answers
    assert f"Among the {res['cate_black']['n_units']:,} units with black = 1, {cate}" in answers
    assert any(a.startswith(f"For each of the {res['treated_without_training']['n_units']} units with treat = 1")
               for a in answers)
    text = html.unescape(_html(folder))
    assert res["treated_without_training"]["assumption"] in text


def test_sections_are_present(folder):
    text = _html(folder)
    for heading in ("Questions", "Answers", "Causal model", "Data", "Fit diagnostics",
                    "Posterior predictive check", "Reproduce"):
        assert f"<h2>{heading}</h2>" in text
    assert "What would each trainee have earned in 1978 without the programme?" in text
    res = json.loads((folder / "results.json").read_text())
    assert ("passed every convergence check" in text) == res["diagnostics"]["ok"]
    for p in res["diagnostics"]["problems"]:
        assert p in html.unescape(text)


def test_user_text_is_escaped(folder):
    text = _html(folder)
    assert SCRIPT not in text and "<script" not in text.lower()
    assert IMG not in text and "<b>1978" not in text
    assert text.count(html.escape(SCRIPT)) == 2  # the study's and the model's descriptions
    assert html.escape(IMG) in text


def test_every_image_is_embedded_and_the_html_is_well_formed(folder):
    tags = _parse(_html(folder))
    assert len(tags.imgs) >= 5  # overview, two effects, counterfactual, graph
    assert all(i["src"].startswith("data:image/png;base64,") and i.get("alt") for i in tags.imgs)
    assert tags.errors == [] and tags.stack == []


def test_cli_report_rerenders_without_fitting(copy, monkeypatch):
    import causal_wm.fitting

    def no_fit(*a, **k):
        raise AssertionError("re-rendering a report must not fit")

    monkeypatch.setattr(causal_wm.fitting, "fit", no_fit)
    before = _html(copy)
    (copy / "report.html").unlink()
    r = CliRunner().invoke(app, ["report", str(copy)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(copy / "report.html")
    after = _html(copy)
    assert _parse(after).answers == _parse(before).answers
    assert _without_images(after) == _without_images(before)


def test_cw_report_is_callable_before_and_after_importing_the_module(copy):
    assert cw.report(copy) == copy / "report.html"
    import causal_wm.reporting

    assert cw.report is causal_wm.reporting.render_report and cw.report(copy).is_file()


def test_import_causal_wm_stays_light():
    code = "import sys, causal_wm; print(sorted({'matplotlib', 'jinja2'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_older_folder_without_saved_inputs_still_renders(copy):
    for name in ("model.yaml", "study.yaml", "data_summary.json", "report.html"):
        (copy / name).unlink()
    text = _html(Path(cw.report(copy)).parent)
    assert "has no <code>model.yaml</code>" in text and "has no <code>data_summary.json</code>" in text
    assert "Setting treat to 1 instead of 0 changes re78 by" in text


def test_folder_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(cw.CausalWMError, match=r"results\.json"):
        cw.report(tmp_path)
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "results.json" in r.output and "Traceback" not in r.output


def test_pdf_without_weasyprint_names_the_install_line(copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import weasyprint -> ImportError
    r = CliRunner().invoke(app, ["report", str(copy), "--pdf"])
    assert r.exit_code == 2 and "pip install weasyprint" in r.output
    assert not (copy / "report.pdf").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install chromium); "
                                                  "the browser check of report.html is skipped")
def test_report_renders_in_a_headless_browser(folder, tmp_path):
    from matplotlib.image import imread

    chromium, url = _chromium(), (folder / "report.html").resolve().as_uri()
    shot = tmp_path / "report.png"
    _headless(chromium, tmp_path / "profile1", f"--screenshot={shot}", "--window-size=1200,3000", url)
    assert shot.is_file() and shot.stat().st_size > 50_000
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    assert (pixels.min(axis=-1) < 0.9).mean() > 0.02  # text and figures, not a blank page
    dom = _headless(chromium, tmp_path / "profile2", "--enable-logging=stderr", "--v=0", "--dump-dom", url)
    assert "Setting treat to 1 instead of 0 changes re78 by" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console


def test_a_query_kind_the_report_does_not_know_is_shown_as_a_table(copy):
    res = json.loads((copy / "results.json").read_text())
    res["queries"]["dose"] = {"kind": "dose_response", "slope": 1234.5, "curve": 0.0123, "diagnostics": {"ok": True}}
    (copy / "results.json").write_text(json.dumps(res))
    text = _html(cw.report(copy).parent)
    assert "1,234" in text and "0.0123" in text and "dose_response" in text


def _part(estimate, lower, upper, ok=True):
    return {"kind": "effect", "outcome": "re78", "do": {"treat": 1}, "vs": {"treat": 0}, "n_units": 445,
            "estimate": estimate, "sd": 400.0, "lower": lower, "upper": upper, "prob": 0.9, "mcse": 12.5,
            "prob_positive": 0.97, "diagnostics": {"ok": ok}, "warnings": [] if ok else ["fit not converged: ..."]}


@pytest.mark.parametrize("ok", [True, False])
def test_mediation_answers_are_shown_with_every_effect_and_flagged(copy, ok):
    res = json.loads((copy / "results.json").read_text())
    res["queries"]["med"] = {
        "kind": "mediation", "treatment": "treat", "mediators": ["re75"], "outcome": "re78", "prob": 0.9,
        "direct": _part(1500.0, 700.0, 2300.0, ok), "indirect": _part(-20.5, -80.25, 40.75, ok),
        "total": _part(1479.5, 650.0, 2250.0, ok),
        "rows": [{"quantity": "proportion mediated", "estimate": -0.0139, "lower": -0.06, "upper": 0.03,
                  "mcse": None, "prob_positive": 0.3}]}  # no 'diagnostics' of its own: they are per effect
    (copy / "results.json").write_text(json.dumps(res))
    text = html.unescape(_html(cw.report(copy).parent))
    article = text[text.index("<code>med</code></span></h3>"):]
    article = article[:article.index("</article>")]
    assert ("Setting treat to 1 instead of 0 changes re78 by 1,480 in total (90% interval 650 to 2,250): -20.5 "
            "through re75 (indirect effect, 90% interval -80.2 to 40.8) and 1,500 directly (90% interval 700 to "
            "2,300); proportion mediated -0.0139 (90% interval -0.06 to 0.03).") in article
    for label in ("total effect", "direct effect (NDE)", "indirect effect (NIE)", "proportion mediated"):
        assert f'<th scope="row">{label}</th>' in article
    assert "12.5" in article and "0.97" in article  # Monte Carlo SE and P(effect > 0) of each effect
    assert ("did not pass its convergence checks" in article) is (not ok)


def test_refutation_note_on_complete_cases_reaches_the_report():
    from causal_wm.reporting import checks_section

    note = "complete cases: 180 rows (20 with missing values left out)"
    rec = {"kind": "refute", "outcome": "y", "treatment": "t", "num_simulations": 5, "note": note,
           "rows": [{"refuter": "placebo_treatment", "estimate": 1.0, "new_effect": 0.01, "p_value": 0.4,
                     "passed": True}]}
    (item,) = checks_section([rec])
    assert item["note"] == note and item["rows"][0]["cells"][-1] == "passed"
    (plain,) = checks_section([{**rec, "note": ""}])
    assert plain["note"] == ""


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"queries": {"q": {"kind": "effect"}}, "x": NaN'])
def test_damaged_results_json_is_a_clear_error(copy, text):
    (copy / "results.json").write_text(text)
    r = CliRunner().invoke(app, ["report", str(copy)])
    assert r.exit_code == 2 and "results.json" in r.output and "Traceback" not in r.output, r.output


def test_single_chain_fit_says_rhat_was_not_computed(copy):
    res = json.loads((copy / "results.json").read_text())
    res["diagnostics"].update(ok=True, max_rhat=None, problems=[])
    (copy / "results.json").write_text(json.dumps(res))
    man = json.loads((copy / "manifest.json").read_text())
    man["settings"]["chains"] = 1
    (copy / "manifest.json").write_text(json.dumps(man))
    text = _html(cw.report(copy).parent)
    diag = text[text.index('<section id="diagnostics">'):]
    assert "the chains agree (R-hat)" not in diag
    assert "R-hat, which checks that chains agree, needs at least 2 chains" in diag
    assert "not computed (needs at least 2 chains)" in diag


def test_render_report_can_leave_the_announcement_to_its_caller(copy, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="causal_wm"):
        cw.report(copy)
        from causal_wm.reporting import render_report

        render_report(copy, announce=False)  # what a study run does in its temporary folder
    assert [r.getMessage() for r in caplog.records if "report written" in r.getMessage()] == [
        f"report written to {copy / 'report.html'}"]


def test_counterfactual_means_are_over_the_units_with_a_factual_value():
    """An imputed factual is not data: the factual, counterfactual and change means all leave it out."""
    from causal_wm.reporting import _counterfactual

    rows = [{"unit": 0, "node": "y", "factual": 1.0, "estimate": 2.0, "lower": 1.5, "upper": 2.5},
            {"unit": 1, "node": "y", "factual": None, "estimate": 100.0, "lower": 90.0, "upper": 110.0}]
    out = _counterfactual({"rows": rows, "do": {"t": 1}, "n_units": 2}, {"do": {"t": 1}})
    (row,) = [r for r in out["nodes"] if r["node"] == "y"]
    assert (row["factual"], row["counterfactual"], row["change"]) == ("1", "2", "1")  # (formatted numbers)


def test_cli_logging_follows_the_current_stderr(monkeypatch):
    """Commands run one after another in one process (as a test runner runs them) each log to the
    stderr of their own time: a handler bound to the first command's stream wrote to it after it was
    closed ('--- Logging error ---' in a later command's output)."""
    import io
    import logging

    from causal_wm import cli

    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    cli._log_to_terminal(False)
    first.close()  # the first command's stream is gone
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    cli._log_to_terminal(False)
    logging.getLogger("causal_wm").info("a record")
    assert second.getvalue() == "a record\n"


def test_report_prints_only_its_path_whatever_level_an_earlier_command_left(copy):
    """`causal-wm run` without --quiet raises the log level to show progress; a later `report` in the
    same process (a test session, a notebook) printed 'report written to ...' into its output, which
    is the path alone (failed in a fresh-clone run, depending on test order)."""
    import logging

    from causal_wm.cli import _log_to_terminal

    _log_to_terminal(quiet=False)  # what a `run` without --quiet leaves behind
    try:
        r = CliRunner().invoke(app, ["report", str(copy)])
    finally:
        logging.getLogger("causal_wm").setLevel(logging.WARNING)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(copy / "report.html")


def test_an_infinite_r_hat_is_flagged_not_shown_as_not_computed():
    """Chains stuck at different values give R-hat = inf; JSON has no infinity, so it reached
    results.json as null, the report showed 'n/a' unflagged and the CLI 'max R-hat=None' (and ArviZ's
    division by zero leaked 27 RuntimeWarnings)."""
    import arviz as az
    import numpy as np

    from causal_wm.cli import _diagnostics_line
    from causal_wm.diagnostics import diagnose
    from causal_wm.reporting import _diagnostics_section

    stuck = np.concatenate([np.full((1, 50), 0.3), np.full((1, 50), 1.7)])  # (chains, draws)
    idata = az.from_dict(posterior={"y__b": stuck}, sample_stats={"diverging": np.zeros((2, 50), bool)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing leaks
        d = diagnose(idata)
    assert not d.ok and np.isposinf(d.max_rhat)
    rec = d.to_dict()
    assert rec["max_rhat"] is None and rec["max_rhat_infinite"]
    row = next(r for r in _diagnostics_section(rec, 2)["rows"] if r["label"] == "largest R-hat")
    assert row["value"] == "infinite (chains stuck)" and not row["ok"]
    assert "max R-hat=inf" in _diagnostics_line(rec)
