"""Variational families over network weights that scale to many dimensions.

Every family is a :class:`flowpost.flows.Flow` on ``N(0, I_dim)`` (so ``fp.fit``, the
objectives and the diagnostics use them unchanged), ending in a per-coordinate affine
map ``theta = loc + scale * v`` started at the network's initial weights with small
scales (the usual start of Bayes-by-backprop, Blundell et al. 2015):

- ``"meanfield"``: ``v = z``; ``2 D`` parameters, ``O(D)`` per draw.
- ``"lowrank"``: ``v = (I + U U^T) z``, ``U (D, r)``: covariance
  ``S (I + U U^T)^2 S`` = diagonal + any rank-``r`` PSD matrix; ``(2 + r) D`` parameters,
  ``O(D r)`` per draw (log-determinant by the matrix determinant lemma, inverse by
  Woodbury).
- ``"flow"``: a RealNVP (Dinh et al. 2017) over ALL coordinates before the low-rank
  affine map; affordable for the UCI networks (D ~ 500-5000), quadratic in D otherwise.
- ``"subspace"``: a RealNVP over ``k`` chosen coordinates (default: the last layer and
  the noise / hyper-parameters, as in last-layer Bayesian methods), a Gaussian elsewhere:
  ``theta = loc + scale * [T(z_k); z_rest]``. Cost ``O(D + k^2)``.
- ``"blockflow"``: layer-wise block flows: each layer's weights are cut into blocks of
  ``block`` consecutive weights (parts of a unit's fan-in) and a small RealNVP, shared by
  the blocks of that layer, acts on every block (vmapped); then the affine map. Cost
  ``O(D)`` per draw with ``O(layers * block^2)`` flow parameters: it scales to millions
  of weights.
"""

from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ... import flows as F
from .model import BNN

FAMILIES = ("meanfield", "lowrank", "flow", "subspace", "blockflow")


class LowRankAffine(F.Bijection):
    """``y = loc + exp(log_scale) * (x + U (U^T x))`` with ``U (dim, rank)``.

    ``I + U U^T`` is symmetric positive definite for every ``U``, so the map is always
    invertible: ``log|det| = sum(log_scale) + log det(I_r + U^T U)`` (determinant lemma),
    ``x = v - U (I_r + U^T U)^{-1} U^T v`` (Woodbury). Covariance of ``y`` for ``x ~ N(0, I)``:
    ``S (I + U U^T)^2 S`` = ``S^2`` + a rank-``r`` PSD matrix (and every such matrix)."""

    loc: jax.Array
    log_scale: jax.Array
    factor: jax.Array

    def __init__(self, dim, rank, loc=None, scale=1.0, key=None):
        self.dim, self.cond_dim = dim, None
        self.loc = jnp.zeros((dim,)) if loc is None else jnp.asarray(loc, jnp.float32)
        self.log_scale = jnp.broadcast_to(jnp.log(jnp.asarray(scale, jnp.float32)), (dim,))
        key = jax.random.key(0) if key is None else key
        # small random start: U = 0 is a saddle (the map is quadratic in U)
        self.factor = 0.1 / np.sqrt(dim) * jax.random.normal(key, (dim, rank))

    def _capacitance(self):
        r = self.factor.shape[1]
        return jnp.eye(r, dtype=self.factor.dtype) + self.factor.T @ self.factor

    def _logdet(self):
        chol = jnp.linalg.cholesky(self._capacitance())
        return jnp.sum(self.log_scale) + 2 * jnp.sum(jnp.log(jnp.diag(chol)))

    def _forward(self, x, context):
        v = x + self.factor @ (self.factor.T @ x)
        return self.loc + jnp.exp(self.log_scale) * v, self._logdet()

    def _inverse(self, y, context):
        v = (y - self.loc) * jnp.exp(-self.log_scale)
        x = v - self.factor @ jnp.linalg.solve(self._capacitance(), self.factor.T @ v)
        return x, -self._logdet()


