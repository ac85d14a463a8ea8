"""The joint Gaussian of a unit's observed children once its Gaussian latents are integrated out.

With k latents ``u ~ N(eta, I)`` and children ``y_c = m_c + A_c u + sigma_c e_c``, each unit's
children are ``N(m + A eta, diag(sigma^2) + A A^T)``: a factor-analysis covariance. NumPyro's
``LowRankMultivariateNormal`` computes the same density, but through batched k x k linear algebra
that XLA runs slowly on the CPU for thousands of tiny matrices (Card's schooling model, 3,010 units,
one latent: 1.58 ms per gradient against 0.28 ms for the model with the latent sampled per unit).
Here the Woodbury identity is written out over the k (small) latents, so every operation is
elementwise over units:

    y' S^-1 y = r' D^-1 r - |L^-1 b|^2,  log det S = log det D + 2 sum log diag L,

with ``r = y - mean``, ``D = diag(sigma^2)``, ``b = A' D^-1 r`` and ``L`` the Cholesky factor of the
capacitance ``C = I + A' D^-1 A``, unrolled because k is small (k(k+1)/2 arrays of units).
"""

from __future__ import annotations

import math
from typing import ClassVar

from causal_wm.jaxhost import start_jax

# JAX must start through start_jax, which first sets the host device count that parallel chains
# need: importing this module (a doctest collection, say) before any fit must not start it bare
jax = start_jax()

import jax.numpy as jnp  # noqa: E402
from numpyro.distributions import Distribution, constraints  # noqa: E402

__all__ = ["FactorNormal"]


class FactorNormal(Distribution):
    """Per unit, ``N(mean, diag(var) + A A^T)`` with ``A`` of shape (units, children, k).

    Parameters
    ----------
    mean : array (units, children)
    A : array (units, children, k)
        Loadings of each child on each latent (the latents have unit variance).
    var : array (children,) or (units, children)
        The children's own noise variances.

    Examples
    --------
    >>> import numpy as np
    >>> d = FactorNormal(np.zeros((1, 2)), np.ones((1, 2, 1)), np.ones(2))
    >>> round(float(d.log_prob(np.zeros((1, 2)))[0]), 6)  # N(0, [[2, 1], [1, 2]]) at 0: -(log 3 + 2 log 2 pi) / 2
    -2.387183
    """

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    reparametrized_params: ClassVar[list] = ["loc", "loadings", "noise_var"]

    def __init__(self, mean, A, var, *, validate_args=None):
        self.loc = jnp.asarray(mean)
        self.loadings = jnp.asarray(A)
        self.noise_var = jnp.broadcast_to(jnp.asarray(var), self.loc.shape)
        super().__init__(batch_shape=self.loc.shape[:-1], event_shape=self.loc.shape[-1:],
                         validate_args=validate_args)

    @property
    def mean(self):
        return self.loc

    def sample(self, key, sample_shape=()):
        k1, k2 = jax.random.split(key)
        shape = sample_shape + self.batch_shape
        u = jax.random.normal(k1, shape + self.loadings.shape[-1:])
        e = jax.random.normal(k2, shape + self.event_shape)
        return self.loc + jnp.einsum("...ck,...k->...c", self.loadings, u) + jnp.sqrt(self.noise_var) * e

    def log_prob(self, value):
        k = self.loadings.shape[-1]
        r = value - self.loc
        w = r / self.noise_var
        cols = [self.loadings[..., j] for j in range(k)]  # each (..., children)
        b = [jnp.sum(c * w, axis=-1) for c in cols]
        # the capacitance C = I + A' D^-1 A, its Cholesky factor L and z = L^-1 b, entry by entry
        L: dict = {}
        z = []
        logdet = jnp.sum(jnp.log(self.noise_var), axis=-1)
        for i in range(k):
            for j in range(i + 1):
                s = jnp.sum(cols[i] * cols[j] / self.noise_var, axis=-1) + (1.0 if i == j else 0.0)
                s = s - sum((L[i, m] * L[j, m] for m in range(j)), 0.0)
                L[i, j] = jnp.sqrt(s) if i == j else s / L[j, j]
            z.append((b[i] - sum((L[i, m] * z[m] for m in range(i)), 0.0)) / L[i, i])
            logdet = logdet + 2.0 * jnp.log(L[i, i])
        quad = jnp.sum(r * w, axis=-1) - sum((zi * zi for zi in z), 0.0)
        return -0.5 * (quad + logdet + self.event_shape[0] * math.log(2 * math.pi))
