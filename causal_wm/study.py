"""Reproducible studies: a YAML file names a model, data, fit settings, seed and queries.

``Study.run(out)`` fits, answers every query and writes one results folder atomically: it is
built in a temporary sibling folder and renamed at the end, so a failed or interrupted run
leaves no half-written results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from causal_wm.data import prepare
from causal_wm.errors import CausalWMError, StudyError, suggest
from causal_wm.library import read_yaml, resolve
from causal_wm.seeding import valid_seed
from causal_wm.spec import check_folder_name

log = logging.getLogger(__name__)

STUDY_KEYS = {"name", "description", "model", "data", "fit", "seed", "queries", "expect", "checks"}
FIT_KEYS = {"backend", "method", "chains", "draws", "warmup", "target_accept", "guide", "steps", "sampler",
            "dense_mass", "marginalize"}
QUERY_KEYS = {
    "effect": {"name", "kind", "outcome", "do", "vs", "given", "level", "question"},
    "simulate": {"name", "kind", "do", "n", "question"},
    "counterfactual": {"name", "kind", "do", "units", "draws", "question", "summary_only"},
    "mediation": {"name", "kind", "treatment", "mediator", "outcome", "treat_value", "control_value", "given",
                  "level", "question"},
}
REQUIRED_KEYS = {"effect": ("outcome", "do"), "simulate": (), "counterfactual": ("do",),
                 "mediation": ("treatment", "mediator", "outcome")}
EXPECT_KEYS = {"query", "part", "estimate_within", "interval_covers", "prob_positive_above", "within_sd_of"}
MEDIATION_PARTS = ("indirect", "direct", "total")
# checks: run after the fit (causal_wm.checks); the keys each kind allows, and those it needs
CHECK_KEYS = {
    "triangulate": {"kind", "outcome", "treatment"},
    "refute": {"kind", "outcome", "treatment", "num_simulations"},
    "sensitivity": {"kind", "outcome", "treatment", "strengths", "draws", "chains", "warmup"},
    "falsify": {"kind", "alpha"},
}
CHECK_REQUIRED = {"triangulate": ("outcome", "treatment"), "refute": ("outcome", "treatment"),
                  "sensitivity": ("outcome", "treatment"), "falsify": ()}


def _where(study_path, lines, key) -> str:
    line = lines.get(key)
    return f" [{study_path}, line {line}]" if line else f" [{study_path}]"


def parse_intervention(name: str, v: Any, where: str):
    """A study file's intervention value -> a Python intervention (data only, no code)."""
    from causal_wm import interventions as iv

    if isinstance(v, Mapping):
        for k, x in v.items():
            if k != "distribution" and (isinstance(x, bool) or not isinstance(x, (int, float))):
                raise StudyError(f"do.{name}.{k}: expected a number, got {x!r}{where}.")
        for kind in ("shift", "scale"):
            if set(v) == {kind}:
                x = v[kind]
                if not np.isfinite(x):
                    raise StudyError(f"do.{name}: {{{kind}: {x!r}}} needs one finite number, e.g. "
                                     f"{{{kind}: {1000 if kind == 'shift' else 1.1}}}{where}.")
                return getattr(iv, kind)(x)
        dist = v.get("distribution")
        args = {k: x for k, x in v.items() if k != "distribution"}
        makers = {"bernoulli": iv.bernoulli, "normal": iv.normal, "uniform": iv.uniform}
        if isinstance(dist, str) and dist in makers:
            try:
                return makers[dist](**args)
            except TypeError:
                raise StudyError(f"do.{name}: wrong parameters {sorted(args)} for {dist}{where}.") from None
        raise StudyError(
            f"do.{name}: expected a value, {{shift: d}}, {{scale: k}} or {{distribution: bernoulli|normal|"
            f"uniform, ...}}, got {v!r}{where}."
        )
    if isinstance(v, (list, dict)):
        raise StudyError(f"do.{name}: expected a single value, got {v!r}{where}.")
    return v


