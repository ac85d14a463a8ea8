"""Checks of the fitting data that warn rather than refuse, run before any sampling.

The data fit the model's support, but some patterns leave a parameter to the prior alone or make
a family a poor description; the fit still runs and each finding is a
:class:`~causal_wm.errors.DataWarning` naming the node, what was found and what to do:

* **Separation** of a bernoulli node: a linear rule in its design columns (the columns its formula
  makes of its parents) predicts every 0 and 1 (complete separation, found as the feasibility of
  a linear programme), or one 0/1 column's units all share one outcome (quasi-complete), or the
  node never varies. The likelihood then keeps improving as a coefficient grows without bound,
  so that coefficient is set by its prior: its effect, and any intervention upstream of the node,
  reflect the prior, not the data.
* **Excess zeros** of a poisson or negative_binomial node: more zeros than the family predicts
  given the node's parents (a quick maximum-likelihood fit of the node's own regression; the
  negative binomial's dispersion by moments). A count that is often structurally zero is better
  modelled as a binary node for "any" and a count for "how many", or with a zero-inflated family.

* **An empty level** of a categorical node: a category declared in ``levels`` that no fitted row
  takes (its probability and its children's coefficients come from the priors alone).

* **A constant parent**: an observed node that takes one value in every row cannot show what its
  children do when it changes (its coefficients are confounded with their intercepts), so every
  effect of intervening on it comes from the priors.

Nodes with a latent parent are not checked (their parents' values are unknown before sampling);
rows with imputed values are left out of the checks.
"""

from __future__ import annotations

import math

import numpy as np

from causal_wm.design import column_values, predictor

SEPARATION_SUBSAMPLE = 5000  # rows tried first: a subsample that is not separated clears the whole data
ZERO_Z = 4.0  # excess zeros must be this many standard errors above the family's prediction ...
ZERO_RATIO = 1.25  # ... and this much larger than it, to warn


def check_data(plan) -> list[str]:
    """Warning messages about ``plan``'s data (a :class:`~causal_wm.fitting.FitPlan`); empty if none.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from causal_wm import SCM
    >>> from causal_wm.fitting import make_plan
    >>> scm = SCM.from_dict({"name": "toy", "nodes": {"x": {}, "y": {"family": "bernoulli", "formula": "x"}}})
    >>> x = np.linspace(-2, 2, 40)
    >>> [m[:48] for m in check_data(make_plan(scm, pd.DataFrame({"x": x, "y": (x > 0.1).astype(int)})))]
    ["node 'y' (bernoulli) is perfectly separated by x"]
    """
    out: list[str] = []
    scm = plan.scm
    for name in scm.observed:
        out.extend(_constant(plan, name))
        out.extend(_empty_levels(plan, name))
        node = scm.node(name)
        if any(scm.node(p).latent for p in node.parents):
            continue
        if node.family == "bernoulli":
            out.extend(_separation(plan, name))
        elif node.family in ("poisson", "negative_binomial"):
            out.extend(_excess_zeros(plan, name))
    return out


def _empty_levels(plan, name) -> list[str]:
    levels = plan.scales[name].levels if plan.scm.node(name).family == "categorical" else None
    if not levels:
        return []
    codes = plan.values[name]
    seen = np.bincount(codes[~np.isnan(codes)].astype(np.int64), minlength=len(levels))
    empty = [lv for lv, n in zip(levels, seen, strict=False) if n == 0]
    if not empty:
        return []
    return [f"node {name!r} has no rows at its level(s) {empty}, so everything about them (their probability, "
            "their coefficients in its children) comes from the priors. If the data write such a category as "
            "text that is read as missing ('NA', 'N/A', 'None'), list the texts that do mean missing in the data "
            "source ({path: file.csv, missing_text: ['']}); else leave the level out of 'levels'."]


def _constant(plan, name) -> list[str]:
    children = sorted(c for c in plan.scm.names if name in plan.scm.node(c).parents)
    vals = plan.values[name]
    seen = vals[~np.isnan(vals)]
    if not children or plan.scm.node(name).family in ("bernoulli", "categorical") or len(seen) < 2 \
            or np.ptp(seen) > 0:
        return []
    value = plan.frame[name].dropna().iloc[0]
    value = value.item() if hasattr(value, "item") else value  # 3.0, not np.float64(3.0)
    return [f"node {name!r} is constant ({value!r} in every row), so the data cannot show how its children "
            f"{children} respond to it: their coefficients of {name!r} are set by their priors, and so is any "
            f"effect of intervening on {name!r}. Use data in which {name!r} varies, or drop it as a parent."]


