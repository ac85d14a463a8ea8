"""The structural equations as JAX operations, for the fused kernels (:mod:`causal_wm.fused`).

A :class:`Trace` walks a model's nodes in Python while JAX traces it, so every branch on
family, source and intervention kind is taken once, at trace time, and XLA receives straight-line
arithmetic over a chunk of (draws x units). Each method mirrors the function of the same name in
:mod:`causal_wm.kernels` operation for operation (same order of additions, same random numbers,
same coupling), so the fused and the generic engines agree up to the rounding of transcendental
functions; ``tests/test_fused_kernel.py`` holds them to it.

Arrays are 2-D over (draws, units) or (units, draws) (``units_first``, for per-unit reductions
over draws); per-draw and per-unit quantities stay 1-D-broadcastable until they meet.
Everything here runs under ``jax.enable_x64(True)`` (set by the caller).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from functools import reduce

import numpy as np

from causal_wm import kernels as K
from causal_wm.families import BERNOULLI, CATEGORICAL, LOGNORMAL, NEGBIN, NORMAL, POISSON, STUDENT_T

# JAX is imported on first use (load()), not with this module: XLA reads its host-device count
# when JAX starts, and the NumPyro backend sets it only if JAX is not imported yet.
jax = jnp = lax = ndtri = None


def load() -> None:
    """Import JAX (once) into this module's namespace."""
    global jax, jnp, lax, ndtri
    if jnp is None:
        from causal_wm.fused import _jax

        jax = _jax()
        import jax.numpy as jnp
        from jax import lax
        from jax.scipy.special import ndtri

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class Node:
    """One node's static layout, read from the program arrays (see :mod:`causal_wm.program`)."""

    k: int
    family: int
    latent: bool
    n_eta: int
    p_int: int
    p_b: int
    p_sigma: int
    p_nu: int
    p_phi: int
    trans: int
    lat: int
    parents: tuple[int, ...]
    columns: tuple  # per design column: ((var, level), ...); level < 0 for a continuous factor
    blocks: tuple  # per group block: (group var, theta offset, columns)


@dataclass(frozen=True)
class World:
    """How one world forms each node: source, intervention kind, and (row, discrete) of a
    stochastic policy's quantile table (None where the node has none)."""

    src: tuple[int, ...]
    ivk: tuple[int, ...]
    tables: tuple


def nodes_of(arrays) -> tuple[Node, ...]:
    """The static layout of every node, in topological order."""
    (order, ni, nf, _pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols, blk_p) = arrays

    def column(c):
        return tuple((int(fac_var[f]), float(fac_lev[f])) for f in range(fac_ptr[c], fac_ptr[c + 1]))

    out = []
    for k in (int(x) for x in order):
        r = [int(x) for x in ni[k]]
        c0 = int(col_ptr[k])
        blocks = tuple(
            (int(blk_var[b]), int(blk_p[b]),
             tuple(column(int(blk_cols[b, 0]) + j) for j in range(int(blk_cols[b, 1]))))
            for b in range(int(blk_ptr[k]), int(blk_ptr[k + 1]))
        )
        out.append(Node(
            k=k, family=r[0], latent=r[1] == 1, n_eta=r[2], p_int=r[4], p_b=r[5], p_sigma=r[6],
            p_nu=r[7], p_phi=r[8], trans=r[9], lat=r[11], parents=tuple(int(p) for p in nf[r[12]:r[13]]),
            columns=tuple(column(c0 + t) for t in range(r[3])), blocks=blocks,
        ))
    return tuple(out)


def _mix(z):
    return _finalise(z + _M1)


def _finalise(z):
    """_mix without its first step, the addition of _M1."""
    z = (z ^ (z >> np.uint64(30))) * _M2
    z = (z ^ (z >> np.uint64(27))) * _M3
    return z ^ (z >> np.uint64(31))


@functools.cache
def _rows_take():
    """``th[s, col]``, as a named call that :mod:`causal_wm.looped` recognises (a loop reads row s of
    the parameter draws at column ``col``; the jaxpr's generic gather does not say that)."""

    def rows_take(th, s, col):
        return th[s, col]

    return jax.jit(rows_take, inline=False)


@functools.cache
def _table_take():
    """``tables[q, i]``: entry i of a stochastic intervention's quantile table q (q fixed per
    query, i per element), as a named call that :mod:`causal_wm.looped` reads directly."""

    def table_take(tables, q, i):
        return tables[q, i]

    return jax.jit(table_take, inline=False)


def additive(node) -> bool:
    """Whether the node's noise is added to its predictor (abduction is then exact)."""
    return node.family in (NORMAL, LOGNORMAL, STUDENT_T) or node.latent


def bernoulli_draw(uu, eta):
    """kernels.bernoulli_draw."""
    return jnp.where(uu * (1.0 + jnp.exp(eta)) > 1.0, 1.0, 0.0)


