"""The NumPyro backend: NUTS (chains in parallel over host devices) or SVI.

The model walks the nodes in topological order and evaluates each mechanism from the shared
layout (:mod:`causal_wm.design`), so its parameters are exactly those the query engine reads.
"""

from __future__ import annotations

import logging

import numpy as np

from causal_wm import sites
from causal_wm.design import column_values, predictor
from causal_wm.idata import build_idata
from causal_wm.jaxhost import start_jax

log = logging.getLogger(__name__)


def _jax():
    # at the first fit, not at import: the host device count is fixed when JAX starts
    jax = start_jax()
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


def make_model(plan, mode: str = "plain", ridge: bool = True):
    """The NumPyro model function of ``plan`` (call it with no arguments).

    ``mode`` says how the latent nodes in ``plan.marginal`` enter: ``"plain"`` samples them per
    unit; ``"marginal"`` integrates them out analytically (their observed children are then
    jointly Gaussian per unit), which is what NUTS samples; ``"reconstruct"`` draws them from
    their exact Gaussian conditional given the data and the other parameters (used with
    :class:`numpyro.infer.Predictive` after the fit, so the posterior holds per-unit draws again).
    ``ridge=False`` keeps the (loading, sigma) parameters of a two-child latent (see ``_ridge``).
    """
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    from causal_wm.backends import latent_quadrature as lq
    from causal_wm.backends.factor_normal import FactorNormal
    from causal_wm.design import GAUSSIAN

    scm, lays, scales = plan.scm, plan.layouts, plan.scales
    data = {k: jnp.asarray(v) for k, v in plan.values.items()}
    n = plan.n
    marginal = tuple(getattr(plan, "marginal", ())) if mode != "plain" else ()
    kids = tuple(c for c in scm.order if any(m in scm.node(c).parents for m in marginal))
    ridge = _ridge(plan, marginal, kids) if ridge else None
    # Gaussian children enter the joint Gaussian; the others are integrated by quadrature, per latent
    children = tuple(c for c in kids if lays[c].family in GAUSSIAN)
    quad = {m: tuple(c for c in kids if m in scm.node(c).parents and lays[c].family not in GAUSSIAN)
            for m in marginal}
    quad = {m: cs for m, cs in quad.items() if cs}
    # integrated out, a latent's likelihood is symmetric under a flip of its sign, so its sign-fixing
    # loading is left free (a positive constraint there traps chains in a mirror mode at 0) and the
    # draws are folded after sampling (_fold); the two-child ridge fixes the sign by construction
    folded = set() if ridge else {ci for m in marginal for ci in _sign_column(plan, m)}

    def coefficients(node, lay, fixed=None):
        name = lay.name
        T = len(lay.columns)
        if T == 0:
            return None
        shape = (lay.n_eta, T) if lay.n_levels else (T,)
        pos = tuple(i for i in plan.positive.get(name, ()) if (name, i) not in folded)
        term_labels = [c.term for c in lay.columns]
        if fixed is not None:  # one loading comes from the ridge parameterisation below
            j, value = fixed
            free = [i for i in range(T) if i != j]
            b = jnp.zeros(T).at[j].set(value)
            if free:
                bf = numpyro.sample(
                    f"{name}__bfree", _stack_priors(node, [term_labels[i] for i in free], "b").to_event(1)
                )
                b = b.at[jnp.array(free)].set(bf)
            if j in pos:
                numpyro.deterministic(f"{name}__bpos", jnp.reshape(value, (1,)))
            return numpyro.deterministic(sites.coef(name), b)
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

    def parameters(node, lay, fixed=None) -> dict:
        name = lay.name
        p = {"b": coefficients(node, lay, fixed and fixed[:2]), "a": None, "re": (), "extra": {}}
        if lay.n_levels:
            p["a"] = numpyro.sample(
                sites.intercept(name), prior_dist(node.prior("intercept"), (lay.n_eta,)).to_event(1)
            )
            return p
        if lay.intercept:
            p["a"] = numpyro.sample(sites.intercept(name), prior_dist(node.prior("intercept")))
        res = []
        for blk in lay.groups:
            sd = numpyro.sample(
                sites.group_sd(name, blk.group), _stack_priors(node, blk.prior_labels, "sd").to_event(1)
            )
            z = numpyro.sample(
                sites.group_raw(name, blk.group),
                dist.Normal(0.0, 1.0).expand((len(blk.levels), len(blk.columns))).to_event(2),
            )
            res.append((blk, numpyro.deterministic(sites.group_effect(name, blk.group), z * sd)))
        p["re"] = tuple(res)
        if not lay.latent:
            p["extra"] = {q: numpyro.deterministic(sites.extra(name, q), fixed[2]) if fixed and q == "sigma"
                          else numpyro.sample(sites.extra(name, q), prior_dist(node.prior(q)))
                          for q in node.fam.extra}
        return p


    def ridge_parameters() -> dict:
        """Loadings and noise SDs of a two-child latent, from coordinates aligned with its ridge.

        The data fix each child's residual SD ``tau`` and the residual correlation ``c`` but not how
        ``c = rho1 * rho2`` splits between the two loadings' shares ``rho = a / tau``. Sampling
        ``(tau1, tau2, c, t)``, with ``t`` moving along that unidentified direction, turns a thin
        curved ridge in (loading, sigma) space into straight axes. The model's own priors on the
        loadings and sigmas are kept exactly by adding them and the log-Jacobian of the map.
        """
        import jax

        (c1, j1), (c2, j2) = ridge
        tau = numpyro.sample("_ridge_tau", dist.ImproperUniform(dist.constraints.positive, (), (2,)))
        corr = numpyro.sample("_ridge_corr", dist.ImproperUniform(dist.constraints.interval(-1.0, 1.0), (), ()))
        t = numpyro.sample("_ridge_t", dist.ImproperUniform(dist.constraints.unit_interval, (), ()))

        def to_natural(x):
            t1, t2, cc, tt = x
            r1 = jnp.sqrt(cc**2 + (1 - cc**2) * tt)  # rho1^2 in (c^2, 1): rho1 > 0 is the sign convention
            r2 = cc / r1
            return jnp.stack([t1 * r1, t1 * jnp.sqrt(1 - r1**2), t2 * r2, t2 * jnp.sqrt(1 - r2**2)])

        x = jnp.stack([tau[0], tau[1], corr, t])
        a1, s1, a2, s2 = to_natural(x)
        n1, n2 = scm.node(c1), scm.node(c2)
        l1, l2 = lays[c1].columns[j1].term, lays[c2].columns[j2].term
        logp = (
            dist.HalfNormal(n1.prior("b", l1).kwargs.get("scale", 1.0)).log_prob(a1)
            + prior_dist(n1.prior("sigma")).log_prob(s1)
            + prior_dist(n2.prior("b", l2)).log_prob(a2)
            + prior_dist(n2.prior("sigma")).log_prob(s2)
            + jnp.linalg.slogdet(jax.jacfwd(to_natural)(x))[1]
        )
        numpyro.factor("_ridge_prior", logp)
        return {c1: (j1, a1, s1), c2: (j2, a2, s2)}

    def eta_of(name, p, vals):
        """The linear predictor of a non-categorical node given its parents' values."""
        lay = lays[name]
        pred = predictor({q: vals[q] for q in scm.node(name).parents}, scales)
        eta = jnp.zeros(n)
        if p["a"] is not None:
            eta = eta + p["a"]
        if p["b"] is not None:
            X = jnp.stack([column_values(c, pred) for c in lay.columns], axis=-1)
            eta = eta + X @ p["b"]
        for blk, re in p["re"]:
            g = data[blk.group].astype(jnp.int32)
            for j, c in enumerate(blk.columns):
                col = 1.0 if not c.factors else column_values(c, pred)
                eta = eta + re[g, j] * col
        return eta

    def latent_block(params, vals):
        """Children of the marginalised latents: conditional means and loadings, per unit.

        Every child is linear in each latent (checked when the plan is made), so evaluating its
        predictor with the latents at 0 and at unit vectors gives the mean and the loadings exactly.
        """
        etas = jnp.stack([eta_of(m, params[m], vals) for m in marginal], axis=-1)  # (n, k)
        if not children:
            return etas, None, None, None, None
        at0 = {**vals, **{m: jnp.zeros(n) for m in marginal}}
        base, load = [], []
        for c in children:
            m0 = eta_of(c, params[c], at0)
            base.append(m0)
            load.append(jnp.stack([eta_of(c, params[c], {**at0, m: jnp.ones(n)}) - m0 for m in marginal],
                                  axis=-1))
        A = jnp.stack(load, axis=1)  # (n, |children|, k)
        mean = jnp.stack(base, axis=-1) + jnp.einsum("nck,nk->nc", A, etas)
        var = jnp.stack([params[c]["extra"]["sigma"] ** 2 for c in children])
        y = jnp.stack([data[c] for c in children], axis=-1)
        return etas, A, mean, var, y

    def quadrature_block(m, params, vals, etas, A, mean, var, y):
        """Latent ``m``'s Gaussian conditional given its Gaussian children (``loc``, ``sd``; by
        eligibility they load on ``m`` alone) and its other children as ``latent_quadrature.Child``."""
        j = marginal.index(m)
        loc, prec = etas[:, j], jnp.ones(n)
        if children:
            a = A[:, :, j]  # zero for the children of the other latents
            prec = prec + jnp.sum(a * a / var, axis=-1)
            loc = loc + jnp.sum(a * (y - mean) / var, axis=-1) / prec
        at0 = {**vals, m: jnp.zeros(n)}
        kids_m = []
        for c in quad[m]:
            base = eta_of(c, params[c], at0)
            load = eta_of(c, params[c], {**at0, m: jnp.ones(n)}) - base
            kids_m.append(lq.Child(lays[c].family, data[c], base, load, scales[c].offset,
                                   params[c]["extra"].get("phi")))
        return loc, 1.0 / jnp.sqrt(prec), kids_m

    def model():
        fixed = ridge_parameters() if ridge else {}
        params = {name: parameters(scm.node(name), lays[name], fixed.get(name)) for name in scm.order}
        # observed nodes enter their children as data, so every parent value is known up front
        vals: dict = {name: data[name] for name in scm.observed}
        if marginal:
            etas, A, mean, var, y = latent_block(params, vals)
            with numpyro.plate(sites.UNIT, n):
                if mode == "marginal":
                    if children:
                        numpyro.sample(sites.MARGINAL, FactorNormal(mean, A, var), obs=y)
                    for m in quad:
                        loc, sd, kids_m = quadrature_block(m, params, vals, etas, A, mean, var, y)
                        numpyro.factor(sites.quadrature(m), lq.log_integral(loc, sd, kids_m))
                elif children:  # reconstruct: the exact conditional of the latents given the Gaussian children
                    At = jnp.swapaxes(A, 1, 2) / var  # (n, k, |children|)
                    prec = jnp.eye(len(marginal)) + At @ A
                    loc = etas + jnp.linalg.solve(prec, (At @ (y - mean)[..., None]))[..., 0]
                    u = numpyro.sample(sites.MARGINAL, dist.MultivariateNormal(loc, precision_matrix=prec))
                else:
                    u = numpyro.sample(sites.MARGINAL, dist.Normal(etas, 1.0).to_event(1))
            if mode == "reconstruct":
                for j, m in enumerate(marginal):
                    if m in quad:  # its non-Gaussian children too: a Metropolis-Hastings chain per unit
                        loc, sd, kids_m = quadrature_block(m, params, vals, etas, A, mean, var, y)
                        shape = (lq.STEPS + 1, n)
                        t = numpyro.sample(sites.quadrature(m) + "_t", dist.StudentT(4.0).expand(shape).to_event(2))
                        v = numpyro.sample(sites.quadrature(m) + "_u", dist.Uniform().expand(shape).to_event(2))
                        numpyro.deterministic(m, lq.draw(loc, sd, kids_m, t, jnp.log(v)))
                    else:
                        numpyro.deterministic(m, u[:, j])
        for name in scm.order:
            if name in marginal or name in kids:  # their likelihood is the joint one above
                continue
            lay, p = lays[name], params[name]
            if lay.n_levels:
                b, a = p["b"], p["a"]
                if b is not None:
                    pred = predictor({q: vals[q] for q in scm.node(name).parents}, scales)
                    X = jnp.stack([column_values(c, pred) for c in lay.columns], axis=-1)
                    logits = jnp.concatenate([jnp.zeros((n, 1)), a + X @ b.T], axis=-1)
                else:  # a root: one row of logits, broadcast by the plate (no (n, K) array per gradient)
                    logits = jnp.concatenate([jnp.zeros(1), a])
                if name in plan.missing:  # a categorical leaf with missing values: summed out
                    _observe_missing(plan, name, dist.Categorical(logits=logits), data[name], None, jnp.int32)
                    continue
                with numpyro.plate(sites.UNIT, n):
                    numpyro.sample(name, dist.Categorical(logits=logits), obs=data[name].astype(jnp.int32))
                continue
            eta = eta_of(name, p, vals)
            fam, extra = lay.family, p["extra"]
            if lay.latent:
                with numpyro.plate(sites.UNIT, n):
                    vals[name] = numpyro.sample(name, dist.Normal(eta, 1.0))
                continue
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
            if name in plan.missing:  # `missing: impute`: children read the vector with the imputed values
                vals[name] = _observe_missing(plan, name, d, data[name], _missing_prior(fam, eta, extra))
                continue
            with numpyro.plate(sites.UNIT, n):
                numpyro.sample(name, d, obs=data[name])

    return model


