"""Amortised posterior flows ``q(z | x)`` built from :mod:`flowpost.flows`.

The encoder gives ``mu, log_sigma`` and a context vector ``h``; then

    z0 = mu + sigma * eps,   eps ~ N(0, I)
    zK = f_K o ... o f_1 (z0; h)
    log q(zK | x) = log N(z0; mu, sigma^2) - sum_k log|det df_k/dz_{k-1}|

Flows (all take ``h`` as ``context``):

- ``none``: the diagonal Gaussian (Kingma & Welling 2014).
- ``planar``: planar flows (Rezende & Mohamed 2015) whose parameters ``u, w, b`` are
  affine functions of ``h`` (:class:`~flowpost.flows.residual.AmortisedParams`).
- ``iaf``: inverse autoregressive flow (Kingma et al. 2016), MADE conditioners that
  take ``h`` as an extra input.
- ``sylvester-o`` / ``sylvester-h`` / ``sylvester-t``: Sylvester flows with orthogonal,
  Householder or triangular ``Q`` (van den Berg et al. 2018), every parameter
  (``R1, R2, b`` and ``Q``'s generators) an affine function of ``h``.
- ``spline``: inverse-autoregressive rational-quadratic splines (Durkan et al. 2019)
  conditioned on ``h``: the conditional flow of f-VAE (Su & Wu 2018).
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ... import flows

FLOWS = ("none", "planar", "iaf", "sylvester-o", "sylvester-h", "sylvester-t", "spline")

# defaults per flow (the papers' choices, scaled to a CPU budget where noted)
DEFAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "planar": {"layers": 16},  # Sylvester paper: 16 planar flows
    "iaf": {"layers": 4, "hidden": (128, 128)},
    "sylvester-o": {"layers": 4, "m": 16},  # paper: M = 32 for z = 64
    "sylvester-h": {"layers": 4, "n_householder": 4},  # paper: H = 8
    "sylvester-t": {"layers": 4},
    "spline": {"layers": 2, "hidden": (128, 128), "knots": 8, "bound": 5.0},
}


def make_flow(name: str, key, latent: int, context: int, **options) -> flows.Bijection | None:
    """The flow's bijection on ``R^latent`` conditioned on a ``context``-vector (``None`` for
    ``"none"``). ``options`` override :data:`DEFAULTS` (e.g. ``layers=8``)."""
    if name not in FLOWS:
        raise ValueError(f"`flow` must be one of {FLOWS}, got {name!r}")
    opts = {**DEFAULTS[name], **options}
    if name == "none":
        if options:
            raise ValueError(f"flow 'none' takes no options, got {sorted(options)}")
        return None
    c: dict[str, Any] = {"cond_dim": context}
    if name == "planar":
        f = flows.planar(key, latent, **opts, **c)
    elif name == "iaf":
        f = flows.iaf(key, latent, **opts, **c)
    elif name == "spline":
        f = flows.spline(key, latent, autoregressive=True, **opts, **c)
    else:
        kind = {"o": "orthogonal", "h": "householder", "t": "triangular"}[name[-1]]
        if kind == "orthogonal" and "m" not in options:
            opts["m"] = min(opts["m"], latent)  # M <= latent size; the default 16 is for latent >= 16
        f = flows.sylvester(key, latent, kind=kind, **opts, **c)
    return f.bijection


class Posterior(eqx.Module):
    """``q(z | x)``: a diagonal Gaussian refined by an (optional) conditional flow."""

    flow: flows.Bijection | None
    latent: int = eqx.field(static=True)

    def __init__(self, flow: flows.Bijection | None, latent: int):
        self.flow, self.latent = flow, latent

    def transform(self, z0, h):
        """``z0 (latent,) -> (zK (latent,), sum of log|det| ())`` for one context ``h``."""
        if self.flow is None:
            return z0, jnp.zeros((), z0.dtype)
        return self.flow.forward(z0, h)

    def sample_and_log_prob(self, key, mu, log_sigma, h, k: int):
        """``k`` draws ``zK (k, latent)`` for ONE datapoint and ``log q(zK | x) (k,)``.

        ``h`` is shared by the ``k`` draws, so amortised parameters are computed once."""
        eps = jax.random.normal(key, (k, self.latent), mu.dtype)
        z0 = mu + jnp.exp(log_sigma) * eps
        log_q0 = jnp.sum(-0.5 * eps**2 - log_sigma, axis=-1) - 0.5 * self.latent * math.log(2 * math.pi)
        zk, logdet = jax.vmap(self.transform, in_axes=(0, None))(z0, h)
        return zk, log_q0 - logdet
