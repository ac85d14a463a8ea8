"""Fit overhead: causal_wm's compiled NumPyro model against the same model hand-written in NumPyro and PyMC.

A hierarchical SCM with six structural nodes (confounder ``c``, covariate ``w``, binary treatment
``t``, mediator ``m``, outcome ``y``, binary outcome ``yb``) and group intercepts ``(1 | region)``
in ``c``, ``t`` and ``y`` (10 regions; ``region`` becomes a seventh, categorical node) is

* compiled by causal_wm from its YAML description and fitted with ``scm.fit`` (NumPyro NUTS),
* written by hand in NumPyro on the same standardised scale with the same priors
  (the rule of :mod:`causal_wm.data` and :mod:`causal_wm.priors`: continuous columns as z-scores,
  binary as 0/1; intercepts normal(0, 1.5), slopes normal(0, 1) or normal(0, 2.5) for bernoulli
  nodes, sigma and group SDs halfnormal(1), non-centred group effects), and
* written in PyMC and sampled with ``pm.sample`` (PyMC's default NUTS), as a reference.

All three get the same data, chains, warm-up, draws and seed. NumPyro runs its chains with
``chain_method="parallel"`` over host devices in both versions (this script sets
``numpyro.set_host_device_count`` before JAX starts, so causal_wm finds JAX running with enough
devices and uses the same method). Efficiency is min bulk ESS / s: the smallest bulk ESS (ArviZ)
over every element of every sampled parameter (deterministic group effects excluded), divided by
the wall time of the whole call (model build, compile, warm-up, sampling, and for causal_wm its
validation, log-likelihood and InferenceData assembly). ``MCMC.run`` alone (blocked until the draws
exist; JAX dispatches asynchronously) is timed as well (for PyMC, its reported ``sampling_time``:
tuning and sampling, without model compilation). Because other work may share the machine, the
user + system CPU seconds of the process and its children are reported too: min ESS per CPU-second
moves much less than wall time when the machine is contended.

Run (from the repository root, with the project's virtual environment active)::

    python benchmarks/fit_overhead.py                     # N = 10,000, 2 chains x 500 draws: ~4 min + PyMC 10-20 min
    python benchmarks/fit_overhead.py --n 1000 --no-pymc  # quick
    python benchmarks/fit_overhead.py --n 10000 --chains 2 --draws 1000 --warmup 1000 --seeds 0 1 2

With several ``--seeds`` each fit is repeated per seed (the order of the NumPyro versions
alternates) and the table reports every run and the median ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings

import numpyro  # before JAX starts: host devices for parallel chains

numpyro.set_host_device_count(min(4, os.cpu_count() or 1))

import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

jax.config.update("jax_enable_x64", True)  # causal_wm fits in float64 too

MODEL_YAML = """
name: hier_fit
nodes:
  c:  {family: normal,    formula: "1 + (1 | region)"}
  w:  {family: normal,    formula: "c"}
  t:  {family: bernoulli, formula: "c + w + (1 | region)"}
  m:  {family: normal,    formula: "t + c"}
  y:  {family: normal,    formula: "t + m + c + w + (1 | region)"}
  yb: {family: bernoulli, formula: "m + c"}
"""
N_REGIONS = 10
CONTINUOUS = ("c", "w", "m", "y")
# node -> (slope parents in formula order, has group intercept, family)
SPEC = {
    "c": ((), True, "normal"),
    "w": (("c",), False, "normal"),
    "t": (("c", "w"), True, "bernoulli"),
    "m": (("t", "c"), False, "normal"),
    "y": (("t", "m", "c", "w"), True, "normal"),
    "yb": (("m", "c"), False, "bernoulli"),
}


def simulate(n: int, seed: int) -> pd.DataFrame:
    """Draw ``n`` units from a hierarchical linear SCM with region intercepts."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, N_REGIONS, n)
    u_c, u_t, u_y = (rng.normal(0.0, s, N_REGIONS) for s in (0.7, 0.5, 1.0))
    c = 1.0 + u_c[g] + rng.normal(0.0, 1.0, n)
    w = 0.5 * c + rng.normal(0.0, 1.0, n)
    t = (rng.random(n) < 1.0 / (1.0 + np.exp(-(0.8 * c - 0.4 * w + u_t[g])))).astype(float)
    m = 2.0 + 0.7 * t + 0.4 * c + rng.normal(0.0, 1.0, n)
    y = 10.0 + 1.5 * t + 0.8 * m + 0.5 * c + 0.3 * w + u_y[g] + rng.normal(0.0, 2.0, n)
    yb = (rng.random(n) < 1.0 / (1.0 + np.exp(-(0.9 * (m - 2.0) - 0.5 * c)))).astype(float)
    region = np.array([f"r{i}" for i in range(N_REGIONS)])[g]
    return pd.DataFrame({"region": region, "c": c, "w": w, "t": t, "m": m, "y": y, "yb": yb})


