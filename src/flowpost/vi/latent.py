"""Latent-variable variational families: ``q(theta) = integral q(theta | eps) p(eps) d eps``.

A latent-variable model (the decoder of a VAE) is a generative model whose density is an
intractable integral. It can still be a variational posterior, through a *bound* on
``log q`` or a *sample-based* objective; this module holds the families, their bounds
and estimates of ``log q``. (Flows, by contrast, give ``log q`` exactly in one pass.)

    eps ~ p(eps) = N(0, I_latent_dim)
    v | eps ~ N(mu(eps), diag sigma(eps)^2)       the decoder, networks of eps
    theta = loc + chol @ v                        fixed (Frozen) Laplace whitening

Two families, differing in how they handle the unknown ``log q``:

- :class:`SemiImplicit` (``family="sivi"``): semi-implicit VI (Yin & Zhou 2018). With
  ``theta`` drawn from ``eps_0`` and ``K`` extra mixing draws ``eps_k ~ p``,
  ``log q^_K(theta) = log (1/(K+1)) sum_{k=0..K} q(theta | eps_k)`` and the SIVI bound
  ``L_K = E[log p(theta, D) - log q^_K(theta)] <= ELBO``, increasing to the ELBO in ``K``.
- :class:`Hierarchical` (``family="hierarchical"``): hierarchical VI (Ranganath et al.
  2016; the auxiliary bound of Agakov & Barber 2004) with a learned reverse model
  ``r(eps | theta)``, a conditional RealNVP. ``K = 0`` is the hierarchical bound
  ``E[log p(theta, D) + log r(eps_0|theta) - log q(theta|eps_0) - log p(eps_0)]``;
  ``K > 0`` adds ``K`` draws ``eps_k ~ r(. | theta)`` (importance-weighted hierarchical
  VI, Sobolev & Vetrov 2019):
  ``log q^_K = log (1/(K+1)) sum_k q(theta|eps_k) p(eps_k) / r(eps_k|theta)``.
  SIVI is the case ``r = p``.

Estimates of ``log q`` (what :meth:`LatentFamily.sample_and_log_prob` and
:meth:`LatentFamily.log_prob` return):

- at the family's own draws, ``log q^_K`` above, with the generating ``eps_0`` included.
  ``E[log q^_K] >= log q`` (an upper estimate: the ELBO from it is a lower bound), and
  ``E[1 / q^_K(theta) | theta] = 1 / q(theta)`` exactly (by symmetry of the ``K+1`` terms),
  so ``p / q^_K`` are *exact* importance weights for ``p`` on the extended space
  ``(theta, eps_0..K)``: self-normalised importance sampling with them is consistent, and
  PSIS k-hat is the k-hat of that extended-space sampler (its weights carry the extra noise
  of ``q / q^_K``, so k-hat is typically above the marginal one, approaching it as ``K``
  grows);
- at arbitrary points, the importance-weighted (IWAE, Burda et al. 2016) estimate
  ``log (1/K) sum_k q(theta|eps_k) p(eps_k) / r(eps_k|theta)``, ``eps_k ~ r``: a lower
  estimate, ``E <= log q``, with a gap of order ``1/K``.

Shapes: ``theta (n, dim)``, ``eps (n, latent_dim)``; every density is ``(n,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import flows as F
from .._checks import check_ints

Array = jax.Array
_LOG_2PI = math.log(2 * math.pi)

#: the part of each whitened coordinate's unit variance carried by eps at the start
#: (``v = a eps + s z`` with ``a^2 + s^2 = 1``): the family starts exactly at the Laplace
#: Gaussian, with its latent variable already in use (a decoder that ignores eps would
#: give the bounds' gradients nothing to move the mixing networks with)
MIXING = 0.8


def _normal_logpdf(x, mu, sigma):
    """``log N(x; mu, diag sigma^2)`` summed over the last axis (broadcasting)."""
    z = (x - mu) / sigma
    return -0.5 * jnp.sum(z**2, -1) - jnp.sum(jnp.log(sigma), -1) - 0.5 * x.shape[-1] * _LOG_2PI


def _std_normal_logpdf(e):
    return -0.5 * jnp.sum(e**2, -1) - 0.5 * e.shape[-1] * _LOG_2PI


def _mixing_matrix(dim, latent_dim, a):
    """``A (dim, latent_dim) = a * eye`` and the decoder scales ``s = sqrt(1 - rowsum A^2)``
    that make ``A eps + s z`` a standard normal."""
    mix = a * jnp.eye(dim, latent_dim)
    return mix, jnp.sqrt(1.0 - jnp.sum(mix**2, 1))


class GaussianDecoder(eqx.Module):
    """``q(v | eps) = N(mu(eps), diag sigma(eps)^2)``:
    ``mu = shift + mix @ eps + h_mu(eps)``, ``log sigma = log_scale + h_sigma(eps)``, with
    ``(h_mu, h_sigma)`` one MLP (:class:`flowpost.flows.MLP`, last layer zero at the start).

    ``eps (latent_dim,) -> (mu (dim,), sigma (dim,))``."""

    shift: Array
    mix: Array
    log_scale: Array
    net: F.MLP
    dim: int = eqx.field(static=True)

    def __init__(
        self, key, dim, latent_dim, hidden: Sequence[int] = (32, 32), activation=jax.nn.tanh, mixing: float = MIXING
    ):
        self.dim = dim
        self.mix, scale = _mixing_matrix(dim, latent_dim, mixing)
        self.shift = jnp.zeros((dim,))
        self.log_scale = jnp.log(scale)
        self.net = F.MLP(key, latent_dim, 2 * dim, hidden, activation)

    def __call__(self, eps):
        h = self.net(eps)
        mu = self.shift + self.mix @ eps + h[: self.dim]
        return mu, jnp.exp(self.log_scale + h[self.dim :])


class ReverseModel(eqx.Module):
    """The reverse (auxiliary) model ``r(eps | v)`` of hierarchical VI:
    ``eps = weight @ v + shift + exp(log_scale) * u`` with ``u ~ flow(. | context=v)``, a
    conditional RealNVP (:func:`flowpost.flows.realnvp` with ``cond_dim=dim``), or
    ``u ~ N(0, I)`` when ``flow`` is None (a conditional Gaussian with a linear mean).

    Starts at the exact posterior ``p(eps | v)`` of the family's starting decoder
    (``weight = mix^T``, scale ``sqrt(1 - diag(mix^T mix))``), so the bound starts tight."""

    weight: Array
    shift: Array
    log_scale: Array
    flow: F.Flow | None

    def __init__(self, key, dim, latent_dim, mix, layers: int = 2, hidden: Sequence[int] = (32, 32)):
        self.weight = mix.T
        self.shift = jnp.zeros((latent_dim,))
        self.log_scale = 0.5 * jnp.log(1.0 - jnp.sum(mix**2, 0))
        self.flow = (
            None
            if layers == 0
            else F.realnvp(key, latent_dim, layers=layers, hidden=hidden, cond_dim=dim, activation=jax.nn.tanh)
        )

    def _loc_scale(self, v):
        return self.weight @ v + self.shift, jnp.exp(self.log_scale)

    def sample_and_log_prob(self, key, v, k: int):
        """``v (dim,) -> eps (k, latent_dim), log r(eps | v) (k,)``."""
        m, s = self._loc_scale(v)
        if self.flow is None:
            u = jax.random.normal(key, (k, m.shape[0]), v.dtype)
            lu = _std_normal_logpdf(u)
        else:
            u, lu = self.flow.sample_and_log_prob(key, k, context=v)
        return m + s * u, lu - jnp.sum(self.log_scale)

    def log_prob(self, eps, v):
        """``eps (latent_dim,), v (dim,) -> log r(eps | v) ()``."""
        m, s = self._loc_scale(v)
        u = (eps - m) / s
        lu = _std_normal_logpdf(u) if self.flow is None else self.flow.log_prob(u, context=v)
        return lu - jnp.sum(self.log_scale)


class LatentFamily(eqx.Module):
    """Base of the latent-variable families (see the module docstring).

    Attributes:
        decoder: the :class:`GaussianDecoder`.
        whiten: the fixed map ``v -> loc + chol @ v`` (a :class:`flowpost.flows.Frozen`).
        dim, latent_dim: sizes of theta and eps.
        k: extra inner samples ``K`` of the training bound (:meth:`elbo_bound`).
        eval_k: inner samples of the ``log q`` estimates used by diagnostics and
            importance weighting (:meth:`sample_and_log_prob`, :meth:`log_prob`).
    """

    decoder: GaussianDecoder
    whiten: F.Bijection
    dim: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    k: int = eqx.field(static=True)
    eval_k: int = eqx.field(static=True)

    name = "latent"

    # -- to implement: the K-sample estimates of log q_v(v) in whitened coordinates --
    def _log_q_ext(self, key, v, eps0, cond0, k):
        """``log q^_K(v)`` at the family's own draws (generating ``eps0`` included), ``(n,)``."""
        raise NotImplementedError

    def _log_q_iw(self, key, v, k):
        """The IWAE estimate ``log q^_K(v)`` at arbitrary points ``v (n, dim)``, ``(n,)``."""
        raise NotImplementedError

    # -- shared --
    def _logdet(self):
        """``log|det chol|`` of the whitening (a constant)."""
        return self.whiten.forward(jnp.zeros((self.dim,)))[1]

    def _draw(self, key, n):
        """``eps0 (n, latent_dim)``, ``v (n, dim)``, ``log q(v | eps0) (n,)``."""
        ke, kz = jax.random.split(key)
        eps0 = jax.random.normal(ke, (n, self.latent_dim))
        mu, sigma = jax.vmap(self.decoder)(eps0)
        z = jax.random.normal(kz, mu.shape, mu.dtype)
        v = mu + sigma * z
        return eps0, v, _normal_logpdf(v, mu, sigma)

    def _to_theta(self, v):
        return jax.vmap(lambda vi: self.whiten.forward(vi)[0])(v)

    def _check_k(self, k, least=1):
        k = self.eval_k if k is None else k
        check_ints(f"{type(self).__name__}", least=least, k=k)
        return int(k)

    def sample(self, key, n: int) -> Array:
        """``n`` draws ``theta (n, dim)``."""
        return self._to_theta(self._draw(key, n)[1])

    def sample_and_log_prob(self, key, n: int, k: int | None = None) -> tuple[Array, Array]:
        """Draws ``theta (n, dim)`` and ``log q^_K(theta) (n,)`` with the generating ``eps``
        included (``K = k``, default :attr:`eval_k`): an upper estimate of ``log q``, whose
        ``p / q^_K`` are exact importance weights on the extended space."""
        k = self._check_k(k, least=self._least_k)
        kd, kk = jax.random.split(key)
        eps0, v, cond0 = self._draw(kd, n)
        return self._to_theta(v), self._log_q_ext(kk, v, eps0, cond0, k) - self._logdet()

    def log_prob(self, theta, key=None, k: int | None = None) -> Array:
        """The IWAE estimate of ``log q(theta)`` with ``k`` inner samples (default
        :attr:`eval_k`) at any ``theta (..., dim)``: a lower estimate (``E <= log q``),
        differentiable in the family's parameters (used as ``ELBO_lambda(theta)`` by the
        ``"iwfkl"`` objective)."""
        k = self._check_k(k)
        key = jax.random.key(0) if key is None else key
        theta = jnp.asarray(theta)
        batch = theta.shape[:-1]
        flat = theta.reshape(-1, self.dim)
        v, ld = jax.vmap(self.whiten.inverse)(flat)
        return (self._log_q_iw(key, v, k) + ld).reshape(batch)

    def elbo_bound(self, log_p, key, n: int, k: int | None = None) -> tuple[Array, Array]:
        """The family's bound ``L_K = mean(log p(theta) - log q^_K(theta))`` over ``n`` draws
        (``K = k``, default :attr:`k`), a lower bound on the ELBO in expectation:
        ``(loss = -L_K, L_K)``, the signature of :mod:`flowpost.vi.objectives`."""
        x, lq = self.sample_and_log_prob(key, n, self.k if k is None else k)
        b = jnp.mean(log_p(x) - lq)
        return -b, b

    @property
    def log_q_note(self) -> str:
        """How ``log q`` is estimated at the family's own draws (for diagnostics)."""
        return (
            f"estimate: {self.name} K={self.eval_k} (generating eps included; E[log q^] >= log q, "
            "weights p/q^ are exact importance weights on the extended space (theta, eps))"
        )

    _least_k = 1


