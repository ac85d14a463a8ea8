"""Data integration declared as data: several sources stacked or joined on keys, filters and
derived columns, with a summary of what happened to the rows.

A ``data:`` block is either one source (``{path: ...}`` or ``{package: ..., table: ...}``) or::

    data:
      sources:
        nsw: {package: causaldata, table: nsw_mixtape}
        cps: {package: causaldata, table: cps_mixtape}
      stack: [nsw, cps]              # rows of both, with their name in `source_column`
      source_column: source
      # or: join: {left: people, right: regions, on: [region_id], how: left}
      filter: [{column: age, op: ">=", value: 18}]
      derive: [{name: age2, op: square, of: age}, {name: treated_cps, op: equals, of: source, value: cps}]
      columns: [age, age2, ...]      # keep only these (optional)

One source may carry ``filter:``, ``derive:`` and ``columns:`` beside its ``path:`` (or ``package:``
and ``table:``), applied as above. Unknown keys anywhere in the block are errors.

A source may carry its own ``filter:`` list, applied to that source alone before the sources are
combined (``nsw: {package: causaldata, table: nsw_mixtape, filter: [{column: treat, op: "==",
value: 1}]}`` keeps the NSW trainees only), since the top-level filter sees the combined rows.

Operations come from a fixed table (never code): filters ``== != < <= > >= in notin``; derived
columns ``square log log1p exp abs add subtract multiply divide equals``.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from causal_wm.data import INTEGRATION_ATTR
from causal_wm.errors import DataError, suggest
from causal_wm.sources import SOURCE_KEYS as _READ_KEYS
from causal_wm.sources import load_source

DATA_KEYS = {"sources", "stack", "join", "source_column", "rename", "filter", "derive", "columns"}
SOURCE_KEYS = set(_READ_KEYS)  # what load_source reads: path or package + table, missing_text
NAMED_SOURCE_KEYS = SOURCE_KEYS | {"filter"}  # an entry of sources: may carry its own filter
SINGLE_KEYS = SOURCE_KEYS | {"rename", "filter", "derive", "columns"}  # one source: steps needing no combining
FILTER_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
              ">=": operator.ge}
UNARY = {"square": np.square, "log": np.log, "log1p": np.log1p, "exp": np.exp, "abs": np.abs}
BINARY = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide}


@dataclass(frozen=True)
class DataBundle:
    """The integrated table and a summary of the steps (rows per source, joined, filtered).

    The frame carries the summary in ``frame.attrs`` too, so that fitting it records where its rows
    came from (:func:`causal_wm.data.prepare`, ``Posterior.data_summary``).
    """

    frame: pd.DataFrame
    summary: dict = field(default_factory=dict)

    def __post_init__(self):
        frame = self.frame.copy(deep=False)  # never tag a frame a package may have cached
        frame.attrs[INTEGRATION_ATTR] = self.summary
        object.__setattr__(self, "frame", frame)


def load_data(spec: Mapping, base=None) -> DataBundle:
    """Load a ``data:`` block (one source, or sources with stack/join, filters and derived columns).

    Examples
    --------
    >>> b = load_data({"sources": {"a": {"package": "causaldata", "table": "nsw_mixtape"}},
    ...                "filter": [{"column": "age", "op": ">=", "value": 30}]})
    >>> b.summary["rows"]["after filter"] < b.summary["rows"]["a"]
    True
    """
    check_spec(spec)
    if "sources" not in spec:  # one source; its filter, derived columns and column list as for several
        source = {k: v for k, v in spec.items() if k in SOURCE_KEYS}
        steps = {k: v for k, v in spec.items() if k not in SOURCE_KEYS}
        frame = load_source(source, base=base)
        if not steps:
            return DataBundle(frame, {"rows": {"source": len(frame)}})
        spec = {"sources": {"source": source}, **steps}
    sources = spec["sources"]
    frames = {str(k): _load_named(str(k), v, base) for k, v in sources.items()}
    rows: dict = {k: len(v) for k, v in frames.items()}
    summary: dict = {"rows": rows}
    if "stack" in spec and "join" in spec:
        raise DataError("data: use either 'stack' or 'join', not both.")
    if "stack" in spec:
        frame = _stack(frames, spec["stack"], spec.get("source_column", "source"))
        rows["stacked"] = len(frame)
    elif "join" in spec:
        frame, info = _join(frames, spec["join"])
        rows["joined"] = len(frame)
        summary["join"] = info
    elif len(frames) == 1:
        frame = next(iter(frames.values()))
    else:
        raise DataError(f"data: {len(frames)} sources need 'stack: [...]' or 'join: {{...}}' to combine them.")
    if spec.get("rename") is not None:
        frame = _rename(frame, spec["rename"])
    for f in spec.get("filter") or []:
        frame = _filter(frame, f)
    rows["after filter"] = len(frame)
    for d in spec.get("derive") or []:
        frame = _derive(frame, d)
    if spec.get("columns"):
        missing = [c for c in spec["columns"] if c not in frame.columns]
        if missing:
            raise DataError(f"data.columns names {missing}, which the data do not have.")
        frame = frame[list(spec["columns"])]
    return DataBundle(frame.reset_index(drop=True), summary)


def _rename(frame: pd.DataFrame, names) -> pd.DataFrame:
    """Columns renamed, ``{old: new}``: a column whose name cannot be a node's ("monthly income")."""
    if not isinstance(names, Mapping) or not all(isinstance(v, str) and v for v in names.values()):
        raise DataError(f"data.rename: expected a mapping of column -> new name, e.g. "
                        f"{{'monthly income': monthly_income}}, got {names!r}.")
    have = [str(c) for c in frame.columns]
    for old in names:
        if str(old) not in have:
            raise DataError(f"data.rename: the data have no column {old!r}.{suggest(str(old), have)}")
    new = [names.get(c, c) for c in have]
    if len(set(new)) != len(new):
        raise DataError(f"data.rename: two columns would be called {sorted({c for c in new if new.count(c) > 1})}.")
    return frame.set_axis(new, axis=1)