def bernoulli_couple(y, v, eta_f, eta_c):
    """kernels.bernoulli_couple, with A = exp(sign * eta) selected per element."""
    one = y > 0.5
    sign = jnp.where(one, -1.0, 1.0)
    a_f, a_c = jnp.exp(sign * eta_f), jnp.exp(sign * eta_c)
    return jnp.where(v * (1.0 + a_c) > jnp.where(one, a_c - a_f, 1.0 + a_f), 1.0, 0.0)


def sigmoid(x):
    # kernels.sigmoid's two branches with one exp and one division: exp(-|x|) is exp(-x) for
    # x >= 0, exp(x) below; the numerator picks 1 or e
    e = jnp.exp(-jnp.abs(x))
    return jnp.where(x >= 0, 1.0, e) / (1.0 + e)


def _phi(z):
    return 0.5 * lax.erfc(-z / math.sqrt(2.0))


def _count_sd(fam, mu, phi):
    return jnp.sqrt(mu if fam == POISSON else mu + mu * mu / phi)


def _log_pmf(fam, k0, mu, phi):
    """kernels._log_pmf."""
    if fam == POISSON:
        # Stirling's form of k log(mu) - mu - lgamma(k + 1), as kernels._log_pmf (k = 0: -mu)
        k = jnp.where(k0 > 0.0, k0, 1.0)
        series = 1.0 / (12.0 * k) - 1.0 / (360.0 * k**3) + 1.0 / (1260.0 * k**5)
        exact = lax.lgamma(k + 1.0) - (k * jnp.log(k) - k + 0.5 * jnp.log(2.0 * math.pi * k))
        stirlerr = jnp.where(k > 15.0, series, exact)
        lp = k * jnp.log1p((mu - k) / k) + (k - mu) - 0.5 * jnp.log(2.0 * math.pi * k) - stirlerr
        return jnp.where(k0 > 0.0, lp, -mu)
    return (lax.lgamma(k0 + phi) - lax.lgamma(phi) - lax.lgamma(k0 + 1.0)
            + phi * (jnp.log(phi) - jnp.log(phi + mu)) + k0 * (jnp.log(mu) - jnp.log(mu + phi)))


def _log_ratio(fam, mu, phi):
    return jnp.log(mu) if fam == POISSON else jnp.log(mu) - jnp.log(mu + phi)


def _count_start(fam, mu, phi, sd):
    k0 = jnp.maximum(0.0, jnp.floor(mu - K.COUNT_SIGMAS * sd))
    return k0, _log_pmf(fam, k0, mu, phi), _log_ratio(fam, mu, phi)


def _count_step(fam, k, phi, logr):
    if fam == POISSON:
        return logr - jnp.log(k + 1.0)
    return logr + jnp.log(k + phi) - jnp.log(k + 1.0)


def _count_setup(fam, mu, phi):
    pos = mu > 0.0
    mu = jnp.where(pos, mu, 1.0)  # the branch for mu <= 0 is chosen below; keep the rest finite
    sd = _count_sd(fam, mu, phi)
    finite = jnp.isfinite(sd)
    sd_ok = jnp.where(finite, sd, 1.0)
    long = K.COUNT_SIGMAS * sd_ok + jnp.minimum(mu, K.COUNT_SIGMAS * sd_ok) > K.MAX_COUNT_STEPS
    return pos, mu, sd_ok, finite, long


def count_cdf_pair(fam, mu, phi, y):
    """kernels.count_cdf_pair, elementwise: every element walks its own pmf recurrence in lockstep."""
    mu, phi, y = jnp.broadcast_arrays(mu, phi, y)
    pos, mu, sd, finite, long = _count_setup(fam, mu, phi)
    k, lp, logr = _count_start(fam, mu, phi, sd)
    walking = pos & finite & ~long & (y >= k)

    def active(st):
        k, _, _, _, steps = st
        return walking & (k < y) & (steps < K.MAX_COUNT_STEPS)

    def body(st):
        k, lp, lo, cdf, steps = st
        a = active(st)
        lo = jnp.where(a, cdf, lo)
        lp2 = jnp.where(a, lp + _count_step(fam, k, phi, logr), lp)
        cdf = jnp.where(a, cdf + jnp.exp(lp2), cdf)
        return jnp.where(a, k + 1.0, k), lp2, lo, cdf, steps + a

    zero = jnp.zeros_like(mu)
    st = (k, lp, zero, jnp.exp(lp), jnp.zeros(mu.shape, jnp.int64))
    _, _, lo, cdf, _ = lax.while_loop(lambda st: jnp.any(active(st)), body, st)
    lo, cdf = jnp.minimum(lo, 1.0), jnp.minimum(cdf, 1.0)
    na_lo = jnp.where(y > 0, _phi((y - 0.5 - mu) / sd), 0.0)
    na_hi = _phi((y + 0.5 - mu) / sd)
    lo = jnp.where(long, na_lo, jnp.where(y < k, 0.0, lo))
    cdf = jnp.where(long, na_hi, jnp.where(y < k, 0.0, cdf))
    lo = jnp.where(finite, lo, 0.0)
    cdf = jnp.where(finite, cdf, 0.0)
    return jnp.where(pos, lo, jnp.where(y == 0, 0.0, 1.0)), jnp.where(pos, cdf, 1.0)


