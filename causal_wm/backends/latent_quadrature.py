"""A one-dimensional latent integrated out of its non-Gaussian children, unit by unit.

A latent ``u ~ N(eta, 1)`` with Gaussian children is Gaussian given them (``N(loc, sd^2)``, by
Bayes' rule). Its other children (bernoulli, poisson, negative_binomial), linear in ``u`` on the
link scale, leave a one-dimensional integral per unit,

    log p(y_N) = log  integral  N(u; loc, sd^2)  prod_c p(y_c | base_c + load_c u)  du,

which is computed by *adaptive* Gauss-Hermite quadrature (as in lme4's ``nAGQ``): in
``z = (u - loc) / sd`` the integrand ``exp(g(z))`` is log-concave for these families, a few
Newton steps find its mode ``z0`` and curvature ``s0 = (-g''(z0))^(-1/2)``, and the nodes are
placed at ``z0 + sqrt(2) s0 x_k``. Everything is elementwise over units and differentiable, so NUTS
samples only the parameters.

After the fit, each posterior draw gets per-unit values of ``u`` from the same conditional, by an
independence Metropolis-Hastings chain that proposes from a Student-t (4 degrees of freedom)
centred at the mode with 1.25 times its scale: heavier-tailed than the target, so the chain
forgets its start geometrically fast.
"""

from __future__ import annotations

import math

import numpy as np

from causal_wm.design import QUADRATURE
from causal_wm.jaxhost import start_jax

# JAX must start through start_jax (see causal_wm.backends.factor_normal)
jax = start_jax()

import jax.numpy as jnp  # noqa: E402
from jax.scipy.special import gammaln  # noqa: E402

__all__ = ["FAMILIES", "Child", "draw", "log_integral", "mode"]

#: families whose children can be integrated over (log-concave in their linear predictor)
FAMILIES = QUADRATURE
NODES = 16  # Gauss-Hermite nodes (accuracy: tests/test_marginal.py)
NEWTON = 200  # at most this many Newton steps from the Gaussian conditional's mean to the mode
STEPS = 32  # Metropolis-Hastings steps per unit and draw (after the first proposal)
_X, _W = np.polynomial.hermite.hermgauss(NODES)
_LOG_W = np.log(_W) + _X**2


class Child:
    """One non-Gaussian child of the latent: its family, observed values and linear predictor
    ``base + load * u`` per unit (``offset`` and ``phi`` for the count families)."""

    def __init__(self, family: str, y, base, load, offset: float = 0.0, phi=None):
        if family not in FAMILIES:
            raise ValueError(f"family {family!r} cannot be integrated over; expected one of {FAMILIES}")
        self.family, self.y, self.base, self.load = family, y, base, load
        self.offset, self.phi = offset, phi

    def log_prob(self, eta):
        """``log p(y | eta)``, elementwise (``y`` broadcast against ``eta``)."""
        y = self.y
        if self.family == "bernoulli":  # y eta - log(1 + e^eta), as one softplus
            return -jax.nn.softplus(jnp.where(y > 0.5, -eta, eta))
        return self.terms(eta)[0]

    def terms(self, eta):
        """``(log p(y | eta), d/deta, d2/deta2)``, elementwise."""
        y = self.y
        if self.family == "bernoulli":
            p = jax.nn.sigmoid(eta)
            return y * eta - jax.nn.softplus(eta), y - p, -p * (1.0 - p)
        log_mu = self.offset + eta
        if self.family == "poisson":
            mu = jnp.exp(log_mu)
            return y * log_mu - mu - gammaln(y + 1.0), y - mu, -mu
        # negative binomial (mean mu, concentration phi), in logs so that no 0 * log 0 appears
        phi, log_phi = self.phi, jnp.log(self.phi)
        log_sum = jnp.logaddexp(log_phi, log_mu)  # log(phi + mu)
        frac = jax.nn.sigmoid(log_mu - log_phi)  # mu / (phi + mu)
        logp = (gammaln(y + phi) - gammaln(phi) - gammaln(y + 1.0) + phi * (log_phi - log_sum)
                + y * (log_mu - log_sum))
        return logp, y - (y + phi) * frac, -(y + phi) * frac * (1.0 - frac)


