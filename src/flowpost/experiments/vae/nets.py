"""Encoders and decoders for one flattened image (batches go through ``jax.vmap``).

Interface (any module following it works with :class:`~.model.VAE`):

    encoder(x (D,)) -> (mu (latent,), log_sigma (latent,), h (context,))
    decoder(z (latent,)) -> params (D, likelihood.n_params)

with attributes ``encoder.latent``, ``encoder.context`` and ``decoder.latent``. ``h`` is
the context vector that amortises the posterior flow's parameters (Kingma et al. 2016;
van den Berg et al. 2018).

- :class:`MLPEncoder` / :class:`MLPDecoder`: fully connected, ELU activations.
- :class:`GatedConvEncoder` / :class:`GatedConvDecoder`: the gated convolutional networks
  of van den Berg et al. 2018 (Sylvester flows, appendix; from Dauphin et al. 2017's gated
  linear units): every layer is ``conv_h(x) * sigmoid(conv_g(x))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from ...flows.nn import Linear


def _dense_stack(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return tuple(Linear(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:]))


class MLPEncoder(eqx.Module):
    """``x -> hidden layers (ELU) -> (mu, log_sigma, h)``; ``h = ELU(linear(features))``."""

    layers: tuple[Linear, ...]
    head: Linear  # -> mu, log_sigma
    context_head: Linear
    latent: int = eqx.field(static=True)
    context: int = eqx.field(static=True)

    def __init__(self, key, dim: int, latent: int, hidden: Sequence[int] = (300, 300), context: int = 64):
        k1, k2, k3 = jax.random.split(key, 3)
        self.layers = _dense_stack(k1, [dim, *hidden])
        self.head = Linear(k2, hidden[-1], 2 * latent)
        self.context_head = Linear(k3, hidden[-1], context)
        self.latent, self.context = latent, context

    def __call__(self, x):
        for layer in self.layers:
            x = jax.nn.elu(layer(x))
        mu, log_sigma = jnp.split(self.head(x), 2)
        return mu, log_sigma, jax.nn.elu(self.context_head(x))


class MLPDecoder(eqx.Module):
    """``z -> hidden layers (ELU) -> params (D, n_params)``."""

    layers: tuple[Linear, ...]
    dim: int = eqx.field(static=True)
    n_params: int = eqx.field(static=True)
    latent: int = eqx.field(static=True)

    def __init__(self, key, dim: int, latent: int, n_params: int = 1, hidden: Sequence[int] = (300, 300)):
        self.layers = _dense_stack(key, [latent, *hidden, dim * n_params])
        self.dim, self.n_params, self.latent = dim, n_params, latent

    def __call__(self, z):
        for layer in self.layers[:-1]:
            z = jax.nn.elu(layer(z))
        return self.layers[-1](z).reshape(self.n_params, self.dim).T


class GatedConv(eqx.Module):
    """Gated convolution ``conv_h(x) * sigmoid(conv_g(x))`` (Dauphin et al. 2017), one
    convolution with twice the channels split in two; ``transpose=True`` for upsampling."""

    conv: eqx.Module

    def __init__(self, key, c_in, c_out, kernel, stride=1, padding=0, output_padding=0, transpose=False):
        if transpose:
            self.conv = eqx.nn.ConvTranspose2d(
                c_in, 2 * c_out, kernel, stride=stride, padding=padding, output_padding=output_padding, key=key
            )
        else:
            self.conv = eqx.nn.Conv2d(c_in, 2 * c_out, kernel, stride=stride, padding=padding, key=key)

    def __call__(self, x):
        h, g = jnp.split(self.conv(x), 2, axis=0)
        return h * jax.nn.sigmoid(g)


class GatedConvEncoder(eqx.Module):
    """van den Berg et al. 2018: six gated convolutions (5x5; strides 1,2,1,2,1; the last
    one covers the remaining (H/4, W/4) map) to a 256-vector ``h``, then linear heads for
    ``mu`` and ``log_sigma``. Input ``(H*W,)`` with ``H, W`` divisible by 4."""

    convs: tuple[GatedConv, ...]
    head: Linear
    image_shape: tuple[int, int] = eqx.field(static=True)
    latent: int = eqx.field(static=True)
    context: int = eqx.field(static=True)

    def __init__(self, key, image_shape, latent: int, context: int = 256):
        h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"GatedConvEncoder: image height and width must be divisible by 4, got {image_shape}")
        ks = jax.random.split(key, 7)
        spec = [(1, 32, 5, 1, 2), (32, 32, 5, 2, 2), (32, 64, 5, 1, 2), (64, 64, 5, 2, 2), (64, 64, 5, 1, 2)]
        convs = [GatedConv(k, *s) for k, s in zip(ks, spec)]
        convs.append(GatedConv(ks[5], 64, context, (h // 4, w // 4)))
        self.convs = tuple(convs)
        self.head = Linear(ks[6], context, 2 * latent)
        self.image_shape, self.latent, self.context = tuple(image_shape), latent, context

    def __call__(self, x):
        x = x.reshape(1, *self.image_shape)
        for c in self.convs:
            x = c(x)
        h = x.reshape(-1)
        mu, log_sigma = jnp.split(self.head(h), 2)
        return mu, log_sigma, h


class GatedConvDecoder(eqx.Module):
    """van den Berg et al. 2018: ``z`` as a 1x1 map, a gated transposed convolution to
    (H/4, W/4), gated (transposed) 5x5 convolutions upsampling twice to (H, W), and a 1x1
    convolution to ``n_params`` channels."""

    convs: tuple[GatedConv, ...]
    out: eqx.nn.Conv2d
    image_shape: tuple[int, int] = eqx.field(static=True)
    n_params: int = eqx.field(static=True)
    latent: int = eqx.field(static=True)

    def __init__(self, key, image_shape, latent: int, n_params: int = 1):
        h, w = image_shape
        ks = jax.random.split(key, 7)
        self.convs = (
            GatedConv(ks[0], latent, 64, (h // 4, w // 4), transpose=True),
            GatedConv(ks[1], 64, 64, 5, 1, 2, transpose=True),
            GatedConv(ks[2], 64, 32, 5, 2, 2, output_padding=1, transpose=True),
            GatedConv(ks[3], 32, 32, 5, 1, 2, transpose=True),
            GatedConv(ks[4], 32, 32, 5, 2, 2, output_padding=1, transpose=True),
            GatedConv(ks[5], 32, 32, 5, 1, 2),
        )
        self.out = eqx.nn.Conv2d(32, n_params, 1, key=ks[6])
        self.image_shape, self.n_params, self.latent = tuple(image_shape), n_params, latent

    def __call__(self, z):
        x = z.reshape(-1, 1, 1)
        for c in self.convs:
            x = c(x)
        return self.out(x).reshape(self.n_params, -1).T