def _tail_top(fam, mu, phi, k, log_floor, active):
    """kernels._tail_top, elementwise (the ``active`` elements step in lockstep)."""
    d = jnp.maximum(1.0, jnp.ceil(_count_sd(fam, mu, phi)))

    def going(st):
        k, lp, _, i = st
        r = mu / (k + 1.0) if fam == POISSON else jnp.maximum((k + phi) / (k + 1.0), 1.0) * mu / (mu + phi)
        return active & (i < 200) & ~(lp - jnp.log1p(-r) < log_floor)

    def body(st):
        k, lp, d, i = st
        a = going(st)
        k = jnp.where(a, k + d, k)
        return k, jnp.where(a, _log_pmf(fam, k, mu, phi), lp), jnp.where(a, d * 2.0, d), i + a

    st = (k, _log_pmf(fam, k, mu, phi), d, jnp.zeros(mu.shape, jnp.int64))
    k, lp, _, _ = lax.while_loop(lambda st: jnp.any(going(st)), body, st)
    return k, lp


def _sum_down(fam, phi, logr, k, lp, active, stop):
    """(k, its log pmf, P(Y >= k)): the pmf added from ``k`` downward until ``stop(k, total)``, each
    ``active`` element in lockstep (the loops of kernels.count_sf_pair and count_quantile_sf)."""

    def going(st):
        _, _, _, done, i = st
        return active & ~done & (i < K.MAX_COUNT_STEPS)

    def body(st):
        k, lp, t, done, i = st
        a = going(st)
        t = jnp.where(a, t + jnp.exp(lp), t)
        halt = stop(k, t)
        more = a & ~halt
        k = jnp.where(more, k - 1.0, k)
        lp = jnp.where(more, lp - _count_step(fam, k, phi, logr), lp)
        return k, lp, t, done | (a & halt), i + a

    st = (k, lp, jnp.zeros(k.shape), jnp.zeros(k.shape, bool), jnp.zeros(k.shape, jnp.int64))
    k, lp, t, _, _ = lax.while_loop(lambda st: jnp.any(going(st)), body, st)
    return k, lp, t


def upper_tail(fam, mu, phi, y):
    """kernels.upper_tail, elementwise."""
    return (mu > 0.0) & jnp.isfinite(_count_sd(fam, jnp.where(mu > 0.0, mu, 1.0), phi)) & (y > mu)


def count_sf_pair(fam, mu, phi, y, active):
    """kernels.count_sf_pair for the ``active`` elements (others: any finite numbers)."""
    mu, phi, y = jnp.broadcast_arrays(mu, phi, y)
    mu = jnp.where(active, mu, 1.0)  # keep the inactive elements' arithmetic finite
    y = jnp.where(active, y, 2.0)
    sd = _count_sd(fam, mu, phi)
    long = K.COUNT_SIGMAS * sd + jnp.minimum(mu, K.COUNT_SIGMAS * sd) > K.MAX_COUNT_STEPS
    walk = active & ~long
    logr = _log_ratio(fam, mu, phi)
    k, lp = _tail_top(fam, mu, phi, y + 1.0, _log_pmf(fam, y + 1.0, mu, phi) - K.TAIL_FLOOR, walk)
    k, lp, t = _sum_down(fam, phi, logr, k, lp, walk, lambda k, t: k <= y + 1.0)
    s_lo = t + jnp.exp(lp - _count_step(fam, y, phi, logr))
    return (jnp.where(long, _phi((mu - y - 0.5) / sd), t), jnp.where(long, _phi((mu - y + 0.5) / sd), s_lo))


def count_quantile_sf(fam, mu, phi, w, k_from, active):
    """kernels.count_quantile_sf for the ``active`` elements (others: any numbers)."""
    mu, phi, w, k_from = jnp.broadcast_arrays(mu, phi, w, k_from)
    pos, mu, sd, finite, long = _count_setup(fam, mu, phi)
    w = jnp.maximum(w, 5e-324)
    walk = active & pos & finite & ~long
    logr = _log_ratio(fam, mu, phi)
    k_from = jnp.where(walk, jnp.maximum(k_from, jnp.floor(mu) + 1.0), jnp.floor(mu) + 1.0)
    floor = jnp.minimum(_log_pmf(fam, k_from, mu, phi), jnp.log(w)) - K.TAIL_FLOOR
    k, lp = _tail_top(fam, mu, phi, k_from, floor, walk)
    k = _sum_down(fam, phi, logr, k, lp, walk, lambda k, t: (t > w) | (k <= 0.0))[0]
    # the normal approximation: 1 - Phi(z) = w, i.e. z = -ndtri(w) (kernels bisects to within rounding)
    approx = jnp.maximum(0.0, jnp.floor(mu - sd * jnp.clip(ndtri(w), -40.0, 40.0) + 0.5))
    out = jnp.where(long, approx, k)
    return jnp.where(pos, jnp.where(finite, out, jnp.inf), 0.0)