@dataclass(frozen=True)
class Study:
    """A study loaded from YAML. Use :meth:`load` then :meth:`run`."""

    name: str
    path: str
    spec: dict
    lines: dict
    # the file's bytes as loaded: results record their hash and a copy, whatever the file holds later
    text: bytes = dataclasses.field(default=b"", repr=False, compare=False)

    @classmethod
    def load(cls, path: str | Path) -> Study:
        """Load and validate a study file (by path or library name)."""
        p = resolve(path, "studies")
        try:
            text = p.read_bytes() if p.is_file() else b""
        except OSError:
            text = b""  # read_yaml says what is wrong with the path
        data, lines = read_yaml(p, error=StudyError)
        if not isinstance(data, Mapping):
            raise StudyError(f"{p}: a study must be a mapping with 'model' and 'queries'.")
        for k in data:
            if k not in STUDY_KEYS:
                raise StudyError(f"unknown key {k!r}{_where(p, lines, k)}; allowed: {sorted(STUDY_KEYS)}."
                                 f"{suggest(str(k), STUDY_KEYS)}")
        if "model" not in data:
            raise StudyError(f"{p}: missing 'model:' (a library name or a path to a model YAML).")
        if not isinstance(data["model"], str) or not data["model"].strip():
            raise StudyError(f"'model' must be a library name or a path to a model YAML, got {data['model']!r}"
                             f"{_where(p, lines, 'model')}.")
        if data.get("description") is not None and not isinstance(data["description"], str):
            raise StudyError(f"'description' must be text, got {data['description']!r}"
                             f"{_where(p, lines, 'description')}; write it as one string (a YAML block: "
                             "'description: >' and indented lines).")
        if data.get("data") is not None and not isinstance(data["data"], Mapping):
            raise StudyError(f"'data' must be a mapping like {{path: data.csv}} or {{package: causaldata, "
                             f"table: nsw_mixtape}}, got {data['data']!r}{_where(p, lines, 'data')}.")
        if data.get("data"):
            from causal_wm.integration import check_spec

            try:
                check_spec(data["data"])
            except CausalWMError as exc:
                raise StudyError(f"{str(exc).rstrip('.')}{_where(p, lines, 'data')}.") from None
        fit = data.get("fit") or {}
        if not isinstance(fit, Mapping):
            raise StudyError(f"'fit' must be a mapping{_where(p, lines, 'fit')}.")
        for k in fit:
            if k not in FIT_KEYS:
                raise StudyError(f"unknown fit setting {k!r}{_where(p, lines, k)}; allowed: {sorted(FIT_KEYS)}."
                                 f"{suggest(str(k), FIT_KEYS)}")
        try:
            from causal_wm.fitting import settings

            settings(**{str(k): v for k, v in fit.items()})
        except (CausalWMError, TypeError, ValueError) as exc:
            raise StudyError(f"fit: {exc}{_where(p, lines, 'fit')}") from None
        seed = data.get("seed", 0)
        if not isinstance(seed, int) or not valid_seed(seed):
            raise StudyError(f"'seed' must be a non-negative integer (0 <= seed < 2**63), got {seed!r}"
                             f"{_where(p, lines, 'seed')}; choose one in that range.")
        queries = data.get("queries") or []
        if not isinstance(queries, list) or not queries:
            raise StudyError(f"'queries' must be a non-empty list{_where(p, lines, 'queries')}.")
        names = set()
        for q in queries:
            if not isinstance(q, Mapping) or not isinstance(q.get("name"), str) or not q["name"]:
                raise StudyError(f"each query needs a mapping with a 'name' (a string), got {q!r}"
                                 f"{_where(p, lines, 'queries')}.")
            _check_query_name(q["name"], _where(p, lines, str(q["name"])))
            kind = q.get("kind")
            if not isinstance(kind, str) or kind not in QUERY_KEYS:
                raise StudyError(f"query {q['name']!r}: kind must be one of {sorted(QUERY_KEYS)}, got {kind!r}"
                                 f"{_where(p, lines, str(q['name']))}.")
            for k in q:
                if k not in QUERY_KEYS[kind]:
                    raise StudyError(f"query {q['name']!r}: unknown key {k!r}{_where(p, lines, str(q['name']))}; "
                                     f"allowed: {sorted(QUERY_KEYS[kind])}.{suggest(str(k), QUERY_KEYS[kind])}")
            if q["name"] in names:
                raise StudyError(f"query name {q['name']!r} is used twice{_where(p, lines, str(q['name']))}.")
            names.add(q["name"])
            _check_query(q, _where(p, lines, str(q["name"])))
        kinds = {q["name"]: q["kind"] for q in queries}
        expect = data.get("expect") or []
        if not isinstance(expect, list):
            raise StudyError(f"'expect' must be a list of {{query: NAME, <check>: value}} entries"
                             f"{_where(p, lines, 'expect')}.")
        for e in expect:
            _check_expect(e, kinds, _where(p, lines, "expect"))
        name = data.get("name") or p.stem
        if isinstance(name, (int, float)) and not isinstance(name, bool):
            name = str(name)  # `name: 2024` reads as a number
        check_folder_name(name, f"study name{_where(p, lines, 'name')}", StudyError)
        study = cls(name=name, path=str(p), spec=dict(data), lines=lines, text=text)
        _check_checks(study)
        return study

    # ------------------------------------------------------------------ running
    def model(self):
        """The study's SCM (model path relative to the study file, or a library name)."""
        from causal_wm.library import load_model

        m = self.spec["model"]
        cand = Path(self.path).parent / str(m)
        return load_model(cand if cand.suffix in (".yaml", ".yml") and cand.exists() else m)

    def data(self, scm) -> pd.DataFrame:
        """The study's data: its own ``data:`` (see :mod:`causal_wm.integration`) or the model's."""
        from causal_wm.integration import load_data

        spec = self.spec.get("data")
        if spec:
            return load_data(dict(spec), base=Path(self.path).parent).frame
        return scm.load_data()

    def run(self, out: str | Path = "results", backend: str | None = None, seed: int | None = None,
            draws: int | None = None, chains: int | None = None, warmup: int | None = None,
            progress: bool = False, on_written=None) -> Path:
        """Fit, answer every query, check ``expect:``, and write ``out/<study name>/`` atomically.

        ``on_written``, if given, is called with the complete results folder while it is still this
        run's own temporary folder, before it replaces ``out/<study name>/`` (the CLI prints its
        summary from there: a concurrent run may replace the final folder at any time).

        Returns the results folder. Raises :class:`StudyError` if an expectation fails (the
        results are still written, with the failure recorded).
        """
        t0 = time.time()
        if seed is not None and not valid_seed(seed):
            raise StudyError(f"seed must be a non-negative integer (0 <= seed < 2**63), got {seed!r}; choose one "
                             "in that range.")
        final = Path(out) / self.name
        check_output(final, "study")  # before fitting: never fit for minutes, then fail to write
        scm = self.model()
        df = self.data(scm)
        fit_kw = dict(self.spec.get("fit") or {})
        if backend:
            fit_kw["backend"] = backend
        for k, v in (("draws", draws), ("chains", chains), ("warmup", warmup)):
            if v is not None:
                fit_kw[k] = v
        seed_used = int(self.spec.get("seed", 0) if seed is None else seed)
        # validate every query against the model and the data before sampling starts
        queries = [self._query(q, scm) for q in self.spec["queries"]]
        self._check_values(scm, df, queries, fit_kw)
        post = scm.fit(df, seed=seed_used, progress=progress, **fit_kw)
        t_fit = time.time() - t0
        results = {}
        # queries select units among the rows fitted ('missing: drop' may have left some out)
        fitted = prepare(scm, df)[0] if post.data_summary.get("rows_dropped") else df
        for q, (fn, kwargs) in zip(self.spec["queries"], queries, strict=True):
            results[q["name"]] = fn(post, fitted, **kwargs)
        checks = self._check(results, post.ok)
        study_checks = run_checks(post, self.spec.get("checks") or [])
        tmp = _staging_dir(final)
        try:
            self._write(tmp, post, df, results, checks, seed_used, t_fit, time.time() - t0, study_checks)
            if on_written is not None:
                on_written(tmp)
            _replace_dir(tmp, final, "study")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("report written to %s", final / "report.html")
        failed = [c for c in checks if not c["passed"]]
        if failed:
            raise StudyError(
                "expectations failed: " + "; ".join(c["description"] for c in failed) + f" (results in {final})"
            )
        return final

    def _query(self, q, scm):
        from causal_wm.interventions import check_names
        from causal_wm.queries import check_mediation_paths

        where = _where(self.path, self.lines, str(q["name"]))
        do = {k: parse_intervention(k, v, where) for k, v in (q.get("do") or {}).items()}
        vs = {k: parse_intervention(k, v, where) for k, v in (q.get("vs") or {}).items()}
        try:
            check_names(scm, list(do) + list(vs), f"query {q['name']!r}")
            if q["kind"] == "effect":
                check_names(scm, [q.get("outcome")], f"query {q['name']!r} outcome")
                given = q.get("given")
                if given is not None:
                    check_names(scm, list(given), f"query {q['name']!r} given")
                return _run_effect, {"outcome": q["outcome"], "do": do, "vs": vs, "given": given,
                                     "level": q.get("level")}
            if q["kind"] == "simulate":
                return _run_simulate, {"do": do, "n": int(q.get("n", 1000))}
            if q["kind"] == "mediation":
                mediators = q["mediator"] if isinstance(q["mediator"], list) else [q["mediator"]]
                check_names(scm, [q["treatment"], q["outcome"], *mediators], f"query {q['name']!r}")
                check_mediation_paths(scm, q["treatment"], mediators, q["outcome"], f"query {q['name']!r}: mediation")
                given = q.get("given")
                if given is not None:
                    check_names(scm, list(given), f"query {q['name']!r} given")
                return _run_mediation, {"treatment": q["treatment"], "mediator": mediators, "outcome": q["outcome"],
                                        "treat_value": q.get("treat_value", 1),
                                        "control_value": q.get("control_value", 0), "given": given,
                                        "level": q.get("level")}
            units = q.get("units")
            if units is not None:
                check_names(scm, list(units), f"query {q['name']!r} units")
            summary_only = q.get("summary_only", False)
            if not isinstance(summary_only, bool):
                raise StudyError(f"summary_only must be true or false, got {summary_only!r}")
            return _run_counterfactual, {"do": do, "units": units, "draws": q.get("draws"),
                                         "summary_only": summary_only}
        except CausalWMError as exc:
            raise StudyError(f"{exc}{where}") from None

    def _check_values(self, scm, df, queries, fit_kw=None) -> None:
        """Check intervention values, levels, unit selections and draw counts against the data and the
        fit settings (no sampling). Units are selected among the rows the fit keeps ('missing: drop')."""
        from causal_wm.data import fit_scales
        from causal_wm.fitting import settings
        from causal_wm.interventions import check_do
        from causal_wm.queries import matches

        scales = fit_scales(scm, df)
        raw, df = df, prepare(scm, df)[0]  # the rows fitted, among which queries select their units
        s = settings(**(fit_kw or {}))
        n_draws = s.chains * s.draws
        for q, (_, kw) in zip(self.spec["queries"], queries, strict=True):
            where = _where(self.path, self.lines, str(q["name"]))
            try:
                for iv in (kw.get("do"), kw.get("vs")):
                    check_do(scm, scales, iv)
                if q["kind"] == "mediation":  # the treatment's two values, as the query sets them
                    for key in ("treat_value", "control_value"):
                        try:
                            check_do(scm, scales, {kw["treatment"]: kw[key]})
                        except CausalWMError as exc:
                            raise StudyError(f"query {q['name']!r}: {key} {kw[key]!r}: {exc}") from None
                if kw.get("draws") is not None and kw["draws"] > n_draws:
                    raise StudyError(f"query {q['name']!r}: draws: {kw['draws']} is more than the fit's "
                                     f"{n_draws} posterior draws ({s.chains} chains x {s.draws} draws); ask for at "
                                     f"most {n_draws}, or leave 'draws' out to use them all")
                categorical = "outcome" in kw and scm.node(kw["outcome"]).family == "categorical"
                if categorical and kw.get("level") not in scales[kw["outcome"]].levels:
                    raise StudyError(f"query {q['name']!r}: outcome {kw['outcome']!r} is categorical; add "
                                     f"'level:' with one of {list(scales[kw['outcome']].levels)}")
                if not categorical and kw.get("level") is not None:
                    raise StudyError(f"query {q['name']!r}: 'level:' picks a category of a categorical outcome, "
                                     f"and {kw.get('outcome')!r} is not one; remove it")
                select = kw.get("given") or kw.get("units")
                if select:
                    mask = np.ones(len(df), dtype=bool)
                    for k, v in select.items():
                        if scm.node(k).latent:
                            raise StudyError(f"query {q['name']!r}: {k!r} is latent, so units cannot be "
                                             "selected by it")
                        mask &= matches(scm, scales, df, k, v if isinstance(v, list) else [v])
                    if not mask.any():
                        raise StudyError(f"query {q['name']!r}: {select!r} selects no units of the data"
                                         + (" left after 'missing: drop'" if len(df) < len(raw) else "")
                                         + "; check the values")
            except CausalWMError as exc:
                msg = str(exc).rstrip(".")
                prefix = "" if msg.startswith("query ") else f"query {q['name']!r}: "
                raise StudyError(f"{prefix}{msg}{where}.") from None

    def _check(self, results, converged: bool = True) -> list[dict]:
        """The ``expect:`` entries judged. On a fit that did not converge none passes: its numbers may
        change with a longer run, so a regression check that passed on them would be meaningless."""
        checks = []
        for e in self.spec.get("expect") or []:
            res = results[e["query"]]
            label = e["query"]
            if "part" in e:  # a mediation query: its direct, indirect or total effect
                res, label = getattr(res, e["part"]), f"{e['query']} ({e['part']} effect)"
            for key, val in e.items():
                if key in ("query", "part"):
                    continue
                if key == "estimate_within":
                    x = res.mean()
                    ok = val[0] <= x <= val[1]
                    desc = f"{label}: estimate {x:.4g} within [{val[0]}, {val[1]}]"
                elif key == "interval_covers":
                    lo, hi = res.interval(0.9)
                    ok = lo <= val <= hi
                    desc = f"{label}: 90% interval [{lo:.4g}, {hi:.4g}] covers {val}"
                elif key == "prob_positive_above":
                    x = res.prob_positive()
                    ok = x > val
                    desc = f"{label}: P(effect > 0) = {x:.3f} above {val}"
                elif key == "within_sd_of":  # a published value, within one posterior SD of the mean
                    x, sd = res.mean(), float(np.std(res.draws))
                    ok = abs(x - val) <= sd
                    desc = f"{label}: estimate {x:.4g} within one posterior SD ({sd:.3g}) of {val}"
                else:
                    raise StudyError(f"unknown expectation {key!r}; use estimate_within, interval_covers or "
                                     "prob_positive_above.")
                if not converged:
                    ok = False
                    desc += (" - not judged: the fit did not converge (see its diagnostics); rerun with more "
                             "warmup and draws")
                checks.append({"query": e["query"], "check": key, "description": desc, "passed": bool(ok)})
        return checks

    def _write(self, d: Path, post, df, results, checks, seed, t_fit, t_total, study_checks=()):
        import causal_wm

        post.idata.to_netcdf(str(d / "posterior.nc"))
        rows = []
        payload = {}
        for name, res in results.items():
            payload[name] = res.to_dict()
            ident = identification(post.scm, res)
            if ident is not None:
                payload[name]["identification"] = ident
            rows.extend(r | {"prob": 0.9, "converged": bool(post.ok)} for r in _summary_rows(name, res))
            if hasattr(res, "factual"):
                res.summary().to_csv(d / f"counterfactual_{name}.csv", index=False, float_format="%.10g")
        pd.DataFrame(rows).to_csv(d / "summary.csv", index=False, float_format="%.10g")
        (d / "results.json").write_text(to_json(
            {"study": self.name, "model": post.scm.name, "seed": seed, "queries": payload, "expect": checks,
             "diagnostics": post.diagnostics().to_dict(), "ppc": post.ppc().reset_index().to_dict("records"),
             "data_summary": post.data_summary, "checks": list(study_checks)}))
        manifest = {
            "folder": "study", "study": self.name,
            "study_sha256": hashlib.sha256(self._text()).hexdigest(),
            "data_sha256": data_sha256(df),
            "seed": seed, "settings": dataclasses.asdict(post.settings),
            "chain_method": post.idata.attrs.get("chain_method"),  # parallel or sequential: part of the numbers
            "versions": _versions(), "causal_wm": causal_wm.__version__, "git": _git_sha(),
            "timings_s": {"fit": round(t_fit, 3), "total": round(t_total, 3)},
            "command": self._command(post.settings, seed),
        }
        (d / "manifest.json").write_text(to_json(manifest))
        self._write_inputs(d, post, df)
        from causal_wm.reporting import render_report

        render_report(d, announce=False)  # ``d`` is still the temporary folder; run() logs the final path

    def _write_inputs(self, d: Path, post, df) -> None:
        """Save what a report or a later query needs without refitting: the study file, the model, the
        data fitted and a data summary."""
        from causal_wm.reporting import summarise_data

        (d / "study.yaml").write_bytes(self._text())
        save_fit_inputs(d, post)
        # the columns as given, and what fitting did with their rows (dropped, imputed, integrated)
        summary = {**summarise_data(df), "preparation": post.data_summary}
        (d / "data_summary.json").write_text(to_json(summary))

    def _text(self) -> bytes:
        """The study file as it was when loaded (a Study built by hand: the file as it is now)."""
        return self.text or Path(self.path).read_bytes()

    def _command(self, settings, seed: int) -> str:
        """The command line that reproduces this run, naming every setting that the study file does not."""
        fit = self.spec.get("fit") or {}
        flags = [f"--seed {seed}"]
        for key in ("backend", "draws", "chains", "warmup"):
            value = getattr(settings, key)
            if fit.get(key) != value:
                flags.append(f"--{key} {value}")
        return f"causal-wm run {shlex.quote(str(self.path))} " + " ".join(flags)


