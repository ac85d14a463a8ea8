"""Scalar functions that numba's loop vectoriser can vectorise (used by :mod:`causal_wm.looped`):
select, exp, log, cos and sin, and a row sum.

numba compiles ``math.exp`` to a call of the C library, one element at a time, and a Python
conditional expression to a branch; either keeps a loop scalar. :func:`select` is one LLVM
``select`` and :func:`vexp` is ``exp`` in arithmetic the vectoriser handles (AVX-512 on the
benchmark machine: the numba loop's ``exp`` went from about 130 to 860 million a second per core).
Both are module-level so that loops calling them can be cached on disk by numba.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def select(typingctx, p, a, b):
    """``a`` where ``p`` else ``b``, as one branch-free LLVM ``select`` (``p`` boolean, ``a`` and
    ``b`` of one type).

    Examples
    --------
    >>> njit(lambda p, a, b: select(p, a, b))(False, 1.0, 2.0)
    2.0
    """
    if not isinstance(p, types.Boolean) or a != b:
        return None

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return a(p, a, b), codegen


@intrinsic
def _bits_to_float(typingctx, x):
    """The float64 whose bits are the int64 ``x``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


_INV_LN2, _LN2_HI, _LN2_LO = 1.4426950408889634, 0.6931471803691238, 1.9082149292705877e-10
# exp(r) on [0, ln2] by a polynomial of degree 11: the Chebyshev fit of mpmath
# (``mpmath.chebyfit(mpmath.exp, [0, ln2], 12)`` at 50 digits), coefficients rounded to float64; its
# largest error is 4.5e-18, under the 1.1e-16 of float64 rounding
_C = (1.0, 1.0000000000000018, 0.49999999999987943, 0.16666666666990854, 0.04166666662168456,
      0.008333333701134052, 0.001388886985494254, 0.00019841916794385652, 2.478696907686569e-05,
      2.7774198867848245e-06, 2.554057837637411e-07, 3.551095573405242e-08)
# exp's constants in one tuple (:func:`vexp_k`): the clamp, 1/ln2, ln2 in two parts, the polynomial
EXP_K = (-746.0, 710.0, _INV_LN2, _LN2_HI, _LN2_LO) + _C
TINY = 2.2250738585072014e-308  # the smallest normal float64: vexp's results below it are 0


@njit(inline="always", cache=True)
def _horner(k, first, last, r):
    """k[first] + r k[first + 1] + ... + r^(last - first) k[last], by Horner's scheme (the loop is
    unrolled by the compiler: its bounds are constants where it is inlined)."""
    p = k[last]
    for i in range(last - 1, first - 1, -1):
        p = k[i] + r * p
    return p


@njit(inline="always", cache=True)
def vexp(x):
    """exp(x) within 2 ulp of the C library's where that is at least :data:`TINY` (x above
    -708.3965), and 0 below (as XLA's exp on the CPU, which flushes subnormal numbers to 0); inf
    where exp overflows (above 709.7827); NaN kept.

    exp(x) = 2^n exp(r) with n = floor(x / ln2), so that r is in [0, ln2) and 2^n below 2^1024
    wherever exp(x) is finite, and exp(r) by a polynomial of degree 11 fitted on that interval (error
    below 5e-18, see :data:`_C`), evaluated by Horner's scheme (the loop overlaps its chain of
    dependent multiply-adds with other elements' work). 2^n is built from the bits of n + 1023,
    0 where that is not positive.

    Examples
    --------
    >>> abs(vexp(1.0) / math.e - 1) < 1e-15, vexp(-720.0), vexp(800.0)
    (True, 0.0, inf)
    """
    return vexp_k(x, EXP_K)


@njit(inline="always", cache=True)
def vexp_k(x, k):
    """:func:`vexp` with its constants given as ``k`` (:data:`EXP_K`; see :data:`CONSTANTS` for why).

    Examples
    --------
    >>> vexp_k(1.0, EXP_K) == vexp(1.0)
    True
    """
    # clamped where the result is 0 or inf anyway, so that n stays a small integer (NaN is clamped
    # too, and returned by the last select)
    xc = select(x > k[0], x, k[0])
    xc = select(xc < k[1], xc, k[1])
    n = np.floor(xc * k[2])
    r = (xc - n * k[3]) - n * k[4]
    p = _horner(k, 5, 16, r)
    e = np.int64(n) + 1023  # the biased exponent of 2^n: 2047 (inf) above 709.78, not positive below -708.4
    e = select(e > 0, e, 0)
    return select(x == x, p * _bits_to_float(e << 52), x)


