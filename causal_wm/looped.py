"""The fused engine's traced program, run as one compiled numba loop over (draws x units).

XLA compiles the traced structural equations (:mod:`causal_wm.traced`) into a loop over each chunk
whose per-element code recomputes every per-draw and per-unit subexpression and copies the chunk
once more into the result; on a CPU it ran at about half the speed of a loop written by hand for one
model (docs/performance.md). This module takes the *same* traced program (its jaxpr, so that both
paths have one source of truth) and splits it by what each value varies over:

* values that vary by draw only, by unit only, or not at all are computed by XLA in a small
  *prologue* (O(draws + units) work) and handed over as tables;
* values that vary by draw *and* unit become one straight-line loop body, compiled by numba into
  a loop that writes every output straight into the result (no intermediate chunk, no copy); its
  ``exp``, ``log``, ``cos``, ``sin`` and selects are the vectorisable ones of :mod:`causal_wm.vecmath`.

The loop body is Python source assembled from a fixed table of operations (:data:`_OPS`) and
numbered local names; every number (parameter, data value, literal of the traced code) reaches it
through the tables, never through the source text, so the source depends on the query's structure
only. It is written once to :func:`cache_dir` and imported from there, so that numba's on-disk cache
serves later processes (compiling costs about a second; where that folder cannot be written, a
temporary one serves the process). Group-level terms read row s of the parameter draws at each
element's column (the trace marks them with a named call, ``traced._rows_take``), and stochastic
interventions read their quantile table at each element's position (``traced._table_take``).
Latent nodes read column j of the latent draws (traced as (draws, units, columns); the caller
hands them to the loop as (columns, draws, units), so that the reads are contiguous). A program
that uses an operation outside the table, reads other per-element values from a matrix, or
reduces over draws or units is not covered: :class:`Loop` raises :class:`Unsupported` and the
fused engine runs XLA's loop instead. (Effects, a sum over the units per draw, are covered by a
loop built with ``sums=True``, which adds each draw's row.)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from causal_wm import vecmath

log = logging.getLogger(__name__)

# The per-element operations the generated loop knows: primitive -> expression over its operands.
_OPS = {
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "({0} / {1})",
    "neg": "(-{0})", "abs": "abs({0})", "exp": "_exp({0}, k_exp)", "log": "_log({0}, k_log)",
    "sqrt": "math.sqrt({0})", "cos": "_cos({0}, k_trig)", "sin": "_sin({0}, k_trig)", "erfc": "math.erfc({0})",
    "log1p": "math.log1p({0})", "expm1": "math.expm1({0})", "floor": "np.floor({0})", "ceil": "np.ceil({0})",
    "eq": "({0} == {1})", "ne": "({0} != {1})", "lt": "({0} < {1})", "le": "({0} <= {1})",
    "gt": "({0} > {1})", "ge": "({0} >= {1})", "and": "({0} & {1})", "or": "({0} | {1})",
    "xor": "({0} ^ {1})", "shift_right_logical": "({0} >> {1})", "shift_left": "({0} << {1})",
    "is_finite": "np.isfinite({0})",
}
# vecmath functions that take their constants as a tuple read from the loop's argument K (one
# tuple per function, named k_<function> in the loop; see vecmath.CONSTANTS for why)
_TUPLES = ("exp", "log", "trig")
# operations that only reshape or relabel a value: per element, the value itself
_SAME = {"broadcast_in_dim", "reshape", "squeeze", "copy", "copy_p", "convert_element_type"}
_CALLS = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "remat"}
# table classes: floats (and booleans as 0/1) travel as float64, 64-bit integers as uint64
_FLOAT, _INT = "f", "u"


# Named calls of the trace that the loop reads directly, from an input kept whole (a matrix):
# traced._rows_take, th[s, col] (a per-element column of row s of the parameter draws), and
# traced._table_take, tables[q, i] (entry i of a stochastic intervention's quantile table q).
ROWS_TAKE, TABLE_TAKE = "rows_take", "table_take"


def _take(prim, params) -> str | None:
    """The name of a named call the loop reads directly, else None."""
    name = params.get("name") if prim.name in _CALLS else None
    return name if name in (ROWS_TAKE, TABLE_TAKE) else None


class Unsupported(Exception):
    """The traced program uses something the generated loop does not cover."""


# --------------------------------------------------------------------------- jaxpr walking
def _is_literal(a) -> bool:
    return hasattr(a, "val") and not hasattr(a, "count")


class _Value:
    """One value of the flattened program (nested calls' inner variables are shared between call
    sites, so every equation's outputs get a fresh one)."""

    __slots__ = ("aval",)

    def __init__(self, aval):
        self.aval = aval


def _flatten(jaxpr, env, out, consts):
    """Append jaxpr's equations to ``out`` as (primitive, params, inputs, outputs), nested calls
    inlined; ``env`` maps the jaxpr's variables to values of the flattened program."""
    for cv, c in zip(jaxpr.constvars, consts, strict=True):
        env[cv] = ("const", c)
    for e in jaxpr.eqns:
        ins = [a if _is_literal(a) else env.get(a, a) for a in e.invars]
        name = e.primitive.name
        if _take(e.primitive, e.params):  # kept whole: the loop reads it directly
            outs = [_Value(v.aval) for v in e.outvars]
            env.update(zip(e.outvars, outs, strict=True))
            out.append((e.primitive, e.params, ins, outs))
            continue
        if name in _CALLS:
            sub = e.params.get("jaxpr") or e.params.get("call_jaxpr") or e.params.get("fun_jaxpr")
            if sub is None:
                raise Unsupported(f"call {name} without a jaxpr")
            inner = sub.jaxpr if hasattr(sub, "jaxpr") else sub
            sub_env = dict(zip(inner.invars, ins, strict=True))
            _flatten(inner, sub_env, out, list(getattr(sub, "consts", ())))
            for ov, iv in zip(e.outvars, inner.outvars, strict=True):
                env[ov] = iv if _is_literal(iv) else sub_env.get(iv, iv)
            continue
        outs = [_Value(v.aval) for v in e.outvars]
        env.update(zip(e.outvars, outs, strict=True))
        out.append((e.primitive, e.params, ins, outs))
    return out


class _Plan:
    """The traced program split into a prologue (XLA) and a loop body (numba)."""

    def __init__(self, closed, n_draws: int, n_units: int):
        self.S, self.U = n_draws, n_units
        top: dict = {}
        eqns = _flatten(closed.jaxpr, top, [], list(closed.consts))
        self.invars = closed.jaxpr.invars
        self.level: dict = {}  # var -> "scalar" | "draw" | "unit" | "full" | "matrix"
        # inputs the loop reads per element: parameter draws (by group column), quantile tables,
        # latent draws
        self.mats: list = []
        for v in self.invars:
            self.level[v] = self._level(v.aval.shape)
            if self.level[v] == "full":  # latent draws of one column, (draws, units, 1): read per element
                if len(v.aval.shape) != 3:
                    raise Unsupported("an input that varies by draw and unit other than the latent draws")
                self.mats.append(v)
        self.pro, self.body = [], []
        # a reshape of a per-unit or per-draw value that keeps its level is the same table entry
        self.root: dict = {}
        for eq in eqns:
            prim, params, ins, outvars = eq
            lv = [self._atom_level(a) for a in ins]
            outs = [self._level(v.aval.shape) for v in outvars]
            if "full" in outs and _take(prim, params):
                mat = ins[0]
                if mat not in self.invars or len(mat.aval.shape) != 2 or (
                        _take(prim, params) == ROWS_TAKE and mat.aval.shape[0] != self.S):
                    raise Unsupported(f"a {_take(prim, params)} from something other than the query's inputs")
                if "full" in lv[1:2]:
                    raise Unsupported(f"a {_take(prim, params)} whose row varies by draw and unit")
                if mat not in self.mats:
                    self.mats.append(mat)
                self.body.append(eq)
            elif "full" in outs and self._column_of(prim, params, ins[0]) is not None:
                if ins[0] not in self.mats:  # latent draws (draws, units, columns): column j read per element
                    self.mats.append(ins[0])
                self.body.append(eq)
            elif "full" in outs:
                if len(outvars) != 1 or "matrix" in lv:
                    raise Unsupported(f"{prim.name} reads a matrix per element")
                self.body.append(eq)
            else:
                if "full" in lv:
                    raise Unsupported(f"{prim.name} reduces over draws or units")
                self.pro.append(eq)
                if (prim.name in ("broadcast_in_dim", "reshape", "squeeze") and lv[0] == outs[0]
                        and not _is_literal(ins[0]) and not isinstance(ins[0], tuple)):
                    self.root[outvars[0]] = self.root.get(ins[0], ins[0])
            self.level.update(zip(outvars, outs, strict=True))
        self.outvars = [top.get(v, v) if not _is_literal(v) else v for v in closed.jaxpr.outvars]
        for v in self.outvars:
            if _is_literal(v) or self.level.get(v) != "full":
                raise Unsupported("an output is not computed per draw and unit")

    def _column_of(self, prim, params, a) -> int | None:
        """j where ``prim`` takes column j of an input of shape (draws, units, columns), else None."""
        if prim.name != "slice" or a not in self.invars or params.get("strides") not in (None, (1, 1, 1)):
            return None
        shape = tuple(a.aval.shape)
        if len(shape) != 3 or shape[:2] != (self.S, self.U):
            return None
        j = params["start_indices"][2]
        ok = tuple(params["start_indices"][:2]) == (0, 0) and tuple(params["limit_indices"]) == (self.S, self.U, j + 1)
        return j if ok else None

    def _level(self, shape) -> str:
        dims = [d for d in shape if d != 1]
        has_s, has_u = self.S in dims, self.U in dims
        rest = [d for d in dims if d not in (self.S, self.U)]
        if rest or len(dims) > 2:
            return "matrix"
        if has_s and has_u:
            return "full" if tuple(d for d in shape if d != 1) == (self.S, self.U) else "matrix"
        return "draw" if has_s else "unit" if has_u else "scalar"

    def _atom_level(self, a) -> str:
        if _is_literal(a):
            return "scalar"
        if isinstance(a, tuple):  # ("const", value)
            return self._level(np.shape(a[1]))
        return self.level[a]


def _cls(dtype) -> str:
    kind = np.dtype(dtype).kind
    if kind in "fb":
        return _FLOAT
    if kind in "iu" and np.dtype(dtype).itemsize == 8:
        return _INT
    raise Unsupported(f"dtype {dtype}")


class Loop:
    """One query structure compiled: the prologue (XLA) and the loop (numba).

    Call it with the result array, the first unit of a chunk, the chunk's number of real units and
    the traced function's arguments for that chunk (padded to the traced shapes).
    """

    def __init__(self, closed, n_draws: int, n_units: int, sums: bool = False):
        import jax

        plan = _Plan(closed, n_draws, n_units)
        self.n_out, self.sums = len(plan.outvars), sums
        self.mat_args = [plan.invars.index(m) for m in plan.mats]
        self.source, reads = _source(plan, sums)
        self.kern = _compile(self.source)
        prologue, self.pro_args = _prologue(plan, reads)
        self.prologue = jax.jit(prologue)

    def __call__(self, out, u0, nu, *args, threads: int = 1):
        """Fill ``out[:, :, u0:u0 + nu]`` (outputs, draws, units) for one chunk of units, the draws
        split between ``threads`` threads (the loop releases the GIL). A loop built with ``sums``
        instead adds each draw's outputs over the chunk's units to ``out[s, k]`` (draws, outputs).
        The latent draws, traced as (draws, units, columns), are passed as (columns, draws, units)."""
        tabs = [np.asarray(t) for t in self.prologue(*[args[i] for i in self.pro_args])]
        tabs += [np.ascontiguousarray(args[i], dtype=np.float64) for i in self.mat_args]
        if self.sums:  # each thread's rows in a scratch row of its own
            split(out.shape[0], threads, lambda a, b: self.kern(
                *tabs[:6], vecmath.CONSTANTS, np.empty((self.n_out, 1, nu)), 0, a, b, nu, out, *tabs[6:]))
            return
        split(out.shape[1], threads, lambda a, b: self.kern(*tabs[:6], vecmath.CONSTANTS, out, u0, a, b, nu, *tabs[6:]))


def split(n: int, threads: int, fn) -> None:
    """``fn(lo, hi)`` over ``range(n)`` cut into at most ``threads`` contiguous parts, run on a pool
    of threads kept for the process (starting threads per call cost a millisecond each time).

    Examples
    --------
    >>> seen = []
    >>> split(10, 3, lambda a, b: seen.append((a, b)))
    >>> sorted(seen)
    [(0, 3), (3, 6), (6, 10)]
    """
    cuts = [int(c) for c in np.linspace(0, n, min(threads, n) + 1)]
    if len(cuts) <= 2:
        fn(0, n)
        return
    list(_pool(len(cuts) - 1).map(lambda i: fn(cuts[i], cuts[i + 1]), range(len(cuts) - 1)))


@functools.cache
def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix="causal_wm-loop")


