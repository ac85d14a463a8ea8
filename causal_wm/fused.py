"""Model-specialised fused kernels: the default engine for counterfactual and effect queries.

The generic kernels (:mod:`causal_wm.kernels`) interpret a model's flat layout for every
(draw, unit): per element they branch on source, family and intervention kind, and walk parent
and term lists. That dispatch, not arithmetic or memory, bounded them (docs/performance.md).
Here the walk over the nodes runs once, in Python, while JAX traces it (:mod:`causal_wm.traced`):
the traced program is straight-line code specialised to the model and the query, with abduction,
action and prediction in one pass. It runs as a numba loop generated from the trace
(:mod:`causal_wm.looped`: all-draws counterfactuals, ``summary_only`` and effects, where the loop
covers the program), or else as XLA's own loop over each chunk of (draws x units).

* **Same semantics.** Every step mirrors the generic kernel (sources DATA/LATENT/FRESH/ABDUCT/OTHER,
  the couplings, interventions, the consistency rule) and draws the same counter-based random
  numbers, so the engines agree up to the rounding of transcendental functions.
* **Compiled once per structure.** The cache key is the model layout, the sources, intervention
  kinds, outputs and chunk shape; parameters, data and intervention values are arguments.
* **Bounded memory.** Units (and draws) are processed in chunks on one thread per core; the
  all-draws mode writes each chunk into the result, ``summary_only`` reduces each chunk to
  per-unit mean, SD and quantiles as it is produced, and ``effect`` to per-draw sums.
* **Where it runs.** On JAX's default device. Where that is an accelerator (a GPU), reductions
  (``summary_only``, effects) run there in large chunks and only their results cross to the host,
  while all-draws counterfactuals, whose every draw must land in host memory, run on the host's
  CPU (measured on an H200 machine with 16 cores: the host's numba loop wrote 4.2e8 unit-draws/s,
  the GPU's copies to the host 3.7e7; docs/performance.md).
* **64-bit without global state.** Computation runs inside ``jax.enable_x64(True)``; no global JAX
  setting is changed.

Simulation of new units (one draw per unit) and queries whose factual world is not read from
data or latent draws run on the generic kernel.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from causal_wm import kernels as K
from causal_wm import pool
from causal_wm.errors import QueryError
from causal_wm.jaxhost import start_jax

log = logging.getLogger(__name__)

ENGINES = ("auto", "fused", "generic")
# (draws x units) elements per compiled call: large enough that dispatch and the per-chunk Python
# work are noise, small enough that a chunk's outputs (8 MiB for 4 nodes) stay in cache. Measured
# on the throughput benchmark's model (chunk= argument, load average 2): 2^18 ran 1.15x 2^16 in
# the all-draws mode and 1.05x in summary_only; 2^14 ran 0.65x.
CHUNK_ELEMENTS = 1 << 18
# "auto" compiles only for queries this large (draws x units): compiling costs 0.2-1.5 s per query
# structure with XLA (a few seconds with count families), 1-2 s for a numba loop the first time
# (then read from disk; benchmarks/engine_choice.py), in which the generic kernel (1e6-3e6
# unit-draws/s on two cores) answers smaller queries.
AUTO_MIN_WORK = 1 << 21
# The all-draws counterfactual runs as a numba loop generated from the traced program
# (causal_wm.looped) where that covers the program; False runs XLA's loop (tests compare the two).
USE_LOOP = True
# Units per call of that loop; every call covers every draw, so its threads split the draws. The
# value is 8 mod 512: the per-unit tables' rows (8 bytes a unit) then start one cache line apart
# in the cache's sets; at a multiple of 4096 bytes every row competed for one set (2x slower).
LOOP_UNITS = 4104
# summary_only: units per call, so that a call's draws (outputs x draws x units, reused) stay in cache
LOOP_SUMMARY_UNITS = 520
# On an accelerator (JAX's default device is not the CPU) the numba loop, which runs on the host, is
# not used: XLA's program runs on the device, in chunks this large (a GPU needs millions of elements
# per call to be busy; 2^24 elements of 4 float64 outputs are 512 MiB of device memory), from this
# many host threads (two: one chunk computes while the other's result is copied to the host).
# summary_only and effects reduce on the device, so that only summaries cross to the host.
ACCEL_CHUNK_ELEMENTS = 1 << 24
ACCEL_THREADS = 2


def _jax():
    # started as the NumPyro backend starts it, so that a later fit can run its chains in parallel
    return start_jax()


@functools.cache
def available() -> bool:
    """Whether JAX can be imported (the fused engine needs it; otherwise the generic one runs)."""
    try:
        _jax()
        import causal_wm.traced  # noqa: F401
    except ImportError:
        return False
    return True


def use_fused(engine: str | None, covered: bool, what: str, work: int, walks_counts: bool = False) -> bool:
    """Resolve ``engine`` ("auto", "fused" or "generic") for a query of ``work`` draws x units that
    the fused engine does or does not cover.

    "auto" takes the fused engine for queries of at least :data:`AUTO_MIN_WORK` draws x units:
    below that the generic kernel answers before the fused one would have compiled. On the CPU it
    also leaves to the generic kernel queries that walk count CDFs (``walks_counts``: counts abducted
    or drawn afresh): XLA runs those walks in lockstep, every element of a chunk stepping as often as
    the longest walk in it, so one large mean made a query hundreds of times slower (measured: equal
    speeds at typical means, 150x slower with means in the thousands; docs/performance.md).

    Examples
    --------
    >>> use_fused("generic", True, "counterfactual", 10**9)
    False
    >>> use_fused("auto", True, "counterfactual", 100)
    False
    >>> use_fused("auto", True, "counterfactual", 10**9, walks_counts=True) == (not on_host())
    True
    """
    engine = "auto" if engine is None else engine
    if engine not in ENGINES:
        raise QueryError(f"engine must be one of {list(ENGINES)}, got {engine!r}.")
    if engine == "generic" or (engine == "auto" and (work < AUTO_MIN_WORK or (walks_counts and on_host()))):
        return False
    ok = covered and available()
    if engine == "fused" and not ok:
        raise QueryError(
            f"engine='fused' does not cover this {what} query (it needs JAX, and covers units crossed "
            "with draws whose factual world comes from data or posterior draws); use engine='auto' "
            "or 'generic'."
        )
    return ok


def covers_crossed(src_f) -> bool:
    """Whether a units-crossed-with-draws query with factual sources ``src_f`` is covered."""
    return bool(np.all((src_f == K.DATA) | (src_f == K.LATENT)))


def _threads() -> int:
    from numba import get_num_threads

    return max(1, min(get_num_threads(), os.cpu_count() or 1))


def on_host() -> bool:
    """Whether JAX computes on the CPU here (its default device, as ``jax.default_device`` or
    ``JAX_PLATFORMS`` set it): the numba loop and CPU-sized chunks are used only then."""
    jax = _jax()
    dev = jax.config.jax_default_device
    if dev is None:
        return jax.default_backend() == "cpu"
    return (dev if isinstance(dev, str) else dev.platform) == "cpu"


@contextlib.contextmanager
def _on_the_host():
    """JAX's default device set to the CPU in this thread (nothing changes where it already is)."""
    if on_host():
        yield
        return
    jax = _jax()
    with jax.default_device(jax.devices("cpu")[0]):
        yield


