"""A fitted variational posterior: draws in the model's space, diagnostics, importance
correction, ArviZ output, saving and loading (:func:`load`).

The diagnostics themselves are in :mod:`flowpost.vi.diagnostics`, the file format in
:mod:`flowpost.engine.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import as_ints
from .._jit import filter_once
from ..engine import Status, checkpoint, fast_key
from . import diagnostics as D
from .target import Target, flatten_draws

# re-exported: the diagnostics' building blocks
psis, compare = D.psis, D.compare


@dataclasses.dataclass
class FitResult:
    """What :func:`flowpost.fit` returns.

    Attributes:
        q: the fitted family (a :class:`flowpost.flows.Flow` on ``R^dim``).
        target: the target it was fitted to.
        trace: per-step ``loss``, ``elbo``, ``grad_norm``, ``update_norm`` arrays (:class:`~.fit.Trace`).
        steps: steps taken; ``message``: how the run ended, in words; ``seconds``: wall time.
        status: how the run ended (:class:`flowpost.engine.Status`).
    """

    q: Any
    target: Target
    trace: Any
    steps: int
    message: str
    seconds: float = 0.0
    family: str = "flow"
    objective: str = "elbo"
    start: Any = None
    status: Status = Status.COMPLETED

    # -- draws --------------------------------------------------------------------------
    def sample_unconstrained(self, key, n: int) -> tuple[jax.Array, jax.Array]:
        """``(u (n, dim), log q(u) (n,))`` in the unconstrained space."""
        (n,) = as_ints(n=n)
        return _sample(self.q, fast_key(key, "sample"), n)

    def sample(self, key, n: int) -> dict[str, np.ndarray]:
        """``n`` draws in the model's space: quantity name -> array ``(n, *shape)``."""
        u, _ = self.sample_unconstrained(key, n)
        return self.constrain(u)

    def constrain(self, u) -> dict[str, np.ndarray]:
        """The model's quantities of unconstrained draws ``u (n, dim)``: name -> ``(n, *shape)``."""
        out = _to_model(self.target.to_model, u)
        return {k: np.asarray(v) for k, v in out.items()}

    def log_prob(self, u) -> jax.Array:
        """``log q(u)`` for unconstrained ``u (..., dim)``."""
        return self.q.log_prob(u)

    def log_densities(self, key, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Draws ``u (n, dim)``, the target's ``log p(u)`` and ``log q(u)`` (each ``(n,)``).

        For a target over many data rows (``target.rows``) the draws are evaluated in
        groups (``lax.map``), so that memory holds about 10^7 row terms at a time."""
        u, lq = self.sample_unconstrained(key, n)
        rows = getattr(self.target, "rows", None)
        group = None if rows is None else max(1, 10**7 // max(size for size, _ in rows.sizes.values()))
        lp = _batched_log_prob(self.target.log_prob, u, group)
        return u, lp, lq

    def log_weights(self, key, n: int) -> tuple[jax.Array, np.ndarray]:
        """Draws ``u (n, dim)`` and their log importance weights ``log p(u) - log q(u)``."""
        u, lp, lq = self.log_densities(key, n)
        return u, np.asarray(lp, np.float64) - np.asarray(lq, np.float64)  # on the host: no program

    # -- diagnostics --------------------------------------------------------------------
    def diagnostics(self, key=None, n: int = 4000) -> dict[str, Any]:
        """ELBO, PSIS k-hat, importance-sampling ESS and convergence of the run
        (:func:`flowpost.vi.diagnostics.diagnose`).

        Keys: ``elbo`` (with ``elbo_se``), ``khat``, ``ess`` (of the smoothed weights,
        out of ``n``), ``ess_fraction``, ``converged`` (ELBO plateau over the last fifth
        of the run), ``elbo_slope`` (nats per 1000 steps there), ``grad_norm`` (median
        there), ``log_evidence`` (importance-sampling estimate of log Z, an upper
        estimate vs. the ELBO), ``warnings`` (list of str), ``message``, ``status`` and
        ``start`` (how the family started, e.g. the Laplace note; None if it started as
        built); ``nonfinite_weights`` (draws whose log p - log q is not finite) and
        ``nan_density`` (those of them where the target's log density is NaN, counted as
        -inf: a rejection, as in Stan); ``psis_moment_gap`` (q's moments against the
        PSIS-corrected ones); ``confirmed`` (k-hat < 0.5 and every quantity's moments within
        0.1 posterior sd of the corrected ones with twice their Monte Carlo error) and
        ``flagged`` (a warning says q's own draws should not be relied on as they are).
        """
        return D.diagnose(self, key, n)

    def convergence(self) -> dict[str, Any]:
        """Whether the ELBO had flattened at the end (:func:`flowpost.vi.diagnostics.convergence`)."""
        return D.convergence(self.trace)

    # -- importance correction ----------------------------------------------------------
    def resample(self, key, n: int, pool: int | None = None) -> dict[str, np.ndarray]:
        """``n`` PSIS-corrected draws (model space): ``pool`` draws from ``q`` (default
        ``max(4n, 4000)``) resampled with their Pareto-smoothed importance weights."""
        (n,) = as_ints(n=n)
        (pool,) = as_ints(pool=pool or max(4 * n, 4000))
        k1, k2 = jax.random.split(key)
        u, log_w = self.log_weights(k1, pool)
        lw, _ = psis(log_w)
        idx = jax.random.choice(k2, pool, (n,), replace=True, p=jnp.asarray(np.exp(lw)))
        return self.constrain(u[np.asarray(idx)])

    # -- output -------------------------------------------------------------------------
    def to_arviz(self, key=None, n: int = 4000, chains: int = 4) -> az.InferenceData:
        """``n`` independent draws from q as ``arviz.InferenceData``, laid out as ``chains``
        chains of ``n // chains`` draws (``n`` rounded down to a multiple of ``chains``), so
        that ArviZ's tools run as on MCMC output; the log importance weights and the
        target's log densities are in ``sample_stats``.

        The chains are independent batches of independent draws: their r_hat is 1 up to
        noise whatever q is, so it says nothing about how well q fits (use
        :meth:`diagnostics`)."""
        n, chains = as_ints("to_arviz", n=n, chains=chains)
        per = n // chains
        if per < 1:
            raise ValueError(f"to_arviz: `n` ({n}) must be at least `chains` ({chains})")
        key = jax.random.key(0) if key is None else key
        u, lp, lq = self.log_densities(key, per * chains)
        log_w = np.asarray(lp - lq, dtype=np.float64)
        draws = self.constrain(u)

        def split(a):
            a = np.asarray(a)
            return a.reshape(chains, per, *a.shape[1:])

        posterior = {k: split(v) for k, v in draws.items()}
        stats = {"log_weight": split(log_w), "lp": split(lp)}
        return az.from_dict(
            posterior=posterior,
            sample_stats=stats,
            attrs={
                "target": self.target.name,
                "family": self.family,
                "objective": self.objective,
                "inference_library": "flowpost",
            },
        )

    def summary(self, key=None, n: int = 4000) -> dict[str, dict[str, float]]:
        """Per flat quantity: mean, sd and the 5/50/95% quantiles of ``n`` draws."""
        key = jax.random.key(0) if key is None else key
        flat = flatten_draws(self.sample(key, n))
        return {
            k: {
                "mean": float(np.mean(v)),
                "sd": float(np.std(v)),
                "q5": float(np.quantile(v, 0.05)),
                "q50": float(np.quantile(v, 0.5)),
                "q95": float(np.quantile(v, 0.95)),
            }
            for k, v in flat.items()
        }

    def compare_reference(self, key=None, n: int = 10000, resampled: bool = False) -> dict[str, Any]:
        """Against ``target.reference``: worst ``|mean - ref mean| / ref sd`` (``z``) and
        worst ``|log(sd / ref sd)|`` over the quantities, and which quantities."""
        if not self.target.reference:
            raise ValueError(f"target {self.target.name!r} has no reference draws")
        key = jax.random.key(0) if key is None else key
        draws = self.resample(key, n) if resampled else self.sample(key, n)
        return compare(flatten_draws(draws), self.target.reference)

    def save(self, path) -> pathlib.Path:
        """Save to the folder ``path`` (replaced whole; see
        :func:`flowpost.engine.checkpoint.folder`): ``q.eqx`` (parameters), ``meta.json``,
        ``trace.npz``, ``start.npz`` (the start's mode and covariance factor, when there
        was one) and ``posterior.nc`` (ArviZ netCDF of 4000 draws)."""
        start = (
            None
            if self.start is None
            else {
                "log_prob": float(self.start.log_prob),
                "iterations": int(self.start.iterations),
                "note": self.start.note,
            }
        )
        idata = self.to_arviz()
        with checkpoint.folder(path, "FitResult.save") as tmp:
            save_flow(
                tmp,
                self.q,
                self.trace,
                {
                    "target": self.target.name,
                    "builtin": checkpoint.json_or_none(self.target.builtin),
                    "dim": self.target.dim,
                    "family": self.family,
                    "objective": self.objective,
                    "steps": self.steps,
                    "message": self.message,
                    "status": str(self.status),
                    "seconds": self.seconds,
                    "start": start,
                },
            )
            if self.start is not None:
                checkpoint.write_npz(tmp / "start.npz", mode=self.start.mode, chol=self.start.chol)
            idata.to_netcdf(str(tmp / "posterior.nc"))
        return pathlib.Path(path)


def save_flow(path, q, trace, meta: dict) -> pathlib.Path:
    """Write a fitted flow into the folder ``path``: ``q.eqx`` (its arrays, with ``meta`` in
    the header), ``meta.json`` (the same metadata, for people and scripts) and
    ``trace.npz``. Read back by :func:`read_flow`. (Callers write into
    :func:`flowpost.engine.checkpoint.folder`, which makes the folder atomic.)"""
    path = pathlib.Path(path)
    checkpoint.write_tree(path / "q.eqx", q, meta)
    header = checkpoint.read_header(path / "q.eqx")
    checkpoint.write_json(path / checkpoint.MARKER, header)
    checkpoint.write_npz(path / "trace.npz", **trace._asdict())
    return path


def read_meta(path, who: str) -> dict:
    """The metadata of a result folder written by :func:`save_flow` (any released format)."""
    meta = checkpoint.read_meta(path, who)
    if meta.get("seconds") is None:  # strict JSON stores a NaN as null
        meta["seconds"] = float("nan")
    return meta


def read_flow(path, meta: dict, like, who: str):
    """``(q, trace)`` from a folder written by :func:`save_flow`; ``like`` is a flow of the
    saved structure (checked against ``meta`` first, with a clear error)."""
    from .fit import Trace

    path = pathlib.Path(path)
    # format 1 stored the tree's repr, which differs between processes: not comparable
    if meta.get("format", 1) >= 2:
        checkpoint.check_like(meta, like, who, f"the family {meta['family']!r}")
    q = checkpoint.read_tree(path / "q.eqx", like, who)
    tr = np.load(path / "trace.npz")
    # results saved before the trace had ``update_norm`` load with it NaN
    trace = Trace(*(tr[f] if f in tr.files else np.full_like(tr["loss"], np.nan) for f in Trace._fields))
    return q, trace


@filter_once
def _batched_log_prob(log_prob, u, group):
    """``log_prob`` at each row of ``u``: one ``vmap``, or ``lax.map`` over groups of ``group``."""
    if group is None or group >= u.shape[0]:
        return jax.vmap(log_prob)(u)
    return jax.lax.map(log_prob, u, batch_size=group)


@filter_once
def _sample(q, key, n):
    return q.sample_and_log_prob(key, n)


@filter_once
def _to_model(to_model, u):
    return jax.vmap(to_model)(u)


def load(path, target: Target | None = None, like=None) -> FitResult:
    """Load a saved :class:`FitResult`.

    Args:
        path: the folder written by :meth:`FitResult.save`.
        target: the target (required unless it was a built-in one, found by name).
        like: a flow of the same structure, for a custom family (built-in families are
            rebuilt from ``meta.json``).
    """
    from . import families

    meta = read_meta(path, "load")
    if target is None:
        from . import targets

        builtin = meta.get("builtin") if meta.get("format", 1) >= 2 else {"name": meta["target"], "kwargs": {}}
        if not builtin:
            raise ValueError(
                f"load: the result was fitted to {meta['target']!r}, a user's target (not one of "
                "fp.targets.get's built-in targets, or one built with keywords that JSON cannot hold); "
                "pass `target=` (the same Target)"
            )
        try:
            target = targets.get(builtin["name"], **builtin["kwargs"])
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"load: the result was fitted to {meta['target']!r}, which is not a built-in target; "
                "pass `target=` (the same Target object)"
            ) from e
    if target.dim != meta["dim"]:
        raise ValueError(f"load: saved dim {meta['dim']} but the target has dim {target.dim}")
    if like is None:
        if meta["family"] not in families.FAMILIES:
            raise ValueError("load: a custom family was saved; pass `like=` (a flow of the same structure)")
        like = families.make(meta["family"], meta["dim"])
        if meta["family"] == "flow" and meta.get("format", 1) < 3:  # saved when the base was always t with df 10
            like = families.flow(meta["dim"], df=10.0)
    q, trace = read_flow(path, meta, like, "load")
    return FitResult(
        q=q,
        target=target,
        trace=trace,
        steps=meta["steps"],
        message=meta["message"],
        seconds=meta["seconds"],
        family=meta["family"],
        objective=meta["objective"],
        start=_read_start(path, meta),
        status=status_of(meta),
    )


def status_of(meta: dict) -> Status:
    """The saved status; for results saved before there was one (formats 1-4), read from
    the message as those versions wrote it."""
    if "status" in meta:
        return Status(meta["status"])
    message = meta.get("message", "")
    for prefix, status in (
        ("stopped", Status.NONFINITE),
        ("interrupted", Status.INTERRUPTED),
        ("converged", Status.EARLY_STOP),
    ):
        if message.startswith(prefix):
            return status
    return Status.COMPLETED


def _read_start(path, meta: dict):
    """The saved start (:class:`~.init.Laplace`), or None (none was used, or the result
    was saved before starts were)."""
    from .init import Laplace

    file = pathlib.Path(path) / "start.npz"
    if not meta.get("start") or not file.exists():
        return None
    arrays = np.load(file)
    return Laplace(
        jnp.asarray(arrays["mode"]),
        jnp.asarray(arrays["chol"]),
        meta["start"]["log_prob"],
        meta["start"]["iterations"],
        meta["start"]["note"],
    )
