"""``fp.fit``: a variational posterior for a :class:`~flowpost.vi.target.Target`.

The optimisation runs on :mod:`flowpost.engine` (pure steps over a state, ``lax.scan``
chunks, one rule on non-finite values, Ctrl-C); this module supplies the VI parts: the
starting point (mode + Laplace), the family, the objective, and the stopping rule.

    params, build = flat_params(q)                       # trainable arrays, q = build(params)
    step = make_step(build, objective, log_p, optimizer, num_samples)
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import engine
from .. import flows as F
from .._checks import as_ints, check_positive
from .._jit import filter_once, hoist
from ..engine import ProgressBar, Status, default_optimizer, fast_key, numpy_rng, split_on_host
from ..engine import TrainState as FitState
from ..engine import guard as freeze_nonfinite
from . import families, objectives, stopping
from .diagnostics import psis
from .init import MAX_DENSE_DIM, find_mode, laplace, standard_start
from .result import _batched_log_prob, _to_model
from .subsample import Rows, batch_log_p, taylor_estimator
from .target import Target

__all__ = ["fit", "make_step", "flat_params", "freeze_nonfinite", "FitState", "Trace", "default_optimizer"]


class Trace(NamedTuple):
    """Per step: the loss and ELBO estimate at the parameters before the step, the norm of
    their gradient and the norm of the optimiser's update."""

    loss: Any
    elbo: Any
    grad_norm: Any
    update_norm: Any

    @classmethod
    def of(cls, info: engine.Info | None) -> Trace:
        """From the engine's per-step :class:`~flowpost.engine.Info` (``aux`` is the ELBO)."""
        if info is None:
            return cls(*(np.zeros(0) for _ in cls._fields))
        return cls(info.loss, info.aux, info.grad_norm, info.update_norm)


def _is_frozen(node) -> bool:
    return isinstance(node, F.Frozen)


def flat_params(q):
    """``(params, build)``: ``q``'s trainable arrays as ONE vector, and ``build(params) -> q``.

    Arrays inside :class:`flowpost.flows.Frozen` layers (the Laplace whitening) are not
    trainable: they stay in ``build``'s closure and never reach the optimiser."""
    params, rest, combine = engine.partition(q, frozen=_is_frozen)
    return params, lambda p: combine(p, rest)


def make_step(build, objective, log_p, optimizer, num_samples):
    """One unguarded optimisation step ``(state, _) -> (state, Info)`` of ``objective``
    (``(q, log_p, key, n) -> (loss, elbo)``) for the family ``build(state.params)``; the
    engine's driver applies the rule on non-finite values, and :func:`freeze_nonfinite`
    is the per-step guard."""

    def loss_fn(params, key, batch, step):
        return objective(build(params), log_p, key, num_samples)

    return engine.make_step(loss_fn, optimizer)