def _chunk_elements() -> int:
    return CHUNK_ELEMENTS if on_host() else ACCEL_CHUNK_ELEMENTS


def _workers() -> int:
    return _threads() if on_host() else ACCEL_THREADS


def _world(src, ivk, ivv):
    from causal_wm.traced import World

    tables = []
    for k in range(len(src)):
        if ivk[k] == K.TABLE:
            q = int(ivv[k])  # a discrete policy's table is stored as -(index + 1)
            tables.append((-q - 1, True) if q < 0 else (q, False))
        else:
            tables.append(None)
    return World(tuple(int(x) for x in src), tuple(int(x) for x in ivk), tuple(tables))


@functools.lru_cache(maxsize=64)
def _crossed(nodes, needed, factual, counter, outputs, units_first):
    from causal_wm.traced import crossed_fn

    return crossed_fn(nodes, needed, factual, counter, outputs, units_first)


@functools.lru_cache(maxsize=64)
def _crossed_summary(nodes, needed, factual, counter, outputs, units_first, lo_q, hi_q):
    """:func:`_crossed` followed by each unit's (mean, SD, lo_q, hi_q quantiles) over its draws, as
    one XLA program returning (units, outputs, 4): on an accelerator only the summaries cross to the
    host. The same numbers as ``kernels.row_summary`` (numpy's linear quantiles; a constant row
    summarised exactly, a row with NaN as NaN), up to the order of the sums."""
    import jax.numpy as jnp

    jax = _jax()
    fn = _crossed(nodes, needed, factual, counter, outputs, units_first)

    def summary(*args):
        v = fn(*args)  # (outputs, units, draws)
        lo, hi = jnp.min(v, axis=-1), jnp.max(v, axis=-1)
        m = jnp.mean(v, axis=-1)
        sd = jnp.sqrt(jnp.mean((v - m[..., None]) ** 2, axis=-1))
        q = jnp.quantile(v, jnp.array([lo_q, hi_q]), axis=-1)
        const = lo == hi
        nan = jnp.isnan(m)
        res = [jnp.where(const, lo, m), jnp.where(const, 0.0, sd),
               jnp.where(const, lo, jnp.where(nan, jnp.nan, q[0])), jnp.where(const, lo, jnp.where(nan, jnp.nan, q[1]))]
        return jnp.transpose(jnp.stack(res, axis=-1), (1, 0, 2))

    return jax.jit(summary)


