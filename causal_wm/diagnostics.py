"""Convergence diagnostics from ArviZ: R-hat, bulk/tail ESS, MCSE and divergences.

A fit is ``ok`` when every reported parameter has R-hat <= 1.01 and bulk and tail ESS of at
least 100 per chain, and NUTS reported no divergent transitions (Vehtari et al. 2021).
Per-unit latent values (and imputed missing values) are checked against R-hat <= 1.05 instead:
with hundreds of them, a few would cross 1.01 by chance alone in a converged fit.
"""

from __future__ import annotations

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
            "min_ess_bulk": _num(self.min_ess_bulk),
            "min_ess_tail": _num(float(self.table["ess_tail"].min()) if len(self.table) else float("nan")),
            "divergences": int(self.divergences),
            "problems": list(self.problems),
        }


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)


def diagnose(idata, method: str = "nuts") -> Diagnostics:
    """Compute :class:`Diagnostics` for an InferenceData."""
    post = idata.posterior
    names = [v for v in post.data_vars if "__z__" not in v]
    chains = int(post.sizes["chain"])
    if method == "svi":
        table = pd.DataFrame(columns=["r_hat", "ess_bulk", "ess_tail", "mcse_mean"])
        loss = idata.attrs.get("elbo_rel_change")
        problems = ()
        if loss is not None and loss > 0.01:
            problems = (f"SVI loss still changed by {loss:.1%} over the last steps; run more steps.",)
        return Diagnostics(table, 0, not problems, problems, method)
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
    if d.shape[1] < 4 or np.std(d) == 0:
        return 0.0
    ess = float(az.ess(d, method="mean"))
    return float(np.std(d) / np.sqrt(max(ess, 1.0)))
