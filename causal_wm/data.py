"""Data validation and the internal, standardised scale.

Every check runs before any sampling, and every failure is a :class:`DataError` naming the
column, the offending rows and the fix.

The internal scale (the rule that makes the default priors weakly informative):

* normal, student_t: ``z = (y - mean) / sd``; lognormal: the same on ``log y``.
* bernoulli: 0/1; poisson, negative_binomial: the raw counts, with ``log(mean)`` as the offset of
  the log link; categorical: integer codes ``0..K-1`` in the order of ``levels``.
* As a *parent*, a continuous node enters as its z-score, a count as ``(count - mean) / sd``, a
  binary node as 0/1 and a categorical node as one 0/1 indicator per non-reference level.
* Latent nodes are standardised by construction (mean 0, noise SD 1 at the root).

The means and SDs come from the fitting data and are stored with the posterior, so queries
take and return values in the data's original units. They are computed from the observed values
only: a node's imputed (missing) entries never enter its scale.

Missing values (:func:`prepare`, before anything else): each node's ``missing:`` policy says whether
a missing value is an error (the default), drops its row (listwise, counted per node), or is kept
as ``NaN`` on the internal scale for the backend to impute. Declared column types and ranges are
checked on the rows that remain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from causal_wm.errors import DataError, suggest
from causal_wm.families import FAMILIES


@dataclass(frozen=True)
class NodeScale:
    """How one node maps between original units and the internal scale.

    Attributes
    ----------
    center, scale : float
        Location and scale of the internal value (continuous) or of the node as a predictor
        (counts); for counts ``offset`` is ``log(mean)``.
    offset : float
        Log-link offset of count nodes (0 otherwise).
    levels : tuple or None
        Category labels of categorical nodes.
    is_int : bool
        Whether the data held integers only (used to round nothing, but reported).
    pred_center, pred_scale : float
        Applied to the internal value when the node is a parent (counts: their mean and SD).
    """

    center: float = 0.0
    scale: float = 1.0
    offset: float = 0.0
    levels: tuple | None = None
    is_int: bool = False
    pred_center: float = 0.0
    pred_scale: float = 1.0


def yaml_bool_hint(values) -> str:
    """A hint where YAML made booleans of what were words: unquoted yes/no/on/off/true/false."""
    if any(isinstance(v, (bool, np.bool_)) for v in values):
        return (" (YAML reads unquoted yes/no, on/off and true/false as booleans: quote them in the file, "
                "e.g. levels: ['no', 'yes'].)")
    return ""


def _rows(mask: np.ndarray, index) -> str:
    idx = np.asarray(index)[mask][:8].tolist()  # plain Python labels: 3, not np.int64(3)
    more = int(mask.sum()) - len(idx)
    return f"{idx}{f' and {more} more' if more > 0 else ''}"


def _missing_text_hint(df: pd.DataFrame, name: str) -> str:
    texts = (df.attrs.get("missing_text") or {}).get(name)
    if not texts:
        return ""
    return (f" Some of them are the text {texts} in the file, which is read as a missing value; if it is a "
            "value of its own (a category), say which texts mean missing in the data source: "
            "{path: file.csv, missing_text: ['']} reads only empty cells as missing.")


def _missing_error(name: str, mask: np.ndarray, index, policy: str = "error", hint: str = "") -> DataError:
    # policy is the node's own: a query's new units may not leave a value open even when the fit could
    if policy == "impute":
        return DataError(
            f"column {name!r} has {int(mask.sum())} missing values in rows {_rows(mask, index)}; imputed values "
            "exist only for the fitted units: pass rows of the fitting data (with their original index), or fill "
            f"these values.{hint}"
        )
    if policy == "drop":
        return DataError(
            f"column {name!r} has {int(mask.sum())} missing values in rows {_rows(mask, index)}; rows like these "
            f"were left out of the fit ('missing: drop' on node {name!r}), so leave them out here too.{hint}"
        )
    return DataError(
        f"column {name!r} has {int(mask.sum())} missing (NaN) values in rows {_rows(mask, index)}; drop or impute "
        f"them before fitting, or set a policy on node {name!r} in the model: 'missing: drop' (leave those rows "
        "out, reported in the data summary) or 'missing: impute' (model the missing values with the node's "
        f"mechanism, so their uncertainty reaches every answer).{hint}"
    )


def _column(df: pd.DataFrame, name: str, family: str, where: str, allow_missing: bool = False,
            policy: str = "error") -> np.ndarray:
    if name not in df.columns:
        close = suggest(name, map(str, df.columns))
        rename = next((c for c in map(str, df.columns) if f"'{c}'" in close and not c.isidentifier()), None)
        how = (f" To use column {rename!r}, rename it in the data source: rename: {{'{rename}': {name}}}."
               if rename else "")
        raise DataError(
            f"column {name!r} (node of {where}) is missing from the data.{close}{how} "
            f"Columns are {list(map(str, df.columns))[:30]}; add it, or mark the node 'latent: true'."
        )
    col = df[name]
    if isinstance(col, pd.DataFrame):
        raise DataError(
            f"column {name!r} appears {col.shape[1]} times in the data; keep one column per node."
        )
    if family == "categorical":
        vals = col.to_numpy(dtype=object)
        na = pd.isna(col).to_numpy()
        if na.any():
            if not allow_missing:
                raise _missing_error(name, na, df.index, policy, _missing_text_hint(df, name))
            vals = vals.copy()
            vals[na] = None  # one marker for missing labels (pandas may hold NaN, None or NA)
        return vals
    if pd.api.types.is_bool_dtype(col.dtype):  # numpy bool, pandas "boolean", pyarrow bool[pyarrow]
        col = col.astype("Float64").astype(float) if col.isna().any() else col.astype(float)
    if isinstance(col.dtype, pd.CategoricalDtype):
        # numbers stored as a pandas category, even as the strings '0'/'1' (as some shipped tables do)
        as_num = pd.to_numeric(pd.Series(col.cat.categories.astype(str)), errors="coerce")
        if as_num.notna().all():
            col = pd.Series(pd.to_numeric(col.astype(str), errors="coerce"), index=col.index, name=col.name)
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_complex_dtype(col):
        raise DataError(
            f"column {name!r} has type {col.dtype}, but node {name!r} is {family} and needs numbers. "
            "Convert it, or declare the node 'family: categorical'."
        )
    arr = col.to_numpy(dtype=float, na_value=np.nan)
    nan = np.isnan(arr)
    if nan.any() and not allow_missing:
        raise _missing_error(name, nan, df.index, policy, _missing_text_hint(df, name))
    inf = np.isinf(arr)
    if inf.any():
        raise DataError(
            f"column {name!r} has {int(inf.sum())} infinite values in rows {_rows(inf, df.index)}; "
            "drop those rows or replace the values with finite numbers."
        )
    return arr


def missing_mask(values) -> np.ndarray:
    """Where a column read with missing values allowed is missing (``NaN`` numbers, ``None`` labels)."""
    arr = np.asarray(values)
    if arr.dtype == object:
        return np.array([v is None for v in arr], dtype=bool)
    return np.isnan(arr)


TYPE_TEXT = {"binary": "0 or 1", "count": "non-negative integers", "real": "numbers",
             "positive": "positive numbers", "category": "category labels"}


def check_declared(scm, df: pd.DataFrame) -> None:
    """Raise :class:`DataError` where a column breaks its node's declared ``type`` or ``range``.

    Missing values are not checked here (their ``missing:`` policy is).

    Examples
    --------
    >>> from causal_wm import SCM
    >>> scm = SCM.from_dict({"nodes": {"kids": {"type": "count", "range": [0, 12]}}})
    >>> check_declared(scm, pd.DataFrame({"kids": [0.0, 2.0, 3.0]}))
    >>> check_declared(scm, pd.DataFrame({"kids": [0.0, 2.5, 3.0]}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    causal_wm.errors.DataError: column 'kids' is declared 'type: count' (non-negative integers) but has ...
    """
    for name in scm.observed:
        node = scm.node(name)
        if node.type in (None, "category") and node.range is None:
            continue
        raw = _column(df, name, node.family, scm.name, allow_missing=True)
        seen = ~missing_mask(raw)
        index = np.asarray(df.index)[seen]
        vals = pd.to_numeric(pd.Series(raw[seen], dtype=object), errors="coerce").to_numpy(dtype=float)
        t = node.type
        if t not in (None, "category"):
            bad = np.isnan(vals)
            if t == "binary":
                bad |= ~np.isin(vals, (0.0, 1.0))
            elif t == "count":
                bad |= (vals < 0) | (vals != np.round(vals))
            elif t == "positive":
                bad |= vals <= 0
            if bad.any():
                shown = sorted(set(np.asarray(raw[seen], dtype=object)[bad].tolist()), key=str)[:5]
                raise DataError(
                    f"column {name!r} is declared 'type: {t}' ({TYPE_TEXT[t]}) but has values {shown} in rows "
                    f"{_rows(bad, index)}; fix or drop those rows, or change 'type:' of node {name!r} in the model."
                )
        if node.range is not None:
            lo, hi = node.range
            bad = np.isnan(vals)
            if lo is not None:
                bad |= vals < lo
            if hi is not None:
                bad |= vals > hi
            if bad.any():
                shown = sorted(set(np.asarray(raw[seen], dtype=object)[bad].tolist()), key=str)[:5]
                span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
                raise DataError(
                    f"column {name!r} has {int(bad.sum())} values outside its declared range {span}: {shown} in "
                    f"rows {_rows(bad, index)}; fix or drop those rows, or widen 'range:' of node {name!r}."
                )


INTEGRATION_ATTR = "causal_wm_integration"


def prepare(scm, df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Apply every node's ``missing:`` policy and the declared column checks, before any sampling.

    Returns the rows to fit (rows where a ``missing: drop`` node is missing are left out; the
    original index is kept) and the data summary: rows in, dropped (in total and per node: rows
    where that node is missing, so a row missing two such nodes counts for both), used, and
    values left for imputation per node. A frame built by :func:`causal_wm.integration.load_data`
    adds what integration did (rows per source, joined, unmatched, filtered).

    Examples
    --------
    >>> from causal_wm import SCM
    >>> scm = SCM.from_dict({"nodes": {"x": {"missing": "drop"}, "y": {"formula": "x", "missing": "impute"}}})
    >>> kept, summary = prepare(scm, pd.DataFrame({"x": [1.0, None, 3.0, 4.0], "y": [1.0, 2.0, None, 4.0]}))
    >>> kept.index.tolist(), summary["dropped"], summary["imputed"], summary["rows_used"]
    ([0, 2, 3], {'x': 1}, {'y': 1}, 3)
    """
    check_frame(scm, df)
    miss: dict[str, np.ndarray] = {}
    for name in scm.observed:
        node = scm.node(name)
        raw = _column(df, name, node.family, scm.name, allow_missing=node.missing != "error")
        m = missing_mask(raw)
        if m.any():
            miss[name] = m
    drop = np.zeros(len(df), dtype=bool)
    dropped: dict[str, int] = {}
    for name, m in miss.items():
        if scm.node(name).missing == "drop":
            dropped[name] = int(m.sum())
            drop |= m
    if drop.all():
        raise DataError(
            f"every row of the data misses a value of {sorted(dropped)} ('missing: drop'), so no rows remain; "
            "use 'missing: impute' for those nodes, or fill the values."
        )
    kept = df[~drop] if drop.any() else df
    imputed: dict[str, int] = {}
    for name, m in miss.items():
        if scm.node(name).missing == "impute" and m[~drop].any():
            imputed[name] = int(m[~drop].sum())
            if imputed[name] == len(kept):
                raise DataError(
                    f"column {name!r} has no observed values (all {len(kept)} rows missing), so its mechanism "
                    "cannot be learned; remove the column's node, mark it 'latent: true', or supply data."
                )
    check_declared(scm, kept)
    summary: dict = {"rows_in": len(df), "rows_dropped": int(drop.sum()), "rows_used": len(kept),
                     "dropped": dropped, "imputed": imputed}
    if df.attrs.get(INTEGRATION_ATTR):
        summary["integration"] = df.attrs[INTEGRATION_ATTR]
    return kept, summary


def check_support(name: str, family: str, arr: np.ndarray, index, levels=None) -> None:
    """Raise :class:`DataError` if values of ``name`` fall outside ``family``'s support."""
    if family == "bernoulli":
        bad = ~np.isin(arr, (0.0, 1.0))
        if bad.any():
            raise DataError(
                f"column {name!r} is bernoulli and must hold 0/1, but has values "
                f"{sorted(set(np.asarray(arr)[bad].tolist()))[:5]} in rows {_rows(bad, index)}. "
                "Recode it, or use family 'categorical' or 'poisson'."
            )
    elif family in ("poisson", "negative_binomial"):
        bad = (arr < 0) | (arr != np.round(arr))
        if bad.any():
            raise DataError(
                f"column {name!r} is {family} and must hold non-negative integers, but has "
                f"{sorted(set(np.asarray(arr)[bad].tolist()))[:5]} in rows {_rows(bad, index)}."
            )
    elif family == "lognormal":
        bad = arr <= 0
        if bad.any():
            raise DataError(
                f"column {name!r} is lognormal and must be positive, but has values <= 0 in rows "
                f"{_rows(bad, index)}. Use 'normal', or shift the variable."
            )
    elif family == "categorical" and levels is not None:
        known = set(levels)
        bad = np.array([v not in known for v in arr], dtype=bool)
        if bad.any():
            raise DataError(
                f"column {name!r} has categories {sorted(set(map(str, np.asarray(arr)[bad])))[:5]} "
                f"that are not among its levels {list(levels)} (rows {_rows(bad, index)}); add them to the "
                f"node's 'levels', or fix those rows.{yaml_bool_hint(levels)}"
            )


def fit_scales(scm, df: pd.DataFrame) -> dict[str, NodeScale]:
    """Compute every node's :class:`NodeScale` from the fitting data (after validation).

    Rows that a ``missing: drop`` node leaves out are left out here too; values left for
    imputation do not enter the scales.
    """
    df, _ = prepare(scm, df)
    scales: dict[str, NodeScale] = {}
    for name in scm.order:
        node = scm.node(name)
        if node.latent:
            scales[name] = NodeScale()
            continue
        fam = node.family
        raw = _column(df, name, fam, scm.name, allow_missing=node.missing == "impute")
        seen = ~missing_mask(raw)
        arr, index = raw[seen], np.asarray(df.index)[seen]
        if fam == "categorical":
            levels = node.levels
            if levels is None:
                try:
                    levels = tuple(sorted(set(arr.tolist())))
                except TypeError:
                    levels = tuple(sorted(set(arr.tolist()), key=str))
            check_support(name, fam, arr, index, levels)
            if len(levels) < 2:
                raise DataError(
                    f"column {name!r} is categorical but holds a single category {levels[0]!r}; "
                    "a node needs at least two categories."
                )
            levels = tuple(v.item() if isinstance(v, np.generic) else v for v in levels)
            scales[name] = NodeScale(levels=levels)
            continue
        check_support(name, fam, arr, index)
        is_int = bool(np.all(arr == np.round(arr)))
        if fam in ("normal", "student_t", "lognormal"):
            x = np.log(arr) if fam == "lognormal" else arr
            m, sd = _moments(name, x)
            scales[name] = NodeScale(m, sd if sd > 0 else 1.0, is_int=is_int)
        elif fam in ("poisson", "negative_binomial"):
            m, sd = _moments(name, arr)
            sd = sd if sd > 0 else 1.0
            scales[name] = NodeScale(m, sd, offset=float(np.log(max(m, 1e-3))), is_int=True,
                                     pred_center=m, pred_scale=sd)
        else:
            scales[name] = NodeScale(is_int=True)
    return scales


def _moments(name: str, x: np.ndarray) -> tuple[float, float]:
    """Mean and SD of a column for its internal scale; a :class:`DataError` where floating point cannot
    represent them (values beyond ~1e154 overflow the squares, values below ~1e-154 underflow to a
    spread of zero), instead of a silently infinite or collapsed scale."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        m, sd = float(np.mean(x)), float(np.std(x))
    if not (np.isfinite(m) and np.isfinite(sd)) or (sd == 0 and np.ptp(x) > 0):
        raise DataError(
            f"column {name!r} spans {float(np.min(x)):.3g} to {float(np.max(x)):.3g}, beyond what its mean and SD "
            "can be computed from in floating point; rescale it (e.g. to thousands, or to a log scale) before "
            "fitting."
        )
    return m, sd


def check_frame(scm, df) -> None:
    """Raise :class:`DataError` unless ``df`` is a non-empty DataFrame."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(df).__name__}.")
    if len(df) == 0:
        raise DataError(f"the data for model {scm.name!r} has no rows; pass a non-empty DataFrame.")
    if isinstance(df.columns, pd.MultiIndex):  # df['x'] finds ('x', ''), but the fit's columns would not
        raise DataError(
            f"the data for model {scm.name!r} has {df.columns.nlevels} levels of column headers "
            f"(e.g. {df.columns[0]!r}); flatten them to one name per column, e.g. "
            "df.columns = ['_'.join(filter(None, map(str, c))) for c in df.columns]."
        )


def encode(scm, scales: dict[str, NodeScale], df: pd.DataFrame, nodes=None,
           missing_ok: bool = False) -> dict[str, np.ndarray]:
    """Convert the observed columns of ``df`` to the internal scale (float64 arrays).

    ``nodes`` limits which nodes are read (default: every observed node). With ``missing_ok``
    (the fitting data after :func:`prepare`), missing values of ``missing: impute`` nodes become
    ``NaN``; otherwise any missing value is a :class:`DataError`.
    """
    check_frame(scm, df)
    out: dict[str, np.ndarray] = {}
    for name in nodes if nodes is not None else scm.observed:
        node = scm.node(name)
        sc = scales[name]
        arr = _column(df, name, node.family, scm.name, allow_missing=missing_ok and node.missing == "impute",
                      policy=node.missing)
        seen = ~missing_mask(arr)
        check_support(name, node.family, arr[seen], np.asarray(df.index)[seen], sc.levels)
        out[name] = to_internal(node.family, sc, arr)
    return out


def to_internal(family: str, sc: NodeScale, values) -> np.ndarray:
    """Original units -> internal scale for one node (see module docstring)."""
    if family == "categorical":
        lookup = {v: i for i, v in enumerate(sc.levels)}
        return np.array([np.nan if v is None else lookup[v] for v in np.asarray(values, dtype=object)], dtype=float)
    arr = np.asarray(values, dtype=float)
    if family == "lognormal":
        return (np.log(arr) - sc.center) / sc.scale
    if FAMILIES[family].standardise:
        return (arr - sc.center) / sc.scale
    return arr


def to_original(family: str, sc: NodeScale, z):
    """Internal scale -> original units for one node (categorical codes stay codes)."""
    z = np.asarray(z)
    if family == "lognormal":
        return np.exp(sc.center + sc.scale * z)
    if FAMILIES[family].standardise:
        return sc.center + sc.scale * z
    return z
