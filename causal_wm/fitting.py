"""Fitting: validate everything, then hand a :class:`FitPlan` to a backend.

Every check of the model, the data and the settings happens here, before any sampling.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from causal_wm.data import NodeScale, encode, fit_scales, prepare
from causal_wm.design import NodeLayout, layouts, marginal_latents, positive_columns
from causal_wm.errors import BackendNotInstalled, FitError, FitSettingsError, suggest
from causal_wm.seeding import valid_seed

log = logging.getLogger(__name__)

BACKENDS = {
    "numpyro": ("causal_wm.backends.numpyro", "pip install numpyro jax"),
    "pymc": ("causal_wm.backends.pymc", "pip install 'causal_wm[pymc]'"),
}


@dataclass(frozen=True)
class FitPlan:
    """What a backend needs: the model, its layouts and the data on the internal scale."""

    scm: object
    scales: dict[str, NodeScale]
    layouts: dict[str, NodeLayout]
    positive: dict[str, tuple[int, ...]]
    values: dict[str, np.ndarray]
    index: np.ndarray
    frame: pd.DataFrame
    marginal: tuple[str, ...] = ()  # latents the NumPyro backend integrates out (design.marginal_latents)
    # rows (positions) whose value each `missing: impute` node lacks; the backends sample them
    missing: dict[str, np.ndarray] = field(default_factory=dict)
    data_summary: dict = field(default_factory=dict)  # data.prepare: rows in/dropped/used, imputed, integration

    @property
    def n(self) -> int:
        """Number of units (rows)."""
        return len(self.index)


@dataclass(frozen=True)
class FitSettings:
    """Sampler settings, recorded with the posterior."""

    backend: str = "numpyro"
    method: str = "nuts"
    chains: int = 4
    draws: int = 1000
    warmup: int = 1000
    target_accept: float = 0.8
    seed: int = 0
    progress: bool = False
    guide: str = "lowrank"
    steps: int = 5000
    learning_rate: float = 0.05  # Adam; 0.01 left the flagship and a 3-node model unsettled after 5,000 steps
    sampler: str = "default"
    dense_mass: bool = False  # NUTS adapts a full mass matrix (correlated posteriors, e.g. IV models)
    marginalize: bool = True  # NumPyro: integrate eligible Gaussian latents out (design.marginal_latents)


def make_plan(scm, data: pd.DataFrame) -> FitPlan:
    """Validate ``data`` against ``scm`` and put it on the internal scale."""
    data, summary = prepare(scm, data)  # missing-data policies (drop rows) and declared column checks
    scales = fit_scales(scm, data)
    values = encode(scm, scales, data, missing_ok=True)
    lays = layouts(scm, scales)
    cols = [c for c in data.columns if c in scm.observed]
    return FitPlan(
        scm=scm,
        scales=scales,
        layouts=lays,
        positive=positive_columns(scm, lays),
        values=values,
        index=np.asarray(data.index),
        frame=data[cols].copy(),
        marginal=marginal_latents(scm, lays),
        missing={k: np.flatnonzero(np.isnan(v)) for k, v in values.items() if k in summary["imputed"]},
        data_summary=summary,
    )


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise FitSettingsError(f"{name} must be an integer >= {low}, got {value!r}.")


def settings(backend="numpyro", **kw) -> FitSettings:
    """Validate fit settings and return them as a :class:`FitSettings`."""
    known = FitSettings.__dataclass_fields__
    for k in kw:
        if k not in known:
            raise FitSettingsError(f"unknown fit setting {k!r}.{suggest(k, known)} Known: {sorted(known)}.")
    s = FitSettings(backend=backend, **kw)
    if s.backend not in BACKENDS:
        raise FitSettingsError(f"unknown backend {s.backend!r}; expected one of {sorted(BACKENDS)}.")
    if s.method not in ("nuts", "svi"):
        raise FitSettingsError(f"method must be 'nuts' or 'svi', got {s.method!r}.")
    _check_int("chains", s.chains, 1)
    _check_int("draws", s.draws, 1)
    _check_int("warmup", s.warmup, 0)
    if not valid_seed(s.seed):
        raise FitSettingsError(f"seed must be a non-negative integer (0 <= seed < 2**63: it is stored as a 64-bit "
                         f"integer), got {s.seed!r}.")
    _check_int("steps", s.steps, 1)
    if isinstance(s.target_accept, bool) or not isinstance(s.target_accept, (int, float)) \
            or not 0 < s.target_accept < 1:
        raise FitSettingsError(f"target_accept must be in (0, 1), got {s.target_accept!r}.")
    if not isinstance(s.dense_mass, bool):
        raise FitSettingsError(f"dense_mass must be true or false, got {s.dense_mass!r}.")
    if s.dense_mass and s.backend == "pymc" and s.sampler not in ("default", "pymc"):
        raise FitSettingsError(f"dense_mass is available with the PyMC backend's own sampler, not {s.sampler!r}; "
                         "drop dense_mass or choose sampler='pymc'.")
    if not isinstance(s.marginalize, bool):
        raise FitSettingsError(f"marginalize must be true or false, got {s.marginalize!r}.")
    if not isinstance(s.progress, bool):
        raise FitSettingsError(f"progress must be true or false, got {s.progress!r}.")
    if isinstance(s.learning_rate, bool) or not isinstance(s.learning_rate, (int, float)) \
            or not 0 < s.learning_rate < math.inf:
        raise FitSettingsError(f"learning_rate must be a positive finite number, got {s.learning_rate!r}.")
    if s.backend == "pymc" and s.method == "svi":
        raise FitSettingsError("the PyMC backend samples with NUTS only; use backend='numpyro' for method='svi'.")
    samplers = {"numpyro": ("default",), "pymc": ("default", "pymc", "nutpie", "numpyro", "blackjax")}[s.backend]
    if s.sampler not in samplers:
        raise FitSettingsError(f"sampler {s.sampler!r} is not available with backend {s.backend!r}; choose one of "
                         f"{list(samplers)}.")
    if s.guide not in ("lowrank", "normal", "mvn"):
        raise FitSettingsError(f"guide must be 'lowrank', 'normal' or 'mvn', got {s.guide!r}.")
    return s


def backend_module(name: str):
    """Import a backend lazily; a missing extra raises :class:`BackendNotInstalled`."""
    modname, install = BACKENDS[name]
    try:
        return importlib.import_module(modname)
    except ImportError as exc:
        raise BackendNotInstalled(
            f"backend {name!r} needs a package that is not installed ({exc.name}); install it "
            f"with: {install}"
        ) from None


def fit(scm, data, backend: str = "numpyro", **kw):
    """Fit ``scm`` to ``data``; see :meth:`causal_wm.spec.SCM.fit`."""
    from causal_wm.posterior import Posterior

    s = settings(backend, **kw)
    plan = make_plan(scm, data)
    data_warnings = _warn_about_data(plan)
    mod = backend_module(s.backend)
    log.info("fitting %s with %s (%s), %d units", scm.name, s.backend, s.method, plan.n)
    try:
        idata = mod.sample(plan, s)
    except (FloatingPointError, RuntimeError) as exc:
        raise FitError(f"the {s.backend} backend failed while fitting {scm.name!r}: {exc}") from exc
    if data_warnings:  # kept with the posterior, so every result and the report carry them
        idata.attrs["data_warnings"] = json.dumps(data_warnings)
    post = Posterior(scm=scm, plan=plan, idata=idata, settings=s)
    post.warn_if_not_ok()
    return post


def _warn_about_data(plan) -> list[str]:
    """Emit a :class:`DataWarning` per finding of :func:`causal_wm.data_checks.check_data`."""
    from causal_wm.data_checks import check_data
    from causal_wm.errors import DataWarning

    found = check_data(plan)
    for msg in found:
        warnings.warn(msg, DataWarning, stacklevel=4)
    return found
