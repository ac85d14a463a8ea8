"""Generic compiled kernels over posterior draws x units (numba): the reference implementation
of the structural equations, and the engine for every query the fused one does not take.

Each kernel walks the nodes in topological order for one (draw, unit) pair, evaluating the
mechanism from flat arrays built by :mod:`causal_wm.program`. Nothing per (draw, unit) is
materialised unless the caller asks for every draw; summaries are reduced inside the kernel.
:mod:`causal_wm.fused` specialises the same equations to one model and query (traced with JAX,
:mod:`causal_wm.traced` mirrors every function here); large counterfactual and effect queries
run there, small ones, simulation and predictive checks run here.

Randomness is counter-based: the uniform for (draw, unit, node, slot) is a hash of those integers
and the query's key. The numbers therefore do not depend on chunking or thread count, both worlds
of a contrast share their noise (common random numbers), and every posterior draw gets its own
independent noise.

Cost: this kernel interprets any model's layout per element (branches on source, family and
intervention kind; walks parent and term lists), which measured about 50x slower than a loop
fused by hand for the benchmark model, and 10-60x slower than the fused engine
(docs/performance.md); in exchange it needs no per-model compile (numba caches it on disk).
Changes to the mechanism math here must be mirrored in :mod:`causal_wm.traced`
(``tests/test_fused_kernel.py`` compares the two).
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
    """A uniform in (0, 1) for (key, draw s, unit u, node k, slot).

    The hash of the draw and the hash of the unit are added, and the sum, offset by node and slot,
    is mixed once more. The fused loop (:mod:`causal_wm.looped`) thus reads the two hashes from
    per-draw and per-unit tables and mixes once per element; mixing the draw's hash with the unit
    first, as before, cost a second round per element (the loop's third costliest part after its
    exps). ``tests/test_random_numbers.py`` checks the result for uniformity and independence.
    """
    z = _mix(np.uint64(key) + np.uint64(s)) + _mix(np.uint64(u) * _M2)
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


# Bernoulli draws and couplings compare a uniform with P(Y = 0) = 1 / (1 + exp(eta)). They do
# so multiplied out, without a division (the division was the costliest operation of the fused
# loop's binary nodes), in forms whose overflows to inf still give the comparison's limit.


@njit(cache=True, inline="always")
def bernoulli_draw(uu, eta):
    """1.0 where the uniform ``uu`` exceeds P(Y = 0) of logit ``eta``, else 0.0:
    ``uu > 1 / (1 + exp(eta))`` as ``uu (1 + exp(eta)) > 1`` (exp(eta) = inf: 1; NaN: 0)."""
    return 1.0 if uu * (1.0 + math.exp(eta)) > 1.0 else 0.0


@njit(cache=True, inline="always")
def bernoulli_couple(y, v, eta_f, eta_c):
    """The counterfactual of an observed bernoulli ``y`` (0.0 or 1.0) when its logit moves from
    ``eta_f`` to ``eta_c``, for the uniform ``v``.

    The noise is uniform on the interval that gave ``y``: ``v q_f`` for y = 0 and
    ``q_f + v (1 - q_f)`` for y = 1, with q = P(Y = 0) = 1 / (1 + e^eta); the counterfactual is 1
    where it exceeds ``q_c``. Multiplied out, with A = e^eta for y = 0 and A = e^-eta for y = 1
    (so that A's overflow to inf stands for a probability of 0 or 1, as the limit says):

    * y = 0: ``v (1 + A_c) > 1 + A_f``;
    * y = 1: ``v (1 + A_c) > A_c - A_f`` (from ``(1 - v) (1 + A_c) < 1 + A_f``).

    Both are strict, so that ``eta_c = eta_f`` gives back ``y`` for every v in (0, 1) wherever
    ``y`` has a probability above 0 in float64 (|eta| below exp's overflow at 709.78).
    """
    if y > 0.5:
        a_f, a_c = math.exp(-eta_f), math.exp(-eta_c)
        rhs = a_c - a_f
    else:
        a_f, a_c = math.exp(eta_f), math.exp(eta_c)
        rhs = 1.0 + a_f
    return 1.0 if v * (1.0 + a_c) > rhs else 0.0


# Counts: the pmf recurrence runs in log space (exp(-mu) underflows to 0 for mu > ~745, which
# made every CDF 0) and starts COUNT_SIGMAS SDs below the mean (the mass below is < 1e-30, far
# under a uniform's resolution), so a walk costs O(SD) steps for near-symmetric counts. A walk
# that would take more than MAX_COUNT_STEPS (a Poisson mean above ~1.7e9, a negative binomial
# with phi = 2 and mean above ~1e5; in practice only absurd interventions) is answered by the
# continuity-corrected normal approximation instead: approximate for a skewed negative
# binomial, but no parameter value can hang a query.
COUNT_SIGMAS = 12.0
MAX_COUNT_STEPS = 1_000_000


@njit(cache=True, inline="always")
def _phi(z):
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@njit(cache=True)
def _count_sd(fam, mu, phi):
    return math.sqrt(mu if fam == POISSON else mu + mu * mu / phi)


@njit(cache=True)
def _long_walk(fam, mu, phi):
    sd = _count_sd(fam, mu, phi)  # the walk spans max(0, mu - c sd) to mu + c sd (written without cancellation)
    return COUNT_SIGMAS * sd + min(mu, COUNT_SIGMAS * sd) > MAX_COUNT_STEPS


@njit(cache=True)
def _log_pmf(fam, k, mu, phi):
    """log P(Y = k) of a Poisson(mu) or NB2(mu, phi) count, k >= 0 a whole number."""
    if fam == POISSON:
        if k == 0.0:
            return -mu
        # k log(mu) - mu - lgamma(k + 1) cancels terms of size mu log mu (1e-7 lost at mu = 1e8);
        # Stirling's form keeps only small terms: k log(mu / k) + k - mu - log(2 pi k) / 2 - stirlerr(k)
        if k > 15.0:
            stirlerr = 1.0 / (12.0 * k) - 1.0 / (360.0 * k**3) + 1.0 / (1260.0 * k**5)
        else:
            stirlerr = math.lgamma(k + 1.0) - (k * math.log(k) - k + 0.5 * math.log(2.0 * math.pi * k))
        return k * math.log1p((mu - k) / k) + (k - mu) - 0.5 * math.log(2.0 * math.pi * k) - stirlerr
    return (math.lgamma(k + phi) - math.lgamma(phi) - math.lgamma(k + 1.0)
            + phi * (math.log(phi) - math.log(phi + mu)) + k * (math.log(mu) - math.log(mu + phi)))


@njit(cache=True)
def _log_ratio(fam, mu, phi):
    # the constant part of log p(k+1) - log p(k)
    return math.log(mu) if fam == POISSON else math.log(mu) - math.log(mu + phi)


@njit(cache=True)
def _count_start(fam, mu, phi):
    """(first value summed, its log pmf, log of the recurrence's constant ratio)."""
    k0 = max(0.0, np.floor(mu - COUNT_SIGMAS * _count_sd(fam, mu, phi)))  # np: math.floor is int64 in numba
    return k0, _log_pmf(fam, k0, mu, phi), _log_ratio(fam, mu, phi)


@njit(cache=True, inline="always")
def _count_step(fam, k, phi, logr):
    # log p(k+1) - log p(k)
    if fam == POISSON:
        return logr - math.log(k + 1.0)
    return logr + math.log(k + phi) - math.log(k + 1.0)


@njit(cache=True)
def count_cdf_pair(fam, mu, phi, y):
    """(F(y-1), F(y)) of a Poisson(mu) or NB2(mu, phi) count, by the pmf recurrence."""
    if not mu > 0.0:  # mu underflowed to 0: all mass at 0
        return (0.0, 1.0) if y == 0 else (1.0, 1.0)
    sd = _count_sd(fam, mu, phi)
    if not math.isfinite(sd):
        return 0.0, 0.0
    if _long_walk(fam, mu, phi):
        return _phi((y - 0.5 - mu) / sd) if y > 0 else 0.0, _phi((y + 0.5 - mu) / sd)
    k, lp, logr = _count_start(fam, mu, phi)
    if y < k:
        return 0.0, 0.0
    lo = 0.0
    cdf = math.exp(lp)
    steps = 0
    while k < y and steps < MAX_COUNT_STEPS:
        lo = cdf
        lp += _count_step(fam, k, phi, logr)
        k += 1.0
        cdf += math.exp(lp)
        steps += 1
    return min(lo, 1.0), min(cdf, 1.0)


# The upper tail. Where the observed count lies above its mean, the coupling works with P(Y > y)
# instead of F(y): far in the tail F rounds to 1 (a count of 20 where the mean is 1.7 has
# 1 - F = 1e-15), and the counterfactual drawn from F would be wrong. Tail sums are added from the
# far end downward, from a count past which the mass left is below 2^-60 of what is summed.
TAIL_FLOOR = 42.0  # natural log of 2^60


@njit(cache=True)
def _tail_top(fam, mu, phi, k, log_floor):
    """(count, its log pmf) from ``k`` (> mu) upward, in doubling steps, past which the pmf's mass
    is below exp(``log_floor``) (past the mean the pmf falls at least geometrically: bounded by
    p(k) / (1 - r), r the largest ratio p(j+1)/p(j) beyond k)."""
    d = max(1.0, np.ceil(_count_sd(fam, mu, phi)))
    lp = _log_pmf(fam, k, mu, phi)
    for _ in range(200):
        r = mu / (k + 1.0) if fam == POISSON else max((k + phi) / (k + 1.0), 1.0) * mu / (mu + phi)
        if lp - math.log1p(-r) < log_floor:
            break
        k += d
        d *= 2.0
        lp = _log_pmf(fam, k, mu, phi)
    return k, lp


@njit(cache=True)
def upper_tail(fam, mu, phi, y):
    """Whether the coupling of an observed count ``y`` works on the upper tail (y above the mean)."""
    return mu > 0.0 and math.isfinite(_count_sd(fam, mu, phi)) and y > mu


@njit(cache=True)
def count_sf_pair(fam, mu, phi, y):
    """(P(Y > y), P(Y >= y)) of a Poisson(mu) or NB2(mu, phi) count, for ``y`` above the mean."""
    sd = _count_sd(fam, mu, phi)
    if _long_walk(fam, mu, phi):
        return _phi((mu - y - 0.5) / sd), _phi((mu - y + 0.5) / sd)
    logr = _log_ratio(fam, mu, phi)
    k, lp = _tail_top(fam, mu, phi, y + 1.0, _log_pmf(fam, y + 1.0, mu, phi) - TAIL_FLOOR)
    t = 0.0
    for _ in range(MAX_COUNT_STEPS):
        t += math.exp(lp)  # P(Y >= k)
        if k <= y + 1.0:
            break
        k -= 1.0
        lp -= _count_step(fam, k, phi, logr)
    return t, t + math.exp(lp - _count_step(fam, y, phi, logr))


@njit(cache=True)
def count_quantile_sf(fam, mu, phi, w, k_from):
    """Smallest y with P(Y > y) <= w (the quantile at 1 - w, without rounding 1 - w), the tail
    summed downward from above ``k_from`` (a guess of the answer: the nearer, the fewer steps)."""
    if not mu > 0.0:
        return 0.0
    sd = _count_sd(fam, mu, phi)
    if not math.isfinite(sd):
        return math.inf
    w = max(w, 5e-324)
    if _long_walk(fam, mu, phi):
        lo, hi = -40.0, 40.0  # bisection for z with 1 - Phi(z) = w
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if _phi(-mid) > w:
                lo = mid
            else:
                hi = mid
        return max(0.0, np.floor(mu + sd * hi + 0.5))
    logr = _log_ratio(fam, mu, phi)
    k_from = max(k_from, np.floor(mu) + 1.0)
    k, lp = _tail_top(fam, mu, phi, k_from, min(_log_pmf(fam, k_from, mu, phi), math.log(w)) - TAIL_FLOOR)
    t = 0.0
    for _ in range(MAX_COUNT_STEPS):
        t += math.exp(lp)  # P(Y >= k); P(Y >= k + 1) <= w
        if t > w or k <= 0.0:
            break
        k -= 1.0
        lp -= _count_step(fam, k, phi, logr)
    return k


@njit(cache=True)
def count_quantile(fam, mu, phi, u):
    """Smallest y with F(y) >= u for a Poisson(mu) or NB2(mu, phi) count."""
    if not mu > 0.0:
        return 0.0
    sd = _count_sd(fam, mu, phi)
    if not math.isfinite(sd):
        return math.inf
    if _long_walk(fam, mu, phi):
        lo, hi = -40.0, 40.0  # bisection for the standard normal quantile of u
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            if _phi(mid) < u:
                lo = mid
            else:
                hi = mid
        return max(0.0, np.floor(mu + sd * hi + 0.5))
    k, lp, logr = _count_start(fam, mu, phi)
    p = math.exp(lp)
    cdf = p
    steps = 0
    while cdf < u and steps < MAX_COUNT_STEPS:
        lp += _count_step(fam, k, phi, logr)
        k += 1.0
        p = math.exp(lp)
        cdf += p
        steps += 1
        if p == 0.0 and k > mu:  # past the mode with nothing left to add: u is above the float sum
            break
    return k


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


@njit(cache=True, inline="always")
def _column(c, vals, pf, fac_ptr, fac_var, fac_lev):
    # design column c at node values ``vals`` (as in linear_predictor)
    x = 1.0
    for f in range(fac_ptr[c], fac_ptr[c + 1]):
        v = fac_var[f]
        if fac_lev[f] < 0:
            x *= (vals[v] - pf[v, 4]) * (1.0 / pf[v, 5])  # as traced.standardised: a multiply, not a division
        elif vals[v] != fac_lev[f]:
            x = 0.0
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
        x = _column(c0 + t, vals, pf, fac_ptr, fac_var, fac_lev)
        if x != 0.0:
            for e in range(neta):
                eta[e] += theta[s, p_b + e * T + t] * x
    for b in range(blk_ptr[k], blk_ptr[k + 1]):
        g = int(vals[blk_var[b]])
        nc = blk_cols[b, 1]
        for j in range(nc):
            x = _column(blk_cols[b, 0] + j, vals, pf, fac_ptr, fac_var, fac_lev)
            eta[0] += theta[s, blk_p[b] + g * nc + j] * x


@njit(cache=True)
def linear_delta(k, s, vals, fact, delta, theta, ni, pf, col_ptr, fac_ptr, fac_var, fac_lev,
                 blk_ptr, blk_var, blk_cols, blk_p):
    """Fill delta[:n_eta] with node k's linear predictor(s) under ``vals`` minus under ``fact``,
    term by term (a term whose inputs did not change adds nothing): abduction then needs only
    what an intervention changed, and for additive noise no factual predictor at all."""
    neta = ni[k, 2]
    T = ni[k, 3]
    p_b = ni[k, 5]
    for e in range(neta):
        delta[e] = 0.0
    c0 = col_ptr[k]
    for t in range(T):
        d = (_column(c0 + t, vals, pf, fac_ptr, fac_var, fac_lev)
             - _column(c0 + t, fact, pf, fac_ptr, fac_var, fac_lev))
        if d != 0.0:
            for e in range(neta):
                delta[e] += theta[s, p_b + e * T + t] * d
    for b in range(blk_ptr[k], blk_ptr[k + 1]):
        g_c = int(vals[blk_var[b]])
        g_f = int(fact[blk_var[b]])
        nc = blk_cols[b, 1]
        for j in range(nc):
            c = blk_cols[b, 0] + j
            x_c = _column(c, vals, pf, fac_ptr, fac_var, fac_lev)
            x_f = _column(c, fact, pf, fac_ptr, fac_var, fac_lev)
            th_c = theta[s, blk_p[b] + g_c * nc + j]
            if g_c == g_f:
                delta[0] += th_c * (x_c - x_f)
            else:  # another group: another coefficient
                delta[0] += th_c * x_c - theta[s, blk_p[b] + g_f * nc + j] * x_f


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
        return bernoulli_draw(uu, eta[0])
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


@njit(cache=True, inline="always")
def additive(ni, k):
    """Whether node k's noise is added to its predictor (abduction is then exact)."""
    fam = ni[k, 0]
    return fam == NORMAL or fam == LOGNORMAL or fam == STUDENT_T or ni[k, 1] == 1


@njit(cache=True)
def abduct_predict(k, s, u, key, y, eta_f, eta_c, theta, ni, nf, pf):
    """Counterfactual value of node k: noise abducted from factual ``y`` under ``eta_f``,
    pushed through the mechanism under ``eta_c`` (internal scale). On entry ``eta_c`` holds the
    change of the predictor (:func:`linear_delta`); ``eta_f`` is read (and ``eta_c`` completed to
    ``eta_f + delta``) only where the noise is not additive."""
    fam = ni[k, 0]
    if additive(ni, k):
        return y + eta_c[0]
    for e in range(ni[k, 2]):
        eta_c[e] = eta_f[e] + eta_c[e]
    v = uniform(key, s, u, k, 0)
    if fam == BERNOULLI:
        return bernoulli_couple(y, v, eta_f[0], eta_c[0])
    if fam == POISSON or fam == NEGBIN:
        phi = theta[s, ni[k, 8]] if fam == NEGBIN else 0.0
        mu_f, mu_c = math.exp(pf[k, 3] + eta_f[0]), math.exp(pf[k, 3] + eta_c[0])
        if upper_tail(fam, mu_f, phi, y):  # the same coupling, on P(Y > y) (see TAIL_FLOOR)
            s_hi, s_lo = count_sf_pair(fam, mu_f, phi, y)
            guess = np.floor(mu_c + (y - mu_f) * (_count_sd(fam, mu_c, phi) / _count_sd(fam, mu_f, phi)) + 0.5)
            return count_quantile_sf(fam, mu_c, phi, s_hi + (1.0 - v) * (s_lo - s_hi), guess + 1.0)
        lo, hi = count_cdf_pair(fam, mu_f, phi, int(y))
        uu = lo + v * (hi - lo)
        return count_quantile(fam, mu_c, phi, uu)
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
        if discrete:  # step function: cell i holds the quantile at its midpoint
            x = tables[q, min(int(uu * M), M - 1)]
        else:  # entry i is the quantile at (i + 0.5) / M: interpolate between midpoints
            pos = min(max(uu * M - 0.5, 0.0), M - 1.0)
            i = min(int(pos), M - 2)
            w = pos - i
            x = tables[q, i] * (1.0 - w) + tables[q, i + 1] * w
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
        elif sk == FRESH:
            linear_predictor(k, s, vals, eta, theta, ni, nf, pf, col_ptr, fac_ptr, fac_var,
                             fac_lev, blk_ptr, blk_var, blk_cols, blk_p)
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
                linear_delta(k, s, vals, fact, eta, theta, ni, pf, col_ptr, fac_ptr, fac_var, fac_lev,
                             blk_ptr, blk_var, blk_cols, blk_p)
                if not additive(ni, k):
                    linear_predictor(k, s, fact, eta_f, theta, ni, nf, pf, col_ptr, fac_ptr,
                                     fac_var, fac_lev, blk_ptr, blk_var, blk_cols, blk_p)
                nat = abduct_predict(k, s, u, key, fact[k], eta_f, eta, theta, ni, nf, pf)
        if ivk[k] != NONE:
            nat = apply_intervention(k, s, u, key, nat, ivk, ivv, iv_unit, tables, pf, ni)
        vals[k] = nat


@njit(cache=True, inline="always")
def _expected(outcome, s, vals, eta, theta, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var,
              blk_cols, blk_p, ivk, src, level):
    # E[outcome | its parents] in original units where the world regenerates it; an intervened
    # outcome is its set value, and one outside every intervention's reach its own (data or latent)
    # value, so that e.g. do(x = x + 1) against no intervention is exactly 1 for every unit
    if ivk[outcome] != NONE or src[outcome] == DATA or src[outcome] == LATENT:
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
                               blk_ptr, blk_var, blk_cols, blk_p, ivk_b, src_b, level)
            _world(s, su, su, key, order, src_a, data, lat, vals_b, vals_a, eta, eta_f, theta, ni, nf,
                   pf, col_ptr, fac_ptr, fac_var, fac_lev, blk_ptr, blk_var, blk_cols,
                   blk_p, ivk_a, ivv_a, ivu_a, tables, needed)
            acc_a += _expected(outcome, s, vals_a, eta, theta, ni, nf, pf, col_ptr, fac_ptr, fac_var, fac_lev,
                               blk_ptr, blk_var, blk_cols, blk_p, ivk_a, src_a, level)
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
        samp = np.empty(SUMMARY_SAMPLE)
        work = np.empty((2, nd))
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
            row_summary(buf[o], lo_q, hi_q, samp, work, out[j, o])


# Per-unit summaries need two quantiles of S draws per output. Sorting the S draws cost more than
# computing them (about 3e6 unit-draws/s for 4 outputs on 2 cores), so the order statistics are
# selected exactly instead: a systematic sample of SUMMARY_SAMPLE draws brackets each
# wanted rank, one branch-free pass counts what lies below each bracket and collects what lies
# strictly inside (ties with a bracket's ends are counted, so binary and constant rows collect
# nothing), and a quickselect finds the rank among the few collected. A bracket that misses (an
# unlucky sample) or a NaN falls back to a full sort, so the result is always numpy's "linear"
# quantile of the draws.
SUMMARY_SAMPLE = 64
SUMMARY_MARGIN = 4


@njit(cache=True, nogil=True)
def _select(a, n, r):
    """The r-th smallest (0-based) of ``a[:n]`` (no NaN), reordering ``a[:n]`` so that every entry
    after position r is >= it (quickselect, median-of-three pivots)."""
    lo, hi = 0, n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        pivot = max(min(x, y), min(max(x, y), z))
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if r <= j:
            hi = j
        elif r >= i:
            lo = i
        else:
            break
    return a[r]


@njit(cache=True, nogil=True)
def _pair(i, below, a, n_a, buf, nb, b):
    """Order statistics i and i + 1 given the bracket counts: ``below`` values under ``a``, ``n_a``
    equal to ``a``, ``buf[:nb]`` strictly inside, then values equal to ``b``."""
    r = i - below - n_a
    if r < 0:
        xi = a
    elif r < nb:
        xi = _select(buf, nb, r)
    else:
        return b, b
    if r + 1 < 0:
        return xi, a
    if r + 1 >= nb:
        return xi, b
    if r < 0:  # r + 1 == 0: the smallest inside
        m = buf[0]
        for t in range(1, nb):
            m = min(m, buf[t])
        return xi, m
    m = buf[r + 1]  # after the select, everything past r is >= xi: the next is their minimum
    for t in range(r + 2, nb):
        m = min(m, buf[t])
    return xi, m


@njit(cache=True, nogil=True, inline="always")
def _bracket(samp, i, n):
    # the sample's order statistics around rank i's expected place (selected, not sorted: cheaper)
    m = samp.shape[0]
    lo_pos = (i * m) // n - SUMMARY_MARGIN
    hi_pos = ((i + 1) * m) // n + 1 + SUMMARY_MARGIN
    return (_select(samp, m, lo_pos) if lo_pos >= 0 else -np.inf), (_select(samp, m, hi_pos) if hi_pos < m else np.inf)


@njit(cache=True, nogil=True)
def row_summary(row, lo_q, hi_q, samp, work, res):
    """(mean, SD, lo_q quantile, hi_q quantile) of ``row`` into ``res[:4]``.

    Quantiles are numpy's default ("linear") method; ``samp`` (SUMMARY_SAMPLE) and ``work``
    (2 x len(row)) are scratch space.
    """
    n = row.shape[0]
    m = 0.0
    lo = row[0]
    hi = row[0]
    for t in range(n):
        x = row[t]
        m += x
        lo = min(lo, x)
        hi = max(hi, x)
    m /= n
    if lo == hi and m == m:  # constant (e.g. an intervened node): nothing to select
        res[0], res[1], res[2], res[3] = lo, 0.0, lo, lo
        return
    v = 0.0
    for t in range(n):
        v += (row[t] - m) ** 2  # two-pass: no cancellation
    res[0] = m
    res[1] = math.sqrt(v / n)
    i1, j1, w1 = _interp_at(lo_q, n)
    i2, j2, w2 = _interp_at(hi_q, n)
    ns = samp.shape[0]
    ok = n >= 4 * ns
    if ok:
        stride = n // ns
        for t in range(ns):
            samp[t] = row[t * stride]
        a1, b1 = _bracket(samp, i1, n)
        a2, b2 = _bracket(samp, i2, n)
        lt1 = 0
        ea1 = 0
        eb1 = 0
        nb1 = 0
        lt2 = 0
        ea2 = 0
        eb2 = 0
        nb2 = 0
        nan = 0
        w_1 = work[0]
        w_2 = work[1]
        for t in range(n):  # branch-free: comparisons add, every value is stored, kept ones advance
            x = row[t]
            lt1 += x < a1
            ea1 += x == a1
            eb1 += x == b1
            w_1[nb1] = x
            nb1 += (x > a1) & (x < b1)
            lt2 += x < a2
            ea2 += x == a2
            eb2 += x == b2
            w_2[nb2] = x
            nb2 += (x > a2) & (x < b2)
            nan += x != x
        if a1 == b1:
            eb1 = 0
        if a2 == b2:
            eb2 = 0
        ok = (nan == 0 and lt1 <= i1 and j1 < lt1 + ea1 + nb1 + eb1
              and lt2 <= i2 and j2 < lt2 + ea2 + nb2 + eb2)
        if ok:
            xi, xj = _pair(i1, lt1, a1, ea1, w_1, nb1, b1)
            res[2] = xi * (1.0 - w1) + xj * w1
            xi, xj = _pair(i2, lt2, a2, ea2, w_2, nb2, b2)
            res[3] = xi * (1.0 - w2) + xj * w2
    if not ok:  # few draws, a NaN, or a bracket missed its rank: sort them all
        full = np.sort(row)
        if full[n - 1] != full[n - 1]:  # NaN sorts last; numpy's quantiles of such a row are NaN
            res[2], res[3] = np.nan, np.nan
            return
        res[2] = full[i1] * (1.0 - w1) + full[j1] * w1
        res[3] = full[i2] * (1.0 - w2) + full[j2] * w2


# units gathered together by summarise_cols: their draws share cache lines of the (draws, units) block
_GATHER = 8


@njit(cache=True, nogil=True)
def summarise_cols(vals, a, b, lo_q, hi_q, out):
    """``out[j - a, o] = row_summary(vals[o, :, j])`` for units ``a <= j < b`` of a (outputs,
    draws, units) block, as the numba loop writes it: each unit's draws are gathered into a
    contiguous row first, a few units at a time so that every cache line read serves all of
    them (runs without the GIL, so threads can share the units).

    Examples
    --------
    >>> vals = np.arange(24.0).reshape(1, 4, 6)   # one output, 4 draws, 6 units
    >>> out = np.empty((2, 1, 4))
    >>> summarise_cols(vals, 1, 3, 0.05, 0.95, out)
    >>> out[:, 0, 0]                               # the means of units 1 and 2
    array([10., 11.])
    """
    S = vals.shape[1]
    samp = np.empty(SUMMARY_SAMPLE)
    work = np.empty((2, S))
    rows = np.empty((_GATHER, S))
    for o in range(vals.shape[0]):
        for j0 in range(a, b, _GATHER):
            g = min(_GATHER, b - j0)
            for t in range(S):
                for k in range(g):
                    rows[k, t] = vals[o, t, j0 + k]
            for k in range(g):
                row_summary(rows[k], lo_q, hi_q, samp, work, out[j0 + k - a, o])


@njit(cache=True, nogil=True, inline="always")
def _interp_at(q, n):
    # numpy's "linear" method: between order statistics i and j with weight w on j
    pos = q * (n - 1)
    i = int(math.floor(pos))
    return i, min(i + 1, n - 1), pos - i


@njit(cache=True, nogil=True)
def summarise_rows(vals, n, lo_q, hi_q, out):
    """``out[j, o] = row_summary(vals[o, j])`` for the first ``n`` units of a (outputs, units,
    draws) chunk (used by :mod:`causal_wm.fused`; runs without the GIL)."""
    samp = np.empty(SUMMARY_SAMPLE)
    work = np.empty((2, vals.shape[2]))
    for j in range(n):
        for o in range(vals.shape[0]):
            row_summary(vals[o, j], lo_q, hi_q, samp, work, out[j, o])