def data_sha256(df: pd.DataFrame) -> str:
    """SHA-256 of a table: its column names and dtypes, in order, then its index and values.

    Examples
    --------
    >>> a = pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, 4.0]})
    >>> data_sha256(a) == data_sha256(a.copy()), data_sha256(a) == data_sha256(a.rename(columns={"x": "y", "y": "x"}))
    (True, False)
    """
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode("utf-8"))
    h.update(pd.util.hash_pandas_object(df, index=True).values.tobytes())
    return h.hexdigest()


def identification(scm, res) -> dict | None:
    """What the graph says about an effect or mediation query (for results.json and the report)."""
    from causal_wm.errors import NotIdentifiable, QueryError

    d = res.to_dict()
    if d["kind"] == "effect":
        treatment, outcome = sorted(set(d["do"]) | set(d["vs"])), d["outcome"]
    elif d["kind"] == "mediation":
        treatment, outcome = [d["treatment"]], d["outcome"]
    else:
        return None
    try:
        idf = scm.identify(treatment, outcome)
    except NotIdentifiable as exc:
        return {"is_identified": False, "kind": "none", "estimand": None, "assumptions": [str(exc)]}
    except QueryError as exc:  # e.g. a latent treatment: nothing the graph can say from data
        return {"is_identified": False, "kind": "none", "estimand": None, "assumptions": [str(exc)]}
    return {"is_identified": bool(idf.is_identified), "kind": idf.kind, "estimand": idf.estimand,
            "adjustment_set": None if idf.adjustment_set is None else list(idf.adjustment_set),
            "instruments": list(idf.instruments), "assumptions": list(idf.assumptions)}


