"""Training: epochs of shuffled minibatches on :mod:`flowpost.engine` (one ``lax.scan``
per epoch), early stopping on the validation -ELBO, a checkpoint every epoch, exact resume.

    result = train(TrainConfig(model=VAEConfig(flow="iaf")), out="runs/iaf")

Guarantees: the state after every finished epoch is on disk (``checkpoint.eqx``), so
Ctrl-C loses at most the running epoch, and a re-run with the same ``out`` continues
from it, bit for bit as if it had not stopped (the PRNG key and optimiser state are
saved). A non-finite loss, gradient or update stops the run under the engine's rule
(the state of the last finite step is kept in memory); nothing of that epoch is written,
so the last good checkpoint and the best model stay as they were.
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

from ... import engine
from ..._checks import out_folder
from ...engine import ProgressBar, Status
from ...engine.checkpoint import write_json
from . import data as vdata
from . import evaluate, likelihoods, objectives, plots, runs
from .model import make_vae
from .runs import TrainConfig


class TrainState(NamedTuple):
    """What a checkpoint holds: the model's arrays, the optimiser state and the raw PRNG
    key data (uint32, so that it serialises). The step count is ``epoch * batches``."""

    params: Any
    opt_state: Any
    key: jax.Array


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the best model, the history, how the run ended."""

    model: Any  # the best model (by validation -ELBO)
    config: TrainConfig
    history: list[dict]
    best_epoch: int | None
    best_valid: float
    epochs_done: int
    message: str
    status: Status  # how the run ended (a str: "completed", "early_stop", "nonfinite", ...)
    compile_seconds: float  # first epoch minus the median later one (nan with one epoch)
    out: pathlib.Path | None

    @property
    def seconds_per_epoch(self) -> float:
        """Median wall time of the epochs run in this call after the first (which includes
        compilation); the first epoch's time if it is the only one."""
        s = [h["seconds"] for h in self.history if h.get("this_call")]
        return float(np.median(s[1:] if len(s) > 1 else s)) if s else float("nan")


def beta_schedule(epoch, warmup: int):
    """KL weight of (0-based) ``epoch``: ``min(1, (epoch + 1) / warmup)``; 1 without warm-up.
    (Works on Python numbers and on traced JAX integers alike.)"""
    return (
        1.0
        if warmup <= 0
        else jnp.minimum(1.0, (epoch + 1) / warmup)
        if isinstance(epoch, jax.Array)
        else min(1.0, (epoch + 1) / warmup)
    )


