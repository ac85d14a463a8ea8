"""Rebuild a fitted model from a results folder, without refitting.

A folder written by a study run (or ``causal-wm fit``) holds ``posterior.nc`` (the InferenceData),
``model.yaml``, ``data.csv`` (the exact data fitted) and ``manifest.json`` (the settings).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from causal_wm.errors import CausalWMError, QueryError, StudyError, suggest

CONDITION = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")
TYPES_FILE = "data_types.json"  # the column types of data.csv (CSV alone turns the label "10" into 10)


class DataChanged(ValueError):
    """data.csv is not the file the fit wrote."""


def write_frame(frame: pd.DataFrame, d: Path) -> None:
    """Write ``frame`` as ``d/data.csv`` (floats at full precision) and its column and index types
    as ``d/data_types.json``, so that :func:`read_frame` gives back the same values of the same types:
    labels that look like numbers stay labels ("10", "0001"), "NA" stays a label, booleans and
    categories (with their order) come back as they were."""
    if isinstance(frame.index, pd.MultiIndex):  # one column of labels: their text, as the posterior's coords
        from causal_wm.idata import unit_labels

        frame = frame.set_axis(pd.Index(unit_labels(frame.index)))
    frame = frame.rename_axis("unit")  # a new index object: the caller's keeps its name
    types = {"index": _type_of(frame.index), "columns": {str(c): _type_of(frame[c]) for c in frame.columns}}
    frame.to_csv(d / "data.csv", float_format="%.17g")
    types["sha256"] = hashlib.sha256((d / "data.csv").read_bytes()).hexdigest()  # data.csv as written
    (d / TYPES_FILE).write_text(json.dumps(types, indent=1), encoding="utf-8")


def _type_of(values) -> dict:
    dt = values.dtype
    if isinstance(dt, pd.CategoricalDtype):
        cats = _json_values(dt.categories)
        if cats is None:
            return {}
        return _with_blanks({"kind": "category", "ordered": bool(dt.ordered), "values": cats}, values)
    if pd.api.types.is_bool_dtype(dt):
        return {"kind": "bool", "dtype": str(dt)}
    if pd.api.types.is_numeric_dtype(dt):
        return {"kind": "number", "dtype": str(dt)}
    vals = _json_values(pd.unique(values[pd.notna(values)]))
    return _with_blanks({"kind": "labels", "dtype": str(dt), "values": vals}, values) if vals is not None else {}


def _with_blanks(kind: dict, values) -> dict:
    """``kind`` plus the rows holding the label "" (CSV writes it as it writes a missing value)."""
    if "" in kind["values"]:
        kind["blank_rows"] = [i for i, v in enumerate(values) if isinstance(v, str) and v == ""]
    return kind


def _json_values(values) -> list | None:
    """Labels as JSON values, or None where they would not come back as themselves (a type JSON
    lacks, or two labels written alike, such as 1 and "1")."""
    out = [v.item() if isinstance(v, np.generic) else v for v in values]
    if not all(isinstance(v, (str, int, float, bool)) for v in out) or len({str(v) for v in out}) != len(out):
        return None
    return out


def read_frame(d: Path) -> pd.DataFrame:
    """The frame :func:`write_frame` wrote to ``d`` (a folder without ``data_types.json``, written by
    an older version, is read with pandas' defaults)."""
    path = d / "data.csv"
    if not (d / TYPES_FILE).is_file():
        return pd.read_csv(path, index_col="unit")
    types = json.loads((d / TYPES_FILE).read_text(encoding="utf-8"))
    recorded = types.get("sha256")
    if recorded is not None and recorded != hashlib.sha256(path.read_bytes()).hexdigest():
        raise DataChanged("data.csv was changed after the fit wrote it (its SHA-256 differs from the one recorded "
                          f"in {TYPES_FILE})")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    if "unit" not in raw.columns:
        raise ValueError("data.csv has no 'unit' column")
    cols = {c: pd.array(_typed(raw[c], types["columns"].get(c, {}), c)) for c in raw.columns if c != "unit"}
    index = pd.Index(pd.array(_typed(raw["unit"], types.get("index", {}), "unit")))
    return pd.DataFrame(cols, index=index)


def _typed(col: pd.Series, kind: dict, name: str):
    k = kind.get("kind")
    if k == "number":
        out = pd.to_numeric(col)
        plain_int = kind["dtype"].startswith(("int", "uint"))  # numpy integers cannot hold a missing value
        return out if plain_int and out.isna().any() else out.astype(kind["dtype"])
    if k == "bool":
        out = col.map({"True": True, "False": False})
        if out.notna().sum() != col.notna().sum():
            raise ValueError(f"column {name!r} should hold True/False")
        return out.astype(kind["dtype"]) if not out.isna().any() or kind["dtype"] == "boolean" else out
    if k in ("labels", "category"):
        lookup = {str(v): v for v in kind["values"]}
        unknown = col[col.notna() & ~col.isin(list(lookup))]
        if len(unknown):
            raise ValueError(f"column {name!r} holds {unknown.iloc[0]!r}, not one of its recorded labels")
        out = col.map(lookup)
        out.iloc[kind.get("blank_rows", [])] = ""
        if k == "category":
            return pd.Categorical(out, categories=kind["values"], ordered=kind["ordered"])
        return out.astype(kind["dtype"]) if kind["dtype"] != "object" else out.astype(object)
    try:  # a type that was not recorded: numbers if they all read as numbers, else text
        return pd.to_numeric(col)
    except (ValueError, TypeError):
        return col


def load_posterior(results_dir: str | Path):
    """The :class:`~causal_wm.posterior.Posterior` saved in ``results_dir``.

    Examples
    --------
    >>> post = load_posterior("results/job_training")  # doctest: +SKIP
    >>> post.effect("re78", do={"treat": 1}, vs={"treat": 0}).mean()  # doctest: +SKIP
    """
    import arviz as az
    import yaml

    from causal_wm.fitting import FitSettings, make_plan
    from causal_wm.posterior import Posterior
    from causal_wm.seeding import valid_seed
    from causal_wm.spec import SCM

    d = Path(results_dir)
    for name in ("posterior.nc", "model.yaml", "data.csv", "manifest.json"):
        if not (d / name).is_file():
            raise StudyError(f"{d} is not a results folder: {name} is missing. Run a study (causal-wm run) or "
                             "causal-wm fit first.")
    def unreadable(name: str, exc: Exception) -> StudyError:
        return StudyError(f"{d / name} could not be read ({type(exc).__name__}: {exc}); the results folder is "
                          "damaged or was not written by causal_wm. Run the study (causal-wm run) or causal-wm fit "
                          "again to rewrite it.")

    try:
        scm = SCM.from_dict(yaml.safe_load((d / "model.yaml").read_text(encoding="utf-8")))
    except CausalWMError:
        raise
    except (OSError, ValueError, yaml.YAMLError, TypeError, AttributeError) as exc:
        raise unreadable("model.yaml", exc) from None
    try:
        data = read_frame(d)
    except DataChanged as exc:
        raise StudyError(f"{d}: {exc}, so the posterior was not fitted to it. Run the study or causal-wm fit "
                         "again to rewrite the folder.") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise unreadable("data.csv", exc) from None
    try:
        manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        known = FitSettings.__dataclass_fields__
        settings = FitSettings(**{k: v for k, v in manifest["settings"].items() if k in known})
        if not valid_seed(settings.seed):  # queries derive their streams from it
            raise ValueError(f"seed {settings.seed!r} is not an integer in [0, 2**63)")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise unreadable("manifest.json", exc) from None
    try:
        idata = az.from_netcdf(d / "posterior.nc")
        idata.posterior  # noqa: B018 - a file without the posterior group is no saved fit
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise unreadable("posterior.nc", exc) from None
    try:
        plan = make_plan(scm, data)
    except CausalWMError as exc:
        raise StudyError(f"{d}: the saved data no longer fit the saved model ({exc}); the folder was changed "
                         "after it was written. Run the study or causal-wm fit again.") from None
    check_matches(d, plan, idata)
    return Posterior(scm=scm, plan=plan, idata=idata, settings=settings)


def check_matches(d: Path, plan, idata) -> None:
    """Refuse a folder whose posterior was not fitted to its model and data: another model's or
    data's posterior would answer queries with wrong numbers and no error."""
    from causal_wm import sites
    from causal_wm.idata import scales_attr

    def bad(what: str) -> StudyError:
        return StudyError(f"{d}: {what}, so the posterior was not fitted to this model and data (the folder was "
                          "changed, or mixes two fits). Run the study or causal-wm fit again to rewrite it.")

    attrs = idata.attrs
    if attrs.get("model", plan.scm.name) != plan.scm.name:
        raise bad(f"posterior.nc is a fit of model {attrs.get('model')!r}, model.yaml is {plan.scm.name!r}")
    post = idata.posterior
    for site, shape in sites.shapes(plan).items():
        if site not in post:
            raise bad(f"posterior.nc has no {site!r}, which model.yaml needs")
        if tuple(post[site].shape[2:]) != shape:
            raise bad(f"{site!r} has shape {tuple(post[site].shape[2:])} per draw in posterior.nc, and model.yaml "
                      f"with data.csv needs {shape}")
    if "observed_data" in idata.groups() and "unit" in idata.observed_data.coords:
        n = idata.observed_data.sizes["unit"]
        if n != len(plan.index):
            raise bad(f"data.csv has {len(plan.index)} units after its missing-data policies, the fit had {n}")
    if "scales" in attrs:
        saved, now = json.loads(attrs["scales"]), json.loads(scales_attr(plan))
        for name, sc in now.items():
            old = saved.get(name)
            if old is None:
                continue
            if old.get("levels") != sc["levels"]:
                raise bad(f"node {name!r} has categories {sc['levels']} in data.csv, the fit had {old.get('levels')}")
            for key in ("center", "scale", "offset"):
                a, b = old.get(key), sc[key]
                if a is not None and not np.isclose(a, b, rtol=1e-9, atol=1e-12):
                    raise bad(f"node {name!r} has {key} {b:.6g} in data.csv, the fit had {a:.6g}")


def parse_assignment(text: str) -> tuple[str, object]:
    """``"treat=1"`` -> ("treat", 1.0); ``"re74=shift:1000"`` -> ("re74", shift(1000)); strings stay strings."""
    from causal_wm.interventions import scale, shift

    if "=" not in text:
        raise QueryError(f"intervention {text!r}: write NODE=VALUE, NODE=shift:D or NODE=scale:K.")
    name, value = (p.strip() for p in text.split("=", 1))
    for prefix, make in (("shift:", shift), ("scale:", scale)):
        if value.startswith(prefix):
            return name, make(_number(value[len(prefix):], text))
    try:
        return name, float(value)
    except ValueError:
        return name, value


def _number(v: str, where: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise QueryError(f"{where!r}: {v!r} is not a number.") from None


def select_units(frame: pd.DataFrame, condition: str | None) -> np.ndarray:
    """A boolean mask from a condition like ``"age > 30 and black == 1"`` (comparisons joined by
    ``and``; parsed, never evaluated as code)."""
    if not condition:
        return np.ones(len(frame), dtype=bool)
    mask = np.ones(len(frame), dtype=bool)
    for part in re.split(r"\s+and\s+", condition, flags=re.IGNORECASE):
        m = CONDITION.match(part)
        if not m:
            raise QueryError(f"units condition {part!r}: write COLUMN OP VALUE with OP one of == != < <= > >=, "
                             "joined by 'and'.")
        col, op, raw = m.groups()
        if col not in frame.columns:
            raise QueryError(f"units condition: no column {col!r}.{suggest(col, frame.columns)}")
        raw = raw.strip("'\"")
        try:
            value: object = float(raw)
        except ValueError:
            value = raw
        series = frame[col]
        numeric = pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
        if numeric and isinstance(value, str):
            raise QueryError(f"units condition {part.strip()!r}: column {col!r} holds numbers, and {raw!r} is not "
                             f"a number; write e.g. '{col} {op} 30' (conditions are joined by 'and').")
        ops = {"==": series.__eq__, "!=": series.__ne__, "<": series.__lt__, "<=": series.__le__,
               ">": series.__gt__, ">=": series.__ge__}
        try:
            mask &= ops[op](value).to_numpy(dtype=bool)
        except TypeError as exc:
            raise QueryError(f"units condition {part.strip()!r} cannot be evaluated on column {col!r} "
                             f"({series.dtype}): {exc}.") from None
    if not mask.any():
        raise QueryError(f"units condition {condition!r} selects no units.")
    return mask
