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
# exp(r) on |r| <= ln2/2 by a polynomial of degree 11: the Chebyshev fit of mpmath
# (``mpmath.chebyfit(mpmath.exp, [-ln2/2, ln2/2], 12)`` at 50 digits), coefficients rounded to
# float64; its largest error is 3.2e-18, under the 1.1e-16 of float64 rounding. Taylor's
# polynomial needed degree 13 for that (two more multiply-adds in every exp).
_C = (1.0, 1.0, 0.5000000000000019, 0.1666666666666668, 0.0416666666664881, 0.008333333333319601,
      0.0013888888952314775, 0.00019841269890047113, 2.4801485482328494e-05, 2.755724091857897e-06,
      2.763263963904103e-07, 2.5110037605963777e-08)


@njit(inline="always", cache=True)
def vexp(x):
    """exp(x) within 2 ulp of the C library's for normal results, exact at the edges (0 where
    exp(x) rounds to 0, below -745.13; inf where it overflows, above 709.78; NaN kept).

    exp(x) = 2^n exp(r) with |r| <= ln2/2 and exp(r) by a polynomial of degree 11 fitted on that
    interval (error below 4e-18, see :data:`_C`), evaluated by Estrin's scheme (pairs of terms,
    then pairs of pairs: a chain of 4 dependent multiply-adds instead of Horner's 11, which bound
    the loop); 2^n is applied as two factors, so that results in the subnormal range stay right.

    Examples
    --------
    >>> abs(vexp(1.0) / math.e - 1) < 1e-15, vexp(-800.0), vexp(800.0)
    (True, 0.0, inf)
    """
    # clamped where 2^n p itself rounds to 0 or overflows to inf, so no select is needed for those
    # results (NaN is clamped too, and returned by the last select)
    xc = select(x > -746.0, x, -746.0)
    xc = select(xc < 710.0, xc, 710.0)
    n = np.floor(xc * _INV_LN2 + 0.5)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    q0 = (_C[0] + _C[1] * r) + r2 * (_C[2] + _C[3] * r)
    q1 = (_C[4] + _C[5] * r) + r2 * (_C[6] + _C[7] * r)
    q2 = (_C[8] + _C[9] * r) + r2 * (_C[10] + _C[11] * r)
    p = (q0 + r4 * q1) + r8 * q2
    k = np.int64(n)
    k1 = k >> 1
    k2 = k - k1
    y = p * _bits_to_float((k1 + 1023) << 52) * _bits_to_float((k2 + 1023) << 52)
    return select(x == x, y, x)


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


@njit(inline="always", cache=True)
def vlog(x):
    """Natural log within 4 ulp of the C library's (measured on 2.2 million arguments from 5e-324 to
    1e304), exact at the edges (log 0 = -inf, log of a
    negative number or NaN = NaN, log inf = inf), in arithmetic the loop vectoriser handles.

    x = 2^e m with m in [sqrt(1/2), sqrt(2)) from the bits of x (subnormals scaled by 2^54 first),
    log m = 2 atanh((m - 1) / (m + 1)) by its series (Estrin's scheme), and log x = e ln2 + log m.

    Examples
    --------
    >>> abs(vlog(math.e) - 1.0) < 1e-15, vlog(1.0), vlog(0.0), math.isnan(vlog(-1.0))
    (True, 0.0, -inf, True)
    """
    tiny = x < _SUBNORMAL
    xs = select(tiny, x * 18014398509481984.0, x)  # 2^54
    bits = _float_to_bits(xs)
    e = ((bits >> 52) & 0x7FF) - select(tiny, 1077, 1023)
    m = _bits_to_float((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > 1.4142135623730951
    m = select(big, m * 0.5, m)
    e = select(big, e + 1, e)
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    z2 = z * z
    z4 = z2 * z2
    z8 = z4 * z4
    q0 = (_A[0] + _A[1] * z) + z2 * (_A[2] + _A[3] * z)
    q1 = (_A[4] + _A[5] * z) + z2 * (_A[6] + _A[7] * z)
    q2 = (_A[8] + _A[9] * z) + z2 * (_A[10] + _A[11] * z)
    y = np.float64(e) * _LN2 + 2.0 * s * ((q0 + z4 * q1) + z8 * q2)
    y = select(x > 0.0, y, select(x == 0.0, -np.inf, np.nan))
    y = select(x == np.inf, np.inf, y)
    return select(x == x, y, x)


_TWO_OVER_PI = 0.6366197723675814
# pi/2 in three parts, the first two with 33 significant bits, so that n * part is exact for |n| < 2^20
_P1, _P2, _P3 = 1.5707963267341256, 6.077100506303966e-11, 2.0222662487959506e-21
_S = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(9))  # sin r: r^1 .. r^17
_K = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(10))  # cos r: r^0 .. r^18
COS_DOMAIN = 1.0e6


@njit(inline="always", cache=True)
def _quarter(x):
    """(r, n): x = n pi/2 + r with |r| <= pi/4, n rounded to the nearest integer."""
    n = np.floor(x * _TWO_OVER_PI + 0.5)
    return ((x - n * _P1) - n * _P2) - n * _P3, np.int64(n)


@njit(inline="always", cache=True)
def _sin_cos_r(r):
    """(sin r, cos r) for |r| <= pi/4 by their Taylor polynomials (truncation below 1e-19)."""
    z = r * r
    z2 = z * z
    z4 = z2 * z2
    s = (_S[0] + _S[1] * z) + z2 * (_S[2] + _S[3] * z) + z4 * ((_S[4] + _S[5] * z) + z2 * (_S[6] + _S[7] * z)
                                                             + z4 * _S[8])
    c = (_K[0] + _K[1] * z) + z2 * (_K[2] + _K[3] * z) + z4 * ((_K[4] + _K[5] * z) + z2 * (_K[6] + _K[7] * z)
                                                             + z4 * (_K[8] + _K[9] * z))
    return r * s, c


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
    r, n = _quarter(x)
    s, c = _sin_cos_r(r)
    q = n & 3
    y = select(q == 0, c, select(q == 1, -s, select(q == 2, -c, s)))
    return select(abs(x) <= COS_DOMAIN, y, np.nan)


@njit(inline="always", cache=True)
def vsin(x):
    """sin(x), as :func:`vcos` (the same domain and accuracy).

    Examples
    --------
    >>> abs(vsin(1.0) - math.sin(1.0)) <= 2 * math.ulp(math.sin(1.0)), vsin(0.0), math.isnan(vsin(-1e7))
    (True, 0.0, True)
    """
    r, n = _quarter(x)
    s, c = _sin_cos_r(r)
    q = n & 3
    y = select(q == 0, s, select(q == 1, c, select(q == 2, -s, -c)))
    return select(abs(x) <= COS_DOMAIN, y, np.nan)


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
