"""Conditioner networks: a plain MLP (for couplings) and MADE (for autoregressive flows).

Both take an optional context vector, concatenated to the input, and both start with a
zero output layer, so that the flows they drive start at the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _uniform(key, shape, fan_in, dtype):
    lim = 1.0 / np.sqrt(max(fan_in, 1))
    return jax.random.uniform(key, shape, dtype, -lim, lim)


class Linear(eqx.Module):
    """``y = W x + b`` with ``W (out, in)``; optional boolean ``mask`` on ``W`` (constant)."""

    weight: Array
    bias: Array
    mask: Array | None = None

    def __init__(self, key, n_in, n_out, *, zero=False, mask=None, dtype=None):
        dtype = dtype or jnp.zeros(()).dtype
        kw, kb = jax.random.split(key)
        if zero:
            self.weight = jnp.zeros((n_out, n_in), dtype)
            self.bias = jnp.zeros((n_out,), dtype)
        else:
            fan_in = n_in if mask is None else int(np.max(np.sum(mask, axis=1), initial=1))
            self.weight = _uniform(kw, (n_out, n_in), fan_in, dtype)
            self.bias = _uniform(kb, (n_out,), fan_in, dtype)
        self.mask = None if mask is None else jnp.asarray(mask, bool)

    def __call__(self, x):
        w = self.weight if self.mask is None else jnp.where(self.mask, self.weight, 0.0)
        return w @ x + self.bias

    def masked(self) -> Linear:
        """The same map with the mask folded into the weight (``mask=None``).

        Gradients still reach only the unmasked entries of the original weight. Used
        to apply masks once, outside loops (see :func:`fold_masks`).
        """
        if self.mask is None:
            return self
        w = jnp.where(self.mask, self.weight, 0.0)
        return eqx.tree_at(lambda m: (m.weight, m.mask), self, (w, None), is_leaf=lambda v: v is None)


def fold_masks(tree):
    """``tree`` with every masked :class:`Linear` replaced by :meth:`Linear.masked`.

    Same function, but the ``where(mask, weight, 0)`` is computed once here instead of
    at every call. :class:`~flowpost.flows.Scan` applies it to its stacked layers before
    its loop (so masks are applied to all layers in one vectorised op, and neither masks
    nor masked weights are saved per iteration for the backward pass).
    """
    return jax.tree.map(
        lambda n: n.masked() if isinstance(n, Linear) else n, tree, is_leaf=lambda n: isinstance(n, Linear)
    )


class MLP(eqx.Module):
    """``R^n_in -> R^n_out`` multilayer perceptron; the last layer starts at zero."""

    layers: tuple[Linear, ...]
    activation: Callable = eqx.field(static=True)

    def __init__(self, key, n_in, n_out, hidden: Sequence[int], activation=jax.nn.relu):
        sizes = [n_in, *hidden, n_out]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            Linear(k, a, b, zero=(i == len(sizes) - 2)) for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
        )
        self.activation = activation

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


def made_degrees(dim: int, hidden: Sequence[int]) -> list[np.ndarray]:
    """Degrees of MADE's units (Germain et al. 2015): inputs 1..dim, hidden cyclic in [1, dim-1]."""
    degrees = [np.arange(1, dim + 1)]
    for h in hidden:
        degrees.append(np.arange(h) % max(dim - 1, 1) + 1 if dim > 1 else np.zeros(h, int))
    return degrees


class MADE(eqx.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015).

    Maps ``x (dim,)`` (and an optional ``context (cond_dim,)``, connected to every hidden
    unit) to ``params (dim, n_params)`` where row ``i`` depends only on ``x[:i]``
    (0-based: on ``x_1..x_{i}`` strictly before ``x_{i+1}``) and on the context.
    """

    layers: tuple[Linear, ...]
    activation: Callable = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    n_params: int = eqx.field(static=True)

    def __init__(self, key, dim, n_params, hidden: Sequence[int], cond_dim=None, activation=jax.nn.relu):
        cond_dim = cond_dim or 0
        degrees = made_degrees(dim, hidden)
        out_deg = np.repeat(np.arange(1, dim + 1), n_params)  # output j*n_params + p has degree j+1
        keys = jax.random.split(key, len(hidden) + 1)
        layers = []
        for i, (k, d_in, d_out) in enumerate(zip(keys, degrees, degrees[1:] + [out_deg])):
            last = i == len(hidden)
            mask = (d_out[:, None] > d_in[None, :]) if last else (d_out[:, None] >= d_in[None, :])
            if i == 0 and cond_dim:
                mask = np.concatenate([mask, np.ones((len(d_out), cond_dim), bool)], axis=1)
            layers.append(Linear(k, mask.shape[1], mask.shape[0], zero=last, mask=mask))
        self.layers = tuple(layers)
        self.activation = activation
        self.dim = dim
        self.n_params = n_params

    def __call__(self, x, context=None):
        h = x if context is None else jnp.concatenate([x, context])
        for layer in self.layers[:-1]:
            h = self.activation(layer(h))
        return self.layers[-1](h).reshape(self.dim, self.n_params)