def _unknown(keys, allowed, what: str) -> None:
    unknown = sorted(str(k) for k in keys if k not in allowed)
    if unknown:
        key = unknown[0]
        raise DataError(f"{what}: unknown key {key!r}; allowed {sorted(allowed)}.{suggest(key, allowed)}")


def check_spec(spec) -> None:
    """Check a ``data:`` block's shape without loading anything: its keys, those of each source, and
    that filters, derived columns and column lists are lists (a typo never goes silently unused).

    Examples
    --------
    >>> check_spec({"path": "d.csv", "fliter": []})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    causal_wm.errors.DataError: data: unknown key 'fliter'; allowed [...]. Did you mean 'filter'?
    """
    if not isinstance(spec, Mapping):
        raise DataError(f"'data' must be a mapping, got {type(spec).__name__}.")
    if "sources" in spec:
        _unknown(spec, DATA_KEYS, "data")
        sources = spec["sources"]
        if not isinstance(sources, Mapping) or not sources:
            raise DataError("data.sources must map names to sources, e.g. {a: {path: a.csv}}.")
        for name, src in sources.items():
            if isinstance(src, Mapping):
                _unknown(src, NAMED_SOURCE_KEYS, f"data.sources.{name}")
                if "filter" in src and not isinstance(src["filter"], list):
                    raise DataError(f"data.sources.{name}.filter must be a list like [{{column: c, op: '==', "
                                    f"value: v}}], got {src['filter']!r}.")
    else:
        for k in ("stack", "join", "source_column"):
            if k in spec:
                raise DataError(f"data: {k!r} combines several sources, and this block has one; name them under "
                                "'sources:' (e.g. sources: {a: {path: a.csv}, b: {path: b.csv}}).")
        _unknown(spec, SINGLE_KEYS, "data")
    for k, example in (("filter", "[{column: age, op: '>=', value: 18}]"),
                       ("derive", "[{name: age2, op: square, of: age}]"), ("columns", "[age, educ]")):
        if spec.get(k) is not None and not isinstance(spec[k], list):
            raise DataError(f"data.{k} must be a list like {example}, got {spec[k]!r}.")