class SemiImplicit(LatentFamily):
    """Semi-implicit VI (Yin & Zhou 2018, "Semi-implicit variational inference").

    The ``K`` mixing draws ``eps_k ~ N(0, I)`` are shared by all draws of a batch (as in
    the paper), so a step costs ``n + K`` decoder evaluations and ``n (K + 1)`` Gaussian
    densities. The SIVI bound with ``K`` is a lower bound on the ELBO for every ``K >= 1``
    and tends to it as ``K -> inf``; the generating ``eps_0`` in the sum keeps it a bound
    (without it, the ``K``-sample average is a lower estimate of ``q`` and the objective an
    upper bound that rewards collapsing ``sigma``)."""

    name = "sivi"

    def _mixture_logpdf(self, v, eps):
        """``log q(v_i | eps_k)`` for ``v (n, dim)``, ``eps (k, latent)``: ``(n, k)`` by two
        matrix products (no ``(n, k, dim)`` array)."""
        mu, sigma = jax.vmap(self.decoder)(eps)
        prec = 1.0 / sigma**2
        quad = (v**2) @ prec.T - 2.0 * v @ (mu * prec).T + jnp.sum(mu**2 * prec, 1)
        return -0.5 * quad - jnp.sum(jnp.log(sigma), 1) - 0.5 * self.dim * _LOG_2PI

    def _log_q_ext(self, key, v, eps0, cond0, k):
        eps = jax.random.normal(key, (k, self.latent_dim), v.dtype)
        terms = jnp.concatenate([cond0[:, None], self._mixture_logpdf(v, eps)], 1)
        return jax.nn.logsumexp(terms, 1) - math.log(k + 1)

    def _log_q_iw(self, key, v, k):
        eps = jax.random.normal(key, (k, self.latent_dim), v.dtype)
        return jax.nn.logsumexp(self._mixture_logpdf(v, eps), 1) - math.log(k)


