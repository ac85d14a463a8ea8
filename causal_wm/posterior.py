"""The fitted model: posterior draws of every parameter, and the queries that run on them."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from causal_wm.diagnostics import Diagnostics, diagnose
from causal_wm.errors import ConvergenceWarning


@dataclass(frozen=True)
class Posterior:
    """A fitted SCM.

    Attributes
    ----------
    scm : SCM
        The model that was fitted (unchanged by fitting).
    plan : FitPlan
        The data on the internal scale and the mechanisms' layout.
    idata : arviz.InferenceData
        Posterior, sample_stats, observed_data (original units) and log_likelihood.
    settings : FitSettings
        Backend, sampler settings and seed.
    """

    scm: object
    plan: object
    idata: object
    settings: object

    @property
    def seed(self) -> int:
        """The seed of the fit; queries derive their own streams from it."""
        return int(self.settings.seed)

    @property
    def shape(self) -> tuple[int, int]:
        """(chains, draws) of the posterior."""
        p = self.idata.posterior
        return int(p.sizes["chain"]), int(p.sizes["draw"])

    @functools.cached_property
    def program(self):
        """The compiled structural equations and parameter draws (built on first use)."""
        from causal_wm.program import compile_program

        return compile_program(self.plan, self.idata.posterior, seed=self.seed)

    @property
    def data_summary(self) -> dict:
        """What happened to the data before fitting: rows in, dropped (per ``missing: drop`` node),
        used, values imputed per ``missing: impute`` node, and the integration steps (rows per
        source, joined, unmatched) when the data came from a ``data:`` block."""
        import json

        saved = self.idata.attrs.get("data_summary")  # as recorded at fit time (survives saving)
        return json.loads(saved) if saved else dict(getattr(self.plan, "data_summary", {}))

    def diagnostics(self) -> Diagnostics:
        """R-hat, bulk/tail ESS, MCSE per parameter, and divergences (see :mod:`causal_wm.diagnostics`)."""
        return self._diagnostics

    @functools.cached_property
    def _diagnostics(self) -> Diagnostics:
        return diagnose(self.idata, self.settings.method)

    @property
    def ok(self) -> bool:
        """Whether the fit passed every convergence check."""
        return self.diagnostics().ok

    def warn_if_not_ok(self) -> None:
        """Emit a :class:`ConvergenceWarning` naming the parameters at fault, if any."""
        d = self.diagnostics()
        if not d.ok:
            warnings.warn(
                f"the fit of {self.scm.name!r} did not pass convergence checks: " + " ".join(d.problems),
                ConvergenceWarning,
                stacklevel=3,
            )

    def warnings_for_results(self) -> tuple[str, ...]:
        """Plain-language warnings every result of this posterior carries."""
        import json

        data = tuple(f"data: {m}" for m in json.loads(self.idata.attrs.get("data_warnings", "[]")))
        return data + tuple(f"fit not converged: {p}" for p in self.diagnostics().problems)

    # ------------------------------------------------------------------ queries
    def effect(self, outcome: str, do: Mapping, vs: Mapping | None = None, given=None, level=None,
               seed: int | None = None, engine: str | None = None):
        """Posterior of the average effect of ``do`` against ``vs`` on ``outcome``.

        For each posterior draw, the mean over units (the data's units, or those selected by
        ``given``) of E[outcome] under ``do`` minus under ``vs``. Nodes not downstream of the
        intervention keep each unit's observed values; downstream nodes get fresh noise shared
        by both worlds; the outcome's own noise is integrated exactly. The interval is
        epistemic uncertainty about the population average, plus a small Monte Carlo error where
        a nonlinear path keeps the shared noise from cancelling (docs/queries.md, "effect").

        Parameters
        ----------
        outcome : str
        do, vs : mapping
            Interventions (value, ``shift``, ``scale``, callable, distribution, per-unit values);
            ``vs`` defaults to no intervention.
        given : mapping or boolean mask, optional
            Subpopulation, e.g. ``{"black": 1}`` (conditional average effect).
        level : optional
            For a categorical outcome: the category whose probability is compared.
        seed : int, optional
            Defaults to a stream derived from the fit's seed.
        engine : {"auto", "fused", "generic"}, optional
            Which compiled kernel runs the query: "auto" (default) takes the fused one for large
            draws x units where it applies; both give the same answer to rounding.

        Returns
        -------
        EffectResult
        """
        from causal_wm.queries import effect

        return effect(self, outcome, do, vs, given=given, level=level, seed=seed, engine=engine)

    def simulate(self, do: Mapping | None = None, n: int = 1000, seed: int | None = None):
        """Predictive samples of ``n`` new units under ``do``: each with its own posterior draw
        and fresh noise (parameter and noise uncertainty). Returns a SimulationResult."""
        from causal_wm.queries import simulate

        return simulate(self, do, n, seed=seed)

    def counterfactual(self, units: pd.DataFrame, do: Mapping, draws: int | None = None,
                       summary_only: bool = False, prob: float = 0.9, seed: int | None = None,
                       engine: str | None = None):
        """Unit-level counterfactuals by abduction, action and prediction per posterior draw.

        Continuous (additive-noise) nodes recover each unit's noise exactly; binary and count
        nodes use the monotone CDF coupling; categorical nodes the Gumbel-max coupling; latent
        nodes use each unit's posterior draws. Setting a node to its observed value returns the
        factual outcome exactly.

        Parameters
        ----------
        units : DataFrame
            Observed units (rows of the fitting data when the model has latent nodes).
        do : mapping
            The intervention.
        draws : int, optional
            Use this many posterior draws (a random subset) instead of all.
        summary_only : bool
            Reduce to per-unit mean, SD and interval inside the kernel (bounded memory).
        prob : float
            Interval probability of the summaries.
        engine : {"auto", "fused", "generic"}, optional
            As in :meth:`effect`.
        """
        from causal_wm.queries import counterfactual

        return counterfactual(self, units, do, draws=draws, summary_only=summary_only, prob=prob, seed=seed,
                              engine=engine)

    def mediation(self, treatment: str, mediator, outcome: str, treat_value=1, control_value=0, given=None,
                  seed: int | None = None, engine: str | None = None, level=None):
        """Natural direct, indirect and total effects of ``treatment`` on ``outcome`` through ``mediator``.

        Per posterior draw and unit: the nested counterfactual Y(t1, M(t0)) sets the treatment to
        ``treat_value`` while the mediator(s) keep the value they take under ``control_value``
        (same noise in both worlds). Returns a MediationResult with ``direct`` (NDE),
        ``indirect`` (NIE) and ``total``. ``engine`` and ``level`` (a categorical outcome's
        category: effects on its probability) as in :meth:`effect`.
        """
        from causal_wm.queries import mediation

        return mediation(self, treatment, mediator, outcome, treat_value, control_value, given=given, seed=seed,
                         engine=engine, level=level)

    def ppc(self, draws: int = 200, seed: int | None = None) -> pd.DataFrame:
        """Posterior predictive check per observed node.

        Each node is replicated from its mechanism given the observed values of its parents;
        the table compares the observed mean and SD with their replicated distributions and
        gives posterior predictive p-values (near 0 or 1 flags misfit).
        """
        from causal_wm.queries import replicate

        return replicate(self, draws=draws, seed=seed)

    # ------------------------------------------------------------------ checks
    def check(self, outcome: str, treatment: str, prob: float = 0.9):
        """Triangulation with DoWhy estimators and DoWhy refutations (see :mod:`causal_wm.checks`)."""
        from causal_wm.checks import check

        return check(self, outcome, treatment, prob=prob)

    def sensitivity(self, outcome: str, treatment: str, strengths=(0.0, 0.25, 0.5, 0.75), prob: float = 0.9,
                    **fit_overrides) -> pd.DataFrame:
        """Refit with a latent confounder of each fixed strength (see :func:`causal_wm.checks.sensitivity`)."""
        from causal_wm.checks import sensitivity

        return sensitivity(self, outcome, treatment, strengths=strengths, prob=prob, **fit_overrides)

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """ArviZ summary of the parameters (internal scale) with diagnostics."""
        import arviz as az

        names = [v for v in self.idata.posterior.data_vars
                 if "__z__" not in v and v not in self.scm.latent and not v.endswith("__missing")]  # per unit
        return az.summary(self.idata, var_names=names, hdi_prob=prob)

    def __repr__(self) -> str:
        c, d = self.shape
        return (f"Posterior({self.scm.name!r}, backend={self.settings.backend}, {c} chains x {d} draws, "
                f"{self.plan.n} units, ok={self.ok})")