_TABLES = (("scalar", _FLOAT), ("scalar", _INT), ("draw", _FLOAT), ("draw", _INT), ("unit", _FLOAT), ("unit", _INT))


def _source(plan, sums: bool = False):
    """The loop's source, and what it reads from the prologue: (level, class) -> values.

    ``sums``: each draw's outputs are written to row 0 of ``out`` (scratch) and added up over the
    units into ``R[s, k]``, instead of being kept."""
    reads: dict = {}
    slot: dict = {}
    names: dict = {}
    top, row, body = [], [], []

    def operand(a):
        if not _is_literal(a) and not isinstance(a, tuple) and plan.level.get(a) == "full":
            return f"M{plan.mats.index(a)}[0, s, u]" if a in plan.invars else names[a]
        if isinstance(a, tuple):
            key = id(a)
        elif _is_literal(a):  # the same number of the same type: one entry
            key = ("literal", np.asarray(a.val).tobytes(), str(a.aval.dtype))
        else:
            a = plan.root.get(a, a)
            key = a
        if key not in slot:
            lv = plan._atom_level(a)
            dt = np.asarray(a[1]).dtype if isinstance(a, tuple) else a.aval.dtype
            c = _cls(dt)
            lst = reads.setdefault((lv, c), [])
            j = len(lst)
            lst.append(a)
            table = {"scalar": "C", "draw": "D", "unit": "V"}[lv] + c.upper()
            conv = {"b": "({} != 0.0)", "i": "np.int64({})"}.get(np.dtype(dt).kind, "{}")
            if lv == "unit":  # read per unit, inside the loop
                slot[key] = conv.format(f"{table}[{j}, u]")
            else:  # read once per draw (row) or once per call, before the loop over units
                slot[key] = name = f"{table.lower()}{j}"
                (row if lv == "draw" else top).append(f"{name} = " + conv.format(f"{table}[s, {j}]" if lv == "draw"
                                                                                  else f"{table}[{j}]"))
        return slot[key]

    index: dict = {}  # full value -> its line in body
    deps: list = []  # per line: the lines whose values it reads
    takes: list = []  # lines that read a matrix input at a per-element position
    for i, (prim, params, ins, outvars) in enumerate(plan.body):
        name, out = prim.name, outvars[0]
        index[out] = i
        deps.append({index[a] for a in ins if not _is_literal(a) and not isinstance(a, tuple) and a in index})
        col = plan._column_of(prim, params, ins[0]) if ins else None
        if col is not None:  # latent draws, passed as (columns, draws, units): contiguous in u
            names[out] = f"x{i}"
            body.append(f"x{i} = M{plan.mats.index(ins[0])}[{col}, s, u]")
            continue
        take = _take(prim, params)
        if take:  # an entry of a matrix input: row s (parameter draws) or the table's row q, column per element
            at = "s" if take == ROWS_TAKE else f"np.int64({operand(ins[1])})"
            expr = f"M{plan.mats.index(ins[0])}[{at}, np.int64({operand(ins[2])})]"
            names[out] = f"x{i}"
            body.append(f"x{i} = {expr}")
            takes.append(i)
            continue
        args = [operand(a) for a in ins]
        if name == "convert_element_type":
            expr = _convert(args[0], params["new_dtype"])
        elif name in _SAME:
            expr = args[0]
        elif name == "select_n":
            if len(args) != 3:
                raise Unsupported("select_n with more than two cases")
            expr = f"_sel({args[0]}, {args[2]}, {args[1]})"
        elif name in ("min", "max"):
            # XLA's min and max return NaN if either side is NaN (Python's builtins do not)
            lt = f"({args[1]} < {args[0]})" if name == "min" else f"({args[1]} > {args[0]})"
            expr = f"_sel({lt}, {args[1]}, {args[0]})"
            if np.dtype(out.aval.dtype).kind == "f":
                expr = f"_sel({args[0]} != {args[0]}, {args[0]}, _sel({args[1]} != {args[1]}, {args[1]}, {expr}))"
        elif name == "integer_pow" and params.get("y") == 2:
            expr = f"({args[0]} * {args[0]})"
        elif name == "not":
            expr = f"({args[0]} ^ True)" if np.dtype(out.aval.dtype).kind == "b" else f"(~{args[0]})"
        elif name in _OPS:
            kind = np.dtype(ins[0].aval.dtype).kind if hasattr(ins[0], "aval") else "f"
            # Python's / and >> differ from XLA's on integers (true division; arithmetic shift of int64)
            if (name == "div" and kind in "iu") or (name == "shift_right_logical" and kind != "u"):
                raise Unsupported(f"{name} on {ins[0].aval.dtype}")
            expr = _OPS[name].format(*args)
        else:
            raise Unsupported(f"operation {name}")
        names[out] = f"x{i}"
        body.append(f"x{i} = {expr}")
    n_out = len(plan.outvars)
    mats = "".join(f", M{k}" for k in range(len(plan.mats)))
    src = [f"def kern(CF, CU, DF, DU, VF, VU, K, out, u0, s0, s1, nu{', R' if sums else ''}{mats}):"]
    for fn in _TUPLES:
        if any(f"k_{fn})" in ln for ln in body):
            start, stop = vecmath.LAYOUT[fn]
            src.append(f"    k_{fn} = ({''.join(f'K[{i}], ' for i in range(start, stop))})")
    src += ["    " + ln for ln in top]
    src += ["    for s in range(s0, s1):"]
    src += ["        " + ln for ln in row]
    # outputs through row slices indexed from 0: an index known to be non-negative lets the
    # compiler vectorise the loop (``out[k, s, u0 + u]`` needs a negative-index check)
    src += [f"        o{k} = out[{k}, {'0' if sums else 's'}, u0:u0 + nu]" for k in range(n_out)]
    if takes:
        # LLVM cannot check a read at a computed position against the loop's writes, and leaves a
        # loop with such a read scalar. So a first loop computes just what the reads need and keeps
        # their values per unit in T; the main loop, which reads T like any per-unit table, stays
        # vectorised (it recomputes the few values the first loop needed; they are cheap).
        cone, todo = set(), list(takes)
        while todo:
            i = todo.pop()
            if i not in cone:
                cone.add(i)
                todo.extend(deps[i])
        src.insert(1, f"    T = np.empty(({len(takes)}, nu))")
        src += ["        for u in range(nu):"]
        src += ["            " + body[i] for i in sorted(cone)]
        src += [f"            T[{j}, u] = x{i}" for j, i in enumerate(takes)]
        body = [f"x{i} = T[{takes.index(i)}, u]" if i in takes else ln for i, ln in enumerate(body)]
    src += ["        for u in range(nu):"]
    src += ["            " + ln for ln in body]
    src += [f"            o{k}[u] = {names[v]}" for k, v in enumerate(plan.outvars)]
    if sums:  # added while the row is in cache; in a fixed order, so threads do not change the sum
        src += [f"        R[s, {k}] += _rowsum(o{k}, nu)" for k in range(n_out)]
    return "\n".join(src) + "\n", reads


