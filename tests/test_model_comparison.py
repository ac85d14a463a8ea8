"""idata.log_likelihood holds densities of the data in original units, so ArviZ's LOO compares
models of different families (and differently standardised ones) on one scale.

Truth: data simulated with NumPy from one family; the log densities are checked against scipy's.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
from scipy import stats

import causal_wm as cw


def _fit(family, df):
    scm = cw.SCM.from_dict({"name": f"k_{family}", "nodes": {"x": {}, "k": {"family": family, "formula": "x"}}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cw.ConvergenceWarning)
        return scm.fit(df, chains=2, draws=300, warmup=300, seed=0)


def test_loo_ranks_the_true_family_first_and_densities_are_scipys():
    rng = np.random.default_rng(0)
    n = 300
    x = rng.normal(0.0, 1.0, n)
    df = pd.DataFrame({"x": x, "k": rng.poisson(np.exp(np.log(50.0) + 0.2 * x))})
    fits = {fam: _fit(fam, df) for fam in ("poisson", "normal", "lognormal")}
    # (az.compare ranks by these; it is not called here for a pandas deprecation inside it)
    elpd = {f: az.loo(p.idata, var_name="k").elpd_loo for f, p in fits.items()}
    assert max(elpd, key=elpd.get) == "poisson", elpd
    assert elpd["poisson"] - elpd["normal"] < 50, elpd  # near each other (a Poisson of mean 50 is nearly normal)
    # the normal model's pointwise terms are N(k | mu, sigma) in counts, for every draw
    post = fits["normal"]
    ll = post.idata.log_likelihood["k"].values.reshape(-1, n)
    mu0 = post.effect("k", do={"x": 0.0}).under_do.reshape(-1)  # E[k | x = 0] per draw, in counts
    sc, theta = post.plan.scales["k"], post.idata.posterior
    b = theta["k__b"].values.reshape(-1) * sc.scale / post.plan.scales["x"].scale  # counts per unit of x
    sigma = theta["k__sigma"].values.reshape(-1) * sc.scale
    mean = mu0[:, None] + b[:, None] * df["x"].to_numpy()[None, :]
    ref = stats.norm.logpdf(df["k"].to_numpy()[None, :], mean, sigma[:, None])
    np.testing.assert_allclose(ll, ref, rtol=1e-8, atol=1e-8)
