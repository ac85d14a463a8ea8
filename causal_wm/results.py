"""Query results: named posterior draws that summarise to tidy tables.

Draws stay draws until ``summary(prob=...)`` turns them into a DataFrame with ``estimate``,
``lower``, ``upper`` and ``mcse`` columns. Every result records the seed it used and the fit's
diagnostics, so a summary never travels without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from causal_wm.diagnostics import mcse_mean
from causal_wm.errors import QueryError

COUPLING = (
    "Counterfactuals assume additive noise for continuous nodes (the unit's noise is recovered "
    "exactly), the monotone CDF coupling for binary and count nodes, and the Gumbel-max coupling "
    "for categorical nodes; they are not identified from data alone."
)


def _recorded(table: pd.DataFrame, result) -> pd.DataFrame:
    """``table`` with the result's record in ``table.attrs``: ``converged`` (the fit's verdict),
    ``diagnostics``, ``warnings`` and ``seed``, so a summary passed on alone still says whether its fit
    converged (pandas keeps ``attrs`` through most operations, not through every one)."""
    diag = dict(getattr(result, "diagnostics", {}) or {})
    table.attrs.update(converged=bool(diag.get("ok", True)), diagnostics=diag,
                       warnings=list(getattr(result, "warnings", ()) or ()), seed=getattr(result, "seed", None))
    return table


def _flag(result) -> str:
    """The note a result's repr ends with when its fit did not converge."""
    return "" if (getattr(result, "diagnostics", None) or {}).get("ok", True) else ", FIT NOT CONVERGED: see .warnings"


def _prob(prob: float) -> float:
    if not isinstance(prob, (int, float)) or not 0 < prob < 1:
        raise QueryError(f"prob must be in (0, 1), got {prob!r}.")
    return float(prob)


def interval(draws, prob: float = 0.9) -> tuple[float, float]:
    """Equal-tailed ``prob`` interval of ``draws`` (any shape, flattened).

    Examples
    --------
    >>> lo, hi = interval(list(range(101)), 0.9)
    >>> (round(lo, 6), round(hi, 6))
    (5.0, 95.0)
    """
    p = _prob(prob)
    q = np.quantile(np.asarray(draws, dtype=float).reshape(-1), [(1 - p) / 2, (1 + p) / 2])
    return float(q[0]), float(q[1])


