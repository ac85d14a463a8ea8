"""Gaussian latent confounders integrated out analytically (NumPyro backend).

The marginal likelihood is checked against numerical integration of the per-unit model, the
reconstructed latent draws against their closed-form conditional, and a full fit against the
instrumental-variable truth of data simulated with NumPy.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import causal_wm as cw
from causal_wm import sites
from causal_wm.design import layouts, marginal_latents
from causal_wm.fitting import make_plan

IV = {"name": "iv", "nodes": {
    "w": {},
    "z": {"family": "bernoulli", "formula": "w"},
    "u": {"latent": True, "formula": "w"},
    "x": {"formula": "z + u + w"},
    "y": {"formula": "x + u + x:w"},
}}


def _iv_data(n, seed, effect=0.3):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n)
    z = rng.binomial(1, 1 / (1 + np.exp(-0.5 * w)))
    u = 0.4 * w + rng.normal(size=n)
    x = 1.0 + 0.8 * z + 0.9 * u + 0.3 * w + 0.7 * rng.normal(size=n)
    y = 0.5 + effect * x + 1.1 * u + 0.1 * x * w + 0.5 * rng.normal(size=n)
    return pd.DataFrame({"w": w, "z": z, "x": x, "y": y})


def test_eligibility_rules():
    scm = cw.SCM.from_dict(IV)
    df = _iv_data(50, 0)
    plan = make_plan(scm, df)
    assert plan.marginal == ("u",)
    # a bernoulli, poisson or negative_binomial child is integrated by quadrature
    d = {"nodes": {**IV["nodes"], "y": {"family": "bernoulli", "formula": "x + u"}}}
    df2 = df.assign(y=(df.y > df.y.median()).astype(int))
    assert make_plan(cw.SCM.from_dict(d), df2).marginal == ("u",)
    # ... but not a student_t or categorical one: the latent stays sampled per unit
    for fam, col in (("student_t", df.y), ("categorical", pd.Series(np.where(df.y > 0, "a", "b")))):
        d = {"nodes": {**IV["nodes"], "y": {"family": fam, "formula": "x + u"}}}
        assert make_plan(cw.SCM.from_dict(d), df.assign(y=col)).marginal == (), fam
    # nor a latent with such a child whose other child has a second latent parent (its conditional
    # would not be its own); that second latent then has a latent parent that is sampled, so neither
    d = {"nodes": {"u": {"latent": True}, "v": {"latent": True}, "x": {"formula": "u + v"},
                   "t": {"family": "bernoulli", "formula": "u"}}}
    assert make_plan(cw.SCM.from_dict(d), df2.assign(t=df2.y)[["x", "t"]]).marginal == ()
    d["nodes"]["t"]["formula"] = "x"  # without the bernoulli child both are integrated out jointly
    assert make_plan(cw.SCM.from_dict(d), df2.assign(t=df2.y)[["x", "t"]]).marginal == ("u", "v")
    # a latent node can opt out; the other is then still integrated out
    d["nodes"]["u"]["marginalize"] = False
    scm4 = cw.SCM.from_dict(d)
    assert scm4.to_dict()["nodes"]["u"]["marginalize"] is False
    assert make_plan(scm4, df2.assign(t=df2.y)[["x", "t"]]).marginal == ()  # v's child x has u, sampled
    # two latents in one column (an interaction) is not linear in them
    d = {"nodes": {"u": {"latent": True}, "v": {"latent": True}, "x": {"formula": "u + v"},
                   "y": {"formula": "x + u:v"}}}
    scm3 = cw.SCM.from_dict(d)
    from causal_wm.data import fit_scales

    assert marginal_latents(scm3, layouts(scm3, fit_scales(scm3, df[["x", "y"]]))) == ()


def test_marginalize_key_is_validated():
    from causal_wm.errors import ModelSpecError

    with pytest.raises(ModelSpecError, match="'marginalize' must be true or false"):
        cw.SCM.from_dict({"nodes": {"u": {"latent": True, "marginalize": "no"}, "x": {"formula": "u"}}})
    with pytest.raises(ModelSpecError, match="node 'x': 'marginalize' applies to latent nodes only"):
        cw.SCM.from_dict({"nodes": {"x": {"marginalize": False}}})


def test_sensitivity_confounder_is_sampled_per_unit_only_beside_a_non_gaussian_node():
    from causal_wm.checks import SENS, confounded_scm

    scm = cw.SCM.from_dict({"nodes": {"w": {}, "t": {"family": "bernoulli", "formula": "w"},
                                      "x": {"formula": "w"}, "y": {"formula": "t + x + w"}}})
    assert confounded_scm(scm, "t", "y", 0.5).node(SENS).marginalize is False
    assert confounded_scm(scm, "x", "y", 0.5).node(SENS).marginalize is True


def _trace(model, params):
    from numpyro import handlers

    return handlers.trace(handlers.substitute(model, data=params)).get_trace()


def _latent_conditional(plain, params, plan, children=("x", "y")):
    """Closed-form N(mean, var) of each unit's u given its Gaussian children, by Bayes' rule on the
    plain model: u ~ N(eta, 1); child c = m_c + a_c u + sigma_c e (m_c and a_c read off traces of the
    plain model at u = 0 and u = 1)."""
    tr0 = _trace(plain, {**params, "u": np.zeros(plan.n)})
    tr1 = _trace(plain, {**params, "u": np.ones(plan.n)})
    eta = np.asarray(tr0["u"]["fn"].loc)
    prec, lin = np.ones(plan.n), eta.copy()
    for c in children:
        m0, m1 = np.asarray(tr0[c]["fn"].loc), np.asarray(tr1[c]["fn"].loc)
        a, s2 = m1 - m0, np.asarray(tr0[c]["fn"].scale) ** 2
        prec += a * a / s2
        lin += a * (plan.values[c] - m0) / s2
    return lin / prec, 1 / prec, tr0


def _prior_draws(n_units: int, data_seed: int, key: int, num_samples: int = 1):
    """The IV model's plan and plain NumPyro model on simulated data, and ``num_samples`` prior draws
    of its parameters (the latent u and the observed nodes left out), one dict per draw."""
    import jax
    from numpyro.infer import Predictive

    from causal_wm.backends.numpyro import _jax, make_model

    _jax()
    scm = cw.SCM.from_dict(IV)
    plan = make_plan(scm, _iv_data(n_units, data_seed))
    plain = make_model(plan, "plain")
    prior = Predictive(plain, num_samples=num_samples)(jax.random.PRNGKey(key))
    draws = [{k: np.asarray(v[i]) for k, v in prior.items() if k not in ("u", *scm.observed)}
             for i in range(num_samples)]
    return plan, plain, draws


def test_marginal_likelihood_matches_numerical_integration():
    from causal_wm.backends.numpyro import make_model

    plan, plain, (params,) = _prior_draws(40, 1, key=3)
    marg = make_model(plan, "marginal", ridge=False)
    tm = _trace(marg, params)
    got = np.asarray(tm[sites.MARGINAL]["fn"].log_prob(tm[sites.MARGINAL]["value"]))
    # adaptive Gauss-Hermite around each unit's conditional mode: integrate p(x, y | u) N(u; eta, 1)
    mu, var, tr0 = _latent_conditional(plain, params, plan)
    sd = np.sqrt(var)
    t, wts = np.polynomial.hermite.hermgauss(40)
    terms = []
    for tk, wk in zip(t, wts, strict=True):
        u = mu + np.sqrt(2.0) * sd * tk
        tr = _trace(plain, {**params, "u": u})
        lp = sum(np.asarray(tr[c]["fn"].log_prob(tr[c]["value"])) for c in ("x", "y", "u"))
        terms.append(np.log(wk) + tk**2 + np.log(np.sqrt(2.0) * sd) + lp)
    terms = np.array(terms)
    top = terms.max(axis=0)
    want = top + np.log(np.exp(terms - top).sum(axis=0))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)
    # the nodes outside the block are unchanged
    tp = tr0
    for s in ("w", "z"):
        np.testing.assert_allclose(np.asarray(tm[s]["fn"].log_prob(tm[s]["value"])),
                                   np.asarray(tp[s]["fn"].log_prob(tp[s]["value"])))


QUAD = {"name": "quad", "nodes": {
    "w": {},
    "u": {"latent": True, "formula": "w"},
    "t": {"family": "bernoulli", "formula": "w + u"},
    "k": {"family": "poisson", "formula": "u + w"},
    "nb": {"family": "negative_binomial", "formula": "u"},
    "y": {"formula": "t + u + w"},
}}


def _quad_setup(n, seed, load):
    """The QUAD model on NumPy-simulated data, a prior draw of its parameters with the latent's
    loadings on its non-Gaussian children set to ``load`` (internal scale), and the plain model."""
    import jax
    from numpyro.infer import Predictive

    from causal_wm.backends.numpyro import _jax, make_model

    _jax()
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n)
    u = 0.5 * w + rng.normal(size=n)
    df = pd.DataFrame({"w": w, "t": rng.binomial(1, 1 / (1 + np.exp(-(w + 1.5 * u)))),
                       "k": rng.poisson(np.exp(0.5 + 0.8 * u)), "nb": rng.negative_binomial(2, 2 / (2 + np.exp(u))),
                       "y": rng.normal(size=n) + u + w})
    scm = cw.SCM.from_dict(QUAD)
    plan = make_plan(scm, df)
    plain = make_model(plan, "plain")
    prior = Predictive(plain, num_samples=1)(jax.random.PRNGKey(seed))
    params = {k: np.asarray(v[0]) for k, v in prior.items() if k not in ("u", *scm.observed)}
    for c in ("t", "k", "nb"):
        j = [col.term for col in plan.layouts[c].columns].index("u")
        params[f"{c}__b"] = params[f"{c}__b"].copy()
        params[f"{c}__b"][j] = load
    return plan, plain, params


def _grid_posterior(plain, params, plan):
    """Per unit, log p(data, u) on a fine grid of u (Simpson's rule integrates it), with SciPy's
    densities; each child's linear predictor is read off the plain model at u = 0 and u = 1."""
    from scipy import stats

    t0, t1 = (_trace(plain, {**params, "u": np.full(plan.n, v)}) for v in (0.0, 1.0))
    grid = np.linspace(-12.0, 12.0, 6001)[:, None]

    def line(f0, f1):  # a child's predictor (logit or log mean) at every grid point
        return f0 + (f1 - f0) * grid

    v = plan.values
    lp = stats.norm.logpdf(grid, np.asarray(t0["u"]["fn"].loc), 1.0)
    lp += stats.bernoulli.logpmf(v["t"], 1 / (1 + np.exp(-line(np.asarray(t0["t"]["fn"].logits),
                                                                np.asarray(t1["t"]["fn"].logits)))))
    lp += stats.poisson.logpmf(v["k"], np.exp(line(np.log(t0["k"]["fn"].rate), np.log(t1["k"]["fn"].rate))))
    phi = float(params["nb__phi"])
    mu = np.exp(line(np.log(t0["nb"]["fn"].mean), np.log(t1["nb"]["fn"].mean)))
    lp += stats.nbinom.logpmf(v["nb"], phi, phi / (phi + mu))
    lp += stats.norm.logpdf(v["y"], line(np.asarray(t0["y"]["fn"].loc), np.asarray(t1["y"]["fn"].loc)),
                            np.asarray(t0["y"]["fn"].scale))
    return grid[:, 0], lp


@pytest.mark.parametrize(("load", "atol"), [(0.3, 1e-10), (2.5, 1e-7), (-4.0, 1e-4)])
def test_quadrature_likelihood_matches_numerical_integration(load, atol):
    """bernoulli, poisson and negative_binomial children of one latent, integrated by adaptive
    Gauss-Hermite, against Simpson's rule on a fine grid of the plain model's joint density. The
    loading is on the internal scale (SDs of the logit or log mean per SD of the latent); the
    measured error at 16 nodes grows with it: 3e-14 at 0.3, 5.4e-8 at 2.5, 3.1e-5 at -4 (1.7e-4 at 6)."""
    from scipy.integrate import simpson

    from causal_wm.backends.numpyro import make_model

    plan, plain, params = _quad_setup(25, 11, load)
    assert plan.marginal == ("u",)
    tm = _trace(make_model(plan, "marginal"), params)
    got = sum(np.asarray(tm[s]["fn"].log_prob(tm[s]["value"])) for s in (sites.MARGINAL, sites.quadrature("u")))
    grid, lp = _grid_posterior(plain, params, plan)
    top = lp.max(axis=0)
    want = top + np.log(simpson(np.exp(lp - top), x=grid, axis=0))
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_quadrature_latent_draws_follow_their_conditional():
    """The Metropolis-Hastings draws of the latent against the mean and variance of its exact
    conditional (computed on a grid), unit by unit, with strong loadings."""
    from scipy.integrate import simpson

    from causal_wm.backends.numpyro import _reconstruct

    plan, plain, params = _quad_setup(12, 12, 2.0)
    S = 6000
    draws = _reconstruct(plan, {k: np.broadcast_to(v, (1, S) + v.shape) for k, v in params.items()}, seed=5)["u"][0]
    grid, lp = _grid_posterior(plain, params, plan)
    dens = np.exp(lp - lp.max(axis=0))
    dens /= simpson(dens, x=grid, axis=0)
    mean = simpson(dens * grid[:, None], x=grid, axis=0)
    var = simpson(dens * (grid[:, None] - mean) ** 2, x=grid, axis=0)
    # the chain's draws are nearly independent (an independence sampler accepting most proposals):
    # plain standard errors, with a 4.5-SE margin for 12 units
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 4.5 * np.sqrt(var / S))
    assert np.all(np.abs(draws.var(axis=0) / var - 1) < 4.5 * np.sqrt(2 / S))