def count_quantile(fam, mu, phi, u):
    """kernels.count_quantile, elementwise (lockstep walk; bisection only if some element needs it)."""
    mu, phi, u = jnp.broadcast_arrays(mu, phi, u)
    pos, mu, sd, finite, long = _count_setup(fam, mu, phi)
    k, lp, logr = _count_start(fam, mu, phi, sd)
    walking = pos & finite & ~long

    def active(st):
        _, _, _, cdf, steps, stopped = st
        return walking & ~stopped & (cdf < u) & (steps < K.MAX_COUNT_STEPS)

    def body(st):
        k, lp, p, cdf, steps, stopped = st
        a = active(st)
        lp = jnp.where(a, lp + _count_step(fam, k, phi, logr), lp)
        k = jnp.where(a, k + 1.0, k)
        p = jnp.where(a, jnp.exp(lp), p)
        cdf = jnp.where(a, cdf + p, cdf)
        stopped = stopped | (a & (p == 0.0) & (k > mu))
        return k, lp, p, cdf, steps + a, stopped

    p0 = jnp.exp(lp)
    st = (k, lp, p0, p0, jnp.zeros(mu.shape, jnp.int64), jnp.zeros(mu.shape, bool))
    k = lax.while_loop(lambda st: jnp.any(active(st)), body, st)[0]

    # The generic kernel bisects Phi(z) < u for the normal quantile; ndtri is that inverse to
    # within rounding and compiles without a loop.
    approx = jnp.maximum(0.0, jnp.floor(mu + sd * jnp.clip(ndtri(u), -40.0, 40.0) + 0.5))
    out = jnp.where(long, approx, k)
    return jnp.where(pos, jnp.where(finite, out, jnp.inf), 0.0)


def to_original(trans, c, sc, z):
    if trans == K.LINEAR:
        return c + sc * z
    if trans == K.LOG:
        return jnp.exp(c + sc * z)
    return z


def to_internal(trans, c, sc, x):
    if trans == K.LINEAR:
        return (x - c) / sc
    if trans == K.LOG:
        return (jnp.log(x) - c) / sc
    return x