def _crossed_terms(nodes, needed, factual, counter, outputs):
    from causal_wm.traced import crossed_fn

    return crossed_fn(nodes, needed, factual, counter, outputs, False, stacked=False)


def _effect_terms(nodes, needed, world_a, world_b, outcome, level):
    from causal_wm.traced import effect_terms_fn

    return effect_terms_fn(nodes, needed, world_a, world_b, outcome, level)


@functools.lru_cache(maxsize=64)
def _looped(make, static, shapes, n_draws, n_units, sums=False):
    """The traced function ``make(*static)`` as a numba loop (:mod:`causal_wm.looped`) traced at
    these shapes (``sums``: summed over units per draw), or None where the loop does not cover the
    traced program (XLA's loop then runs)."""
    from causal_wm import looped

    jax = _jax()
    fn = make(*static)
    specs = [None if sh is None else jax.ShapeDtypeStruct(*sh) for sh in shapes]
    try:
        with jax.enable_x64(True):
            return looped.Loop(jax.make_jaxpr(fn)(*specs), n_draws, n_units, sums=sums)
    except looped.Unsupported as exc:
        log.debug("numba loop not used (%s); XLA's loop runs the query", exc)
        return None


def _loop_sizes(S: int, others, units: int) -> tuple[int, int]:
    """(draws, units) to trace the loop at, at least ``S`` and about ``units``: no other dimension
    of the inputs equals either, so that each traced value's shape says whether it varies by draw,
    by unit, by both or neither.

    Examples
    --------
    >>> _loop_sizes(1000, [21, 6, 1000], 4104)
    (1001, 4104)
    """
    taken = set(others) | {0, 1}
    u = next(n for n in range(units, 1 << 30, 512) if n not in taken)
    s = next(n for n in range(max(S, 2), 1 << 30) if n not in taken and n != u)
    return s, u