def _missing_prior(fam, eta, extra):
    """The node's own mechanism at the given rows, as the prior of its missing values (continuous
    families; ``None`` for discrete ones, which NUTS cannot sample)."""
    import numpyro.distributions as dist

    if fam in ("normal", "lognormal"):  # lognormal: normal on the standardised log scale
        return lambda idx: dist.Normal(eta[idx], extra["sigma"]).to_event(1)
    if fam == "student_t":
        return lambda idx: dist.StudentT(extra["nu"], eta[idx], extra["sigma"]).to_event(1)
    return None


def _observe_missing(plan, name, d, obs, prior, cast=None):
    """Observe node ``name`` where it was observed and return its values for its children.

    The rows ``plan.missing[name]`` are masked out of the likelihood. With a ``prior`` (continuous
    families) their values are parameters, site ``<name>__missing``, drawn from the node's own
    mechanism and placed into the returned vector, so everything downstream sees them and the
    children's likelihood informs them. Without one (a discrete leaf), the masked entries are summed
    out exactly — their probabilities sum to one — and the queries draw them after the fit.
    """
    import jax.numpy as jnp
    import numpyro

    idx = jnp.asarray(plan.missing[name])
    # a finite placeholder: NaN under a mask still poisons gradients (0 * NaN)
    full = jnp.where(jnp.isnan(obs), 0.0, obs)
    if prior is not None:
        full = full.at[idx].set(numpyro.sample(sites.missing(name), prior(idx)))
    seen = jnp.ones(plan.n, dtype=bool).at[idx].set(False)
    with numpyro.plate(sites.UNIT, plan.n), numpyro.handlers.mask(mask=seen):
        numpyro.sample(name, d, obs=full if cast is None else full.astype(cast))
    return full