CONFOUNDED = {"name": "sens", "nodes": {
    "w": {},
    "u": {"latent": True},
    "t": {"family": "bernoulli", "formula": "w + u", "priors": {"b[u]": {"dist": "normal", "loc": 0.8, "scale": 0.01}}},
    "y": {"formula": "t + w + u", "priors": {"b[u]": {"dist": "normal", "loc": 0.5, "scale": 0.01}}},
}}


def _sens_data(n, seed, effect=1.0):
    """A confounder u of a binary treatment t and an outcome y, simulated with the loadings CONFOUNDED
    pins (0.8 on t's logit and 0.5 SDs of y per SD of u; y's scale is 1.38 here, so 0.5 * 1.38 raw)."""
    rng = np.random.default_rng(seed)
    w, u = rng.normal(size=n), rng.normal(size=n)
    t = rng.binomial(1, 1 / (1 + np.exp(-(0.3 + 0.6 * w + 0.8 * u))))
    y = 2.0 + effect * t + 0.5 * w + 0.69 * u + 0.9 * rng.normal(size=n)
    return pd.DataFrame({"w": w, "t": t, "y": y})


def _sens_fit(df, marginalize, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cw.IdentificationWarning)
        post = cw.SCM.from_dict(CONFOUNDED).fit(df, marginalize=marginalize, seed=3, **kw)
        return post, post.effect("y", do={"t": 1}, vs={"t": 0})