class Hierarchical(LatentFamily):
    """Hierarchical VI with a learned reverse model (Ranganath et al. 2016, "Hierarchical
    variational models"; Agakov & Barber 2004), importance-weighted with ``K`` extra reverse
    draws (Sobolev & Vetrov 2019); ``K = 0`` is the plain hierarchical bound, whose gap is
    ``E_q KL(q(eps | theta) || r(eps | theta))``. The reverse model is trained by the same
    bound. A step costs ``n (K + 1)`` decoder and reverse-model evaluations."""

    reverse: ReverseModel
    name = "hierarchical"
    _least_k = 0

    def _rho(self, v, eps, log_r):
        """``log q(v | eps) + log p(eps) - log r(eps | v)`` for ``v (dim,)``, ``eps (k, latent)``."""
        mu, sigma = jax.vmap(self.decoder)(eps)
        return _normal_logpdf(v, mu, sigma) + _std_normal_logpdf(eps) - log_r

    def _extra(self, key, v, k):
        keys = jax.random.split(key, v.shape[0])

        def one(kk, vi):
            eps, log_r = self.reverse.sample_and_log_prob(kk, vi, k)
            return self._rho(vi, eps, log_r)

        return jax.vmap(one)(keys, v)  # (n, k)

    def _log_q_ext(self, key, v, eps0, cond0, k):
        rho0 = cond0 + _std_normal_logpdf(eps0) - jax.vmap(self.reverse.log_prob)(eps0, v)
        if k == 0:
            return rho0
        terms = jnp.concatenate([rho0[:, None], self._extra(key, v, k)], 1)
        return jax.nn.logsumexp(terms, 1) - math.log(k + 1)

    def _log_q_iw(self, key, v, k):
        return jax.nn.logsumexp(self._extra(key, v, k), 1) - math.log(k)


