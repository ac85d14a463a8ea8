"""Counterfactual throughput of the fused engine on an accelerator (GPU), beside the same machine's CPUs.

The model, data, fit and query are those of ``counterfactual_throughput.py`` (the 6-node SCM,
``do(t=0)`` for U new units crossed with S = 1,000 posterior draws). Where JAX's default device is
an accelerator, the fused engine reduces on it (``causal_wm/fused.py``: ``summary_only`` and effects
as XLA programs over chunks of 2^24 elements, only the summaries copied to the host).

Run on a machine whose JAX sees a GPU (from the repository root, the project importable)::

    python benchmarks/accelerator_throughput.py
    python benchmarks/accelerator_throughput.py --units 10000 --summary-units 100000 --json out.json

A child process with ``JAX_PLATFORMS=cpu`` fits the model once (pickled to ``--posterior``, reused
when it exists), times the CPU cells (the numba loop on all of this machine's cores, DoWhy gcm
where it is installed) and saves a small reference result; this process then times the same
queries on the default device and checks its summaries and effects against the CPU's. Rows (unit-draws per
second, best of at least ``--repeats`` calls, short ones repeated for ``--min-time`` seconds):

* ``causal_wm fused all draws``: ``counterfactual(units, do, engine="fused")``, every draw kept,
  returned as host (NumPy) arrays; the engine computes these on the host's CPU even where a GPU is
  the default device (the draws must land in host memory), and ``..., on the device`` times what
  that rule avoids: XLA's program on the device, each chunk copied to the host;
* ``causal_wm fused summary_only``: per-unit mean, SD and 90% interval, reduced where computed;
* ``causal_wm fused effect (y | yb)``: ``effect(outcome, do={"t": 1}, vs={"t": 0})`` over
  ``--effect-units`` simulated units carrying the fitted draws (reduced on the device);
* ``jax jit hand-written``: ``counterfactual_throughput.make_jax_cf`` (the model written by hand in
  JAX, one call per chunk of ``--chunk`` units, results copied to the host);
* ``device copy``: a jitted copy of a 1 GiB float64 array on the device (bytes read + written),
  and ``host copy`` the same with NumPy, for the bandwidth fractions.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import counterfactual_throughput as CT

CHECK_UNITS = 2000


def _fit_or_load(path: Path, args):
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f)
    import causal_wm as cw

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timing only: a short fit need not pass every check
        post = cw.SCM.from_dict(CT.MODEL).fit(CT.simulate(args.n_fit, args.seed), chains=args.chains,
                                              draws=args.draws, warmup=args.warmup, seed=args.seed)
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as f:
        pickle.dump(post, f)
    tmp.replace(path)
    return post


def _cells(post, args, rows, on_cpu: bool) -> dict:
    """Time this process's cells into ``rows``; returns the draws of the check units."""
    from causal_wm import queries

    jax = __import__("jax")
    where = "cpu" if on_cpu else jax.default_backend()
    S = post.program.n_draws

    def cf(u, **kw):
        return queries.counterfactual(post, u, {"t": CT.DO_T}, engine="fused", **kw)

    def record(impl, U, draws, fn):
        repeats = args.repeats if U * draws <= 2e8 else 1
        t, res = CT.best_time(fn, repeats, args.min_time if repeats > 1 else 0.0)
        rows.append({"implementation": impl, "device": where, "U": U, "draws": draws,
                     "repeats": CT.LAST_REPEATS[0], "seconds": t, "rate": U * draws / t})
        print(f"  [{where}] {impl:<34} U={U:>9,} S={draws:>5} {t:8.3f} s  {U * draws / t:.2e} unit-draws/s",
              flush=True)
        return res

    import causal_wm as cw

    # the check: what the device computes (summaries, effects), for the CPU's numbers to be compared with
    t0 = time.perf_counter()
    check_units = CT.simulate(CHECK_UNITS, args.seed + 5)
    summ = cf(check_units, summary_only=True)
    print(f"  [{where}] first call (compile) {time.perf_counter() - t0:.1f} s", flush=True)
    ref = {f"summary_only {k}": np.asarray(v) for k, v in summ.summaries.items()}
    pop = CT.population(post, cw.SCM.from_dict(CT.MODEL), check_units, args.seed)
    for outcome in ("y", "yb"):
        ref[f"effect {outcome}"] = pop.effect(outcome, do={"t": 1.0}, vs={"t": 0.0}, engine="fused").draws
    for U in args.units:
        units = CT.simulate(U, args.seed + 2)
        record("causal_wm fused all draws", U, S, lambda u=units: cf(u))
        del units
    for U in args.summary_units:
        units = CT.simulate(U, args.seed + 2)
        record("causal_wm fused summary_only", U, S, lambda u=units: cf(u, summary_only=True))
        del units
    for U in args.effect_units:  # the fitted draws over U simulated units (effect() averages over them)
        pop = CT.population(post, cw.SCM.from_dict(CT.MODEL), CT.simulate(U, args.seed + 4), args.seed)
        for outcome in ("y", "yb"):
            def eff(o=outcome, p=pop):
                return p.effect(o, do={"t": 1.0}, vs={"t": 0.0}, engine="fused")

            eff()  # compile
            record(f"causal_wm fused effect ({outcome})", U, S, eff)
        del pop
    if not on_cpu:
        import contextlib

        from causal_wm import fused

        rule = fused._on_the_host
        fused._on_the_host = contextlib.nullcontext  # what the engine's rule avoids: all draws on the device
        try:
            cf(CT.simulate(64, args.seed + 1))
            for U in args.units:
                units = CT.simulate(U, args.seed + 2)
                record("causal_wm fused all draws, on the device", U, S, lambda u=units: cf(u))
        finally:
            fused._on_the_host = rule
        jax_cf = CT.make_jax_cf(CT.extract(post))
        jax_cf(CT.simulate(64, args.seed + 1), args.chunk, args.seed)
        for U in args.units:
            units = CT.simulate(U, args.seed + 2)
            record("jax jit hand-written", U, S, lambda u=units: jax_cf(u, args.chunk, args.seed))
        if where != "cpu":  # (without an accelerator the host's copy, from the child, is the one to use)
            rows.append({"implementation": "device copy", "device": where, "bytes_per_s": _device_copy(jax)})
            d2h = _device_to_host(jax)
            print(f"  [{where}] device-to-host copy of 512 MiB: {d2h / 1e9:.1f} GB/s", flush=True)
            rows.append({"implementation": "device to host", "device": where + "->cpu", "bytes_per_s": d2h})
    else:
        rows.append({"implementation": "host copy", "device": "cpu",
                     "bytes_per_s": CT.bandwidth(1.0)["numba prange copy (all threads)"]})
        try:
            model = CT.dowhy_model(CT.simulate(args.n_fit, args.seed))
        except ImportError:
            print("  [cpu] DoWhy is not installed here: no DoWhy rows", flush=True)
        else:
            CT.dowhy_cf(model, CT.simulate(64, args.seed + 2))
            for U in args.units:
                units = CT.simulate(U, args.seed + 2)
                record("dowhy gcm (1 draw)", U, 1, lambda u=units: CT.dowhy_cf(model, u))
            for U in [u for u in args.effect_units if u <= 200_000]:  # (a second a call at 1M units)
                units = CT.simulate(U, args.seed + 4)
                for outcome in ("y", "yb"):
                    record(f"dowhy gcm average_causal_effect ({outcome})", U, 1,
                           lambda o=outcome, u=units: CT.dowhy_ace(model, o, u))
    return ref


