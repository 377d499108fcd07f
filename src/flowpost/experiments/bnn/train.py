"""Mini-batch variational inference for Bayesian neural networks.

The unbiased minibatch ELBO (Hoffman et al. 2013; Blundell et al. 2015): for a batch
``B`` of ``|B|`` of the ``N`` examples,

    log p(theta) + (N / |B|) sum_{i in B} log p(y_i | x_i, theta) - log q(theta)

has expectation (over the batch) equal to the full-batch ``log p(theta, D) - log q(theta)``.
One epoch visits ``floor(N / |B|)`` batches of a fresh random permutation (every batch is
a uniformly random subset, so each is unbiased); an epoch is one ``lax.scan`` over the
batches (:func:`flowpost.engine.epoch_chunks`), and the step is the engine's with the STL
ELBO of the batch's log density. Several data sets of equal shape (the 20 UCI splits)
train in ONE compiled program by ``vmap`` over a leading axis (:func:`fit_many`); under
the engine's rule on non-finite values each freezes at its own last finite step.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ... import engine
from ... import flows as F
from ..._checks import check_ints, check_positive
from ...engine import ProgressBar, Status, checkpoint, default_optimizer
from ...engine import as_key as _as_key
from ...vi import objectives
from ...vi.fit import Trace, flat_params
from ...vi.result import FitResult, read_flow, read_meta, save_flow, status_of
from . import families
from .model import BNN


def minibatch_log_joint(model: BNN, x, y, n_total: int):
    """``thetas (S, dim) -> (S,)``: the unbiased minibatch estimate of ``log p(theta, D)``
    from the batch ``(x, y)`` of a data set of ``n_total`` examples."""
    scale = n_total / x.shape[0]
    return jax.vmap(lambda t: model.log_joint(t, x, y, scale))


@dataclasses.dataclass
class BNNResult:
    """A fitted weight posterior.

    Attributes:
        q: the variational family (a :class:`flowpost.flows.Flow` over ``theta``; for an
            ensemble, ``fit_many(members=K)``, the :class:`flowpost.flows.Mixture` of ``K``).
        model: the :class:`~flowpost.experiments.bnn.model.BNN`.
        trace: per-epoch means of ``loss``, ``elbo``, ``grad_norm``, ``update_norm`` (arrays
            ``(epochs,)``; an ensemble's: the mean over its members).
        epochs: epochs completed; ``message``: how the run ended; ``seconds``: wall time
            (of the whole :func:`fit_many` call when several data sets trained together).
        status: how the run ended (:class:`flowpost.engine.Status`).
    """

    q: Any
    model: BNN
    trace: Trace
    epochs: int
    message: str
    seconds: float
    family: str
    timings: list = dataclasses.field(default_factory=list)  # (epochs, seconds) per compiled call; first compiles
    family_options: dict = dataclasses.field(default_factory=dict)  # keywords of families.make
    status: Status = Status.COMPLETED

    def sample(self, key, n: int) -> jax.Array:
        """``n`` weight vectors ``theta (n, dim)``."""
        return self.q.sample(_as_key(key), n)

    def save(self, path):
        """Save to the folder ``path``: ``q.eqx`` (the posterior's parameters), ``meta.json``
        (family, options, epochs, message) and ``trace.npz``; read back by :func:`load` with
        the same model. (No netCDF of draws: a posterior over 10^5-10^6 weights is cheaper
        to re-sample from ``q`` than to store.)"""
        options = checkpoint.json_or_none(
            {
                k: np.asarray(v).tolist() if isinstance(v, (np.ndarray, jax.Array)) else v
                for k, v in self.family_options.items()
            }
        )
        if options is None:
            raise ValueError(
                "BNNResult.save: `family_options` cannot be written as JSON; save `q` with "
                "equinox.tree_serialise_leaves instead"
            )
        with checkpoint.folder(path, "BNNResult.save") as tmp:
            save_flow(
                tmp,
                self.q,
                self.trace,
                {
                    "family": self.family,
                    "family_options": options,
                    "dim": self.model.dim,
                    "epochs": self.epochs,
                    "message": self.message,
                    "status": str(self.status),
                    "seconds": self.seconds,
                    "members": self.members,
                },
            )
        return pathlib.Path(path)

    @property
    def members(self) -> int:
        """Number of ensemble members (``fit_many(members=...)``); 1 for a single posterior."""
        return len(self.q.components) if isinstance(self.q, F.Mixture) else 1

    def fit_result(self, x, y):
        """A :class:`flowpost.vi.FitResult` over the full-batch target (for diagnostics,
        PSIS, ArviZ); ``x, y`` the training data."""
        return FitResult(
            q=self.q,
            target=self.model.target(x, y),
            trace=self.trace,
            steps=self.epochs,
            message=self.message,
            seconds=self.seconds,
            family=self.family,
            status=self.status,
        )


def load(path, model: BNN, like=None) -> BNNResult:
    """Load a :class:`BNNResult` saved by :meth:`BNNResult.save`; ``model`` is the same
    network, likelihood and prior (code, like a Target, so it is not saved); ``like`` a
    flow (or an ensemble's :class:`~flowpost.flows.Mixture`) of the saved structure, needed
    only for a custom family."""
    meta = read_meta(path, "bnn.load")
    if not isinstance(model, BNN):
        raise TypeError(f"bnn.load: `model` must be the fitted fp.bnn model (a BNN), got {type(model).__name__}")
    if model.dim != meta["dim"]:
        raise ValueError(f"bnn.load: saved posterior has {meta['dim']} parameters, the model has {model.dim}")
    if like is None:
        if meta["family"] not in families.FAMILIES:
            raise ValueError("bnn.load: a custom family was saved; pass `like=` (a flow of the same structure)")
        like = families.make(meta["family"], model, **meta["family_options"])
        members = meta.get("members", 1)
        like = F.Mixture([like] * members) if members > 1 else like
    q, trace = read_flow(path, meta, like, "bnn.load")
    return BNNResult(
        q,
        model,
        trace,
        meta["epochs"],
        meta["message"],
        meta["seconds"],
        meta["family"],
        family_options=meta["family_options"],
        status=status_of(meta),
    )


def fit(model: BNN, x, y, family="meanfield", **kwargs) -> BNNResult:
    """Fit a variational posterior over ``model``'s weights to ``(x (N, *in), y (N,))``.

    Keyword arguments are those of :func:`fit_many` (epochs, batch_size, num_samples,
    learning_rate, optimizer, key, family_options, chunk, progress)."""
    x, y = model.check_data(x, y)
    return fit_many(model, x[None], y[None], family, **kwargs)[0]


def fit_many(
    model: BNN,
    xs,
    ys,
    family="meanfield",
    *,
    epochs: int = 100,
    batch_size: int = 32,
    num_samples: int = 4,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    key=None,
    family_options: dict | None = None,
    chunk: int | None = None,
    progress: bool = True,
    label: str = "bnn",
    members: int = 1,
    devices: int | None = None,
) -> list[BNNResult]:
    """Fit independent posteriors to ``P`` data sets of equal shape in one compiled program.

    Args:
        model: the Bayesian network.
        xs: ``(P, N, *in)`` inputs of ``P`` data sets (e.g. the train parts of the UCI splits).
        ys: ``(P, N)`` (or ``(P, N, *event)``) targets.
        family: a name of :data:`families.FAMILIES` or a :class:`flowpost.flows.Flow`.
        epochs: passes over the data; ``batch_size``: examples per step (``N`` if larger).
        num_samples: weight draws per step (the ELBO's Monte Carlo size).
        learning_rate: peak rate of :func:`flowpost.vi.default_optimizer` (Adam, cosine).
        key: PRNG key (required). Data set ``p`` uses ``fold_in(key, p)``.
        family_options: keyword arguments of :func:`families.make` (rank, block, ...).
        chunk: epochs per compiled call (progress granularity; default ~1/50 of the run).
        progress: show a rich progress bar.
        members: fit this many posteriors per data set, one after another, each from its
            own initial weights (:meth:`BNN.reinitialised`; the first from the model's) and
            random draws, each by its own ELBO; the result's ``q`` is their equal-weight
            :class:`flowpost.flows.Mixture` (an ensemble of variational posteriors, as in
            MultiSWAG, Wilson & Izmailov 2020). ``members`` times the cost of one.
        devices: split each minibatch's rows over this many devices
            (:mod:`flowpost.engine.devices`); the weights' posterior is replicated and the
            gradient all-reduced. ``None``: one device.

    Returns:
        one :class:`BNNResult` per data set. A non-finite loss freezes that data set's state
        at its last finite step; Ctrl-C returns what was trained so far.
    """
    key = _as_key(key)
    check_ints("bnn.fit", epochs=epochs, batch_size=batch_size, num_samples=num_samples, members=members)
    if members > 1:
        return _ensemble(
            model,
            xs,
            ys,
            family,
            members,
            key,
            label,
            dict(
                epochs=epochs,
                batch_size=batch_size,
                num_samples=num_samples,
                learning_rate=learning_rate,
                optimizer=optimizer,
                family_options=family_options,
                chunk=chunk,
                progress=progress,
                devices=devices,
            ),
        )
    if optimizer is None:
        check_positive("bnn.fit", learning_rate=learning_rate)
    xs, ys = np.asarray(xs), np.asarray(ys)
    if xs.ndim < 2 or ys.ndim < 2 or xs.shape[:2] != ys.shape[:2]:
        raise ValueError(f"bnn.fit_many: expected xs (P, N, ...) and ys (P, N, ...), got {xs.shape} and {ys.shape}")
    checked = [model.check_data(xs[p], ys[p]) for p in range(xs.shape[0])]  # before anything compiles
    xs, ys = jnp.asarray(np.stack([c[0] for c in checked])), jnp.asarray(np.stack([c[1] for c in checked]))
    n_sets, n = xs.shape[:2]
    batch = min(batch_size, n)
    n_batches = n // batch
    total_steps = epochs * n_batches
    k_fam, k_run = jax.random.split(key)
    allowed = [p for p in inspect.signature(families.make).parameters if p not in ("family", "model", "key")]
    unknown = sorted(set(family_options or {}) - set(allowed))
    if unknown:
        raise ValueError(f"bnn: unknown `family_options` {unknown}; the options are {allowed}")
    q = families.make(family, model, key=k_fam, **(family_options or {}))
    optimizer = optimizer or default_optimizer(total_steps, learning_rate)
    params, build = flat_params(q)
    obj = objectives.get("elbo")

    mesh = engine.devices.mesh(devices, "bnn.fit")
    engine.devices.check_divisible(mesh, batch, "the batch size", "bnn.fit")

    def loss_fn(params, key, batch, step):
        x, y = (engine.devices.shard(a, mesh) for a in batch)
        return obj(build(params), minibatch_log_joint(model, x, y, n), key, num_samples)

    keys = jax.vmap(lambda p: jax.random.fold_in(k_run, p))(jnp.arange(n_sets))
    states = jax.vmap(lambda k: engine.init(params, optimizer, k))(keys)
    chunks = engine.runner(
        engine.vmapped(lambda step: engine.epoch_chunks(step, batch)), engine.make_step(loss_fn, optimizer)
    )
    label = f"fit {label} ({family if isinstance(family, str) else 'custom'}, {n_sets} set(s))"
    with ProgressBar(epochs, label, {"elbo": "ELBO"}, enabled=progress) as bar:
        out = engine.run(
            chunks,
            states,
            epochs,
            data=(xs, ys),
            chunk=chunk or max(1, epochs // 50),
            progress=bar,
            show=lambda info: {"elbo": f"{float(np.mean(info.aux[:, -1])):.4g}"},
            sets=True,
            mesh=mesh,
        )
    trace = Trace.of(out.info) if out.info is not None else Trace(*(np.zeros((n_sets, 0)) for _ in Trace._fields))
    message = "completed"
    if out.status == Status.INTERRUPTED:
        message = f"interrupted by the user after {out.done} epochs; the trained state is kept"
        warnings.warn(f"bnn.fit: {message}", RuntimeWarning, stacklevel=2)
    results = []
    for p in range(n_sets):
        msg, status = message, out.status if out.status == Status.INTERRUPTED else Status.COMPLETED
        if out.failed[p] is not None:
            msg = (
                f"stopped: the loss, its gradient or the update was not finite at step {out.failed[p]}; kept the "
                "state of the last finite step"
            )
            status = Status.NONFINITE
            warnings.warn(f"bnn.fit: data set {p}: {msg}", RuntimeWarning, stacklevel=2)
        results.append(
            BNNResult(
                build(out.state.params[p]),
                model,
                Trace(*(a[p] for a in trace)),
                out.done,
                msg,
                out.seconds,
                family if isinstance(family, str) else "custom",
                out.timings,
                dict(family_options or {}),
                status,
            )
        )
    return results


def _ensemble(model: BNN, xs, ys, family, members: int, key, label: str, options: dict) -> list[BNNResult]:
    """``members`` runs of :func:`fit_many`, combined per data set into one :class:`BNNResult`
    whose ``q`` is the equal-weight mixture of the members' posteriors. Member 0 is exactly
    the single fit (same start, same key); member ``m`` starts from reinitialised weights
    with its own key. Ctrl-C during a member keeps the members trained so far."""
    runs = []
    for m in range(members):
        start, k_fit = model, key
        if m:
            k_init, k_fit = jax.random.split(jax.random.fold_in(key, m))
            start = model.reinitialised(k_init)
        runs.append(fit_many(start, xs, ys, family, key=k_fit, label=f"{label} member {m + 1}/{members}", **options))
        if runs[-1][0].status == Status.INTERRUPTED:
            break
    return [_combine(model, [run[p] for run in runs]) for p in range(len(runs[0]))]


def _combine(model: BNN, parts: list[BNNResult]) -> BNNResult:
    """One result from ensemble members: the mixture of their ``q``; the trace is the
    members' mean per epoch (over the epochs all completed); ``epochs`` the fewest any
    completed; ``message`` theirs, numbered when they differ."""
    n = min(len(p.trace.loss) for p in parts)
    trace = Trace(*(np.mean([getattr(p.trace, f)[:n] for p in parts], axis=0) for f in Trace._fields))
    messages = [p.message for p in parts]
    message = (
        messages[0]
        if len(set(messages)) == 1
        else "; ".join(f"member {m + 1}: {msg}" for m, msg in enumerate(messages))
    )
    statuses = [p.status for p in parts]
    status = next((s for s in (Status.INTERRUPTED, Status.NONFINITE) if s in statuses), statuses[0])
    return BNNResult(
        F.Mixture([p.q for p in parts]),
        model,
        trace,
        min(p.epochs for p in parts),
        message,
        sum(p.seconds for p in parts),
        parts[0].family,
        [t for p in parts for t in p.timings],
        parts[0].family_options,
        status,
    )
