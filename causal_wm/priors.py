"""Prior specifications: data, not code.

Priors act on the internal, standardised scale (see :mod:`causal_wm.data`): continuous
variables enter formulas as z-scores, continuous outcomes are modelled as z-scores, binary and
categorical parents enter as 0/1 indicators, and count outcomes use a log link offset by the
log of their mean. On that scale the defaults below are weakly informative.

===============  =====================================  ===================================
parameter        default                                meaning
===============  =====================================  ===================================
intercept        normal(0, 1.5)                         baseline on the link scale
b                normal(0, 1)   (bernoulli/categorical  effect of one SD of a parent (or of
                 use normal(0, 2.5))                    a 0/1 parent) on the link scale
sigma            halfnormal(1)                          noise SD in outcome SDs
nu               gamma(2, 0.1)                          Student-t degrees of freedom
phi              gamma(2, 0.1)                          negative-binomial concentration
sd               halfnormal(1)                          SD of group-level effects
===============  =====================================  ===================================

Every prior can be overridden in a model file, per parameter (``b``) or per term
(``b[treat]``, ``sd[1|region]``)::

    re78: {family: normal, formula: "treat + age",
           priors: {"b[treat]": {dist: normal, loc: 0, scale: 0.5}, sigma: {dist: halfnormal, scale: 2}}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from causal_wm.errors import ModelSpecError, suggest

# distribution name -> (parameter names, whether the support is positive)
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "normal": (("loc", "scale"), False),
    "student_t": (("df", "loc", "scale"), False),
    "halfnormal": (("scale",), True),
    "halfcauchy": (("scale",), True),
    "exponential": (("rate",), True),
    "gamma": (("concentration", "rate"), True),
    "lognormal": (("loc", "scale"), True),
}

POSITIVE_PARAMS = ("sigma", "nu", "phi", "sd")


@dataclass(frozen=True)
class Prior:
    """A prior distribution by name with its parameters.

    Examples
    --------
    >>> Prior.from_dict({"dist": "normal", "loc": 0, "scale": 2}, where="b")
    Prior(dist='normal', params=(('loc', 0.0), ('scale', 2.0)))
    """

    dist: str
    params: tuple[tuple[str, float], ...]

    @property
    def kwargs(self) -> dict[str, float]:
        """The parameters as keyword arguments."""
        return dict(self.params)

    @property
    def positive(self) -> bool:
        """Whether the distribution's support is the positive half-line."""
        return DISTRIBUTIONS[self.dist][1]

    @classmethod
    def from_dict(cls, d, where: str) -> Prior:
        """Validate a prior given as ``{dist: name, <param>: value, ...}``."""
        if isinstance(d, Prior):
            return d
        if not isinstance(d, dict) or "dist" not in d:
            raise ModelSpecError(
                f"prior for {where}: expected a mapping like {{dist: normal, loc: 0, scale: 1}}, "
                f"got {d!r}."
            )
        dist = d["dist"]
        if not isinstance(dist, str) or dist not in DISTRIBUTIONS:
            raise ModelSpecError(
                f"prior for {where}: unknown distribution {dist!r}; expected one of "
                f"{sorted(DISTRIBUTIONS)}.{suggest(str(dist), DISTRIBUTIONS)}"
            )
        names = DISTRIBUTIONS[dist][0]
        extra = set(d) - set(names) - {"dist"}
        missing = set(names) - set(d)
        if extra or missing:
            raise ModelSpecError(
                f"prior for {where}: {dist} takes parameters {list(names)}; "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}."
            )
        params = []
        for n in names:
            v = d[n]
            if isinstance(v, str):  # YAML 1.1 reads 1e3 (no dot) as text
                try:
                    v = float(v)
                except ValueError:
                    pass
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ModelSpecError(f"prior for {where}: {n} must be a number, got {v!r}.")
            try:
                v = float(v)
            except OverflowError:  # an integer beyond floating point (e.g. 10**400)
                v = math.inf
            if not math.isfinite(v):
                raise ModelSpecError(f"prior for {where}: {n} must be a finite number, got {v}.")
            if n != "loc" and not v > 0:
                raise ModelSpecError(f"prior for {where}: {n} must be positive, got {v}.")
            params.append((n, v))
        return cls(dist, tuple(params))

    def to_dict(self) -> dict:
        """The prior as it is written in a model file."""
        return {"dist": self.dist, **self.kwargs}


def default_prior(param: str, family: str) -> Prior:
    """The default prior of ``param`` (``intercept``, ``b``, ``sigma``, ...) for ``family``."""
    if param == "intercept":
        return Prior("normal", (("loc", 0.0), ("scale", 1.5)))
    if param == "b":
        scale = 2.5 if family in ("bernoulli", "categorical") else 1.0
        return Prior("normal", (("loc", 0.0), ("scale", scale)))
    if param in ("sigma", "sd"):
        return Prior("halfnormal", (("scale", 1.0),))
    if param in ("nu", "phi"):
        return Prior("gamma", (("concentration", 2.0), ("rate", 0.1)))
    raise ModelSpecError(
        f"no parameter {param!r}: parameters are intercept, b, sigma, nu, phi and sd."
        f"{suggest(str(param), ('intercept', 'b', 'sigma', 'nu', 'phi', 'sd'))}"
    )