@dataclass(frozen=True)
class EffectResult:
    """Posterior of a population-average contrast ``E[outcome | do] - E[outcome | vs]``.

    Attributes
    ----------
    outcome : str
    do, vs : dict
        The two interventions as given (original units).
    chains : numpy.ndarray
        Effect draws shaped (chains, draws).
    under_do, under_vs : numpy.ndarray
        Mean outcome under each intervention, shaped (chains, draws).
    n_units : int
        Units averaged over.
    given : str
        Description of the subpopulation (empty for the whole data).
    seed : int
    diagnostics : dict
        The fit's diagnostics summary.
    warnings : tuple of str
    """

    outcome: str
    do: dict
    vs: dict
    chains: np.ndarray
    under_do: np.ndarray
    under_vs: np.ndarray
    n_units: int
    given: str
    seed: int
    diagnostics: dict
    warnings: tuple[str, ...] = ()

    @property
    def draws(self) -> np.ndarray:
        """Effect draws flattened to (chains * draws,)."""
        return self.chains.reshape(-1)

    def mean(self) -> float:
        """Posterior mean of the effect."""
        return float(self.draws.mean())

    def sd(self) -> float:
        """Posterior standard deviation of the effect."""
        return float(self.draws.std())

    def interval(self, prob: float = 0.9) -> tuple[float, float]:
        """Equal-tailed credible interval."""
        return interval(self.draws, prob)

    def prob_positive(self) -> float:
        """Posterior probability that the effect is above zero."""
        return float((self.draws > 0).mean())

    def mcse(self) -> float:
        """Monte Carlo standard error of the posterior mean."""
        return mcse_mean(self.chains)

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Tidy table: the effect and the mean outcome under each intervention."""
        rows = []
        for label, d in (("effect", self.chains), ("under do", self.under_do), ("under vs", self.under_vs)):
            lo, hi = interval(d, prob)
            rows.append({
                "quantity": label, "estimate": float(d.mean()), "lower": lo, "upper": hi,
                "mcse": mcse_mean(d), "prob_positive": float((d > 0).mean()) if label == "effect" else np.nan,
            })
        return _recorded(pd.DataFrame(rows).set_index("quantity"), self)

    def to_dict(self, prob: float = 0.9) -> dict:
        """JSON-ready summary with the interval, MCSE, seed and diagnostics."""
        lo, hi = self.interval(prob)
        return {
            "kind": "effect", "outcome": self.outcome, "do": _jsonable(self.do), "vs": _jsonable(self.vs),
            "given": self.given, "n_units": self.n_units, "estimate": self.mean(), "sd": self.sd(),
            "lower": lo, "upper": hi, "prob": prob, "mcse": self.mcse(),
            "prob_positive": self.prob_positive(), "seed": self.seed,
            "diagnostics": self.diagnostics, "warnings": list(self.warnings),
        }

    def __repr__(self) -> str:
        lo, hi = self.interval(0.9)
        return (f"EffectResult({self.outcome}: mean {self.mean():.4g}, 90% interval [{lo:.4g}, {hi:.4g}], "
                f"P(>0) {self.prob_positive():.3f}, {self.n_units} units{_flag(self)})")


def _jsonable(d):
    """Interventions as data, in a study file's own words where it has them: ``{"shift": 1.0}``,
    ``{"distribution": "bernoulli", "p": 0.3}`` (never a repr with a memory address, which would
    make two identical runs write different files)."""
    return {k: _intervention_record(v) for k, v in (d or {}).items()}


def _intervention_record(v):
    from causal_wm.interventions import Apply, Scale, Shift

    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Shift):
        return {"shift": v.delta}
    if isinstance(v, Scale):
        return {"scale": v.factor}
    if isinstance(v, Apply) or (callable(v) and not hasattr(v, "ppf")):
        fn = v.fn if isinstance(v, Apply) else v
        name = getattr(fn, "__qualname__", type(fn).__name__)
        return {"callable": f"{getattr(fn, '__module__', None) or '?'}.{name}"}
    dist = getattr(v, "dist", None)
    if hasattr(v, "ppf") and getattr(v, "xk", None) is not None:  # rv_discrete(values=(xk, pk))
        return {"distribution": "rv_discrete", "values": np.asarray(v.xk).tolist(),
                "probabilities": np.asarray(v.pk).tolist()}
    if hasattr(v, "ppf") and dist is not None:
        return _distribution_record(dist, tuple(getattr(v, "args", ())), dict(getattr(v, "kwds", {})))
    arr = np.asarray(v)
    if arr.ndim == 1:  # per-unit values: a short list whole, a long one summarised
        vals = [x.item() if isinstance(x, np.generic) else x for x in arr.tolist()]
        if len(vals) <= 10:
            return {"per_unit": vals}
        rec = {"per_unit": len(vals)}
        if np.issubdtype(arr.dtype, np.number):
            rec.update(min=float(arr.min()), mean=float(arr.mean()), max=float(arr.max()))
        return rec
    return type(v).__name__


def _distribution_record(dist, args: tuple, kwds: dict) -> dict:
    """A frozen scipy distribution as data: its name and named parameters."""
    name = getattr(dist, "name", type(dist).__name__)
    names = [x.strip() for x in (dist.shapes or "").split(",") if x.strip()]
    names += ["loc"] if hasattr(dist, "pmf") else ["loc", "scale"]
    params = {n: float(x) for n, x in zip(names, args, strict=False)} | {k: float(x) for k, x in kwds.items()}
    if name == "norm":
        return {"distribution": "normal", "loc": params.get("loc", 0.0), "scale": params.get("scale", 1.0)}
    if name == "uniform":
        lo = params.get("loc", 0.0)
        return {"distribution": "uniform", "low": lo, "high": lo + params.get("scale", 1.0)}
    return {"distribution": name} | {k: x for k, x in params.items() if not (k == "loc" and x == 0.0)}


@dataclass(frozen=True)
class SimulationResult:
    """Interventional (or observational) predictive samples of new units.

    Each sample uses its own posterior draw (``draw_index``) and fresh noise, so the samples
    carry both parameter uncertainty and noise.
    """

    values: dict
    draw_index: np.ndarray
    do: dict
    seed: int
    diagnostics: dict
    levels: dict = field(default_factory=dict)  # node -> its named levels (values reported by label)
    posterior_shape: tuple = ()  # (chains, draws) of the posterior the draws index
    warnings: tuple[str, ...] = ()  # the fit's and the data's, as every result carries

    def __repr__(self) -> str:
        n = len(self.draw_index)
        return (f"SimulationResult({n:,} samples of {list(self.values)}, do={_jsonable(self.do)}, seed {self.seed}"
                f"{_flag(self)})")

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.values:
            from causal_wm.errors import suggest

            raise QueryError(f"{name!r} is not a simulated node.{suggest(name, self.values)}")
        return self.values[name]

    def to_frame(self) -> pd.DataFrame:
        """All samples as a DataFrame, one column per node (``attrs``: the fit's verdict, as summaries)."""
        return _recorded(pd.DataFrame(self.values), self)

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Per node: mean, SD, and the central ``prob`` predictive interval. A node reported by label
        gets one row per level, ``node`` reading ``"name[level]"``: the share of samples at that
        level, as a binary node's mean (SD and interval of the level's indicator)."""
        rows = []
        for k, v in self.values.items():
            cols = ({f"{k}[{lev}]": (v == lev).astype(float) for lev in self.levels[k]} if k in self.levels
                    else {k: v} if v.dtype.kind in "fiub" else {})
            for name, x in cols.items():
                lo, hi = interval(x, prob)
                rows.append({"node": name, "estimate": float(x.mean()), "sd": float(x.std()), "lower": lo,
                             "upper": hi, "mcse": self._mcse(x)})
        return _recorded(pd.DataFrame(rows).set_index("node"), self)

    def _mcse(self, x: np.ndarray) -> float:
        """MCSE of the mean of ``x``. Where every posterior draw is used (n >= draws), samples of the
        same draw share its parameters and neighbouring draws are autocorrelated, so sd/sqrt(n) is too
        small (by 2x in a probe): the per-draw means form a chain whose MCSE is the answer's. With
        fewer samples than draws, each sample has its own random draw and sd/sqrt(n) stands."""
        if len(self.posterior_shape) == 2:
            chains, draws = self.posterior_shape
            counts = np.bincount(self.draw_index, minlength=chains * draws)
            if len(counts) == chains * draws and counts.min() > 0:
                means = np.bincount(self.draw_index, weights=x, minlength=chains * draws) / counts
                return mcse_mean(means.reshape(chains, draws))
        return float(x.std() / np.sqrt(len(x)))

    def to_dict(self, prob: float = 0.9) -> dict:
        """JSON-ready summary."""
        return {"kind": "simulate", "do": _jsonable(self.do), "n": len(self.draw_index),
                "nodes": self.summary(prob).reset_index().to_dict("records"), "prob": prob,
                "seed": self.seed, "diagnostics": self.diagnostics}


@dataclass(frozen=True)
class CounterfactualResult:
    """Unit-level counterfactuals: per posterior draw, what each unit's nodes would have been.

    ``result[name]`` is an array shaped (draws, units) in original units for every node
    downstream of the intervention (and the intervened nodes); other nodes equal their factual
    values. With ``summary_only=True`` only per-unit summaries are kept.
    """

    values: dict
    factual: pd.DataFrame
    do: dict
    seed: int
    diagnostics: dict
    summaries: dict = field(default_factory=dict)
    prob: float = 0.9
    assumption: str = COUPLING
    levels: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # the fit's and the data's, as every result carries

    def __repr__(self) -> str:
        kept = "summaries only" if self.summaries else f"{self.n_draws:,} draws each"
        return (f"CounterfactualResult({len(self.factual):,} units, nodes {list(self.nodes)} ({kept}), "
                f"do={_jsonable(self.do)}, seed {self.seed}{_flag(self)})")

    @property
    def n_draws(self) -> int:
        """Posterior draws kept per unit (0 for a ``summary_only`` result)."""
        return next(iter(self.values.values())).shape[0] if self.values else 0

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.values:
            return self.values[name]
        if name in self.factual.columns:
            if self.summaries:
                raise QueryError(f"{name!r} is not affected by the intervention; see .factual.")
            n = next(iter(self.values.values())).shape[0] if self.values else 1
            return np.broadcast_to(self.factual[name].to_numpy(), (n, len(self.factual)))
        from causal_wm.errors import suggest

        raise QueryError(f"{name!r} is not a node of this counterfactual.{suggest(name, self.factual.columns)}")

    @property
    def nodes(self) -> tuple[str, ...]:
        """Nodes the intervention can change."""
        return tuple(self.summaries or self.values)

    def summary(self, prob: float | None = None, node: str | None = None) -> pd.DataFrame:
        """Per unit and affected node: factual value, counterfactual mean, SD and interval.

        A categorical node gets one row per unit and level, ``node`` reading ``"name[level]"``: its
        estimate is the probability of that level over the draws (the factual column is 1 where the
        unit was observed at that level), like a binary node's mean.
        """
        nodes = [node] if node else list(self.nodes)
        frames = []
        for k in nodes:
            if k in self.levels:
                frames.extend(self._level_rows(k, prob))
                continue
            if self.summaries:
                if prob is not None and prob != self.prob:
                    raise QueryError(f"this result kept summaries at prob={self.prob} only.")
                s = self.summaries[k]
                mean, sd, lo, hi = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
            else:
                d = self[k]
                p = _prob(prob if prob is not None else self.prob)
                mean, sd = d.mean(axis=0), d.std(axis=0)
                lo, hi = np.quantile(d, [(1 - p) / 2, (1 + p) / 2], axis=0)
                const = d.min(axis=0) == d.max(axis=0)  # e.g. a node set by do(): exactly its value, SD 0,
                mean, sd = np.where(const, d[0], mean), np.where(const, 0.0, sd)  # as summary_only gives
            fact = self.factual[k].to_numpy() if k in self.factual.columns else np.full(len(mean), np.nan)
            frames.append(pd.DataFrame({
                "unit": self.factual.index, "node": k, "factual": fact, "estimate": mean, "sd": sd,
                "lower": lo, "upper": hi,
            }))
        cols = ["unit", "node", "factual", "estimate", "sd", "lower", "upper"]
        return _recorded(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols), self)

    def average(self, prob: float | None = None) -> pd.DataFrame:
        """Posterior of the mean over the units, per affected node: for each posterior draw, the
        counterfactual averaged over the units, then its mean, SD, equal-tailed interval and MCSE
        (``factual``: the units' observed mean). A categorical node gets a row per level: the share of
        units at it.

        This is not the average of the per-unit intervals, which is far wider wherever the units'
        counterfactuals vary from draw to draw (binary, count and categorical nodes, and what they
        feed). A ``summary_only`` result kept no draws: its estimate is exact, and its SD, interval and
        MCSE are NaN (``attrs["warnings"]`` says so); ask for every draw to get them.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> cf = CounterfactualResult({"y": np.array([[0.0, 1.0], [1.0, 1.0]])},
        ...                           pd.DataFrame({"y": [1.0, 1.0]}), {"t": 0}, 0, {})
        >>> cf.average(0.5).loc["y", ["factual", "estimate", "lower", "upper"]].tolist()
        [1.0, 0.75, 0.625, 0.875]
        """
        p = _prob(prob if prob is not None else self.prob)
        rows, notes = [], []
        for k in self.nodes:
            fact = self.factual[k] if k in self.factual.columns else None
            for label, per_unit, fact_mean in self._averaged(k, fact):
                if isinstance(per_unit, tuple):  # summary_only: each unit's mean only
                    rows.append({"node": label, "factual": fact_mean, "estimate": float(per_unit[0].mean()),
                                 "sd": np.nan, "lower": np.nan, "upper": np.nan, "mcse": np.nan})
                    continue
                m = per_unit.mean(axis=1)  # per draw, the mean over units
                lo, hi = np.quantile(m, [(1 - p) / 2, (1 + p) / 2])
                rows.append({"node": label, "factual": fact_mean, "estimate": float(m.mean()), "sd": float(m.std()),
                             "lower": float(lo), "upper": float(hi), "mcse": mcse_mean(m[None, :])})
        if self.summaries:
            notes.append("summary_only kept no draws, so the mean over units has no interval here; run the "
                         "counterfactual with every draw (summary_only=False, or draws=<n> to keep fewer).")
        cols = ["node", "factual", "estimate", "sd", "lower", "upper", "mcse"]
        table = _recorded(pd.DataFrame(rows, columns=cols).set_index("node"), self)
        table.attrs["warnings"] = table.attrs["warnings"] + notes
        table.attrs["n_units"] = len(self.factual)
        return table

    def _averaged(self, k: str, fact):
        """(row label, values, factual mean over units) for node ``k``: values are (draws, units), or
        a 1-tuple of the per-unit means where only summaries were kept."""
        if k in self.levels:
            d = None if self.summaries else np.asarray(self[k])
            for j, level in enumerate(self.levels[k]):
                f = float((fact == level).mean()) if fact is not None else np.nan
                vals = (self.summaries[k][:, j, 0],) if d is None else (d == level).astype(float)
                yield f"{k}[{level}]", vals, f
            return
        f = float(pd.to_numeric(fact, errors="coerce").astype(float).mean()) if fact is not None else np.nan
        yield k, (self.summaries[k][:, 0],) if self.summaries else np.asarray(self[k], dtype=float), f

    def _level_rows(self, k: str, prob: float | None) -> list[pd.DataFrame]:
        # summary_only keeps, per unit and level, (mean, SD, lower, upper) of "k takes this level",
        # computed by queries._level_summaries with the rules used here on every draw
        if self.summaries and prob is not None and prob != self.prob:
            raise QueryError(f"this result kept summaries at prob={self.prob} only.")
        d = None if self.summaries else np.asarray(self[k])
        p = _prob(prob if prob is not None else self.prob)
        fact = self.factual[k].to_numpy() if k in self.factual.columns else None
        frames = []
        for j, level in enumerate(self.levels[k]):
            if d is None:
                mean, sd, lo, hi = self.summaries[k][:, j].T
            else:
                hit = (d == level).astype(float)
                mean, sd = hit.mean(axis=0), hit.std(axis=0)
                lo, hi = np.quantile(hit, [(1 - p) / 2, (1 + p) / 2], axis=0)
            frames.append(pd.DataFrame({
                "unit": self.factual.index, "node": f"{k}[{level}]",
                "factual": (fact == level).astype(float) if fact is not None else np.nan,
                "estimate": mean, "sd": sd, "lower": lo, "upper": hi,
            }))
        return frames

    def to_dict(self, prob: float = 0.9) -> dict:
        """JSON-ready summary (per unit rows)."""
        avg = self.average(prob if not self.summaries else None)
        return {"kind": "counterfactual", "do": _jsonable(self.do), "n_units": len(self.factual),
                "rows": self.summary(prob if not self.summaries else None).to_dict("records"),
                "average": avg.reset_index().to_dict("records"), "average_notes": avg.attrs["warnings"][-1:]
                if self.summaries else [], "prob": prob if not self.summaries else self.prob,
                "assumption": self.assumption, "seed": self.seed, "diagnostics": self.diagnostics}


@dataclass(frozen=True)
class MediationResult:
    """Natural direct (NDE), natural indirect (NIE) and total effects of a treatment.

    ``direct`` contrasts Y(t1, M(t0)) with Y(t0, M(t0)); ``indirect`` contrasts Y(t1, M(t1)) with
    Y(t1, M(t0)); ``total`` is their sum. Each is an :class:`EffectResult` over the same draws,
    so ``proportion_mediated`` carries their joint uncertainty. Identification of natural effects
    needs no unmeasured mediator-outcome confounding and no mediator-outcome confounder affected by
    the treatment (cross-world independence); where the graph shows either, the direct and indirect
    results carry an identification warning.
    """

    treatment: str
    mediators: tuple[str, ...]
    outcome: str
    direct: EffectResult
    indirect: EffectResult
    total: EffectResult

    @property
    def proportion_mediated(self) -> np.ndarray:
        """Draws of NIE / total (undefined where the total effect is near zero)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.indirect.draws / self.total.draws

    def summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Tidy table: NDE, NIE, total and the proportion mediated."""
        rows = []
        for label, r in (("direct (NDE)", self.direct), ("indirect (NIE)", self.indirect), ("total", self.total)):
            lo, hi = r.interval(prob)
            rows.append({"quantity": label, "estimate": r.mean(), "lower": lo, "upper": hi, "mcse": r.mcse(),
                         "prob_positive": r.prob_positive()})
        pm = self.proportion_mediated
        pm = pm[np.isfinite(pm)]
        if pm.size:
            lo, hi = interval(pm, prob)
            rows.append({"quantity": "proportion mediated", "estimate": float(np.median(pm)), "lower": lo,
                         "upper": hi, "mcse": np.nan, "prob_positive": float((pm > 0).mean())})
        return _recorded(pd.DataFrame(rows).set_index("quantity"), self.total)

    def to_dict(self, prob: float = 0.9) -> dict:
        """JSON-ready summary."""
        return {"kind": "mediation", "treatment": self.treatment, "mediators": list(self.mediators),
                "outcome": self.outcome, "prob": prob,
                "rows": self.summary(prob).reset_index().to_dict("records"),
                "direct": self.direct.to_dict(prob), "indirect": self.indirect.to_dict(prob),
                "total": self.total.to_dict(prob)}
