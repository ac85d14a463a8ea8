"""Which way to specialise the query kernel to a model: measured, on the throughput benchmark's SCM.

The generic kernel (``causal_wm/kernels.py``) interprets the model per (draw, unit). Three ways to
specialise it were tried on the 6-node model of ``counterfactual_throughput.py`` (do(t=0) for U
units x S = 1,000 draws, every draw kept):

* ``jax traced, numba loop`` (the engine shipped, ``causal_wm/fused.py`` + ``causal_wm/looped.py``):
  the node walk runs in Python while JAX traces it; what varies by draw only or by unit only is
  computed by XLA, and what varies by both becomes one numba loop generated from the trace;
* ``jax traced, XLA loop`` (the same trace, compiled by XLA into its own loop over chunks: the
  shipped engine's path for programs the numba loop does not cover);
* ``numba closures``: one ``@njit`` closure per node (its parents, columns and constants frozen
  into the closure), composed node by node into one ``prange`` loop. Written below for the
  families and sources this query needs (normal and bernoulli, DATA and ABDUCT, a hard value):
  enough to time it, not an engine;
* for reference, the generic kernel and the hand-fused loop of ``counterfactual_throughput.py``.

"first call" is the wall time of the first query of a new structure (tracing and compiling,
or numba's compile; the generic kernel loads from numba's cache); "compile" is that minus one
steady call. Parameters are set by hand (``causal_wm.testing.posterior_from_params``): no fit.

Run from the repository root with the project's environment::

    python benchmarks/engine_choice.py                 # U = 20,000; about a minute
    python benchmarks/engine_choice.py --units 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parent))

from counterfactual_throughput import DO_T, MODEL, extract, numba_cf, simulate

import causal_wm as cw
from causal_wm import fused, queries
from causal_wm import kernels as K
from causal_wm.testing import parameter_shapes, posterior_from_params
from causal_wm.traced import nodes_of


def posterior(seed: int = 0):
    """The benchmark SCM with parameters drawn by NumPy (1,000 draws)."""
    df = simulate(2000, seed)
    scm = cw.SCM.from_dict(MODEL)
    rng = np.random.default_rng(seed)
    params = {site: rng.uniform(0.5, 1.5, (2, 500, *shape)) if site.endswith("sigma")
              else rng.normal(0.0, 0.5, (2, 500, *shape))
              for site, shape in parameter_shapes(scm, df).items()}
    return posterior_from_params(scm, df, params, seed=seed)


# --------------------------------------------------------------------------- numba closures
def _linear(node, pf):
    """A closure computing the node's linear predictor from values ``v`` at draw ``s``."""
    p_int, p_b = node.p_int, node.p_b
    parents = tuple(int(c[0][0]) for c in node.columns)  # main effects only (enough here)
    centers = tuple(float(pf[p, 4]) for p in parents)
    scales = tuple(float(pf[p, 5]) for p in parents)
    n = len(parents)

    @njit(inline="always")
    def lin(s, v, theta):
        acc = theta[s, p_int]
        for t in range(n):
            acc += theta[s, p_b + t] * ((v[parents[t]] - centers[t]) / scales[t])
        return acc

    return lin


def _step(node, src, hard, pf):
    k = node.k
    if hard is not None:
        @njit(inline="always")
        def f(s, u, key, vals, fact, theta, data):
            vals[k] = hard
        return f
    if src == K.DATA:
        @njit(inline="always")
        def f(s, u, key, vals, fact, theta, data):
            vals[k] = data[u, k]
        return f
    lin = _linear(node, pf)
    parents = node.parents
    n_par = len(parents)
    if node.family == K.BERNOULLI:
        @njit(inline="always")
        def f(s, u, key, vals, fact, theta, data):
            changed = False
            for i in range(n_par):
                if vals[parents[i]] != fact[parents[i]]:
                    changed = True
            if not changed:
                vals[k] = fact[k]
                return
            q_f = 1.0 - K.sigmoid(lin(s, fact, theta))
            w = K.uniform(key, s, u, k, 0)
            uu = q_f + w * (1.0 - q_f) if fact[k] > 0.5 else w * q_f
            vals[k] = 1.0 if uu > 1.0 - K.sigmoid(lin(s, vals, theta)) else 0.0
        return f

    @njit(inline="always")
    def f(s, u, key, vals, fact, theta, data):
        changed = False
        for i in range(n_par):
            if vals[parents[i]] != fact[parents[i]]:
                changed = True
        vals[k] = fact[k] + (lin(s, vals, theta) - lin(s, fact, theta)) if changed else fact[k]
    return f


