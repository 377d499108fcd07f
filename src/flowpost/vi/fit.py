"""The fit loop: pure, jitted steps over a :class:`FitState`, run in ``lax.scan`` chunks.

    state = init(params, optimizer, key)
    state, trace = run_chunk(state, length)      # `length` steps in one compiled call

:func:`fit` wraps this with the starting point (mode + Laplace), a rich progress bar, a
convergence check, and the guarantees a user needs: a non-finite loss freezes the state
at the last finite step and stops the run with a message naming that step; Ctrl-C
returns what was trained so far.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .._checks import as_ints, check_positive
from .._progress import ProgressBar
from . import families, objectives
from .init import laplace, standard_start
from .target import Target


class FitState(NamedTuple):
    params: Any  # the family's trainable arrays
    opt_state: Any
    key: jax.Array
    step: jax.Array  # steps taken (int)
    failed_at: jax.Array  # first step whose loss, gradient or update was not finite, else -1

    @classmethod
    def init(cls, params, optimizer: optax.GradientTransformation, key) -> "FitState":
        """Step 0. The counters are strongly typed int32: weak-typed ones change type after
        the first step, and the chunk function would compile again."""
        return cls(params, optimizer.init(params), key, jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))


class Trace(NamedTuple):
    """Per step: the loss and ELBO estimate at the parameters before the step, the norm of
    their gradient and the norm of the optimiser's update (finite exactly when the new
    parameters are, given finite old ones)."""

    loss: jax.Array
    elbo: jax.Array
    grad_norm: jax.Array
    update_norm: jax.Array


def default_optimizer(steps: int, learning_rate: float = 5e-3) -> optax.GradientTransformation:
    """Adam with a short warm-up, cosine decay to 1% and global-norm clipping at 10."""
    warmup = min(100, max(steps // 10, 1))
    schedule = optax.warmup_cosine_decay_schedule(learning_rate / 10, learning_rate, warmup,
                                                  max(steps, warmup + 1), learning_rate / 100)
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))


def _as_key(key):
    if key is None:
        raise TypeError("fit: pass an explicit PRNG key, e.g. key=jax.random.key(0)")
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.shape == (2,) and key.dtype == jnp.uint32:
        return jax.random.wrap_key_data(key)
    raise TypeError(f"fit: `key` must be a jax.random.key or PRNGKey, got {key!r}")


def flat_params(q):
    """``(params, build)``: ``q``'s trainable arrays as ONE vector, and ``build(params) -> q``.

    The optimiser then updates one array instead of one per leaf (fewer ops per step, and
    a program that compiles 20-25% faster); ``build`` is cheap slicing inside the jit."""
    params, static = eqx.partition(q, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    return flat, lambda p: eqx.combine(unravel(p), static)


def make_step(build, objective, log_p, optimizer, num_samples):
    """One optimisation step ``(state, _) -> (state, Trace)``.

    ``build(state.params)`` is the variational family (see :func:`flat_params`). The step
    has no guard: a non-finite loss, gradient or update poisons the parameters. :func:`fit` checks
    each chunk's trace and, on a non-finite entry, re-runs that chunk from its start up to
    the last finite step (free when nothing fails); :func:`freeze_nonfinite` is the per-step
    guard for loops that cannot re-run (e.g. many fits ``vmap``-ed together)."""

    def loss_fn(params, key):
        return objective(build(params), log_p, key, num_samples)

    def step(state: FitState, _):
        key, sub = jax.random.split(state.key)
        (loss, elbo), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, sub)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new = FitState(optax.apply_updates(state.params, updates), opt_state, key, state.step + 1, state.failed_at)
        return new, Trace(loss, elbo, optax.tree.norm(grads), optax.tree.norm(updates))

    return step


def freeze_nonfinite(step):
    """``step`` guarded per step: once a loss, gradient or update is not finite, parameters and
    optimiser state stay at the last finite step, ``failed_at`` records the step and
    ``step`` stops counting. About 15% slower per step on small problems (a ``where`` per
    state leaf), hence not used by :func:`fit`, which recovers per chunk instead."""

    def guarded(state: FitState, x):
        new, tr = step(state, x)
        ok = _finite(tr, jnp) & (state.failed_at < 0)
        keep = lambda a, b: jax.tree.map(lambda u, v: jnp.where(ok, u, v), a, b)  # noqa: E731
        failed_at = jnp.where((state.failed_at < 0) & ~ok, state.step, state.failed_at)
        return FitState(keep(new.params, state.params), keep(new.opt_state, state.opt_state), new.key,
                        state.step + ok.astype(state.step.dtype), failed_at), tr

    return guarded


def _finite(trace: Trace, xp):
    """Whether each step of ``trace`` succeeded: its loss, gradient and update are finite
    (a finite loss and gradient can still give non-finite parameters, e.g. through a
    non-finite learning rate or an overflowing update)."""
    return xp.isfinite(trace.loss) & xp.isfinite(trace.grad_norm) & xp.isfinite(trace.update_norm)


def first_nonfinite(trace: Trace) -> int | None:
    """Index of the first step of ``trace`` whose loss, gradient or update is not finite."""
    bad = np.flatnonzero(~_finite(trace, np))
    return int(bad[0]) if bad.size else None


def _check_target(target, key):
    """Clear errors for a bad target before anything is compiled; returns its log density,
    cast to the input's dtype if it returns another float (a float32 ``log_prob`` under
    ``jax_enable_x64``), and warns if part of the probe points have an infinite density."""
    if not isinstance(target, Target):
        raise TypeError(f"fit: `target` must be a flowpost.Target (see fp.Target, fp.targets.get, "
                        f"fp.targets.from_numpyro), got {type(target).__name__}")
    u = jnp.zeros((target.dim,))
    try:
        out = jax.eval_shape(target.log_prob, u)
    except Exception as e:  # noqa: BLE001  (re-raised with context)
        raise ValueError(f"fit: target.log_prob failed on a vector of shape ({target.dim},): {e}") from e
    if out.shape != ():
        raise ValueError(f"fit: target.log_prob must return a scalar for one vector of shape ({target.dim},), "
                         f"got shape {out.shape}; is `dim` right?")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"fit: target.log_prob must return a real floating-point scalar, got dtype {out.dtype}")
    try:
        quantities = jax.eval_shape(target.to_model, u)
    except Exception as e:  # noqa: BLE001  (re-raised with context)
        raise ValueError(f"fit: target.constrain failed on a vector of shape ({target.dim},): {e}") from e
    nested = [k for k, v in quantities.items() if not hasattr(v, "shape")]
    if nested:
        raise ValueError(f"fit: target.constrain must return a flat dict of arrays (name -> array); "
                         f"{nested} hold {type(quantities[nested[0]]).__name__}s. Flatten them, e.g. "
                         "{'a.b': ...}.")
    target._flat_names(quantities)  # the count of `names` against constrain's output, a clear ValueError
    # an array of the input's dtype: a float32 log_prob under x64 is cast, and a Python
    # float (e.g. a constant density) becomes an array that optax's L-BFGS can use
    log_prob = lambda v: jnp.asarray(target.log_prob(v)).astype(v.dtype)  # noqa: E731
    probe = jax.random.normal(key, (8, target.dim))
    values = np.asarray(jax.jit(jax.vmap(log_prob))(probe))
    zero = float(jax.jit(log_prob)(u))
    if np.any(np.isnan(values)) or np.isnan(zero):
        raise ValueError("fit: target.log_prob returns NaN at some of 0 and 8 random N(0, I) points "
                         f"({zero}, {values.tolist()}); a log density must never be NaN.")
    if not np.isfinite(zero) and not np.any(np.isfinite(values)):
        raise ValueError("fit: target.log_prob is not finite at 0 nor at 8 random N(0, I) points "
                         f"(values {zero}, {values.tolist()}); check the density and its support "
                         "(log_prob must be defined on all of R^dim: map constrained parameters with `constrain`).")
    if not np.all(np.isfinite(values)):
        warnings.warn(f"fit: target.log_prob is infinite at {int(np.sum(~np.isfinite(values)))} of 8 random "
                      f"N(0, I) points ({values.tolist()}). Every family has support on all of R^dim, so a draw "
                      "there makes the loss infinite and stops the fit: if the density has a restricted support, "
                      "reparameterise it onto R^dim (e.g. log for a positive parameter) and map back with "
                      "`constrain`.", RuntimeWarning, stacklevel=3)
    return log_prob


def fit(target: Target, family="flow", objective="elbo", *, steps: int = 3000, num_samples: int = 256,
        optimizer: optax.GradientTransformation | None = None, learning_rate: float = 5e-3,
        key=None, init="laplace", objective_options: dict | None = None, chunk: int = 100,
        tol: float | None = None, progress: bool = True):
    """Fit a variational posterior to ``target``.

    Args:
        target: the unnormalised posterior (:class:`flowpost.Target`).
        family: ``"flow"`` (default: RealNVP on top of a full-rank affine layer),
            ``"meanfield"``, ``"fullrank"``, or any :class:`flowpost.flows.Flow`.
        objective: ``"elbo"`` (STL), ``"iwelbo"`` (DReG), ``"renyi"``, ``"fkl"``.
        steps: optimisation steps.
        num_samples: draws per step. The defaults (256 draws, peak rate 5e-3, 3,000 steps)
            are the smallest batch that fitted all eight posteriordb references at one
            setting: at 16/32/64/128 draws gp_pois_regr's |log sd| was .22/.14/.11/.08-.10
            (gradient noise, not the flow, was what held it back). A costly
            ``log_prob`` may want fewer draws and more steps.
        optimizer: an optax transformation (default :func:`default_optimizer`).
        learning_rate: for the default optimizer.
        key: PRNG key (required).
        init: ``"laplace"`` (mode by L-BFGS + Laplace covariance; if the first step from it
            has a non-finite loss or gradient, training restarts from ``N(0, I)``, see
            :func:`~flowpost.vi.init.standard_start`; the result's ``start.note`` says
            which) or ``"standard"`` (``N(0, I)``). Ignored for a user's Flow.
        objective_options: e.g. ``{"k": 8}`` for iwelbo, ``{"alpha": 0.5}`` for renyi.
        chunk: steps per compiled ``lax.scan`` call.
        tol: stop early (after at least 5 chunks) when the ELBO's mean over the last chunk
            moves less than ``tol`` nats from the chunk before; ``None``: run all steps.
        progress: show a progress bar.

    Returns:
        :class:`flowpost.vi.result.FitResult`.
    """
    from .result import FitResult

    key = _as_key(key)
    steps, num_samples, chunk = as_ints("fit", steps=steps, num_samples=num_samples, chunk=chunk)
    if optimizer is None:
        check_positive("fit", learning_rate=learning_rate)
    if tol is not None:
        check_positive("fit", tol=tol)
    if init not in ("laplace", "standard"):
        raise ValueError(f"fit: `init` must be 'laplace' or 'standard', got {init!r}")
    k_check, k_init, k_run = jax.random.split(key, 3)
    log_prob = _check_target(target, k_check)
    obj = objectives.get(objective, **(objective_options or {}))

    start = None
    if isinstance(family, str) and init == "laplace":
        start = laplace(log_prob, target.dim)
        q = families.make(family, target.dim, start.mode, start.chol, key=k_init)
    else:
        q = families.make(family, target.dim, key=k_init)
    if objective in ("iwelbo", "fkl") and not objectives.has_inverse(q):
        raise ValueError(f"fit: objective={objective!r} needs a family with an inverse (log q at any point)")

    optimizer = optimizer or default_optimizer(steps, learning_rate)
    params, build = flat_params(q)
    state = FitState.init(params, optimizer, k_run)
    log_p = jax.vmap(log_prob)
    step = make_step(build, obj, log_p, optimizer, num_samples)

    @eqx.filter_jit
    def run_chunk(state, length):
        return jax.lax.scan(step, state, None, length=length)

    traces, message, t0, restarted = [], "completed", time.perf_counter(), False
    done, prev = 0, None
    bar = ProgressBar(steps, f"fit {target.name}", {"elbo": "ELBO"}, enabled=progress)
    try:
        with bar:
            while done < steps:
                n = min(chunk, steps - done)
                start_state = state
                state, tr = run_chunk(state, n)
                tr = jax.tree.map(np.asarray, tr)
                bad = first_nonfinite(tr)
                if (bad == 0 and done == 0 and start is not None and not restarted
                        and not (np.isfinite(tr.loss[0]) and np.isfinite(tr.grad_norm[0]))):
                    # a Laplace start that cannot train (no mode, e.g. a funnel's neck: its draws'
                    # loss or gradient is not finite): from N(0, I) instead; same structure, so
                    # the compiled chunk serves. (A finite loss and gradient with a non-finite
                    # update is the optimiser's doing, e.g. an absurd learning rate: keep the start.)
                    start, restarted = standard_start(start), True
                    q = families.make(family, target.dim, start.mode, start.chol, key=k_init)
                    state = FitState.init(flat_params(q)[0], optimizer, k_run)
                    continue
                if bad is not None:  # re-run the chunk up to its last finite step
                    state = run_chunk(start_state, bad)[0] if bad else start_state
                    traces.append(jax.tree.map(lambda a: a[:bad], tr))
                    failed = done + bad
                    message = (f"stopped: the loss, its gradient or the update was not finite at step {failed}; "
                               + (f"kept the state after the {failed} steps before it (the last finite one)"
                                  if failed else "kept the initial state"))
                    break
                traces.append(tr)
                done += n
                cur = float(np.mean(tr.elbo))
                bar.update(done, elbo=f"{cur:.4g}")
                if tol is not None and prev is not None and done >= 5 * chunk:
                    if abs(cur - prev) < tol:
                        message = f"converged at step {done} (ELBO change {abs(cur - prev):.2g} < tol {tol})"
                        break
                prev = cur
    except KeyboardInterrupt:
        message = f"interrupted by the user after {done} steps; the state of step {int(state.step)} is kept"
    if message.startswith(("stopped", "interrupted")):
        warnings.warn(f"fit: {message}", RuntimeWarning, stacklevel=2)
    trace = Trace(*(np.concatenate([getattr(t, f) for t in traces]) if traces else np.zeros(0)
                    for f in Trace._fields))
    q = build(state.params)
    return FitResult(q=q, target=target, trace=trace, steps=int(state.step), message=message,
                     seconds=time.perf_counter() - t0, family=family if isinstance(family, str) else "custom",
                     objective=objective if isinstance(objective, str) else "custom", start=start)