@pytest.mark.filterwarnings("ignore::causal_wm.errors.ConvergenceWarning")
def test_quadrature_fit_keeps_the_posterior_layout_and_covers_the_effect():
    df = _sens_data(300, 0)
    post, eff = _sens_fit(df, True, chains=2, draws=200, warmup=200)
    assert post.idata.attrs["marginalized_latents"] == ["u"]
    assert post.idata.posterior["u"].shape == (2, 200, 300)
    assert not any(k.startswith("_quadrature") for k in post.idata.posterior)
    assert set(post.idata.log_likelihood.data_vars) == {"w", "t", "y"}
    lo, hi = eff.interval(0.99)
    assert lo < 1.0 < hi


@pytest.mark.slow
def test_quadrature_fit_equals_sampling_the_latent_per_unit():
    """The same model fitted twice, the latent integrated out (bernoulli child by quadrature) and
    sampled per unit: the same posterior, so the effect's and the parameters' posterior means agree
    within their Monte Carlo errors, and both cover the simulated truth."""
    import arviz as az

    df = _sens_data(500, 1)
    fits = {m: _sens_fit(df, m, chains=4, draws=1000, warmup=1000) for m in (True, False)}
    for post, eff in fits.values():
        assert post.ok
        lo, hi = eff.interval(0.95)
        assert lo < 1.0 < hi
    (p1, e1), (p0, e0) = fits[True], fits[False]
    se = np.hypot(e1.mcse(), e0.mcse())
    assert abs(e1.mean() - e0.mean()) < 4.5 * se
    for var in ("t__b", "y__b", "y__sigma"):
        a, b = p1.idata.posterior[var], p0.idata.posterior[var]
        gap = np.abs(a.mean(("chain", "draw")) - b.mean(("chain", "draw")))
        tol = 4.5 * np.hypot(az.mcse(a)[var], az.mcse(b)[var])
        assert bool((gap < tol).all()), (var, gap.values, tol.values)
    # the per-unit latent draws: their posterior means agree unit by unit, up to Monte Carlo error
    ua, ub = p1.idata.posterior["u"], p0.idata.posterior["u"]
    gap = np.abs(ua.mean(("chain", "draw")) - ub.mean(("chain", "draw")))
    tol = 4.5 * np.hypot(az.mcse(ua)["u"], az.mcse(ub)["u"])
    assert float((gap < tol).mean()) > 0.98


