"""Variational families: distributions on ``R^dim`` with reparameterised sampling.

Every family is a :class:`flowpost.flows.Flow` on a standard normal base, so all
objectives treat them alike:

- ``"meanfield"``: ``N(m, diag(s^2))`` (an elementwise affine map);
- ``"fullrank"``: ``N(m, L L^T)`` (a triangular affine map);
- ``"flow"``: a RealNVP (Dinh et al. 2017) followed by a trainable full-rank affine map,
  on a Student-t base whose degrees of freedom grow with the dimension (:func:`tail_df`).

Each ends in a fixed whitening map ``mode + L0 (.)`` from the Laplace approximation
(for mean-field, its diagonal), and its trainable layers start at the identity: the
flow starts at the Laplace Gaussian, the couplings only have to learn what is not
Gaussian, and the optimiser works in units of the posterior's standard deviations
(preconditioning that lets one learning rate serve posteriors whose scales differ by
orders of magnitude). The heavier-tailed base (Jaini et al. 2020) keeps the importance weights
p/q bounded in the tails, which is what PSIS k-hat measures (measurements: the
reference-posterior benchmark page of the documentation).

A user may also pass any :class:`~flowpost.flows.Flow` of the right dimension.

Latent-variable families (:mod:`flowpost.vi.latent`, not flows: their ``log q`` is only
bounded or estimated), started at the same Laplace Gaussian:

- ``"sivi"``: semi-implicit VI (Yin & Zhou 2018), :func:`flowpost.vi.latent.sivi`;
- ``"hierarchical"``: hierarchical VI with a learned reverse model (Ranganath et al.
  2016), :func:`flowpost.vi.latent.hierarchical`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from .. import flows as F
from . import latent

FAMILIES = ("flow", "meanfield", "fullrank", "sivi", "hierarchical")


def _whiten(dim, loc, chol) -> F.Bijection:
    """The fixed map ``v -> loc + chol @ v`` (identity when not given): the trainable
    layers before it work in whitened coordinates, so one Adam step (about the learning
    rate per coordinate) is a fraction of a posterior standard deviation in every
    direction, however the model's own units are scaled. Without it, kilpisjarvi (sd of
    the slope ~1e-3 of the intercept's) diverges at a learning rate of 5e-3."""
    return F.Frozen(F.TriangularAffine(dim, loc=loc, chol=chol))


def meanfield(dim: int, loc=None, chol=None) -> F.Flow:
    """``N(loc + s0 * m, diag((s0 * s)^2))`` with ``(m, s)`` trained from ``(0, 1)``. Given
    the Cholesky factor of a covariance ``S``, the fixed scales ``s0`` are
    ``1 / sqrt(diag(S^-1))``: the mean-field optimum for ``N(loc, S)`` (the
    KL(q||p)-optimal factorised Gaussian matches the precision's diagonal)."""
    scale = 1.0
    if chol is not None:
        inv = jnp.linalg.inv(jnp.asarray(chol))  # S^-1 = inv^T inv
        scale = 1.0 / jnp.sqrt(jnp.sum(inv**2, axis=0))
    fixed = F.Frozen(F.AffineElementwise(0.0 if loc is None else loc, scale, dim=dim))  # O(dim), not a dense map
    return F.Flow(F.Chain([F.AffineElementwise(0.0, 1.0, dim=dim), fixed]))


def fullrank(dim: int, loc=None, chol=None) -> F.Flow:
    """``N(loc, chol chol^T)`` at the start; trained as ``loc + chol @ (m + L z)``."""
    return F.Flow(F.Chain([F.TriangularAffine(dim), _whiten(dim, loc, chol)]))


def tail_df(dim: int) -> float | None:
    """Degrees of freedom of the default family's Student-t base for ``dim`` coordinates
    (``None``: a standard normal base).

    The base's tails are fixed and its coordinates independent, so on a Gaussian posterior
    it costs ``KL(t_df || N) ~ 0.8 / df^2`` nats per coordinate (0.0093 at ``df = 10``,
    computed numerically) that no training removes, and that grows with the dimension.
    ``df`` is the smallest integer, at least 10, that keeps this cost
    under 0.25 nats in all (``ceil(sqrt(3.2 dim))``: 10 up to 31 coordinates, so every
    posteriordb reference keeps the base it was measured with), and a normal base once
    that exceeds 30 (more than 281 coordinates), where t and normal tails hardly differ
    and the normal base samples faster. (Why 0.25 nats and not less: the
    reference-posterior benchmark page.)"""
    df = max(10, math.ceil(math.sqrt(3.2 * dim)))
    return float(df) if df <= 30 else None


def flow(
    dim: int,
    loc=None,
    chol=None,
    *,
    key=None,
    layers: int = 8,
    hidden=(32, 32),
    activation=jax.nn.tanh,
    df: float | str | None = "auto",
) -> F.Flow:
    """RealNVP couplings (``layers`` x ``hidden``), a trainable full-rank affine map, then
    the fixed whitening ``loc + chol @ (.)``, on a Student-t base with ``df`` degrees of
    freedom (``"auto"``: :func:`tail_df`; ``None``: standard normal).

    ``tanh`` conditioners keep the map smooth (ReLU couplings make ``log q`` piecewise
    linear, which importance weights notice)."""
    key = jax.random.key(0) if key is None else key
    couplings = F.realnvp(key, dim, layers=layers, hidden=hidden, activation=activation).bijection
    df = tail_df(dim) if df == "auto" else df
    base = None if df is None else F.StudentT(dim, df=float(df))
    return F.Flow(F.Chain([couplings, F.TriangularAffine(dim), _whiten(dim, loc, chol)]), base=base)


def make(family, dim: int, loc=None, chol=None, key=None) -> Any:
    """Build a family by name (or check a user's Flow or latent-variable family)."""
    if latent.is_latent(family):
        if family.dim != dim:
            raise ValueError(f"fit: the latent family has dim {family.dim}, the target has dim {dim}")
        return family
    if family == "sivi":
        return latent.sivi(dim, loc, chol, key=key)
    if family == "hierarchical":
        return latent.hierarchical(dim, loc, chol, key=key)
    if isinstance(family, F.Flow):
        if family.dim != dim:
            raise ValueError(f"fit: the family flow has dim {family.dim}, the target has dim {dim}")
        if family.cond_dim is not None:
            raise ValueError(
                "fit: the family flow is conditional (cond_dim set); a posterior needs an unconditional flow"
            )
        return family
    if family == "meanfield":
        return meanfield(dim, loc, chol)
    if family == "fullrank":
        return fullrank(dim, loc, chol)
    if family == "flow":
        return flow(dim, loc, chol, key=key)
    raise ValueError(
        f"fit: `family` must be one of {FAMILIES}, a flowpost.flows.Flow or a latent family "
        f"(flowpost.vi.latent), got {family!r}"
    )