def save_fit(post, out: str | Path) -> Path:
    """Write a fitted posterior to ``out/<model name>/`` atomically (for ``causal-wm fit``)."""
    import causal_wm

    final = Path(out) / post.scm.name
    check_output(final, "fit")
    tmp = _staging_dir(final)
    try:
        post.idata.to_netcdf(str(tmp / "posterior.nc"))
        save_fit_inputs(tmp, post)
        manifest = {"folder": "fit", "model": post.scm.name, "seed": post.seed, "versions": _versions(),
                    "causal_wm": causal_wm.__version__, "git": _git_sha(),
                    "settings": dataclasses.asdict(post.settings),
                    "diagnostics": post.diagnostics().to_dict()}
        (tmp / "manifest.json").write_text(to_json(manifest))
        _replace_dir(tmp, final, "fit")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_fit_inputs(d: Path, post) -> None:
    """Save what rebuilds the Posterior without refitting: the model and the exact data fitted.

    ``data.csv`` holds the observed columns at full float precision and ``data_types.json`` their types,
    so :func:`causal_wm.saved.load_posterior` recovers the same data, and so the same internal scales.
    """
    import yaml

    (d / "model.yaml").write_text(yaml.safe_dump(post.scm.to_dict(), sort_keys=False, allow_unicode=True),
                                  encoding="utf-8")
    from causal_wm.saved import write_frame

    write_frame(post.plan.frame, d)