def _check_target(target, key):
    """Clear errors for a bad target before anything is compiled; returns the log density
    every later stage uses (L-BFGS, training, the Laplace Hessian): cast to the input's dtype
    if it returns another float (a float32 ``log_prob`` under ``jax_enable_x64``), with NaN
    read as -inf, a rejection, as Stan reads it (:func:`~flowpost.vi.objectives.reject_nan`:
    finite gradients there). ``diagnostics()`` counts q's draws where it is NaN.

    Probes: ``u = 0`` (where the mode search starts) and 8 ``N(0, I)`` points (where a
    standard start draws). Refused only when the density is NaN or -inf at all 9: the fit
    then has nowhere to start (the message names the NaN / -inf sites of a
    :func:`~flowpost.targets.from_numpyro` model at 0, and in float32 says how to fix
    round-off). A NaN elsewhere is not an error (an ODE solver failing at absurd parameter
    values is a rejection there); in float32, NaN probes that are finite in float64 get a
    warning naming the fix (float64 or jitter). Warns if some probes are -inf (a restricted
    support that wants a transform)."""
    if not isinstance(target, Target):
        raise TypeError(
            f"fit: `target` must be a flowpost.Target (see fp.Target, fp.targets.get, "
            f"fp.targets.from_numpyro), got {type(target).__name__}"
        )
    u = jnp.zeros((target.dim,))
    try:
        out = jax.eval_shape(target.log_prob, u)
    except Exception as e:  # noqa: BLE001  (re-raised with context)
        raise ValueError(f"fit: target.log_prob failed on a vector of shape ({target.dim},): {e}") from e
    if out.shape != ():
        raise ValueError(
            f"fit: target.log_prob must return a scalar for one vector of shape ({target.dim},), "
            f"got shape {out.shape}; is `dim` right?"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"fit: target.log_prob must return a real floating-point scalar, got dtype {out.dtype}")
    try:
        quantities = jax.eval_shape(target.to_model, u)
    except Exception as e:  # noqa: BLE001  (re-raised with context)
        raise ValueError(f"fit: target.constrain failed on a vector of shape ({target.dim},): {e}") from e
    nested = [k for k, v in quantities.items() if not hasattr(v, "shape")]
    if nested:
        raise ValueError(
            f"fit: target.constrain must return a flat dict of arrays (name -> array); "
            f"{nested} hold {type(quantities[nested[0]]).__name__}s. Flatten them, e.g. "
            "{'a.b': ...}."
        )
    target._flat_names(quantities)  # the count of `names` against constrain's output, a clear ValueError
    # an array of the input's dtype: a float32 log_prob under x64 is cast, and a Python
    # float (e.g. a constant density) becomes an array that optax's L-BFGS can use
    # traced once, with the arrays it closes over (the data) as inputs of every program
    # compiled from it, not constants compiled into each (see flowpost._jit.Hoisted)
    raw = hoist(lambda v: jnp.asarray(target.log_prob(v)).astype(v.dtype), jax.ShapeDtypeStruct(u.shape, u.dtype))
    probe = jnp.asarray(numpy_rng(key).standard_normal((8, target.dim)), u.dtype)  # no sampler compiled
    values = np.asarray(_batched_log_prob(raw, jnp.concatenate([probe, u[None]]), None))  # one program
    values, zero = values[:-1], float(values[-1])
    nan = np.isnan(np.append(values, zero))
    float32_fix = (
        (
            "; in float32 a NaN is often round-off (e.g. the Cholesky factor of a nearly singular "
            'covariance): enable float64 with jax.config.update("jax_enable_x64", True) before building '
            "the target and its data, or add jitter to the covariance's diagonal"
        )
        if u.dtype == jnp.float32
        else ""
    )
    if not np.isfinite(zero) and not np.any(np.isfinite(values)):
        sites = objectives.nonfinite_sites(target, u)
        raise ValueError(
            "fit: target.log_prob is not finite at 0 nor at 8 random N(0, I) points "
            f"(values {zero}, {values.tolist()}), so the fit has nowhere to start"
            + (f" (NaN, which counts as -inf, at {int(nan.sum())} of them)" if nan.any() else "")
            + f"{sites}; check the density and its support (log_prob must be defined on all of "
            "R^dim: map constrained parameters with `constrain`)" + (float32_fix if nan.any() else "") + "."
        )
    if nan.any() and float32_fix and objectives.finite_in_float64(target, np.append(probe, u[None], 0)[nan]):
        warnings.warn(
            f"fit: target.log_prob is NaN in float32 at {int(nan.sum())} of 0 and 8 random N(0, I) "
            "points, and finite there in float64: round-off. NaN counts as -inf (a rejection), so "
            "draws there are lost" + float32_fix + ".",
            RuntimeWarning,
            stacklevel=3,
        )
    values = np.where(np.isnan(values), 0.0, values)  # NaN probes are rejections, not a support to warn of
    if not np.all(np.isfinite(values)):
        warnings.warn(
            f"fit: target.log_prob is infinite at {int(np.sum(~np.isfinite(values)))} of 8 random "
            f"N(0, I) points ({values.tolist()}). Every family has support on all of R^dim, so a draw "
            "there makes the loss infinite and stops the fit: if the density has a restricted support, "
            "reparameterise it onto R^dim (e.g. log for a positive parameter) and map back with "
            "`constrain`.",
            RuntimeWarning,
            stacklevel=3,
        )
    return objectives.reject_nan(raw)  # carries raw's data as leaves, as raw does