_HEADER = """\
# Generated by causal_wm.looped from a traced query's structure (no numbers: they arrive as tables).
# Safe to delete: it is written again when needed.
import math

import numpy as np
from numba import njit

from causal_wm.vecmath import select as _sel
from causal_wm.vecmath import vcos_k as _cos
from causal_wm.vecmath import vexp_k as _exp
from causal_wm.vecmath import rowsum as _rowsum
from causal_wm.vecmath import vlog_k as _log
from causal_wm.vecmath import vsin_k as _sin


# error_model="numpy": IEEE division (inf, nan) without a branch for Python's ZeroDivisionError.
# nogil: the draws are split between threads of ours (numba's prange tripled the compile time).
# fastmath "contract" only: a * b + c may become one fused multiply-add (one rounding instead of
# two; no reordering, no assumptions about inf or NaN). exp's polynomial is most of the loop's
# arithmetic; contracted, the benchmark's counterfactual loop ran 1.2x faster.
@njit(nogil=True, error_model="numpy", cache=True, fastmath={"contract"})
"""


def cache_dir() -> Path:
    """Where generated loops are kept so that numba's on-disk cache can serve the next process:
    ``$CAUSAL_WM_CACHE``, else ``$XDG_CACHE_HOME/causal_wm`` or ``~/.cache/causal_wm``; where that
    cannot be written, a temporary folder for this process (the loop is then compiled once per
    process)."""
    env = os.environ.get("CAUSAL_WM_CACHE")
    try:  # Path.home() raises RuntimeError where there is no home directory
        base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "causal_wm"
        path = base / "loops"
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except (OSError, RuntimeError):
        pass
    return _process_dir()


