"""Toy and benchmark targets with known answers.

- ``u1``..``u4``: the 2-D energies of Rezende & Mohamed (2015), *Variational inference with
  normalizing flows*, Table 1, p(z) ∝ exp(-U(z)). U2-U4 do not decay along z1 (improper on
  R^2); here they are confined to the paper's plotting box |z1| <= 4 by the penalty
  ``0.5 * (max(|z1| - 4, 0) / 0.1)^2`` added to U (C^1, Gaussian-fast decay outside the box).
  ``log_z`` is computed by 2-D quadrature (numpy, step 0.01, lazily, cached per process).
- ``banana``: the twisted Gaussian of Haario, Saksman & Tamminen (1999): x ~ N(0, diag(100,
  1, ..., 1)) then y2 = x2 - b (x1^2 - 100); volume-preserving, so log_z = 0.
- ``funnel``: Neal's (2003) funnel, v ~ N(0, 3^2), x_i | v ~ N(0, e^v) (variance e^v); log_z = 0.
- ``mixture``: equal-weight isotropic Gaussians on a ring in 2-D; log_z = 0.
- ``gaussian``: a correlated Gaussian with known mean and covariance; log_z = 0.
- ``german_credit``: Bayesian logistic regression on UCI German credit (numeric).

All densities here are normalised (log_z = 0) unless stated, and all but ``german_credit``
come with exact (i.i.d.) reference draws.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..._math import softplus
from ..target import Target, flat_names

_N_REF = 10_000
_LOG_2PI = math.log(2 * math.pi)

# ---------------------------------------------------------------- Rezende & Mohamed (2015)

_BOX, _WALL = 4.0, 0.1


def _energy(name: str, z1, z2, xp):
    """U(z) of Table 1 (plus the box penalty for U2-U4), for numpy or jax.numpy ``xp``."""
    w1 = xp.sin(2 * math.pi * z1 / 4)
    if name == "u1":
        s = z1**2 + z2**2
        safe = xp.where(s > 0, s, 1.0)  # a norm with a finite gradient at 0
        r = xp.where(s > 0, xp.sqrt(safe), 0.0)
        a = -0.5 * ((z1 - 2) / 0.6) ** 2
        b = -0.5 * ((z1 + 2) / 0.6) ** 2
        return 0.5 * ((r - 2) / 0.4) ** 2 - xp.logaddexp(a, b)
    if name == "u2":
        u = 0.5 * ((z2 - w1) / 0.4) ** 2
    elif name == "u3":
        w2 = 3 * xp.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
        u = -xp.logaddexp(-0.5 * ((z2 - w1) / 0.35) ** 2, -0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
    elif name == "u4":
        sigmoid = jax.nn.sigmoid if xp is jnp else (lambda t: 0.5 * (1 + np.tanh(t / 2)))
        w3 = 3 * sigmoid((z1 - 1) / 0.3)
        u = -xp.logaddexp(-0.5 * ((z2 - w1) / 0.4) ** 2, -0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
    else:
        raise ValueError(name)
    return u + 0.5 * (xp.maximum(xp.abs(z1) - _BOX, 0.0) / _WALL) ** 2


@functools.cache
def energy_log_z(name: str, step: float = 0.01) -> float:
    """log ∫ exp(-U(z)) dz over R^2 by the midpoint rule on [-7, 7] x [-9, 9] (mass outside < 1e-9)."""
    z1 = np.arange(-7 + step / 2, 7, step)
    z2 = np.arange(-9 + step / 2, 9, step)
    total = 0.0
    for chunk in np.array_split(z1, max(1, len(z1) // 200)):
        a, b = np.meshgrid(chunk, z2, indexing="ij")
        total += np.exp(-_energy(name, a, b, np)).sum()
    return float(np.log(total * step * step))


def energy(name: str) -> Target:
    """U1..U4 of Rezende & Mohamed (2015), Table 1, as a Target on z (2,)."""
    return Target(
        log_prob=lambda z: -_energy(name, z[0], z[1], jnp),
        dim=2,
        constrain=lambda z: {"z": z},
        names=("z[0]", "z[1]"),
        log_z=energy_log_z(name),
        name=name,
    )


# ---------------------------------------------------------------- exact toy targets


def _ref(name: str, draws: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip(flat_names(name, draws.shape[1:]), draws.reshape(len(draws), -1).T))


def banana(dim: int = 2, b: float = 0.1, seed: int = 0) -> Target:
    """Haario et al.'s (1999) twisted Gaussian on x (dim,), dim >= 2; normalised.

    log p(x) = log N(phi(x); 0, diag(100, 1, ..., 1)), phi(x)_2 = x_2 + b (x_1^2 - 100).
    """
    if dim < 2:
        raise ValueError(f"banana: `dim` must be >= 2, got {dim}")
    var = np.ones(dim)
    var[0] = 100.0

    def log_prob(x):
        y = x.at[1].add(b * (x[0] ** 2 - 100.0))
        return -0.5 * jnp.sum(y**2 / var) - 0.5 * dim * _LOG_2PI - 0.5 * float(np.log(var).sum())

    y = np.random.default_rng(seed).standard_normal((_N_REF, dim)) * np.sqrt(var)
    y[:, 1] -= b * (y[:, 0] ** 2 - 100.0)
    return Target(
        log_prob,
        dim,
        lambda x: {"x": x},
        reference=_ref("x", y),
        log_z=0.0,
        name="banana" if dim == 2 else f"banana{dim}",
    )


def funnel(dim: int = 10, seed: int = 0) -> Target:
    """Neal's (2003) funnel on (v, x_1..x_{dim-1}): v ~ N(0, 3^2), x_i | v ~ N(0, e^v); normalised."""
    if dim < 2:
        raise ValueError(f"funnel: `dim` must be >= 2, got {dim}")
    k = dim - 1

    def log_prob(u):
        v, x = u[0], u[1:]
        lv = -0.5 * (v / 3.0) ** 2 - math.log(3.0) - 0.5 * _LOG_2PI
        lx = -0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * k * v - 0.5 * k * _LOG_2PI
        return lv + lx

    rng = np.random.default_rng(seed)
    v = 3.0 * rng.standard_normal(_N_REF)
    x = rng.standard_normal((_N_REF, k)) * np.exp(v / 2)[:, None]
    ref = {"v": v, **_ref("x", x)}
    return Target(log_prob, dim, lambda u: {"v": u[0], "x": u[1:]}, reference=ref, log_z=0.0, name=f"funnel{dim}")