def _check_query_name(name: str, where: str) -> None:
    """A query name names files (``counterfactual_<name>.csv``): no slashes, printable, not too long."""
    ok = (name.isprintable() and len(name) <= 100 and len(name.encode("utf-8")) <= 200 and "/" not in name
          and "\\" not in name and name.strip() == name and name not in (".", ".."))
    if not ok:
        raise StudyError(f"query name {name!r} cannot be used in a file name (results write "
                         f"counterfactual_<name>.csv); use letters, digits, spaces, '_', '-' and '.', with no "
                         f"slashes, control characters or leading/trailing spaces, at most 100 characters{where}.")


def _check_query(q, where) -> None:
    """Required keys and the types of a query's values (the model is checked in ``run``)."""
    name = q["name"]
    for k in REQUIRED_KEYS[q["kind"]]:
        if k not in q:
            raise StudyError(f"query {name!r} ({q['kind']}) needs {k!r}{where}.")
    for k in ("do", "vs", "given", "units"):
        if q.get(k) is not None and not isinstance(q[k], Mapping):
            raise StudyError(f"query {name!r}: {k!r} must be a mapping of node -> value, e.g. "
                             f"{{treat: 1}}, got {q[k]!r}{where}.")
    for k in ("do", "vs"):
        for node, v in (q.get(k) or {}).items():
            parse_intervention(str(node), v, where)
    if q["kind"] in ("effect", "counterfactual") and not q["do"]:
        raise StudyError(f"query {name!r}: 'do' must name at least one intervention, e.g. do: {{treat: 0}}{where}.")
    for k in ("n", "draws"):
        v = q.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise StudyError(f"query {name!r}: {k!r} must be a positive integer, got {v!r}{where}.")
    if not isinstance(q.get("summary_only", False), bool):
        raise StudyError(f"query {name!r}: 'summary_only' must be true or false{where}.")


def _number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float))