@functools.cache
def _process_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="causal_wm_loops_"))


def _compile(source: str):
    """The numba function of ``source``, from a module written to :func:`cache_dir` under the hash
    of its text (numba's on-disk cache keeps the compiled code next to it)."""
    _allow_alias_checks()
    # the header is hashed too (a new header, a new file), and so is vecmath's source: numba's
    # cache checks only the loop's own file, and would keep serving code compiled with an older
    # exp or select after an upgrade
    text = f"# causal_wm.vecmath {_vecmath_digest()}\n" + _HEADER + source
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    name = f"causal_wm_loop_{digest}"
    if name not in sys.modules:  # numba's cache finds the function's module by this name
        path = cache_dir() / f"loop_{digest}.py"
        try:
            if not path.is_file():
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, path)  # atomic: another process sees the whole file or none
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except OSError as exc:
            sys.modules.pop(name, None)
            raise Unsupported(f"the loop's module could not be written ({exc})") from exc
    return sys.modules[name].kern


@functools.cache
def _vecmath_digest() -> str:
    from causal_wm import vecmath

    return hashlib.sha256(Path(vecmath.__file__).read_bytes()).hexdigest()[:16]


def _prologue(plan, reads):
    """The function that computes, with XLA, every value the loop reads as a table, and the
    positions of the traced function's arguments it takes (the others, such as the latent draws,
    only the loop reads)."""
    import jax.numpy as jnp

    pro, S, U = plan.pro, plan.S, plan.U
    shapes = {"scalar": (), "draw": (S,), "unit": (U,)}
    seen = {a for _, _, ins, _ in pro for a in ins if not _is_literal(a) and not isinstance(a, tuple)}
    seen |= {a for vals in reads.values() for a in vals if not _is_literal(a) and not isinstance(a, tuple)}
    used = [i for i, v in enumerate(plan.invars) if v in seen]
    invars = [plan.invars[i] for i in used]

    def prologue(*args):
        env = dict(zip(invars, args, strict=True))

        def read(a):
            return a.val if _is_literal(a) else a[1] if isinstance(a, tuple) else env[a]

        for prim, params, ins, outvars in pro:
            res = prim.bind(*[read(a) for a in ins], **params)
            env.update(zip(outvars, res if prim.multiple_results else [res], strict=True))
        tabs = []
        for lv, c in _TABLES:
            n = shapes[lv]
            cols = [jnp.broadcast_to(jnp.reshape(_as(read(a), c), (-1,) if n else ()), n)
                    for a in reads.get((lv, c), [])]
            if not cols:
                tabs.append(jnp.zeros((1,) * (len(n) + 1), jnp.float64 if c == _FLOAT else jnp.uint64))
            else:
                tabs.append(jnp.stack(cols, axis=1 if lv == "draw" else 0))
        return tuple(tabs)

    return prologue, used