def _arg_specs(inp, n_draws, ivu, units_per_call, ivv_b=None):
    """(draws, units) to trace a numba loop at, and the (shape, dtype) of each traced argument by
    name (None for an input the query does not have)."""
    P, K_, W = inp.theta.shape[1], inp.data.shape[1], ivu.shape[1]
    others = [P, K_, W, *np.shape(inp.ivv), *np.shape(inp.tables), *np.shape(inp.pf), *inp.lat_cols()]
    others += [] if ivv_b is None else list(np.shape(ivv_b))
    others += [] if inp.orig is None else [inp.orig.shape[1]]
    sp, up = _loop_sizes(n_draws, others, units_per_call)
    f64, u64 = np.float64, np.uint64
    spec = {"theta": ((sp, P), f64), "s": ((sp,), u64), "u": ((up,), u64), "data": ((up, K_), f64),
            "orig": None if inp.orig is None else ((up, inp.orig.shape[1]), f64),
            "lat": (inp.lat_shape(sp, up), f64), "ivv": (tuple(np.shape(inp.ivv)), f64), "ivu": ((up, W), f64),
            "ivv_b": None if ivv_b is None else (tuple(np.shape(ivv_b)), f64),
            "tables": (tuple(np.shape(inp.tables)), f64), "pf": (tuple(np.shape(inp.pf)), f64), "key": ((), u64)}
    return sp, up, spec


def _loop_plan(nodes, needed, factual, counter, outputs, inp, n_draws, ivu, units_per_call):
    """(loop, draws, units) per call of the numba loop for this query, or None where it does not
    cover the query."""
    if not USE_LOOP or not on_host():
        return None
    sp, up, spec = _arg_specs(inp, n_draws, ivu, units_per_call)
    names = ("theta", "s", "u", "data", "orig", "lat", "ivv", "ivu", "tables", "pf", "key")  # crossed_fn's
    loop = _looped(_crossed_terms, (nodes, needed, factual, counter, outputs), tuple(spec[n] for n in names),
                   sp, up)
    return None if loop is None else (loop, sp, up)


def _effect_loop_plan(static, inp, n_draws, ivu, ivv_b):
    """(loop, draws, units) per call of the numba loop that sums an effect's two worlds over the
    units per draw, or None where it does not cover the query."""
    if not USE_LOOP or not on_host():
        return None
    sp, up, spec = _arg_specs(inp, n_draws, ivu, LOOP_UNITS, ivv_b)
    names = ("theta", "s", "u", "data", "lat", "ivv", "ivu", "ivv_b", "ivu", "tables", "pf", "key")  # effect_terms_fn's
    loop = _looped(_effect_terms, static, tuple(spec[n] for n in names), sp, up, True)
    return None if loop is None else (loop, sp, up)


def _loop_run(plan, inp, draws, units, ivu, target, done=None) -> None:
    """Run the loop over ``units`` in calls of the plan's size: each call writes the draws of its
    units into ``target(u0)`` = (array, first column); ``done(u0, n)`` follows each call."""
    loop, sp, up = plan
    jax = _jax()
    d_idx = _padded(draws, 0, sp)[0]
    th, s = inp.draws(d_idx)
    with jax.enable_x64(True):
        for u0 in range(0, len(units), up):
            u_idx, nu = _padded(units, u0, up)
            u, dat, org, iu = inp.units(u_idx, ivu)
            arr, col = target(u0)
            loop(arr, col, nu, th, s, u, dat, org, inp.latent_columns_first(d_idx, u_idx, nu), inp.ivv, iu,
                 inp.tables, inp.pf, inp.key, threads=_threads())
            if done is not None:
                done(u0, nu)


@functools.lru_cache(maxsize=64)
def _effect(nodes, needed, world_a, world_b, outcome, level):
    from causal_wm.traced import effect_fn

    return effect_fn(nodes, needed, world_a, world_b, outcome, level)


def _run(tasks, work):
    """``work`` on every task: the first here (it compiles), the rest on one thread per core (or
    :data:`ACCEL_THREADS` on an accelerator), each on this thread's default device."""
    jax = _jax()
    device = jax.config.jax_default_device  # a thread's own setting: passed on to the workers

    def call(t):
        with jax.enable_x64(True), jax.default_device(device):
            return work(t)

    first = call(tasks[0])
    n = min(_workers(), len(tasks) - 1)
    if n <= 1:
        return [first] + [call(t) for t in tasks[1:]]
    with ThreadPoolExecutor(n) as ex:
        return [first, *ex.map(call, tasks[1:])]


