"""Data sources declared as data: a CSV/Parquet path or a table shipped in a known package."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from causal_wm.errors import DataError


def _causaldata(table: str) -> pd.DataFrame:
    import importlib

    import causaldata

    names = sorted(
        p.name for p in Path(causaldata.__file__).parent.iterdir() if (p / "__init__.py").exists()
    )
    if table not in names:
        from causal_wm.errors import suggest

        raise DataError(f"causaldata has no table {table!r}.{suggest(table, names)}")
    mod = importlib.import_module(f"causaldata.{table}")
    return mod.load_pandas().data


# Only these packages may be named in a file: a file names data, it never picks code to import.
PACKAGES = {"causaldata": _causaldata}


def load_source(spec: dict, base: str | Path | None = None) -> pd.DataFrame:
    """Load one declared source: ``{path: file.csv}`` or ``{package: causaldata, table: name}``.

    Examples
    --------
    >>> len(load_source({"package": "causaldata", "table": "nsw_mixtape"}))
    445
    """
    if not isinstance(spec, Mapping):
        raise DataError(f"data source {spec!r}: expected a mapping like {{path: data.csv}} or "
                        "{package: causaldata, table: nsw_mixtape}.")
    if "path" in spec:
        if not isinstance(spec["path"], (str, Path)):
            raise DataError(f"data source {spec!r}: 'path' must be a file name, got {spec['path']!r}.")
        path = Path(spec["path"])
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        if not path.is_file():
            raise DataError(f"data file {str(path)!r} does not exist; check 'data.path'.")
        if path.suffix not in (".csv", ".parquet", ".pq"):
            raise DataError(f"data file {str(path)!r}: expected a .csv or .parquet file.")
        try:
            return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas parser errors are ValueErrors
            raise DataError(f"data file {str(path)!r} could not be read: {exc}") from None
    pkg = spec.get("package")
    if pkg in PACKAGES:
        table = spec.get("table")
        if not isinstance(table, str):
            raise DataError(f"data source {spec!r}: 'table' must name a table of {pkg}.")
        return PACKAGES[pkg](table)
    raise DataError(
        f"data source {spec!r}: expected {{path: file.csv}} or {{package: P, table: T}} with P one "
        f"of {sorted(PACKAGES)}."
    )