class Trace:
    """The arrays of one chunk and the mechanisms evaluated on them (one world at a time).

    Parameters are arrays of the chunk: ``theta`` (draws, parameters), ``s`` and ``u`` (uint64
    draw and unit counters of the random numbers), ``data`` and ``orig`` (units, nodes), ``lat``
    (draws, units, drawn nodes) or (units, draws, ...) when ``units_first``, ``ivv`` (nodes,),
    ``ivu`` (units, nodes), ``tables`` (policies, grid), ``pf`` (nodes, 6) and ``key``.
    """

    def __init__(self, nodes, units_first, theta, s, u, data, orig, lat, ivv, ivu, tables, pf, key):
        self.nodes, self.units_first = nodes, units_first
        self.th, self.data_, self.orig, self.lat_, self.ivv, self.ivu = theta, data, orig, lat, ivv, ivu
        self.tables, self.pf = tables, pf
        self._s, self._u, self.key = s, u, key
        self._base = None
        self._cache: dict = {}
        self._moved: dict = {}  # id(value) -> (value, its change from the factual one), additive nodes

    # -------------------------------------------------------------- shapes
    def draw(self, v):
        """A per-draw vector, broadcastable against the chunk."""
        return v[None, :] if self.units_first else v[:, None]

    def unit(self, v):
        """A per-unit vector, broadcastable against the chunk."""
        return v[:, None] if self.units_first else v[None, :]

    @property
    def shape(self):
        S, U = self.th.shape[0], self.data_.shape[0]
        return (U, S) if self.units_first else (S, U)

    def theta(self, p):
        return self.draw(self.th[:, p])

    def gather(self, col):
        """theta[s, col] where the column differs by element (group-level terms)."""
        s = self.draw(jnp.arange(self.th.shape[0]))
        return _rows_take()(self.th, s, col)

    def pfv(self, k, j):
        # one traced value per entry, so that every use (both worlds, every child) is one table entry
        key = ("pf", k, j)
        if key not in self._cache:
            self._cache[key] = self.pf[k, j]
        return self._cache[key]

    # -------------------------------------------------------------- randomness
    def _hash_base(self):
        # the hash of (key, draw, unit), shared by every node and slot: a per-draw hash plus a
        # per-unit one (computed once per draw and once per unit; kernels.uniform)
        if self._base is None:
            self._base = _mix(self.key + self.draw(self._s)) + _mix(self.unit(self._u) * _M2)
        return self._base

    def uniform(self, k, slot):
        """kernels.uniform(key, s, u, k, slot)."""
        # _mix's own first step, + _M1, is folded into the constant: one addition per element
        z = _finalise(self._hash_base() + np.uint64((k * 4096 + slot + int(_M1)) % 2**64))
        # (n + 0.5) 2^-53 as n 2^-53 + 2^-54, one multiply-add where the compiler fuses them; the
        # same number either way, since scaling by a power of two does not round
        return (z >> np.uint64(11)).astype(jnp.float64) * (1.0 / 9007199254740992.0) + (0.5 / 9007199254740992.0)

    def std_normal(self, k, slot):
        u1 = self.uniform(k, slot)
        u2 = self.uniform(k, slot + 1)
        return jnp.sqrt(-2.0 * jnp.log(u1)) * jnp.cos(2.0 * math.pi * u2)

    def student_t_noise(self, k, nu):
        """Bailey's polar method, as kernels.student_t_noise: every element retries on fresh slots
        until it is accepted (at most 200 tries)."""
        shape = self.shape
        nu = jnp.broadcast_to(nu, shape)
        base = self._hash_base()  # outside the loop: the loop body must not create it

        def uniform_at(slot):
            z = _mix(base + (jnp.uint64(k * 4096) + slot.astype(jnp.uint64)))
            return ((z >> np.uint64(11)).astype(jnp.float64) + 0.5) * (1.0 / 9007199254740992.0)

        def body(st):
            i, done, val = st
            a = 2.0 * uniform_at(2 + 2 * i) - 1.0
            b = 2.0 * uniform_at(3 + 2 * i) - 1.0
            w = a * a + b * b
            ok = ~done & (w > 0.0) & (w < 1.0)
            cand = a * jnp.sqrt(nu * (w ** (-2.0 / nu) - 1.0) / w)
            return i + 1, done | ok, jnp.where(ok, cand, val)

        st = (jnp.int64(0), jnp.zeros(shape, bool), jnp.zeros(shape))
        return lax.while_loop(lambda st: (st[0] < 200) & ~jnp.all(st[1]), body, st)[2]

    # -------------------------------------------------------------- sources
    def data(self, k):
        key = ("data", k)
        if key not in self._cache:  # one object per node, so both worlds share it (see world())
            self._cache[key] = self.unit(self.data_[:, k])
        return self._cache[key]

    def latent(self, node):
        key = ("lat", node.k)
        if key not in self._cache:
            self._cache[key] = self.lat_[:, :, node.lat]
        return self._cache[key]

    # -------------------------------------------------------------- mechanisms
    def standardised(self, v, x):
        """Node v's value ``x`` on the design's scale, traced once per value (a parent of several
        children, or the same in both worlds, is standardised once)."""
        key = ("z", v, id(x))
        if key not in self._cache:  # x is kept with its z, so that its id cannot be reused
            # times the reciprocal (computed once per query, before the loop): a division per
            # element cost the loop several times a multiply
            self._cache[key] = (x, (x - self.pfv(v, 4)) * self.pfv_inverse(v, 5))
        return self._cache[key][1]

    def pfv_inverse(self, k, j):
        """1 / pf[k, j], traced once."""
        key = ("pf_inv", k, j)
        if key not in self._cache:
            self._cache[key] = 1.0 / self.pfv(k, j)
        return self._cache[key]

    def column(self, factors, vals):
        x = 1.0
        for v, lev in factors:
            if lev < 0:
                z = self.standardised(v, vals[v])
                x = z if isinstance(x, float) and x == 1.0 else x * z
            else:
                x = jnp.where(vals[v] != lev, 0.0, x)
        return x

    def column_delta(self, factors, vals, fact):
        """column(factors, vals) - column(factors, fact), as a sum of terms that each carry one
        factor's own difference (x_c - x_f for a continuous one, scaled; the indicators' for a
        level), so that it is exactly 0 where no factor changed, however the compiler fuses it: a
        multiply-add of ``a * b - c`` with ``c`` the rounded ``a * b`` is c's rounding error, not 0."""
        def factor(v, lev, world):
            if lev < 0:
                return self.standardised(v, world[v])
            return jnp.where(world[v] != lev, 0.0, 1.0)

        total = None
        for i, (v, lev) in enumerate(factors):
            if vals[v] is fact[v]:
                continue
            if lev < 0:  # (x_c - x_f) / sd, which is 0 for equal values
                d = self._change(vals[v], fact[v]) * self.pfv_inverse(v, 5)
            else:
                d = factor(v, lev, vals) - factor(v, lev, fact)
            for w, lw in factors[:i]:
                d = factor(w, lw, fact) * d
            for w, lw in factors[i + 1:]:
                d = d * factor(w, lw, vals)
            total = d if total is None else total + d
        return 0.0 if total is None else total

    def _moved_by(self, x):
        """The change world() recorded for ``x``, an additive node's abducted value, else None."""
        moved = self._moved.get(id(x))
        return moved[1] if moved is not None and moved[0] is x else None

    def _change(self, x, x_f):
        """x - x_f, as recorded where x is an additive node's abducted value (see world())."""
        d = self._moved_by(x)
        return x - x_f if d is None else d

    def linear(self, node, vals):
        """kernels.linear_predictor: the node's linear predictor(s) given parent values ``vals``."""
        etas = [self.theta(node.p_int + e) if node.p_int >= 0 else 0.0 for e in range(node.n_eta)]
        T = len(node.columns)
        for t, factors in enumerate(node.columns):
            x = self.column(factors, vals)
            for e in range(node.n_eta):
                # kernels.linear_predictor skips a term whose value is 0 (a level not taken); adding
                # th * 0 is the same number, and a select per term cost the loop a quarter of its speed
                etas[e] = etas[e] + self.theta(node.p_b + e * T + t) * x
        for gvar, p, cols in node.blocks:
            g = vals[gvar].astype(jnp.int64)
            nc = len(cols)
            for j, factors in enumerate(cols):
                x = self.column(factors, vals)
                etas[0] = etas[0] + self.gather(p + g * nc + j) * x
        return etas

    def linear_delta(self, node, vals, fact):
        """kernels.linear_delta: the node's linear predictor(s) under ``vals`` minus under ``fact``,
        term by term. A term whose inputs are the very same traced values in both worlds adds
        exactly 0 and is left out; so abduction touches only what an intervention changed."""
        moved = {p for p in node.parents if vals[p] is not fact[p]}
        deltas = [None] * node.n_eta  # None: no term yet (0.0 + x would be one more operation)

        def add(a, b):
            return b if a is None else a + b

        T = len(node.columns)
        for t, factors in enumerate(node.columns):
            if not any(v in moved for v, _ in factors):
                continue
            d = self.column_delta(factors, vals, fact)
            for e in range(node.n_eta):
                deltas[e] = add(deltas[e], self.theta(node.p_b + e * T + t) * d)
        for gvar, p, cols in node.blocks:
            nc = len(cols)
            g_c = vals[gvar].astype(jnp.int64)
            g_f = fact[gvar].astype(jnp.int64)
            for j, factors in enumerate(cols):
                if gvar not in moved and not any(v in moved for v, _ in factors):
                    continue
                th_c = self.gather(p + g_c * nc + j)
                same = th_c * self.column_delta(factors, vals, fact)
                if gvar in moved:  # another group: another coefficient
                    x_c, x_f = self.column(factors, vals), self.column(factors, fact)
                    same = jnp.where(g_c == g_f, same, th_c * x_c - self.gather(p + g_f * nc + j) * x_f)
                deltas[0] = add(deltas[0], same)
        return [0.0 if d is None else d for d in deltas]

    def fresh(self, node, eta):
        """kernels.draw_fresh."""
        k, fam = node.k, node.family
        if node.latent:
            return eta[0] + self.std_normal(k, 0)
        if fam in (NORMAL, LOGNORMAL):
            return eta[0] + self.theta(node.p_sigma) * self.std_normal(k, 0)
        if fam == STUDENT_T:
            return eta[0] + self.theta(node.p_sigma) * self.student_t_noise(k, self.theta(node.p_nu))
        uu = self.uniform(k, 0)
        if fam == BERNOULLI:
            return bernoulli_draw(uu, eta[0])
        if fam in (POISSON, NEGBIN):
            mu = jnp.exp(self.pfv(k, 3) + eta[0])
            phi = self.theta(node.p_phi) if fam == NEGBIN else 0.0
            return count_quantile(fam, mu, phi, uu)
        best = jnp.zeros(self.shape)
        bestv = -jnp.log(-jnp.log(uu))
        for e in range(node.n_eta):
            g = eta[e] - jnp.log(-jnp.log(self.uniform(k, 1 + e)))
            best = jnp.where(g > bestv, float(e + 1), best)
            bestv = jnp.where(g > bestv, g, bestv)
        return best

    def abduct(self, node, y, eta_f, delta):
        """kernels.abduct_predict: noise abducted from ``y`` under ``eta_f``, pushed through
        ``eta_f + delta`` (``eta_f`` is not read for additive-noise nodes: None there)."""
        k, fam = node.k, node.family
        if additive(node):
            return y + delta[0]
        eta_c = [f + d for f, d in zip(eta_f, delta, strict=True)]
        v = self.uniform(k, 0)
        if fam == BERNOULLI:
            return bernoulli_couple(y, v, eta_f[0], eta_c[0])
        if fam in (POISSON, NEGBIN):
            phi = self.theta(node.p_phi) if fam == NEGBIN else 0.0
            mu_f, mu_c = jnp.exp(self.pfv(k, 3) + eta_f[0]), jnp.exp(self.pfv(k, 3) + eta_c[0])
            y = jnp.floor(y)
            up = upper_tail(fam, mu_f, phi, y)
            s_hi, s_lo = count_sf_pair(fam, mu_f, phi, y, up)
            guess = jnp.floor(mu_c + (y - mu_f) * (_count_sd(fam, mu_c, phi) / _count_sd(fam, mu_f, phi)) + 0.5)
            above = count_quantile_sf(fam, mu_c, phi, s_hi + (1.0 - v) * (s_lo - s_hi), guess + 1.0, up)
            lo, hi = count_cdf_pair(fam, mu_f, phi, y)
            uu = lo + v * (hi - lo)
            return jnp.where(up, above, count_quantile(fam, mu_c, phi, uu))
        # categorical: the Gumbel posterior given the observed argmax (Oberst & Sontag 2019)
        n_lev = node.n_eta + 1
        obs = jnp.trunc(y)
        lf = [jnp.zeros(self.shape)] + [jnp.broadcast_to(e, self.shape) for e in eta_f]
        m = reduce(jnp.maximum, lf)
        lse = m + jnp.log(reduce(lambda a, b: a + b, [jnp.exp(x - m) for x in lf]))
        top = lse - jnp.log(-jnp.log(self.uniform(k, 1)))
        best = jnp.zeros(self.shape)
        bestv = jnp.full(self.shape, -jnp.inf)
        for i in range(n_lev):
            gz = lf[i] - jnp.log(-jnp.log(self.uniform(k, 2 + i)))
            gi = jnp.where(obs == i, top - lf[i], -jnp.log(jnp.exp(-top) + jnp.exp(-gz)) - lf[i])
            val = (0.0 if i == 0 else eta_c[i - 1]) + gi
            best = jnp.where(val > bestv, float(i), best)
            bestv = jnp.where(val > bestv, val, bestv)
        return best

    def expected(self, node, eta, level):
        """kernels.expected_original: E[node | parents] in original units (P(level) if categorical)."""
        k, fam = node.k, node.family
        if fam in (NORMAL, STUDENT_T) or node.latent:
            return self.pfv(k, 0) + self.pfv(k, 1) * eta[0]
        if fam == LOGNORMAL:
            sd = self.pfv(k, 1) * self.theta(node.p_sigma)
            return jnp.exp(self.pfv(k, 0) + self.pfv(k, 1) * eta[0] + 0.5 * sd * sd)
        if fam == BERNOULLI:
            return sigmoid(eta[0])
        if fam in (POISSON, NEGBIN):
            return jnp.exp(self.pfv(k, 3) + eta[0])
        m = reduce(jnp.maximum, eta, 0.0)
        tot = reduce(lambda a, b: a + b, [jnp.exp(e - m) for e in eta], jnp.exp(-m))
        num = jnp.exp(-m) if level == 0 else jnp.exp(eta[level - 1] - m)
        return num / tot

    def intervene(self, node, nat, kind, table):
        """kernels.apply_intervention."""
        k, trans = node.k, node.trans
        c, sc = self.pfv(k, 0), self.pfv(k, 1)
        if kind == K.HARD:
            return self.ivv[k]
        if kind == K.PERUNIT:
            return self.unit(self.ivu[:, k])
        if kind == K.SHIFT:
            return to_internal(trans, c, sc, to_original(trans, c, sc, nat) + self.ivv[k])
        if kind == K.SCALE:
            return to_internal(trans, c, sc, to_original(trans, c, sc, nat) * self.ivv[k])
        if kind == K.TABLE:
            q, discrete = table
            M = self.tables.shape[1]
            uu = self.uniform(k, 1000)
            take = functools.partial(_table_take(), self.tables, np.int64(q))
            if discrete:
                x = take(jnp.minimum((uu * M).astype(jnp.int64), M - 1))
            else:  # as kernels.apply_intervention: between the midpoints (i + 0.5) / M
                pos = jnp.minimum(jnp.maximum(uu * M - 0.5, 0.0), M - 1.0)
                i = jnp.minimum(pos.astype(jnp.int64), M - 2)
                w = pos - i
                x = take(i) * (1.0 - w) + take(i + 1) * w
            return to_internal(trans, c, sc, x)
        return nat

    # -------------------------------------------------------------- worlds
    def world(self, w: World, needed, fact=None, other=None) -> dict:
        """kernels._world: every needed node of one world. ``fact`` is the factual world (for
        abduction), ``other`` the world whose values OTHER nodes take."""
        vals: dict = {}
        for node in self.nodes:
            k = node.k
            if not needed[k]:
                continue
            sk = w.src[k]
            if sk == K.DATA:
                nat = self.data(k)
            elif sk == K.LATENT:
                nat = self.latent(node)
            elif sk == K.OTHER:
                nat = other[k]
            elif sk == K.FRESH:
                nat = self.fresh(node, self.linear(node, vals))
            else:
                # Parents that are the very same traced value in both worlds cannot differ;
                # the rest are compared per element, as the generic kernel does.
                moved = [p for p in node.parents if vals[p] is not fact[p]]
                if not moved:
                    nat = fact[k]
                elif additive(node):
                    # y + (eta' - eta) term by term: where no parent changed, every term adds
                    # exactly 0 (parameters and data are finite), so y comes back bit for bit
                    # without the per-element comparison and select the other families need
                    delta = self.linear_delta(node, vals, fact)
                    nat = self.abduct(node, fact[k], None, delta)
                    self._moved[id(nat)] = (nat, delta[0])  # output() applies the change to the data's number
                else:
                    changed = reduce(jnp.logical_or, [vals[p] != fact[p] for p in moved])
                    pred = self.abduct(node, fact[k], self.linear(node, fact), self.linear_delta(node, vals, fact))
                    nat = jnp.where(changed, pred, fact[k])
            if w.ivk[k] != K.NONE:
                nat = self.intervene(node, nat, w.ivk[k], w.tables[k])
            vals[k] = nat
        return vals

    def output(self, k, vals, fact, src):
        """kernels._output: a value equal to the factual one is the data's own number (consistency).

        Where the factual value is the data's (``src`` DATA) and the node was abducted with additive
        noise, its change is applied to the data's own number: ``org + sc d`` (``org exp(sc d)`` on
        a log scale) with ``d`` the change on the internal scale, which is exactly 0 where nothing
        moved (see :meth:`column_delta`). That is ``org`` itself there and within rounding of
        ``to_original(z')`` elsewhere, without the per-element comparison and select of the general
        case. On the identity scale (bernoulli, counts, categorical codes) the data's number is the
        internal one, so the value itself is returned."""
        node = self.nodes[k]
        c, sc = self.pfv(k, 0), self.pfv(k, 1)
        org = self.unit(self.orig[:, k])
        d = self._moved_by(vals[k])
        if src == K.DATA and (d is not None or vals[k] is fact[k] or node.trans == K.IDENTITY):
            if node.trans == K.IDENTITY and vals[k] is not fact[k]:
                return jnp.broadcast_to(vals[k], self.shape)
            # org is NaN only where the unit lacks the value (new units): then the converted one
            base = jnp.where(jnp.isnan(org), to_original(node.trans, c, sc, fact[k]), org)
            if vals[k] is fact[k]:
                out = base
            elif node.trans == K.LINEAR:
                out = base + sc * d
            else:
                out = base * jnp.exp(sc * d)
            return jnp.broadcast_to(out, self.shape)
        conv = to_original(node.trans, c, sc, vals[k])
        same = (vals[k] == fact[k]) & ~jnp.isnan(org)
        return jnp.broadcast_to(jnp.where(same, org, conv), self.shape)

    def expected_outcome(self, k, vals, kind, src, level):
        """kernels._expected: E[outcome | its parents] where the world regenerates it; an
        intervened outcome is its set value, one outside every intervention's reach its own value."""
        node = self.nodes[k]
        if kind != K.NONE or src in (K.DATA, K.LATENT):
            if node.family == CATEGORICAL:
                return jnp.where(vals[k] == level, 1.0, 0.0)
            return to_original(node.trans, self.pfv(k, 0), self.pfv(k, 1), vals[k])
        return self.expected(node, self.linear(node, vals), level)


