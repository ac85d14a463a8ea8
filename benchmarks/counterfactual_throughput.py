"""Unit-level counterfactual throughput: causal_wm against NumPy, JAX, a hand-fused numba loop and DoWhy.

A 6-node linear SCM (confounder ``c``, second covariate ``w``, binary treatment ``t``, continuous
mediator ``m``, continuous outcome ``y``, binary outcome ``yb``) is simulated with NumPy, fitted
once with NUTS (2 chains x 500 draws by default, so S = 1000 posterior draws), and then the
counterfactual ``do(t=0)`` is computed for U new units crossed with all S draws.

Rows of the table (throughput in unit-draws per second, higher is better):

* ``causal_wm fused all draws``: ``counterfactual(units, do, engine="fused")`` (the default engine
  for queries this large, ``causal_wm/fused.py``: the model's equations traced with JAX, run as a
  numba loop generated from the trace, ``causal_wm/looped.py``), every draw kept, shape (S, U) per
  node. "kernel only" times the fused engine by itself (the rest is input encoding and result
  assembly). Calls after the first write into the memory of the previous, dropped result
  (``causal_wm/pool.py``), as a user's repeated queries do.
* ``causal_wm fused all draws, fresh memory``: the same with the pool switched off
  (``pool.set_idle_limit(0)``): every call writes pages the process has never touched, as a
  first query does.
* ``causal_wm fused, XLA loop, all draws``: the same trace compiled by XLA into its own loop over
  chunks (the fused engine's path for programs the numba loop does not cover).
* ``causal_wm generic all draws``: the same through the generic interpreting numba kernel
  (``engine="generic"``; "kernel only" is ``kernels.units_kernel``).
* ``causal_wm ... summary_only``: per-unit mean/SD/interval reduced chunk by chunk (O(U) memory);
  the last row is the bounded-memory run (``--big-units`` x ``--big-draws``, 1M x 1,000 by default).
* ``numpy``: the same abduction-action-prediction, vectorised over (S, chunk of units), written below.
* ``jax jit``: the same in ``jax.jit`` (x64), per chunk of units.
* ``numba hand-fused``: the same for this one model as one hand-written ``prange`` loop
  (what a generic interpreter could reach at best; no per-node dispatch), with the branch-free
  ``exp`` and ``select`` of ``causal_wm/vecmath.py`` so that the loop vectorises as the engine's does
  (``np.exp`` and a conditional expression would keep it scalar: 2.0x slower at 100,000 units).
* ``causal_wm fused effect (y | yb)``: ``effect(outcome, do={"t": 1}, vs={"t": 0})`` over a population
  of ``--effect-units`` simulated units with the fitted parameter draws (the numba loop summing each
  draw's two worlds over the units; "XLA loop" the same program compiled by XLA), beside DoWhy's
  ``gcm.average_causal_effect`` on the same units (one draw per unit).
* ``dowhy gcm``: ``gcm.counterfactual_samples`` on an InvertibleStructuralCausalModel with linear
  additive-noise mechanisms; a point-estimate model, so one draw per unit (unit-draws = units).
  Its rate per unit grows with U (fixed costs per call), so it is timed at 1,000 units and at each
  all-draws U, and ratios are taken at the same U.

The memory-bandwidth ceiling is a large array copy (``np.copyto`` on single-threaded NumPy and a
``prange`` copy on all cores; bytes read + written / time, STREAM convention); the all-draws
rows report the fraction of the larger of the two that their *necessary* traffic reaches
(S*U*outputs*8 bytes written plus the inputs read; causal_wm's results hold ``t``, which
``do(t=0)`` sets, as a broadcast view of its value, so three outputs are written there and four
by the peers). Peak memory is the process's high-water
resident set during each measurement (reset through /proc/self/clear_refs on Linux), minus
the resident set just before it.

Run (from the repository root, with the project's virtual environment active)::

    python benchmarks/counterfactual_throughput.py                  # defaults, about 4-5 minutes on 2 cores
    python benchmarks/counterfactual_throughput.py --units 10000 --summary-units 10000 --big-units 0 --no-dowhy

Timings are best of ``--repeats`` calls (short ones repeated until ``--min-time`` seconds are spent)
after one warm-up call per implementation (numba compile, jit,
the fused engine's compile; its time is printed).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import time
import warnings

import numpy as np
import pandas as pd
from numba import njit, prange

from causal_wm.looped import _allow_alias_checks
from causal_wm.vecmath import CONSTANTS, LAYOUT, select, vexp_k

MODEL = {
    "name": "throughput",
    "nodes": {
        "c": {"family": "normal"},
        "w": {"family": "normal", "formula": "c"},
        "t": {"family": "bernoulli", "formula": "c + w"},
        "m": {"family": "normal", "formula": "t + c"},
        "y": {"family": "normal", "formula": "t + m + c + w"},
        "yb": {"family": "bernoulli", "formula": "m + c"},
    },
}
ORDER = ("c", "w", "t", "m", "y", "yb")
DO_T = 0.0


# --------------------------------------------------------------------------- data
def simulate(n: int, seed: int) -> pd.DataFrame:
    """Draw ``n`` units from the true linear SCM."""
    rng = np.random.default_rng(seed)
    c = rng.normal(0.0, 1.0, n)
    w = 1.0 + 0.5 * c + rng.normal(0.0, 1.0, n)
    t = (rng.random(n) < 1.0 / (1.0 + np.exp(-(0.8 * c - 0.4 * w)))).astype(float)
    m = 2.0 + 0.7 * t + 0.4 * c + rng.normal(0.0, 1.0, n)
    y = 10.0 + 1.5 * t + 0.8 * m + 0.5 * c + 0.3 * w + rng.normal(0.0, 2.0, n)
    yb = (rng.random(n) < 1.0 / (1.0 + np.exp(-(0.9 * (m - 2.0) - 0.5 * c)))).astype(float)
    return pd.DataFrame({"c": c, "w": w, "t": t, "m": m, "y": y, "yb": yb})


# --------------------------------------------------------------------------- measurement helpers
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Peak:
    """Peak resident memory (bytes) above the level at entry, for the block it wraps."""

    def __enter__(self):
        gc.collect()
        self.resettable = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.resettable = True
        except OSError:
            pass
        rss = _status_kb("VmRSS")
        self.start = (rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        return self

    def __exit__(self, *exc):
        hwm = _status_kb("VmHWM") if self.resettable else None
        if hwm is None:  # not resettable: the process-lifetime peak, an upper bound
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak = hwm * 1024
        self.delta = max(0, self.peak - self.start)
        return False


CPU_TIMES: list[float] = []  # process CPU seconds (all threads) of each best_time call's fastest run
LAST_REPEATS = [0]  # how many calls the last best_time made


def best_time(fn, repeats: int, min_time: float = 0.0, max_repeats: int = 50) -> tuple[float, object]:
    """Minimum wall time of ``fn()`` over at least ``repeats`` calls, and the last result.

    Short calls are repeated until ``min_time`` seconds have been spent (at most ``max_repeats``
    calls), so that a 10 ms call gets as fair a best-of as a 1 s one. The CPU time of the process
    (every thread) during the fastest call is appended to CPU_TIMES: on a machine shared with other
    work it moves much less than wall time.
    """
    best, res, cpu = np.inf, None, np.nan
    spent, n = 0.0, 0
    while n < repeats or (spent < min_time and n < max_repeats):
        n += 1
        res = None
        gc.collect()
        c0 = time.process_time()
        t0 = time.perf_counter()
        res = fn()
        t = time.perf_counter() - t0
        spent += t
        if t < best:
            best, cpu = t, time.process_time() - c0
    CPU_TIMES.append(cpu)
    LAST_REPEATS[0] = n
    return best, res


@njit(parallel=True, cache=True)
def _par_copy(dst, src):
    for i in prange(src.shape[0]):
        dst[i] = src[i]


@njit(parallel=True, cache=True)
def _par_fill(dst, value):
    for i in prange(dst.shape[0]):
        dst[i] = value


def bandwidth(gib: float, repeats: int = 5) -> dict[str, float]:
    """Memory bandwidth in bytes/s on ``gib``-GiB float64 arrays.

    Copies count bytes read + written (STREAM convention) between arrays whose pages are already
    mapped. A fresh output (what a query returns) also pays the first touch of every page: the
    last entry writes a newly allocated array (bytes written / time, page faults included).
    """
    n = int(gib * 2**30) // 8
    src = np.ones(n)
    dst = np.zeros(n)
    _par_copy(dst[:1000], src[:1000])
    _par_fill(dst[:1000], 1.0)
    t_np, _ = best_time(lambda d=dst, s=src: np.copyto(d, s), repeats)
    t_nb, _ = best_time(lambda d=dst, s=src: _par_copy(d, s), repeats)
    del src, dst
    gc.collect()
    t_ft, _ = best_time(lambda: _par_fill(np.empty(n), 1.0), repeats)
    return {"numpy copyto (1 thread)": 2 * n * 8 / t_np, "numba prange copy (all threads)": 2 * n * 8 / t_nb,
            "first-touch write of a new array (all threads)": n * 8 / t_ft}


# --------------------------------------------------------------------------- parameters for peers
def extract(post) -> dict:
    """Posterior draws (flattened to S) and scales the peer implementations need, by node."""
    p = post.idata.posterior
    scales = post.plan.scales
    out = {}
    for name in ORDER:
        lay = post.plan.layouts[name]
        d = {"center": scales[name].center, "scale": scales[name].scale, "family": lay.family, "b": {}}
        if lay.intercept:
            d["a"] = np.asarray(p[f"{name}__intercept"].values, dtype=float).reshape(-1)
        if lay.columns:
            bb = np.asarray(p[f"{name}__b"].values, dtype=float)
            bb = bb.reshape(-1, bb.shape[-1])
            for j, col in enumerate(lay.columns):
                d["b"][col.label] = np.ascontiguousarray(bb[:, j])
        out[name] = d
    return out


def to_internal(par: dict, units: pd.DataFrame) -> dict[str, np.ndarray]:
    """Observed columns on the internal scale (z-scores for normal nodes, 0/1 for bernoulli)."""
    z = {}
    for name in ORDER:
        x = units[name].to_numpy(dtype=float)
        z[name] = (x - par[name]["center"]) / par[name]["scale"] if par[name]["family"] == "normal" else x
    return z


# --------------------------------------------------------------------------- (c) NumPy
def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def numpy_cf(par: dict, units: pd.DataFrame, chunk: int, seed: int) -> dict[str, np.ndarray]:
    """Abduction-action-prediction of do(t=0) for every (draw, unit), vectorised per unit chunk."""
    rng = np.random.default_rng(seed)
    z = to_internal(par, units)
    S, U = par["m"]["b"]["t"].shape[0], len(units)
    outs = {k: np.empty((S, U)) for k in ("t", "m", "y", "yb")}
    outs["t"].fill(DO_T)
    bm, by, bb = par["m"]["b"], par["y"]["b"], par["yb"]["b"]
    col = np.s_[:, None]
    for lo in range(0, U, chunk):
        sl = slice(lo, min(U, lo + chunk))
        dt = DO_T - z["t"][sl]  # action: t changes by dt (0 or -1) for each unit
        dm = bm["t"][col] * dt  # m_cf - m (internal): the abducted noise cancels
        m_cf = z["m"][sl] + dm
        y_cf = z["y"][sl] + by["t"][col] * dt + by["m"][col] * dm
        eta_f = par["yb"]["a"][col] + bb["m"][col] * z["m"][sl] + bb["c"][col] * z["c"][sl]
        eta_c = eta_f + bb["m"][col] * dm
        q_f = 1.0 - _sigmoid(eta_f)  # P(yb = 0 | factual parents)
        v = rng.random(eta_f.shape)
        uu = np.where(z["yb"][sl] > 0.5, q_f + v * (1.0 - q_f), v * q_f)  # abducted uniform
        outs["yb"][:, sl] = uu > 1.0 - _sigmoid(eta_c)
        outs["m"][:, sl] = par["m"]["center"] + par["m"]["scale"] * m_cf
        outs["y"][:, sl] = par["y"]["center"] + par["y"]["scale"] * y_cf
    return outs


# --------------------------------------------------------------------------- (d) JAX
def make_jax_cf(par: dict):
    """A jit-compiled version of :func:`numpy_cf` (one call per unit chunk)."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    bm, by, bb = par["m"]["b"], par["y"]["b"], par["yb"]["b"]
    th = {k: jnp.asarray(v) for k, v in {
        "bm_t": bm["t"], "by_t": by["t"], "by_m": by["m"], "a_yb": par["yb"]["a"], "bb_m": bb["m"],
        "bb_c": bb["c"]}.items()}
    cm, sm, cy, sy = par["m"]["center"], par["m"]["scale"], par["y"]["center"], par["y"]["scale"]

    @jax.jit
    def step(key, th, zt, zm, zy, zc, zyb):
        dt = DO_T - zt[None, :]
        dm = th["bm_t"][:, None] * dt
        y_cf = zy[None, :] + th["by_t"][:, None] * dt + th["by_m"][:, None] * dm
        eta_f = th["a_yb"][:, None] + th["bb_m"][:, None] * zm[None, :] + th["bb_c"][:, None] * zc[None, :]
        eta_c = eta_f + th["bb_m"][:, None] * dm
        q_f = 1.0 - jax.nn.sigmoid(eta_f)
        v = jax.random.uniform(key, eta_f.shape, dtype=jnp.float64)
        uu = jnp.where(zyb[None, :] > 0.5, q_f + v * (1.0 - q_f), v * q_f)
        yb = (uu > 1.0 - jax.nn.sigmoid(eta_c)).astype(jnp.float64)
        return cm + sm * (zm[None, :] + dm), cy + sy * y_cf, yb

    def run(units: pd.DataFrame, chunk: int, seed: int) -> dict[str, np.ndarray]:
        z = to_internal(par, units)
        S, U = bm["t"].shape[0], len(units)
        outs = {k: np.empty((S, U)) for k in ("t", "m", "y", "yb")}
        outs["t"].fill(DO_T)
        key = jax.random.PRNGKey(seed)
        for i, lo in enumerate(range(0, U, chunk)):
            sl = slice(lo, lo + chunk)
            args = [z[k][sl] for k in ("t", "m", "y", "c", "yb")]
            n = len(args[0])
            if n < chunk:  # pad the last chunk so one compiled shape serves every call
                args = [np.pad(a, (0, chunk - n)) for a in args]
            m, y, yb = step(jax.random.fold_in(key, i), th, *args)
            outs["m"][:, sl] = np.asarray(m)[:, :n]
            outs["y"][:, sl] = np.asarray(y)[:, :n]
            outs["yb"][:, sl] = np.asarray(yb)[:, :n]
        return outs

    return run


