"""Training: one jitted epoch (``lax.scan`` over shuffled minibatches, Adam), early
stopping on the validation -ELBO, a checkpoint every epoch, exact resume.

    result = train(TrainConfig(model=VAEConfig(flow="iaf")), out="runs/iaf")

Guarantees: the state after every finished epoch is on disk (``checkpoint.eqx``), so
Ctrl-C loses at most the running epoch, and a re-run with the same ``out`` continues
from it, bit for bit as if it had not stopped (the PRNG key and Adam state are saved).
An epoch with a non-finite loss stops the run without writing anything: the last good
checkpoint and the best model stay as they were.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..._checks import out_folder
from ..._io import write_json
from ..._progress import ProgressBar
from . import data as vdata
from . import evaluate, likelihoods, objectives, plots, runs
from .model import make_vae
from .runs import TrainConfig


class TrainState(NamedTuple):
    params: Any  # the model's arrays
    opt_state: Any
    key: jax.Array  # raw key data (uint32), so that it serialises


@dataclasses.dataclass
class TrainResult:
    model: Any  # the best model (by validation -ELBO)
    config: TrainConfig
    history: list[dict]
    best_epoch: int | None
    best_valid: float
    epochs_done: int
    message: str
    status: str  # "completed", "early_stop", "nothing_to_do", "nonfinite" or "interrupted"
    compile_seconds: float  # first epoch minus the median later one (nan with one epoch)
    out: pathlib.Path | None

    @property
    def seconds_per_epoch(self) -> float:
        """Median wall time of the epochs run in this call after the first (which includes
        compilation); the first epoch's time if it is the only one."""
        s = [h["seconds"] for h in self.history if h.get("this_call")]
        return float(np.median(s[1:] if len(s) > 1 else s)) if s else float("nan")


def beta_schedule(epoch: int, warmup: int) -> float:
    """KL weight of (0-based) ``epoch``: ``min(1, (epoch + 1) / warmup)``; 1 without warm-up."""
    return 1.0 if warmup <= 0 else min(1.0, (epoch + 1) / warmup)


@eqx.filter_jit
def run_epoch(state: TrainState, static, x, beta, learning_rate, objective: str, k: int, batch_size: int):
    """One pass over ``len(x) // batch_size`` shuffled minibatches in a ``lax.scan`` with
    Adam; returns ``(state, mean loss, first bad step or -1)``. A step whose loss,
    gradient or update is not finite is not applied, nor is any later step of the epoch.

    ``static`` is the model's non-array part (``eqx.partition``); it, ``objective``, ``k``
    and ``batch_size`` are compile-time constants, the rest are traced, so runs that
    differ only in learning rate, data or state share one compiled program."""
    b = batch_size
    n_batches = x.shape[0] // b
    optimizer = optax.adam(learning_rate)

    def loss_fn(params, xb, key):
        model = eqx.combine(params, static)
        if objective == "iwae":
            return objectives.iwae(model, xb, key, k)[0]
        return objectives.elbo(model, xb, key, beta)[0]

    key = jax.random.wrap_key_data(state.key)
    key, k_perm, k_steps = jax.random.split(key, 3)
    order = jax.random.permutation(k_perm, x.shape[0])[: n_batches * b].reshape(n_batches, b)

    def step(carry, inputs):
        params, opt_state, bad = carry
        idx, kk, i = inputs
        loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], kk)
        updates, new_opt = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        ok = (jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads)) & jnp.isfinite(optax.tree.norm(updates))
              & (bad < 0))
        keep = lambda new, old: jax.tree.map(lambda u, v: jnp.where(ok, u, v), new, old)  # noqa: E731
        bad = jnp.where((bad < 0) & ~ok, i, bad)
        return (keep(new_params, params), keep(new_opt, opt_state), bad), loss

    carry = (state.params, state.opt_state, jnp.full((), -1, jnp.int32))
    steps = (order, jax.random.split(k_steps, n_batches), jnp.arange(n_batches, dtype=jnp.int32))
    (params, opt_state, bad), losses = jax.lax.scan(step, carry, steps)
    return TrainState(params, opt_state, jax.random.key_data(key)), jnp.mean(losses), bad