def fit(
    target: Target,
    family="flow",
    objective="elbo",
    *,
    steps: int | None = None,
    num_samples: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 5e-3,
    key=None,
    init="laplace",
    objective_options: dict | None = None,
    chunk: int = 100,
    tol: float | None = None,
    progress: bool = True,
    subsample: bool | None = None,
    devices: int | None = None,
):
    """Fit a variational posterior to ``target``.

    Args:
        target: the unnormalised posterior (:class:`flowpost.Target`).
        family: ``"flow"`` (default: RealNVP on top of a full-rank affine layer),
            ``"meanfield"``, ``"fullrank"``, or any :class:`flowpost.flows.Flow`.
        objective: ``"elbo"`` (STL), ``"iwelbo"`` (DReG), ``"renyi"``, ``"fkl"``.
        steps: optimisation steps, exactly (Adam on a cosine schedule over them). ``None``
            (default): automatic, up to 3000 in warm-restart rounds that end at steps 200,
            600, 1400 and 3000; the fit stops at the first round end where a pilot of
            importance-weighted draws confirms ``q`` (:mod:`flowpost.vi.stopping`).
        num_samples: draws per step, exactly; ``None``: 128 in the automatic mode, 256
            with a given ``steps``. A costly ``log_prob`` may want fewer draws and more steps.
        optimizer: an optax transformation (default
            :func:`~flowpost.engine.default_optimizer`); it sees only the trainable arrays.
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
        subsample: for a target whose density is a sum over data rows (``target.rows``:
            :func:`flowpost.targets.from_rows`, or a NumPyro plate with ``subsample_size``),
            estimate it at each step from one batch of rows shared by the step's draws,
            with second-order control variates around the mode
            (:mod:`flowpost.vi.subsample`). ``None`` (default): subsample exactly when the
            target has ``rows``; ``False``: every step reads all the data.
        devices: split each step's draws (where the target is evaluated) over this many
            devices (:mod:`flowpost.engine.devices`; all processes' devices after
            ``fp.engine.devices.initialize``); the flow's parameters are replicated and the
            gradient all-reduced. ``None``: one device.

    Returns:
        :class:`flowpost.vi.result.FitResult`; its ``status`` says how the run ended.
    """
    from .result import FitResult

    key = fast_key(key)  # XLA's RngBitGenerator: compiles far faster than threefry
    plan = stopping.plan(steps, num_samples)
    steps, num_samples, chunk = as_ints("fit", steps=plan.steps, num_samples=plan.num_samples, chunk=chunk)
    if optimizer is None:
        check_positive("fit", learning_rate=learning_rate)
    if tol is not None:
        check_positive("fit", tol=tol)
    if init not in ("laplace", "standard"):
        raise ValueError(f"fit: `init` must be 'laplace' or 'standard', got {init!r}")
    k_check, k_init, k_run, k_rule = split_on_host(key, 4)  # nothing compiled for them
    log_prob = _check_target(target, k_check)
    obj = objectives.get(objective, **(objective_options or {}))

    start = None
    if isinstance(family, str) and init == "laplace":
        start = laplace(log_prob, target.dim)
        q = families.make(family, target.dim, start.mode, start.chol, key=k_init)
    else:
        q = families.make(family, target.dim, key=k_init)
    if objective in ("iwelbo", "fkl", "iwfkl") and not objectives.has_inverse(q):
        raise ValueError(f"fit: objective={objective!r} needs a family with an inverse (log q at any point)")

    optimizer = optimizer or (
        stopping.optimizer(learning_rate) if plan.automatic else default_optimizer(steps, learning_rate)
    )
    rule = (lambda: stopping.Rule(plan, psis, k_rule)) if plan.automatic else lambda: None
    params, rest, combine = engine.partition(q, frozen=_is_frozen)
    mesh = engine.devices.mesh(devices, "fit")
    engine.devices.check_divisible(mesh, num_samples, "`num_samples`")
    estimate = _control_variate(target, log_prob, start, subsample)
    pilot_log_p = _pilot_log_p(target, log_prob, estimate)
    pilot_to_model = lambda u: _to_model(target.to_model, u)  # noqa: E731  (the model's quantities)
    draw = lambda params, rest, key: stopping.pilot(
        combine(params, rest),
        pilot_log_p,
        key,  # noqa: E731
        to_model=pilot_to_model,
    )

    def loss_fn(params, key, batch, step):  # the frozen arrays and the density's data come in traced
        if estimate is None:
            return obj(combine(params, batch[0]), _sharded(jax.vmap(batch[1]), mesh), key, num_samples)
        k_rows, key = jax.random.split(key)  # one batch of rows per step, shared by its draws
        batch_p = _sharded(batch_log_p(target.rows, batch[2], k_rows), mesh)
        return obj(combine(params, batch[0]), batch_p, key, num_samples)

    chunks = engine.runner(engine.scan_chunks, engine.make_step(loss_fn, optimizer))
    bar = ProgressBar(steps, f"fit {target.name}", {"elbo": "ELBO"}, enabled=progress)

    def train(params, rest):  # a fresh state and stopping rule; the compiled chunks serve every start
        auto = rule()
        return _run(
            chunks,
            FitState.init(params, optimizer, k_run),
            (rest, log_prob, estimate),
            steps,
            chunk,
            tol,
            bar,
            auto,
            draw,
            mesh,
        ), auto

    with bar:
        out, auto = train(params, rest)
        if (
            out.status == Status.NONFINITE
            and out.done == 0
            and start is not None
            and not (np.isfinite(out.failed_info.loss) and np.isfinite(out.failed_info.grad_norm))
        ):
            # a Laplace start that cannot train (no mode, e.g. a funnel's neck: its draws' loss
            # or gradient is not finite): from N(0, I) instead; same structure, so the compiled
            # chunks serve. (A finite loss and gradient with a non-finite update is the
            # optimiser's doing, e.g. an absurd learning rate: keep the start.)
            start = standard_start(start)
            params, rest, _ = engine.partition(
                families.make(family, target.dim, start.mode, start.chol, key=k_init), frozen=_is_frozen
            )
            out, auto = train(params, rest)
    message = _message(out, tol, chunk, auto)
    if out.status in (Status.NONFINITE, Status.INTERRUPTED):
        warnings.warn(f"fit: {message}", RuntimeWarning, stacklevel=2)
    return FitResult(
        q=combine(out.state.params, rest),
        target=target,
        trace=Trace.of(out.info),
        steps=int(out.state.step),
        message=message,
        seconds=out.seconds,
        family=family if isinstance(family, str) else "custom",
        objective=objective if isinstance(objective, str) else "custom",
        start=start,
        status=out.status,
    )


