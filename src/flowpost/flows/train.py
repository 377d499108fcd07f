"""Density estimation: fit a flow to data by maximum likelihood (Papamakarios et al.
2021, "Normalizing flows for probabilistic modeling and inference", section 2.3.1).

The minibatch steps run inside ``lax.scan`` chunks; this module knows nothing of
variational inference (that is :mod:`flowpost.vi`).
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._checks import as_ints, check_positive
from .bijection import as_float
from .distribution import Flow


def fit_to_data(flow: Flow, key, data, *, steps: int = 2000, batch_size: int = 256, learning_rate: float = 1e-3,
                context=None, chunk: int = 200) -> tuple[Flow, np.ndarray]:
    """Maximise the mean ``log q(x)`` of ``data (n, dim)`` (optionally with ``context
    (n, cond_dim)``) with Adam and a cosine-decayed learning rate.

    Returns the fitted flow and the per-step mean negative log-likelihood of the minibatches.
    A chunk with a non-finite loss stops the fit with a warning naming the step; the flow
    returned is then the one at the start of that chunk (the last state known finite).
    """
    steps, batch_size, chunk = as_ints("fit_to_data", steps=steps, batch_size=batch_size, chunk=chunk)
    check_positive("fit_to_data", learning_rate=learning_rate)
    data = as_float(data, flow)
    if data.ndim != 2 or data.shape[1] != flow.dim:
        raise ValueError(f"fit_to_data: `data` must have shape (n, {flow.dim}), got {data.shape}")
    if data.shape[0] == 0:
        raise ValueError("fit_to_data: `data` is empty")
    if not bool(jnp.all(jnp.isfinite(data))):
        raise ValueError("fit_to_data: `data` holds NaN or inf values")
    if context is not None:
        context = jnp.asarray(context)
        if context.shape[0] != data.shape[0]:
            raise ValueError(f"fit_to_data: `context` has {context.shape[0]} rows, `data` has {data.shape[0]}")
    schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01)
    opt = optax.adam(schedule)
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    n = data.shape[0]

    def loss(p, idx):
        f = eqx.combine(p, static)
        ctx = None if context is None else context[idx]
        return -jnp.mean(f.log_prob(data[idx], context=ctx))

    def step(carry, k):
        p, s = carry
        idx = jax.random.randint(k, (min(batch_size, n),), 0, n)
        value, g = jax.value_and_grad(loss)(p, idx)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), value

    @jax.jit
    def run(carry, keys):
        return jax.lax.scan(step, carry, keys)

    carry, losses, done = (params, opt.init(params)), [], 0
    for keys in np.array_split(np.asarray(jax.random.key_data(jax.random.split(key, steps))), max(steps // chunk, 1)):
        new, values = run(carry, jax.random.wrap_key_data(jnp.asarray(keys)))
        values = np.asarray(values)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            losses.append(values[: bad[0]])
            warnings.warn(f"fit_to_data: the loss was not finite at step {done + int(bad[0])}; stopped and returned "
                          f"the flow of step {done} (the start of that chunk)", RuntimeWarning, stacklevel=2)
            break
        carry, done = new, done + len(values)
        losses.append(values)
    return eqx.combine(carry[0], static), np.concatenate(losses)