def _device_copy(jax) -> float:
    import jax.numpy as jnp

    with jax.enable_x64(True):
        x = jnp.ones(2**27)  # 1 GiB of float64
        copy = jax.jit(lambda a: a + 0.0)
        copy(x).block_until_ready()
        best = min(_timed(lambda: copy(x).block_until_ready()) for _ in range(10))
    return 2 * x.size * 8 / best


def _device_to_host(jax) -> float:
    """Bytes per second of ``np.asarray`` on a fresh 512 MiB device array (a JAX array keeps its
    host copy once made, so each timing copies a new one)."""
    import jax.numpy as jnp

    with jax.enable_x64(True):
        x = jnp.ones(2**26)
        fresh = jax.jit(lambda a, k: a * k)
        best = np.inf
        for k in range(6):
            y = fresh(x, float(k)).block_until_ready()
            best = min(best, _timed(lambda y=y: np.asarray(y)))
    return x.size * 8 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _agree(ref: dict, got: dict) -> str:
    """How the device's summaries and effects of the check units compare with the CPU's (same seed,
    same counters; only the order of sums and the rounding of exp, log and cos can differ)."""
    lines = []
    for k in ref:
        a, b = np.asarray(ref[k], dtype=float), np.asarray(got[k], dtype=float)
        rel = np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12))
        lines.append(f"{k}: max relative difference {rel:.1e}")
    return "; ".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-fit", type=int, default=2000)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--units", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--summary-units", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--effect-units", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--chunk", type=int, default=16_384, help="units per call of the hand-written JAX kernel")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--posterior", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "cw_accel_post.pkl"))
    ap.add_argument("--json", default=None, help="also write every row to this file")
    ap.add_argument("--cpu-child", default=None, help=argparse.SUPPRESS)  # the child's result file
    args = ap.parse_args(argv)

    if args.cpu_child:  # the child: JAX on the CPU only
        post = _fit_or_load(Path(args.posterior), args)
        rows: list = []
        ref = _cells(post, args, rows, on_cpu=True)
        np.savez(args.cpu_child + ".npz", **ref)
        Path(args.cpu_child).write_text(json.dumps(rows))
        return

    t_start = time.perf_counter()
    child = Path(args.posterior).with_suffix(".cpu.json")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                    "--cpu-child", str(child)], env=env, check=True)
    rows = json.loads(child.read_text())
    ref = dict(np.load(str(child) + ".npz"))

    import jax

    from causal_wm import fused

    print(f"# accelerator throughput: JAX {jax.__version__}, default backend {jax.default_backend()}, "
          f"devices {jax.devices()}; fused engine on the host: {fused.on_host()}", flush=True)
    post = _fit_or_load(Path(args.posterior), args)
    got = _cells(post, args, rows, on_cpu=False)
    agree = _agree(ref, got)
    print(f"\ncheck ({CHECK_UNITS:,} units x {post.program.n_draws} draws, this process against the CPU-only "
          f"child): {agree}")

    def rate(impl, U, device):
        c = [r["rate"] for r in rows if r["implementation"] == impl and r.get("U") == U and r["device"] == device]
        return max(c) if c else np.nan

    bw = {r["device"]: r["bytes_per_s"] for r in rows if "bytes_per_s" in r}
    dev = jax.default_backend()
    print("\n| implementation | device | units U | draws S | best of | seconds | unit-draws/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "rate" in r:
            print(f"| {r['implementation']} | {r['device']} | {r['U']:,} | {r['draws']} | {r['repeats']} | "
                  f"{r['seconds']:.3f} | {r['rate']:.2e} |")
    print("\n| ratio | value |\n|---|---:|")
    for U in sorted(set(args.units) | set(args.summary_units) | set(args.effect_units)):
        for impl in ("causal_wm fused all draws", "causal_wm fused summary_only", "causal_wm fused effect (y)",
                     "causal_wm fused effect (yb)"):
            on_dev, on_cpu = rate(impl, U, dev), rate(impl, U, "cpu")
            if np.isfinite(on_dev) and np.isfinite(on_cpu):
                print(f"| {impl}, {dev} machine / JAX on the cpu only, U={U:,} | {on_dev / on_cpu:.1f} |")
        hand = rate("jax jit hand-written", U, dev)
        if np.isfinite(hand):
            print(f"| causal_wm fused all draws / jax jit hand-written, both on {dev}, U={U:,} | "
                  f"{rate('causal_wm fused all draws', U, dev) / hand:.2f} |")
        for outcome in ("y", "yb"):
            ace = rate(f"dowhy gcm average_causal_effect ({outcome})", U, "cpu")
            if np.isfinite(ace):
                for device in dict.fromkeys(("cpu", dev)):
                    r = rate(f"causal_wm fused effect ({outcome})", U, device)
                    if np.isfinite(r):
                        print(f"| causal_wm fused effect ({outcome}) ({device} default) / dowhy gcm "
                              f"average_causal_effect (this machine's cpu), U={U:,} | {r / ace:.0f} |")
        dw = rate("dowhy gcm (1 draw)", U, "cpu")
        if np.isfinite(dw):
            for impl in ("causal_wm fused all draws", "causal_wm fused summary_only"):
                if np.isfinite(rate(impl, U, dev)):
                    print(f"| {impl} ({dev} machine) / dowhy gcm (this machine's cpu), U={U:,} | "
                          f"{rate(impl, U, dev) / dw:.0f} |")
    host_bw, d2h = bw.get("cpu"), bw.get(f"{dev}->cpu")
    for U in args.units:  # 4 float64 outputs written per unit-draw
        for device in dict.fromkeys(("cpu", dev)):
            r = rate("causal_wm fused all draws", U, device)
            if np.isfinite(r) and host_bw:
                print(f"| causal_wm fused all draws ({device} default), U={U:,}: fraction of the host's copy "
                      f"bandwidth ({host_bw / 1e9:.0f} GB/s) | {100 * r * 32 / host_bw:.1f}% |")
        r = rate("causal_wm fused all draws, on the device", U, dev)
        if np.isfinite(r) and d2h:
            print(f"| causal_wm fused all draws, on the device, U={U:,}: fraction of the device-to-host copy "
                  f"({d2h / 1e9:.1f} GB/s) | {100 * r * 32 / d2h:.1f}% |")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "check": agree}, indent=1))


if __name__ == "__main__":
    main()