def _whitening(dim, loc, chol) -> F.Bijection:
    return F.Frozen(F.TriangularAffine(dim, loc=loc, chol=chol))


def _sizes(who, dim, latent_dim, hidden):
    latent_dim = dim if latent_dim is None else latent_dim
    check_ints(who, dim=dim, latent_dim=latent_dim)
    if not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"{who}: `hidden` must be a sequence of positive integers, got {hidden!r}")
    return latent_dim


def sivi(
    dim: int,
    loc=None,
    chol=None,
    *,
    key=None,
    latent_dim: int | None = None,
    hidden: Sequence[int] = (32, 32),
    k: int = 50,
    eval_k: int = 1000,
) -> SemiImplicit:
    """The semi-implicit family (``family="sivi"``), starting at ``N(loc, chol chol^T)``.

    Args:
        dim: dimension of theta.
        loc: the Laplace mode ``(dim,)`` (the fixed whitening's shift; 0 when None).
        chol: the Laplace covariance factor ``(dim, dim)`` (identity when None).
        key: PRNG key for the decoder's weights.
        latent_dim: dimension of eps (default ``dim``).
        hidden: the decoder MLP's hidden widths.
        k: ``K``, the extra mixing samples of the SIVI bound in training (Yin & Zhou use 50-100).
        eval_k: ``K`` for the diagnostics' and importance weights' estimate of ``log q``.
    """
    latent_dim = _sizes("sivi", dim, latent_dim, hidden)
    check_ints("sivi", k=k, eval_k=eval_k)
    key = jax.random.key(0) if key is None else key
    return SemiImplicit(
        GaussianDecoder(key, dim, latent_dim, hidden), _whitening(dim, loc, chol), dim, latent_dim, k, eval_k
    )


