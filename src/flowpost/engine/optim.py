"""Defaults shared by the trainers: the optimiser schedule and PRNG key handling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
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


#: mixes a 2-word key into the second half of the 4-word state of XLA's RngBitGenerator
_MIX = np.array([0x9E3779B9, 0x7F4A7C15], np.uint32)


def fast_key(key, who: str = "fit"):
    """The ``unsafe_rbg`` key that ``fp.fit`` draws with, derived from the user's ``key``.

    JAX's default PRNG (threefry) is a 20-round counter hash that XLA unrolls in every
    program that draws: on a CPU it costs about 0.3 s of compilation per program, and a
    fit compiles several (the probes of the target, the family's initial weights, the
    training chunk, the pilot sampler). ``unsafe_rbg`` draws with XLA's own
    RngBitGenerator, which compiles in a fraction of that (measured on the default fit:
    ``docs/time-to-accuracy.md``). Its streams are fixed by the key on a given backend but
    may differ between backends; its ``split`` is not threefry's proven hash, which
    Monte Carlo noise for a variational objective does not need.

    The same key gives the same stream on every call; a key already ``unsafe_rbg`` is
    returned as it is. Works on traced keys too."""
    key = as_key(key, who)
    if str(jax.random.key_impl(key)) == "unsafe_rbg":
        return key
    data = jax.random.key_data(key).ravel()
    if isinstance(data, jax.core.Tracer):
        words = jnp.concatenate([data[:2], data[:2] ^ jnp.asarray(_MIX)]) if data.size < 4 else data[:4]
    else:
        d = np.asarray(data, np.uint32)
        words = jnp.asarray(np.concatenate([d[:2], d[:2] ^ _MIX]) if d.size < 4 else d[:4])
    return jax.random.wrap_key_data(words, impl="unsafe_rbg")


def _words(key) -> list[int]:
    return [int(w) for w in np.asarray(jax.random.key_data(key), np.uint32).ravel()]


def split_on_host(key, num: int = 2) -> list:
    """``num`` independent ``unsafe_rbg`` keys derived from a concrete ``key`` on the host,
    by NumPy's ``SeedSequence`` over the key's words: nothing is compiled. (An eager
    ``jax.random.split`` of an ``unsafe_rbg`` key compiles an RngBitGenerator program, about
    0.1 s on a CPU for each new shape; a fit used to pay that three times before training.)
    A traced key is split by :func:`jax.random.split`."""
    if isinstance(key, jax.core.Tracer):
        return list(jax.random.split(fast_key(key), num))
    children = np.random.SeedSequence(_words(key)).spawn(num)
    return [jax.random.wrap_key_data(jnp.asarray(c.generate_state(4)), impl="unsafe_rbg") for c in children]


def fold_in_on_host(key, data: int):
    """An ``unsafe_rbg`` key for ``(key, data)``, as :func:`split_on_host` (no compilation);
    the same ``key`` and ``data`` give the same key."""
    seq = np.random.SeedSequence([*_words(key), int(data) & 0xFFFFFFFF])
    return jax.random.wrap_key_data(jnp.asarray(seq.generate_state(4)), impl="unsafe_rbg")


def numpy_rng(key) -> np.random.Generator:
    """A NumPy generator seeded by a concrete ``key``, for draws made once on the host
    (e.g. a handful of probe points), which would otherwise compile a sampler."""
    return np.random.default_rng(np.random.SeedSequence(_words(key)))