@functools.cache
def _allow_alias_checks() -> None:
    """Let LLVM's loop vectoriser emit as many runtime overlap checks as the loop needs.

    The loop reads per-unit tables and writes one row per output; LLVM cannot prove that these do
    not overlap and, past 8 such checks (its default), leaves the loop scalar: four outputs ran 4x
    slower. The option is process-wide and only changes how willingly loops are vectorised.
    """
    import llvmlite.binding as llvm

    llvm.set_option("causal_wm", "-vectorize-memory-check-threshold=1024")


def _as(x, c):
    """``x`` as its table's type: float64 (booleans as 0/1), or uint64 (int64 bit for bit)."""
    import jax.numpy as jnp
    from jax import lax

    x = jnp.asarray(x)
    if c == _FLOAT:
        return x.astype(jnp.float64)
    return lax.bitcast_convert_type(x, jnp.uint64) if x.dtype == jnp.int64 else x.astype(jnp.uint64)


def _convert(arg, new_dtype) -> str:
    to = np.dtype(new_dtype).kind
    if to == "f":
        return f"np.float64({arg})"
    if to == "b":
        return f"({arg} != 0)"
    if to == "u":
        return f"np.uint64({arg})"
    if to == "i":
        return f"np.int64({arg})"
    raise Unsupported(f"conversion to {new_dtype}")
