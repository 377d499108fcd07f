"""Defaults shared by the trainers: the optimiser schedule and PRNG key handling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def default_optimizer(steps: int, learning_rate: float = 5e-3) -> optax.GradientTransformation:
    """Adam with a short linear warm-up (``min(100, steps / 10)`` steps from a tenth of the
    rate), cosine decay to 1% over ``steps``, and global-norm clipping at 10."""
    warmup = min(100, max(steps // 10, 1))
    schedule = optax.warmup_cosine_decay_schedule(
        learning_rate / 10, learning_rate, warmup, max(steps, warmup + 1), learning_rate / 100
    )
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))


def as_key(key, who: str = "fit"):
    """A typed PRNG key from ``jax.random.key(...)`` or a legacy ``PRNGKey`` (uint32 (2,))."""
    if key is None:
        raise TypeError(f"{who}: pass an explicit PRNG key, e.g. key=jax.random.key(0)")
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.shape == (2,) and key.dtype == jnp.uint32:
        return jax.random.wrap_key_data(key)
    raise TypeError(f"{who}: `key` must be a jax.random.key or PRNGKey, got {key!r}")
