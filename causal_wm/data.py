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
take and return values in the data's original units.
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


def _rows(mask: np.ndarray, index) -> str:
    idx = np.asarray(index)[mask][:8].tolist()  # plain Python labels: 3, not np.int64(3)
    more = int(mask.sum()) - len(idx)
    return f"{idx}{f' and {more} more' if more > 0 else ''}"


def _column(df: pd.DataFrame, name: str, family: str, where: str) -> np.ndarray:
    if name not in df.columns:
        raise DataError(
            f"column {name!r} (node of {where}) is missing from the data.{suggest(name, map(str, df.columns))} "
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
            raise DataError(
                f"column {name!r} has {int(na.sum())} missing values (rows {_rows(na, df.index)}); "
                "drop or fill those rows before fitting."
            )
        return vals
    if col.dtype == bool:
        col = col.astype(float)
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
    if nan.any():
        raise DataError(
            f"column {name!r} has {int(nan.sum())} missing (NaN) values in rows "
            f"{_rows(nan, df.index)}; drop or impute them before fitting."
        )
    inf = np.isinf(arr)
    if inf.any():
        raise DataError(
            f"column {name!r} has {int(inf.sum())} infinite values in rows {_rows(inf, df.index)}; "
            "drop those rows or replace the values with finite numbers."
        )
    return arr


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
                f"that are not among its levels {list(levels)} (rows {_rows(bad, index)})."
            )


def fit_scales(scm, df: pd.DataFrame) -> dict[str, NodeScale]:
    """Compute every node's :class:`NodeScale` from the fitting data (after validation)."""
    check_frame(scm, df)
    scales: dict[str, NodeScale] = {}
    for name in scm.order:
        node = scm.node(name)
        if node.latent:
            scales[name] = NodeScale()
            continue
        fam = node.family
        arr = _column(df, name, fam, scm.name)
        if fam == "categorical":
            levels = node.levels
            if levels is None:
                try:
                    levels = tuple(sorted(set(arr.tolist())))
                except TypeError:
                    levels = tuple(sorted(set(arr.tolist()), key=str))
            check_support(name, fam, arr, df.index, levels)
            if len(levels) < 2:
                raise DataError(
                    f"column {name!r} is categorical but holds a single category {levels[0]!r}; "
                    "a node needs at least two categories."
                )
            levels = tuple(v.item() if isinstance(v, np.generic) else v for v in levels)
            scales[name] = NodeScale(levels=levels)
            continue
        check_support(name, fam, arr, df.index)
        is_int = bool(np.all(arr == np.round(arr)))
        if fam in ("normal", "student_t", "lognormal"):
            x = np.log(arr) if fam == "lognormal" else arr
            sd = float(np.std(x))
            scales[name] = NodeScale(float(np.mean(x)), sd if sd > 0 else 1.0, is_int=is_int)
        elif fam in ("poisson", "negative_binomial"):
            m = float(np.mean(arr))
            sd = float(np.std(arr))
            sd = sd if sd > 0 else 1.0
            scales[name] = NodeScale(m, sd, offset=float(np.log(max(m, 1e-3))), is_int=True,
                                     pred_center=m, pred_scale=sd)
        else:
            scales[name] = NodeScale(is_int=True)
    return scales


def check_frame(scm, df) -> None:
    """Raise :class:`DataError` unless ``df`` is a non-empty DataFrame."""
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(df).__name__}.")
    if len(df) == 0:
        raise DataError(f"the data for model {scm.name!r} has no rows; pass a non-empty DataFrame.")


def encode(scm, scales: dict[str, NodeScale], df: pd.DataFrame, nodes=None) -> dict[str, np.ndarray]:
    """Convert the observed columns of ``df`` to the internal scale (float64 arrays).

    ``nodes`` limits which nodes are read (default: every observed node).
    """
    check_frame(scm, df)
    out: dict[str, np.ndarray] = {}
    for name in nodes if nodes is not None else scm.observed:
        node = scm.node(name)
        sc = scales[name]
        arr = _column(df, name, node.family, scm.name)
        check_support(name, node.family, arr, df.index, sc.levels)
        out[name] = to_internal(node.family, sc, arr)
    return out


def to_internal(family: str, sc: NodeScale, values) -> np.ndarray:
    """Original units -> internal scale for one node (see module docstring)."""
    if family == "categorical":
        lookup = {v: i for i, v in enumerate(sc.levels)}
        return np.array([lookup[v] for v in np.asarray(values, dtype=object)], dtype=float)
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