class OnCoordinates(F.Bijection):
    """Apply ``bijection`` (of dimension ``len(index)``) to ``x[index]``; other coordinates pass."""

    bijection: F.Bijection
    index: jax.Array = eqx.field(static=False)

    def __init__(self, bijection, index, dim):
        index = np.asarray(index)
        if bijection.dim != len(index) or len(np.unique(index)) != len(index) or index.max() >= dim:
            raise ValueError(f"OnCoordinates: need {bijection.dim} distinct indices below {dim}, got {len(index)}")
        self.bijection, self.index = bijection, jnp.asarray(index, jnp.int32)
        self.dim, self.cond_dim = dim, None

    def _apply(self, x, method):
        y, ld = getattr(self.bijection, method)(x[self.index], None)
        return x.at[self.index].set(y), ld

    def _forward(self, x, context):
        return self._apply(x, "_forward")

    def _inverse(self, y, context):
        return self._apply(y, "_inverse")


class Blockwise(F.Bijection):
    """One bijection of dimension ``b`` applied (vmapped, shared parameters) to each of the
    ``n_blocks`` consecutive blocks ``x[start + i b : start + (i+1) b]``; the rest passes."""

    bijection: F.Bijection
    start: int = eqx.field(static=True)
    n_blocks: int = eqx.field(static=True)

    def __init__(self, bijection, start, n_blocks, dim):
        self.bijection, self.start, self.n_blocks = bijection, int(start), int(n_blocks)
        self.dim, self.cond_dim = dim, None
        if self.start + self.n_blocks * bijection.dim > dim:
            raise ValueError("Blockwise: the blocks run past the end of the vector")

    def _apply(self, x, method):
        b = self.bijection.dim
        stop = self.start + self.n_blocks * b
        blocks = x[self.start : stop].reshape(self.n_blocks, b)
        y, ld = jax.vmap(lambda v: getattr(self.bijection, method)(v, None))(blocks)
        return jnp.concatenate([x[: self.start], y.reshape(-1), x[stop:]]), jnp.sum(ld)

    def _forward(self, x, context):
        return self._apply(x, "_forward")

    def _inverse(self, y, context):
        return self._apply(y, "_inverse")


def _affine(model: BNN, rank: int, init_scale: float, key):
    loc = model.init_theta()
    if rank == 0:
        return F.AffineElementwise(loc, init_scale, dim=model.dim)
    return LowRankAffine(model.dim, rank, loc, init_scale, key=key)


def _realnvp(key, dim, layers, hidden):
    return F.realnvp(key, dim, layers=layers, hidden=hidden, activation=jax.nn.tanh).bijection