def _padded(idx, lo, size):
    """``idx[lo:lo+size]``, padded to ``size`` by repeating its last entry (one compiled shape)."""
    part = idx[lo:lo + size]
    n = len(part)
    if n < size:
        part = np.concatenate([part, np.full(size - n, part[-1], dtype=part.dtype)])
    return part, n


class _Inputs:
    """A query's arrays, sliced per chunk; what every chunk shares is put on the device once."""

    def __init__(self, arrays, theta, data, orig, lat, uses_lat, ivv, tables, key):
        jax = _jax()
        self.theta, self.data, self.orig, self.lat, self.uses_lat = theta, data, orig, lat, uses_lat
        self._draws: dict = {}
        self._lat_t = None
        with jax.enable_x64(True):
            put = jax.device_put
            self.ivv = put(np.asarray(ivv, dtype=np.float64))
            self.tables = put(np.asarray(tables, dtype=np.float64))
            self.pf = put(np.asarray(arrays[3], dtype=np.float64))
            self.key = put(np.uint64(key))

    def draws(self, d_idx):
        """(theta rows, draw counters) of a chunk of draws (cached: chunks repeat across units)."""
        tag = (int(d_idx[0]), len(d_idx), int(d_idx[-1]))
        if tag not in self._draws:
            jax = _jax()
            with jax.enable_x64(True):
                self._draws[tag] = (jax.device_put(np.ascontiguousarray(self.theta[d_idx])),
                                    jax.device_put(d_idx.astype(np.uint64)))
        return self._draws[tag]

    def units(self, u_idx, ivu):
        """(unit counters, data rows, original rows, per-unit intervention values) of a chunk."""
        iu = ivu[u_idx] if ivu.shape[0] > 1 else np.zeros((len(u_idx), ivu.shape[1]))
        org = self.orig[u_idx] if self.orig is not None else None
        return u_idx.astype(np.uint64), self.data[u_idx], org, iu

    def lat_cols(self) -> list[int]:
        """The latent draws' number of columns, where the query reads them (a dimension the loop's
        traced shapes must not share)."""
        return [self.lat.shape[2]] if self.uses_lat else []

    def lat_shape(self, n_draws, n_units) -> tuple[int, ...]:
        return (n_draws, n_units, self.lat.shape[2]) if self.uses_lat else (1, 1, 1)

    def latent_columns_first(self, d_idx, u_idx, nu):
        """The latent draws of ``d_idx`` x ``u_idx`` as (columns, draws, units), as the numba loop
        reads them (a placeholder where the query does not read them). The draws are transposed once
        per query, then a chunk whose ``nu`` real units are consecutive is a slice of them."""
        if not self.uses_lat:
            return np.zeros((1, 1, 1))
        if self._lat_t is None:
            self._lat_t = np.ascontiguousarray(self.lat.transpose(2, 0, 1))
        lo = int(u_idx[0])
        if np.array_equal(u_idx[:nu], np.arange(lo, lo + nu)):
            part = self._lat_t[:, :, lo:lo + nu]
            if nu < len(u_idx):  # the padding repeats the last unit
                part = np.concatenate([part, np.repeat(part[:, :, -1:], len(u_idx) - nu, axis=2)], axis=2)
        else:
            part = np.take(self._lat_t, u_idx, axis=2)
        return np.take(part, d_idx, axis=1)

    def latent(self, d_idx, u_idx, units_first):
        if not self.uses_lat:
            return np.zeros((1, 1, 1))
        la = self.lat[np.ix_(d_idx, u_idx)]
        return np.ascontiguousarray(la.transpose(1, 0, 2)) if units_first else la


def _static(arrays, needed, outputs=()):
    from causal_wm.traced import nodes_of

    return nodes_of(arrays), tuple(bool(x) for x in needed), tuple(int(x) for x in outputs)


def _uses_lat(*srcs) -> bool:
    return any(bool(np.any(s == K.LATENT)) for s in srcs)


