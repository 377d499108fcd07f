"""Masked autoregressive bijections: MAF (Papamakarios et al. 2017) and, by inversion,
IAF (Kingma et al. 2016), with a MADE conditioner (Germain et al. 2015).

:class:`MaskedAutoregressive` is the MAF direction. With ``x`` the data side and ``z`` the
noise side, ``forward`` is ``z -> x`` and ``inverse`` is ``x -> z``::

    inverse  (x -> z):  z_i = tau^{-1}(x_i; MADE(x)_i)     one network pass   (FAST)
    forward  (z -> x):  x_i = tau(z_i; MADE(x)_i)          dim passes          (slow)

so a MAF evaluates densities of given points in one pass and samples sequentially.
``Invert(MaskedAutoregressive(...))`` is an IAF: ``forward`` (sampling) takes one pass and
``inverse`` (density of an external point) takes ``dim`` passes; the sample's own
density is free, which is what variational inference needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from .bijection import Bijection
from .nn import MADE, fold_masks
from .transformers import Affine


class MaskedAutoregressive(Bijection):
    """MAF layer: fast ``inverse`` (density), sequential ``forward`` (sampling).

    Args:
        key: PRNG key.
        dim: vector length.
        transformer: elementwise transformer (default :class:`Affine`; a
            :class:`RationalQuadraticSpline` gives an autoregressive neural spline flow).
        hidden: MADE hidden widths.
        cond_dim: context length, or ``None``.
    """

    made: MADE
    transformer: object = eqx.field(static=True)

    def __init__(
        self, key, dim, transformer=None, hidden: Sequence[int] = (64, 64), cond_dim=None, activation=jax.nn.relu
    ):
        self.dim, self.cond_dim = dim, cond_dim
        self.transformer = transformer if transformer is not None else Affine()
        self.made = MADE(key, dim, self.transformer.n_params, hidden, cond_dim, activation)

    def _inverse(self, x, context):
        z, ld = self.transformer.inverse(self.made(x, context), x)
        return z, jnp.sum(ld)

    def _forward(self, z, context):
        # After step i the first i+1 coordinates are exact; dim steps give all of them.
        made = fold_masks(self.made)  # mask the weights once, not at every step

        def step(_, x):
            return self.transformer.forward(made(x, context), z)[0]

        x = jax.lax.fori_loop(0, self.dim, step, jnp.zeros_like(z))
        _, ld = self.transformer.forward(made(x, context), z)
        return x, jnp.sum(ld)