def _design(plan, name) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(design with intercept, column labels, outcome, rows used) of ``name`` on the internal scale."""
    node, lay = plan.scm.node(name), plan.layouts[name]
    y = np.asarray(plan.values[name], dtype=float)
    pred = predictor({p: np.asarray(plan.values[p], dtype=float) for p in node.parents}, plan.scales)
    cols = [np.ones_like(y)]
    labels = ["intercept"]
    for c in lay.columns:
        cols.append(np.broadcast_to(np.asarray(column_values(c, pred), dtype=float), y.shape))
        labels.append(c.label)
    for blk in lay.groups:
        g = np.asarray(plan.values[blk.group], dtype=float)
        for lev in range(1, len(blk.levels)):
            for c in blk.columns:
                base = np.ones_like(y) if not c.factors else np.asarray(column_values(c, pred), dtype=float)
                cols.append((g == lev) * base)
                labels.append(f"{c.label}|{blk.group}[{blk.levels[lev]}]")
    X = np.column_stack(cols)
    rows = np.isfinite(y) & np.all(np.isfinite(X), axis=1)
    return X[rows], labels, y[rows], rows


def _separable(X: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """A direction w with (2y - 1) * (X w) >= 1 for every row, or None if there is none."""
    from scipy.optimize import linprog

    s = 2.0 * y - 1.0
    res = linprog(np.zeros(X.shape[1]), A_ub=-(s[:, None] * X), b_ub=-np.ones(len(y)),
                  bounds=[(None, None)] * X.shape[1], method="highs")
    return res.x if res.status == 0 else None


def _separation(plan, name) -> list[str]:
    X, labels, y, _ = _design(plan, name)
    if len(y) == 0:
        return []
    if np.all(y == y[0]):
        return [f"node {name!r} (bernoulli) is {int(y[0])} in every row of the data, so its intercept is set by "
                "its prior alone; check the column, or leave the node out of the model."]
    if X.shape[1] == 1:
        return []
    sub = np.arange(len(y))
    if len(y) > SEPARATION_SUBSAMPLE:
        sub = np.sort(np.random.default_rng(0).choice(len(y), SEPARATION_SUBSAMPLE, replace=False))
    w = _separable(X[sub], y[sub])
    if w is not None and len(sub) < len(y):
        w = _separable(X, y)
    if w is not None:
        scale = np.abs(w[1:]) * X[:, 1:].std(axis=0)
        culprits = [lab for lab, v in zip(labels[1:], scale, strict=True) if v > 1e-6 * max(scale.max(), 1e-300)]
        return [f"node {name!r} (bernoulli) is perfectly separated by {' + '.join(culprits)}: a linear rule in "
                f"them predicts every 0 and 1 of {name!r}, so the data cannot bound their coefficients, which are "
                "set by their priors (as is any effect through them). Give those coefficients an informative prior "
                f"(e.g. priors: {{b: {{dist: normal, loc: 0, scale: 1}}}}), or remove a parent that merely "
                f"recodes {name!r}."]
    out = []
    for j in range(1, X.shape[1]):
        col = X[:, j]
        if not np.all((col == 0) | (col == 1)):
            continue
        for v in (1.0, 0.0):
            sel = y[col == v]
            if 0 < len(sel) < len(y) and np.all(sel == sel[0]):
                out.append(f"node {name!r} (bernoulli) is {int(sel[0])} for all {len(sel)} units with "
                           f"{labels[j]} = {int(v)} (quasi-complete separation): the data cannot bound the "
                           f"coefficient of {labels[j]}, which is set by its prior. Give it an informative prior, "
                           "or merge that group with another.")
                break
    return out


def _poisson_glm(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fitted means of a Poisson regression of y on X (Newton steps, a tiny ridge for stability)."""
    b = np.zeros(X.shape[1])
    b[0] = math.log(max(float(y.mean()), 1e-3))
    ridge = 1e-6 * len(y) * np.eye(X.shape[1])
    for _ in range(50):
        mu = np.exp(np.clip(X @ b, -30.0, 30.0))
        step = np.linalg.solve(X.T @ (mu[:, None] * X) + ridge, X.T @ (y - mu) - ridge @ b)
        b = b + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return np.exp(np.clip(X @ b, -30.0, 30.0))


def _excess_zeros(plan, name) -> list[str]:
    X, _, y, _ = _design(plan, name)
    if len(y) < 20 or not np.any(y == 0):
        return []
    fam = plan.scm.node(name).family
    try:
        mu = _poisson_glm(X, y)
    except np.linalg.LinAlgError:
        return []
    if fam == "poisson":
        p0 = np.exp(-mu)
        what = "a Poisson count"
    else:
        inv_phi = float(np.sum((y - mu) ** 2 - mu) / np.sum(mu**2))  # moments: Var = mu + mu^2 / phi
        phi = 1.0 / inv_phi if inv_phi > 1e-8 else np.inf
        p0 = np.exp(-mu) if not np.isfinite(phi) else (phi / (phi + mu)) ** phi
        what = f"a negative binomial count (dispersion phi = {phi:.3g} by moments)"
    observed, expected = int(np.sum(y == 0)), float(p0.sum())
    sd = math.sqrt(float(np.sum(p0 * (1.0 - p0))))
    if sd > 0 and (observed - expected) / sd > ZERO_Z and observed > ZERO_RATIO * expected:
        return [f"node {name!r} ({fam}) has {observed} zeros in {len(y)} rows, but {what} with its parents' "
                f"effects predicts about {expected:.0f}: the data look zero-inflated, so its mean and effects may "
                "be distorted. Model 'any' (bernoulli) and 'how many' as separate nodes, or check how zeros "
                "were recorded."]
    return []