def counterfactual_draws(arrays, theta, data, orig, lat, units, draws, key, src_f, src_c, ivk, ivv, ivu,
                         tables, needed, outputs, chunk=None) -> np.ndarray:
    """Every draw of every output: what ``kernels.units_kernel`` computes for units crossed with
    draws, returned as (outputs, draws, units) so that each node's (draws, units) block is
    contiguous. ``chunk`` = (draws, units) per compiled call overrides the default tiling.
    Computed on the host's CPU, where the result lives (see the module's notes)."""
    with _on_the_host():
        return _counterfactual_draws(arrays, theta, data, orig, lat, units, draws, key, src_f, src_c, ivk, ivv,
                                     ivu, tables, needed, outputs, chunk)


def _counterfactual_draws(arrays, theta, data, orig, lat, units, draws, key, src_f, src_c, ivk, ivv, ivu,
                          tables, needed, outputs, chunk):
    nodes, needed, outputs = _static(arrays, needed, outputs)
    factual, counter = _world(src_f, np.zeros_like(ivk), ivv), _world(src_c, ivk, ivv)
    S, U = len(draws), len(units)
    inp = _Inputs(arrays, theta, data, orig, lat, _uses_lat(src_f, src_c), ivv, tables, key)
    out = pool.empty((len(outputs), S, U))  # pages of an earlier, dropped result where one fits
    plan = None if chunk else _loop_plan(nodes, needed, factual, counter, outputs, inp, S, ivu, LOOP_UNITS)
    if plan is not None:  # every draw of a call's units written straight into the result
        _loop_run(plan, inp, draws, units, ivu, lambda u0: (out, u0))
        return out
    fn = _crossed(nodes, needed, factual, counter, outputs, False)
    cs, cu = chunk or _tile(S, U, _chunk_elements())

    def work(task):
        d0, u0 = task
        d_idx, nd = _padded(draws, d0, cs)
        u_idx, nu = _padded(units, u0, cu)
        th, s = inp.draws(d_idx)
        u, dat, org, iu = inp.units(u_idx, ivu)
        res = fn(th, s, u, dat, org, inp.latent(d_idx, u_idx, False), inp.ivv, iu, inp.tables, inp.pf, inp.key)
        out[:, d0:d0 + nd, u0:u0 + nu] = np.asarray(res)[:, :nd, :nu]

    _run([(d0, u0) for u0 in range(0, U, cu) for d0 in range(0, S, cs)], work)
    return out