@pytest.mark.parametrize("k", [1, 2, 3])
def test_factor_normal_density_equals_the_dense_gaussian(k):
    """The unrolled Woodbury density against scipy's dense N(mean, diag(var) + A A^T), unit by unit,
    and its sampler against that covariance."""
    import jax
    from scipy.stats import multivariate_normal

    from causal_wm.backends.factor_normal import FactorNormal
    from causal_wm.backends.numpyro import _jax

    _jax()
    rng = np.random.default_rng(k)
    n, c = 7, 4
    mean, A = rng.normal(size=(n, c)), rng.normal(size=(n, c, k))
    var, y = rng.uniform(0.2, 2.0, size=c), rng.normal(size=(n, c)) * 2
    got = np.asarray(FactorNormal(mean, A, var).log_prob(y))
    want = [multivariate_normal(mean[i], np.diag(var) + A[i] @ A[i].T).logpdf(y[i]) for i in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    S = 200_000
    x = np.asarray(FactorNormal(mean[:1], A[:1], var).sample(jax.random.PRNGKey(0), (S,)))[:, 0]
    cov = np.diag(var) + A[0] @ A[0].T
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(x.mean(axis=0) - mean[0]) < 4.5 * sd / np.sqrt(S))
    # the sample covariance's entries: SE of a covariance estimate is about sqrt((s_ii s_jj + s_ij^2) / S)
    se = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / S)
    assert np.all(np.abs(np.cov(x.T) - cov) < 4.5 * se)


