"""Families: the noise distribution and link of each node's mechanism.

A family says what values a node takes (its support), how its linear predictor ``eta`` maps
to the distribution, which extra parameters it has, and how its noise is coupled for
counterfactuals. Continuous families are fit on an internally standardised scale (see
:mod:`causal_wm.data`); results are reported in the data's original units.

Coupling of the noise (used by counterfactuals):

* ``additive`` (normal, student_t, lognormal on the log scale): ``z = eta + noise``; abduction
  recovers the noise exactly.
* ``cdf`` (bernoulli, poisson, negative_binomial): the monotone CDF coupling; the unit's noise is
  a uniform ``u`` in ``[F(y-1 | eta), F(y | eta)]`` and ``y' = F^-1(u | eta')``.
* ``gumbel`` (categorical): Gumbel-max coupling (Oberst & Sontag 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

# Integer codes shared with the compiled kernels (causal_wm.kernels); defined once here.
NORMAL, STUDENT_T, LOGNORMAL, BERNOULLI, POISSON, NEGBIN, CATEGORICAL = range(7)


@dataclass(frozen=True)
class Family:
    """One family of mechanisms.

    Attributes
    ----------
    name : str
        The name used in model files.
    code : int
        The integer code the compiled kernels switch on.
    support : str
        ``real``, ``positive``, ``binary``, ``count`` or ``category``.
    coupling : str
        ``additive``, ``cdf`` or ``gumbel`` (see module docstring).
    extra : tuple of str
        Names of the family's own parameters besides the linear predictor.
    standardise : bool
        Whether the node is modelled on an internally standardised scale.
    """

    name: str
    code: int
    support: str
    coupling: str
    extra: tuple[str, ...]
    standardise: bool

    @property
    def discrete(self) -> bool:
        """True for families whose values are integers (binary, count, category)."""
        return self.support in ("binary", "count", "category")


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("normal", NORMAL, "real", "additive", ("sigma",), True),
        Family("student_t", STUDENT_T, "real", "additive", ("sigma", "nu"), True),
        Family("lognormal", LOGNORMAL, "positive", "additive", ("sigma",), True),
        Family("bernoulli", BERNOULLI, "binary", "cdf", (), False),
        Family("poisson", POISSON, "count", "cdf", (), False),
        Family("negative_binomial", NEGBIN, "count", "cdf", ("phi",), False),
        Family("categorical", CATEGORICAL, "category", "gumbel", (), False),
    )
}


def get_family(name: str) -> Family:
    """Look a family up by name.

    Examples
    --------
    >>> get_family("bernoulli").coupling
    'cdf'
    """
    from causal_wm.errors import ModelSpecError, suggest

    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ModelSpecError(
            f"unknown family {name!r}; expected one of {sorted(FAMILIES)}.{suggest(name, FAMILIES)}"
        ) from None
