"""VAE objectives on a batch ``x (B, D)``, as pure functions ``-> (loss, per-image bound (B,))``.

- :func:`elbo`: ``E_q[log p(x|z)] - beta * E_q[log q(z|x) - log p(z)]`` with one draw per
  image; ``beta`` rises from 0 to 1 during KL warm-up (Bowman et al. 2016; Sonderby et al.
  2016). The per-image bound returned is the true ELBO (``beta = 1``).
- :func:`iwae`: ``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` (Burda et al. 2015).

With the same ``key``, ``iwae(k=1)`` and ``elbo`` use the same draws, so their bounds
are equal.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def log_weights(model, x, key, k: int):
    """``(log p(x|z), log p(z), log q(z|x))`` each ``(B, k)`` for a batch ``x (B, D)``."""
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda xi, ki: model.log_weights(xi, ki, k))(x, keys)


def elbo(model, x, key, beta=1.0):
    """The ELBO with KL weight ``beta``: ``(loss, bound)``, the loss (mean over the batch, to minimise) and
    the per-image bound with ``beta = 1`` ``(B,)``."""
    lpx, lpz, lq = log_weights(model, x, key, 1)
    bound = (lpx + lpz - lq)[:, 0]
    loss = -jnp.mean(lpx[:, 0] - beta * (lq[:, 0] - lpz[:, 0]))
    return loss, bound


def iwae(model, x, key, k: int = 5):
    """The IWAE bound with ``k`` samples (Burda et al. 2015): ``(loss, bound)`` as for :func:`elbo`."""
    lpx, lpz, lq = log_weights(model, x, key, k)
    bound = jax.nn.logsumexp(lpx + lpz - lq, axis=1) - math.log(k)
    return -jnp.mean(bound), bound


OBJECTIVES = ("elbo", "iwae")