def test_reconstructed_latents_follow_their_closed_form_conditional():
    from causal_wm.backends.numpyro import _reconstruct

    plan, plain, (params,) = _prior_draws(5, 2, key=4)
    S = 40000
    draws = _reconstruct(plan, {k: np.broadcast_to(v, (1, S) + v.shape) for k, v in params.items()}, seed=9,
                         ridge=False)["u"][0]
    mean, var, _ = _latent_conditional(plain, params, plan)
    se = np.sqrt(var / S)
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 4.5 * se)
    assert np.all(np.abs(draws.var(axis=0) / var - 1) < 4.5 * np.sqrt(2 / S))


def test_ridge_coordinates_give_the_same_posterior():
    """log p(tau, c, t | data) = log p(a, sigma | data) + log|d(a, sigma)/d(tau, c, t)| (finite differences)."""
    from numpyro.infer.util import log_density

    from causal_wm.backends.numpyro import make_model

    plan, _, prior_draws = _prior_draws(30, 4, key=6, num_samples=3)

    def natural(x):
        t1, t2, c, t = x
        r1 = np.sqrt(c**2 + (1 - c**2) * t)
        r2 = c / r1
        return np.array([t1 * r1, t1 * np.sqrt(1 - r1**2), t2 * r2, t2 * np.sqrt(1 - r2**2)])

    for params in prior_draws:
        a1, s1 = float(params["x__b"][1]), float(params["x__sigma"])  # columns of x: z, u, w
        a2, s2 = float(params["y__b"][1]), float(params["y__sigma"])  # columns of y: x, u, x:w
        tau1, tau2 = np.hypot(a1, s1), np.hypot(a2, s2)
        c = (a1 / tau1) * (a2 / tau2)
        t = ((a1 / tau1) ** 2 - c**2) / (1 - c**2)
        x = np.array([tau1, tau2, c, t])
        np.testing.assert_allclose(natural(x), [a1, s1, a2, s2], rtol=1e-10)
        h = 1e-6
        J = np.column_stack([(natural(x + h * e) - natural(x - h * e)) / (2 * h) for e in np.eye(4)])
        coords = {"_ridge_tau": np.array([tau1, tau2]), "_ridge_corr": np.array(c), "_ridge_t": np.array(t),
                  "x__bfree": params["x__b"][[0, 2]], "y__bfree": params["y__b"][[0, 2]]}
        rest = {k: v for k, v in params.items() if not k.startswith(("x__b", "y__b", "x__sigma", "y__sigma"))}
        lp_ridge, tr = log_density(make_model(plan, "marginal"), (), {}, {**rest, **coords})
        lp_plain, _ = log_density(make_model(plan, "marginal", ridge=False), (), {}, params)
        np.testing.assert_allclose(np.asarray(tr["y__b"]["value"]), params["y__b"], rtol=1e-10)
        # without the ridge the sign loading is left free and folded after sampling (a normal prior,
        # half the density of the half-normal the ridge keeps): hence log 2
        np.testing.assert_allclose(float(lp_ridge), float(lp_plain) + np.log(abs(np.linalg.det(J))) + np.log(2.0),
                                   rtol=1e-7)


