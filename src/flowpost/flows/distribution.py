"""Flow distributions: a base density pushed through a bijection.

    z ~ base,  x = T(z),  log q(x) = log base(z) - log|det dT/dz|

Shapes: a :class:`Flow` of dimension ``d`` (and context length ``c``) takes ``x`` of
shape ``(*batch, d)`` and ``context`` of shape ``(c,)`` or ``(*batch, c)``;
``sample(key, n, context)`` returns ``(*n, *context_batch, d)``.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._checks import as_int
from .bijection import Bijection, as_float

Array = jax.Array


class StandardNormal(eqx.Module):
    """``N(0, I_dim)``."""

    dim: int = eqx.field(static=True)

    def log_prob(self, z):
        """``log p(z)`` summed over the last axis: ``z (..., dim)`` -> ``(...)``."""
        return -0.5 * jnp.sum(z**2, -1) - 0.5 * self.dim * math.log(2 * math.pi)

    def sample(self, key, shape=()):
        """Draws of shape ``(*shape, dim)``."""
        return jax.random.normal(key, (*shape, self.dim))


class StudentT(eqx.Module):
    """Independent Student-t coordinates with fixed degrees of freedom ``df``: a
    heavy-tailed base for heavy-tailed targets (Jaini et al. 2020, "Tails of Lipschitz
    triangular flows"); the flow's layers shape it, ``df`` sets how heavy its tails are.

    Sampling is exact: ``t = z / sqrt(c / df)`` with ``z ~ N(0, 1)`` and ``c ~ chi^2(df)``.
    For an integer ``df`` up to 30, ``c = -2 sum_{i <= df/2} log u_i`` (a chi^2 with 2
    degrees of freedom is an exponential with mean 2), plus one squared normal when ``df``
    is odd: no rejection loop, and much cheaper than summing ``df`` squared normals.
    Otherwise ``c`` comes from :func:`jax.random.gamma`. ``df`` is not trained: the
    reparameterised gradient of a t draw with respect to ``df`` needs the gamma sampler's
    implicit derivative, which makes a VI step several times slower (measurements: the
    speed benchmark page).
    """

    dim: int = eqx.field(static=True)
    df: float = eqx.field(static=True)

    def __init__(self, dim: int, df: float = 10.0):
        if not (df > 0 and math.isfinite(df)):
            raise ValueError(
                f"StudentT: `df` must be a positive finite number, got {df!r} "
                "(df = inf is the normal: use StandardNormal)"
            )
        self.dim, self.df = dim, float(df)

    def log_prob(self, z):
        """``log p(z)`` summed over the last axis: ``z (..., dim)`` -> ``(...)``."""
        nu = self.df
        c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        return jnp.sum(c - (nu + 1) / 2 * jnp.log1p(z**2 / nu), -1)

    def sample(self, key, shape=()):
        """Draws of shape ``(*shape, dim)``."""
        kz, kc = jax.random.split(key)
        shape = (*shape, self.dim)
        z = jax.random.normal(kz, shape)
        if self.df.is_integer() and self.df <= 30:
            pairs, odd = divmod(int(self.df), 2)
            ku, kn = jax.random.split(kc)
            u = jax.random.uniform(ku, (pairs, *shape), z.dtype, minval=jnp.finfo(z.dtype).tiny)
            c = -2.0 * jnp.sum(jnp.log(u), 0) + (jax.random.normal(kn, shape, z.dtype) ** 2 if odd else 0.0)
        else:
            c = 2.0 * jax.random.gamma(kc, self.df / 2, shape)
        return z * jnp.sqrt(self.df / c)


def _shape(n) -> tuple[int, ...]:
    if n is None:
        return ()
    given = [as_int(i) for i in (n if isinstance(n, tuple) else (n,))]
    dims = [i for i in given if i is not None]
    if len(dims) != len(given):
        raise TypeError(f"sample size must be an int or a tuple of ints, got {n!r}")
    if any(i < 0 for i in dims):
        raise ValueError(f"sample size must be non-negative, got {n}")
    return tuple(dims)


class Flow(eqx.Module):
    """A normalizing flow: ``base`` (default ``N(0, I)``) pushed through ``bijection``.

    ``bijection.forward`` is the sampling direction ``z -> x``. ``log_prob`` uses
    ``bijection.inverse``; ``sample_and_log_prob`` uses only ``forward`` (so it works for
    flows without a tractable inverse, such as Sylvester's).
    """

    bijection: Bijection
    base: Any  # StandardNormal, StudentT or any module with sample(key, shape) and log_prob(z)
    dim: int = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)

    def __init__(self, bijection: Bijection, base=None, dim=None):
        dim = bijection.dim if bijection.dim is not None else dim
        if dim is None:
            raise ValueError("Flow: the bijection acts on any length; pass `dim=`")
        self.bijection, self.dim, self.cond_dim = bijection, int(dim), bijection.cond_dim
        self.base = StandardNormal(self.dim) if base is None else base
        if getattr(self.base, "dim", self.dim) != self.dim:
            raise ValueError(f"Flow: the base has dim {self.base.dim} but the bijection acts on dim {self.dim}")

    # -- input checks (static: they run at trace time, before anything is compiled) --
    def _check_context(self, context, method):
        if self.cond_dim is None:
            if context is not None:
                raise ValueError(f"Flow.{method}: this flow is unconditional, but a `context` was given.")
            return None
        if context is None:
            raise ValueError(
                f"Flow.{method}: this flow is conditional and needs `context` of shape "
                f"(..., {self.cond_dim}), got None."
            )
        context = as_float(context, self)
        if context.ndim == 0 or context.shape[-1] != self.cond_dim:
            raise ValueError(f"Flow.{method}: expected `context` of shape (..., {self.cond_dim}), got {context.shape}.")
        # checked when concrete (as x is); a traced context, e.g. a VAE encoder's output inside
        # a training step, is not guarded at run time
        if not isinstance(context, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(context))):
            raise ValueError(
                f"Flow.{method}: `context` holds {int(jnp.sum(~jnp.isfinite(context)))} non-finite "
                "value(s) (NaN or inf); the flow's output would be NaN. Clean the context first."
            )
        return context

    def _check_x(self, x):
        x = as_float(x, self)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"Flow.log_prob: expected x of shape (..., {self.dim}), got {x.shape}.")
        if not isinstance(x, jax.core.Tracer):
            if not bool(jnp.all(jnp.isfinite(x))):
                bad = int(jnp.sum(~jnp.isfinite(x)))
                raise ValueError(
                    f"Flow.log_prob: x holds {bad} non-finite value(s) (NaN or inf); "
                    "the density of such points is undefined. Clean the input first."
                )
        else:
            x = eqx.error_if(x, ~jnp.isfinite(x), "Flow.log_prob: x holds non-finite values (NaN or inf).")
        return x

    # -- densities and sampling --
    def log_prob(self, x: Array, context: Array | None = None) -> Array:
        """``x (*batch, dim) -> log q(x) (*batch,)``."""
        x = self._check_x(x)
        context = self._check_context(context, "log_prob")

        def single(xi, ci):
            z, ld = self.bijection.inverse(xi, ci)
            return self.base.log_prob(z) + ld

        return _map(single, x, context, self.cond_dim)

    def sample_and_log_prob(self, key, n=None, context: Array | None = None) -> tuple[Array, Array]:
        """Draws ``x (*n, *ctx_batch, dim)`` and their ``log q(x)`` in one forward pass."""
        context = self._check_context(context, "sample_and_log_prob")
        batch = _shape(n) + (() if context is None else context.shape[:-1])
        z = self.base.sample(key, batch)
        base_lp = self.base.log_prob(z)

        def single(zi, ci):
            return self.bijection.forward(zi, ci)

        x, ld = _map(single, z, context, self.cond_dim)
        return x, base_lp - ld

    def sample(self, key, n=None, context: Array | None = None) -> Array:
        """Draws ``x (*n, *ctx_batch, dim)``."""
        context = self._check_context(context, "sample")
        batch = _shape(n) + (() if context is None else context.shape[:-1])
        z = self.base.sample(key, batch)
        return _map(lambda zi, ci: self.bijection.forward(zi, ci)[0], z, context, self.cond_dim)


def _map(fn, x, context, cond_dim):
    """Apply ``fn(vector, context_vector)`` over the leading axes of ``x``, broadcasting context."""
    batch = x.shape[:-1]
    if context is not None:
        try:
            batch = jnp.broadcast_shapes(batch, context.shape[:-1])
        except ValueError:
            raise ValueError(
                f"the batch shapes of x / the draws {tuple(batch)} and of `context` "
                f"{tuple(context.shape[:-1])} do not broadcast"
            ) from None
        context = jnp.broadcast_to(context, (*batch, cond_dim)).reshape(-1, cond_dim)
    x = jnp.broadcast_to(x, (*batch, x.shape[-1])).reshape(-1, x.shape[-1])
    out = jax.vmap(fn, in_axes=(0, None if context is None else 0))(x, context)
    return jax.tree.map(lambda a: a.reshape(*batch, *a.shape[1:]), out)


class Mixture(eqx.Module):
    """A finite mixture of flows: ``q(x) = sum_k w_k q_k(x)``.

    ``log q(x) = logsumexp_k (log w_k + log q_k(x))``; a draw picks component ``k`` with
    probability ``w_k`` and draws from it. The components are any distributions with the
    :class:`Flow` interface (``log_prob``, ``sample``, ``sample_and_log_prob``) of one
    ``dim`` and ``cond_dim``. Such mixtures are the posterior of an ensemble of variational
    fits, each fitted by its own ELBO and weighted equally (deep ensembles,
    Lakshminarayanan et al. 2017; MultiSWAG, Wilson & Izmailov 2020): every component
    covers one mode, the mixture several.

    Sampling evaluates every component for every draw (``K`` times the cost of one) and
    keeps the chosen one: exact, and shape-static under ``jit``. The choice is discrete, so
    no gradient of a draw reaches the weights: fit the components, not the mixture, by a
    reparameterised objective (``fp.fit`` takes a :class:`Flow`, not a mixture).

    Args:
        components: a sequence of ``K >= 1`` flows.
        weights: ``(K,)`` positive mixture weights (normalised here); default equal.
    """

    components: tuple
    log_weights: Array
    dim: int = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)

    def __init__(self, components, weights=None):
        components = tuple(components)
        if not components:
            raise ValueError("Mixture: need at least one component")
        dims = {(c.dim, c.cond_dim) for c in components}
        if len(dims) != 1:
            raise ValueError(f"Mixture: the components must share dim and cond_dim, got {sorted(dims, key=str)}")
        k = len(components)
        w = jnp.full((k,), 1.0 / k) if weights is None else jnp.asarray(weights, jnp.result_type(float))
        if w.shape != (k,) or not bool(jnp.all(jnp.isfinite(w) & (w > 0))):
            raise ValueError(f"Mixture: `weights` must be {k} positive finite numbers, got {weights!r}")
        self.components, self.log_weights = components, jnp.log(w / jnp.sum(w))
        ((self.dim, self.cond_dim),) = dims

    def log_prob(self, x: Array, context: Array | None = None) -> Array:
        """``x (*batch, dim) -> log q(x) (*batch,)``."""
        lps = jnp.stack([c.log_prob(x, context) for c in self.components], -1)
        return jax.nn.logsumexp(lps + self.log_weights, axis=-1)

    def _choose(self, key, draws):
        """From ``draws (K, *batch, dim)`` (one per component) keep component ``k ~ w`` per draw."""
        k = jax.random.categorical(key, self.log_weights, shape=draws.shape[1:-1])
        return jnp.take_along_axis(draws, k[None, ..., None], axis=0)[0]

    def sample(self, key, n=None, context: Array | None = None) -> Array:
        """Draws ``x (*n, *ctx_batch, dim)``."""
        k_pick, *keys = jax.random.split(key, len(self.components) + 1)
        return self._choose(k_pick, jnp.stack([c.sample(kc, n, context) for c, kc in zip(self.components, keys)]))

    def sample_and_log_prob(self, key, n=None, context: Array | None = None) -> tuple[Array, Array]:
        """Draws ``x (*n, *ctx_batch, dim)`` and their ``log q(x)`` (every component's density
        at every draw: needs each component's ``log_prob``, i.e. its inverse)."""
        x = self.sample(key, n, context)
        return x, self.log_prob(x, context)
