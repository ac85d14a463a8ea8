"""Internal parameter (site) names, built in this one place.

User names pass through unchanged into coordinates; a double underscore (not allowed in node
names) separates the parts, so names never collide.
"""

UNIT = "unit"
# the joint site of latent nodes integrated out analytically (node names cannot start with "_")
MARGINAL = "_latent_joint"


def quadrature(latent: str) -> str:
    """The per-unit log-likelihood of ``latent``'s non-Gaussian children, ``latent`` integrated out."""
    return f"_quadrature__{latent}"


def intercept(node: str) -> str:
    """Intercept of ``node``'s mechanism."""
    return f"{node}__intercept"


def coef(node: str) -> str:
    """Coefficients of ``node``'s design columns."""
    return f"{node}__b"


def extra(node: str, param: str) -> str:
    """A family parameter of ``node`` (``sigma``, ``nu``, ``phi``)."""
    return f"{node}__{param}"


def group_sd(node: str, group: str) -> str:
    """SDs of ``node``'s group-level effects by ``group``."""
    return f"{node}__sd__{group}"


def group_raw(node: str, group: str) -> str:
    """Standard-normal raw group effects (non-centred parameterisation)."""
    return f"{node}__z__{group}"


def group_effect(node: str, group: str) -> str:
    """Group-level effects of ``node`` by ``group`` (levels x columns)."""
    return f"{node}__re__{group}"


def term_dim(node: str) -> str:
    """Dimension of ``node``'s design columns."""
    return f"{node}__term"


def level_dim(node: str) -> str:
    """Dimension of a categorical node's non-reference levels."""
    return f"{node}__level"


def effect_dim(node: str, group: str) -> str:
    """Dimension of the group-level columns of ``node`` by ``group``."""
    return f"{node}__{group}__effect"


def missing(node: str) -> str:
    """The imputed values of ``node``'s missing entries (one per unit that lacks it)."""
    return f"{node}__missing"


def missing_dim(node: str) -> str:
    """Dimension of ``node``'s imputed values: the labels of the units that lack it."""
    return f"{node}__missing_unit"


def shapes(plan) -> dict[str, tuple[int, ...]]:
    """The sites the queries read for a fit ``plan`` (a :class:`~causal_wm.fitting.FitPlan`), and
    their shapes per draw: what a posterior of that model and data must hold."""
    out: dict[str, tuple[int, ...]] = {}
    for name, lay in plan.layouts.items():
        node = plan.scm.node(name)
        if lay.intercept:
            out[intercept(name)] = (lay.n_eta,) if lay.n_levels else ()
        if lay.columns:
            T = len(lay.columns)
            out[coef(name)] = (lay.n_eta, T) if lay.n_levels else (T,)
        if not lay.latent:
            for p in node.fam.extra:
                out[extra(name, p)] = ()
        for blk in lay.groups:
            out[group_effect(name, blk.group)] = (len(blk.levels), len(blk.columns))
        if lay.latent:
            out[name] = (plan.n,)
    return out
