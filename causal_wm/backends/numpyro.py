"""The NumPyro backend: NUTS (chains in parallel over host devices) or SVI.

The model walks the nodes in topological order and evaluates each mechanism from the shared
layout (:mod:`causal_wm.design`), so its parameters are exactly those the query engine reads.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from causal_wm import sites
from causal_wm.design import column_values, predictor
from causal_wm.idata import build_idata

log = logging.getLogger(__name__)


def _jax():
    # Chains run in parallel only over several host devices, which XLA fixes when JAX first
    # starts; so this is set at the first fit, not at import, and only if JAX is not running yet.
    if "jax" not in sys.modules:
        flag = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"
        if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def prior_dist(prior, shape=()):
    """A NumPyro distribution for a :class:`~causal_wm.priors.Prior`."""
    import numpyro.distributions as dist

    k = prior.kwargs
    d = {
        "normal": lambda: dist.Normal(k.get("loc", 0.0), k.get("scale", 1.0)),
        "student_t": lambda: dist.StudentT(k.get("df", 3.0), k.get("loc", 0.0), k.get("scale", 1.0)),
        "halfnormal": lambda: dist.HalfNormal(k.get("scale", 1.0)),
        "halfcauchy": lambda: dist.HalfCauchy(k.get("scale", 1.0)),
        "exponential": lambda: dist.Exponential(k.get("rate", 1.0)),
        "gamma": lambda: dist.Gamma(k.get("concentration", 1.0), k.get("rate", 1.0)),
        "lognormal": lambda: dist.LogNormal(k.get("loc", 0.0), k.get("scale", 1.0)),
    }[prior.dist]()
    return d.expand(shape) if shape else d


def _stack_priors(node, labels, param):
    """One batched prior over columns, allowing per-term overrides of loc/scale."""
    import jax.numpy as jnp
    import numpyro.distributions as dist

    priors = [node.prior(param, lab) for lab in labels]
    if all(p == priors[0] for p in priors):
        return prior_dist(priors[0], (len(labels),))
    dists = {p.dist for p in priors}
    if dists == {"normal"}:
        return dist.Normal(
            jnp.array([p.kwargs["loc"] for p in priors]), jnp.array([p.kwargs["scale"] for p in priors])
        )
    if dists == {"halfnormal"}:
        return dist.HalfNormal(jnp.array([p.kwargs["scale"] for p in priors]))
    from causal_wm.errors import ModelSpecError

    raise ModelSpecError(
        f"node {node.name!r}: per-term priors of {param!r} must all use the same distribution "
        f"(normal for 'b', halfnormal for 'sd'); got {sorted(dists)}."
    )


def make_model(plan):
    """The NumPyro model function of ``plan`` (call it with no arguments)."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    scm, lays, scales = plan.scm, plan.layouts, plan.scales
    data = {k: jnp.asarray(v) for k, v in plan.values.items()}
    n = plan.n

    def coefficients(node, lay):
        name = lay.name
        T = len(lay.columns)
        if T == 0:
            return None
        shape = (lay.n_eta, T) if lay.n_levels else (T,)
        pos = plan.positive.get(name, ())
        term_labels = [c.term for c in lay.columns]
        if not pos:
            prior = _stack_priors(node, term_labels, "b")
            if lay.n_levels:
                prior = prior.expand((lay.n_eta, T))
            return numpyro.sample(sites.coef(name), prior.to_event(len(shape)))
        free = [i for i in range(T) if i not in pos]
        b = jnp.zeros(T)
        if free:
            bf = numpyro.sample(
                f"{name}__bfree", _stack_priors(node, [term_labels[i] for i in free], "b").to_event(1)
            )
            b = b.at[jnp.array(free)].set(bf)
        scales_pos = [node.prior("b", term_labels[i]).kwargs.get("scale", 1.0) for i in pos]
        bp = numpyro.sample(f"{name}__bpos", dist.HalfNormal(jnp.array(scales_pos)).to_event(1))
        b = b.at[jnp.array(pos)].set(bp)
        return numpyro.deterministic(sites.coef(name), b)

    def model():
        vals: dict = {}
        for name in scm.order:
            node, lay = scm.node(name), lays[name]
            pred = predictor({p: vals[p] for p in node.parents}, scales)
            b = coefficients(node, lay)
            if lay.n_levels:
                a = numpyro.sample(
                    sites.intercept(name), prior_dist(node.prior("intercept"), (lay.n_eta,)).to_event(1)
                )
                if b is not None:
                    X = jnp.stack([column_values(c, pred) for c in lay.columns], axis=-1)
                    logits = jnp.concatenate([jnp.zeros((n, 1)), a + X @ b.T], axis=-1)
                else:  # a root: one row of logits, broadcast by the plate (no (n, K) array per gradient)
                    logits = jnp.concatenate([jnp.zeros(1), a])
                with numpyro.plate(sites.UNIT, n):
                    numpyro.sample(name, dist.Categorical(logits=logits), obs=data[name].astype(jnp.int32))
                vals[name] = data[name]
                continue
            eta = jnp.zeros(n)
            if lay.intercept:
                eta = eta + numpyro.sample(sites.intercept(name), prior_dist(node.prior("intercept")))
            if b is not None:
                X = jnp.stack([column_values(c, pred) for c in lay.columns], axis=-1)
                eta = eta + X @ b
            for blk in lay.groups:
                sd = numpyro.sample(
                    sites.group_sd(name, blk.group), _stack_priors(node, blk.prior_labels, "sd").to_event(1)
                )
                z = numpyro.sample(
                    sites.group_raw(name, blk.group),
                    dist.Normal(0.0, 1.0).expand((len(blk.levels), len(blk.columns))).to_event(2),
                )
                re = numpyro.deterministic(sites.group_effect(name, blk.group), z * sd)
                g = data[blk.group].astype(jnp.int32)
                for j, c in enumerate(blk.columns):
                    col = 1.0 if not c.factors else column_values(c, pred)
                    eta = eta + re[g, j] * col
            fam = lay.family
            if lay.latent:
                with numpyro.plate(sites.UNIT, n):
                    vals[name] = numpyro.sample(name, dist.Normal(eta, 1.0))
                continue
            extra = {p: numpyro.sample(sites.extra(name, p), prior_dist(node.prior(p)))
                     for p in node.fam.extra}
            if fam in ("normal", "lognormal"):
                d = dist.Normal(eta, extra["sigma"])
            elif fam == "student_t":
                d = dist.StudentT(extra["nu"], eta, extra["sigma"])
            elif fam == "bernoulli":
                d = dist.BernoulliLogits(eta)
            elif fam == "poisson":
                d = dist.Poisson(jnp.exp(scales[name].offset + eta))
            elif fam == "negative_binomial":
                d = dist.NegativeBinomial2(jnp.exp(scales[name].offset + eta), extra["phi"])
            else:  # pragma: no cover - families are validated in the spec
                raise AssertionError(fam)
            with numpyro.plate(sites.UNIT, n):
                numpyro.sample(name, d, obs=data[name])
            vals[name] = data[name]

    return model


