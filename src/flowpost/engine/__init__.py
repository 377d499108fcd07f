"""The training engine every trainer of flowpost calls: a pure ``init``/``step`` over a
:class:`TrainState`, driven in ``lax.scan`` chunks by one driver with one rule on
non-finite values, a :class:`Status` on every run, one progress bar, Ctrl-C handling and
one checkpoint format (:mod:`flowpost.engine.checkpoint`).

This is the lowest layer of flowpost: it knows nothing of flows, VI, VAEs or networks.
"""

from . import checkpoint, devices
from .loop import (
    Info,
    Outcome,
    Status,
    TrainState,
    epoch_chunks,
    finite,
    guard,
    init,
    make_step,
    partition,
    run,
    runner,
    scan_chunks,
    vmapped,
)
from .optim import as_key, default_optimizer, fast_key, fold_in_on_host, numpy_rng, split_on_host
from .progress import ProgressBar

__all__ = [
    "checkpoint",
    "devices",
    "Info",
    "Outcome",
    "Status",
    "TrainState",
    "epoch_chunks",
    "finite",
    "guard",
    "init",
    "make_step",
    "partition",
    "run",
    "runner",
    "scan_chunks",
    "vmapped",
    "ProgressBar",
    "default_optimizer",
    "as_key",
    "fast_key",
    "fold_in_on_host",
    "numpy_rng",
    "split_on_host",
]