def _check_expect(e, kinds, where) -> None:
    """An ``expect:`` entry names an effect query (or a mediation query and its ``part``) and known
    checks with well-formed values."""
    if not isinstance(e, Mapping) or e.get("query") not in kinds:
        raise StudyError(f"expect entry {e!r} must name a query of this study{where}."
                         f"{suggest(str(e.get('query')), kinds) if isinstance(e, Mapping) else ''}")
    kind = kinds[e["query"]]
    if kind not in ("effect", "mediation"):
        raise StudyError(f"expect entry {e!r}: only effect queries (and mediation queries, naming a part:) can be "
                         f"checked, and {e['query']!r} is a {kind} query{where}.")
    for key, val in e.items():
        if key not in EXPECT_KEYS:
            raise StudyError(f"expect entry for {e['query']!r}: unknown check {key!r}{where}; use estimate_within, "
                             f"interval_covers or prob_positive_above.{suggest(str(key), EXPECT_KEYS)}")

        ok = (
            key in ("query", "part")
            or (key == "estimate_within" and isinstance(val, list) and len(val) == 2 and all(map(_number, val))
                and val[0] <= val[1])
            or (key == "interval_covers" and _number(val))
            or (key == "prob_positive_above" and _number(val) and 0 <= val < 1)
            or (key == "within_sd_of" and _number(val))
        )
        if not ok:
            raise StudyError(f"expect entry for {e['query']!r}: {key}: {val!r} is malformed; write "
                             "estimate_within: [low, high], interval_covers: number, within_sd_of: number or "
                             f"prob_positive_above: probability in [0, 1){where}.")
    part = e.get("part")
    if kind == "mediation" and part not in MEDIATION_PARTS:
        hint = suggest(str(part), MEDIATION_PARTS) if part is not None else ""
        raise StudyError(f"expect entry for {e['query']!r}: a mediation query has three effects; name one with "
                         f"part: {' | '.join(MEDIATION_PARTS)}, got {part!r}{where}.{hint}")
    if kind == "effect" and "part" in e:
        raise StudyError(f"expect entry for {e['query']!r}: 'part' is only for mediation queries, and "
                         f"{e['query']!r} is an effect query; remove it{where}.")
    if not any(k in e for k in EXPECT_KEYS - {"query", "part"}):
        raise StudyError(f"expect entry for {e['query']!r} checks nothing; add estimate_within, interval_covers "
                         f"or prob_positive_above{where}.")


def _item_lines(path, key: str) -> list[int]:
    """The line of each item of the top-level list ``key`` of a YAML file (for error messages)."""
    import yaml

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return []
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if k.value == key and isinstance(v, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in v.value]
    return []


