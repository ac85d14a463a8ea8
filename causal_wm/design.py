"""The layout of every node's mechanism: its design columns, group blocks and parameters.

The layout is the one description of the structural equations that both backends and the
query kernels compile from. For node ``y`` with family ``f``::

    eta = intercept + sum_c b[c] * column_c + sum_blocks sum_j re[group(unit), j] * column_j

where a column is the product of its factors: a parent's internal predictor value, or a 0/1
indicator that a categorical parent equals one level. A categorical node has one ``eta`` per
non-reference level (``intercept`` and ``b`` gain a leading level axis).
"""

from __future__ import annotations

from dataclasses import dataclass

from causal_wm.data import NodeScale
from causal_wm.formula import Term

NUMERIC = -1  # factor level meaning "the parent's numeric predictor value"


@dataclass(frozen=True)
class Column:
    """One design column: the product of ``factors`` ``(variable, level)``, from formula ``term``."""

    label: str
    factors: tuple[tuple[str, int], ...]
    term: str = ""


@dataclass(frozen=True)
class GroupBlock:
    """Group-level effects of one grouping factor: an intercept and/or slopes per level."""

    group: str
    levels: tuple
    columns: tuple[Column, ...]
    labels: tuple[str, ...]

    @property
    def prior_labels(self) -> tuple[str, ...]:
        """The group terms as priors name them (``sd[1|region]``, ``sd[x|region]``)."""
        return tuple(f"{c.term}|{self.group}" for c in self.columns)


@dataclass(frozen=True)
class NodeLayout:
    """Everything about one node's mechanism that fixes the shapes of its parameters."""

    name: str
    family: str
    latent: bool
    intercept: bool
    columns: tuple[Column, ...]
    groups: tuple[GroupBlock, ...]
    n_levels: int  # categories of a categorical node, else 0

    @property
    def n_eta(self) -> int:
        """Number of linear predictors (K-1 for categorical, else 1)."""
        return self.n_levels - 1 if self.n_levels else 1


def _expand(term: Term, scales: dict[str, NodeScale]) -> list[Column]:
    cols: list[list[tuple[str, int]]] = [[]]
    labels: list[list[str]] = [[]]
    for v in term.variables:
        lv = scales[v].levels
        if lv is None:
            cols = [c + [(v, NUMERIC)] for c in cols]
            labels = [lab + [v] for lab in labels]
        else:
            cols = [c + [(v, i)] for c in cols for i in range(1, len(lv))]
            labels = [lab + [f"{v}[{lv[i]}]"] for lab in labels for i in range(1, len(lv))]
    return [
        Column(":".join(lab), tuple(c), term.label) for c, lab in zip(cols, labels, strict=True)
    ]


def node_layout(node, scales: dict[str, NodeScale]) -> NodeLayout:
    """Build the :class:`NodeLayout` of ``node`` given the data's scales (levels)."""
    columns: list[Column] = []
    for t in node.parsed.terms:
        columns.extend(_expand(t, scales))
    blocks: dict[str, list] = {}
    for g in node.parsed.groups:
        cs = [Column("1", (), "1")] if not g.variables else _expand(Term(g.variables), scales)
        blocks.setdefault(g.group, []).extend(cs)
    groups = tuple(
        GroupBlock(grp, scales[grp].levels, tuple(cs), tuple(c.label for c in cs))
        for grp, cs in blocks.items()
    )
    levels = scales[node.name].levels
    return NodeLayout(
        name=node.name,
        family=node.family,
        latent=node.latent,
        intercept=node.parsed.intercept and not node.latent,
        columns=tuple(columns),
        groups=groups,
        n_levels=len(levels) if levels is not None and node.family == "categorical" else 0,
    )


def layouts(scm, scales: dict[str, NodeScale]) -> dict[str, NodeLayout]:
    """The :class:`NodeLayout` of every node, in topological order."""
    return {name: node_layout(scm.node(name), scales) for name in scm.order}


def column_values(col: Column, pred: dict):
    """Evaluate one design column from predictor arrays (NumPy, JAX or PyTensor alike)."""
    out = None
    for var, level in col.factors:
        v = pred[var] if level == NUMERIC else (pred[var] == level) * 1.0
        out = v if out is None else out * v
    return out


