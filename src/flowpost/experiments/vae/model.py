"""The VAE: encoder, posterior flow, decoder and prior, as one Equinox module.

    log p(x) >= E_q[ log p(x | zK) + log p(zK) - log q(zK | x) ]     (Kingma & Welling 2014)

All methods act on ONE flattened image ``x (D,)``; batches go through ``jax.vmap``
(see :mod:`.objectives`). :class:`VAEConfig` names an architecture, and
:func:`make_vae` builds it, so a checkpoint can be rebuilt from its config.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ..._checks import check_ints, plain_numbers
from . import likelihoods
from .nets import GatedConvDecoder, GatedConvEncoder, MLPDecoder, MLPEncoder
from .posterior import FLOWS, Posterior, make_flow

ARCHS = ("mlp", "gated")


class VAE(eqx.Module):
    """``encoder``, ``posterior`` (flow on top of the encoder's Gaussian), ``decoder`` and a
    static ``likelihood``; prior ``N(0, I)`` on ``R^latent``."""

    encoder: Any  # a module x -> (mu, log_sigma, h) with a `latent` attribute
    posterior: Posterior
    decoder: Any  # a module z -> likelihood parameters (D, n_params) with a `latent` attribute
    likelihood: Any = eqx.field(static=True)
    latent: int = eqx.field(static=True)

    def __init__(self, encoder, decoder, flow, likelihood):
        if encoder.latent != decoder.latent:
            raise ValueError(f"VAE: encoder.latent ({encoder.latent}) != decoder.latent ({decoder.latent})")
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent = encoder.latent
        self.posterior = Posterior(flow, self.latent)

    def sample_and_log_q(self, x, key, k: int):
        """``k`` posterior draws for one image: ``z (k, latent)``, ``log q(z | x) (k,)``."""
        mu, log_sigma, h = self.encoder(x)
        return self.posterior.sample_and_log_prob(key, mu, log_sigma, h, k)

    def log_px_given_z(self, x, z):
        """``log p(x | z)`` for one image ``x (D,)`` and draws ``z (k, latent)`` -> ``(k,)``."""
        return jax.vmap(lambda zi: self.likelihood.log_prob(x, self.decoder(zi)))(z)

    def log_pz(self, z):
        """Standard-normal prior, ``z (..., latent) -> (...)``."""
        return -0.5 * jnp.sum(z**2, -1) - 0.5 * self.latent * math.log(2 * math.pi)

    def log_weights(self, x, key, k: int):
        """``(log p(x|z), log p(z), log q(z|x))``, each ``(k,)``, for ``k`` draws of one image."""
        z, log_q = self.sample_and_log_q(x, key, k)
        return self.log_px_given_z(x, z), self.log_pz(z), log_q

    def reconstruct(self, x, key):
        """Mean of ``p(x | z)`` at one posterior draw ``z ~ q(z | x)``: ``(D,)``."""
        z, _ = self.sample_and_log_q(x, key, 1)
        return self.likelihood.mean(self.decoder(z[0]))

    def generate(self, key, n: int):
        """Means of ``p(x | z)`` for ``n`` prior draws: ``(n, D)``."""
        z = jax.random.normal(key, (n, self.latent))
        return jax.vmap(lambda zi: self.likelihood.mean(self.decoder(zi)))(z)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Everything that fixes a VAE's architecture (and so its checkpoint layout)."""

    flow: str = "none"
    arch: str = "mlp"
    latent: int = 64
    image_shape: tuple[int, int] = (28, 28)
    likelihood: str = "bernoulli"
    hidden: tuple[int, ...] = (300, 300)  # MLP only
    context: int = 64  # MLP only; the gated encoder's context is its 256-vector
    flow_options: tuple[tuple[str, Any], ...] = ()  # overrides of posterior.DEFAULTS

    def __post_init__(self):
        plain_numbers(self)
        if self.flow not in FLOWS:
            raise ValueError(f"`flow` must be one of {FLOWS}, got {self.flow!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"`arch` must be one of {ARCHS}, got {self.arch!r}")
        check_ints(latent=self.latent, context=self.context)
        likelihoods.get(self.likelihood)
        if len(tuple(self.image_shape)) != 2:
            raise ValueError(f"`image_shape` must be (height, width), got {self.image_shape!r}")
        check_ints(height=self.image_shape[0], width=self.image_shape[1])
        if self.arch == "mlp" and not tuple(self.hidden):
            raise ValueError(
                "`hidden` must give at least one hidden-layer width for arch='mlp' (e.g. (300, 300)), got ()"
            )
        check_ints(**{f"hidden[{i}]": h for i, h in enumerate(self.hidden)})
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        object.__setattr__(self, "hidden", tuple(int(s) for s in self.hidden))
        object.__setattr__(
            self,
            "flow_options",
            tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in dict(self.flow_options).items())),
        )

    def to_dict(self) -> dict:
        """The configuration as plain JSON-able data (saved in checkpoints)."""
        d = dataclasses.asdict(self)
        d["flow_options"] = dict(self.flow_options)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**d, "flow_options": tuple(dict(d.get("flow_options", {})).items())})


def make_vae(config: VAEConfig, key) -> VAE:
    """Build the VAE that ``config`` describes, initialised from ``key``.

    The initialisation runs as one compiled program (eagerly, every random draw of a new
    shape would compile on its own)."""
    if not isinstance(config, VAEConfig):
        raise TypeError(f"`config` must be a VAEConfig, got {type(config).__name__}")
    return _build(config, key)


@eqx.filter_jit
def _build(config: VAEConfig, key) -> VAE:
    ke, kd, kf = jax.random.split(key, 3)
    lik = likelihoods.get(config.likelihood)
    dim = config.image_shape[0] * config.image_shape[1]
    if config.arch == "mlp":
        enc = MLPEncoder(ke, dim, config.latent, config.hidden, config.context)
        dec = MLPDecoder(kd, dim, config.latent, lik.n_params, config.hidden)
    else:
        enc = GatedConvEncoder(ke, config.image_shape, config.latent)
        dec = GatedConvDecoder(kd, config.image_shape, config.latent, lik.n_params)
    flow = make_flow(config.flow, kf, config.latent, enc.context, **dict(config.flow_options))
    return VAE(enc, dec, flow, lik)