# --------------------------------------------------------------------------- (e) hand-fused numba
@njit(cache=True, inline="always")
def _u01(key, s, u):
    z = np.uint64(key) + np.uint64(s) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(u)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (float(z >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


# not cached on disk: numba's cache would not notice a change of vecmath's exp or select
@njit(parallel=True)
def _fused(bm_t, by_t, by_m, a_yb, bb_m, bb_c, zt, zm, zy, zc, zyb, cm, sm, cy, sy, key, om, oy, oyb, K):
    S, U = om.shape
    # exp's constants handed over, as the engine's loops get them (vecmath.CONSTANTS: literals are
    # reloaded in a loop that runs out of registers)
    k = (K[0], K[1], K[2], K[3], K[4], K[5], K[6], K[7], K[8], K[9], K[10], K[11], K[12], K[13], K[14], K[15], K[16])
    for s in prange(S):
        for u in range(U):
            dt = DO_T - zt[u]
            dm = bm_t[s] * dt
            om[s, u] = cm + sm * (zm[u] + dm)
            oy[s, u] = cy + sy * (zy[u] + by_t[s] * dt + by_m[s] * dm)
            eta_f = a_yb[s] + bb_m[s] * zm[u] + bb_c[s] * zc[u]
            eta_c = eta_f + bb_m[s] * dm
            # the engine's coupling, multiplied out (kernels.bernoulli_couple): A = exp(+-eta)
            one = zyb[u] > 0.5
            sign = select(one, -1.0, 1.0)
            a_f, a_c = vexp_k(sign * eta_f, k), vexp_k(sign * eta_c, k)
            v = _u01(key, s, u)
            oyb[s, u] = select(v * (1.0 + a_c) > select(one, a_c - a_f, 1.0 + a_f), 1.0, 0.0)


def numba_cf(par: dict, units: pd.DataFrame, seed: int, outs: dict | None = None) -> dict[str, np.ndarray]:
    """The counterfactual of this model as one fused parallel loop over (draw, unit).

    ``outs`` (optional) are output arrays to overwrite, so no page of them is touched for the first time.
    """
    z = to_internal(par, units)
    S, U = par["m"]["b"]["t"].shape[0], len(units)
    if outs is None:
        outs = {k: np.empty((S, U)) for k in ("t", "m", "y", "yb")}
    outs["t"].fill(DO_T)
    bm, by, bb = par["m"]["b"], par["y"]["b"], par["yb"]["b"]
    assert LAYOUT["exp"][1] - LAYOUT["exp"][0] == 17, "_fused unpacks 17 constants of exp"
    _fused(bm["t"], by["t"], by["m"], par["yb"]["a"], bb["m"], bb["c"], z["t"], z["m"], z["y"], z["c"], z["yb"],
           par["m"]["center"], par["m"]["scale"], par["y"]["center"], par["y"]["scale"], seed,
           outs["m"], outs["y"], outs["yb"], CONSTANTS[slice(*LAYOUT["exp"])])
    return outs


# --------------------------------------------------------------------------- (f) DoWhy
def dowhy_model(df: pd.DataFrame):
    """An invertible gcm SCM with linear additive-noise mechanisms on the same graph, fitted to ``df``.

    Binary nodes are linear-probability ANMs: gcm's classifier mechanisms are not invertible, and
    ``counterfactual_samples`` with observed data needs every node invertible.
    """
    import networkx as nx
    from dowhy import gcm

    gcm.config.disable_progress_bars()
    edges = [(p, n) for n in ORDER for p in _parents(n)]
    scm = gcm.InvertibleStructuralCausalModel(nx.DiGraph(edges))
    for n in ORDER:
        if _parents(n):
            scm.set_causal_mechanism(n, gcm.AdditiveNoiseModel(gcm.ml.create_linear_regressor()))
        else:
            scm.set_causal_mechanism(n, gcm.EmpiricalDistribution())
    gcm.fit(scm, df)
    return scm


def _parents(name: str) -> list[str]:
    f = MODEL["nodes"][name].get("formula")
    return [p.strip() for p in f.split("+")] if f else []


def dowhy_ace(scm, outcome: str, units: pd.DataFrame) -> float:
    from dowhy import gcm

    return gcm.average_causal_effect(scm, outcome, {"t": lambda t: np.ones_like(t)},
                                     {"t": lambda t: np.zeros_like(t)}, observed_data=units)


def population(post, scm, units: pd.DataFrame, seed: int):
    """``post``'s parameter draws over ``units`` instead of its fitting data (what effect() averages over)."""
    from causal_wm.testing import parameter_shapes, posterior_from_params

    draws = {site: post.idata.posterior[site].values for site in parameter_shapes(scm, units)}
    return posterior_from_params(scm, units, draws, seed=seed)


def dowhy_cf(scm, units: pd.DataFrame) -> pd.DataFrame:
    from dowhy import gcm

    return gcm.counterfactual_samples(scm, {"t": lambda t: np.full_like(t, DO_T)}, observed_data=units)


# --------------------------------------------------------------------------- driver
def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def _fmt(x: float) -> str:
    return f"{x:.2e}" if np.isfinite(x) else "-"


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def main(argv=None) -> None:
    # the engine's process-wide LLVM option (more runtime overlap checks), so that the hand-written
    # loop, with three outputs, vectorises under the same compiler settings as the engine's loops
    _allow_alias_checks()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-fit", type=int, default=2000, help="rows used to fit (default 2000)")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=500, help="draws per chain (S = chains x draws)")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--units", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                    help="U for the all-draws rows (default 1000 10000 100000)")
    ap.add_argument("--summary-units", type=int, nargs="+", default=[10_000, 100_000],
                    help="U for causal_wm summary_only with all S draws (default 10000 100000)")
    ap.add_argument("--big-units", type=int, default=1_000_000,
                    help="U for the bounded-memory summary_only run (0 to skip; default 1000000)")
    ap.add_argument("--big-draws", type=int, default=1000, help="posterior draws for the --big-units run")
    ap.add_argument("--effect-units", type=int, nargs="*", default=[100_000],
                    help="population sizes for the effect rows (none: skip)")
    ap.add_argument("--generic-units", type=int, nargs="*", default=[10_000],
                    help="U at which the generic (interpreting) kernel is timed too (slow: ~2.5e6 unit-draws/s)")
    ap.add_argument("--dowhy-units", type=int, nargs="*", default=None,
                    help="U for DoWhy gcm (default: 1000 and every --units value; its rate per unit grows with U)")
    ap.add_argument("--chunk", type=int, default=1024, help="units per NumPy/JAX chunk")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per cell (best is kept)")
    # Memory that no process has touched since the machine (a VM here) booted is slow to touch the first
    # time, as the host backs it lazily: the first 3 GiB result of a process measured up to 7x slower
    # than the next one. Best of several calls keeps that out of the comparison for the 100k rows too.
    ap.add_argument("--min-time", type=float, default=0.5,
                    help="short cells are repeated (up to 50 calls) until this many seconds are spent (default 0.5)")
    ap.add_argument("--repeat-limit", type=float, default=2e8,
                    help="cells with more unit-draws than this are timed once (default 2e8)")
    ap.add_argument("--bandwidth-gib", type=float, default=1.0, help="size of each array in the copy test")
    ap.add_argument("--no-dowhy", action="store_true")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import causal_wm as cw
    from causal_wm import fused, kernels, pool, queries

    t_start = time.perf_counter()
    print(f"# counterfactual throughput ({platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"numba threads {__import__('numba').get_num_threads()}, load average at start {_load()})\n")

    bw = bandwidth(args.bandwidth_gib)
    ceiling = max(bw["numpy copyto (1 thread)"], bw["numba prange copy (all threads)"])
    print("memory bandwidth (copy, read + written):")
    for k, v in bw.items():
        print(f"  {k}: {v / 1e9:.1f} GB/s")

    df = simulate(args.n_fit, args.seed)
    scm = cw.SCM.from_dict(MODEL)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short fit may not pass every convergence check; timing only
        post = scm.fit(df, chains=args.chains, draws=args.draws, warmup=args.warmup, seed=args.seed)
    t_fit = time.perf_counter() - t0
    S = post.program.n_draws
    n_nodes, n_par = len(post.program.names), post.program.theta.shape[1]
    print(f"fit: {args.chains} chains x {args.draws} draws ({args.warmup} warmup) on {args.n_fit} rows in "
          f"{t_fit:.1f} s; S = {S} draws, {n_par} parameters")

    par = extract(post)
    jax_cf = None if args.no_jax else make_jax_cf(par)

    # time spent in the kernels themselves (the query adds input encoding and result assembly)
    kernel_times: list[float] = []
    originals = {"generic": kernels.units_kernel, "fused": fused.counterfactual_draws}

    def timed(fn):
        def run(*a, **k):
            t = time.perf_counter()
            res = fn(*a, **k)
            kernel_times.append(time.perf_counter() - t)
            return res
        return run

    kernels.units_kernel = timed(originals["generic"])
    fused.counterfactual_draws = timed(originals["fused"])

    def cf(u, engine, **kw):
        return queries.counterfactual(post, u, {"t": DO_T}, engine=engine, **kw)

    warm = simulate(64, args.seed + 1)
    t0 = time.perf_counter()
    for engine in ("fused", "generic"):
        cf(warm, engine)
        cf(warm, engine, summary_only=True)
    t_first = time.perf_counter() - t0
    numba_cf(par, warm, args.seed)
    _check_summary(post, simulate(256, args.seed + 3))
    if jax_cf is not None:
        jax_cf(warm, args.chunk, args.seed)
    print(f"warm-up (numba compile / cache load, jit; fused engine compile) {t_first:.1f} s, done at "
          f"{time.perf_counter() - t_start:.0f} s\n")

    rows = []

    def record(impl, U, draws, fn, n_out, check=None):
        kernel_times.clear()
        repeats = args.repeats if U * draws <= args.repeat_limit else 1
        with Peak() as pk:
            t, res = best_time(fn, repeats, args.min_time if repeats > 1 else 0.0)
        repeats = LAST_REPEATS[0]
        if n_out and isinstance(getattr(res, "values", None), dict):  # causal_wm: do()-set nodes are views
            n_out = sum(1 for v in res.values.values() if v.strides[0] != 0)
        k_t = min(kernel_times) if "all draws" in impl and kernel_times else None
        bytes_needed = draws * U * n_out * 8 + U * n_nodes * 8 * 2 + S * n_par * 8 if n_out else 0
        rows.append({
            "implementation": impl, "U": U, "draws": draws, "repeats": repeats, "seconds": t,
            "rate": U * draws / t,
            "kernel_rate": U * draws / k_t if k_t else np.nan,
            "bw_frac": bytes_needed / t / ceiling if n_out else np.nan,
            "ft_frac": draws * U * n_out * 8 / t / bw["first-touch write of a new array (all threads)"]
            if n_out else np.nan,
            "peak": pk.delta,
            "cpu_rate": U * draws / CPU_TIMES[-1],
        })
        print(f"  {impl:<32} U={U:>9,} S={draws:>5} {t:8.3f} s  {U * draws / t:.2e} unit-draws/s  "
              f"+{_mib(pk.delta)} MiB  (load {_load()})", flush=True)
        if check is not None:
            check(res)
        del res
        gc.collect()

    def xla_loop(u):
        fused.USE_LOOP = False  # the fused engine's other path: XLA's own loop over each chunk
        try:
            return cf(u, "fused")
        finally:
            fused.USE_LOOP = True

    def fresh_memory(u):
        pool.set_idle_limit(0)  # no dropped result kept: every call writes pages never touched before
        try:
            return cf(u, "fused")
        finally:
            pool.set_idle_limit(None)

    for U in args.units:
        units = simulate(U, args.seed + 2)
        record("causal_wm fused all draws, fresh memory", U, S, lambda u=units: fresh_memory(u), 4,
               check=lambda r, u=units: _check_against(r, par, u))
        record("causal_wm fused all draws", U, S, lambda u=units: cf(u, "fused"), 4,
               check=lambda r, u=units: _check_against(r, par, u))
        record("causal_wm fused, XLA loop, all draws", U, S, lambda u=units: xla_loop(u), 4,
               check=lambda r, u=units: _check_against(r, par, u))
        if U in args.generic_units:
            record("causal_wm generic all draws", U, S, lambda u=units: cf(u, "generic"), 4,
                   check=lambda r, u=units: _check_against(r, par, u))
        pool.release()  # the peers allocate their own memory
        record("numpy (chunked)", U, S, lambda u=units: numpy_cf(par, u, args.chunk, args.seed), 4)
        if jax_cf is not None:
            record("jax jit (chunked)", U, S, lambda u=units: jax_cf(u, args.chunk, args.seed), 4)
        record("numba hand-fused", U, S, lambda u=units: numba_cf(par, u, args.seed), 4)
        outs = {k: np.full((S, U), 0.0) for k in ("t", "m", "y", "yb")}  # pages touched here
        record("numba hand-fused, out reused", U, S, lambda u=units, o=outs: numba_cf(par, u, args.seed, o), 4)
        del units, outs
    big = [(U, S) for U in args.summary_units] + ([(args.big_units, args.big_draws)] if args.big_units else [])
    for U, nd in big:
        units = simulate(U, args.seed + 2)
        record("causal_wm fused summary_only", U, nd,
               lambda u=units, nd=nd: cf(u, "fused", summary_only=True, draws=nd), 0)
        if U in args.generic_units:
            record("causal_wm generic summary_only", U, nd,
                   lambda u=units, nd=nd: cf(u, "generic", summary_only=True, draws=nd), 0)
        del units
    kernels.units_kernel, fused.counterfactual_draws = originals["generic"], originals["fused"]

    dowhy_units = sorted(set([1000, *args.units] if args.dowhy_units is None else args.dowhy_units))
    if not args.no_dowhy:
        gmodel = dowhy_model(df)
        dowhy_cf(gmodel, simulate(64, args.seed + 2))
        for U in dowhy_units:
            units = simulate(U, args.seed + 2)
            record("dowhy gcm (1 draw)", U, 1, lambda u=units: dowhy_cf(gmodel, u), 0)
        del units

    # effects: the fitted parameters on a population of U simulated units (effect() averages over
    # the posterior's own units), beside DoWhy's average_causal_effect on the same units
    for U in args.effect_units:
        units = simulate(U, args.seed + 4)
        post_u = population(post, scm, units, args.seed)
        for outcome in ("y", "yb"):
            def eff(o=outcome, p=post_u):
                return p.effect(o, do={"t": 1.0}, vs={"t": 0.0}, engine="fused")

            eff()  # compile
            record(f"causal_wm fused effect ({outcome})", U, S, eff, 0)
            fused.USE_LOOP = False
            try:
                eff()
                record(f"causal_wm fused effect ({outcome}), XLA loop", U, S, eff, 0)
            finally:
                fused.USE_LOOP = True
            if not args.no_dowhy:
                record(f"dowhy gcm average_causal_effect ({outcome})", U, 1,
                       lambda o=outcome, u=units: dowhy_ace(gmodel, o, u), 0)
        del units, post_u

    print("\n| implementation | units U | draws S | best of | seconds | unit-draws/s | unit-draws per CPU-s | "
          "kernel only (unit-draws/s) | fraction of copy bandwidth | fraction of first-touch write | "
          "peak extra memory (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def pct(x):
        return f"{100 * x:.1f}%" if np.isfinite(x) else "-"

    for r in rows:
        print(f"| {r['implementation']} | {r['U']:,} | {r['draws']} | {r['repeats']} | {r['seconds']:.3f} | "
              f"{_fmt(r['rate'])} | {_fmt(r['cpu_rate'])} | {_fmt(r['kernel_rate'])} | {pct(r['bw_frac'])} | "
              f"{pct(r['ft_frac'])} | "
              f"{_mib(r['peak'])} |")

    def rate(impl, U=None, key="rate"):
        c = [r[key] for r in rows if r["implementation"] == impl and (U is None or r["U"] == U)]
        return max(c) if c else np.nan

    print(f"\nbandwidth ceiling: {ceiling / 1e9:.1f} GB/s (best copy, read + written); first-touch write "
          f"{bw['first-touch write of a new array (all threads)'] / 1e9:.1f} GB/s")
    print("\n| ratio | value |\n|---|---:|")
    dw = "dowhy gcm (1 draw)"
    for U in args.units:
        cw_rate = rate("causal_wm fused all draws", U)
        for peer in ("causal_wm fused all draws, fresh memory", "causal_wm fused, XLA loop, all draws",
                     "causal_wm generic all draws", "numpy (chunked)",
                     "jax jit (chunked)", "numba hand-fused", "numba hand-fused, out reused"):
            if np.isfinite(rate(peer, U)):
                print(f"| causal_wm fused all draws / {peer}, U={U:,} | {cw_rate / rate(peer, U):.2f} |")
        if np.isfinite(rate(dw, U)):  # per unit-draw, at the same number of units
            for impl in ("causal_wm fused all draws", "causal_wm fused all draws, fresh memory",
                         "causal_wm fused, XLA loop, all draws", "causal_wm fused summary_only", "numba hand-fused",
                         "numba hand-fused, out reused"):
                if np.isfinite(rate(impl, U)):
                    print(f"| {impl} / dowhy gcm, U={U:,} | {rate(impl, U) / rate(dw, U):.0f} |")
            print(f"| causal_wm fused all draws / dowhy gcm, U={U:,}, per CPU-second | "
                  f"{rate('causal_wm fused all draws', U, 'cpu_rate') / rate(dw, U, 'cpu_rate'):.0f} |")
    if np.isfinite(rate(dw)):
        print(f"| causal_wm fused all draws (best) / dowhy gcm (best, U={max(dowhy_units):,}) | "
              f"{rate('causal_wm fused all draws') / rate(dw):.0f} |")
    for U in args.effect_units:
        for outcome in ("y", "yb"):
            dw_e = rate(f"dowhy gcm average_causal_effect ({outcome})", U)
            for impl in (f"causal_wm fused effect ({outcome})", f"causal_wm fused effect ({outcome}), XLA loop"):
                if np.isfinite(dw_e) and np.isfinite(rate(impl, U)):
                    print(f"| {impl} / dowhy gcm average_causal_effect, U={U:,} | {rate(impl, U) / dw_e:.0f} |")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s, load average at end {_load()}")


def _check_summary(post, units) -> None:
    """summary_only reduces exactly the draws the all-draws mode returns."""
    from causal_wm import queries

    for engine in ("fused", "generic"):
        full = queries.counterfactual(post, units, {"t": DO_T}, engine=engine)
        summ = queries.counterfactual(post, units, {"t": DO_T}, summary_only=True, prob=0.9, engine=engine)
        for k, v in full.values.items():
            v = np.asarray(v, dtype=float)
            ref = np.stack([v.mean(0), v.std(0), *np.quantile(v, [0.05, 0.95], axis=0)], axis=-1)
            if not np.allclose(summ.summaries[k], ref, rtol=1e-7, atol=1e-9):
                raise AssertionError(f"{engine} summary_only disagrees with the all-draws result on {k}: max |diff| "
                                     f"{np.abs(summ.summaries[k] - ref).max(axis=0)}")


def _check_against(res, par, units) -> None:
    """The peers compute the same numbers: compare causal_wm with NumPy on the continuous nodes."""
    ref = numpy_cf(par, units.iloc[:256], 256, 0)
    for k in ("m", "y"):
        got = res.values[k][:, :256]
        if not np.allclose(got, ref[k], rtol=1e-9, atol=1e-9):
            raise AssertionError(f"causal_wm and NumPy disagree on {k}: max |diff| {np.abs(got - ref[k]).max()}")
    if abs(res.values["yb"][:, :256].mean() - ref["yb"].mean()) > 0.02:
        raise AssertionError("causal_wm and NumPy disagree on P(yb_cf = 1)")


if __name__ == "__main__":
    main()