def crossed_fn(nodes, needed, factual: World, counter: World, outputs, units_first, stacked=True):
    """The counterfactual of ``outputs`` for a chunk of units crossed with a chunk of draws: one
    stacked array, or a tuple of one array per output (``stacked=False``)."""

    load()

    def fn(theta, s, u, data, orig, lat, ivv, ivu, tables, pf, key):
        tr = Trace(nodes, units_first, theta, s, u, data, orig, lat, ivv, ivu, tables, pf, key)
        fact = tr.world(factual, needed)
        vals = tr.world(counter, needed, fact=fact)
        res = [tr.output(k, vals, fact, factual.src[k]) for k in outputs]
        return jnp.stack(res) if stacked else tuple(res)

    return jax.jit(fn)


def effect_fn(nodes, needed, world_a: World, world_b: World, outcome, level):
    """Per draw, the sums over the chunk's units (weighted by ``mask``) of E[outcome] in world a
    and in world b; world a's OTHER nodes take their world-b values (kernels.effect_kernel)."""

    load()

    def fn(theta, s, u, data, lat, ivv_a, ivu_a, ivv_b, ivu_b, tables, pf, key, mask):
        ea, eb = _expected_pair(nodes, needed, world_a, world_b, outcome, level, theta, s, u, data, lat,
                                ivv_a, ivu_a, ivv_b, ivu_b, tables, pf, key)
        w = mask[None, :]
        return jnp.stack([jnp.sum(ea * w, axis=1), jnp.sum(eb * w, axis=1)], axis=1)

    return jax.jit(fn)