def _positive_int(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= 1


def _check_checks(study) -> None:
    """Validate the ``checks:`` entries: kinds, keys and values, then their variables against the model."""
    entries = study.spec.get("checks")
    if entries is None:
        return
    p, lines = study.path, study.lines
    if not isinstance(entries, list):
        raise StudyError(f"'checks' must be a list of entries like {{kind: triangulate, outcome: y, treatment: t}}"
                         f"{_where(p, lines, 'checks')}.")
    item_lines = _item_lines(p, "checks")
    for i, e in enumerate(entries):
        line = item_lines[i] if i < len(item_lines) else lines.get("checks")
        where = f" [{p}, line {line}]" if line else f" [{p}]"
        head = f"checks entry {i + 1}"
        if not isinstance(e, Mapping):
            raise StudyError(f"{head} must be a mapping like {{kind: falsify}}, got {e!r}{where}.")
        kind = e.get("kind")
        if not isinstance(kind, str) or kind not in CHECK_KEYS:
            raise StudyError(f"{head}: kind must be one of {sorted(CHECK_KEYS)}, got {kind!r}{where}."
                             f"{suggest(str(kind), CHECK_KEYS)}")
        head = f"{head} ({kind})"
        for k in e:
            if k not in CHECK_KEYS[kind]:
                raise StudyError(f"{head}: unknown key {k!r}{where}; allowed: {sorted(CHECK_KEYS[kind])}."
                                 f"{suggest(str(k), CHECK_KEYS[kind])}")
        for k in CHECK_REQUIRED[kind]:
            if not isinstance(e.get(k), str):
                raise StudyError(f"{head} needs {k!r}: the name of a node, got {e.get(k)!r}{where}.")
        strengths = e.get("strengths", [0.0])
        if not (isinstance(strengths, list) and strengths and all(_number(x) and 0 <= x < 10 for x in strengths)):
            raise StudyError(f"{head}: 'strengths' must be a non-empty list of confounder loadings between 0 and "
                             f"10 (SDs per SD of the hidden confounder), e.g. [0.0, 0.25, 0.5], got "
                             f"{strengths!r}{where}.")
        for k in ("draws", "chains", "warmup", "num_simulations"):
            if k in e and not _positive_int(e[k]):
                raise StudyError(f"{head}: {k!r} must be a positive integer, got {e[k]!r}{where}.")
        if "alpha" in e and not (_number(e["alpha"]) and 0 < e["alpha"] < 1):
            raise StudyError(f"{head}: 'alpha' must be a probability in (0, 1), e.g. 0.05, got {e['alpha']!r}{where}.")
    if entries:
        scm = study.model()
        for i, e in enumerate(entries):
            line = item_lines[i] if i < len(item_lines) else lines.get("checks")
            _check_check_nodes(scm, e, f"checks entry {i + 1} ({e['kind']})", f" [{p}, line {line}]" if line else "")


def _check_check_nodes(scm, e, head: str, where: str) -> None:
    """A check's outcome and treatment: observed nodes of the model, distinct, and not categorical."""
    names = [e[k] for k in ("treatment", "outcome") if k in e]
    for role in ("treatment", "outcome"):
        v = e.get(role)
        if v is None:
            continue
        if v not in scm.names:
            raise StudyError(f"{head}: {role} {v!r} is not a node of model {scm.name!r}{where}."
                             f"{suggest(v, scm.names)} Nodes are {list(scm.names)}.")
        node = scm.node(v)
        if node.latent:
            raise StudyError(f"{head}: {role} {v!r} is latent; checks compare estimates on observed data, so name "
                             f"an observed node{where}.")
        if node.family == "categorical":
            raise StudyError(f"{head}: {role} {v!r} is categorical; these checks need a binary or continuous "
                             f"{role}{where}.")
    if len(names) == 2 and names[0] == names[1]:
        raise StudyError(f"{head}: treatment and outcome are both {names[0]!r}; name two different nodes{where}.")
    if len(names) == 2 and names[1] not in scm.descendants([names[0]]):
        raise StudyError(f"{head}: outcome {names[1]!r} is not downstream of treatment {names[0]!r} in the graph, "
                         f"so the effect is zero by assumption; check the names{where}.")


def _records(df: pd.DataFrame) -> list[dict]:
    """Rows of a table as JSON-ready dicts (NaN becomes null, numpy scalars plain Python)."""
    out = []
    for r in df.to_dict("records"):
        row = {}
        for k, v in r.items():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not np.isfinite(v):
                v = None
            row[str(k)] = v
        out.append(row)
    return out


def _check_triangulate(post, e) -> dict:
    from causal_wm.checks import triangulate

    tab = triangulate(post, e["outcome"], e["treatment"], prob=0.9)
    return {"prob": 0.9, "contrast": str(tab["contrast"].iloc[0]),
            "rows": _records(tab.drop(columns="contrast"))}


def _check_refute(post, e) -> dict:
    from causal_wm.checks import refute

    n = int(e.get("num_simulations", 20))
    tab = refute(post, e["outcome"], e["treatment"], num_simulations=n)
    return {"num_simulations": n, "note": tab.attrs.get("note", ""), "rows": _records(tab)}


def _check_sensitivity(post, e) -> dict:
    from causal_wm.checks import sensitivity

    overrides = {k: int(e[k]) for k in ("draws", "chains", "warmup") if k in e}
    tab = sensitivity(post, e["outcome"], e["treatment"], strengths=tuple(float(s) for s in e.get(
        "strengths", (0.0, 0.25, 0.5, 0.75))), prob=0.9, **overrides)
    settings = {**dataclasses.asdict(post.settings), **overrides}
    return {"prob": 0.9, "contrast": tab.attrs.get("contrast", ""), "breakdown": tab.attrs.get("breakdown"),
            "fit": {k: settings[k] for k in ("backend", "method", "chains", "draws", "warmup")},
            "rows": _records(tab.drop(columns="breakdown"))}


def _check_falsify(post, e) -> dict:
    from causal_wm.checks import falsify

    alpha = float(e.get("alpha", 0.05))
    tab = falsify(post, alpha=alpha)
    return {"alpha": alpha, "summary": tab.attrs.get("summary", ""), "rows": _records(tab)}


CHECK_RUNNERS = {"triangulate": _check_triangulate, "refute": _check_refute, "sensitivity": _check_sensitivity,
                 "falsify": _check_falsify}


def run_checks(post, entries) -> list[dict]:
    """Run a study's ``checks:`` on a fitted posterior; one JSON-ready record per entry.

    Each record has the entry's ``kind``, ``outcome`` and ``treatment``, a ``status`` (``ok`` or
    ``failed``), the ``reason`` of a failure, the ``seconds`` it took and the check's own table as
    ``rows`` (see :mod:`causal_wm.checks`). A check whose external estimator (DoWhy) or refit fails is
    recorded as failed with the exception's message: a study's answers do not hang on its checks.
    """
    out = []
    for i, e in enumerate(entries):
        rec: dict[str, Any] = {"kind": e["kind"], "outcome": e.get("outcome"), "treatment": e.get("treatment")}
        log.info("check %d of %d: %s", i + 1, len(entries), e["kind"])
        t = time.time()
        try:
            rec.update(CHECK_RUNNERS[e["kind"]](post, e))
            rec["status"], rec["reason"] = "ok", ""
        except Exception as exc:  # any failure of a check is its result, recorded with the reason
            log.warning("check %d (%s) failed: %s: %s", i + 1, e["kind"], type(exc).__name__, exc)
            rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}", rows=[])
        rec["seconds"] = round(time.time() - t, 3)
        out.append(rec)
    return out


def _run_effect(post, df, **kw):
    return post.effect(kw["outcome"], do=kw["do"], vs=kw["vs"], given=kw["given"], level=kw["level"])


def _run_simulate(post, df, **kw):
    return post.simulate(do=kw["do"], n=kw["n"])


def _run_mediation(post, df, **kw):
    return post.mediation(kw["treatment"], kw["mediator"], kw["outcome"], treat_value=kw["treat_value"],
                          control_value=kw["control_value"], given=kw["given"], level=kw["level"])


def _run_counterfactual(post, df, **kw):
    units = df
    if kw["units"]:
        mask = np.ones(len(df), dtype=bool)
        for k, v in kw["units"].items():
            mask &= df[k].isin(v if isinstance(v, list) else [v]).to_numpy()
        units = df[mask]
    return post.counterfactual(units=units, do=kw["do"], draws=kw["draws"], summary_only=kw["summary_only"])


def _summary_rows(name, res) -> list[dict]:
    kind = res.to_dict()["kind"] if not hasattr(res, "factual") else "counterfactual"
    if kind in ("effect", "mediation"):
        t = res.summary(0.9).reset_index()
        return [{"query": name, "kind": kind, "quantity": r["quantity"], "estimate": r["estimate"],
                 "lower": r["lower"], "upper": r["upper"], "mcse": r["mcse"]} for _, r in t.iterrows()]
    if kind == "simulate":
        t = res.summary(0.9).reset_index()
        return [{"query": name, "kind": kind, "quantity": f"{r['node']} (predictive)", "estimate": r["estimate"],
                 "lower": r["lower"], "upper": r["upper"], "mcse": r["mcse"]} for _, r in t.iterrows()]
    # the posterior of the mean over units (per draw, then its interval), not the mean of the units' intervals
    t = res.average(0.9)
    n = t.attrs["n_units"]
    return [{"query": name, "kind": kind, "quantity": f"{node} (mean over {n} units)", "estimate": r["estimate"],
             "lower": r["lower"], "upper": r["upper"], "mcse": r["mcse"]} for node, r in t.iterrows()]