def _load_named(name, spec, base) -> pd.DataFrame:
    """One named source, with its own ``filter:`` list (if any) applied before combining."""
    if not isinstance(spec, Mapping) or "filter" not in spec:
        return load_source(spec, base=base)
    filters = spec["filter"]
    frame = load_source({k: v for k, v in spec.items() if k != "filter"}, base=base)
    for f in filters:
        frame = _filter(frame, f)
    return frame


def _stack(frames, names, column) -> pd.DataFrame:
    if not isinstance(names, list) or not names:
        raise DataError("data.stack must list source names, e.g. [nsw, cps].")
    for n in names:
        if not isinstance(n, str) or n not in frames:
            raise DataError(f"data.stack names {n!r}, which is not a source.{suggest(str(n), frames)}")
    if len(set(names)) < len(names):
        raise DataError(f"data.stack lists a source twice ({names}); its rows would be stacked twice. List each once.")
    if not isinstance(column, str):
        raise DataError(f"data.source_column must be a column name, got {column!r}.")
    clash = [n for n in names if column in frames[n].columns]
    if clash:
        raise DataError(f"data.stack: source {clash[0]!r} already has a column {column!r}, which stacking would "
                        "overwrite with the source's name; set source_column: to another name.")
    cols = [set(frames[n].columns) for n in names]
    common = set.intersection(*cols)
    dropped = sorted(set.union(*cols) - common)
    if dropped:
        raise DataError(f"data.stack: columns {dropped[:8]} are not in every source; select common columns "
                        "in each source or derive them.")
    parts = [frames[n].assign(**{column: n}) for n in names]
    return pd.concat(parts, ignore_index=True)


def _join(frames, spec) -> tuple[pd.DataFrame, dict]:
    if not isinstance(spec, Mapping) or not {"left", "right", "on"} <= set(spec):
        raise DataError("data.join needs {left: A, right: B, on: [key], how: inner|left}.")
    left, right = frames.get(spec["left"]), frames.get(spec["right"])
    if left is None or right is None:
        raise DataError(f"data.join names an unknown source; sources are {sorted(frames)}.")
    on = [spec["on"]] if isinstance(spec["on"], str) else spec["on"]
    if not isinstance(on, list) or not on or not all(isinstance(k, str) for k in on):
        raise DataError(f"data.join: on must be a key column or a list of them, got {spec['on']!r}.")
    for side, f in (("left", left), ("right", right)):
        missing = [k for k in on if k not in f.columns]
        if missing:
            raise DataError(f"data.join: key {missing[0]!r} is not a column of the {side} source.")
        na = f[on].isna().any(axis=1)
        if na.any():  # pandas would match missing keys to each other
            raise DataError(f"data.join: {int(na.sum())} rows of the {side} source ({spec[side]!r}) have a missing "
                            f"key {on}; a missing key matches nothing. Filter them out of that source first.")
    both = sorted((set(left.columns) & set(right.columns)) - set(on))
    if both:
        raise DataError(f"data.join: columns {both[:8]} are in both {spec['left']!r} and {spec['right']!r} (besides "
                        "the key); keep them in one source only (its columns: list).")
    dup = right.duplicated(on, keep=False)
    if dup.any():
        raise DataError(f"data.join: the key {on} is not unique in {spec['right']!r} ({int(dup.sum())} rows share "
                        "a key); a join would duplicate units. Deduplicate or aggregate it first.")
    how = spec.get("how", "inner")
    if how not in ("inner", "left"):
        raise DataError(f"data.join: how must be 'inner' or 'left', got {how!r}.")
    try:
        merged = left.merge(right, on=on, how="left", indicator=True)
    except (TypeError, ValueError) as exc:  # e.g. keys of different types in the two sources
        raise DataError(f"data.join on {on}: {exc}; give the key the same type in both sources.") from None
    unmatched = int((merged["_merge"] == "left_only").sum())
    if how == "inner":
        merged = merged[merged["_merge"] == "both"]
    return merged.drop(columns="_merge"), {"on": on, "how": how, "unmatched_left_rows": unmatched}


