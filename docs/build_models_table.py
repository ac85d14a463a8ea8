"""Regenerate the model-library table in docs/models.md by running every shipped study.

Each study in ``studies/`` is run through :class:`causal_wm.Study` with its own fit settings (or
the ``--draws/--chains/--warmup`` given), and one row per study is written between the markers
``<!-- models-table:start -->`` and ``<!-- models-table:end -->``: model, system, data, question,
published value, posterior mean and 90% interval, max R-hat, whether ``expect:`` passed, and
the wall-clock runtime of the whole run (fit, queries, report). Nothing in the table is typed by
hand except the published value of a study whose ``expect:`` deliberately does not claim it
(``BENCHMARKS`` below); every other published value is the study's own ``interval_covers``.

Usage::

    python docs/build_models_table.py                 # every shipped study, full settings
    python docs/build_models_table.py --only labour_market   # re-run one study, keep the other rows

A study whose expectations fail is still tabulated (marked FAIL); one that errors is listed with
the error and the script exits non-zero after writing the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "models.md"
START, END = "<!-- models-table:start -->", "<!-- models-table:end -->"

# Published values that a study's expect: does not state as interval_covers, because the model is
# not expected to reach them (the table still shows them, with the reason on the model's page).
BENCHMARKS = {
    "job_training_observational": "1,794 (experimental); naive −8,498",
}
# For a mediation query, the part its expect: checks (or, without one, the indirect effect).
PART_LABELS = {"indirect": "indirect (NIE)", "direct": "direct (NDE)", "total": "total"}


def first_sentence(text: str, width: int = 70) -> str:
    """The first sentence of a description without parentheses holding numbers (citations,
    amounts), cut at a word if longer than ``width``."""
    s = re.split(r"\.\s+(?=[A-Z])", " ".join((text or "").split()))[0].rstrip(".")
    s = re.sub(r"\s*\([^()]*\d[^()]*\)", "", s).split(": ")[0]
    return s if len(s) <= width else s[: width - 1].rsplit(" ", 1)[0] + "…"


def data_label(spec, rows: int) -> str:
    """Where the data come from, e.g. ``causaldata nsw_mixtape + cps_mixtape (16,177 rows)``."""
    if not spec:
        return f"{rows:,} rows"
    srcs = spec["sources"].values() if "sources" in spec else [spec]
    names = []
    for s in srcs:
        names.append(f"{s['package']} `{s['table']}`" if "package" in s else f"`{Path(str(s.get('path'))).name}`")
    return " + ".join(names) + f" ({rows:,} rows)"


def headline(study) -> tuple[dict, dict | None]:
    """The query the table reports (the first one ``expect:`` checks) and that expectation."""
    queries = {q["name"]: q for q in study.spec["queries"]}
    for e in study.spec.get("expect") or []:
        return queries[e["query"]], e
    for q in study.spec["queries"]:
        if q["kind"] in ("effect", "mediation"):
            return q, None
    return study.spec["queries"][0], None


def number(x) -> str:
    """A compact number: 4 significant digits, thousands separated, a real minus sign."""
    if x is None:
        return "—"
    s = f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"
    return s.replace("-", "−")


def run_one(name: str, out: Path, overrides: dict) -> dict:
    """Run one study and return its table row (or the error)."""
    import causal_wm as cw

    study = cw.Study.load(name)
    scm = study.model()
    q, e = headline(study)
    row = {"study": name, "model": scm.name, "system": first_sentence(scm.description),
           "question": q.get("question", q["name"]), "query": q["name"]}
    t0 = time.time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence problems show up as max R-hat in the table
            study.run(out, **overrides)
        row["error"] = None
    except cw.CausalWMError as exc:
        if "expectations failed" not in str(exc):
            row.update(error=str(exc).splitlines()[0], runtime_s=time.time() - t0)
            return row
        row["error"] = None
    folder = out / study.name
    res = json.loads((folder / "results.json").read_text())
    man = json.loads((folder / "manifest.json").read_text())
    summ = json.loads((folder / "data_summary.json").read_text())
    rows = summ.get("rows", summ.get("n_rows"))
    row["data"] = data_label(study.spec.get("data") or dict(scm.data), int(rows) if rows is not None else 0)
    r = res["queries"][q["name"]]
    if q["kind"] == "mediation":
        label = PART_LABELS[(e or {}).get("part", "indirect")]
        r = next(x for x in r["rows"] if x["quantity"] == label)
        row["question"] += f" ({label})"
    row.update(estimate=r["estimate"], lower=r["lower"], upper=r["upper"],
               max_rhat=res["diagnostics"]["max_rhat"], ok=res["diagnostics"]["ok"],
               expect="PASS" if all(c["passed"] for c in res["expect"]) else "FAIL",
               runtime_s=man["timings_s"]["total"],
               settings=f"{man['settings']['chains']}×{man['settings']['draws']}")
    published = BENCHMARKS.get(name)
    if published is None and e is not None and "interval_covers" in e:
        published = number(e["interval_covers"])
    row["published"] = published or "—"
    return row


HEAD = ("| model | system | data | question | published | posterior mean [90% interval] | max R-hat | "
        "expect | runtime |\n|---|---|---|---|---|---|---|---|---|\n")


def row_key(line: str) -> str | None:
    """The study a table line belongs to (``| [name](...) |`` or ``| name |``)."""
    m = re.match(r"\| (?:\[([^\]]+)\]\([^)]*\)|([A-Za-z0-9_]+)) \|", line)
    return (m.group(1) or m.group(2)) if m else None


def merge(old_body: str, new_lines: dict[str, str], order: list[str]) -> str:
    """Rows of ``old_body`` not re-run are kept; re-run ones replaced; library order."""
    lines = {k: ln for ln in old_body.splitlines() if (k := row_key(ln)) and not ln.startswith("| model |")}
    lines.update(new_lines)
    return HEAD + "\n".join(lines[k] for k in order if k in lines)


def table(rows: list[dict]) -> dict[str, str]:
    """One Markdown table line per study, keyed by study name."""
    lines = {}
    for r in rows:
        page = ROOT / "docs" / "models" / f"{r['model']}.md"
        model = f"[{r['study']}](models/{r['model']}.md)" if page.is_file() else r["study"]
        if r.get("error"):
            lines[r["study"]] = (f"| {model} | {r['system']} | — | {r['question']} | — | error: {r['error']} | — | "
                                 f"— | {r['runtime_s']:.0f} s |")
            continue
        rhat = ("—" if r["max_rhat"] is None else f"{r['max_rhat']:.3f}") + ("" if r["ok"] else " ⚠")
        lines[r["study"]] = (f"| {model} | {r['system']} | {r['data']} | {r['question']} | {r['published']} | "
                             f"{number(r['estimate'])} [{number(r['lower'])}, {number(r['upper'])}] | {rhat} | "
                             f"{r['expect']} | {r['runtime_s']:.0f} s ({r['settings']}) |")
    return lines


def current(doc: Path) -> tuple[str, str, str]:
    """The text before the table, the table's body, and the text after it."""
    text = doc.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{doc}: add the markers {START} and {END} where the table goes.")
    a, b = text.index(START) + len(START), text.index(END)
    return text[:a], text[a:b], text[b:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="only these studies (their rows are replaced, the others kept)")
    p.add_argument("--out", type=Path, help="keep the results here (default: a temporary folder)")
    p.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to rewrite")
    for k in ("draws", "chains", "warmup"):
        p.add_argument(f"--{k}", type=int, help=f"override every study's {k}")
    args = p.parse_args(argv)
    os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix="numba_"))
    from causal_wm.library import list_library

    names = args.only or list_library("studies")
    overrides = {k: getattr(args, k) for k in ("draws", "chains", "warmup") if getattr(args, k) is not None}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        rows = []
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.append(run_one(name, out, overrides))
            r = rows[-1]
            print(f"  {r.get('error') or 'ok'}: {r.get('estimate')} in {r['runtime_s']:.0f} s", file=sys.stderr)
    total = time.time() - t0
    before, body, after = current(args.doc)
    # rows of studies not run now are kept (``--only``), with the notes that dated them
    notes = [ln for ln in body.splitlines() if ln.startswith("Generated by") and args.only]
    notes.append(f"Generated by `python docs/build_models_table.py{' --only ' + ' '.join(names) if args.only else ''}` "
                 f"on {date.today().isoformat()}: {len(rows)} studies in {total / 60:.1f} min on {os.cpu_count()} "
                 f"CPU cores ({platform.machine()}), "
                 f"{'settings ' + str(overrides) if overrides else 'each study with its own fit settings'} "
                 "(chains×draws in the runtime column; the runtime is fit, queries, checks and report together, "
                 "wall-clock on a machine that may be shared). ⚠ marks a fit that did not pass its convergence checks.")
    order = list_library("studies")
    text = merge(body if args.only else "", table(rows), order + [n for n in names if n not in order])
    args.doc.write_text(before + "\n" + text + "\n\n" + "\n\n".join(notes) + "\n" + after, encoding="utf-8")
    print(f"wrote {args.doc} in {total:.0f} s", file=sys.stderr)
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