def _run_tag() -> str:
    """Marks this process's temporary folders with its host and pid, so that a later run can tell the
    leftovers of a killed run (same host, process gone) from the folder of a run still writing."""
    return f"run-{zlib.crc32(socket.gethostname().encode()):08x}-{os.getpid()}-"


def _staging_dir(final: Path) -> Path:
    """A new temporary sibling of ``final`` to write results into (renamed to ``final`` at the end)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_run_tag()}", dir=final.parent))
    tmp.chmod(0o755)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale(final: Path) -> None:
    """Remove temporary folders that killed runs (SIGKILL, power loss) left beside ``final``: those of
    this host whose process is gone. Others (another host, a live process) are left alone."""
    host = _run_tag().split("-")[1]
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.run-([0-9a-f]{{8}})-(\d+)-")
    for p in final.parent.iterdir():
        m = pattern.match(p.name)
        if m and m.group(1) == host and int(m.group(2)) != os.getpid() and not _alive(int(m.group(2))):
            log.info("removing %s, left by a run that was killed", p)
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """Hold an exclusive lock on ``folder`` (flock on the directory itself: no lock file to leave
    behind), so that runs finishing at the same moment swap their results in one at a time."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, the renames stay atomic
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# What a results folder holds, by its manifest.json: a study run's ("study") or a saved fit's ("fit").
FOLDER_KINDS = {"study": "the results of a study (causal-wm run)", "fit": "a saved fit (causal-wm fit)"}


def folder_kind(folder: Path) -> str | None:
    """``"study"`` or ``"fit"`` for a results folder written by causal_wm, else ``None``.

    The marker is the ``manifest.json`` every writer puts in the folder: its ``"folder"`` entry (older
    folders: a ``"study"`` entry for a study run, a ``"model"`` entry for a saved fit).
    """
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    kind = manifest.get("folder")
    if kind in FOLDER_KINDS:
        return kind
    if "study" in manifest and "study_sha256" in manifest:
        return "study"
    if "model" in manifest and "settings" in manifest:
        return "fit"
    return None


def check_output(final: str | Path, kind: str) -> None:
    """Refuse, before any fitting, an output that a run could not write or must not replace.

    ``final`` (``out/<name>``) may be absent, an empty folder, or a results folder of the same
    ``kind`` (``"study"`` or ``"fit"``), which the run replaces whole. Anything else — a folder of the
    user's own files, a saved fit where a study would write (or the reverse), a file — is never deleted.
    """
    final = Path(final)
    out = final.parent
    for p in (out, *out.parents):  # the first existing ancestor of the output folder must be a folder
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise StudyError(f"output folder {str(out)!r}: {str(p)!r} is a file, not a folder; give --out a "
                                 "folder (it is created if missing).")
            if not os.access(p, os.W_OK | os.X_OK):
                raise StudyError(f"output folder {str(out)!r}: {str(p)!r} is not writable; give --out a folder "
                                 "you can write to.")
            break
    if not (final.exists() or final.is_symlink()):
        return
    if final.is_symlink() or not final.is_dir():
        raise StudyError(f"{str(final)!r} exists and is not a results folder (it is a file or a link); a run "
                         "would replace it. Move it away or give another --out.")
    found = folder_kind(final)
    if found == kind or (found is None and not any(final.iterdir())):
        return
    what = FOLDER_KINDS[found] if found else "a folder that causal_wm did not write (it has no manifest.json)"
    raise StudyError(f"{str(final)!r} holds {what}, and a run writing {FOLDER_KINDS[kind]} replaces the folder "
                     "it writes into; refusing to delete it. Give another --out, or move that folder away.")


def _replace_dir(tmp: Path, final: Path, kind: str = "study") -> None:
    """Move ``tmp`` into place as ``final``; an older ``final`` is swapped out, then removed.

    Two runs into one folder each build their own ``tmp``; the swap happens under a lock, so the
    folder always holds one complete run (the last to finish), never a mix, and neither fails.
    Only a results folder of the same ``kind`` is ever replaced (see :func:`check_output`).
    """
    old = None
    with _folder_lock(final.parent):
        _remove_stale(final)
        check_output(final, kind)  # again under the lock: the folder may have changed while fitting
        if final.exists():
            old = final.with_name(f".{final.name}.{_run_tag()}old{time.time_ns()}")
            os.replace(final, old)
        os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("numpy", "scipy", "pandas", "jax", "numpyro", "arviz", "numba", "pymc", "networkx", "dowhy"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


def _git_sha() -> str | None:
    import subprocess

    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                           cwd=Path(__file__).parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _plain(o):
    """``o`` with NumPy values made plain Python and every non-finite float (NaN, inf) made ``None``."""
    if isinstance(o, np.ndarray):
        o = o.tolist()
    elif isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, Mapping):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    return o


def to_json(o) -> str:
    """Strict JSON text of ``o`` (never a bare NaN or Infinity, which JSON readers reject: they become null).

    Examples
    --------
    >>> to_json([float("nan"), np.float32(2.0), float("inf")]).split()
    ['[', 'null,', '2.0,', 'null', ']']
    """
    return json.dumps(_plain(o), indent=2, default=_json_default, allow_nan=False)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
