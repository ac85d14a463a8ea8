"""Sampler comparison: effective samples per second of every sampler causal_wm can use.

The 6-node hierarchical SCM of ``fit_overhead.py`` (group intercepts by region in three nodes) is
fitted from the same model file, on the same data, with the same chains, warm-up, draws and
seed, by:

* ``numpyro``: the default backend, NumPyro NUTS;
* ``pymc``: PyMC's own NUTS (``pm.sample``);
* ``pymc+nutpie``: the same PyMC model sampled by nutpie;
* ``pymc+numpyro``: the same PyMC model sampled by NumPyro's NUTS through ``pm.sample``.

Efficiency is the smallest bulk ESS over every sampled parameter divided by the wall time of the
whole ``scm.fit`` call (validation, compilation, warm-up, sampling, InferenceData assembly).

Run from the repository root with the project's environment (``pip install -e '.[dev]'``)::

    python benchmarks/samplers.py                         # N = 1k and 10k, 2 chains x 500 draws
    python benchmarks/samplers.py --sizes 100000 --samplers numpyro pymc+nutpie
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fit_overhead as fo  # sets host devices for parallel chains before JAX starts
import yaml

import causal_wm as cw

SAMPLERS = {
    "numpyro": {"backend": "numpyro"},
    "pymc": {"backend": "pymc", "sampler": "default"},
    "pymc+nutpie": {"backend": "pymc", "sampler": "nutpie"},
    "pymc+numpyro": {"backend": "pymc", "sampler": "numpyro"},
}


def run(n: int, label: str, chains: int, draws: int, warmup: int, seed: int) -> dict:
    """Fit once and return the timing row."""
    scm = cw.SCM.from_dict(yaml.safe_load(fo.MODEL_YAML))
    df = fo.simulate(n, seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cw.ConvergenceWarning)
        post = scm.fit(df, chains=chains, draws=draws, warmup=warmup, seed=seed, **SAMPLERS[label])
    wall = time.perf_counter() - t0
    sampled = [v for v in post.idata.posterior.data_vars if "__re__" not in v]
    ess, worst, _ = fo.min_bulk_ess(post.idata.posterior[sampled])
    eff = post.effect("y", do={"t": 1}, vs={"t": 0})
    return {"n": n, "sampler": label, "wall_s": wall, "min_ess": ess, "worst": worst, "ess_per_s": ess / wall,
            "ate": eff.mean(), "ok": post.ok}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = []
    for n in args.sizes:
        for label in args.samplers:
            try:
                row = run(n, label, args.chains, args.draws, args.warmup, args.seed)
            except cw.BackendNotInstalled as exc:
                print(f"  skipped {label}: {exc}", flush=True)
                continue
            rows.append(row)
            print(f"  N={n:>7} {label:<14} wall {row['wall_s']:7.1f} s  min bulk ESS {row['min_ess']:7.0f} "
                  f"({row['worst']})  {row['ess_per_s']:8.1f} ESS/s  ATE {row['ate']:.3f}  ok={row['ok']}", flush=True)
    print("\n| N | sampler | wall (s) | min bulk ESS | ESS/s | vs numpyro | ATE | converged |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        base = next((b for b in rows if b["n"] == r["n"] and b["sampler"] == "numpyro"), None)
        ratio = f"{r['ess_per_s'] / base['ess_per_s']:.2f}x" if base else "-"
        print(f"| {r['n']:,} | {r['sampler']} | {r['wall_s']:.1f} | {r['min_ess']:.0f} | {r['ess_per_s']:.1f} | "
              f"{ratio} | {r['ate']:.3f} | {r['ok']} |")


if __name__ == "__main__":
    main()