@intrinsic
def _float_to_bits(typingctx, x):
    """The int64 whose bits are the float64 ``x``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


_LN2 = 0.6931471805599453
# log(m) = 2 atanh(s), s = (m - 1) / (m + 1): the odd series 2 (s + s^3/3 + s^5/5 + ...) in z = s^2,
# 12 terms (|s| <= 0.1716 for m in [sqrt(1/2), sqrt(2)): truncation below 1e-18)
_A = tuple(1.0 / (2 * k + 1) for k in range(12))
_SUBNORMAL = 2.2250738585072014e-308


# log's constants in one tuple (:func:`vlog_k`): the smallest normal number, 2^54, sqrt 2, ln 2, then
# the series' coefficients
LOG_K = (_SUBNORMAL, 18014398509481984.0, 1.4142135623730951, _LN2) + _A


@njit(inline="always", cache=True)
def vlog(x):
    """Natural log within 4 ulp of the C library's (measured on 2.2 million arguments from 5e-324 to
    1e304), exact at the edges (log 0 = -inf, log of a
    negative number or NaN = NaN, log inf = inf), in arithmetic the loop vectoriser handles.

    x = 2^e m with m in [sqrt(1/2), sqrt(2)) from the bits of x (subnormals scaled by 2^54 first),
    log m = 2 atanh((m - 1) / (m + 1)) by its series (Horner's scheme), and log x = e ln2 + log m.

    Examples
    --------
    >>> abs(vlog(math.e) - 1.0) < 1e-15, vlog(1.0), vlog(0.0), math.isnan(vlog(-1.0))
    (True, 0.0, -inf, True)
    """
    return vlog_k(x, LOG_K)


@njit(inline="always", cache=True)
def vlog_k(x, k):
    """:func:`vlog` with its constants given as ``k`` (:data:`LOG_K`; see :data:`CONSTANTS` for why).

    Examples
    --------
    >>> vlog_k(3.0, LOG_K) == vlog(3.0)
    True
    """
    tiny = x < k[0]
    xs = select(tiny, x * k[1], x)
    bits = _float_to_bits(xs)
    e = ((bits >> 52) & 0x7FF) - select(tiny, 1077, 1023)
    m = _bits_to_float((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > k[2]
    m = select(big, m * 0.5, m)
    e = select(big, e + 1, e)
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    q = _horner(k, 4, 15, z)
    y = np.float64(e) * k[3] + 2.0 * s * q
    y = select(x > 0.0, y, select(x == 0.0, -np.inf, np.nan))
    y = select(x == np.inf, np.inf, y)
    return select(x == x, y, x)


_TWO_OVER_PI = 0.6366197723675814
# pi/2 in three parts, the first two with 33 significant bits, so that n * part is exact for |n| < 2^20
_P1, _P2, _P3 = 1.5707963267341256, 6.077100506303966e-11, 2.0222662487959506e-21
_S = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(9))  # sin r: r^1 .. r^17
_K = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(10))  # cos r: r^0 .. r^18
COS_DOMAIN = 1.0e6


# cos's and sin's constants in one tuple (:func:`vcos_k`, :func:`vsin_k`): 2/pi, pi/2 in three
# parts, the domain, then sin's and cos's polynomials
TRIG_K = (_TWO_OVER_PI, _P1, _P2, _P3, COS_DOMAIN) + _S + _K


@njit(inline="always", cache=True)
def _sin_cos(x, k):
    """(sin r, cos r, n): x = n pi/2 + r with |r| <= pi/4, n rounded to the nearest integer (pi/2
    in three parts: Cody and Waite), sin r and cos r by their Taylor polynomials (truncation below
    1e-19; Horner's scheme in r^2)."""
    n = np.floor(x * k[0] + 0.5)
    r = ((x - n * k[1]) - n * k[2]) - n * k[3]
    z = r * r
    s = _horner(k, 5, 13, z)
    c = _horner(k, 14, 23, z)
    return r * s, c, np.int64(n)


@njit(inline="always", cache=True)
def _cos_quadrant(x, k, shift):
    """cos of x - shift pi/2 (shift 0: cos x; 3: sin x): the quadrant of x picks +-sin or +-cos of
    the remainder; NaN outside :data:`COS_DOMAIN`."""
    s, c, n = _sin_cos(x, k)
    q = (n + shift) & 3
    y = select(q == 0, c, select(q == 1, -s, select(q == 2, -c, s)))
    return select(abs(x) <= k[4], y, np.nan)


@njit(inline="always", cache=True)
def vcos(x):
    """cos(x) within 3e-16 of the C library's for |x| <= :data:`COS_DOMAIN` (NaN beyond it, and
    for infinite or NaN x), in arithmetic the loop vectoriser handles.

    x is reduced by pi/2 in three parts (Cody and Waite), and the quadrant picks +-sin or +-cos of
    the remainder. The engine's only cosine is of 2 pi u, u in [0, 1) (Box-Muller normals).

    Examples
    --------
    >>> abs(vcos(1.0) - math.cos(1.0)) <= 2 * math.ulp(math.cos(1.0)), vcos(0.0), math.isnan(vcos(1e7))
    (True, 1.0, True)
    """
    return vcos_k(x, TRIG_K)


@njit(inline="always", cache=True)
def vcos_k(x, k):
    """:func:`vcos` with its constants given as ``k`` (:data:`TRIG_K`; see :data:`CONSTANTS` for why).

    Examples
    --------
    >>> vcos_k(2.0, TRIG_K) == vcos(2.0)
    True
    """
    return _cos_quadrant(x, k, 0)


@njit(inline="always", cache=True)
def vsin(x):
    """sin(x), as :func:`vcos` (the same domain and accuracy).

    Examples
    --------
    >>> abs(vsin(1.0) - math.sin(1.0)) <= 2 * math.ulp(math.sin(1.0)), vsin(0.0), math.isnan(vsin(-1e7))
    (True, 0.0, True)
    """
    return vsin_k(x, TRIG_K)


@njit(inline="always", cache=True)
def vsin_k(x, k):
    """:func:`vsin` with its constants given as ``k`` (:data:`TRIG_K`).

    Examples
    --------
    >>> vsin_k(2.0, TRIG_K) == vsin(2.0)
    True
    """
    return _cos_quadrant(x, k, 3)  # sin x = cos(x - pi/2): three quadrants on


# Every function's constants in one array, which the generated loops (causal_wm.looped) take as an
# argument and unpack into each function's tuple before their loop. Why not literals: a loop with
# more live values than registers has LLVM load a literal again where it is used, with numba's large
# code model two instructions each time (its address, then a broadcast); a value the loop was
# handed is kept in a register or a stack slot that an instruction reads in passing. Measured on the
# throughput benchmark's loop: 146 -> 119 instructions per 8 elements; with exp's Horner scheme,
# literals ran 5% slower than this (the loop is bound by its floating-point operations, not by
# the count of instructions).
_TUPLES = {"exp": EXP_K, "log": LOG_K, "trig": TRIG_K}
_ENDS = np.cumsum([len(t) for t in _TUPLES.values()]).tolist()
# function -> (start, stop) of its constants in CONSTANTS
LAYOUT = {name: (end - len(t), end) for (name, t), end in zip(_TUPLES.items(), _ENDS, strict=True)}
CONSTANTS = np.array(sum(_TUPLES.values(), ()))
CONSTANTS.flags.writeable = False


@njit(inline="always", cache=True)
def rowsum(a, n):
    """``a[0] + ... + a[n - 1]`` in a fixed order: eight interleaved partial sums (so that the loop
    vectorises), added pairwise at the end.

    Examples
    --------
    >>> rowsum(np.arange(1.0, 12.0), 10)
    55.0
    """
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = 0.0
    m = n - n % 8
    for i in range(0, m, 8):
        p0 += a[i]
        p1 += a[i + 1]
        p2 += a[i + 2]
        p3 += a[i + 3]
        p4 += a[i + 4]
        p5 += a[i + 5]
        p6 += a[i + 6]
        p7 += a[i + 7]
    for i in range(m, n):
        p0 += a[i]
    return ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))