def counterfactual_summary(arrays, theta, data, orig, lat, units, draws, key, src_f, src_c, ivk, ivv, ivu,
                           tables, needed, outputs, lo_q, hi_q, chunk=None) -> np.ndarray:
    """Per unit and output, (mean, SD, lo_q quantile, hi_q quantile) over the draws: what
    ``kernels.units_summary_kernel`` computes, each chunk reduced as soon as it is produced
    (memory O(units + chunk)). ``chunk`` = units per compiled call."""
    nodes, needed, outputs = _static(arrays, needed, outputs)
    factual, counter = _world(src_f, np.zeros_like(ivk), ivv), _world(src_c, ivk, ivv)
    S, U = len(draws), len(units)
    inp = _Inputs(arrays, theta, data, orig, lat, _uses_lat(src_f, src_c), ivv, tables, key)
    out = np.empty((U, len(outputs), 4))
    plan = None if chunk else _loop_plan(nodes, needed, factual, counter, outputs, inp, S, ivu, LOOP_SUMMARY_UNITS)
    if plan is not None:  # a call's draws into one reused buffer, summarised per unit while it is warm
        buf = np.empty((len(outputs), S, plan[2]))

        def summarise(u0, nu):
            split(nu, _threads(), lambda a, b: K.summarise_cols(buf, a, b, lo_q, hi_q, out[u0 + a:u0 + b]))

        from causal_wm.looped import split

        _loop_run(plan, inp, draws, units, ivu, lambda u0: (buf, 0), summarise)
        return out
    host = on_host()
    fn = (_crossed if host else _crossed_summary)(nodes, needed, factual, counter, outputs, True,
                                                  *(() if host else (float(lo_q), float(hi_q))))
    cu = chunk or max(1, min(U, _chunk_elements() // S))
    th, s = inp.draws(draws)

    def work(u0):
        u_idx, nu = _padded(units, u0, cu)
        u, dat, org, iu = inp.units(u_idx, ivu)
        res = fn(th, s, u, dat, org, inp.latent(draws, u_idx, True), inp.ivv, iu, inp.tables, inp.pf, inp.key)
        if host:
            K.summarise_rows(np.asarray(res), nu, lo_q, hi_q, out[u0:u0 + nu])
        else:
            out[u0:u0 + nu] = np.asarray(res)[:nu]

    _run(list(range(0, U, cu)), work)
    return out


def effect(arrays, theta, data, lat, units, key, src_a, ivk_a, ivv_a, ivu_a, src_b, ivk_b, ivv_b, ivu_b, tables,
           needed, outcome, level, chunk=None) -> np.ndarray:
    """Per draw, the mean over ``units`` of E[outcome] under world a and world b: what
    ``kernels.effect_kernel`` computes, as (draws, 2). ``chunk`` = units per compiled call."""
    nodes, needed, _ = _static(arrays, needed)
    static = (nodes, needed, _world(src_a, ivk_a, ivv_a), _world(src_b, ivk_b, ivv_b), int(outcome), int(level))
    S, U = theta.shape[0], len(units)
    draws = np.arange(S, dtype=np.int64)
    inp = _Inputs(arrays, theta, data, None, lat, _uses_lat(src_a, src_b), ivv_a, tables, key)
    jax = _jax()
    with jax.enable_x64(True):
        ivv_b_dev = jax.device_put(np.asarray(ivv_b, dtype=np.float64))
    plan = None if chunk else _effect_loop_plan(static, inp, S, ivu_a, ivv_b)
    if plan is not None:  # each draw's terms summed over a call's units as they are computed
        loop, sp, up = plan
        d_idx = _padded(draws, 0, sp)[0]
        th, s = inp.draws(d_idx)
        sums = np.zeros((sp, 2))
        with jax.enable_x64(True):
            for u0 in range(0, U, up):
                u_idx, nu = _padded(units, u0, up)
                u, dat, _, iu_a = inp.units(u_idx, ivu_a)
                iu_b = inp.units(u_idx, ivu_b)[3]
                loop(sums, 0, nu, th, s, u, dat, inp.latent_columns_first(d_idx, u_idx, nu), inp.ivv, iu_a,
                     ivv_b_dev, iu_b, inp.tables, inp.pf, inp.key, threads=_threads())
        return sums[:S] / U
    fn = _effect(*static)
    cu = chunk or max(1, min(U, _chunk_elements() // S))
    th, s = inp.draws(draws)

    def work(u0):
        u_idx, nu = _padded(units, u0, cu)
        u, dat, _, iu_a = inp.units(u_idx, ivu_a)
        iu_b = inp.units(u_idx, ivu_b)[3]
        mask = (np.arange(cu) < nu).astype(np.float64)
        return np.asarray(fn(th, s, u, dat, inp.latent(draws, u_idx, False), inp.ivv, iu_a, ivv_b_dev, iu_b,
                             inp.tables, inp.pf, inp.key, mask))

    sums = _run(list(range(0, U, cu)), work)
    return np.sum(sums, axis=0) / U  # chunk sums added in a fixed order: reproducible


def _tile(S, U, elements=CHUNK_ELEMENTS):
    """(draws, units) per call for the all-draws mode, about ``elements`` in all. Wide in units:
    each chunk lands in the result as rows of contiguous units (narrow tiles measured up to 2x
    slower); at least 1,024 units, all draws where the budget allows.

    Examples
    --------
    >>> _tile(1000, 100_000), _tile(1000, 100_000, 1 << 24)
    ((256, 1024), (1000, 16777))
    """
    cu = max(1, min(U, max(1024, elements // S)))
    return max(1, min(S, elements // cu)), cu
