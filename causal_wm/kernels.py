"""Fused, compiled kernels over posterior draws x units (numba).

One implementation of the structural equations for every query: each kernel walks the nodes in
topological order for one (draw, unit) pair, evaluating the mechanism from flat arrays built by
:mod:`causal_wm.program`. Nothing per (draw, unit) is materialised unless the caller asks for
every draw; summaries are reduced inside the kernel.

Randomness is counter-based: the uniform for (draw, unit, node, slot) is a hash of those integers
and the query's key. The numbers therefore do not depend on chunking or thread count, both worlds
of a contrast share their noise (common random numbers), and every posterior draw gets its own
independent noise.

Why numba: a loop fused by hand for one model measured about 2x faster than jit-compiled JAX on
our 2-core CPUs. This kernel is generic (it interprets any model's layout per node), and that
interpretation costs: it measured about 50x slower than the hand-fused loop and about 30x slower
than JAX on the benchmark model (docs/performance.md). Specialising the kernel per model is the
open work item.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from causal_wm.families import BERNOULLI, CATEGORICAL, LOGNORMAL, NEGBIN, NORMAL, POISSON, STUDENT_T

# node sources (OTHER: the value the node took in the other world of a contrast, for mediation)
DATA, LATENT, FRESH, ABDUCT, OTHER = 0, 1, 2, 3, 4
# intervention kinds
NONE, HARD, SHIFT, SCALE, PERUNIT, TABLE = 0, 1, 2, 3, 4, 5
# value transforms (internal <-> original)
LINEAR, LOG, IDENTITY = 0, 1, 2
MAX_LEVELS = 64
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def _mix(z):
    z = z + _M1
    z = (z ^ (z >> np.uint64(30))) * _M2
    z = (z ^ (z >> np.uint64(27))) * _M3
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def uniform(key, s, u, k, slot):
    """A uniform in (0, 1) for (key, draw s, unit u, node k, slot)."""
    z = _mix(np.uint64(key) + np.uint64(s))
    z = _mix(z + np.uint64(u))
    z = _mix(z + np.uint64(k) * np.uint64(4096) + np.uint64(slot))
    return (float(z >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def std_normal(key, s, u, k, slot):
    u1 = uniform(key, s, u, k, slot)
    u2 = uniform(key, s, u, k, slot + 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True)
def student_t_noise(key, s, u, k, nu):
    # Bailey's polar method: one rejection loop over fresh slots.
    for i in range(200):
        a = 2.0 * uniform(key, s, u, k, 2 + 2 * i) - 1.0
        b = 2.0 * uniform(key, s, u, k, 3 + 2 * i) - 1.0
        w = a * a + b * b
        if 0.0 < w < 1.0:
            return a * math.sqrt(nu * (w ** (-2.0 / nu) - 1.0) / w)
    return 0.0


@njit(cache=True, inline="always")
def sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def count_cdf_pair(fam, mu, phi, y):
    """(F(y-1), F(y)) of a Poisson(mu) or NB2(mu, phi) count, by the pmf recurrence."""
    if fam == POISSON:
        p = math.exp(-mu)
        r = mu
    else:
        p = math.exp(phi * (math.log(phi) - math.log(phi + mu)))
        r = mu / (mu + phi)
    lo = 0.0
    cdf = p
    k = 0
    while k < y:
        lo = cdf
        if fam == POISSON:
            p = p * r / (k + 1)
        else:
            p = p * (k + phi) / (k + 1) * r
        k += 1
        cdf = cdf + p
    if y == 0:
        lo = 0.0
    return lo, cdf


@njit(cache=True)
def count_quantile(fam, mu, phi, u):
    """Smallest y with F(y) >= u for a Poisson(mu) or NB2(mu, phi) count."""
    if fam == POISSON:
        p = math.exp(-mu)
        r = mu
    else:
        p = math.exp(phi * (math.log(phi) - math.log(phi + mu)))
        r = mu / (mu + phi)
    cdf = p
    k = 0
    limit = 100000 + 50.0 * mu
    while cdf < u and k < limit:
        if fam == POISSON:
            p = p * r / (k + 1)
        else:
            p = p * (k + phi) / (k + 1) * r
        k += 1
        cdf = cdf + p
        if p == 0.0 and k > mu:
            break
    return float(k)


@njit(cache=True, inline="always")
def to_original(trans, c, sc, z):
    if trans == LINEAR:
        return c + sc * z
    if trans == LOG:
        return math.exp(c + sc * z)
    return z


@njit(cache=True, inline="always")
def to_internal(trans, c, sc, x):
    if trans == LINEAR:
        return (x - c) / sc
    if trans == LOG:
        return (math.log(x) - c) / sc
    return x


@njit(cache=True)
def linear_predictor(k, s, vals, eta, theta, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev,
                     blk_ptr, blk_var, blk_cols, blk_p):
    """Fill eta[:n_eta] for node k at draw s from current node values ``vals``."""
    neta = ni[k, 2]
    T = ni[k, 3]
    p_int = ni[k, 4]
    p_b = ni[k, 5]
    for e in range(neta):
        eta[e] = theta[s, p_int + e] if p_int >= 0 else 0.0
    c0 = col_ptr[k]
    for t in range(T):
        c = c0 + t
        x = 1.0
        for f in range(fac_ptr[c], fac_ptr[c + 1]):
            v = fac_var[f]
            if fac_lev[f] < 0:
                x *= (vals[v] - pf[v, 4]) / pf[v, 5]
            elif vals[v] != fac_lev[f]:
                x = 0.0
        if x != 0.0:
            for e in range(neta):
                eta[e] += theta[s, p_b + e * T + t] * x
    for b in range(blk_ptr[k], blk_ptr[k + 1]):
        g = int(vals[blk_var[b]])
        nc = blk_cols[b, 1]
        for j in range(nc):
            c = blk_cols[b, 0] + j
            x = 1.0
            for f in range(fac_ptr[c], fac_ptr[c + 1]):
                v = fac_var[f]
                if fac_lev[f] < 0:
                    x *= (vals[v] - pf[v, 4]) / pf[v, 5]
                elif vals[v] != fac_lev[f]:
                    x = 0.0
            eta[0] += theta[s, blk_p[b] + g * nc + j] * x


@njit(cache=True)
def draw_fresh(k, s, u, key, eta, theta, ni, nf, pf):
    """A fresh draw of node k (internal scale) given its linear predictor(s)."""
    fam = ni[k, 0]
    if ni[k, 1] == 1:  # latent: standard normal noise
        return eta[0] + std_normal(key, s, u, k, 0)
    if fam == NORMAL or fam == LOGNORMAL:
        return eta[0] + theta[s, ni[k, 6]] * std_normal(key, s, u, k, 0)
    if fam == STUDENT_T:
        return eta[0] + theta[s, ni[k, 6]] * student_t_noise(key, s, u, k, theta[s, ni[k, 7]])
    uu = uniform(key, s, u, k, 0)
    if fam == BERNOULLI:
        return 1.0 if uu > 1.0 - sigmoid(eta[0]) else 0.0
    if fam == POISSON or fam == NEGBIN:
        mu = math.exp(pf[k, 3] + eta[0])
        phi = theta[s, ni[k, 8]] if fam == NEGBIN else 0.0
        return count_quantile(fam, mu, phi, uu)
    # categorical: Gumbel-max
    best = 0
    bestv = -math.log(-math.log(uu))
    for e in range(ni[k, 2]):
        g = eta[e] - math.log(-math.log(uniform(key, s, u, k, 1 + e)))
        if g > bestv:
            bestv = g
            best = e + 1
    return float(best)


@njit(cache=True)
def abduct_predict(k, s, u, key, y, eta_f, eta_c, theta, ni, nf, pf):
    """Counterfactual value of node k: noise abducted from factual ``y`` under ``eta_f``,
    pushed through the mechanism under ``eta_c`` (internal scale)."""
    fam = ni[k, 0]
    if fam == NORMAL or fam == LOGNORMAL or fam == STUDENT_T or ni[k, 1] == 1:
        return y + (eta_c[0] - eta_f[0])
    v = uniform(key, s, u, k, 0)
    if fam == BERNOULLI:
        q_f = 1.0 - sigmoid(eta_f[0])  # F(0)
        if y > 0.5:
            uu = q_f + v * (1.0 - q_f)
        else:
            uu = v * q_f
        return 1.0 if uu > 1.0 - sigmoid(eta_c[0]) else 0.0
    if fam == POISSON or fam == NEGBIN:
        phi = theta[s, ni[k, 8]] if fam == NEGBIN else 0.0
        lo, hi = count_cdf_pair(fam, math.exp(pf[k, 3] + eta_f[0]), phi, int(y))
        uu = lo + v * (hi - lo)
        return count_quantile(fam, math.exp(pf[k, 3] + eta_c[0]), phi, uu)
    # categorical: Gumbel posterior given the observed argmax (Oberst & Sontag 2019)
    K = ni[k, 2] + 1
    obs = int(y)
    lf = np.empty(K)
    lf[0] = 0.0
    for e in range(K - 1):
        lf[e + 1] = eta_f[e]
    m = lf[0]
    for i in range(1, K):
        m = max(m, lf[i])
    lse = 0.0
    for i in range(K):
        lse += math.exp(lf[i] - m)
    lse = m + math.log(lse)
    top = lse - math.log(-math.log(uniform(key, s, u, k, 1)))
    best = 0
    bestv = -np.inf
    for i in range(K):
        if i == obs:
            gi = top - lf[i]
        else:
            gz = lf[i] - math.log(-math.log(uniform(key, s, u, k, 2 + i)))
            # Gumbel(lf[i]) truncated below top
            gi = -math.log(math.exp(-top) + math.exp(-gz)) - lf[i]
        val = (0.0 if i == 0 else eta_c[i - 1]) + gi
        if val > bestv:
            bestv = val
            best = i
    return float(best)


@njit(cache=True)
def expected_original(k, s, eta, theta, ni, nf, pf, level):
    """E[node k | parents] in original units (P(node == level) for a categorical node)."""
    fam = ni[k, 0]
    if fam == NORMAL or fam == STUDENT_T or ni[k, 1] == 1:
        return pf[k, 0] + pf[k, 1] * eta[0]
    if fam == LOGNORMAL:
        sd = pf[k, 1] * theta[s, ni[k, 6]]
        return math.exp(pf[k, 0] + pf[k, 1] * eta[0] + 0.5 * sd * sd)
    if fam == BERNOULLI:
        return sigmoid(eta[0])
    if fam == POISSON or fam == NEGBIN:
        return math.exp(pf[k, 3] + eta[0])
    m = 0.0
    for e in range(ni[k, 2]):
        m = max(m, eta[e])
    tot = math.exp(-m)
    for e in range(ni[k, 2]):
        tot += math.exp(eta[e] - m)
    num = math.exp(-m) if level == 0 else math.exp(eta[level - 1] - m)
    return num / tot


@njit(cache=True)
def apply_intervention(k, s, u, key, natural, ivk, ivv, iv_unit, tables, pf, ni):
    """The intervened value of node k (internal scale) given its natural value."""
    kind = ivk[k]
    if kind == HARD:
        return ivv[k]
    if kind == PERUNIT:
        return iv_unit[u, k]
    trans = ni[k, 9]
    if kind == SHIFT:
        return to_internal(trans, pf[k, 0], pf[k, 1], to_original(trans, pf[k, 0], pf[k, 1], natural) + ivv[k])
    if kind == SCALE:
        return to_internal(trans, pf[k, 0], pf[k, 1], to_original(trans, pf[k, 0], pf[k, 1], natural) * ivv[k])
    if kind == TABLE:
        q = int(ivv[k])
        discrete = q < 0  # discrete tables are stored as -(index + 1)
        if discrete:
            q = -q - 1
        M = tables.shape[1]
        uu = uniform(key, s, u, k, 1000)
        pos = uu * M
        i = min(int(pos), M - 1)
        if discrete:  # step function
            x = tables[q, i]
        else:
            j = min(i + 1, M - 1)
            w = pos - i
            x = tables[q, i] * (1.0 - w) + tables[q, j] * w
        return to_internal(trans, pf[k, 0], pf[k, 1], x)
    return natural


@njit(cache=True)
def _world(s, u, su, key, order, src, data, lat, fact, vals, eta, eta_f, theta, ni, nf, pf,
           col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols, blk_p, ivk, ivv, iv_unit,
           tables, needed):
    """Compute every needed node of one world for draw s, unit u (data row su)."""
    for i in range(order.shape[0]):
        k = order[i]
        if not needed[k]:
            continue
        sk = src[k]
        if sk == DATA:
            nat = data[su, k]
        elif sk == LATENT:
            nat = lat[s, su, ni[k, 11]]
        elif sk == OTHER:
            nat = fact[k]
        else:
            linear_predictor(k, s, vals, eta, theta, ni, nf, pf, col_ptr, fac_ptr, fac_var,
                             fac_lev, blk_ptr, blk_var, blk_cols, blk_p)
            if sk == FRESH:
                nat = draw_fresh(k, s, u, key, eta, theta, ni, nf, pf)
            else:
                changed = False
                for f in range(ni[k, 12], ni[k, 13]):
                    p = nf[f]
                    if vals[p] != fact[p]:
                        changed = True
                if not changed:
                    nat = fact[k]
                else:
                    linear_predictor(k, s, fact, eta_f, theta, ni, nf, pf, col_ptr, fac_ptr,
                                     fac_var, fac_lev, blk_ptr, blk_var, blk_cols, blk_p)
                    nat = abduct_predict(k, s, u, key, fact[k], eta_f, eta, theta, ni, nf, pf)
        if ivk[k] != NONE:
            nat = apply_intervention(k, s, u, key, nat, ivk, ivv, iv_unit, tables, pf, ni)
        vals[k] = nat


@njit(cache=True, inline="always")
def _expected(outcome, s, vals, eta, theta, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var,
              blk_cols, blk_p, ivk, level):
    # E[outcome | its parents] in original units; an intervened outcome is its set value
    if ivk[outcome] != NONE:
        if ni[outcome, 0] == CATEGORICAL:
            return 1.0 if vals[outcome] == level else 0.0
        return to_original(ni[outcome, 9], pf[outcome, 0], pf[outcome, 1], vals[outcome])
    linear_predictor(outcome, s, vals, eta, theta, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr,
                     blk_var, blk_cols, blk_p)
    return expected_original(outcome, s, eta, theta, ni, nf, pf, level)


@njit(cache=True, parallel=True)
def effect_kernel(prog, theta, data, lat, units, key, src_a, ivk_a, ivv_a, ivu_a, src_b, ivk_b, ivv_b,
                  ivu_b, tables, needed, outcome, level):
    """Per draw: mean over ``units`` of E[outcome] under world a and under world b.

    World b is computed first; nodes whose source in world a is OTHER take their world-b value
    (a nested counterfactual such as Y(t1, M(t0)) for mediation).
    """
    (order, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols,
     blk_p) = prog
    S = theta.shape[0]
    K = order.shape[0]
    out = np.zeros((S, 2))
    for s in prange(S):
        vals_a = np.empty(K)
        vals_b = np.empty(K)
        eta = np.empty(MAX_LEVELS)
        eta_f = np.empty(MAX_LEVELS)
        acc_a = 0.0
        acc_b = 0.0
        for j in range(units.shape[0]):
            su = units[j]
            _world(s, su, su, key, order, src_b, data, lat, vals_b, vals_b, eta, eta_f, theta, ni, nf,
                   pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols,
                   blk_p, ivk_b, ivv_b, ivu_b, tables, needed)
            acc_b += _expected(outcome, s, vals_b, eta, theta, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev,
                               blk_ptr, blk_var, blk_cols, blk_p, ivk_b, level)
            _world(s, su, su, key, order, src_a, data, lat, vals_b, vals_a, eta, eta_f, theta, ni, nf,
                   pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols,
                   blk_p, ivk_a, ivv_a, ivu_a, tables, needed)
            acc_a += _expected(outcome, s, vals_a, eta, theta, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev,
                               blk_ptr, blk_var, blk_cols, blk_p, ivk_a, level)
        out[s, 0] = acc_a / units.shape[0]
        out[s, 1] = acc_b / units.shape[0]
    return out


@njit(cache=True, inline="always")
def _output(k, su, vals, fact, orig, ni, pf):
    # An unchanged value is returned as the data's own number, so consistency holds bit for bit.
    if vals[k] == fact[k] and not math.isnan(orig[su, k]):
        return orig[su, k]
    return to_original(ni[k, 9], pf[k, 0], pf[k, 1], vals[k])


@njit(cache=True, parallel=True)
def units_kernel(prog, theta, data, orig, lat, units, draws, paired, key, src_f, src_c, ivk, ivv, ivu, tables,
                 needed, outputs, out):
    """Per unit and draw, the values of ``outputs`` (original units) in the counterfactual world.

    ``orig`` holds the data in original units (NaN where unknown). ``src_f`` says how the factual
    world is formed (data, latent draws, or fresh for new units);
    ``src_c`` how the intervened world is (data for non-descendants, abduction, or fresh).
    With ``paired``, unit j uses only draw ``draws[j]`` (simulation of new units); otherwise every
    unit is crossed with every draw. ``out`` is (n_draws, n_units, n_outputs) or
    (1, n_units, n_outputs) when paired.
    """
    (order, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols,
     blk_p) = prog
    K = order.shape[0]
    nu = units.shape[0]
    no_iv = np.zeros(K, dtype=np.int64)
    for j in prange(nu):
        su = units[j]
        vals = np.empty(K)
        fact = np.empty(K)
        eta = np.empty(MAX_LEVELS)
        eta_f = np.empty(MAX_LEVELS)
        nd = 1 if paired else draws.shape[0]
        for d in range(nd):
            s = draws[j] if paired else draws[d]
            _world(s, su, su, key, order, src_f, data, lat, fact, fact, eta, eta_f, theta, ni, nf, pf,
                   col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols, blk_p, no_iv, ivv, ivu,
                   tables, needed)
            _world(s, su, su, key, order, src_c, data, lat, fact, vals, eta, eta_f, theta, ni, nf, pf,
                   col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols, blk_p, ivk, ivv, ivu,
                   tables, needed)
            for o in range(outputs.shape[0]):
                k = outputs[o]
                out[d, j, o] = _output(k, su, vals, fact, orig, ni, pf)


@njit(cache=True, parallel=True)
def units_summary_kernel(prog, theta, data, orig, lat, units, draws, key, src_f, src_c, ivk, ivv, ivu, tables,
                         needed, outputs, lo_q, hi_q, out):
    """Like :func:`units_kernel` crossed with every draw, but reduced per unit on the fly to
    (mean, sd, lower quantile, upper quantile) of each output: memory O(units), not O(draws x units)."""
    (order, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols,
     blk_p) = prog
    K = order.shape[0]
    nu = units.shape[0]
    nd = draws.shape[0]
    no_iv = np.zeros(K, dtype=np.int64)
    for j in prange(nu):
        su = units[j]
        vals = np.empty(K)
        fact = np.empty(K)
        eta = np.empty(MAX_LEVELS)
        eta_f = np.empty(MAX_LEVELS)
        buf = np.empty((outputs.shape[0], nd))
        for d in range(nd):
            s = draws[d]
            _world(s, su, su, key, order, src_f, data, lat, fact, fact, eta, eta_f, theta, ni, nf, pf,
                   col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols, blk_p, no_iv, ivv, ivu,
                   tables, needed)
            _world(s, su, su, key, order, src_c, data, lat, fact, vals, eta, eta_f, theta, ni, nf, pf,
                   col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols, blk_p, ivk, ivv, ivu,
                   tables, needed)
            for o in range(outputs.shape[0]):
                k = outputs[o]
                buf[o, d] = _output(k, su, vals, fact, orig, ni, pf)
        for o in range(outputs.shape[0]):
            row = np.sort(buf[o])
            m = row.mean()
            out[j, o, 0] = m
            out[j, o, 1] = math.sqrt(((row - m) ** 2).mean())  # two-pass: no cancellation
            out[j, o, 2] = _quantile(row, lo_q)
            out[j, o, 3] = _quantile(row, hi_q)


@njit(cache=True)
def _quantile(sorted_row, q):
    # linear interpolation between order statistics (numpy's default "linear" method)
    n = sorted_row.shape[0]
    pos = q * (n - 1)
    i = int(math.floor(pos))
    j = min(i + 1, n - 1)
    w = pos - i
    return sorted_row[i] * (1.0 - w) + sorted_row[j] * w
