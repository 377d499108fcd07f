"""Training runs on disk: the configuration, checkpoints, loading, and evaluation.

A run folder holds

    checkpoint.eqx   latest epoch: model, Adam state, PRNG key, counters (for resuming)
    best.eqx         the model with the best validation -ELBO so far
    history.json     per-epoch train loss, validation -ELBO, beta, seconds
    summary.json     end-of-training summary (written by :func:`~.train.train`)
    samples.png, reconstructions.png
    eval.json        test ``neg_elbo`` and ``nll`` in nats per image (:func:`evaluate_run`)

Each ``.eqx`` file is a tree file of :mod:`flowpost.engine.checkpoint`: one JSON line of
metadata (format, ``kind: "vae"``, config, epoch, best so far, history) followed by the
arrays, written atomically (a crash never leaves half a checkpoint). Checkpoints of the
earlier format ``"flowpost-vae/1"`` (the same layout) are read too.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax

from ..._checks import check_ints, check_positive, plain_numbers
from ...engine import checkpoint
from ...engine.checkpoint import write_json
from . import data as vdata
from . import evaluate
from .model import VAEConfig, make_vae
from .objectives import OBJECTIVES

KIND = "vae"
CHECKPOINT, BEST = "checkpoint.eqx", "best.eqx"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run. Defaults are the Sylvester-flow paper's protocol (van den Berg et al.
    2018): batch 100, Adam 5e-4, KL warm-up over 100 epochs, up to 2000 epochs with early
    stopping after 100 epochs without improvement of the validation -ELBO."""

    model: VAEConfig = VAEConfig()
    dataset: str = "mnist"
    objective: str = "elbo"
    k: int = 1  # importance samples of the IWAE bound
    epochs: int = 2000
    batch_size: int = 100
    learning_rate: float = 5e-4
    warmup: int = 100  # epochs of KL warm-up (0: none)
    patience: int = 100
    seed: int = 0
    limit: int | None = None  # `limit` images of each split, spread over it (quick runs)

    def __post_init__(self):
        plain_numbers(self)
        if not isinstance(self.model, VAEConfig):
            raise TypeError(f"`model` must be a VAEConfig, got {type(self.model).__name__}")
        if self.dataset not in vdata.DATASETS:
            raise ValueError(f"`dataset` must be one of {vdata.DATASETS}, got {self.dataset!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"`objective` must be one of {OBJECTIVES}, got {self.objective!r}")
        check_ints(k=self.k, epochs=self.epochs, batch_size=self.batch_size, patience=self.patience)
        check_ints(least=0, warmup=self.warmup)
        check_positive(learning_rate=self.learning_rate)
        if self.limit is not None:
            check_ints(limit=self.limit)
        if self.objective == "elbo" and self.k != 1:
            raise ValueError("`k` (importance samples) applies to objective='iwae'; the ELBO uses one draw")

    def to_dict(self) -> dict:
        """The configuration as plain JSON-able data (saved in checkpoints)."""
        return {**dataclasses.asdict(self), "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**d, "model": VAEConfig.from_dict(d["model"])})


def write(path: pathlib.Path, meta: dict, tree) -> None:
    """Atomically write ``meta`` (JSON) and ``tree``'s arrays to ``path``."""
    checkpoint.write_tree(path, tree, {"kind": KIND, **meta})


def read_meta(path) -> dict:
    """The JSON metadata line of a checkpoint file."""
    path = pathlib.Path(path)
    try:
        meta = checkpoint.read_header(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a flowpost VAE checkpoint ({e})") from e
    if meta.get("kind") != KIND and meta.get("format") != "flowpost-vae/1":
        raise ValueError(
            f"{path}: not a flowpost VAE checkpoint (format {meta.get('format')!r}, kind "
            f"{meta.get('kind')!r}; expected kind {KIND!r})"
        )
    return meta


def check_architecture(path, meta: dict, config: TrainConfig) -> None:
    """Raise ValueError if the checkpoint at ``path`` was made for another architecture, data
    set or training setting (objective, k, batch size, warm-up, seed, limit): resuming may
    change only the budget (``epochs``, ``patience``) and the ``learning_rate``."""
    saved = TrainConfig.from_dict(meta["config"])
    diff = {
        f.name: (getattr(saved.model, f.name), getattr(config.model, f.name))
        for f in dataclasses.fields(VAEConfig)
        if getattr(saved.model, f.name) != getattr(config.model, f.name)
    }
    # a resumed run may change its budget (epochs, patience) and its step size (the usual
    # rescue of a run that diverged); anything else would make it another run than the one
    # it continues
    may_change = ("model", "epochs", "patience", "learning_rate")
    for f in dataclasses.fields(TrainConfig):
        if f.name not in may_change and getattr(saved, f.name) != getattr(config, f.name):
            diff[f.name] = (getattr(saved, f.name), getattr(config, f.name))
    if diff:
        what = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"{path}: the checkpoint is of another run ({what}); a resumed run may change only "
            "`epochs`, `patience` and `learning_rate`. Use another --out folder, or the run's own "
            "settings to resume it."
        )


def read(path, like):
    """The arrays of a checkpoint, in the structure of ``like``."""
    return checkpoint.read_tree(path, like)


def load(run):
    """``(model, config, meta)``: the best model of a run folder (``best.eqx``)."""
    run = pathlib.Path(run)
    path = run / BEST
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no {BEST} (is it a `flowpost vae train` output folder?)")
    meta = read_meta(path)
    config = TrainConfig.from_dict(meta["config"])
    return read(path, make_vae(config.model, jax.random.key(0))), config, meta


def evaluate_run(
    run,
    samples: int = 5000,
    key=None,
    limit: int | None = None,
    progress: bool = False,
    data: vdata.ImageData | None = None,
) -> dict:
    """Test ``neg_elbo`` and ``nll`` (nats per image) of a run's best model; writes
    ``run/eval.json`` and returns its content. A run trained on the user's own images
    (``train(..., data=...)``) needs the same ``data`` (its test split is scored)."""
    run = pathlib.Path(run)
    model, config, meta = load(run)
    if meta.get("own_data") and data is None:
        raise ValueError(
            f"{run} was trained on your own images (train(..., data=...)), not on the "
            f"{config.dataset!r} files: pass the same `data=` to evaluate it"
        )
    d = data if data is not None else vdata.load(config.dataset, limit=config.limit)
    if limit is not None:
        check_ints("vae eval", limit=limit)
    x = vdata.subset(d.test, limit)
    key = jax.random.key(config.seed + 1) if key is None else key
    result = evaluate.evaluate(model, x, key, samples=samples, progress=progress)
    result.update(
        flow=config.model.flow,
        arch=config.model.arch,
        dataset="own data" if data is not None else config.dataset,
        epoch=meta.get("epoch"),
        split="test",
    )
    write_json(run / "eval.json", result)
    return result