def _g(z, loc, sd, children, derivatives=True):
    """log of the integrand in z = (u - loc) / sd (up to the constant -log(2 pi) / 2), and (with
    ``derivatives``) its first and second derivatives. ``loc``, ``sd`` and the children's arrays
    broadcast against ``z``."""
    g, g1, g2 = -0.5 * z * z, -z, -1.0
    for c in children:
        slope = sd * c.load
        eta = c.base + c.load * (loc + sd * z)
        if not derivatives:
            g = g + c.log_prob(eta)
            continue
        lp, d1, d2 = c.terms(eta)
        g, g1, g2 = g + lp, g1 + slope * d1, g2 + slope * slope * d2
    return g, g1, g2


def mode(loc, sd, children):
    """Per unit, the integrand's mode ``z0`` (in units of ``sd`` from ``loc``) and scale ``s0``.

    Newton's method on a log-concave function whose second derivative is at most -1, with steps
    capped at 4 so that a steep count likelihood cannot throw an iterate far away, until every
    unit's step is below 1e-7 (at most ``NEWTON`` steps). The mode only places the nodes: any
    centre gives the same integral up to the quadrature's error, so no gradient flows through the
    search (reverse-mode differentiation cannot pass a while-loop); ``s0`` is differentiated.
    """
    loc, sd = jax.lax.stop_gradient(loc), jax.lax.stop_gradient(sd)
    fixed = [Child(c.family, c.y, *map(jax.lax.stop_gradient, (c.base, c.load, c.offset)),
                   None if c.phi is None else jax.lax.stop_gradient(c.phi)) for c in children]

    def newton(state):
        z, _, i = state
        _, g1, g2 = _g(z, loc, sd, fixed)
        step = jnp.clip(g1 / g2, -4.0, 4.0)
        return z - step, jnp.max(jnp.abs(step)), i + 1

    def going(state):
        return (state[1] > 1e-7) & (state[2] < NEWTON)

    z, _, _ = jax.lax.while_loop(going, newton, (jnp.zeros_like(loc), jnp.asarray(jnp.inf, loc.dtype), 0))
    z = jax.lax.stop_gradient(z)
    _, _, g2 = _g(z, loc, sd, children)
    return z, 1.0 / jnp.sqrt(-g2)


def log_integral(loc, sd, children):
    """``log integral N(u; loc, sd^2) prod_c p(y_c | base_c + load_c u) du`` per unit.

    Examples
    --------
    >>> import numpy as np
    >>> c = Child("bernoulli", np.array([1.0]), np.array([0.0]), np.array([0.0]))
    >>> round(float(log_integral(np.zeros(1), np.ones(1), [c])[0]), 6)  # a fair coin: log 1/2
    -0.693147
    """
    z0, s0 = mode(loc, sd, children)
    z = z0[:, None] + math.sqrt(2.0) * s0[:, None] * _X  # (units, nodes): XLA runs this layout faster
    col = [Child(c.family, c.y[:, None], c.base[:, None], c.load[:, None], c.offset,
                 None if c.phi is None else c.phi) for c in children]
    g, _, _ = _g(z, loc[:, None], sd[:, None], col, derivatives=False)
    # integral of exp(g) N(0,1)-normalised: sqrt(2) s0 / sqrt(2 pi) sum_k w_k e^{x_k^2} exp(g(z_k))
    return jnp.log(s0) - 0.5 * math.log(math.pi) + jax.nn.logsumexp(_LOG_W + g, axis=1)


def draw(loc, sd, children, t_draws, log_uniforms):
    """Per-unit draws of ``u`` from ``N(loc, sd^2) prod_c p(y_c | u)`` (normalised).

    ``t_draws`` are standard Student-t(4) draws and ``log_uniforms`` logs of uniform draws, both of
    shape (STEPS + 1, units): the first proposal starts the chain, each later one is accepted with
    the Metropolis-Hastings probability.
    """
    z0, s0 = mode(loc, sd, children)
    scale = 1.25 * s0

    def log_weight(t):  # log target - log proposal, at z = z0 + scale * t (constants dropped)
        g, _, _ = _g(z0 + scale * t, loc, sd, children, derivatives=False)
        return g + 2.5 * jnp.log1p(t * t / 4.0)

    def step(state, xs):
        t, lw = state
        t_new, log_u = xs
        lw_new = log_weight(t_new)
        take = log_u < lw_new - lw
        return (jnp.where(take, t_new, t), jnp.where(take, lw_new, lw)), None

    start = (t_draws[0], log_weight(t_draws[0]))
    (t, _), _ = jax.lax.scan(step, start, (t_draws[1:], log_uniforms[1:]))
    return loc + sd * (z0 + scale * t)
