"""Elementwise bijections of R onto constrained sets; they act on vectors of any length
(``dim=None``) and are what targets use for constrained parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._math import softplus
from .bijection import Bijection


class _Elementwise(Bijection):
    def __init__(self):
        self.dim, self.cond_dim = None, None


def _on_support(y, inside, safe, inverse):
    """``inverse(y) -> (x, elementwise log|dx/dy|)`` where every ``y`` is ``inside`` the range;
    outside it the log-determinant is ``-inf`` (and ``x`` a finite placeholder), so a flow's
    ``log_prob`` of a point outside its support is ``-inf``, not NaN, with finite gradients."""
    ok = inside(y)
    x, ld = inverse(jnp.where(ok, y, safe))
    return x, jnp.where(jnp.all(ok), jnp.sum(ld), -jnp.inf)


class Exp(_Elementwise):
    """``R -> (0, inf)``: ``y = exp(x)``, ``log dy/dx = x``."""

    def _forward(self, x, context):
        return jnp.exp(x), jnp.sum(x)

    def _inverse(self, y, context):
        return _on_support(y, lambda v: v > 0, 1.0, lambda v: (jnp.log(v), -jnp.log(v)))


class Softplus(_Elementwise):
    """``R -> (0, inf)``: ``y = log(1 + e^x)``, ``log dy/dx = log sigmoid(x)``."""

    def _forward(self, x, context):
        return softplus(x), jnp.sum(jax.nn.log_sigmoid(x))

    def _inverse(self, y, context):
        def inverse(v):
            x = v + jnp.log(-jnp.expm1(-v))
            return x, -jax.nn.log_sigmoid(x)

        return _on_support(y, lambda v: v > 0, 1.0, inverse)


class Sigmoid(_Elementwise):
    """``R -> (0, 1)``: ``y = 1 / (1 + e^-x)``, ``log dy/dx = log s(x) + log s(-x)``.
    Its inverse is the logit; ``Invert(Sigmoid())`` is the logit bijection."""

    def _forward(self, x, context):
        return jax.nn.sigmoid(x), jnp.sum(jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x))

    def _inverse(self, y, context):
        def inverse(v):
            x = jnp.log(v) - jnp.log1p(-v)
            return x, -(jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x))

        return _on_support(y, lambda v: (v > 0) & (v < 1), 0.5, inverse)


class Tanh(_Elementwise):
    """``R -> (-1, 1)``: ``log dy/dx = 2 (log 2 - x - softplus(-2x))`` (stable form)."""

    def _forward(self, x, context):
        return jnp.tanh(x), jnp.sum(2 * (jnp.log(2.0) - x - softplus(-2 * x)))

    def _inverse(self, y, context):
        def inverse(v):
            x = jnp.arctanh(v)
            return x, -2 * (jnp.log(2.0) - x - softplus(-2 * x))

        return _on_support(y, lambda v: jnp.abs(v) < 1, 0.0, inverse)


class AffineElementwise(Bijection):
    """``y = loc + scale * x`` per coordinate, ``scale = exp(log_scale)``; trainable arrays.
    With ``dim=None`` and scalar ``loc``/``log_scale`` it acts on vectors of any length."""

    loc: jax.Array
    log_scale: jax.Array

    def __init__(self, loc=0.0, scale=1.0, dim=None):
        self.dim, self.cond_dim = dim, None
        shape = () if dim is None else (dim,)
        self.loc = jnp.broadcast_to(jnp.asarray(loc, float), shape)
        self.log_scale = jnp.broadcast_to(jnp.log(jnp.asarray(scale, float)), shape)

    def _forward(self, x, context):
        ld = jnp.broadcast_to(self.log_scale, x.shape)
        return self.loc + jnp.exp(self.log_scale) * x, jnp.sum(ld)

    def _inverse(self, y, context):
        ld = jnp.broadcast_to(self.log_scale, y.shape)
        return (y - self.loc) * jnp.exp(-self.log_scale), -jnp.sum(ld)
