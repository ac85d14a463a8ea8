"""A latent confounder of a binary treatment, fitted with the latent integrated out and sampled per unit.

The model: a root ``w``; a latent ``u`` with two Gaussian indicators ``x1``, ``x2``; a bernoulli
treatment ``t`` (``w + u``) and a Gaussian outcome ``y`` (``t + w + u``), every loading free. The
data are simulated with NumPy (effect of ``t`` on ``y``: 1.0). The same data are fitted twice with
NumPyro's NUTS, same settings and seed: once with ``u`` integrated out (its bernoulli child by
adaptive Gauss-Hermite, ``causal_wm/backends/latent_quadrature.py``; the default) and once with
``marginalize: false`` on ``u`` (one parameter per unit). The table gives wall time, convergence
(max R-hat and min bulk ESS over the parameters, the per-unit latents left out), leapfrog steps per
draw and the effect with its 90% interval.

Run (from the repository root, with the project's virtual environment active; about 5 minutes on 2 cores)::

    python benchmarks/latent_quadrature.py
    python benchmarks/latent_quadrature.py --chains 2 --draws 500 --warmup 500   # about 2 minutes
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd


def model(marginalize: bool) -> dict:
    u = {"latent": True} if marginalize else {"latent": True, "marginalize": False}
    return {"name": "latent_treatment", "nodes": {
        "w": {}, "u": u, "x1": {"formula": "u"}, "x2": {"formula": "u + w"},
        "t": {"family": "bernoulli", "formula": "w + u"}, "y": {"formula": "t + w + u"}}}


def simulate(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    w, u = rng.normal(size=n), rng.normal(size=n)
    t = rng.binomial(1, 1 / (1 + np.exp(-(0.3 * w + 1.0 * u))))
    return pd.DataFrame({"w": w, "x1": 0.8 * u + 0.6 * rng.normal(size=n),
                         "x2": 0.7 * u + 0.3 * w + 0.7 * rng.normal(size=n), "t": t,
                         "y": 1.0 * t + 0.5 * w + 0.8 * u + rng.normal(size=n)})


def main(argv=None) -> None:
    import causal_wm as cw

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    df = simulate(a.units, 0)
    print(f"{a.units} units, {a.chains} chains x {a.draws} draws ({a.warmup} warm-up), seed {a.seed}; "
          "effect of t on y: 1.0\n")
    print("| latent u | wall (s) | converged | max R-hat | min bulk ESS | steps per draw | effect [90%] |")
    print("|---|---:|---|---:|---:|---:|---|")
    for marginalize in (True, False):
        with warnings.catch_warnings():
            # the effect rests on the parametric model (a latent confounder): expected here
            warnings.simplefilter("ignore", cw.IdentificationWarning)
            warnings.simplefilter("ignore", cw.ConvergenceWarning)
            t0 = time.perf_counter()
            post = cw.SCM.from_dict(model(marginalize)).fit(
                df, chains=a.chains, draws=a.draws, warmup=a.warmup, seed=a.seed, progress=False)
            wall = time.perf_counter() - t0
            eff = post.effect("y", do={"t": 1}, vs={"t": 0})
        tab = post.diagnostics().table
        tab = tab[~tab.index.str.startswith("u[")]
        lo, hi = eff.interval(0.9)
        steps = float(post.idata.sample_stats.n_steps.mean())
        print(f"| {'integrated out' if marginalize else 'sampled per unit'} | {wall:.0f} | {post.ok} | "
              f"{tab.r_hat.max():.3f} | {tab.ess_bulk.min():.0f} | {steps:.0f} | "
              f"{eff.mean():.3f} [{lo:.3f}, {hi:.3f}] |", flush=True)


if __name__ == "__main__":
    main()