def _seq(a, b):
    @njit(inline="always")
    def f(s, u, key, vals, fact, theta, data):
        a(s, u, key, vals, fact, theta, data)
        b(s, u, key, vals, fact, theta, data)
    return f


def numba_closures(post, do_node: str, value: float):
    """A counterfactual kernel for ``do(do_node = value)`` composed from per-node closures."""
    prog = post.program
    nodes = nodes_of(prog.arrays)
    pf = prog.arrays[3]
    down = post.scm.descendants({do_node})
    k_do = prog.index(do_node)
    factual = _step(nodes[0], K.DATA, None, pf)
    counter = _step(nodes[0], K.DATA, None, pf)
    for node in nodes[1:]:
        factual = _seq(factual, _step(node, K.DATA, None, pf))
    for node in nodes[1:]:
        src = K.ABDUCT if prog.names[node.k] in down else K.DATA
        counter = _seq(counter, _step(node, src, value if node.k == k_do else None, pf))
    outputs = tuple(prog.index(n) for n in prog.names if n in down or n == do_node)
    trans = tuple((float(pf[k, 0]), float(pf[k, 1]) if nodes[k].trans == K.LINEAR else 1.0,
                   nodes[k].trans == K.LINEAR) for k in outputs)
    n_out, n_nodes = len(outputs), len(nodes)

    @njit(parallel=True)
    def kernel(theta, data, key, out):
        for j in prange(data.shape[0]):
            vals = np.empty(n_nodes)
            fact = np.empty(n_nodes)
            for s in range(theta.shape[0]):
                factual(s, j, key, fact, fact, theta, data)
                counter(s, j, key, vals, fact, theta, data)
                for o in range(n_out):
                    c, sc, lin = trans[o]
                    out[o, s, j] = c + sc * vals[outputs[o]] if lin else vals[outputs[o]]

    def run(units):
        data = np.zeros((len(units), n_nodes))
        for name in prog.names:
            sc = post.plan.scales[name]
            x = units[name].to_numpy(dtype=float)
            data[:, prog.index(name)] = (x - sc.center) / sc.scale if nodes[prog.index(name)].trans == K.LINEAR else x
        out = np.empty((n_out, prog.n_draws, len(units)))
        kernel(prog.theta, data, 12345, out)
        return out

    return run


def _time(fn, repeats):
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"# engine choice ({os.cpu_count()} cpus, load average at start {os.getloadavg()[0]:.2f})\n")
    post = posterior()
    S, U = post.program.n_draws, args.units
    units = simulate(U, 2)
    small = units.iloc[:64]
    rows = []

    def measure(name, make, call):
        t0 = time.perf_counter()
        run = make()
        call(run, small)  # compile (numba, XLA) or load from numba's cache
        first = time.perf_counter() - t0
        steady_small = _time(lambda: call(run, small), args.repeats)
        t = _time(lambda: call(run, units), args.repeats)
        rows.append((name, first, max(0.0, first - steady_small), t, S * U / t))
        print(f"  {name}: first call {first:.2f} s, {S * U / t:.2e} unit-draws/s", flush=True)

    measure("jax traced, numba loop (causal_wm fused)", lambda: None,
            lambda _, u: queries.counterfactual(post, u, {"t": DO_T}, engine="fused"))

    def xla(_, u):
        fused.USE_LOOP = False
        try:
            return queries.counterfactual(post, u, {"t": DO_T}, engine="fused")
        finally:
            fused.USE_LOOP = True

    measure("jax traced, XLA loop", lambda: None, xla)
    measure("numba closures (prototype)", lambda: numba_closures(post, "t", DO_T), lambda run, u: run(u))
    measure("generic kernel (interpreter)", lambda: None,
            lambda _, u: queries.counterfactual(post, u, {"t": DO_T}, engine="generic"))
    par = extract(post)
    measure("hand-fused numba (reference)", lambda: None, lambda _, u: numba_cf(par, u, 0))
    # the fused engine and the closures compute the same continuous values
    ref = queries.counterfactual(post, units.iloc[:256], {"t": DO_T}, engine="fused")
    clo = numba_closures(post, "t", DO_T)(units.iloc[:256])
    for i, name in enumerate(("t", "m", "y")):
        if not np.allclose(ref[name], clo[i], rtol=1e-9, atol=1e-9):
            raise AssertionError(f"closures and the fused engine disagree on {name}")
    print("\n| engine | first call (s) | compile (s) | U x S | seconds | unit-draws/s |\n|---|---:|---:|---|---:|---:|")
    for name, first, comp, t, rate in rows:
        print(f"| {name} | {first:.2f} | {comp:.2f} | {U:,} x {S:,} | {t:.3f} | {rate:.2e} |")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
