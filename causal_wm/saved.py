"""Rebuild a fitted model from a results folder, without refitting.

A folder written by a study run (or ``causal-wm fit``) holds ``posterior.nc`` (the InferenceData),
``model.yaml``, ``data.csv`` (the exact data fitted) and ``manifest.json`` (the settings).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from causal_wm.errors import CausalWMError, QueryError, StudyError, suggest

CONDITION = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")


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
        data = pd.read_csv(d / "data.csv", index_col="unit")
    except (OSError, ValueError) as exc:
        raise unreadable("data.csv", exc) from None
    try:
        manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        known = FitSettings.__dataclass_fields__
        settings = FitSettings(**{k: v for k, v in manifest["settings"].items() if k in known})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise unreadable("manifest.json", exc) from None
    try:
        idata = az.from_netcdf(d / "posterior.nc")
        idata.posterior  # noqa: B018 - a file without the posterior group is no saved fit
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise unreadable("posterior.nc", exc) from None
    return Posterior(scm=scm, plan=make_plan(scm, data), idata=idata, settings=settings)


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
