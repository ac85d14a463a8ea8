"""The PyMC backend: the same mechanisms, parameter names and dims as the NumPyro backend.

Sampling uses ``pm.sample`` (PyMC's NUTS by default, or ``sampler="nutpie"`` / ``"numpyro"`` /
``"blackjax"`` through ``nuts_sampler``). The result is rebuilt with the shared
:func:`causal_wm.idata.build_idata`, so the query engine reads either backend's posterior
unchanged.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from causal_wm import sites
from causal_wm.design import column_values, predictor
from causal_wm.errors import BackendNotInstalled, ModelSpecError
from causal_wm.idata import coords_dims

log = logging.getLogger(__name__)

try:
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise BackendNotInstalled(
        f"the PyMC backend needs pymc ({exc.name} is missing); install it with: pip install 'causal_wm[pymc]'"
    ) from None


def prior_rv(name, prior, dims=None, shape=None):
    """A PyMC random variable for a :class:`~causal_wm.priors.Prior`."""
    k = prior.kwargs
    kw = {"dims": dims} if dims is not None else ({"shape": shape} if shape is not None else {})
    if prior.dist == "normal":
        return pm.Normal(name, mu=k["loc"], sigma=k["scale"], **kw)
    if prior.dist == "student_t":
        return pm.StudentT(name, nu=k["df"], mu=k["loc"], sigma=k["scale"], **kw)
    if prior.dist == "halfnormal":
        return pm.HalfNormal(name, sigma=k["scale"], **kw)
    if prior.dist == "halfcauchy":
        return pm.HalfCauchy(name, beta=k["scale"], **kw)
    if prior.dist == "exponential":
        return pm.Exponential(name, lam=k["rate"], **kw)
    if prior.dist == "gamma":
        return pm.Gamma(name, alpha=k["concentration"], beta=k["rate"], **kw)
    if prior.dist == "lognormal":
        return pm.LogNormal(name, mu=k["loc"], sigma=k["scale"], **kw)
    raise AssertionError(prior.dist)  # pragma: no cover - validated in the spec


def _stacked(name, node, labels, param, dims=None, shape=None):
    """One vector variable over columns with per-term prior parameters (as the NumPyro backend)."""
    priors = [node.prior(param, lab) for lab in labels]
    dists = {p.dist for p in priors}
    if len(set(priors)) == 1:
        return prior_rv(name, priors[0], dims=dims, shape=shape if dims is None else None)
    kw = {"dims": dims} if dims is not None else {"shape": shape}
    if dists == {"normal"}:
        return pm.Normal(name, mu=np.array([p.kwargs["loc"] for p in priors]),
                         sigma=np.array([p.kwargs["scale"] for p in priors]), **kw)
    if dists == {"halfnormal"}:
        return pm.HalfNormal(name, sigma=np.array([p.kwargs["scale"] for p in priors]), **kw)
    raise ModelSpecError(
        f"node {node.name!r}: per-term priors of {param!r} must all use the same distribution "
        f"(normal for 'b', halfnormal for 'sd'); got {sorted(dists)}."
    )


def make_model(plan) -> pm.Model:
    """The :class:`pymc.Model` of ``plan`` with the shared site names and dims."""
    scm, lays, scales = plan.scm, plan.layouts, plan.scales
    coords, dims = coords_dims(plan)
    n = plan.n
    with pm.Model(coords=coords) as model:
        vals: dict = {}
        for name in scm.order:
            node, lay = scm.node(name), lays[name]
            pred = predictor({p: vals[p] for p in node.parents}, scales)
            T = len(lay.columns)
            b = None
            if T:
                pos = plan.positive.get(name, ())
                labels = [c.term for c in lay.columns]
                if lay.n_levels:
                    b = _stacked(sites.coef(name), node, labels, "b", dims=dims[sites.coef(name)])
                elif not pos:
                    b = _stacked(sites.coef(name), node, labels, "b", dims=dims[sites.coef(name)])
                else:
                    free = [i for i in range(T) if i not in pos]
                    parts = pt.zeros(T)
                    if free:
                        bf = _stacked(f"{name}__bfree", node, [labels[i] for i in free], "b", shape=(len(free),))
                        parts = pt.set_subtensor(parts[np.array(free)], bf)
                    bp = pm.HalfNormal(f"{name}__bpos", sigma=np.array(
                        [node.prior("b", labels[i]).kwargs.get("scale", 1.0) for i in pos]), shape=(len(pos),))
                    parts = pt.set_subtensor(parts[np.array(pos)], bp)
                    b = pm.Deterministic(sites.coef(name), parts, dims=dims[sites.coef(name)])
            X = pt.stack([pt.as_tensor(column_values(c, pred)) * np.ones(n) for c in lay.columns], axis=-1) \
                if T else None
            if lay.n_levels:
                a = prior_rv(sites.intercept(name), node.prior("intercept"), dims=dims[sites.intercept(name)])
                eta = pt.ones((n, 1)) * a[None, :]
                if X is not None:
                    eta = eta + pt.dot(X, b.T)
                logits = pt.concatenate([pt.zeros((n, 1)), eta], axis=-1)
                if name in plan.missing:  # a categorical leaf with missing values: summed out
                    _imputed(plan, name, "categorical", logits, {}, plan.values[name])
                    continue
                pm.Categorical(name, logit_p=logits, observed=plan.values[name].astype(int), dims=sites.UNIT)
                vals[name] = plan.values[name]
                continue
            eta = pt.zeros(n)
            if lay.intercept:
                eta = eta + prior_rv(sites.intercept(name), node.prior("intercept"))
            if X is not None:
                eta = eta + pt.dot(X, b)
            for blk in lay.groups:
                sd = _stacked(sites.group_sd(name, blk.group), node, list(blk.prior_labels), "sd",
                              dims=dims[sites.group_sd(name, blk.group)])
                z = pm.Normal(sites.group_raw(name, blk.group), 0.0, 1.0, dims=dims[sites.group_raw(name, blk.group)])
                re = pm.Deterministic(sites.group_effect(name, blk.group), z * sd[None, :],
                                      dims=dims[sites.group_effect(name, blk.group)])
                g = plan.values[blk.group].astype(int)
                for j, c in enumerate(blk.columns):
                    col = 1.0 if not c.factors else column_values(c, pred)
                    eta = eta + re[g, j] * col
            if lay.latent:
                vals[name] = pm.Normal(name, mu=eta, sigma=1.0, dims=sites.UNIT)
                continue
            extra = {p: prior_rv(sites.extra(name, p), node.prior(p)) for p in node.fam.extra}
            obs = plan.values[name]
            fam = lay.family
            if name in plan.missing:  # `missing: impute`: children read the vector with the imputed values
                vals[name] = _imputed(plan, name, fam, eta, extra, obs)
                continue
            if fam in ("normal", "lognormal"):
                rv = pm.Normal(name, mu=eta, sigma=extra["sigma"], observed=obs, dims=sites.UNIT)
            elif fam == "student_t":
                rv = pm.StudentT(name, nu=extra["nu"], mu=eta, sigma=extra["sigma"], observed=obs, dims=sites.UNIT)
            elif fam == "bernoulli":
                rv = pm.Bernoulli(name, logit_p=eta, observed=obs, dims=sites.UNIT)
            elif fam == "poisson":
                rv = pm.Poisson(name, mu=pt.exp(scales[name].offset + eta), observed=obs, dims=sites.UNIT)
            else:
                rv = pm.NegativeBinomial(name, mu=pt.exp(scales[name].offset + eta), alpha=extra["phi"],
                                         observed=obs, dims=sites.UNIT)
            # children read the random variable, not the array, so that pm.do / pm.observe on this
            # node propagate downstream exactly as in a hand-written PyMC model
            vals[name] = rv
    return model


def _imputed(plan, name, fam, eta, extra, obs):
    """A node with missing values: its observed rows as data; for a continuous family its missing rows
    as a free variable ``<name>__missing`` drawn from the node's own mechanism (as the NumPyro backend).

    Returns the full vector its children read (``None`` for a discrete leaf, whose missing values are
    summed out of the fit and drawn by the queries afterwards).
    """
    rows = plan.missing[name]
    seen = np.setdiff1d(np.arange(plan.n), rows)
    mu = pt.exp(plan.scales[name].offset + eta[seen]) if fam in ("poisson", "negative_binomial") else None
    if fam in ("normal", "lognormal"):
        pm.Normal(name, mu=eta[seen], sigma=extra["sigma"], observed=obs[seen])
        mis = pm.Normal(sites.missing(name), mu=eta[rows], sigma=extra["sigma"], dims=sites.missing_dim(name))
    elif fam == "student_t":
        pm.StudentT(name, nu=extra["nu"], mu=eta[seen], sigma=extra["sigma"], observed=obs[seen])
        mis = pm.StudentT(sites.missing(name), nu=extra["nu"], mu=eta[rows], sigma=extra["sigma"],
                          dims=sites.missing_dim(name))
    else:
        if fam == "bernoulli":
            pm.Bernoulli(name, logit_p=eta[seen], observed=obs[seen])
        elif fam == "poisson":
            pm.Poisson(name, mu=mu, observed=obs[seen])
        elif fam == "negative_binomial":
            pm.NegativeBinomial(name, mu=mu, alpha=extra["phi"], observed=obs[seen])
        else:  # categorical: eta holds the (n, K) logits
            pm.Categorical(name, logit_p=eta[seen], observed=obs[seen].astype(int))
        return None
    return pt.set_subtensor(pt.as_tensor(np.nan_to_num(obs))[rows], mis)


def _full_loglik(plan, loglik: dict) -> dict:
    """Pointwise log-likelihoods over every unit: an imputed node's missing rows contribute 0 (not data)."""
    for name, rows in plan.missing.items():
        if name in loglik and loglik[name].shape[-1] != plan.n:
            full = np.zeros(loglik[name].shape[:-1] + (plan.n,))
            full[..., np.setdiff1d(np.arange(plan.n), rows)] = loglik[name]
            loglik[name] = full
    return loglik


