"""Scalar functions that numba's loop vectoriser can vectorise (used by :mod:`causal_wm.looped`).

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
_C = tuple(1.0 / math.factorial(k) for k in range(14))


@njit(inline="always", cache=True)
def vexp(x):
    """exp(x) within 2 ulp of the C library's for normal results, exact at the edges (0 below
    -745.2, inf above 709.8, NaN kept).

    exp(x) = 2^n exp(r) with |r| <= ln2/2 and exp(r) by its Taylor polynomial of degree 13
    (truncation below 1e-17), evaluated by Estrin's scheme (pairs of terms, then pairs of pairs:
    a chain of 4 dependent multiply-adds instead of Horner's 13, which bound the loop); 2^n is
    applied as two factors, so that results in the subnormal range stay right.

    Examples
    --------
    >>> abs(vexp(1.0) / math.e - 1) < 1e-15, vexp(-800.0), vexp(800.0)
    (True, 0.0, inf)
    """
    xc = select(x > -745.2, x, -745.2)
    xc = select(xc < 709.8, xc, 709.8)
    n = np.floor(xc * _INV_LN2 + 0.5)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    q0 = (_C[0] + _C[1] * r) + r2 * (_C[2] + _C[3] * r)
    q1 = (_C[4] + _C[5] * r) + r2 * (_C[6] + _C[7] * r)
    q2 = (_C[8] + _C[9] * r) + r2 * (_C[10] + _C[11] * r)
    q3 = _C[12] + _C[13] * r
    p = (q0 + r4 * q1) + r8 * (q2 + r4 * q3)
    k = np.int64(n)
    k1 = k >> 1
    k2 = k - k1
    y = p * _bits_to_float((k1 + 1023) << 52) * _bits_to_float((k2 + 1023) << 52)
    y = select(x > -745.2, y, 0.0)
    y = select(x < 709.8, y, np.inf)
    return select(x == x, y, x)