def _filter(frame, f) -> pd.DataFrame:
    if not isinstance(f, Mapping) or not {"column", "op", "value"} <= set(f):
        raise DataError(f"data.filter entry {f!r}: expected {{column: c, op: '>=', value: v}}.")
    col, op, val = f["column"], f["op"], f["value"]
    if not isinstance(col, str) or col not in frame.columns:
        raise DataError(f"data.filter: no column {col!r}.{suggest(str(col), frame.columns)}")
    if op in ("in", "notin"):
        mask = frame[col].isin(val if isinstance(val, list) else [val])
        return frame[mask if op == "in" else ~mask]
    if not isinstance(op, str) or op not in FILTER_OPS:
        raise DataError(f"data.filter: op {op!r} is not one of {sorted(FILTER_OPS) + ['in', 'notin']}.")
    if isinstance(val, (list, dict)):
        raise DataError(f"data.filter on {col!r}: op {op!r} compares with one value, got {val!r}; for several "
                        "values use op: in.")
    try:
        return frame[FILTER_OPS[op](frame[col], val).fillna(False).to_numpy(dtype=bool)]
    except TypeError as exc:
        raise DataError(f"data.filter on {col!r}: cannot compare its values with {val!r} ({exc}); give a value of "
                        "the column's type.") from None


def _derive(frame, d) -> pd.DataFrame:
    if not isinstance(d, Mapping) or not {"name", "op", "of"} <= set(d):
        raise DataError(f"data.derive entry {d!r}: expected {{name: new, op: square, of: column}}.")
    name, op, of = d["name"], d["op"], d["of"]
    if not isinstance(name, str) or not isinstance(op, str):
        raise DataError(f"data.derive entry {d!r}: name and op must be text, e.g. {{name: age2, op: square, of: age}}.")
    args = [of] if isinstance(of, str) else of
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise DataError(f"data.derive {name!r}: of must be a column or a list of columns, got {of!r}.")
    for a in args:
        if a not in frame.columns:
            raise DataError(f"data.derive {name!r}: no column {a!r}.{suggest(str(a), frame.columns)}")
    missing = frame[args].isna().any(axis=1).to_numpy()  # missing in, missing out (for the missing: policy)

    def numbers(a):
        try:
            return frame[a].to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            raise DataError(f"data.derive {name!r}: {op} needs numbers, and column {a!r} holds "
                            f"{frame[a].dropna().iloc[:3].tolist()}.") from None

    if op in UNARY and len(args) == 1:
        with np.errstate(all="ignore"):
            values = UNARY[op](numbers(args[0]))
    elif op in BINARY and len(args) == 2:
        with np.errstate(all="ignore"):
            values = BINARY[op](numbers(args[0]), numbers(args[1]))
    elif op == "equals" and len(args) == 1 and "value" in d:
        values = np.where(missing, np.nan, (frame[args[0]] == d["value"]).to_numpy(dtype=float))
    else:
        raise DataError(f"data.derive {name!r}: op {op!r} with {len(args)} column(s) is not supported; use one of "
                        f"{sorted(UNARY)} (one column), {sorted(BINARY)} (two) or equals (one, with value).")
    new_bad = ~np.isfinite(values) & ~missing
    if new_bad.any():
        raise DataError(f"data.derive {name!r}: {op} gives {int(new_bad.sum())} non-finite values from finite "
                        "ones (e.g. log of 0); filter those rows first.")
    if op == "equals" and not missing.any():
        values = values.astype(int)
    return frame.assign(**{name: values})