def epoch_runner(
    static,
    objective: str,
    k: int,
    batch_size: int,
    n_train: int,
    warmup: int,
    optimizer: optax.GradientTransformation,
    mesh=None,
):
    """The engine's ``(plain, guarded)`` chunk functions for one epoch of the VAE: its loss
    is the negative ELBO (KL weight :func:`beta_schedule` of the epoch, derived from the
    step count) or the negative IWAE bound with ``k`` samples. ``static`` is the model's
    non-array part (``eqx.partition``); with a ``mesh`` each minibatch's images are split
    over its devices."""
    n_batches = n_train // batch_size

    def loss_fn(params, key, batch, step):
        model = eqx.combine(params, static)
        xb = engine.devices.shard(batch[0], mesh)
        if objective == "iwae":
            return objectives.iwae(model, xb, key, k)[0], None
        beta = beta_schedule(step // n_batches, warmup) if warmup > 0 else 1.0
        return objectives.elbo(model, xb, key, jnp.asarray(beta, jnp.float32))[0], None

    return engine.runner(lambda step: engine.epoch_chunks(step, batch_size), engine.make_step(loss_fn, optimizer))


def _check_data(config: TrainConfig, d: vdata.ImageData):
    if tuple(d.image_shape) != config.model.image_shape:
        raise ValueError(
            f"`config.model.image_shape` is {config.model.image_shape} but the {d.name} images are {d.image_shape}"
        )
    dim = config.model.image_shape[0] * config.model.image_shape[1]
    for split in ("train", "valid", "test"):
        x = np.asarray(getattr(d, split))
        if x.ndim != 2 or x.shape[1] != dim or len(x) == 0:
            raise ValueError(
                f"`data.{split}` must hold at least one image as a row of {dim} values "
                f"(image_shape {config.model.image_shape}, flattened), got an array of shape {x.shape}"
            )
    for split in ("train", "valid"):
        likelihoods.get(config.model.likelihood).check(getattr(d, split), f"data.{split}")
    if len(d.train) < config.batch_size:
        raise ValueError(f"`batch_size` ({config.batch_size}) exceeds the number of training images ({len(d.train)})")


def train(
    config: TrainConfig,
    out=None,
    *,
    data: vdata.ImageData | None = None,
    progress: bool = True,
    plots_at_end: bool = True,
    optimizer: optax.GradientTransformation | None = None,
    devices: int | None = None,
) -> TrainResult:
    """Train the VAE of ``config`` (resuming from ``out/checkpoint.eqx`` if there is one).

    Args:
        config: :class:`~.runs.TrainConfig` (model architecture, data set, budget).
        out: run folder (checkpoints, history, PNGs); ``None``: nothing is written.
        data: the images (default: ``vdata.load(config.dataset, limit=config.limit)``).
        progress: show a rich progress bar over epochs.
        plots_at_end: write samples.png and reconstructions.png of the best model.
        optimizer: an optax transformation (default ``optax.adam(config.learning_rate)``,
            the protocol's); a resumed run needs one whose state has the same structure.
        devices: split each minibatch's images over this many devices
            (:mod:`flowpost.engine.devices`); the model is replicated, the gradient
            all-reduced, and only process 0 writes files. ``None``: one device.

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
            raise ValueError(
                f"{ckpt}: the run was trained on your own images (train(..., data=...)); resume it "
                f"with the same `data=`, not the {config.dataset!r} files"
            )
    d = data if data is not None else vdata.load(config.dataset, limit=config.limit)
    _check_data(config, d)

    key = jax.random.key(config.seed)
    k_init, k_run, k_valid, k_plot = jax.random.split(key, 4)
    model = make_vae(config.model, k_init)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optimizer or optax.adam(config.learning_rate)
    saved = TrainState(params, optimizer.init(params), jax.random.key_data(k_run))
    start, best_valid, best_epoch, since_best, history = 0, math.inf, None, 0, []
    best_params = params
    if meta is not None:
        saved = runs.read(ckpt, saved)
        start, best_valid, best_epoch = meta["epoch"], meta["best_valid"], meta["best_epoch"]
        since_best, history = meta["since_best"], meta["history"]
        for h in history:
            h["this_call"] = False
        if out is not None and (out / runs.BEST).exists():
            best_params = eqx.filter(runs.read(out / runs.BEST, model), eqx.is_inexact_array)

    x_train = jnp.asarray(d.train, jnp.float32)
    n_batches = len(x_train) // config.batch_size
    x_valid, n_valid = evaluate._batches(np.asarray(d.valid, np.float32), min(500, len(d.valid)))
    mesh = engine.devices.mesh(devices, "vae.train")
    writer = out is not None and engine.devices.is_writer()  # one process writes the run's files
    engine.devices.check_divisible(mesh, config.batch_size, "`batch_size`", "vae.train")
    chunks = epoch_runner(
        static, config.objective, config.k, config.batch_size, len(x_train), config.warmup, optimizer, mesh
    )
    state = engine.TrainState(
        saved.params,
        saved.opt_state,
        jax.random.wrap_key_data(saved.key),
        jnp.asarray(start * n_batches, jnp.int32),
        jnp.full((), -1, jnp.int32),
    )

    def record(epoch):
        return {
            "config": config.to_dict(),
            "own_data": data is not None,
            "epoch": epoch,
            "best_valid": best_valid,
            "best_epoch": best_epoch,
            "since_best": since_best,
            "history": [{k: v for k, v in h.items() if k != "this_call"} for h in history],
        }

    clock = [time.perf_counter()]
    note = {}

    def after_epoch(state, info, done):
        """Validation, best model, checkpoint and early stopping after epoch ``done``."""
        nonlocal best_valid, best_epoch, since_best, best_params
        seconds = time.perf_counter() - clock[0]
        loss = float(info.loss[-1])
        valid = -float(
            np.mean(
                evaluate.batched_elbo(
                    eqx.combine(state.params, static), x_valid, n_valid, jax.random.fold_in(k_valid, done - 1)
                )
            )
        )
        if not math.isfinite(valid):
            note["valid"] = done
            return Status.NONFINITE
        beta = beta_schedule(done - 1, config.warmup) if config.objective == "elbo" else 1.0
        history.append(
            {
                "epoch": done,
                "beta": beta,
                "train_loss": loss,
                "valid_neg_elbo": valid,
                "seconds": seconds,
                "this_call": True,
            }
        )
        if valid < best_valid:
            best_valid, best_epoch, since_best, best_params = valid, done, 0, state.params
            if writer and out is not None:
                runs.write(out / runs.BEST, record(done), eqx.combine(best_params, static))
        else:
            since_best += 1
        if writer and out is not None and ckpt is not None:
            runs.write(ckpt, record(done), TrainState(state.params, state.opt_state, jax.random.key_data(state.key)))
            write_json(out / "history.json", record(done)["history"], indent=1)
        bar.update(done, loss=f"{loss:.2f}", valid=f"{valid:.2f}")
        clock[0] = time.perf_counter()
        return Status.EARLY_STOP if since_best >= config.patience else None

    status = None
    if start >= config.epochs:
        status, message = (
            Status.NOTHING_TO_DO,
            f"nothing to do: the run in {out} has done {start} of {config.epochs} epochs",
        )
    elif since_best >= config.patience:
        status, message = Status.NOTHING_TO_DO, f"nothing to do: the run in {out} stopped early at epoch {start}"
    bar = ProgressBar(
        config.epochs,
        f"train {config.model.flow} VAE",
        {"loss": "loss", "valid": "valid -ELBO"},
        start=start,
        enabled=progress and status is None,
    )
    if status is None:
        with bar:
            out_ = engine.run(
                chunks, state, config.epochs, data=(x_train,), chunk=1, start=start, on_chunk=after_epoch, mesh=mesh
            )
        status = out_.status
        done = history[-1]["epoch"] if history else start
        if status == Status.COMPLETED:
            message = f"completed {config.epochs} epochs"
        elif status == Status.EARLY_STOP:
            message = f"early stop at epoch {done}: no improvement for {config.patience} epochs"
        elif status == Status.INTERRUPTED:
            message = f"interrupted by the user; the checkpoint of epoch {done} is saved" + (
                f" in {out}" if out is not None else ""
            )
        elif "valid" in note:
            message = (
                f"stopped: non-finite validation -ELBO at epoch {note['valid']}; nothing of that epoch was "
                f"saved (the checkpoint of epoch {done} is kept)"
            )
        else:
            failed = out_.failed[0]
            message = (
                f"stopped: non-finite loss, gradient or update at epoch {failed // n_batches + 1}, step "
                f"{failed % n_batches + 1}; nothing of that epoch was saved (the checkpoint of epoch {done} "
                "is kept)"
            )
    now = [h["seconds"] for h in history if h.get("this_call")]
    # the first epoch of a call includes compilation (unless this process compiled it already)
    compile_seconds = max(now[0] - float(np.median(now[1:])), 0.0) if len(now) > 1 else float("nan")
    best_model = eqx.combine(best_params, static)
    epochs_done = history[-1]["epoch"] if history else start
    result = TrainResult(
        best_model, config, history, best_epoch, best_valid, epochs_done, message, status, compile_seconds, out
    )
    if (
        writer and out is not None and (now or not (out / "summary.json").exists())
    ):  # a call that trained nothing keeps it
        summary = {
            "config": config.to_dict(),
            "message": message,
            "epochs_done": epochs_done,
            "best_epoch": best_epoch,
            "best_valid_neg_elbo": best_valid,
            "seconds_per_epoch": result.seconds_per_epoch,
            "compile_seconds": compile_seconds,
        }
        # strict JSON: NaN / inf become null (compile time is unknown after one epoch; no best yet)
        write_json(out / "summary.json", summary)
        if plots_at_end and best_epoch is not None:
            title = f"{config.model.flow} VAE, epoch {best_epoch}"
            plots.samples(best_model, k_plot, d.image_shape, out / "samples.png", title=f"samples: {title}")
            spread = np.unique(np.linspace(0, len(d.test) - 1, min(50, len(d.test))).astype(int))
            plots.reconstructions(
                best_model,
                d.test[spread],
                k_plot,
                d.image_shape,
                out / "reconstructions.png",
                title=f"test images / reconstructions: {title}",
            )
    return result
