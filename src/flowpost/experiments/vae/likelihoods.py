"""Decoder likelihoods ``log p(x | z)`` for one flattened image.

A likelihood is a small static object with ``n_params`` (numbers per pixel the decoder
outputs), ``log_prob(x (D,), params (D, n_params)) -> ()``, ``mean(params) -> (D,)``
(for plots) and ``check(x, name)`` (eager input check, raises ValueError).

- :class:`Bernoulli`: binary pixels, ``params`` = logits.
- :class:`DiscretizedLogistic`: grey levels ``k / (levels - 1)``, a logistic of mean
  ``mu`` and scale ``s`` integrated over each level's bin, edge bins taking the tails
  (Kingma et al. 2016 use it for images; van den Berg et al. 2018 for Frey faces).
- :class:`Gaussian`: continuous pixels, ``N(x; mu, s^2)`` per pixel, ``params`` = (mu,
  log s); a fixed ``log_scale`` makes the scale a constant instead.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..._math import softplus
from .data import check_binary


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    """Binary pixels: ``x ~ Bernoulli(sigmoid(logit))``, one logit per pixel."""

    n_params: int = 1

    def log_prob(self, x, params):
        """``log p(x | params)`` of one image ``x (D,)``, decoder output ``params (D, n_params)``."""
        logits = params[:, 0]
        # x log sigmoid(l) + (1 - x) log sigmoid(-l) = x l - softplus(l)
        return jnp.sum(x * logits - softplus(logits))

    def mean(self, params):
        """The mean of ``p(x | params)`` per pixel, ``(D,)``."""
        return jax.nn.sigmoid(params[:, 0])

    def check(self, x, name="x"):
        """Raise ``ValueError`` unless the images ``x`` are valid data for this decoder."""
        check_binary(x, name)


@dataclasses.dataclass(frozen=True)
class DiscretizedLogistic:
    """Grey levels ``k / (levels - 1)``: a logistic with mean in (0, 1) and a log-scale per
    pixel, integrated over each level's bin (edge bins take the tails; Salimans et al. 2017)."""

    levels: int = 256
    min_log_scale: float = -7.0
    n_params: int = 2

    def _mu_log_s(self, params):
        mu = jax.nn.sigmoid(params[:, 0])  # in (0, 1), the data range
        return mu, jnp.maximum(params[:, 1], self.min_log_scale)

    def log_prob(self, x, params):
        """``log p(x | params)`` of one image ``x (D,)``, decoder output ``params (D, n_params)``."""
        mu, log_s = self._mu_log_s(params)
        half = 0.5 / (self.levels - 1)
        inv_s = jnp.exp(-log_s)
        upper = (x + half - mu) * inv_s
        lower = (x - half - mu) * inv_s
        top, bottom = x > 1 - half, x < half
        # log(sigmoid(upper) - sigmoid(lower)); where that difference underflows, the log
        # density at the bin centre times the bin width (Salimans et al. 2017, PixelCNN++)
        centre = (x - mu) * inv_s
        log_pdf_mid = centre - log_s - 2 * softplus(centre) + math.log(2 * half)
        delta = jax.nn.sigmoid(upper) - jax.nn.sigmoid(lower)
        mid = jnp.where(delta > 1e-5, jnp.log(jnp.maximum(delta, 1e-12)), log_pdf_mid)
        log_cdf_up = jax.nn.log_sigmoid(upper)  # bottom bin: P(X <= x + half)
        log_sf_low = jax.nn.log_sigmoid(-lower)  # top bin: P(X >= x - half)
        lp = jnp.where(top, log_sf_low, jnp.where(bottom, log_cdf_up, mid))
        return jnp.sum(lp)

    def mean(self, params):
        """The mean of ``p(x | params)`` per pixel, ``(D,)``."""
        return self._mu_log_s(params)[0]

    def check(self, x, name="x"):
        """Raise ``ValueError`` unless the images ``x`` are valid data for this decoder."""
        x = np.asarray(x)
        if not np.all(np.isfinite(x)):  # comparisons with NaN are all False: check first
            raise ValueError(f"`{name}`: images hold {int(np.sum(~np.isfinite(x)))} non-finite value(s)")
        k = x * (self.levels - 1)
        if np.any((x < 0) | (x > 1)) or np.any(np.abs(k - np.round(k)) > 1e-3):
            raise ValueError(
                f"`{name}`: a discretised-logistic decoder needs grey levels k/{self.levels - 1} "
                f"in [0, 1] (k integer), got values in [{x.min()}, {x.max()}] not on that grid"
            )


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """Real-valued pixels: ``x ~ N(mu, s^2)``, ``log s`` fixed (``log_scale``) or per pixel."""

    log_scale: float | None = None  # None: the decoder outputs log s per pixel
    n_params: int = 2

    def log_prob(self, x, params):
        """``log p(x | params)`` of one image ``x (D,)``, decoder output ``params (D, n_params)``."""
        mu = params[:, 0]
        log_s = params[:, 1] if self.log_scale is None else jnp.full_like(mu, self.log_scale)
        return jnp.sum(-0.5 * ((x - mu) * jnp.exp(-log_s)) ** 2 - log_s - 0.5 * math.log(2 * math.pi))

    def mean(self, params):
        """The mean of ``p(x | params)`` per pixel, ``(D,)``."""
        return params[:, 0]

    def check(self, x, name="x"):
        """Raise ``ValueError`` unless the images ``x`` are valid data for this decoder."""
        if not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(f"`{name}`: images hold non-finite values")


LIKELIHOODS = {"bernoulli": Bernoulli, "logistic": DiscretizedLogistic, "gaussian": Gaussian}


def get(name: str):
    """The decoder likelihood named ``name`` (``bernoulli``, ``logistic``, ``gaussian``) with its defaults."""
    if name not in LIKELIHOODS:
        raise ValueError(f"`likelihood` must be one of {tuple(LIKELIHOODS)}, got {name!r}")
    return LIKELIHOODS[name]()
