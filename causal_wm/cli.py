"""The ``causal-wm`` command line (typer). Printing happens here and nowhere else."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Fit structural causal models and answer causal questions with uncertainty.")


def _version(value: bool) -> None:
    if value:
        import causal_wm

        typer.echo(f"causal-wm {causal_wm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Fit structural causal models and answer causal questions with uncertainty."""
    # every command starts from warnings only: a level raised by an earlier command in the same
    # process (run and fit show progress) must not put log lines into report's or query's output
    _log_to_terminal(quiet=True)


def _bars(quiet: bool) -> bool:
    """Whether to show the samplers' progress bars: not with --quiet, and only on a terminal. Parallel
    chains redraw one bar each with cursor movements, which turn into interleaved lines in a log file."""
    return not quiet and sys.stderr.isatty()


def _fail(exc: Exception, debug: bool) -> None:
    if debug:
        raise exc
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record is emitted: one bound to the
    stream of its first command would write to a closed stream once a caller (a test runner invoking
    several commands in one process) has swapped it."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # (StreamHandler.__init__ sets it)
        pass


def _log_to_terminal(quiet: bool) -> None:
    # our own progress messages only; other libraries keep their own (quieter) levels
    logger = logging.getLogger("causal_wm")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


@app.command()
def run(
    study: Path = typer.Argument(..., help="Study YAML file, or the name of a shipped study."),
    out: Path = typer.Option(Path("results"), "--out", help=(
        "Folder for results (a subfolder per study). An existing OUT/<study> is replaced only if it holds an "
        "earlier run of a study; a saved fit (causal-wm fit) or a folder of other files is never deleted: "
        "the run stops before fitting.")),
    backend: str = typer.Option(None, "--backend", help="numpyro or pymc (overrides the study)."),
    seed: int = typer.Option(None, "--seed", help="Seed (overrides the study)."),
    draws: int = typer.Option(None, "--draws", help="Draws per chain (overrides the study)."),
    chains: int = typer.Option(None, "--chains", help="Chains (overrides the study)."),
    warmup: int = typer.Option(None, "--warmup", help="Warm-up iterations (overrides the study)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output (sampler progress bars are shown "
                                                      "only when the output is a terminal)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
):
    """Fit the study's model, answer its queries and write a results folder."""
    import warnings

    from causal_wm.errors import CausalWMError, ConvergenceWarning, DataWarning, IdentificationWarning
    from causal_wm.study import Study

    _log_to_terminal(quiet)
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    summary: list[str] = []  # read from this run's own files, before they are moved into place
    caught: list = []
    try:
        s = Study.load(study)
        if not quiet:
            typer.echo(f"study {s.name}: fitting and answering {len(s.spec['queries'])} queries ...")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            warnings.simplefilter("always", IdentificationWarning)
            warnings.simplefilter("always", DataWarning)
            folder = s.run(out, backend=backend, seed=seed, draws=draws, chains=chains, warmup=warmup,
                           progress=_bars(quiet), on_written=lambda d: _print_summary(d, summary.append))
    except CausalWMError as exc:
        # a failed expectation comes after the results are written: show them (and the warnings) first
        _print_run(caught, summary)
        _fail(exc, debug)
        return
    _print_run(caught, summary)
    typer.echo(f"results written to {folder}")
    typer.echo(f"report: {folder / 'report.html'}")


def _print_run(caught, summary: list[str]) -> None:
    """A run's warnings (to stderr), then its results table, diagnostics and expectations."""
    from causal_wm.errors import ConvergenceWarning, DataWarning, IdentificationWarning

    for w in caught or []:
        if issubclass(w.category, (ConvergenceWarning, IdentificationWarning, DataWarning)):
            typer.echo(f"warning: {w.message}", err=True)
    for line in summary:
        typer.echo(line)


def _diagnostics_line(d: dict) -> str:
    rhat = "inf (chains stuck)" if d.get("max_rhat_infinite") else d["max_rhat"]
    return (f"diagnostics: ok={d['ok']} max R-hat={rhat} min bulk ESS={d['min_ess_bulk']} "
            f"divergences={d['divergences']}")


def _print_summary(folder: Path, echo=typer.echo) -> None:
    import json

    import pandas as pd

    table = pd.read_csv(folder / "summary.csv").drop(columns=["prob", "converged"], errors="ignore")  # said below
    with pd.option_context("display.max_rows", 200, "display.width", 160, "display.float_format", "{:,.4g}".format):
        echo(table.to_string(index=False))
    res = json.loads((folder / "results.json").read_text())
    d = res["diagnostics"]
    echo(_diagnostics_line(d))
    for c in res["expect"]:
        echo(f"expect: {'PASS' if c['passed'] else 'FAIL'} {c['description']}")
    for c in res.get("checks") or []:  # details are in results.json and report.html
        on = f" {c['treatment']} -> {c['outcome']}" if c.get("treatment") else ""
        verdict = "done" if c["status"] == "ok" else f"FAILED ({c['reason']})"
        extra = f", breakdown strength {c['breakdown']}" if c.get("breakdown") is not None else ""
        extra += f", {c['summary']}" if c.get("summary") else ""
        echo(f"check: {c['kind']}{on} {verdict}{extra}")


@app.command()
def report(
    results_dir: Path = typer.Argument(..., help="A results folder written by 'causal-wm run' (results/<study>)."),
    pdf: bool = typer.Option(False, "--pdf", help="Also write report.pdf (needs: pip install weasyprint)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
):
    """Re-render report.html from a saved results folder (no refit)."""
    from causal_wm.errors import CausalWMError
    from causal_wm.reporting import render_report

    try:
        path = render_report(results_dir, pdf=pdf)
    except CausalWMError as exc:
        _fail(exc, debug)
        return
    typer.echo(str(path))
    if pdf:
        typer.echo(str(path.with_suffix(".pdf")))


@app.command()
def query(
    results_dir: Path = typer.Argument(..., help="A results folder (from causal-wm run or causal-wm fit)."),
    outcome: str = typer.Option(None, "--outcome", help="Outcome node (effect queries)."),
    do: list[str] = typer.Option(..., "--do", help="Intervention NODE=VALUE, NODE=shift:D or NODE=scale:K."),
    vs: list[str] = typer.Option(None, "--vs", help="Comparison intervention (default: none)."),
    units: str = typer.Option(None, "--units", help="Units to average over, e.g. \"age > 30 and black == 1\"."),
    counterfactual: bool = typer.Option(False, "--counterfactual", help="Per-unit counterfactuals instead."),
    prob: float = typer.Option(0.9, "--prob", help="Interval probability."),
    level: str = typer.Option(None, "--level", help="Category of a categorical outcome (effect queries): the "
                              "effect on the probability of that category."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
):
    """Ask a new question of a saved posterior, without refitting."""
    import pandas as pd

    from causal_wm.errors import CausalWMError, QueryError
    from causal_wm.saved import load_posterior, select_units

    try:
        post = load_posterior(results_dir)
        do_map = _assignments(post, do)
        vs_map = _assignments(post, vs or [])
        mask = select_units(post.plan.frame, units)
        if counterfactual:
            res = post.counterfactual(units=post.plan.frame[mask], do=do_map, summary_only=True, prob=prob)
            table = res.summary()
            if outcome:
                if outcome not in set(table["node"]):
                    from causal_wm.errors import suggest

                    nodes = list(dict.fromkeys(table["node"]))
                    raise QueryError(f"--outcome {outcome!r} is not a node these counterfactuals change; they "
                                     f"change {nodes}.{suggest(outcome, nodes)} Leave --outcome out to see them all.")
                table = table[table["node"] == outcome]
        else:
            if not outcome:
                raise QueryError("an effect query needs --outcome NODE.")
            if level is not None and outcome in post.plan.scales:
                level = _label(post, outcome, level) or level
            res = post.effect(outcome, do=do_map, vs=vs_map, given=mask, level=level)
            table = res.summary(prob)
    except CausalWMError as exc:
        _fail(exc, debug)
        return
    with pd.option_context("display.max_rows", 60, "display.width", 160):
        typer.echo(table.to_string())
    if not post.ok:
        typer.echo("warning: the saved fit did not pass its convergence checks.", err=True)


def _label(post, name: str, text: str):
    """The category of ``name`` written ``text`` on the command line (labels 10 and "10" both read
    "10"), or None where none is."""
    levels = post.plan.scales[name].levels or ()
    return next((lv for lv in levels if str(lv) == text), None)


def _assignments(post, texts) -> dict:
    """NODE=VALUE interventions, with a categorical node's value read as its category's label."""
    from causal_wm.saved import parse_assignment

    out = {}
    for text in texts:
        name, value = parse_assignment(text)
        label = _label(post, name, text.split("=", 1)[1].strip()) if name in post.plan.scales else None
        out[name] = value if label is None else label
    return out


@app.command()
def fit(
    model: str = typer.Argument(..., help="Model YAML file or library name."),
    data: Path = typer.Option(None, "--data", help="CSV/Parquet data (default: the model's own data source)."),
    out: Path = typer.Option(Path("results"), "--out", help=(
        "Folder for results (a subfolder per model). An existing OUT/<model> is replaced only if it holds an "
        "earlier saved fit; a study's results (causal-wm run) or a folder of other files is never deleted: "
        "the command stops before fitting.")),
    backend: str = typer.Option("numpyro", "--backend", help="numpyro or pymc."),
    seed: int = typer.Option(0, "--seed"),
    draws: int = typer.Option(1000, "--draws"),
    chains: int = typer.Option(4, "--chains"),
    warmup: int = typer.Option(1000, "--warmup"),
    quiet: bool = typer.Option(False, "--quiet"),
    debug: bool = typer.Option(False, "--debug"),
):
    """Fit a model and save its posterior (posterior.nc, model, data, diagnostics) for later queries."""
    from causal_wm.errors import CausalWMError
    from causal_wm.library import load_model
    from causal_wm.sources import load_source
    from causal_wm.study import check_output, save_fit

    _log_to_terminal(quiet)
    try:
        scm = load_model(model)
        check_output(out / scm.name, "fit")  # before fitting: what is there must be a saved fit, or nothing
        df = load_source({"path": str(data)}) if data else scm.load_data()
        post = scm.fit(df, backend=backend, seed=seed, draws=draws, chains=chains, warmup=warmup,
                       progress=_bars(quiet))
        folder = save_fit(post, out)
    except CausalWMError as exc:
        _fail(exc, debug)
        return
    d = post.diagnostics().to_dict()
    typer.echo(_diagnostics_line(d))
    typer.echo(f"posterior written to {folder}")


@app.command()
def models():
    """List the model library, one line per model (name, size, whether a study of the same name ships, summary)."""
    import re

    from causal_wm.library import list_library, load_model

    studies = set(list_library("studies"))
    for name in list_library("models"):
        scm = load_model(name)
        # the first sentence: a full stop followed by a capital (so "ch. 12" does not end it)
        first = re.split(r"\.\s+(?=[A-Z])", " ".join((scm.description or "").split()))[0].rstrip(".")
        if len(first) > 90:  # cut at a word, and say so, rather than mid-word
            first = first[:89].rsplit(" ", 1)[0] + "…"
        study = "study" if name in studies else "     "
        typer.echo(f"{name:28s} {len(scm.nodes):3d} nodes  {study}  {first}")


# seconds an interrupted run has to unwind (remove its staging folder) before it is ended regardless
GRACE_S = 10.0


def main() -> None:  # pragma: no cover - console entry point
    """The ``causal-wm`` command. Ctrl-C ends it with status 130 and a line saying nothing was written.

    The interrupt unwinds normally (a run's staging folder is removed on the way out), and then the
    process leaves without the interpreter's shutdown: XLA's worker threads may still be running a
    sampler step, and tearing the interpreter down under them ended 2 of 8 interrupted runs with a
    segmentation fault."""
    import os
    import signal
    import threading

    interrupted = []

    def leave() -> None:
        typer.echo("interrupted: nothing was written (an earlier results folder is left as it was)", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)

    def on_interrupt(signum, frame):
        if interrupted:  # a second Ctrl-C: leave now
            leave()
        interrupted.append(signum)
        # the interrupt can be swallowed where Python ignores exceptions (a callback, a finaliser)
        # or wait behind a long compiled call: leave anyway after a grace period for the unwinding
        threading.Timer(GRACE_S, leave).start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        app(prog_name="causal-wm")
    except SystemExit:
        if not interrupted:
            raise
    except KeyboardInterrupt:
        pass
    if interrupted:
        leave()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