def sample(plan, s):
    """Fit ``plan`` with settings ``s``; return an InferenceData."""
    jax = _jax()
    from numpyro.infer import MCMC, NUTS, log_likelihood

    from causal_wm.seeding import stream

    marginal = bool(plan.marginal) and s.marginalize
    model = make_model(plan, "marginal" if marginal else "plain")
    key = jax.random.PRNGKey(stream(s.seed, "fit") % (2**31))
    trend = None
    if s.method == "svi":
        samples, stats, trend = _svi(model, key, s, exclude={*plan.scm.observed, sites.MARGINAL, "_ridge_prior",
                                                              *map(sites.quadrature, plan.marginal)})
        samples = {k: v[None] for k, v in samples.items()}
    else:
        method = "parallel" if jax.local_device_count() >= s.chains else "sequential"
        if method == "sequential" and s.chains > 1:
            # XLA compiles the two ways differently, so a seed's draws differ between them: say so
            log.warning("%d chains ran one after another: JAX has %d host devices (it was started before "
                        "causal_wm set its count, or there are more chains than %d), so this seed's draws "
                        "differ from a run with the chains in parallel. Import causal_wm before jax, or set "
                        "XLA_FLAGS=--xla_force_host_platform_device_count=%d.", s.chains,
                        jax.local_device_count(), jax.local_device_count(), s.chains)
        chain_method = method
        mcmc = MCMC(
            NUTS(model, target_accept_prob=s.target_accept, dense_mass=s.dense_mass),
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
    if marginal:
        samples = _fold(plan, samples)
        samples.update(_reconstruct(plan, samples, stream(s.seed, "latent") % (2**31)))
        model = make_model(plan)  # per-node likelihoods given the drawn latents, as without marginalising
    loglik = None
    n_obs = len(plan.scm.observed)
    if C * D * plan.n * n_obs <= 5e7:
        flat = {k: v.reshape((C * D,) + v.shape[2:]) for k, v in samples.items()}
        ll = log_likelihood(model, flat)
        loglik = {k: np.asarray(v).reshape(C, D, plan.n) for k, v in ll.items()}
    else:
        log.info("log_likelihood skipped: %d draws x %d units is too large to store", C * D, plan.n)
    idata = build_idata(plan, samples, stats, loglik, s)
    if marginal:
        idata.attrs["marginalized_latents"] = list(plan.marginal)
    # every fit traces a new model, so its compiled code is never reused; without this a process
    # that fits many models (a test run, a sensitivity sweep) keeps ~40 MB per fit mapped
    jax.clear_caches()
    if trend is not None:
        idata.attrs.update(trend)
    if s.method != "svi":
        idata.attrs["chain_method"] = chain_method  # part of what a seed's numbers depend on
    return idata


def _sign_column(plan, lat) -> list[tuple[str, int]]:
    """``[(child, column)]``: the loading that fixes the sign of latent ``lat`` (see design.positive_columns)."""
    from causal_wm.design import NUMERIC

    return [(c, i) for c, idx in plan.positive.items() for i in idx
            if plan.layouts[c].columns[i].factors == ((lat, NUMERIC),)]


def _fold(plan, samples: dict) -> dict:
    """Flip, draw by draw, every marginalised latent whose sign-fixing loading came out negative.

    Flipping a latent's sign together with its own coefficients and every loading on it leaves the
    marginal likelihood and the (symmetric) priors unchanged, so folding the draws gives the posterior
    under the positive sign convention. The plain model's site names (``bpos``/``bfree``) are filled
    in so that per-node likelihoods can be computed with it.
    """
    samples = dict(samples)
    ridge = _ridge(plan, plan.marginal, tuple(
        c for c in plan.scm.order if any(m in plan.scm.node(c).parents for m in plan.marginal)))
    if ridge:
        return samples
    for lat in plan.marginal:
        cols = _sign_column(plan, lat)
        if not cols:
            continue
        c0, j0 = cols[0]
        sign = np.where(samples[sites.coef(c0)][..., j0] < 0, -1.0, 1.0)  # (chain, draw)

        def flip(key, axis_cols=None, _sign=sign):
            v = np.array(samples[key], dtype=float)
            sg = _sign.reshape(_sign.shape + (1,) * (v.ndim - 2))
            if axis_cols is None:
                v = v * sg
            else:
                v[..., axis_cols] = v[..., axis_cols] * sg
            samples[key] = v

        lay = plan.layouts[lat]
        if lay.columns:
            flip(sites.coef(lat))
        for blk in lay.groups:
            flip(sites.group_effect(lat, blk.group))
            flip(sites.group_raw(lat, blk.group))
        for c in plan.scm.graph.successors(lat):
            cl = plan.layouts[c]
            js = [j for j, col in enumerate(cl.columns) if any(f[0] == lat for f in col.factors)]
            if js:
                flip(sites.coef(c), js)
            for blk in cl.groups:
                gj = [j for j, col in enumerate(blk.columns) if any(f[0] == lat for f in col.factors)]
                if gj:
                    flip(sites.group_effect(c, blk.group), gj)
                    flip(sites.group_raw(c, blk.group), gj)
    for c, pos in plan.positive.items():
        b = samples[sites.coef(c)]
        free = [i for i in range(b.shape[-1]) if i not in pos]
        samples[f"{c}__bpos"] = b[..., list(pos)]
        if free:
            samples[f"{c}__bfree"] = b[..., free]
    return samples


def _ridge(plan, marginal, children):
    """``((child1, column), (child2, column))`` where one marginalised latent has exactly two children.

    Applies when each child loads on the latent through one main-effect column only, the first
    child's loading carries the positive sign convention, and the priors are the default kinds
    (the user has not pinned the loading with a prior of their own, as a sensitivity analysis does).
    """
    from causal_wm.design import GAUSSIAN, NUMERIC

    if len(marginal) != 1 or len(children) != 2:
        return None
    if any(plan.layouts[c].family not in GAUSSIAN for c in children):
        return None  # the ridge is one of two Gaussian children's noise; a discrete child identifies it
    lat = marginal[0]
    out = []
    for k, c in enumerate(children):
        lay = plan.layouts[c]
        idx = [i for i, col in enumerate(lay.columns) if any(f[0] == lat for f in col.factors)]
        if len(idx) != 1 or lay.columns[idx[0]].factors != ((lat, NUMERIC),):
            return None
        if any(f[0] == lat for blk in lay.groups for col in blk.columns for f in col.factors):
            return None
        if (idx[0] in plan.positive.get(c, ())) != (k == 0):
            return None
        out.append((c, idx[0]))
    return tuple(out)


def _reconstruct(plan, samples: dict, seed: int, ridge: bool = True) -> dict:
    """Per-unit draws of the marginalised latents from their exact conditional, one per posterior draw."""
    import jax
    from numpyro.infer import Predictive

    C, D = next(iter(samples.values())).shape[:2]
    flat = {k: v.reshape((C * D,) + v.shape[2:]) for k, v in samples.items()}
    # not parallel: Predictive maps over the draws one at a time, so temporaries stay per draw
    out = Predictive(make_model(plan, "reconstruct", ridge), posterior_samples=flat, return_sites=list(plan.marginal))(
        jax.random.PRNGKey(seed))
    return {m: np.asarray(out[m]).reshape(C, D, plan.n) for m in plan.marginal}


def _svi(model, key, s, exclude):
    import jax
    from numpyro.infer import SVI, Predictive, Trace_ELBO, autoguide
    from numpyro.optim import Adam

    from causal_wm.diagnostics import loss_trend

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
    losses = np.asarray(res.losses, dtype=float)
    stats = {"elbo_loss": np.full((1, n), float(losses[-max(1, len(losses) // 10):].mean()))}
    return draws, stats, loss_trend(losses)