def sample(plan, s):
    """Fit ``plan`` with settings ``s``; return an InferenceData."""
    jax = _jax()
    from numpyro.infer import MCMC, NUTS, log_likelihood

    from causal_wm.seeding import stream

    model = make_model(plan)
    key = jax.random.PRNGKey(stream(s.seed, "fit") % (2**31))
    rel_change = None
    if s.method == "svi":
        samples, stats, rel_change = _svi(model, key, s, exclude=set(plan.scm.observed))
        samples = {k: v[None] for k, v in samples.items()}
    else:
        method = "parallel" if jax.local_device_count() >= s.chains else "sequential"
        mcmc = MCMC(
            NUTS(model, target_accept_prob=s.target_accept),
            num_warmup=s.warmup,
            num_samples=s.draws,
            num_chains=s.chains,
            chain_method=method,
            progress_bar=s.progress,
        )
        try:
            mcmc.run(key, extra_fields=("diverging", "energy", "num_steps", "accept_prob",
                                        "potential_energy", "adapt_state.step_size"))
        except RuntimeError as exc:
            from causal_wm.errors import FitError

            raise FitError(f"NUTS failed to start: {exc}") from exc
        samples = mcmc.get_samples(group_by_chain=True)
        ex = mcmc.get_extra_fields(group_by_chain=True)
        stats = {
            "diverging": np.asarray(ex["diverging"]),
            "energy": np.asarray(ex["energy"]),
            "n_steps": np.asarray(ex["num_steps"]),
            "acceptance_rate": np.asarray(ex["accept_prob"]),
            "lp": -np.asarray(ex["potential_energy"]),
            "step_size": np.asarray(ex["adapt_state.step_size"]),
        }
    samples = {k: np.asarray(v) for k, v in samples.items()}
    C, D = next(iter(samples.values())).shape[:2]
    loglik = None
    n_obs = len(plan.scm.observed)
    if C * D * plan.n * n_obs <= 5e7:
        flat = {k: v.reshape((C * D,) + v.shape[2:]) for k, v in samples.items()}
        ll = log_likelihood(model, flat)
        loglik = {k: np.asarray(v).reshape(C, D, plan.n) for k, v in ll.items()}
    else:
        log.info("log_likelihood skipped: %d draws x %d units is too large to store", C * D, plan.n)
    idata = build_idata(plan, samples, stats, loglik, s)
    if rel_change is not None:
        idata.attrs["elbo_rel_change"] = rel_change
    return idata


def _svi(model, key, s, exclude):
    import jax
    from numpyro.infer import SVI, Predictive, Trace_ELBO, autoguide
    from numpyro.optim import Adam

    guide = {
        "lowrank": autoguide.AutoLowRankMultivariateNormal,
        "normal": autoguide.AutoNormal,
        "mvn": autoguide.AutoMultivariateNormal,
    }[s.guide](model)
    k1, k2, k3 = jax.random.split(key, 3)
    svi = SVI(model, guide, Adam(s.learning_rate), Trace_ELBO())
    res = svi.run(k1, s.steps, progress_bar=s.progress)
    n = s.draws * s.chains
    draws = dict(guide.sample_posterior(k2, res.params, sample_shape=(n,)))
    derived = Predictive(model, posterior_samples=draws)(k3)  # deterministic sites
    draws.update({k: v for k, v in derived.items() if k not in exclude and k not in draws})
    losses = np.asarray(res.losses)
    w = max(1, len(losses) // 10)
    last, before = losses[-w:].mean(), losses[-2 * w:-w].mean() if len(losses) >= 2 * w else losses[:w].mean()
    rel = float(abs(last - before) / max(abs(before), 1e-12))
    stats = {"elbo_loss": np.full((1, n), float(last))}
    return draws, stats, rel