def mixture(n_modes: int = 8, radius: float = 4.0, scale: float = 0.5, seed: int = 0) -> Target:
    """Equal mixture of N(m_k, scale^2 I_2), m_k = radius (cos 2πk/K, sin 2πk/K); normalised."""
    ang = 2 * np.pi * np.arange(n_modes) / n_modes
    means = radius * np.stack([np.cos(ang), np.sin(ang)], 1)

    def log_prob(x):
        d2 = jnp.sum((x - jnp.asarray(means, x.dtype)) ** 2, axis=1)
        comp = -0.5 * d2 / scale**2 - 2 * math.log(scale) - _LOG_2PI
        return jax.nn.logsumexp(comp) - math.log(n_modes)

    rng = np.random.default_rng(seed)
    draws = means[rng.integers(n_modes, size=_N_REF)] + scale * rng.standard_normal((_N_REF, 2))
    return Target(log_prob, 2, lambda x: {"x": x}, reference=_ref("x", draws), log_z=0.0, name="mixture")


def gaussian(dim: int = 2, mean=None, cov=None, seed: int = 0, key=None) -> Target:
    """N(mean, cov) on theta (dim,); normalised, with exact reference draws.

    Defaults: mean ~ N(0, I); cov = Q diag(s^2) Q^T with Q a random rotation and s log-spaced
    in [0.3, 3] (condition number 100). Random choices use ``key`` (a JAX key) if given, else
    ``seed``.
    """
    if key is not None:
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if mean is None:
        mean = rng.standard_normal(dim)
    mean = np.asarray(mean, np.float64)
    if mean.shape != (dim,):
        raise ValueError(f"gaussian: `mean` must have shape ({dim},), got {mean.shape}")
    if cov is None:
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        cov = (q * np.geomspace(0.3, 3.0, dim) ** 2) @ q.T
    cov = np.asarray(cov, np.float64)
    if cov.shape != (dim, dim) or not np.allclose(cov, cov.T):
        raise ValueError(f"gaussian: `cov` must be a symmetric ({dim}, {dim}) matrix, got shape {cov.shape}")
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError("gaussian: `cov` must be positive definite") from None
    const = -0.5 * dim * _LOG_2PI - float(np.log(np.diag(chol)).sum())

    def log_prob(x):
        ell = jnp.asarray(chol, x.dtype)
        z = jax.scipy.linalg.solve_triangular(ell, x - jnp.asarray(mean, x.dtype), lower=True)
        return -0.5 * jnp.sum(z**2) + const

    draws = mean + rng.standard_normal((_N_REF, dim)) @ chol.T
    return Target(
        log_prob, dim, lambda x: {"theta": x}, reference=_ref("theta", draws), log_z=0.0, name=f"gaussian{dim}"
    )


def german_credit(prior_scale: float = 1.0) -> Target:
    """Bayesian logistic regression on UCI German credit (numeric; 1000 rows, 24 features).

    Features are standardised (mean 0, sd 1), an intercept is appended as the last column;
    y = class - 1 (1: bad credit). Prior: beta ~ N(0, prior_scale^2 I_25), all 25 independent.
    log p(beta) = sum_n [y_n eta_n - log(1 + e^eta_n)] + log N(beta; 0, s^2 I), eta = X beta.
    Quantities: ``beta`` (25,), ``beta[25]`` the intercept. Normalising constant unknown.
    """
    from ... import data

    raw = np.loadtxt(data.path("classification/german.data-numeric"))
    x = raw[:, :-1]
    x = (x - x.mean(0)) / x.std(0)
    x = np.concatenate([x, np.ones((len(x), 1))], 1)
    y = raw[:, -1] - 1.0
    s2 = prior_scale**2

    def log_prob(beta):
        eta = jnp.asarray(x, beta.dtype) @ beta
        ll = jnp.sum(jnp.asarray(y, beta.dtype) * eta - softplus(eta))
        return ll - 0.5 * jnp.sum(beta**2) / s2 - 0.5 * 25 * (_LOG_2PI + math.log(s2))

    return Target(log_prob, 25, lambda b: {"beta": b}, name="german_credit")
