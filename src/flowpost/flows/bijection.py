"""Bijections: the base class and the ways of combining them.

Every bijection acts on ONE vector ``x`` of shape ``(dim,)`` (batches go through
``jax.vmap``, as :class:`flowpost.flows.Flow` does) and returns the transformed vector
together with ``log|det J|`` of the map that was applied::

    y, logdet = b.forward(x, context=None)     # logdet = log|det dy/dx|
    x, logdet = b.inverse(y, context=None)     # logdet = log|det dx/dy|

Bijections are Equinox modules, hence pytrees: their parameters are the inexact arrays
they hold (``eqx.is_inexact_array``); integer and boolean arrays (permutations,
autoregressive masks) are constants and are never trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from .._jit import filter_once
from .nn import fold_masks

Array = jax.Array


class NoInverseError(NotImplementedError):
    """Raised by bijections whose inverse has no closed form and is not solved numerically."""


class Bijection(eqx.Module):
    """Base class. Subclasses implement ``_forward`` and ``_inverse``.

    Attributes:
        dim: the length of the vectors it acts on (``None``: elementwise, any length).
        cond_dim: the length of the context vector, or ``None`` if unconditional.
    """

    dim: int | None = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)

    def forward(self, x: Array, context: Array | None = None) -> tuple[Array, Array]:
        """``x (dim,) -> (y (dim,), log|det dy/dx| ())``."""
        x, context = self._check(x, context, "forward")
        return self._forward(x, context)

    def inverse(self, y: Array, context: Array | None = None) -> tuple[Array, Array]:
        """``y (dim,) -> (x (dim,), log|det dx/dy| ())``."""
        y, context = self._check(y, context, "inverse")
        return self._inverse(y, context)

    def _forward(self, x, context):
        raise NotImplementedError

    def _inverse(self, y, context):
        raise NotImplementedError

    def _check(self, x, context, method):
        name = type(self).__name__
        x = as_float(x, self)
        if x.ndim != 1:
            raise ValueError(
                f"{name}.{method} acts on a single vector of shape ({self.dim if self.dim else 'dim'},), "
                f"got an array of shape {x.shape}. For a batch use jax.vmap, or Flow.log_prob / Flow.sample."
            )
        if self.dim is not None and x.shape[0] != self.dim:
            raise ValueError(f"{name}.{method}: expected a vector of length {self.dim}, got shape {x.shape}.")
        if self.cond_dim is not None:
            if context is None:
                raise ValueError(
                    f"{name} is conditional: {method} needs `context` of shape ({self.cond_dim},), got None."
                )
            context = as_float(context, self)
            if context.shape != (self.cond_dim,):
                raise ValueError(
                    f"{name}.{method}: expected `context` of shape ({self.cond_dim},), got {context.shape}."
                )
        return x, context


def as_float(x, module) -> Array:
    """``x`` as an array of ``module``'s floating dtype (that of its first float array; a
    module without arrays keeps a float ``x`` as it is and gives integers JAX's default
    float): integer input, or float32 data for a float64 flow, would otherwise break the
    dtype invariants of ``lax.scan`` inside the flow."""
    x = jnp.asarray(x)
    leaves = jax.tree.leaves(eqx.filter(module, eqx.is_inexact_array))
    if leaves:
        dtype = leaves[0].dtype
    else:
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.result_type(float)
    return x if x.dtype == dtype else x.astype(dtype)


def _common(values, what):
    values = {v for v in values if v is not None}
    if len(values) > 1:
        raise ValueError(f"cannot chain bijections with different {what}: {sorted(values)}")
    return values.pop() if values else None


class Chain(Bijection):
    """Composition ``b_n o ... o b_1``: ``forward`` applies ``b_1`` first."""

    layers: tuple[Bijection, ...]

    def __init__(self, layers: Sequence[Bijection]):
        self.layers = tuple(layers)
        if not self.layers:
            raise ValueError("Chain needs at least one bijection")
        self.dim = _common((b.dim for b in self.layers), "dim")
        self.cond_dim = _common((b.cond_dim for b in self.layers), "context sizes (cond_dim)")

    def _forward(self, x, context):
        total = jnp.zeros((), x.dtype)
        for b in self.layers:
            x, ld = b._forward(x, context)
            total = total + ld
        return x, total

    def _inverse(self, y, context):
        total = jnp.zeros((), y.dtype)
        for b in reversed(self.layers):
            y, ld = b._inverse(y, context)
            total = total + ld
        return y, total


class _Wrapper(Bijection):
    """A bijection defined by another one, ``self.bijection`` (same dim and context)."""

    bijection: Bijection

    def __init__(self, bijection: Bijection):
        self.bijection = bijection
        self.dim = bijection.dim
        self.cond_dim = bijection.cond_dim


class Invert(_Wrapper):
    """The inverse bijection: ``forward`` is ``b.inverse`` and vice versa.

    An inverse autoregressive flow is an inverted masked autoregressive one
    (Kingma et al. 2016; Papamakarios et al. 2017, section 3.3).
    """

    def __init__(self, bijection: Bijection):  # spelled out for type checkers: the fields are _Wrapper's
        super().__init__(bijection)

    def _forward(self, x, context):
        return self.bijection._inverse(x, context)

    def _inverse(self, y, context):
        return self.bijection._forward(y, context)


class Frozen(_Wrapper):
    """``b`` with its parameters held fixed: gradients stop at them, so an optimiser never
    moves them (Adam's update for a zero gradient is zero).

    Used for a fixed change of coordinates, e.g. whitening by a Laplace approximation
    ``x = mode + L v`` after trainable layers that then work in units of the posterior's
    standard deviations."""

    def __init__(self, bijection: Bijection):  # spelled out for type checkers: the fields are _Wrapper's
        super().__init__(bijection)

    def _forward(self, x, context):
        return jax.lax.stop_gradient(self.bijection)._forward(x, context)

    def _inverse(self, y, context):
        return jax.lax.stop_gradient(self.bijection)._inverse(y, context)


class Scan(Bijection):
    """``n`` layers of identical structure applied in turn with ``jax.lax.scan``.

    The layers' arrays are stacked along a leading axis, so the program (and its compile
    time) does not grow with the number of layers. Build it with :meth:`Scan.make`.
    """

    stacked: Bijection
    length: int = eqx.field(static=True)

    def __init__(self, stacked: Bijection, length: int):
        self.stacked = stacked
        self.length = length
        self.dim = stacked.dim
        self.cond_dim = stacked.cond_dim

    @classmethod
    def make(cls, make_layer, key: Array, length: int) -> Scan:
        """``make_layer(key) -> Bijection`` called for ``length`` independent keys.

        The layers are built in one program compiled for one run (:mod:`flowpost._jit`):
        run op by op, each random draw of a fresh shape would compile on its own."""
        return cls(filter_once(lambda k: eqx.filter_vmap(make_layer)(jax.random.split(k, length)))(key), length)

    def _scan(self, x, context, method, reverse):
        # masks of autoregressive layers: applied once to the stacked weights, not per step
        arrays, static = eqx.partition(fold_masks(self.stacked), eqx.is_array)

        def step(carry, layer_arrays):
            v, total = carry
            layer = eqx.combine(layer_arrays, static)
            v, ld = getattr(layer, method)(v, context)
            return (v, total + ld), None

        (x, total), _ = jax.lax.scan(step, (x, jnp.zeros((), x.dtype)), arrays, reverse=reverse)
        return x, total

    def _forward(self, x, context):
        return self._scan(x, context, "_forward", reverse=False)

    def _inverse(self, y, context):
        return self._scan(y, context, "_inverse", reverse=True)

    @property
    def layers(self) -> list[Bijection]:
        """The individual layers, unstacked (for inspection)."""
        arrays, static = eqx.partition(self.stacked, eqx.is_array)
        return [eqx.combine(jax.tree.map(lambda a, i=i: a[i], arrays), static) for i in range(self.length)]
