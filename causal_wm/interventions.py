"""Interventions: hard values, shifts, scalings, callables of the unit's own value, and
stochastic policies (any distribution with a quantile function, e.g. a frozen scipy.stats one).

All values are in the data's original units. Queries compile a ``do`` mapping into the arrays
the kernels read (:func:`compile_do`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from causal_wm import kernels as K
from causal_wm.data import to_internal
from causal_wm.errors import QueryError, suggest

TABLE_SIZE = 4096


@dataclass(frozen=True)
class Shift:
    """Soft intervention ``x -> x + delta`` (original units)."""

    delta: float


@dataclass(frozen=True)
class Scale:
    """Soft intervention ``x -> factor * x``."""

    factor: float


@dataclass(frozen=True)
class Apply:
    """Soft intervention ``x -> fn(x)`` with ``fn`` vectorised over a NumPy array."""

    fn: Callable


def shift(delta: float) -> Shift:
    """Shift a node by ``delta`` in its original units.

    Examples
    --------
    >>> shift(1000.0)
    Shift(delta=1000.0)
    """
    return Shift(_number("shift", "delta", delta))


def scale(factor: float) -> Scale:
    """Multiply a node by ``factor``.

    Examples
    --------
    >>> scale(1.1).factor
    1.1
    """
    return Scale(_number("scale", "factor", factor))


def _number(fn: str, arg: str, x) -> float:
    """``x`` as a finite float, or a QueryError naming the constructor and the argument.

    Examples
    --------
    >>> _number("shift", "delta", 2)
    2.0
    >>> _number("shift", "delta", "a")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    causal_wm.errors.QueryError: shift(delta='a'): expected one finite number, e.g. shift(1000.0); ...
    """
    ok = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))
    if not ok or not np.isfinite(x):
        raise QueryError(
            f"{fn}({arg}={x!r}): expected one finite number, e.g. {fn}"
            f"({'1000.0' if fn == 'shift' else '1.1'}); for per-unit changes use a callable, e.g. "
            f"lambda x: x {'+' if fn == 'shift' else '*'} d."
        )
    return float(x)


def bernoulli(p: float):
    """A stochastic policy that sets a binary node to 1 with probability ``p``."""
    from scipy import stats

    return stats.bernoulli(p)


def normal(loc: float, scale: float):
    """A stochastic policy drawing a continuous node from Normal(loc, scale)."""
    from scipy import stats

    return stats.norm(loc, scale)


def uniform(low: float, high: float):
    """A stochastic policy drawing a continuous node uniformly from [low, high]."""
    from scipy import stats

    return stats.uniform(low, high - low)


@dataclass(frozen=True)
class Compiled:
    """A ``do`` mapping compiled to kernel arrays (internal scale)."""

    kind: np.ndarray
    value: np.ndarray
    per_unit: np.ndarray
    tables: np.ndarray
    callables: dict
    nodes: frozenset


def _is_distribution(v) -> bool:
    return hasattr(v, "ppf") and hasattr(v, "rvs")


def is_level(x, levels) -> bool:
    """Whether ``x`` is one of a categorical node's ``levels``. A boolean is one only where the
    levels are booleans: ``True == 1`` in Python, so it would silently pick level 1 of integer
    codes."""
    if isinstance(x, (bool, np.bool_)) and not any(isinstance(lv, (bool, np.bool_)) for lv in levels):
        return False
    try:
        return bool(x in levels)
    except TypeError:  # pd.NA has no truth value
        return False


def _internal_values(name, node, sc, arr) -> np.ndarray:
    """Validate intervention values (original units) and convert them to the internal scale."""
    fam = node.family
    arr = np.asarray(arr, dtype=object if fam == "categorical" else None).reshape(-1)
    if fam == "categorical":
        lookup = {v: i for i, v in enumerate(sc.levels)}
        bad = [v for v in arr if not is_level(v, sc.levels)]
        if bad:
            from causal_wm.data import yaml_bool_hint

            raise QueryError(
                f"do({name}={bad[0]!r}): not a category of {name!r}; levels are {list(sc.levels)}."
                + yaml_bool_hint(bad)
            )
        return np.array([lookup[v] for v in arr], dtype=float)
    if arr.dtype == bool:
        arr = arr.astype(float)
    if not np.issubdtype(arr.dtype, np.number):
        raise QueryError(
            f"do({name}=...): expected numbers, shift(), scale(), a callable or a distribution, "
            f"got {arr[:3].tolist()!r}."
        )
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise QueryError(f"do({name}=...): values must be finite, got {arr[~np.isfinite(arr)][:3]}.")
    if fam == "bernoulli" and not np.all(np.isin(arr, (0.0, 1.0))):
        raise QueryError(f"do({name}=...): {name!r} is bernoulli, so it can be set to 0 or 1 only.")
    if fam in ("poisson", "negative_binomial") and np.any((arr < 0) | (arr != np.round(arr))):
        raise QueryError(f"do({name}=...): {name!r} is a count, so it needs non-negative integers.")
    if fam == "lognormal" and np.any(arr <= 0):
        raise QueryError(f"do({name}=...): {name!r} is lognormal, so it needs positive values.")
    with np.errstate(over="ignore"):  # judged below
        out = to_internal(fam, sc, arr)
    if not np.all(np.isfinite(out)):
        raise QueryError(
            f"do({name}=...): {arr[~np.isfinite(out)][:3].tolist()} is too far from the data's values "
            f"(centre {sc.center:.4g}, scale {sc.scale:.4g}) to be represented; intervene with values nearer them."
        )
    return out


def _check_value(name, node, sc, v) -> float:
    if not isinstance(v, (str, bool, int, float, np.generic)):
        raise QueryError(
            f"do({name}={v!r}): expected a value, shift(), scale(), a callable, per-unit values or "
            "a distribution."
        )
    return float(_internal_values(name, node, sc, [v])[0])


def check_names(scm, names, what: str = "do") -> None:
    """Raise :class:`QueryError` for any name that is not a node (with a suggestion)."""
    for name in names:
        if not isinstance(name, str) or name not in scm.names:
            raise QueryError(
                f"{what}: {name!r} is not a node of model {scm.name!r}.{suggest(str(name), scm.names)} "
                f"Nodes are {list(scm.names)}."
            )


def compile_do(post, do: Mapping | None, n_units: int, natural: dict | None = None) -> Compiled:
    """Compile ``do`` for a query over ``n_units`` units.

    ``natural`` maps node names to their natural values per unit (original units) where those
    are known before the kernel runs (data); callables are applied to them here.
    """
    return _compile(post.scm, post.plan.scales, post.program.names, do, n_units, natural)


def check_do(scm, scales, do, n_units: int = 1) -> None:
    """Validate ``do`` against a model and its data's scales without a posterior (e.g. before a
    study fits); raises :class:`QueryError` like the query itself would."""
    _compile(scm, scales, tuple(scm.order), do, n_units, None)


def _compile(scm, scales, names, do, n_units: int, natural: dict | None) -> Compiled:
    kind = np.zeros(len(names), dtype=np.int64)
    value = np.zeros(len(names))
    per_unit = np.zeros((1, len(names)))
    tables: list[np.ndarray] = []
    callables: dict = {}
    if do is not None and not isinstance(do, Mapping):
        raise QueryError(f"do must be a mapping of node -> intervention, got {type(do).__name__}.")
    do = dict(do or {})
    check_names(scm, do, "do")
    for name, v in do.items():
        node, sc, k = scm.node(name), scales[name], names.index(name)
        fam = node.family
        if isinstance(v, Shift | Scale):
            amount = v.delta if isinstance(v, Shift) else v.factor
            if not np.isfinite(amount):
                raise QueryError(f"do({name}=...): the shift/scale amount must be finite, got {amount}.")
            what = "shift" if isinstance(v, Shift) else "scale"
            if fam in ("bernoulli", "categorical"):
                instead = ("cw.bernoulli(p) for a policy, " if fam == "bernoulli" else "") + \
                    "a value, per-unit values or a callable of each unit's value"
                raise QueryError(f"do({name}={what}(...)): {what} is not defined for {fam} {name!r}; use {instead}.")
            if fam in ("poisson", "negative_binomial") and (isinstance(v, Scale) or amount != round(amount)):
                raise QueryError(
                    f"do({name}={what}({amount:g})): {name!r} is a count ({fam}); shift it by a whole number, "
                    "or use a value, per-unit values or a callable that returns whole numbers."
                )
            if fam == "lognormal" and isinstance(v, Scale) and amount <= 0:
                raise QueryError(f"do({name}={v}): lognormal {name!r} needs a positive factor.")
            kind[k] = K.SHIFT if isinstance(v, Shift) else K.SCALE
            value[k] = amount
        elif _is_distribution(v):
            if fam == "categorical":
                raise QueryError(f"do({name}=<distribution>): use per-unit values for categorical nodes.")
            table, discrete = _quantile_table(name, v)
            if fam in ("bernoulli", "poisson", "negative_binomial") and not discrete:
                raise QueryError(
                    f"do({name}=<distribution>): {name!r} is {fam} ("
                    f"{'0 or 1' if fam == 'bernoulli' else 'whole numbers'}), and the distribution is continuous; "
                    "use a discrete one (e.g. cw.bernoulli(0.3), scipy.stats.poisson(4) or scipy.stats.rv_discrete; "
                    "in a study file {distribution: bernoulli, p: 0.3}).")
            _internal_values(name, node, sc, np.unique(table) if discrete else table[[0, -1]])
            kind[k] = K.TABLE
            value[k] = -(len(tables) + 1) if discrete else len(tables)
            tables.append(table)
        elif hasattr(v, "sample") and hasattr(v, "log_prob"):  # a NumPyro/PyTorch-style distribution
            raise QueryError(
                f"do({name}=<{type(v).__name__}>): a stochastic policy needs a quantile function (ppf); pass a "
                "frozen scipy.stats distribution (e.g. scipy.stats.norm(0, 1)) or cw.normal / cw.uniform / "
                "cw.bernoulli.")
        elif callable(v):
            callables[name] = v
            if natural is not None and name in natural:
                out = call_intervention(name, v, np.asarray(natural[name]))
                kind[k] = K.PERUNIT
                per_unit = _per_unit(per_unit, n_units, len(names))
                per_unit[:, k] = _unit_values(name, node, sc, out, n_units)
            else:
                kind[k] = K.PERUNIT  # filled by the caller after a first pass
                per_unit = _per_unit(per_unit, n_units, len(names))
        elif isinstance(v, (list, tuple, np.ndarray)) or hasattr(v, "to_numpy"):
            per_unit = _per_unit(per_unit, n_units, len(names))
            kind[k] = K.PERUNIT
            per_unit[:, k] = _unit_values(name, node, sc, np.asarray(v), n_units)
        else:
            kind[k] = K.HARD
            value[k] = _check_value(name, node, sc, v)
    tab = np.stack(tables) if tables else np.zeros((1, TABLE_SIZE))
    return Compiled(kind, value, per_unit, tab, callables, frozenset(do))


def call_intervention(name: str, fn, natural: np.ndarray) -> np.ndarray:
    """``fn(natural)`` for ``do(name=fn)``: one value per unit, or a :class:`QueryError` that names the
    node (a user's function that raises, or returns the wrong shape, is the user's to fix)."""
    try:
        out = np.asarray(fn(natural))
    except Exception as exc:  # any failure of user code, reported with the node it was for
        raise QueryError(
            f"do({name}=<callable>): the function raised {type(exc).__name__}: {exc}. It is called once with "
            f"a NumPy array of {name!r}'s values per unit (original units, labels for categorical nodes) "
            "and must return an array of the same shape."
        ) from exc
    if out.shape != natural.shape:
        raise QueryError(
            f"do({name}=<callable>): it must return one value per unit (shape {natural.shape}), "
            f"got shape {out.shape}."
        )
    return out


def _quantile_table(name: str, dist) -> tuple[np.ndarray, bool]:
    """The policy's quantiles at the midpoints of TABLE_SIZE equal cells, and whether it is discrete."""
    grid = (np.arange(TABLE_SIZE) + 0.5) / TABLE_SIZE
    try:
        table = np.asarray(dist.ppf(grid), dtype=float)
        median = np.shape(dist.ppf(0.5))  # parameters given per unit broadcast even where shapes agree
    except Exception as exc:  # user objects: an unfrozen scipy distribution lacks its parameters
        bad = f"its quantile function failed ({type(exc).__name__}: {exc})"
    else:
        bad = (None if table.shape == grid.shape and median == ()
               else f"its quantile function gave shape {median if median != () else table.shape} for "
                    f"{'one probability' if median != () else f'{TABLE_SIZE} probabilities'}")
    if bad:
        raise QueryError(
            f"do({name}=<distribution>): {bad}. A policy is one distribution for every unit, frozen with its "
            "parameters (e.g. scipy.stats.poisson(4), not scipy.stats.poisson). For parameters that differ "
            "by unit, draw the values yourself (e.g. rng.normal(df.x + 1, 0.1)) and pass them as per-unit values."
        )
    if not np.all(np.isfinite(table)):
        raise QueryError(f"do({name}=<distribution>): its quantile function is not finite.")
    return table, hasattr(dist, "pmf") or hasattr(getattr(dist, "dist", None), "pmf")


def _per_unit(arr, n, k):
    return arr if arr.shape[0] == n else np.zeros((n, k))


def _unit_values(name, node, sc, arr, n):
    arr = np.asarray(arr).reshape(-1)
    if arr.shape[0] != n:
        raise QueryError(
            f"do({name}=...): per-unit values have length {arr.shape[0]}, but the query has {n} units."
        )
    return _internal_values(name, node, sc, arr)