def hierarchical(
    dim: int,
    loc=None,
    chol=None,
    *,
    key=None,
    latent_dim: int | None = None,
    hidden: Sequence[int] = (32, 32),
    k: int = 4,
    eval_k: int = 64,
    reverse_layers: int = 2,
    reverse_hidden: Sequence[int] = (32, 32),
) -> Hierarchical:
    """The hierarchical family (``family="hierarchical"``), starting at ``N(loc, chol chol^T)``.

    Args:
        dim: dimension of theta.
        loc: the Laplace mode ``(dim,)`` (as for :func:`sivi`).
        chol: the Laplace covariance factor ``(dim, dim)`` (as for :func:`sivi`).
        key: PRNG key for the decoder's and reverse model's weights.
        latent_dim: dimension of eps (default ``dim``).
        hidden: the decoder MLP's hidden widths.
        k: ``K``, extra reverse-model draws of the training bound (0: the plain
            hierarchical bound of Ranganath et al. 2016).
        eval_k: ``K`` for the diagnostics' and importance weights' estimate of ``log q``.
        reverse_layers: conditional RealNVP couplings of ``r(eps | theta)`` (0: a
            conditional Gaussian with a linear mean).
        reverse_hidden: their hidden widths.
    """
    latent_dim = _sizes("hierarchical", dim, latent_dim, hidden)
    check_ints("hierarchical", least=0, k=k, reverse_layers=reverse_layers)
    check_ints("hierarchical", eval_k=eval_k)
    key = jax.random.key(0) if key is None else key
    k_dec, k_rev = jax.random.split(key)
    decoder = GaussianDecoder(k_dec, dim, latent_dim, hidden)
    reverse = ReverseModel(k_rev, dim, latent_dim, decoder.mix, reverse_layers, reverse_hidden)
    return Hierarchical(decoder, _whitening(dim, loc, chol), dim, latent_dim, k, eval_k, reverse)


def is_latent(q) -> bool:
    """Whether ``q`` is a latent-variable family (its ``log q`` is only estimated)."""
    return isinstance(q, LatentFamily)