def internal(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The data on causal_wm's internal scale, computed independently of causal_wm."""
    d = {k: ((df[k] - df[k].mean()) / df[k].std(ddof=0)).to_numpy() for k in CONTINUOUS}
    d["t"] = df["t"].to_numpy(dtype=float)
    d["yb"] = df["yb"].to_numpy(dtype=float)
    levels = sorted(df["region"].unique())
    d["region"] = pd.Categorical(df["region"], categories=levels).codes.astype(np.int32)
    return d


def b_scale(family: str) -> float:
    return 2.5 if family == "bernoulli" else 1.0


# --------------------------------------------------------------------------- hand-written NumPyro
def numpyro_model(d: dict) -> None:
    """The SCM by hand, site names and shapes as causal_wm names them."""
    n = d["t"].shape[0]
    g = d["region"]
    a_reg = numpyro.sample("region__intercept", dist.Normal(0.0, 1.5).expand((N_REGIONS - 1,)).to_event(1))
    with numpyro.plate("unit", n):
        numpyro.sample("region", dist.Categorical(logits=jnp.concatenate([jnp.zeros(1), a_reg])), obs=g)
    for name, (parents, grp, fam) in SPEC.items():
        eta = numpyro.sample(f"{name}__intercept", dist.Normal(0.0, 1.5))
        if parents:
            b = numpyro.sample(f"{name}__b", dist.Normal(0.0, b_scale(fam)).expand((len(parents),)).to_event(1))
            eta = eta + jnp.stack([d[p] for p in parents], axis=-1) @ b
        if grp:
            sd = numpyro.sample(f"{name}__sd__region", dist.HalfNormal(1.0).expand((1,)).to_event(1))
            z = numpyro.sample(f"{name}__z__region", dist.Normal(0.0, 1.0).expand((N_REGIONS, 1)).to_event(2))
            eta = eta + (z * sd)[g, 0]
        sigma = numpyro.sample(f"{name}__sigma", dist.HalfNormal(1.0)) if fam == "normal" else None
        with numpyro.plate("unit", n):
            if fam == "normal":
                numpyro.sample(name, dist.Normal(eta, sigma), obs=d[name])
            else:
                numpyro.sample(name, dist.BernoulliLogits(eta), obs=d[name])


def fit_numpyro(df: pd.DataFrame, chains: int, draws: int, warmup: int, seed: int):
    d = {k: jnp.asarray(v) for k, v in internal(df).items()}
    method = "parallel" if jax.local_device_count() >= chains else "sequential"
    mcmc = MCMC(NUTS(numpyro_model), num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method=method, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), d)
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return az.convert_to_dataset(samples), method


# --------------------------------------------------------------------------- causal_wm
def fit_causal_wm(df: pd.DataFrame, chains: int, draws: int, warmup: int, seed: int):
    import causal_wm as cw

    scm = cw.SCM.from_dict(yaml.safe_load(MODEL_YAML))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short run may not pass every convergence check
        post = scm.fit(df, chains=chains, draws=draws, warmup=warmup, seed=seed)
    p = post.idata.posterior
    return p[[v for v in p.data_vars if "__re__" not in v]]


# --------------------------------------------------------------------------- PyMC
def fit_pymc(df: pd.DataFrame, chains: int, draws: int, warmup: int, seed: int):
    import pymc as pm

    d = internal(df)
    g = d["region"]
    with pm.Model():
        a_reg = pm.Normal("region__intercept", 0.0, 1.5, shape=N_REGIONS - 1)
        pm.Categorical("region", logit_p=pm.math.concatenate([np.zeros(1), a_reg]), observed=g)
        for name, (parents, grp, fam) in SPEC.items():
            eta = pm.Normal(f"{name}__intercept", 0.0, 1.5)
            if parents:
                b = pm.Normal(f"{name}__b", 0.0, b_scale(fam), shape=len(parents))
                eta = eta + pm.math.dot(np.stack([d[p] for p in parents], axis=-1), b)
            if grp:
                sd = pm.HalfNormal(f"{name}__sd__region", 1.0, shape=1)
                z = pm.Normal(f"{name}__z__region", 0.0, 1.0, shape=(N_REGIONS, 1))
                eta = eta + (z * sd)[g, 0]
            if fam == "normal":
                sigma = pm.HalfNormal(f"{name}__sigma", 1.0)
                pm.Normal(name, eta, sigma, observed=d[name])
            else:
                pm.Bernoulli(name, logit_p=eta, observed=d[name])
        # spawn, not fork: JAX's threads are running in this process
        idata = pm.sample(draws=draws, tune=warmup, chains=chains, cores=min(chains, os.cpu_count() or 1),
                          random_seed=seed, progressbar=False, mp_ctx="spawn")
    return idata.posterior


