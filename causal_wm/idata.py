"""Assemble the ArviZ InferenceData of a fit, with dims named after nodes, terms and units.

Both backends call :func:`build_idata`, so their posteriors have one layout.
"""

from __future__ import annotations

import json

import arviz as az
import numpy as np
import pandas as pd

from causal_wm import sites


def _str(levels) -> list[str]:
    return [str(v) for v in levels]


def unit_labels(index) -> np.ndarray:
    """The units' coordinate: the index's labels where netCDF can store them (numbers, or strings
    alone); otherwise their text, ``"('firm1', 2001)"`` for a MultiIndex or a mix of ints and strings,
    so that ``idata.to_netcdf()`` (and a saved fit) works for any index."""
    arr = np.asarray(index)
    if isinstance(index, pd.MultiIndex) or (arr.dtype.kind == "O" and not all(isinstance(v, str) for v in arr)):
        return np.array([str(v) for v in index], dtype=str)
    return arr


def coords_dims(plan) -> tuple[dict, dict]:
    """ArviZ coords and dims for every parameter site of ``plan``."""
    coords: dict = {sites.UNIT: unit_labels(plan.index)}
    dims: dict = {}
    for name, lay in plan.layouts.items():
        if lay.columns:
            coords[sites.term_dim(name)] = [c.label for c in lay.columns]
        if lay.n_levels:
            coords[sites.level_dim(name)] = _str(plan.scales[name].levels[1:])
            dims[sites.intercept(name)] = [sites.level_dim(name)]
            if lay.columns:
                dims[sites.coef(name)] = [sites.level_dim(name), sites.term_dim(name)]
        elif lay.columns:
            dims[sites.coef(name)] = [sites.term_dim(name)]
        for blk in lay.groups:
            edim = sites.effect_dim(name, blk.group)
            coords[blk.group] = _str(blk.levels)
            coords[edim] = list(blk.labels)
            dims[sites.group_sd(name, blk.group)] = [edim]
            dims[sites.group_raw(name, blk.group)] = [blk.group, edim]
            dims[sites.group_effect(name, blk.group)] = [blk.group, edim]
        if lay.latent:
            dims[name] = [sites.UNIT]
    for name, rows in sampled_missing(plan).items():
        coords[sites.missing_dim(name)] = np.asarray(plan.index)[rows]
        dims[sites.missing(name)] = [sites.missing_dim(name)]
    return coords, dims


def sampled_missing(plan) -> dict:
    """Rows of each node whose missing values the sampler draws (continuous families; the missing
    values of a discrete leaf are summed out of the fit and drawn afterwards, see :mod:`causal_wm.program`)."""
    from causal_wm.spec import CONTINUOUS

    return {k: v for k, v in getattr(plan, "missing", {}).items() if plan.scm.node(k).family in CONTINUOUS}


def scales_attr(plan) -> str:
    """The internal scales as JSON (stored in the InferenceData's attributes)."""
    return json.dumps(
        {
            k: {
                "center": v.center, "scale": v.scale, "offset": v.offset,
                "levels": None if v.levels is None else _str(v.levels),
            }
            for k, v in plan.scales.items()
        }
    )


LOGLIK_NAMES = {"chain": "chain_node", "draw": "draw_node"}


def in_original_units(plan, loglik: dict) -> dict:
    """Pointwise log-likelihoods of the data as given (the densities of ``observed_data``).

    The backends observe continuous nodes on their internal scale, z = (y - c) / s (lognormal:
    (log y - c) / s), whose density differs from y's by the Jacobian: log p(y) = log p(z) - log s
    (lognormal: also - log y). Without it ``az.loo`` and ``az.compare`` would rank models by how
    each standardised its nodes, e.g. a normal node above a Poisson one on count data. Counts,
    binary and categorical nodes are observed as they are. Missing (imputed) entries stay 0.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> import pandas as pd
    >>> plan = NS(scm=NS(node=lambda n: NS(family="normal")), scales={"y": NS(scale=10.0)},
    ...           frame=pd.DataFrame({"y": [1.0, np.nan]}))
    >>> in_original_units(plan, {"y": np.zeros((1, 1, 2))})["y"].round(4).tolist()
    [[[-2.3026, 0.0]]]
    """
    out = {}
    for name, ll in loglik.items():
        fam = plan.scm.node(name).family
        if fam not in ("normal", "student_t", "lognormal"):
            out[name] = ll
            continue
        y = plan.frame[name].to_numpy(dtype=float)
        jac = np.full(y.shape, -np.log(plan.scales[name].scale))
        if fam == "lognormal":
            jac = jac - np.log(np.where(y > 0, y, 1.0))
        out[name] = ll + np.where(np.isnan(y), 0.0, jac)
    return out


def build_idata(plan, samples: dict, stats: dict, loglik: dict | None, s) -> az.InferenceData:
    """InferenceData with posterior, sample_stats, observed_data (original units) and log_likelihood
    (of the data in original units: :func:`in_original_units`)."""
    import causal_wm

    loglik = in_original_units(plan, loglik) if loglik else loglik
    # ArviZ drops a variable named like one of its dimensions: an observed node "chain" keeps its
    # terms as "chain_node"
    loglik = {LOGLIK_NAMES.get(k, k): v for k, v in loglik.items()} if loglik else loglik
    coords, dims = coords_dims(plan)
    observed = {}
    for name in plan.scm.observed:
        fam = plan.scm.node(name).family
        if fam == "categorical":
            observed[name] = np.array(_str(plan.frame[name].to_numpy()), dtype=str)
        else:
            observed[name] = np.asarray(plan.frame[name].to_numpy(dtype=float))
    obs_dims = {k: [sites.UNIT] for k in observed}
    ll_dims = {k: [sites.UNIT] for k in (loglik or {})}
    attrs = {
        "causal_wm_version": causal_wm.__version__,
        "model": plan.scm.name,
        "backend": s.backend,
        "method": s.method,
        "seed": int(s.seed),
        "scales": scales_attr(plan),
        "data_summary": json.dumps(getattr(plan, "data_summary", {}), default=str),
    }
    idata = az.from_dict(
        posterior={k: v for k, v in samples.items()},
        sample_stats=stats,
        log_likelihood=loglik,
        observed_data=observed,
        coords=coords,
        dims={**dims, **obs_dims, **ll_dims},
        attrs=attrs,
    )
    return idata