def predictor(values: dict, scales: dict[str, NodeScale]) -> dict:
    """Internal node values -> the values they enter formulas with (see :mod:`causal_wm.data`)."""
    return {
        k: v if scales[k].levels is not None else (v - scales[k].pred_center) / scales[k].pred_scale
        for k, v in values.items()
    }


def positive_columns(scm, lays: dict[str, NodeLayout]) -> dict[str, tuple[int, ...]]:
    """Columns whose coefficient is constrained positive, per node.

    A latent factor and the signs of its loadings are only identified up to a flip; fixing the
    sign of its loading on its first observed child (topological order) removes the mirror mode.
    A latent whose loadings the model file sets with a prior of its own (``b[L]``) keeps that
    prior instead: the user has fixed the scale and sign (as a sensitivity analysis does).
    """
    out: dict[str, list[int]] = {}
    for lat in scm.latent:
        if any(f"b[{lat}]" in dict(scm.node(c).priors) for c in scm.graph.successors(lat)):
            continue
        for child in scm.order:
            lay = lays[child]
            if lay.latent or lay.family == "categorical":
                continue
            idx = [i for i, c in enumerate(lay.columns) if c.factors == ((lat, NUMERIC),)]
            if idx:
                out.setdefault(child, []).append(idx[0])
                break
    return {k: tuple(v) for k, v in out.items()}


GAUSSIAN = ("normal", "lognormal")  # Gaussian on the internal scale
# children a latent can be integrated over by quadrature (causal_wm.backends.latent_quadrature)
QUADRATURE = ("bernoulli", "poisson", "negative_binomial")


def marginal_latents(scm, lays: dict[str, NodeLayout]) -> tuple[str, ...]:
    """Latent nodes that the NumPyro backend integrates out while fitting.

    A latent Gaussian confounder with per-unit values makes NUTS explore one parameter per unit,
    and its loadings trade off against its children's noise: a slow, funnel-shaped posterior.
    Where every child of the latent is Gaussian on the internal scale (``normal`` or ``lognormal``)
    and linear in it, the children are jointly Gaussian per unit once the latent is integrated out,
    so the fit samples only the parameters; the per-unit values are drawn afterwards from their
    exact conditional. Eligible: latents whose parents are all observed and whose children are
    observed, complete (no imputed values, nor imputed parents), with no column holding two latents
    and no other latent parent. A latent may also have bernoulli, poisson or negative_binomial
    children (``QUADRATURE``), integrated over one dimension by quadrature; such a
    latent must then be the only latent parent of each of its children, so that its conditional
    given its Gaussian children is its own. A latent node with ``marginalize: false`` is not eligible.

    Examples
    --------
    >>> from causal_wm import SCM
    >>> scm = SCM.from_dict({"nodes": {"u": {"latent": True}, "x": {"formula": "u"},
    ...                                "y": {"formula": "x + u"}}})
    >>> from causal_wm.data import fit_scales
    >>> import pandas as pd
    >>> lays = layouts(scm, fit_scales(scm, pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, 2.0]})))
    >>> marginal_latents(scm, lays)
    ('u',)
    """
    def imputed(v):
        return getattr(scm.node(v), "missing", "error") == "impute"

    cand = {
        v for v in scm.latent
        if scm.node(v).marginalize
        and not any(scm.node(p).latent or imputed(p) for p in scm.node(v).parents)
        and list(scm.graph.successors(v))
    }
    changed = True
    while changed:
        changed = False
        for v in sorted(cand):
            kids = list(scm.graph.successors(v))
            # a child integrated by quadrature needs v's conditional to involve v alone
            alone = any(lays[c].family not in GAUSSIAN for c in kids)
            for c in kids:
                node, lay = scm.node(c), lays[c]
                latent_parents = [p for p in node.parents if scm.node(p).latent]
                ok = (
                    not node.latent
                    and (lay.family in GAUSSIAN or lay.family in QUADRATURE)
                    and (not alone or latent_parents == [v])
                    and not imputed(c)
                    and not any(imputed(p) for p in node.parents)
                    and all(p in cand for p in latent_parents)
                    and all(
                        sum(f[0] in cand for f in col.factors) <= 1
                        for col in lay.columns + tuple(c2 for blk in lay.groups for c2 in blk.columns)
                    )
                )
                if not ok:
                    cand.discard(v)
                    changed = True
                    break
    return tuple(v for v in scm.order if v in cand)
