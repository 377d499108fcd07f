"""A :class:`~flowpost.vi.target.Target` from a per-row log-likelihood and a prior: the
form in which :func:`flowpost.fit` can subsample the data (:mod:`flowpost.vi.subsample`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..._checks import as_ints
from ..subsample import Rows
from ..target import Target

__all__ = ["from_rows"]


def from_rows(
    log_lik, data, dim: int, *, log_prior=None, batch_size: int = 1000, constrain=None, names=None, name: str = "rows"
) -> Target:
    """The posterior ``log p(u | D) = log_prior(u) + sum_i log_lik(u, row_i) + const``.

    Args:
        log_lik: ``(u (dim,), row) -> scalar``, one row's log-likelihood; ``row`` is the
            ``i``-th slice of every array in ``data``.
        data: an array, or a tuple / dict of arrays, with the ``N`` rows on the leading axis.
        dim: the number of unconstrained parameters.
        log_prior: ``u (dim,) -> scalar`` (log-Jacobian of ``constrain`` included); default 0
            (a flat prior).
        batch_size: rows per step when :func:`flowpost.fit` subsamples (``N`` if larger).
        constrain: ``u (dim,) -> dict`` of model quantities, as for :class:`~flowpost.vi.target.Target`.
        names: flat names, as for :class:`~flowpost.vi.target.Target`.
        name: a label for tables and files.

    Returns:
        a Target whose ``log_prob`` is the full-data density (used for the mode, the
        Laplace covariance and every diagnostic) and whose ``rows`` lets ``fit`` estimate
        it from ``batch_size`` rows per step, with control variates around the mode.
    """
    (batch_size,) = as_ints("from_rows", batch_size=batch_size)
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("from_rows: `data` holds no arrays")
    data = jax.tree.map(jnp.asarray, data)
    n = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
    if n == 0 or any(np.ndim(a) == 0 or np.shape(a)[0] != n for a in leaves):
        raise ValueError(
            f"from_rows: every array of `data` needs the same number of rows on its first axis, got "
            f"shapes {[np.shape(a) for a in leaves]}"
        )
    if not callable(log_lik):
        raise TypeError(f"from_rows: `log_lik` must be callable (u, row) -> scalar, got {type(log_lik).__name__}")
    prior = (lambda u: jnp.zeros((), u.dtype)) if log_prior is None else log_prior

    def batch(u, idx):
        rows = jax.tree.map(lambda a: a[idx["rows"]], data)
        lik = jax.vmap(log_lik, in_axes=(None, 0))(u, rows)
        return prior(u) + (n / idx["rows"].shape[0]) * jnp.sum(lik)

    def log_prob(u):
        return prior(u) + jnp.sum(jax.vmap(log_lik, in_axes=(None, 0))(u, data))

    rows = Rows({"rows": (n, min(batch_size, n))}, batch)
    return Target(log_prob, dim, constrain, names=names, name=name, rows=rows)
