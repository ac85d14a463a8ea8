"""Readable reports of a results folder: one self-contained ``report.html``, rendered without refitting.

Everything comes from what :meth:`causal_wm.Study.run` saved in the folder: ``results.json``,
``summary.csv``, ``manifest.json``, ``study.yaml``, ``model.yaml`` and ``data_summary.json``.
Folders written before the last three existed still render; their sections say what is missing.
Figures are PNGs embedded as ``data:`` URIs (see :mod:`causal_wm.plots`), and every piece of text
from the study, the model or the data is escaped by the template engine.

``cw.report("results/job_training")`` is :func:`render_report`.

Examples
--------
>>> number(1663.4), number(-0.01234), number(None)
('1,663', '-0.0123', 'n/a')
>>> action("re74", {"shift": 1000})
'shifting re74 by 1,000'
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from causal_wm.errors import BackendNotInstalled, CausalWMError

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
MAX_UNITS_SHOWN = 30
MAX_LEVELS_SHOWN = 10
PPC_LOW, PPC_HIGH = 0.05, 0.95


class ReportError(CausalWMError, FileNotFoundError):
    """A results folder lacks what a report needs (``results.json``)."""


# ---------------------------------------------------------------------------- words and numbers
def number(x: Any) -> str:
    """A number as people read it: thousands separators, three significant digits when small."""
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float, np.number)):
        return "n/a" if x is None else str(x)
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def probability(p: float | None) -> str:
    """A probability with two decimals, saying '> 0.99' rather than rounding up to 1.00."""
    if p is None:
        return "n/a"
    if 0.995 <= p < 1:
        return "> 0.99"
    if 0 < p < 0.005:
        return "< 0.01"
    return f"{p:.2f}"


def action(node: str, value: Any) -> str:
    """One intervention in words, as a study file writes it (or as ``results.json`` recorded it)."""
    if isinstance(value, Mapping):
        if set(value) == {"shift"}:
            return f"shifting {node} by {number(value['shift'])}"
        if set(value) == {"scale"}:
            return f"scaling {node} by {number(value['scale'])}"
        args = ", ".join(f"{k}={number(v)}" for k, v in value.items() if k != "distribution")
        return f"drawing {node} from {value.get('distribution', 'a distribution')}({args})"
    if isinstance(value, str) and value.endswith(")") and "(" in value:
        return f"intervening on {node} ({value})"  # a repr recorded by an older results.json
    return f"setting {node} to {number(value) if isinstance(value, (int, float)) else value}"


def actions(do: Mapping | None) -> str:
    """Several interventions joined with 'and' (empty for none)."""
    return " and ".join(action(k, v) for k, v in (do or {}).items())


def _hard(v: Any) -> bool:
    return not isinstance(v, Mapping) and not (isinstance(v, str) and v.endswith(")"))


def contrast(do: Mapping, vs: Mapping | None) -> str:
    """'Setting treat to 1 instead of 0', or the general form for soft and joint interventions."""
    vs = vs or {}
    if len(do) == 1 and set(do) == set(vs) and _hard(*do.values()) and _hard(*vs.values()):
        (node, a), b = next(iter(do.items())), next(iter(vs.values()))
        text = f"setting {node} to {number(a) if isinstance(a, (int, float)) else a} instead of "
        return text + (number(b) if isinstance(b, (int, float)) else str(b))
    return f"{actions(do)} instead of {actions(vs) or 'leaving every variable as observed'}"


def selection(given: Any) -> str:
    """A unit selection (``given:`` or ``units:``) in words."""
    if not given:
        return ""
    if isinstance(given, Mapping):
        parts = [f"{k} in {', '.join(map(str, v))}" if isinstance(v, list) else f"{k} = {v}"
                 for k, v in given.items()]
        return " and ".join(parts)
    return str(given).replace("=", " = ")


def effect_sentence(res: Mapping, spec: Mapping) -> str:
    """The answer to an effect query in one sentence, with its interval and probability of benefit.

    Examples
    --------
    >>> effect_sentence({"outcome": "re78", "do": {"treat": 1}, "vs": {"treat": 0}, "estimate": 1663.2,
    ...                  "lower": 656.1, "upper": 2735.4, "prob": 0.9, "prob_positive": 0.99, "n_units": 445},
    ...                 {})  # doctest: +NORMALIZE_WHITESPACE
    'Setting treat to 1 instead of 0 changes re78 by 1,663 on average (90% interval 656 to 2,735);
    probability of a positive effect 0.99.'
    """
    do, vs = spec.get("do", res.get("do") or {}), spec.get("vs", res.get("vs") or {})
    outcome = res["outcome"]
    if spec.get("level") is not None:
        outcome = f"the probability that {outcome} = {spec['level']}"
    text = (f"{contrast(do, vs)} changes {outcome} by {number(res['estimate'])} on average "
            f"({round(100 * res['prob'])}% interval {number(res['lower'])} to {number(res['upper'])}); "
            f"probability of a positive effect {probability(res.get('prob_positive'))}.")
    where = selection(spec.get("given") or res.get("given"))
    if where:
        return f"Among the {res['n_units']:,} units with {where}, {text}"
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------------------- data summary
def summarise_data(df: pd.DataFrame) -> dict:
    """Rows, columns and per-column summaries of a DataFrame, ready for JSON.

    Numeric columns get mean, SD, min and max; others get counts of their most common values.

    Examples
    --------
    >>> s = summarise_data(pd.DataFrame({"x": [1.0, 2.0, None], "g": ["a", "b", "a"]}))
    >>> s["rows"], s["columns"][0]["missing"], s["columns"][1]["counts"]
    (3, 1, {'a': 2, 'b': 1})
    """
    return {"rows": len(df), "n_columns": df.shape[1], "columns": [_column(str(c), df[c]) for c in df.columns]}


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _column(name: str, s: pd.Series) -> dict:
    out: dict[str, Any] = {"name": name, "dtype": str(s.dtype), "missing": int(s.isna().sum())}
    if s.dtype.kind in "iuf":
        x = s.dropna().astype(float)
        out.update(kind="numeric", mean=_finite(x.mean()) if len(x) else None,
                   sd=_finite(x.std()) if len(x) > 1 else None,
                   min=_finite(x.min()) if len(x) else None, max=_finite(x.max()) if len(x) else None)
        return out
    counts = s.dropna().astype(str).value_counts()
    top = counts.iloc[:MAX_LEVELS_SHOWN]
    out.update(kind="categorical", levels=len(counts), counts={str(k): int(v) for k, v in top.items()},
               other=int(counts.iloc[MAX_LEVELS_SHOWN:].sum()))
    return out


# ---------------------------------------------------------------------------- reading the folder
def _unreadable(path: Path, exc: Exception) -> ReportError:
    return ReportError(f"{str(path)!r} could not be read ({type(exc).__name__}: {exc}); the results folder is "
                       "damaged or was edited by hand. Run the study again (causal-wm run) to rewrite it.")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _unreadable(path, exc) from None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise _unreadable(path, exc) from None


def load_folder(results_dir: str | Path) -> dict:
    """Everything a report reads from a results folder (missing optional files are ``None``)."""
    d = Path(results_dir)
    if not (d / "results.json").is_file():
        raise ReportError(f"{str(d)!r} has no results.json; give a folder written by 'causal-wm run' "
                          "(results/<study name>).")
    try:
        summary = pd.read_csv(d / "summary.csv") if (d / "summary.csv").is_file() else None
    except (OSError, ValueError) as exc:
        raise _unreadable(d / "summary.csv", exc) from None
    results = _read_json(d / "results.json")
    if not isinstance(results, dict) or not isinstance(results.get("queries"), dict):
        raise ReportError(f"{str(d / 'results.json')!r} is not a results file of causal_wm (no 'queries' mapping); "
                          "run the study again (causal-wm run) to rewrite it.")
    bundle = {"dir": d, "results": results, "manifest": _read_json(d / "manifest.json") or {},
              "study": _read_yaml(d / "study.yaml") or {}, "model": _read_yaml(d / "model.yaml"),
              "data": _read_json(d / "data_summary.json"), "summary": summary}
    for key in ("manifest", "study"):
        if not isinstance(bundle[key], dict):
            bundle[key] = {}
    return bundle


def _query_specs(study: Mapping) -> dict:
    return {q["name"]: q for q in study.get("queries") or [] if isinstance(q, Mapping) and "name" in q}


# ---------------------------------------------------------------------------- sections
def _graph_section(scm, study: Mapping) -> dict | None:
    if scm is None:
        return None
    from causal_wm import plots

    specs = study.get("queries") or []
    treated = {k for q in specs for k in (q.get("do") or {}) | (q.get("vs") or {})}
    outcomes = {q["outcome"] for q in specs if q.get("outcome")}
    nodes = [{"name": n.name, "family": n.family, "formula": n.formula or "", "latent": n.latent,
              "description": n.description or ""} for n in scm.nodes]
    return {"img": plots.graph_figure(scm.graph, treated, outcomes), "nodes": nodes,
            "description": scm.description, "name": scm.name}


def _data_section(data: Mapping | None, scm) -> dict | None:
    if not data:
        return None
    in_model = set(scm.names) if scm is not None else set()
    cols = []
    for c in data["columns"]:
        counts = ", ".join(f"{k}: {v:,}" for k, v in c.get("counts", {}).items())
        if c.get("other"):
            counts += f", other: {c['other']:,}"
        levels = c.get("levels")
        cols.append({**c, "counts_text": f"{levels} level{'' if levels == 1 else 's'}: {counts}" if counts else "",
                     "in_model": c["name"] in in_model})
    return {"rows": data["rows"], "n_columns": data["n_columns"], "columns": cols,
            "preparation": preparation_rows(data.get("preparation"))}


def preparation_rows(prep: Mapping | None) -> list[tuple[str, str]]:
    """What integration and the missing-data policies did to the rows, as (label, count) rows.

    Examples
    --------
    >>> for row in preparation_rows({"rows_in": 1629, "rows_dropped": 0, "rows_used": 1629, "dropped": {},
    ...                              "imputed": {"wt82_71": 63}, "integration": {"rows": {"source": 1629}}}):
    ...     print(row)
    ('rows from source', '1,629')
    ('rows given to the fit', '1,629')
    ('rows fitted', '1,629')
    ('values of wt82_71 imputed (missing: impute)', '63')
    """
    if not prep:
        return []
    rows = []
    integ = prep.get("integration") or {}
    for step, k in (integ.get("rows") or {}).items():
        rows.append((f"rows from {step}" if step not in ("stacked", "joined", "after filter") else
                     f"rows {step}", f"{k:,}"))
    join = integ.get("join") or {}
    if "unmatched_left_rows" in join:
        rows.append((f"left rows without a match on {', '.join(map(str, join.get('on', [])))} "
                     f"({join.get('how', 'inner')} join)", f"{join['unmatched_left_rows']:,}"))
    rows.append(("rows given to the fit", f"{prep.get('rows_in', 0):,}"))
    for node, k in (prep.get("dropped") or {}).items():
        rows.append((f"rows dropped: {node} missing (missing: drop)", f"{k:,}"))
    if prep.get("rows_dropped"):
        rows.append(("rows dropped in total", f"{prep['rows_dropped']:,}"))
    rows.append(("rows fitted", f"{prep.get('rows_used', 0):,}"))
    for node, k in (prep.get("imputed") or {}).items():
        rows.append((f"values of {node} imputed (missing: impute)", f"{k:,}"))
    return rows


def _diagnostics_section(diag: Mapping, chains: int | None) -> dict:
    svi = diag.get("method") == "svi"
    single = not svi and chains == 1
    ess = f"at least {100 * chains}" if chains else "at least 100 per chain"
    stuck = bool(diag.get("max_rhat_infinite"))
    rhat = ("not applicable (SVI)" if svi else "not computed (needs at least 2 chains)" if single
            else "infinite (chains stuck)" if stuck else number(diag.get("max_rhat")))
    rows = [
        ("method", diag.get("method", "nuts"), "", True),
        ("largest R-hat", rhat, "at most 1.01",
         svi or single or (not stuck and (diag.get("max_rhat") or 0) <= 1.01)),
        ("smallest bulk ESS", number(diag.get("min_ess_bulk")), ess, _enough(diag.get("min_ess_bulk"), chains)),
        ("smallest tail ESS", number(diag.get("min_ess_tail")), ess, _enough(diag.get("min_ess_tail"), chains)),
        ("divergent transitions", str(diag.get("divergences", 0)), "0", not diag.get("divergences")),
    ]
    rows = [{"label": a, "value": b, "target": c, "ok": d} for a, b, c, d in rows]
    return {"ok": bool(diag.get("ok")), "rows": rows, "problems": list(diag.get("problems") or []),
            "single_chain": single}


def _enough(ess: float | None, chains: int | None) -> bool:
    return ess is None or not chains or ess >= 100 * chains


def _arms(summary: pd.DataFrame | None, name: str) -> dict:
    if summary is None:
        return {}
    rows = summary[summary["query"] == name].set_index("quantity")
    return {k: (float(r["estimate"]), float(r["lower"]), float(r["upper"])) for k, r in rows.iterrows()}


def short(node: str, value: Any) -> str:
    """One intervention as a short figure label.

    Examples
    --------
    >>> short("treat", 1), short("c", {"shift": -1}), short("t", {"distribution": "bernoulli", "p": 0.3})
    ('treat=1', 'c - 1', 't ~ bernoulli')
    """
    if not isinstance(value, Mapping):
        return f"{node}={value}"
    if set(value) == {"shift"}:
        d = value["shift"]
        return f"{node} {'-' if d < 0 else '+'} {number(abs(d))}"
    if set(value) == {"scale"}:
        return f"{node} × {number(value['scale'])}"
    return f"{node} ~ {value.get('distribution', '?')}"


def _label(do: Mapping | None) -> str:
    return ", ".join(short(k, v) for k, v in (do or {}).items()) or "as observed"


def _effect(name: str, res: Mapping, spec: Mapping, summary) -> dict:
    from causal_wm import plots

    arms = _arms(summary, name)
    do, vs = spec.get("do", res.get("do")), spec.get("vs", res.get("vs"))
    labelled = [(f"do({_label(do)})", *arms["under do"])] if "under do" in arms else []
    if "under vs" in arms:
        labelled.append((f"do({_label(vs)})" if vs else "as observed", *arms["under vs"]))
    img = plots.effect_figure(labelled, (res["estimate"], res["lower"], res["upper"]), res["outcome"], res["prob"])
    table = [("estimate", number(res["estimate"])), ("posterior SD", number(res.get("sd"))),
             (f"{round(100 * res['prob'])}% interval", f"{number(res['lower'])} to {number(res['upper'])}"),
             ("P(effect > 0)", probability(res.get("prob_positive"))), ("Monte Carlo SE", number(res.get("mcse"))),
             ("units averaged over", f"{res.get('n_units', 0):,}")]
    return {"sentence": effect_sentence(res, spec), "img": img, "facts": table,
            "identification": _identification_facts(res.get("identification"))}


MEDIATION_PARTS = (("total", "total effect"), ("direct", "direct effect (NDE)"),
                   ("indirect", "indirect effect (NIE)"))


def _interval(r: Mapping) -> str:
    return f"{number(r.get('lower'))} to {number(r.get('upper'))}"


def mediation_sentence(res: Mapping, spec: Mapping) -> str:
    """The answer to a mediation query in one sentence: the total effect and how it splits.

    Examples
    --------
    >>> part = lambda e, lo, hi: {"estimate": e, "lower": lo, "upper": hi}
    >>> mediation_sentence({"treatment": "t", "mediators": ["m"], "outcome": "y", "prob": 0.9,
    ...                     "total": {**part(2.0, 1.5, 2.5), "do": {"t": 1}, "vs": {"t": 0}, "n_units": 600},
    ...                     "direct": part(0.5, 0.1, 0.9), "indirect": part(1.5, 1.2, 1.8),
    ...                     "rows": [{"quantity": "proportion mediated", **part(0.75, 0.6, 0.9)}]},
    ...                    {})  # doctest: +NORMALIZE_WHITESPACE
    'Setting t to 1 instead of 0 changes y by 2 in total (90% interval 1.5 to 2.5): 1.5 through m (indirect
    effect, 90% interval 1.2 to 1.8) and 0.5 directly (90% interval 0.1 to 0.9); proportion mediated 0.75
    (90% interval 0.6 to 0.9).'
    """
    total, direct, indirect = (res.get(k) or {} for k in ("total", "direct", "indirect"))
    pct = f"{round(100 * res.get('prob', 0.9))}% interval"
    do = total.get("do") or {res["treatment"]: spec.get("treat_value", 1)}
    vs = total.get("vs") or {res["treatment"]: spec.get("control_value", 0)}
    outcome = res["outcome"]
    if spec.get("level") is not None:
        outcome = f"the probability that {outcome} = {spec['level']}"
    mediators = " and ".join(res.get("mediators") or [])
    text = (f"{contrast(do, vs)} changes {outcome} by {number(total.get('estimate'))} in total ({pct} "
            f"{_interval(total)}): {number(indirect.get('estimate'))} through {mediators} (indirect effect, {pct} "
            f"{_interval(indirect)}) and {number(direct.get('estimate'))} directly ({pct} {_interval(direct)})")
    prop = next((r for r in res.get("rows") or [] if r.get("quantity") == "proportion mediated"), None)
    if prop is not None:
        text += f"; proportion mediated {number(prop.get('estimate'))} ({pct} {_interval(prop)})"
    text += "."
    where = selection(spec.get("given") or total.get("given"))
    if where:
        return f"Among the {total.get('n_units', 0):,} units with {where}, {text}"
    return text[0].upper() + text[1:]


def _mediation(res: Mapping, spec: Mapping) -> dict:
    rows = []
    for key, label in MEDIATION_PARTS:
        r = res.get(key) or {}
        rows.append({"label": label, "estimate": number(r.get("estimate")), "sd": number(r.get("sd")),
                     "interval": _interval(r), "prob_positive": probability(r.get("prob_positive")),
                     "mcse": number(r.get("mcse"))})
    for r in res.get("rows") or []:
        if r.get("quantity") == "proportion mediated":
            rows.append({"label": "proportion mediated", "estimate": number(r.get("estimate")), "sd": "n/a",
                         "interval": _interval(r), "prob_positive": probability(r.get("prob_positive")),
                         "mcse": number(r.get("mcse"))})
    return {"sentence": mediation_sentence(res, spec), "rows": rows, "prob": round(100 * res.get("prob", 0.9)),
            "identification": _identification_facts(res.get("identification"))}


def _flagged(r: Mapping) -> bool:
    """Whether a saved answer (or any of a mediation answer's effects) carries warnings or a failed fit."""
    parts = [r, *(r[k] for k in ("direct", "indirect", "total") if isinstance(r.get(k), Mapping))]
    return any(bool(p.get("warnings")) or not (p.get("diagnostics") or {}).get("ok", True) for p in parts)


def _identification_facts(ident: Mapping | None) -> list[tuple[str, str]]:
    """Rows saying whether and how the graph identifies the query, with its assumptions."""
    if not ident:
        return []
    if not ident.get("is_identified") and ident.get("kind") in (None, "none"):
        return [("identification", "not identified by the graph: the answer rests on the model's parametric "
                                   "assumptions alone"), *(("why", a) for a in ident.get("assumptions", []))]
    rows = [("identification", f"{ident['kind']}" + ("" if ident.get("is_identified") else
                                                       " (needs further assumptions)"))]
    if ident.get("estimand"):
        rows.append(("estimand", ident["estimand"]))
    if ident.get("adjustment_set") is not None:
        rows.append(("adjustment set", ", ".join(ident["adjustment_set"]) or "(none needed)"))
    if ident.get("instruments"):
        rows.append(("instruments", ", ".join(ident["instruments"])))
    rows.extend(("assumption", a) for a in ident.get("assumptions", []))
    return rows


def _simulate(res: Mapping, spec: Mapping, data: Mapping | None) -> dict:
    observed = {c["name"]: c.get("mean") for c in (data or {}).get("columns", [])}
    rows = [{"node": r["node"], "mean": number(r["estimate"]), "sd": number(r.get("sd")),
             "interval": f"{number(r['lower'])} to {number(r['upper'])}", "observed": number(observed.get(r["node"]))}
            for r in res.get("nodes", [])]
    how = actions(spec.get("do", res.get("do"))) or "without intervening"
    sentence = (f"Predictive summaries of {res.get('n', 0):,} new units, {how}; each unit uses its own "
                "posterior draw and fresh noise, so the intervals include both parameter and noise uncertainty.")
    return {"sentence": sentence, "rows": rows, "prob": round(100 * res.get("prob", 0.9)),
            "has_observed": any(observed.get(r["node"]) is not None for r in res.get("nodes", []))}


def _counterfactual(res: Mapping, spec: Mapping) -> dict:
    from causal_wm import plots

    do = spec.get("do", res.get("do") or {})
    rows = pd.DataFrame(res.get("rows") or [], columns=["unit", "node", "factual", "estimate", "lower", "upper"])
    changed = rows[~rows["node"].isin(list(do))]
    # the posterior of the mean over units (results.json's "average": per draw, then the interval)
    average = {a["node"]: a for a in res.get("average") or []}
    nodes = []
    for node, g in changed.groupby("node", sort=False):
        seen = g[g["factual"].notna()] if g["factual"].notna().any() else g  # imputed values are not data:
        a = average.get(node, {})  # all three over the same units
        bounds = a and all(isinstance(a.get(b), (int, float)) and math.isfinite(a[b]) for b in ("lower", "upper"))
        whole = bounds and bool(g["factual"].notna().all())
        nodes.append({"node": node, "factual": number(g["factual"].mean()),
                      "counterfactual": number(seen["estimate"].mean()),
                      "interval": f"{number(a['lower'])} to {number(a['upper'])}" if bounds else "",
                      "change": number((seen["estimate"] - seen["factual"]).mean()),
                      "change_interval": (f"{number(a['lower'] - a['factual'])} to {number(a['upper'] - a['factual'])}"
                                          if whole else "")})
    n = res.get("n_units", rows["unit"].nunique())
    where = selection(spec.get("units"))
    sentence = (f"For each of the {n:,} {'units with ' + where if where else 'units of the data'}, "
                f"{actions(do)} instead of what happened: the table gives the mean over units of the factual "
                "value, the counterfactual posterior mean and their difference, each interval that of the mean "
                "over units (per posterior draw, then its quantiles).")
    shown = min(n, MAX_UNITS_SHOWN)
    img = plots.counterfactual_figure(changed, MAX_UNITS_SHOWN) if len(changed) else None
    caption = (f"{shown} of {n:,} units, chosen evenly across the range of the factual value" if n > shown
               else f"all {n:,} units")
    return {"sentence": sentence, "nodes": nodes, "img": img, "caption": caption,
            "assumption": res.get("assumption", ""), "prob": round(100 * res.get("prob", 0.9)),
            "notes": res.get("average_notes") or []}


def _queries(bundle: dict) -> list[dict]:
    res, specs = bundle["results"]["queries"], _query_specs(bundle["study"])
    out = []
    for i, (name, r) in enumerate(res.items()):
        spec = specs.get(name, {})
        item = {"name": name, "kind": r["kind"], "anchor": f"q{i + 1}", "question": spec.get("question") or "",
                "warnings": _flagged(r)}
        if r["kind"] == "effect":
            item.update(_effect(name, r, spec, bundle["summary"]), outcome=r["outcome"])
        elif r["kind"] == "mediation":
            item.update(_mediation(r, spec))
        elif r["kind"] == "simulate":
            item.update(_simulate(r, spec, bundle["data"]))
        elif r["kind"] == "counterfactual":
            item.update(_counterfactual(r, spec))
        else:  # a kind this report does not know yet: its scalar fields as a table
            item["facts"] = [(k, number(v)) for k, v in r.items() if isinstance(v, (int, float, str)) and k != "kind"]
        out.append(item)
    return out


def _ppc(rows: list[Mapping]) -> list[dict]:
    out = []
    for r in rows or []:
        flags = [k for k in ("p_mean", "p_sd") if r.get(k) is not None and not PPC_LOW <= r[k] <= PPC_HIGH]
        out.append({"node": r["node"], "observed_mean": number(r.get("observed_mean")),
                    "replicated_mean": number(r.get("replicated_mean")), "p_mean": f"{r.get('p_mean', 0):.2f}",
                    "observed_sd": number(r.get("observed_sd")), "replicated_sd": number(r.get("replicated_sd")),
                    "p_sd": f"{r.get('p_sd', 0):.2f}", "ok": not flags})
    return out


def _overview(queries: list[dict], results: Mapping) -> str | None:
    from causal_wm import plots

    effects = [(q["name"], results[q["name"]]) for q in queries if q["kind"] == "effect"]
    if len(effects) < 2:
        return None
    return plots.forest_figure([(n, r["outcome"], r["estimate"], r["lower"], r["upper"]) for n, r in effects],
                               effects[0][1]["prob"])


def _settings(settings: Mapping) -> list[tuple[str, Any]]:
    """Fit settings that matter for the method used (SVI's only for SVI; never 'progress')."""
    skip = {"progress"} | ({"guide", "steps", "learning_rate"} if settings.get("method") != "svi" else set())
    return sorted((k, v) for k, v in settings.items() if k not in skip)


def _reproduce(manifest: Mapping, results: Mapping) -> dict:
    return {"command": manifest.get("command", ""), "seed": manifest.get("seed", results.get("seed")),
            "data_sha256": manifest.get("data_sha256", ""), "study_sha256": manifest.get("study_sha256", ""),
            "git": manifest.get("git") or "unknown", "causal_wm": manifest.get("causal_wm", ""),
            "versions": sorted((manifest.get("versions") or {}).items()),
            "settings": _settings(manifest.get("settings") or {}),
            "timings": manifest.get("timings_s") or {}}


def _model(model: Mapping | None):
    """The saved model as an SCM (grouping factors added back), or None for older folders."""
    if not model:
        return None
    from causal_wm.spec import SCM

    return SCM.from_dict(model)


# ---------------------------------------------------------------------------- checks
CHECK_TITLES = {"triangulate": "Triangulation with classical estimators", "refute": "Refutation tests",
                "sensitivity": "Sensitivity to a hidden confounder", "falsify": "Graph falsification"}


def _p(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _span(lo, hi) -> str:
    return f"{number(lo)} to {number(hi)}" if lo is not None and hi is not None else "n/a"


def _triangulate_view(r: Mapping) -> dict:
    pct = round(100 * r.get("prob", 0.9))
    rows = r.get("rows") or []
    classical = [x for x in rows if not str(x.get("method", "")).startswith("bayes")]
    usable = [x for x in classical if x.get("estimate") is not None]
    agree = sum(bool(x.get("overlaps_bayes")) for x in usable)
    if usable:
        sentence = (f"{agree} of {len(usable)} classical estimate{'s' if len(usable) != 1 else ''} "
                    f"({', '.join(x['method'] for x in usable)}) {'has' if len(usable) == 1 else 'have'} a {pct}% "
                    f"interval that overlaps the posterior's, for the contrast {r.get('contrast', '')}.")
    else:
        sentence = "No classical estimator gave an estimate here; the notes say why."
    failed = len(classical) - len(usable)
    if failed:
        sentence += f" {failed} estimator{'s' if failed != 1 else ''} failed (see the notes)."
    table = [{"cells": [x.get("method", ""), number(x.get("estimate")), _span(x.get("lower"), x.get("upper")),
                        "" if str(x.get("method", "")).startswith("bayes") else
                        ("yes" if x.get("overlaps_bayes") else "no"), x.get("interval", ""), x.get("note", "")],
              "flag": x.get("estimate") is None or (x in usable and not x.get("overlaps_bayes"))} for x in rows]
    return {"sentence": sentence, "columns": ["method", "estimate", f"{pct}% interval", "overlaps posterior",
                                              "interval from", "note"], "rows": table}


def _refute_view(r: Mapping) -> dict:
    rows = r.get("rows") or []
    passed = sum(x.get("passed") is True for x in rows)
    ran = [x for x in rows if x.get("passed") is not None]  # (a refuter that did not run says why in its note)
    sentence = (f"{passed} of {len(ran)} refutation{'s' if len(ran) != 1 else ''} passed "
                f"({r.get('num_simulations', '?')} simulations each, on the back-door linear-regression estimate): "
                "a placebo treatment should have no effect, and an added random common cause or a random 80% "
                "subset of the data should leave the estimate where it was.")
    if len(ran) < len(rows):
        sentence += f" {len(rows) - len(ran)} did not run: {next(x.get('note') for x in rows if x not in ran)}."
    verdict = {True: "passed", False: "failed", None: "not run"}
    table = [{"cells": [x.get("refuter", "").replace("_", " "), number(x.get("estimate")), number(x.get("new_effect")),
                        _p(x.get("p_value")), verdict[x.get("passed")]],
              "flag": x.get("passed") is False} for x in rows]
    return {"sentence": sentence, "columns": ["refuter", "estimate", "after refutation", "p-value", "verdict"],
            "rows": table, "note": r.get("note") or ""}


def _sensitivity_view(r: Mapping) -> dict:
    from causal_wm import plots

    pct = round(100 * r.get("prob", 0.9))
    rows = r.get("rows") or []
    t, y, b = r.get("treatment"), r.get("outcome"), r.get("breakdown")
    strengths = [x["strength"] for x in rows]
    if not rows:
        sentence = "No strengths were tried."
    elif b is None:
        sentence = (f"The {pct}% interval of the effect of {t} on {y} excludes zero at every strength tried, up to "
                    f"{max(strengths):g}: a hidden confounder that strong would not explain the effect away.")
    elif b == min(strengths):
        sentence = f"The {pct}% interval of the effect of {t} on {y} covers zero already at strength {b:g}."
    else:
        below = max(s for s in strengths if s < b)
        sentence = (f"The {pct}% interval of the effect of {t} on {y} first covers zero at strength {b:g} (it "
                    f"excludes zero at {below:g}): a hidden confounder loading about {b:g} on both would explain "
                    "the effect away.")
    sentence += (" A strength is the loading of a standard-normal hidden confounder on the treatment and on the "
                 "outcome, in SDs of each (logits for a binary node), as the model's internal scale measures them.")
    if any(x.get("convergence_warning") for x in rows):
        sentence += " Some refits did not pass their convergence checks (flagged below)."
    fit = r.get("fit") or {}
    note = ("Refits: " + ", ".join(f"{k} {v}" for k, v in fit.items())) if fit else ""
    table = [{"cells": [f"{x['strength']:g}", number(x.get("estimate")), _span(x.get("lower"), x.get("upper")),
                        "yes" if x.get("covers_zero") else "no",
                        "did not converge" if x.get("convergence_warning") else "ok"],
              "flag": bool(x.get("covers_zero")) or bool(x.get("convergence_warning"))} for x in rows]
    img = (plots.sensitivity_figure(strengths, [x.get("estimate") for x in rows], [x.get("lower") for x in rows],
                                    [x.get("upper") for x in rows], b, t, y, r.get("prob", 0.9)) if rows else None)
    return {"sentence": sentence, "columns": ["strength", "estimate", f"{pct}% interval", "covers zero", "refit"],
            "rows": table, "img": img, "note": note}


def _falsify_view(r: Mapping) -> dict:
    rows = r.get("rows") or []
    sentence = (f"{r.get('summary', '')}. Each row tests an independence the graph implies (a node and a later "
                "node it has no edge to, given the later node's observed parents) by partial correlation; many "
                "more rejections than expected by chance point at a missing edge.") if rows else (
        "The graph implies no testable independence among the observed nodes (every pair is joined, or "
        "latent nodes leave nothing implied).")
    table = [{"cells": [x.get("x", ""), x.get("y", ""), x.get("given", "") or "nothing", _p(x.get("p_value")),
                        "rejected" if x.get("rejected") else "not rejected"],
              "flag": bool(x.get("rejected"))} for x in rows]
    return {"sentence": sentence, "columns": ["node", "independent of", "given", "p-value", "at alpha "
                                              f"{r.get('alpha', 0.05):g}"], "rows": table}


CHECK_VIEWS = {"triangulate": _triangulate_view, "refute": _refute_view, "sensitivity": _sensitivity_view,
               "falsify": _falsify_view}


def checks_section(records: list[Mapping] | None) -> list[dict]:
    """The report's view of ``results.json``'s ``checks``: per check a title, a sentence, a table and,
    for sensitivity, a figure; a failed check shows its reason.

    Examples
    --------
    >>> c = checks_section([{"kind": "refute", "outcome": "y", "treatment": "t", "status": "failed",
    ...                      "reason": "ValueError: singular matrix"}])
    >>> c[0]["title"], c[0]["failed"], c[0]["reason"]
    ('Refutation tests: t on y', True, 'ValueError: singular matrix')
    """
    out = []
    for i, r in enumerate(records or []):
        kind = r.get("kind", "")
        on = f": {r['treatment']} on {r['outcome']}" if r.get("treatment") and r.get("outcome") else ""
        item = {"kind": kind, "anchor": f"check{i + 1}", "title": CHECK_TITLES.get(kind, kind) + on,
                "failed": r.get("status") == "failed", "reason": r.get("reason") or "", "sentence": "",
                "columns": [], "rows": [], "img": None, "note": "", "seconds": r.get("seconds")}
        if not item["failed"] and kind in CHECK_VIEWS:
            item.update(CHECK_VIEWS[kind](r))
        out.append(item)
    return out


def build_context(bundle: dict) -> dict:
    """The template's variables for a loaded results folder (see :func:`load_folder`)."""
    results, study = bundle["results"], bundle["study"]
    queries = _queries(bundle)
    chains = (bundle["manifest"].get("settings") or {}).get("chains")
    scm = _model(bundle["model"])
    diag = _diagnostics_section(results.get("diagnostics") or {}, chains)
    failed = [c["description"] for c in results.get("expect") or [] if not c["passed"]]
    return {
        "title": study.get("name") or results.get("study", "study"), "description": study.get("description") or "",
        "model_name": results.get("model", ""), "diagnostics": diag, "failed": failed,
        "graph": _graph_section(scm, study), "data": _data_section(bundle["data"], scm),
        "queries": queries, "overview": _overview(queries, results["queries"]), "expect": results.get("expect") or [],
        "ppc": _ppc(results.get("ppc")), "repro": _reproduce(bundle["manifest"], results),
        "checks": checks_section(results.get("checks")),
    }


# ---------------------------------------------------------------------------- rendering
def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("causal_wm", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = number
    return env


def render_html(results_dir: str | Path) -> str:
    """The report of a results folder as an HTML string (nothing is written)."""
    return _environment().get_template(TEMPLATE).render(**build_context(load_folder(results_dir)))


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _weasyprint():
    try:
        import weasyprint
    except ImportError:
        raise BackendNotInstalled("writing report.pdf needs WeasyPrint, which is not installed; run 'pip install "
                                  "weasyprint' (or drop --pdf: report.html has the same content).") from None
    return weasyprint


_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def write_figures(html: str, folder: Path) -> list[Path]:
    """Save the report's embedded figures as ``figures/figure_NN.png`` (replacing an older set)."""
    import base64

    tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    paths = []
    for i, data in enumerate(_IMG.findall(html), start=1):
        p = tmp / f"figure_{i:02d}.png"
        p.write_bytes(base64.b64decode(data))
        paths.append(folder / p.name)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return paths


def render_report(results_dir: str | Path, pdf: bool = False, announce: bool = True) -> Path:
    """Write ``report.html`` (and ``report.pdf`` with ``pdf=True``) into a results folder.

    Reads only the saved files; nothing is refitted or recomputed from the posterior.

    Parameters
    ----------
    results_dir : str or Path
        A folder written by :meth:`causal_wm.Study.run` (``results/<study name>``).
    pdf : bool
        Also write ``report.pdf`` with WeasyPrint (:class:`BackendNotInstalled` if it is missing).
    announce : bool
        Log where the report was written (a study run logs it itself, once the folder has its final name).

    Returns
    -------
    Path
        The path of ``report.html``.
    """
    d = Path(results_dir)
    weasy = _weasyprint() if pdf else None
    html = render_html(d)
    out = d / "report.html"
    _write_atomic(out, html.encode("utf-8"))
    write_figures(html, d / "figures")
    if weasy is not None:
        _write_atomic(d / "report.pdf", weasy.HTML(string=html, base_url=str(d)).write_pdf())
    if announce:
        log.info("report written to %s", out)
    return out