# --------------------------------------------------------------------------- measurement
class RunTimer:
    """Accumulates the wall time spent inside ``MCMC.run`` (compile + warm-up + sampling)."""

    def __init__(self):
        self.seconds = 0.0
        self._orig = MCMC.run
        timer = self

        def run(mcmc_self, *a, **k):
            t0 = time.perf_counter()
            try:
                out = timer._orig(mcmc_self, *a, **k)
                # JAX dispatches asynchronously: wait for the draws, or the sampling is timed elsewhere
                jax.block_until_ready(mcmc_self.get_samples(group_by_chain=True))
                return out
            finally:
                timer.seconds += time.perf_counter() - t0

        MCMC.run = run


def min_bulk_ess(posterior) -> tuple[float, str, int]:
    """Smallest bulk ESS over every element of every variable, its variable, and the element count."""
    ess = az.ess(posterior, method="bulk")
    worst, where, count = np.inf, "", 0
    for v in ess.data_vars:
        vals = np.asarray(ess[v].values, dtype=float).reshape(-1)
        count += vals.size
        if vals.min() < worst:
            worst, where = float(vals.min()), str(v)
    return worst, where, count


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (PyMC's chain processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(label: str, fn, timer: RunTimer, *args) -> dict:
    timer.seconds = 0.0
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    post = fn(*args)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    if isinstance(post, tuple):
        post = post[0]
    ess, where, count = min_bulk_ess(post)
    # sampler time: NumPyro's MCMC.run (compile + warm-up + sampling); PyMC's own sampling_time
    run_s = timer.seconds or float(post.attrs.get("sampling_time", np.nan))
    row = {"implementation": label, "seed": args[-1], "wall_s": wall, "run_s": run_s, "cpu_s": cpu,
           "ess_per_cpu_s": ess / cpu,
           "min_ess": ess, "worst": where, "n_params": count, "ess_per_s": ess / wall,
           "ess_per_run_s": ess / run_s}
    print(f"  {label:<22} seed={args[-1]} wall {wall:7.1f} s  sampler {run_s:7.1f} s  cpu {cpu:7.1f} s  min bulk ESS "
          f"{ess:7.1f} ({where})  {row['ess_per_s']:.2f} ESS/s", flush=True)
    return row


def _potential(model, *args):
    """The potential energy of ``model`` (unconstrained parameters) and its initial point."""
    from numpyro.infer.util import initialize_model

    info = initialize_model(jax.random.PRNGKey(0), model, model_args=args)
    return info.potential_fn, info.param_info.z


def gradient_cost(df: pd.DataFrame, repeats: int = 7, calls: int = 100) -> list[dict]:
    """Milliseconds per gradient of each model's potential, and the size of the traced computation.

    Both are evaluated at the same point (causal_wm's initial point; the site names are the
    same), where their values must be equal: same priors, same data on the same scale. Timing is
    the best of ``repeats`` x ``calls`` evaluations, alternating the two models (one thread).
    """
    import causal_wm as cw
    from causal_wm.backends.numpyro import make_model
    from causal_wm.fitting import make_plan

    plan = make_plan(cw.SCM.from_dict(yaml.safe_load(MODEL_YAML)), df)
    d = {k: jnp.asarray(v) for k, v in internal(df).items()}
    pot_cw, z = _potential(make_model(plan))
    pot_hw, z_hw = _potential(numpyro_model, d)
    if set(z) != set(z_hw):
        raise AssertionError(f"the models' parameters differ: {sorted(set(z) ^ set(z_hw))}")
    out = []
    for label, pot in (("causal_wm (NumPyro)", pot_cw), ("hand-written NumPyro", pot_hw)):
        fn = jax.jit(jax.value_and_grad(pot))
        jax.block_until_ready(fn(z))
        out.append({"implementation": label, "fn": fn, "best": np.inf, "value": float(fn(z)[0]),
                    "jaxpr_eqns": len(jax.make_jaxpr(jax.value_and_grad(pot))(z).jaxpr.eqns),
                    "hlo_lines": len(fn.lower(z).compile().as_text().splitlines())})
    for _ in range(repeats):
        for r in out:
            t0 = time.perf_counter()
            for _ in range(calls):
                v = r["fn"](z)
            jax.block_until_ready(v)
            r["best"] = min(r["best"], (time.perf_counter() - t0) / calls)
    for r in out:
        r["ms"] = r.pop("best") * 1e3
        del r["fn"]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="rows (default 10000)")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one fit per seed and implementation")
    ap.add_argument("--data-seed", type=int, default=123)
    ap.add_argument("--no-pymc", action="store_true")
    ap.add_argument("--gradient-only", action="store_true",
                    help="only time one gradient of each NumPyro model's potential (seconds, no fits)")
    args = ap.parse_args(argv)
    if args.gradient_only:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"# gradient cost: N={args.n:,}, load average at start {load:.2f}\n")
        rows = gradient_cost(simulate(args.n, args.data_seed))
        print("| implementation | ms per value-and-gradient | potential at the initial point | jaxpr equations | "
              "compiled HLO lines |\n|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['implementation']} | {r['ms']:.3f} | {r['value']:.6f} | {r['jaxpr_eqns']} | "
                  f"{r['hlo_lines']} |")
        print(f"\n| causal_wm / hand-written, time per gradient | {rows[0]['ms'] / rows[1]['ms']:.2f} |")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\nload average at end {load:.2f}")
        return

    t_start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# fit overhead: N={args.n:,}, {args.chains} chains x {args.draws} draws ({args.warmup} warm-up), "
          f"{os.cpu_count()} cpus, JAX host devices {jax.local_device_count()}, load average at start {load:.2f}\n")
    df = simulate(args.n, args.data_seed)
    timer = RunTimer()

    # pay JAX's process start-up (backend, thread pools) before anything is timed
    MCMC(NUTS(lambda: numpyro.sample("x", dist.Normal())), num_warmup=5, num_samples=5,
         num_chains=args.chains, chain_method="parallel" if jax.local_device_count() >= args.chains else "sequential",
         progress_bar=False).run(jax.random.PRNGKey(0))

    rows = []
    for i, seed in enumerate(args.seeds):
        pair = [("causal_wm (NumPyro)", fit_causal_wm), ("hand-written NumPyro", fit_numpyro)]
        for label, fn in pair if i % 2 == 0 else pair[::-1]:
            rows.append(measure(label, fn, timer, df, args.chains, args.draws, args.warmup, seed))
        if not args.no_pymc:
            rows.append(measure("PyMC pm.sample", fit_pymc, timer, df, args.chains, args.draws, args.warmup, seed))

    print("\n| implementation | seed | wall s | sampler s | CPU s | min bulk ESS (parameter) | parameters | "
          "min ESS/s (wall) | min ESS/s (sampler) | min ESS per CPU-s |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        run_s = f"{r['run_s']:.1f}" if np.isfinite(r["run_s"]) else "-"
        per_run = f"{r['ess_per_run_s']:.2f}" if np.isfinite(r["ess_per_run_s"]) else "-"
        print(f"| {r['implementation']} | {r['seed']} | {r['wall_s']:.1f} | {run_s} | {r['cpu_s']:.1f} | "
              f"{r['min_ess']:.0f} ({r['worst']}) | {r['n_params']} | {r['ess_per_s']:.2f} | {per_run} | "
              f"{r['ess_per_cpu_s']:.2f} |")

    def per(label, key="ess_per_s"):
        return np.array([r[key] for r in rows if r["implementation"] == label])

    cw_, hw = per("causal_wm (NumPyro)"), per("hand-written NumPyro")
    cw_w, hw_w = per("causal_wm (NumPyro)", "wall_s"), per("hand-written NumPyro", "wall_s")
    print("\n| ratio (median over seeds) | value |\n|---|---:|")
    print(f"| causal_wm / hand-written NumPyro, min ESS/s | {np.median(cw_ / hw):.2f} |")
    print(f"| causal_wm / hand-written NumPyro, wall time | {np.median(cw_w / hw_w):.2f} |")
    cw_c, hw_c = per("causal_wm (NumPyro)", "ess_per_cpu_s"), per("hand-written NumPyro", "ess_per_cpu_s")
    print(f"| causal_wm / hand-written NumPyro, min ESS per CPU-s | {np.median(cw_c / hw_c):.2f} |")
    cw_cpu, hw_cpu = per("causal_wm (NumPyro)", "cpu_s"), per("hand-written NumPyro", "cpu_s")
    print(f"| causal_wm / hand-written NumPyro, CPU seconds per fit (same iterations) | "
          f"{np.median(cw_cpu / hw_cpu):.2f} |")
    if not args.no_pymc:
        pm_ = per("PyMC pm.sample")
        print(f"| hand-written NumPyro / PyMC, min ESS/s | {np.median(hw / pm_):.2f} |")
        print(f"| causal_wm / PyMC, min ESS/s | {np.median(cw_ / pm_):.2f} |")
        pm_c = per("PyMC pm.sample", "ess_per_cpu_s")
        print(f"| hand-written NumPyro / PyMC, min ESS per CPU-s | {np.median(hw_c / pm_c):.2f} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s, load average at end {load:.2f}")


if __name__ == "__main__":
    main()
