"""Two checkouts of causal_wm timed back to back on the counterfactual throughput query.

The machine this project is measured on drifts by 10-25% between runs (its copy bandwidth measured
37-50 GB/s on different days), so a change to the engine is judged against the commit before it in
alternating runs on the same machine, not against a table measured another day. Each run is a child
process that imports causal_wm from one checkout (first on ``PYTHONPATH``, with empty caches of its own)
and this script's ``counterfactual_throughput.py``, fits its model once and times, best of
``--repeats`` after two warm-up calls:

* ``do(t=0)``: the throughput table's query (about half the units already have t = 0);
* ``t flipped``: ``do(t = 1 - t)``, so that every unit changes;
* ``effect (y)``, ``effect (yb)``: the throughput table's effects of t on y and yb over the same units;
* the hand-written loop of ``counterfactual_throughput.py`` (into reused memory), which does not change
  between checkouts and so shows the machine's own drift.

Example (the commit before yours in a worktree)::

    git worktree add /tmp/before HEAD~1
    python benchmarks/back_to_back.py /tmp/before . --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERIES = ("do(t=0)", "t flipped", "effect (y)", "effect (yb)", "hand loop")


def worker(units: int, repeats: int) -> dict:
    """Best seconds per query, in this process (run from the checkout being measured)."""
    import warnings

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import counterfactual_throughput as B
    import numpy as np

    import causal_wm as cw
    from causal_wm import queries

    B._allow_alias_checks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short fit may not pass every convergence check; timing only
        scm = cw.SCM.from_dict(B.MODEL)
        post = scm.fit(B.simulate(2000, 0), chains=2, draws=500, warmup=500, seed=0, progress=False)
    df = B.simulate(units, 1)
    par = B.extract(post)
    S = post.program.n_draws
    outs = {k: np.empty((S, units)) for k in ("t", "m", "y", "yb")}
    flip = {"t": 1.0 - df["t"].to_numpy()}
    post_u = B.population(post, scm, df, 0)
    calls = {
        "do(t=0)": lambda: queries.counterfactual(post, df, {"t": B.DO_T}, engine="fused"),
        "t flipped": lambda: queries.counterfactual(post, df, flip, engine="fused"),
        "effect (y)": lambda: post_u.effect("y", do={"t": 1.0}, vs={"t": 0.0}, engine="fused"),
        "effect (yb)": lambda: post_u.effect("yb", do={"t": 1.0}, vs={"t": 0.0}, engine="fused"),
        "hand loop": lambda: B.numba_cf(par, df, 0, outs),
    }
    for fn in calls.values():
        fn()
        fn()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            res = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            del res
    return {"S": S, "units": units, "best": best, "causal_wm": cw.__file__}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", nargs="*", help="repository roots to compare (each must have this script's "
                                                 "counterfactual_throughput.py)")
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per query and run (best is kept)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per checkout, alternating")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.units, args.repeats)))
        return
    if len(args.checkouts) < 1:
        ap.error("give at least one checkout")
    roots = [Path(c).resolve() for c in args.checkouts]
    caches = {r: tempfile.mkdtemp(prefix="causal_wm_b2b_") for r in roots}  # empty caches per checkout
    runs: dict = {r: [] for r in roots}
    for rnd in range(args.rounds):
        for r in roots:
            env = dict(os.environ, PYTHONPATH=str(r), NUMBA_CACHE_DIR=caches[r] + "/numba",
                       CAUSAL_WM_CACHE=caches[r] + "/loops")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker",
                   "--units", str(args.units), "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, cwd=r, env=env, capture_output=True, text=True, check=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            if not Path(res["causal_wm"]).resolve().is_relative_to(r):
                raise SystemExit(f"the run for {r} imported causal_wm from {res['causal_wm']}")
            runs[r].append(res)
            print(f"round {rnd + 1}, {r}: " + ", ".join(f"{q} {res['best'][q]:.3f} s" for q in QUERIES),
                  file=sys.stderr)
    S = runs[roots[0]][0]["S"]
    print(f"\n{args.units:,} units x {S} draws, unit-draws/s (best of {args.repeats} per run; one value per run)\n")
    print("| query | " + " | ".join(f"`{_label(r)}`" for r in roots) + " |")
    print("|---|" + "---:|" * len(roots))
    for q in QUERIES:
        cells = [", ".join(f"{S * args.units / res['best'][q]:.2e}" for res in runs[r]) for r in roots]
        print(f"| {q} | " + " | ".join(cells) + " |")


def _label(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + (" + changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return root.name


if __name__ == "__main__":
    main()