# few draws keep the default suite fast; convergence at full length is the slow test's job
@pytest.mark.filterwarnings("ignore::causal_wm.errors.ConvergenceWarning")
def test_marginalised_fit_keeps_the_posterior_layout_and_recovers_the_iv_effect():
    df = _iv_data(400, 3, effect=0.3)
    scm = cw.SCM.from_dict(IV)
    post = scm.fit(df, chains=2, draws=250, warmup=250, seed=5, target_accept=0.9)
    assert post.idata.attrs["marginalized_latents"] == ["u"]
    assert post.idata.posterior["u"].shape == (2, 250, 400)
    assert sites.MARGINAL not in post.idata.posterior
    assert set(post.idata.log_likelihood.data_vars) == {"w", "z", "x", "y"}
    # effect of x at w = 0 is 0.3 (plus 0.1 * w on average, E[w] ~ 0): interval from the posterior;
    # identified by the instrument z under linearity, which the effect says
    with pytest.warns(cw.IdentificationWarning, match="only by the instrument z"):
        eff = post.effect("y", do={"x": 1.0}, vs={"x": 0.0})
    lo, hi = eff.interval(0.99)
    truth = 0.3 + 0.1 * df.w.mean()
    assert lo < truth < hi
    # unit-level counterfactuals read the reconstructed latents
    cf = post.counterfactual(units=df.iloc[:3], do={"x": 0.0})
    assert np.all(np.isfinite(cf["y"]))


@pytest.mark.slow
def test_marginalised_iv_fit_converges_on_the_identified_effect():
    """The causal effect is identified (instrument z) and its chains agree. The latent's loadings and
    the noise scales of x and y are not identified one by one (three moments of the (x, y) residuals
    for four parameters): along that ridge the posterior follows the prior and mixes slowly, and the
    fit says so: it is flagged, naming the ridge coordinates, rather than reported as converged."""
    df = _iv_data(1000, 7, effect=0.3)
    scm = cw.SCM.from_dict(IV)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", cw.ConvergenceWarning)
        post = scm.fit(df, chains=2, draws=1000, warmup=1000, seed=1, target_accept=0.9, dense_mass=True)
    d = post.diagnostics()
    assert d.table.loc["y__b[x]", "r_hat"] < 1.01, d.table.loc["y__b[x]"]
    assert d.table.loc["y__b[x]", "ess_bulk"] > 400, d.table.loc["y__b[x]"]
    with pytest.warns(cw.IdentificationWarning, match="only by the instrument z"):  # (under linearity)
        eff = post.effect("y", do={"x": 1.0}, vs={"x": 0.0})
    truth = 0.3 + 0.1 * df.w.mean()
    assert abs(eff.mean() - truth) < 3 * eff.draws.std()
    lo, hi = eff.interval(0.9)
    assert lo < truth < hi
    # whatever the verdict, it is never silent: the warning comes exactly when the fit is not ok
    flagged = [w for w in caught if issubclass(w.category, cw.ConvergenceWarning)]
    assert bool(flagged) == (not post.ok)


def test_fit_settings_for_marginalising_and_dense_mass_are_validated():
    from causal_wm.errors import QueryError
    from causal_wm.fitting import settings

    assert settings(dense_mass=True, marginalize=False).dense_mass
    with pytest.raises(QueryError, match="dense_mass must be true or false"):
        settings(dense_mass="yes")
    with pytest.raises(QueryError, match="marginalize must be true or false"):
        settings(marginalize=1)
    with pytest.raises(QueryError, match="not 'nutpie'"):
        settings("pymc", sampler="nutpie", dense_mass=True)