def _pilot_log_p(target: Target, log_prob, estimate):
    """``log p`` of the stopping rule's pilot draws, jitted over a batch: the full density,
    or for a subsampled target the control-variate estimate from one fixed draw of ten
    batches' worth of rows (its noise is far below the pilot's own; the full data would
    cost the pilot ``N`` row terms per draw). ``diagnostics()`` always uses the full data."""
    if estimate is None:
        return lambda u: _batched_log_prob(log_prob, u, None)
    rows = target.rows
    idx = Rows({k: (n, min(n, 10 * b)) for k, (n, b) in rows.sizes.items()}, rows.log_prob_batch).draw(
        fast_key(jax.random.key(0))
    )
    pilot = eqx.tree_at(lambda e: e.log_prob_batch, estimate, _hoist_rows(target, idx))  # its batches' shapes
    return lambda u: _pilot_batch(pilot, idx, u)


@filter_once
def _pilot_batch(estimate, idx, u):
    terms = estimate.batch_terms(idx)
    return jax.vmap(lambda v: estimate(v, idx, terms))(u)


def _hoist_rows(target: Target, idx):
    """``target.rows.log_prob_batch`` (cast to ``u``'s dtype) traced for batches shaped as
    ``idx``, with the data as inputs (:func:`flowpost._jit.hoist`)."""
    u = jax.ShapeDtypeStruct((target.dim,), jnp.zeros(()).dtype)
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in idx.items()}
    return hoist(lambda v, i: jnp.asarray(target.rows.log_prob_batch(v, i)).astype(v.dtype), u, spec)


