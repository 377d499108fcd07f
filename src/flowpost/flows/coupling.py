"""Coupling layers (Dinh et al. 2017, "Density estimation using Real NVP"; Durkan et al.
2019 for the spline transformer).

The first ``n_cond`` coordinates pass unchanged and, with the optional context, feed an
MLP that outputs the parameters of an elementwise transformer applied to the rest::

    y[:n_cond] = x[:n_cond]
    y[n_cond:] = tau(x[n_cond:]; MLP(x[:n_cond], context))

Alternate which half is transformed by placing a permutation between couplings (the
constructors in :mod:`flowpost.flows.constructors` use :class:`Reverse`). Both directions
cost one network evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from .bijection import Bijection
from .nn import MLP
from .transformers import Affine, RationalQuadraticSpline


class Coupling(Bijection):
    """Coupling layer with any transformer (:class:`Affine` or :class:`RationalQuadraticSpline`).

    Args:
        key: PRNG key for the conditioner's initial weights.
        dim: vector length.
        transformer: elementwise transformer (default affine, i.e. RealNVP).
        hidden: hidden widths of the conditioner MLP.
        cond_dim: context length for a conditional layer, or ``None``.
        n_cond: how many leading coordinates condition the rest (default ``dim // 2``).
    """

    conditioner: MLP
    transformer: object = eqx.field(static=True)
    n_cond: int = eqx.field(static=True)

    def __init__(
        self,
        key,
        dim,
        transformer=None,
        hidden: Sequence[int] = (64, 64),
        cond_dim=None,
        n_cond=None,
        activation=jax.nn.relu,
    ):
        self.dim, self.cond_dim = dim, cond_dim
        self.transformer = transformer if transformer is not None else Affine()
        self.n_cond = dim // 2 if n_cond is None else n_cond
        if not 0 <= self.n_cond < dim:
            raise ValueError(f"Coupling: n_cond must be in [0, {dim}), got {self.n_cond}")
        n_out = (dim - self.n_cond) * self.transformer.n_params
        self.conditioner = MLP(key, self.n_cond + (cond_dim or 0), n_out, hidden, activation)

    def _params(self, x_cond, context):
        h = x_cond if context is None else jnp.concatenate([x_cond, context])
        return self.conditioner(h).reshape(self.dim - self.n_cond, self.transformer.n_params)

    def _apply(self, x, context, fn):
        x1, x2 = jnp.split(x, [self.n_cond])  # one split: its gradient is one concatenation
        y2, ld = fn(self._params(x1, context), x2)
        return jnp.concatenate([x1, y2]), jnp.sum(ld)

    def _forward(self, x, context):
        return self._apply(x, context, self.transformer.forward)

    def _inverse(self, y, context):
        return self._apply(y, context, self.transformer.inverse)


def affine_coupling(key, dim, **kwargs) -> Coupling:
    """RealNVP's affine coupling layer."""
    return Coupling(key, dim, Affine(), **kwargs)


def spline_coupling(key, dim, knots=8, bound=5.0, **kwargs) -> Coupling:
    """Rational-quadratic spline coupling layer (Durkan et al. 2019)."""
    return Coupling(key, dim, RationalQuadraticSpline(knots=knots, bound=bound), **kwargs)
