"""Density estimation: fit a flow to data by maximum likelihood (Papamakarios et al.
2021, "Normalizing flows for probabilistic modeling and inference", section 2.3.1).

The minibatch steps run inside ``lax.scan`` chunks; this module knows nothing of
variational inference (that is :mod:`flowpost.vi`).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import engine
from .._checks import as_ints, check_positive
from .bijection import as_float
from .distribution import Flow


def fit_to_data(
    flow: Flow,
    key,
    data,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    context=None,
    chunk: int = 200,
    optimizer: optax.GradientTransformation | None = None,
    progress: bool = False,
) -> tuple[Flow, np.ndarray]:
    """Maximise the mean ``log q(x)`` of ``data (n, dim)`` (optionally with ``context
    (n, cond_dim)``) by minibatch gradient steps on :mod:`flowpost.engine`; each step draws
    ``batch_size`` rows with replacement.

    Args:
        optimizer: an optax transformation (default: Adam with a cosine-decayed rate from
            ``learning_rate``).
        progress: show a progress bar.

    Returns the fitted flow and the per-step mean negative log-likelihood of the minibatches.
    A non-finite loss, gradient or update stops the fit with a warning naming the step; the
    flow returned is the one after the last finite step (the engine's rule).
    """
    steps, batch_size, chunk = as_ints("fit_to_data", steps=steps, batch_size=batch_size, chunk=chunk)
    if optimizer is None:
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
    optimizer = optimizer or optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01))
    params, rest, combine = engine.partition(flow)
    n = data.shape[0]

    def loss_fn(p, key, batch, step):
        x, ctx = batch
        idx = jax.random.randint(key, (min(batch_size, n),), 0, n)
        f = combine(p, rest)
        return -jnp.mean(f.log_prob(x[idx], context=None if ctx is None else ctx[idx])), None

    chunks = engine.runner(engine.scan_chunks, engine.make_step(loss_fn, optimizer))
    with engine.ProgressBar(steps, "fit_to_data", {"nll": "NLL"}, enabled=progress) as bar:
        out = engine.run(
            chunks,
            engine.init(params, optimizer, engine.as_key(key, "fit_to_data")),
            steps,
            data=(data, context),
            chunk=chunk,
            progress=bar,
            show=lambda info: {"nll": f"{float(np.mean(info.loss)):.4g}"},
        )
    if out.status == engine.Status.NONFINITE:
        warnings.warn(
            f"fit_to_data: the loss, its gradient or the update was not finite at step {out.failed[0]}; "
            f"stopped and returned the flow after the {out.failed[0]} steps before it (the last finite "
            "state)",
            RuntimeWarning,
            stacklevel=2,
        )
    elif out.status == engine.Status.INTERRUPTED:
        warnings.warn(
            f"fit_to_data: interrupted by the user after {out.done} steps; returned the flow of that step",
            RuntimeWarning,
            stacklevel=2,
        )
    losses = np.zeros(0) if out.info is None else np.asarray(out.info.loss)
    return combine(out.state.params, rest), losses