def spawn_is_safe() -> bool:
    """Whether a spawned worker process can import ``__main__`` without running the user's work again:
    an interactive session (no file), or a script whose top level guards it with
    ``if __name__ == "__main__":``."""
    import ast

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path is None:
        return True
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = {getattr(x, "id", None) for x in (node.test.left, *node.test.comparators)}
            consts = {getattr(x, "value", None) for x in (node.test.left, *node.test.comparators)}
            if "__name__" in names and "__main__" in consts:
                return True
    return False


def sample(plan, s):
    """Fit ``plan`` with ``pm.sample``; return the shared InferenceData layout."""
    from causal_wm.idata import build_idata
    from causal_wm.seeding import stream

    if s.method != "nuts":
        raise ModelSpecError("the PyMC backend samples with NUTS only; use backend='numpyro' for method='svi'.")
    model = make_model(plan)
    kw = {}
    if s.sampler not in ("default", "pymc"):
        kw["nuts_sampler"] = s.sampler
    else:
        if s.dense_mass:
            kw["init"] = "jitter+adapt_full"
    cores = min(s.chains, 2)
    if "mp_ctx" not in kw and s.sampler in ("default", "pymc") and s.chains > 1 and "jax" in sys.modules:
        # forking a process that runs JAX threads can deadlock, so the chains' processes are spawned;
        # but spawning re-runs the user's script in each child, which hangs where it has no main guard
        if spawn_is_safe():
            kw["mp_ctx"] = "spawn"
        else:
            cores = 1
            log.info("PyMC runs its %d chains one after another: JAX is running in this process, and the "
                     "script has no `if __name__ == \"__main__\":` guard for PyMC's worker processes", s.chains)
    with model:
        try:
            idata = pm.sample(draws=s.draws, tune=s.warmup, chains=s.chains, target_accept=s.target_accept,
                              random_seed=stream(s.seed, "fit") % (2**31), progressbar=s.progress,
                              cores=cores, compute_convergence_checks=False, **kw)
        except ImportError as exc:
            raise BackendNotInstalled(
                f"sampler {s.sampler!r} needs {exc.name}; install it (e.g. pip install {s.sampler})."
            ) from None
        loglik = None
        if s.chains * s.draws * plan.n * len(plan.scm.observed) <= 5e7:
            pm.compute_log_likelihood(idata, progressbar=False)
            loglik = _full_loglik(plan, {k: np.asarray(v) for k, v in idata.log_likelihood.items()})
    # the model's own variables only: nutpie also returns the unconstrained values (x__sigma_log__)
    keep = {v.name for v in (*model.free_RVs, *model.deterministics)}
    samples = {k: np.asarray(v) for k, v in idata.posterior.items() if k in keep}
    ss = idata.sample_stats
    stats = {}
    for ours, theirs in (("diverging", "diverging"), ("energy", "energy"), ("n_steps", "n_steps"),
                         ("acceptance_rate", "acceptance_rate"), ("lp", "lp"), ("step_size", "step_size")):
        if theirs in ss:
            stats[ours] = np.asarray(ss[theirs])
    return build_idata(plan, samples, stats, loglik, s)


def log_density(plan, params: dict) -> float:
    """Joint log-density (no Jacobian) at constrained parameter values, for cross-backend checks."""
    model = make_model(plan)
    point = {}
    for rv in model.free_RVs:
        vv = model.rvs_to_values[rv]
        val = np.asarray(params[rv.name], dtype=float)
        tr = model.rvs_to_transforms.get(rv)
        # pytensor.function compiles the transform graph (a symbolic graph, not Python source)
        point[vv.name] = val if tr is None else np.asarray(pytensor.function([], tr.forward(val))())
    return float(model.compile_logp(jacobian=False)(point))