def _natural(name: str):
    """Sort key reading the digits in a name as numbers (``Dense_9`` before ``Dense_10``)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def last_layer_index(model: BNN, max_dim: int = 1024) -> np.ndarray:
    """Coordinates of the last weight matrix, the last bias and the hyper-parameters;
    if they are more than ``max_dim``, the last ``max_dim`` of them (the hyper-parameters,
    the output biases and the weights into the last outputs).

    "Last" is the last two parameter arrays with their names in natural order: JAX
    flattens dict keys as text, so a Flax ``{"Dense_0", ..., "Dense_11"}`` flattens
    ``Dense_10, Dense_11`` before ``Dense_9``. Pass ``index=`` for a network this rule
    does not fit (e.g. an output layer without a bias)."""
    order = sorted(range(model.n_layers), key=lambda i: _natural(model.segment_names[i]))
    leaves = np.flatnonzero(np.isin(model.segments, order[-2:]))
    index = np.concatenate([leaves, np.arange(model.n_weights, model.dim)])
    return index[-max_dim:]


def make(
    family: str | F.Flow,
    model: BNN,
    *,
    key=None,
    init_scale: float = 1e-2,
    rank: int | None = None,
    layers: int | None = None,
    hidden=None,
    block: int = 8,
    index=None,
) -> F.Flow:
    """A variational family over ``model``'s ``theta`` (see the module docstring).

    Args:
        family: a name in :data:`FAMILIES`, or a user's :class:`~flowpost.flows.Flow`.
        model: the :class:`~flowpost.experiments.bnn.model.BNN`.
        key: PRNG key for initial flow weights.
        init_scale: the initial posterior standard deviation of every coordinate.
        rank: rank of the low-rank part (default 0 for meanfield/blockflow/subspace,
            8 for ``"lowrank"``, 2 for ``"flow"``).
        layers: the RealNVP's couplings (default 4; 2 for ``"blockflow"``, which runs it
            once per block).
        hidden: the RealNVP's conditioner widths (default (32, 32); (16,) for ``"blockflow"``).
        block: block size of ``"blockflow"``.
        index: coordinates of ``"subspace"`` (default :func:`last_layer_index`).
    """
    if isinstance(family, F.Flow):
        if family.dim != model.dim:
            raise ValueError(f"bnn: the family flow has dim {family.dim}, the model has dim {model.dim}")
        return family
    if family not in FAMILIES:
        raise ValueError(f"bnn: `family` must be one of {FAMILIES} or a flowpost.flows.Flow, got {family!r}")
    if not (isinstance(init_scale, (int, float)) and init_scale > 0):
        raise ValueError(f"bnn: `init_scale` must be positive, got {init_scale!r}")
    key = jax.random.key(0) if key is None else key
    k_aff, k_flow = jax.random.split(key)
    default_rank = {"lowrank": 8, "flow": 2}.get(family, 0)
    affine = _affine(model, default_rank if rank is None else int(rank), init_scale, k_aff)
    small = family == "blockflow"
    layers = layers or (2 if small else 4)
    hidden = tuple(hidden) if hidden is not None else ((16,) if small else (32, 32))
    d = model.dim
    if family in ("meanfield", "lowrank"):
        return F.Flow(affine)
    if family == "flow":
        return F.Flow(F.Chain([_realnvp(k_flow, d, layers, hidden), affine]))
    if family == "subspace":
        idx = last_layer_index(model) if index is None else _check_index(index, d)
        return F.Flow(F.Chain([OnCoordinates(_realnvp(k_flow, len(idx), layers, hidden), idx, d), affine]))
    # blockflow: one small shared flow per layer (parameter array)
    if block < 2:
        raise ValueError(f"bnn: `block` must be >= 2, got {block}")
    parts, start = [], 0
    keys = jax.random.split(k_flow, model.n_layers)
    for layer, k in enumerate(keys):
        size = int(np.sum(model.segments == layer))
        if size >= block:
            parts.append(Blockwise(_realnvp(k, block, layers, hidden), start, size // block, d))
        start += size
    if not parts:
        raise ValueError(
            f"bnn: `block` {block} is larger than every parameter array (the largest has "
            f"{int(np.bincount(model.segments).max())} weights), so 'blockflow' would be mean-field; "
            "use a smaller `block`"
        )
    return F.Flow(F.Chain(parts + [affine]))


def _check_index(index, dim: int) -> np.ndarray:
    idx = np.asarray(index)
    if idx.ndim != 1 or idx.size < 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"bnn: the subspace `index` must be a 1-D array of at least 2 integer coordinates, got "
            f"shape {idx.shape}, dtype {idx.dtype}"
        )
    if idx.min() < 0 or idx.max() >= dim:
        raise ValueError(
            f"bnn: the subspace `index` must lie in [0, {dim}) (the model's theta), got values in "
            f"[{idx.min()}, {idx.max()}]"
        )
    if len(np.unique(idx)) != idx.size:
        raise ValueError(f"bnn: the subspace `index` repeats {idx.size - len(np.unique(idx))} coordinate(s)")
    return idx


def n_params(q) -> int:
    """Number of trainable (inexact) numbers in a family."""
    return int(sum(a.size for a in jax.tree.leaves(eqx.filter(q, eqx.is_inexact_array))))