def effect_terms_fn(nodes, needed, world_a, world_b, outcome, level):
    """Per draw and unit, E[outcome] in world a and in world b: what :func:`effect_fn` sums, as a
    tuple of two (draws, units) arrays (the numba loop of :mod:`causal_wm.looped` sums them)."""

    load()

    def fn(theta, s, u, data, lat, ivv_a, ivu_a, ivv_b, ivu_b, tables, pf, key):
        return _expected_pair(nodes, needed, world_a, world_b, outcome, level, theta, s, u, data, lat,
                              ivv_a, ivu_a, ivv_b, ivu_b, tables, pf, key)

    return fn


def _expected_pair(nodes, needed, world_a, world_b, outcome, level, theta, s, u, data, lat, ivv_a, ivu_a,
                   ivv_b, ivu_b, tables, pf, key):
    """(E[outcome] in world a, in world b), each broadcast to (draws, units); world a's OTHER nodes
    take their world-b values."""
    tr = Trace(nodes, False, theta, s, u, data, data, lat, ivv_b, ivu_b, tables, pf, key)
    vb = tr.world(world_b, needed)
    eb = tr.expected_outcome(outcome, vb, world_b.ivk[outcome], world_b.src[outcome], level)
    tr.ivv, tr.ivu = ivv_a, ivu_a  # world a: same data and random numbers, its own intervention
    va = tr.world(world_a, needed, other=vb)
    ea = tr.expected_outcome(outcome, va, world_a.ivk[outcome], world_a.src[outcome], level)
    return jnp.broadcast_to(ea, tr.shape), jnp.broadcast_to(eb, tr.shape)