def _sharded(log_p, mesh):
    """``log_p (n, dim) -> (n,)`` evaluated with its draws split over ``mesh``'s devices."""
    return log_p if mesh is None else (lambda x: log_p(engine.devices.shard(x, mesh)))


def _control_variate(target: Target, log_prob, start, subsample):
    """The control-variate estimator of :mod:`~flowpost.vi.subsample` for a target with
    ``rows`` (None when every step reads all the data), around the Laplace mode (found
    here when the fit did not start from it)."""
    if subsample is not None and not isinstance(subsample, bool):
        raise ValueError(f"fit: `subsample` must be None, True or False, got {subsample!r}")
    if subsample is False or (subsample is None and target.rows is None):
        return None
    if target.rows is None:
        raise ValueError(
            "fit: subsample=True needs a target whose density is a sum over data rows "
            "(fp.targets.from_rows, or a NumPyro model whose data plate has subsample_size)"
        )
    mode = start.mode if start is not None else find_mode(log_prob, jnp.zeros(target.dim))[0]
    rows = target.rows
    hoisted = Rows(rows.sizes, _hoist_rows(target, jax.eval_shape(rows.draw, jax.random.key(0))))
    return taylor_estimator(hoisted, log_prob, mode, hessian=target.dim <= MAX_DENSE_DIM)


def _run(chunks, state, data, steps, chunk, tol, bar, auto=None, draw=None, mesh=None):
    """The engine's driver with the ``tol`` rule: stop once the mean ELBO of a chunk moves
    less than ``tol`` from the chunk before (after at least 5 chunks); and in the automatic
    mode the rule of :mod:`~flowpost.vi.stopping` (``auto``, a :class:`~.stopping.Rule`),
    checked on a pilot ``draw(params, rest, key)`` of the current ``q`` at each round's end.
    ``data``: ``(rest, log_prob, estimate)``, q's frozen arrays, the hoisted density and
    the control-variate estimate (or None), passed to every chunk as traced inputs."""
    rest = data[0]
    prev = []

    def on_chunk(state, info, done):
        cur = float(np.mean(info.aux))
        stop = tol is not None and prev and done >= 5 * chunk and abs(cur - prev[-1]) < tol
        prev.append(cur)
        if auto is not None and auto(lambda k: draw(state.params, rest, k), info.aux, done):
            stop = True
        return Status.EARLY_STOP if stop else None

    return engine.run(
        chunks,
        state,
        steps,
        data=data,
        chunk=chunk,
        on_chunk=on_chunk,
        progress=bar,
        show=lambda info: {"elbo": f"{float(np.mean(info.aux)):.4g}"},
        mesh=mesh,
    )


def _message(out: engine.Outcome, tol, chunk, auto=None) -> str:
    """How the run ended, in words (a step number where it matters)."""
    if out.status == Status.NONFINITE:
        failed = out.failed[0]
        return f"stopped: the loss, its gradient or the update was not finite at step {failed}; " + (
            f"kept the state after the {failed} steps before it (the last finite one)"
            if failed
            else "kept the initial state"
        )
    if out.status == Status.INTERRUPTED:
        return f"interrupted by the user after {out.done} steps; the state of step {int(out.state.step)} is kept"
    if out.status == Status.EARLY_STOP and auto is not None and auto.checks and auto.checks[-1][1].stop:
        return f"converged at step {out.done} of at most {auto.plan.steps}: {auto.summary()}"
    if out.status == Status.EARLY_STOP:
        return f"converged at step {out.done} (ELBO change < tol {tol} between chunks of {chunk} steps)"
    if auto is not None and auto.checks:
        return f"completed (the automatic budget's cap; {auto.summary()})"
    return "completed"