def _check_data(config: TrainConfig, d: vdata.ImageData):
    if tuple(d.image_shape) != config.model.image_shape:
        raise ValueError(f"`config.model.image_shape` is {config.model.image_shape} but the {d.name} images are "
                         f"{d.image_shape}")
    dim = config.model.image_shape[0] * config.model.image_shape[1]
    for split in ("train", "valid", "test"):
        x = np.asarray(getattr(d, split))
        if x.ndim != 2 or x.shape[1] != dim or len(x) == 0:
            raise ValueError(f"`data.{split}` must hold at least one image as a row of {dim} values "
                             f"(image_shape {config.model.image_shape}, flattened), got an array of shape {x.shape}")
    for split in ("train", "valid"):
        likelihoods.get(config.model.likelihood).check(getattr(d, split), f"data.{split}")
    if len(d.train) < config.batch_size:
        raise ValueError(f"`batch_size` ({config.batch_size}) exceeds the number of training images ({len(d.train)})")


def train(config: TrainConfig, out=None, *, data: vdata.ImageData | None = None, progress: bool = True,
          plots_at_end: bool = True) -> TrainResult:
    """Train the VAE of ``config`` (resuming from ``out/checkpoint.eqx`` if there is one).

    Args:
        config: :class:`~.runs.TrainConfig` (model architecture, data set, budget).
        out: run folder (checkpoints, history, PNGs); ``None``: nothing is written.
        data: the images (default: ``vdata.load(config.dataset, limit=config.limit)``).
        progress: show a rich progress bar over epochs.
        plots_at_end: write samples.png and reconstructions.png of the best model.

    Returns:
        :class:`TrainResult` with the best model.
    Raises:
        ValueError: bad configuration or data, or ``out`` holding a run of another
            architecture (checked before anything is compiled or written).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig, got {type(config).__name__}")
    out = out_folder("vae.train", out)
    ckpt = None if out is None else out / runs.CHECKPOINT
    meta = None
    if ckpt is not None and ckpt.exists():  # checked before anything is built or compiled
        meta = runs.read_meta(ckpt)
        runs.check_architecture(ckpt, meta, config)
        if meta.get("own_data") and data is None:
            raise ValueError(f"{ckpt}: the run was trained on your own images (train(..., data=...)); resume it "
                             f"with the same `data=`, not the {config.dataset!r} files")
    d = data if data is not None else vdata.load(config.dataset, limit=config.limit)
    _check_data(config, d)

    key = jax.random.key(config.seed)
    k_init, k_run, k_valid, k_plot = jax.random.split(key, 4)
    model = make_vae(config.model, k_init)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.adam(config.learning_rate)
    state = TrainState(params, optimizer.init(params), jax.random.key_data(k_run))
    start, best_valid, best_epoch, since_best, history = 0, math.inf, None, 0, []
    best_params = params
    if meta is not None:
        state = runs.read(ckpt, state)
        start, best_valid, best_epoch = meta["epoch"], meta["best_valid"], meta["best_epoch"]
        since_best, history = meta["since_best"], meta["history"]
        for h in history:
            h["this_call"] = False
        if (out / runs.BEST).exists():
            best_params = eqx.filter(runs.read(out / runs.BEST, model), eqx.is_inexact_array)

    x_train = jnp.asarray(d.train, jnp.float32)
    x_valid, n_valid = evaluate._batches(np.asarray(d.valid, np.float32), min(500, len(d.valid)))
    lr = jnp.float32(config.learning_rate)

    def epoch_fn(state, beta):
        return run_epoch(state, static, x_train, jnp.float32(beta), lr, config.objective, config.k,
                         config.batch_size)

    def record(epoch):
        return {"config": config.to_dict(), "own_data": data is not None, "epoch": epoch, "best_valid": best_valid,
                "best_epoch": best_epoch, "since_best": since_best,
                "history": [{k: v for k, v in h.items() if k != "this_call"} for h in history]}

    status, message = "completed", f"completed {config.epochs} epochs"
    if start >= config.epochs:
        status, message = "nothing_to_do", f"nothing to do: the run in {out} has done {start} of {config.epochs} epochs"
    elif since_best >= config.patience:
        status, message = "nothing_to_do", f"nothing to do: the run in {out} stopped early at epoch {start}"
        start = config.epochs
    epoch = start
    bar = ProgressBar(config.epochs, f"train {config.model.flow} VAE", {"loss": "loss", "valid": "valid -ELBO"},
                      start=start, enabled=progress)
    try:
        with bar:
            for epoch in range(start, config.epochs):
                beta = beta_schedule(epoch, config.warmup) if config.objective == "elbo" else 1.0
                t0 = time.perf_counter()
                new_state, loss, bad = epoch_fn(state, beta)
                loss, bad = float(loss), int(bad)
                seconds = time.perf_counter() - t0
                if bad >= 0 or not math.isfinite(loss):
                    status, message = "nonfinite", (f"stopped: non-finite loss or gradient at epoch {epoch + 1}, step {bad + 1}; "
                               f"nothing of that epoch was saved (the checkpoint of epoch {epoch} is kept)")
                    break
                valid = -float(np.mean(evaluate.batched_elbo(eqx.combine(new_state.params, static), x_valid, n_valid,
                                                              jax.random.fold_in(k_valid, epoch))))
                if not math.isfinite(valid):
                    status, message = "nonfinite", (f"stopped: non-finite validation -ELBO at epoch {epoch + 1}; nothing of that "
                               f"epoch was saved (the checkpoint of epoch {epoch} is kept)")
                    break
                state = new_state
                history.append({"epoch": epoch + 1, "beta": beta, "train_loss": loss, "valid_neg_elbo": valid,
                                "seconds": seconds, "this_call": True})
                if valid < best_valid:
                    best_valid, best_epoch, since_best, best_params = valid, epoch + 1, 0, state.params
                    if out is not None:
                        runs.write(out / runs.BEST, record(epoch + 1), eqx.combine(best_params, static))
                else:
                    since_best += 1
                if out is not None:
                    runs.write(ckpt, record(epoch + 1), state)
                    write_json(out / "history.json", record(epoch + 1)["history"], indent=1)
                bar.update(epoch + 1, loss=f"{loss:.2f}", valid=f"{valid:.2f}")
                if since_best >= config.patience:
                    status = "early_stop"
                    message = f"early stop at epoch {epoch + 1}: no improvement for {config.patience} epochs"
                    break
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else start
        status, message = "interrupted", (f"interrupted by the user; the checkpoint of epoch {done} is saved"
                   + (f" in {out}" if out is not None else ""))
    now = [h["seconds"] for h in history if h.get("this_call")]
    # the first epoch of a call includes compilation (unless this process compiled it already)
    compile_seconds = max(now[0] - float(np.median(now[1:])), 0.0) if len(now) > 1 else float("nan")
    best_model = eqx.combine(best_params, static)
    epochs_done = history[-1]["epoch"] if history else start
    result = TrainResult(best_model, config, history, best_epoch, best_valid, epochs_done, message, status,
                         compile_seconds, out)
    if out is not None and (now or not (out / "summary.json").exists()):  # a call that trained nothing keeps it
        summary = {"config": config.to_dict(), "message": message, "epochs_done": epochs_done,
                   "best_epoch": best_epoch, "best_valid_neg_elbo": best_valid,
                   "seconds_per_epoch": result.seconds_per_epoch, "compile_seconds": compile_seconds}
        # strict JSON: NaN / inf become null (compile time is unknown after one epoch; no best yet)
        write_json(out / "summary.json", summary)
        if plots_at_end and best_epoch is not None:
            title = f"{config.model.flow} VAE, epoch {best_epoch}"
            plots.samples(best_model, k_plot, d.image_shape, out / "samples.png", title=f"samples: {title}")
            spread = np.unique(np.linspace(0, len(d.test) - 1, min(50, len(d.test))).astype(int))
            plots.reconstructions(best_model, d.test[spread], k_plot, d.image_shape, out / "reconstructions.png",
                                  title=f"test images / reconstructions: {title}")
    return result
