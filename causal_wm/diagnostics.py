"""Convergence diagnostics from ArviZ: R-hat, bulk/tail ESS, MCSE and divergences.

A fit is ``ok`` when every reported parameter has R-hat <= 1.01 and bulk and tail ESS of at
least 100 per chain, and NUTS reported no divergent transitions (Vehtari et al. 2021).
Per-unit latent values (and imputed missing values) are checked against R-hat <= 1.05 instead:
with hundreds of them, a few would cross 1.01 by chance alone in a converged fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import arviz as az
import numpy as np
import pandas as pd

RHAT_MAX = 1.01
RHAT_MAX_PER_UNIT = 1.05
ESS_PER_CHAIN = 100


@dataclass(frozen=True)
class Diagnostics:
    """Diagnostics of one fit.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per parameter element: ``r_hat``, ``ess_bulk``, ``ess_tail``, ``mcse_mean``.
    divergences : int
        Divergent transitions after warm-up.
    ok : bool
        Whether every check passed.
    problems : tuple of str
        One plain-language sentence per failed check, naming the parameters at fault.
    """

    table: pd.DataFrame
    divergences: int
    ok: bool
    problems: tuple[str, ...]
    method: str = "nuts"

    @property
    def max_rhat(self) -> float:
        """The largest R-hat (NaN for SVI)."""
        return float(self.table["r_hat"].max()) if len(self.table) else float("nan")

    @property
    def min_ess_bulk(self) -> float:
        """The smallest bulk ESS."""
        return float(self.table["ess_bulk"].min()) if len(self.table) else float("nan")

    def to_dict(self) -> dict:
        """A JSON-ready summary."""
        return {
            "ok": self.ok,
            "method": self.method,
            "max_rhat": _num(self.max_rhat),
            # JSON has no infinity: say so, or an infinite R-hat (chains stuck) reads as "not computed"
            "max_rhat_infinite": bool(np.isposinf(self.max_rhat)),
            "min_ess_bulk": _num(self.min_ess_bulk),
            "min_ess_tail": _num(float(self.table["ess_tail"].min()) if len(self.table) else float("nan")),
            "divergences": int(self.divergences),
            "problems": list(self.problems),
        }


# An ELBO still rising by more than this many nats over the last quarter of the steps (and by more
# than SVI_RECENT_Z standard errors of its noise) means the approximation was still moving. A share
# of the whole fall was used before: the first steps' huge fall hid runs that were far off (an
# effect of 14.5 where NUTS said 2.9 passed at 1.9% of the fall, with 1,846 nats still to go).
SVI_RECENT_NATS = 1.0
SVI_RECENT_Z = 3.0
# Fewer steps than this are too few to tell a settled loss from one still falling (Adam's steps
# at the default learning rate move each standardised parameter by about 0.01).
SVI_MIN_STEPS = 500


def loss_trend(losses) -> dict:
    """How far an SVI loss trajectory still fell at its end: the fall from the third to the last
    quarter of the steps (means of each), as a share of the fall from the first tenth to the last
    quarter, and in standard errors of the difference of the two quarters' means (the loss's noise
    measured by its step-to-step changes).

    Examples
    --------
    >>> steps = np.arange(2000)
    >>> noise = np.random.default_rng(0).normal(0, 5, 2000)
    >>> done = loss_trend(1000 + 5000 * np.exp(-steps / 100) + noise)     # flat at the end
    >>> going = loss_trend(6000 - 2 * steps + noise)                      # still falling
    >>> svi_problems(done), len(svi_problems(going))
    ((), 1)
    """
    x = np.asarray(losses, dtype=float)
    q = max(1, len(x) // 4)
    a, b, first = x[-2 * q:-q] if len(x) >= 2 * q else x[:q], x[-q:], x[:max(1, len(x) // 10)]
    fall = float(a.mean() - b.mean())
    # the noise from step-to-step changes over the last half (a steady fall does not inflate it)
    half = x[-2 * q:]
    sd = float(np.std(np.diff(half)) / np.sqrt(2.0)) if len(half) > 2 else 0.0
    se = sd * float(np.sqrt(1.0 / len(a) + 1.0 / len(b)))
    total = float(first.mean() - b.mean())
    return {"svi_steps": int(len(x)), "svi_recent_fall": fall,
            "svi_recent_share": fall / total if total > 0 else (0.0 if fall <= 0 else 1.0),
            "svi_recent_z": fall / se if se > 0 else (np.inf if fall > 0 else 0.0)}


def svi_problems(attrs) -> tuple[str, ...]:
    """The convergence problem of an SVI fit, from :func:`loss_trend`'s figures (none where they are
    missing, e.g. a fit saved before they were kept)."""
    share, z, steps = attrs.get("svi_recent_share"), attrs.get("svi_recent_z"), attrs.get("svi_steps")
    if steps is not None and steps < SVI_MIN_STEPS:
        return (f"only {steps} SVI steps: too few to tell whether the loss settled; run at least {SVI_MIN_STEPS} "
                "(fit setting steps=).",)
    fall = attrs.get("svi_recent_fall")
    if share is None or z is None or fall is None or not (fall > SVI_RECENT_NATS and z > SVI_RECENT_Z):
        return ()
    return (f"the SVI loss was still falling after {attrs.get('svi_steps')} steps: over the last quarter it fell by "
            f"{fall:.4g} nats ({share:.1%} of its whole fall, {min(z, 1e9):.0f} standard errors of "
            "its noise); run more steps (fit setting steps=) or raise learning_rate.",)


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)


def diagnose(idata, method: str = "nuts") -> Diagnostics:
    """Compute :class:`Diagnostics` for an InferenceData."""
    post = idata.posterior
    names = [v for v in post.data_vars if "__z__" not in v]
    chains = int(post.sizes["chain"])
    if method == "svi":
        table = pd.DataFrame(columns=["r_hat", "ess_bulk", "ess_tail", "mcse_mean"])
        problems = svi_problems(idata.attrs)
        return Diagnostics(table, 0, not problems, problems, method)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # chains stuck at one value make ArviZ divide by zero (R-hat inf): judged below, not printed
        warnings.simplefilter("ignore", RuntimeWarning)
        table = az.summary(idata, var_names=names, kind="diagnostics", round_to="none")
    table = table[["r_hat", "ess_bulk", "ess_tail", "mcse_mean"]]
    div = int(np.asarray(idata.sample_stats["diverging"]).sum()) if "diverging" in idata.sample_stats else 0
    problems = []
    ess_min = ESS_PER_CHAIN * chains
    per_unit = {v for v in names if "unit" in post[v].dims or v.endswith("__missing")}  # imputed values too
    limit = np.array([RHAT_MAX_PER_UNIT if i.split("[", 1)[0] in per_unit else RHAT_MAX for i in table.index])
    if chains > 1:
        bad = table.index[~(table["r_hat"].to_numpy() <= limit)]
        if len(bad):
            problems.append(
                f"R-hat above {RHAT_MAX} ({RHAT_MAX_PER_UNIT} for per-unit values) for {len(bad)} parameter(s): "
                f"{_names(bad)}; the chains disagree, so run longer or reparameterise."
            )
    low = table.index[~((table["ess_bulk"] >= ess_min) & (table["ess_tail"] >= ess_min))]
    if len(low):
        problems.append(
            f"effective sample size below {ess_min} for {len(low)} parameter(s): {_names(low)}; "
            "draw more samples."
        )
    if div:
        problems.append(
            f"{div} divergent transition(s): the posterior may be biased; raise target_accept "
            "(e.g. 0.95) or simplify the model."
        )
    return Diagnostics(table, div, not problems, tuple(problems), method)


def _names(index, k: int = 5) -> str:
    items = list(index[:k])
    return ", ".join(items) + (f" and {len(index) - k} more" if len(index) > k else "")


def mcse_mean(draws: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of ``draws`` shaped (chains, draws)."""
    d = np.asarray(draws, dtype=float)
    if d.ndim == 1:
        d = d[None, :]
    if np.std(d) == 0:  # a constant has no Monte Carlo error
        return 0.0
    if d.shape[1] < 4:  # too few draws per chain to estimate the ESS: unknown, not zero
        return float("nan")
    ess = float(az.ess(d, method="mean"))
    return float(np.std(d) / np.sqrt(max(ess, 1.0)))
