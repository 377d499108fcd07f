"""Test-set evaluation in nats per image.

- :func:`log_likelihood`: the importance-sampling estimate of ``log p(x)`` (Rezende et al.
  2014; Burda et al. 2015) ``log (1/S) sum_s p(x, z_s) / q(z_s | x)``, ``z_s ~ q(z | x)``,
  with ``S = 5000`` by default, summed in chunks with a running ``logaddexp`` (memory
  independent of ``S``). ``p-hat = (1/S) sum_s w_s`` is unbiased for ``p(x)``; its log
  is a stochastic lower bound that tightens as ``S`` grows.
- :func:`elbo`: the single-draw ELBO per image.
- :func:`evaluate`: both, averaged over images, as positive numbers ``nll = -mean log
  p(x)`` and ``neg_elbo = -mean ELBO``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..._checks import check_ints
from ...engine import ProgressBar
from . import objectives


def _batches(x, batch):
    """``x (n, D) -> (n_batches, batch, D)`` padded by repeating the last image."""
    n = x.shape[0]
    nb = -(-n // batch)
    pad = nb * batch - n
    if pad:
        x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
    return jnp.asarray(x).reshape(nb, batch, -1), n


def _check_images(model, x, name):
    x = np.asarray(x, dtype=jax.dtypes.canonicalize_dtype(np.float64))  # float32 unless x64 is on
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n_images, D), got {x.shape}")
    model.likelihood.check(x, name)
    return x


@eqx.filter_jit
def _log_p_hat(model, xb, key, samples, chunk):
    n_chunks = samples // chunk

    def body(acc, k):
        lpx, lpz, lq = objectives.log_weights(model, xb, k, chunk)
        return jnp.logaddexp(acc, jax.nn.logsumexp(lpx + lpz - lq, axis=1)), None

    acc0 = jnp.full((xb.shape[0],), -jnp.inf, xb.dtype)
    acc, _ = jax.lax.scan(body, acc0, jax.random.split(key, n_chunks))
    return acc - math.log(samples)


def log_likelihood(
    model, x, key, samples: int = 5000, chunk: int = 500, batch: int = 100, progress: bool = False
) -> np.ndarray:
    """``log p-hat(x)`` per image, ``x (n, D) -> (n,)``, with ``samples`` importance draws
    each, ``chunk`` at a time (``chunk`` is lowered to a divisor of ``samples``)."""
    check_ints(samples=samples, chunk=chunk, batch=batch)
    x = _check_images(model, x, "x")
    chunk = math.gcd(samples, min(chunk, samples))
    xb, n = _batches(x, min(batch, len(x)))
    keys = jax.random.split(key, xb.shape[0])
    out = []
    with ProgressBar(xb.shape[0], f"log p(x), {samples} samples", enabled=progress) as bar:
        for i in range(xb.shape[0]):
            out.append(np.asarray(_log_p_hat(model, xb[i], keys[i], samples, chunk)))
            bar.update(i + 1)
    return np.concatenate(out)[:n]


@eqx.filter_jit
def _elbo_batches(model, xb, key):
    keys = jax.random.split(key, xb.shape[0])
    return jax.lax.map(lambda a: objectives.elbo(model, a[0], a[1])[1], (xb, keys))


def batched_elbo(model, xb, n: int, key) -> np.ndarray:
    """Single-draw ELBO of the ``n`` real images of ``_batches``' padded ``xb`` (the padding
    repeats the last image; it must not count)."""
    return np.asarray(_elbo_batches(model, xb, key)).reshape(-1)[:n]


def elbo(model, x, key, batch: int = 500) -> np.ndarray:
    """Single-draw ELBO per image, ``x (n, D) -> (n,)``."""
    x = _check_images(model, x, "x")
    xb, n = _batches(x, min(batch, len(x)))
    return batched_elbo(model, xb, n, key)


def evaluate(model, x, key, samples: int = 5000, chunk: int = 500, progress: bool = False) -> dict:
    """``{"neg_elbo", "nll", "n_images", "samples"}`` on images ``x``; nats per image."""
    k1, k2 = jax.random.split(key)
    e = elbo(model, x, k1)
    ll = log_likelihood(model, x, k2, samples=samples, chunk=chunk, progress=progress)
    return {
        "neg_elbo": float(-np.mean(e)),
        "nll": float(-np.mean(ll)),
        "n_images": int(len(e)),
        "samples": int(samples),
    }
