"""Build a fitted-model object from parameter values set by hand, without sampling.

For tests and worked examples only: property tests of the query engine (``tests/test_axioms.py``)
need thousands of posteriors whose parameters are known exactly, which no sampler can give
quickly. :func:`posterior_from_params` validates the data as a fit would (same internal scales,
same layouts), stores the given draws in an ArviZ InferenceData with the layout a backend writes,
and returns a :class:`FixedPosterior` on which every query runs unchanged.

Parameters are on the internal scale of :mod:`causal_wm.data` (continuous nodes standardised,
counts on the log link with offset ``log(mean)``); :func:`parameter_shapes` lists the sites a
model needs (named by :mod:`causal_wm.sites`) and their shapes without the leading
``(chains, draws)``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from causal_wm import sites
from causal_wm.diagnostics import Diagnostics
from causal_wm.errors import QueryError, suggest
from causal_wm.posterior import Posterior


@dataclass(frozen=True)
class FixedPosterior(Posterior):
    """A :class:`~causal_wm.posterior.Posterior` whose draws were set by hand.

    No sampler ran, so there is nothing to diagnose: :meth:`diagnostics` reports an empty table,
    no divergences and the method ``"fixed"`` (computing R-hat of hand-set draws would cost more
    than the queries under test and mean nothing).
    """

    @functools.cached_property
    def _diagnostics(self) -> Diagnostics:
        table = pd.DataFrame(columns=["r_hat", "ess_bulk", "ess_tail", "mcse_mean"])
        return Diagnostics(table, 0, True, (), "fixed")


def parameter_shapes(scm, data: pd.DataFrame) -> dict[str, tuple[int, ...]]:
    """The sites the queries read for ``scm`` fitted to ``data``, and their shapes per draw.

    Examples
    --------
    >>> import pandas as pd
    >>> from causal_wm import SCM
    >>> scm = SCM.from_dict({"name": "toy", "nodes": {"x": {}, "y": {"formula": "x"}}})
    >>> parameter_shapes(scm, pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, 2.0]}))
    {'x__intercept': (), 'x__sigma': (), 'y__intercept': (), 'y__b': (1,), 'y__sigma': ()}
    """
    from causal_wm.fitting import make_plan

    return sites.shapes(make_plan(scm, data))


def posterior_from_params(scm, data: pd.DataFrame, params: Mapping, seed: int = 0) -> FixedPosterior:
    """A posterior of ``scm`` on ``data`` whose draws are exactly ``params``.

    Parameters
    ----------
    scm : SCM
    data : pandas.DataFrame
        The "fitting" data: validated and put on the internal scale as ``scm.fit`` would; complete
        (no values left for ``missing: impute``).
    params : mapping of str to array_like
        Every site of :func:`parameter_shapes`, each shaped ``(chains, draws, *shape)`` with the
        same chains and draws. Positive parameters (``sigma``, ``nu``, ``phi``) must be positive.
    seed : int
        The seed queries derive their streams from.

    Returns
    -------
    FixedPosterior

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from causal_wm import SCM
    >>> scm = SCM.from_dict({"name": "toy", "nodes": {"x": {}, "y": {"formula": "x"}}})
    >>> df = pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, 2.0]})
    >>> one = lambda v: np.full((1, 4), v)  # 1 chain x 4 identical draws
    >>> post = posterior_from_params(scm, df, {"x__intercept": one(0.0), "x__sigma": one(1.0),
    ...     "y__intercept": one(0.0), "y__b": one(0.5)[..., None], "y__sigma": one(1.0)})
    >>> cf = post.counterfactual(units=df, do={"x": df["x"].to_numpy()})   # consistency
    >>> bool(np.all(cf["y"] == df["y"].to_numpy()))
    True
    """
    from causal_wm.fitting import FitSettings, make_plan
    from causal_wm.idata import build_idata

    plan = make_plan(scm, data)
    if getattr(plan, "missing", None):
        raise QueryError(f"posterior_from_params needs complete data; {sorted(plan.missing)} have missing values "
                         "left for imputation (their draws are not parameters set by hand).")
    shapes = sites.shapes(plan)
    if not isinstance(params, Mapping):
        raise QueryError(f"params must be a mapping of site name -> draws, got {type(params).__name__}.")
    for k in params:
        if k not in shapes:
            raise QueryError(f"params: {k!r} is not a parameter of model {scm.name!r}.{suggest(str(k), shapes)} "
                             f"Parameters are {sorted(shapes)}.")
    samples: dict[str, np.ndarray] = {}
    lead = None
    for k, shape in shapes.items():
        if k not in params:
            raise QueryError(f"params: missing {k!r} (shape (chains, draws) + {shape}).")
        v = np.asarray(params[k], dtype=float)
        if v.ndim != 2 + len(shape) or v.shape[2:] != shape or (lead is not None and v.shape[:2] != lead):
            raise QueryError(f"params: {k!r} has shape {v.shape}; expected (chains, draws) + {shape} with the "
                             f"same (chains, draws) for every parameter{'' if lead is None else f' {lead}'}.")
        if not np.all(np.isfinite(v)):
            raise QueryError(f"params: {k!r} has non-finite values.")
        if k.rsplit("__", 1)[-1] in ("sigma", "nu", "phi") and not np.all(v > 0):
            raise QueryError(f"params: {k!r} must be positive.")
        lead = v.shape[:2]
        samples[k] = v
    C, D = lead if lead is not None else (1, 1)
    s = FitSettings(method="fixed", chains=C, draws=D, warmup=0, seed=seed)
    stats = {"diverging": np.zeros((C, D), dtype=bool)}
    idata = build_idata(plan, samples, stats, None, s)
    return FixedPosterior(scm=scm, plan=plan, idata=idata, settings=s)
