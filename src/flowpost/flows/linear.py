"""Volume-tracking linear layers: ActNorm, permutations, an LU-parametrised invertible
matrix (Kingma & Dhariwal 2018, "Glow") and a triangular affine map (the full-rank
Gaussian's layer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from .._math import softplus
from .bijection import Bijection


class ActNorm(Bijection):
    """``y = (x - loc) * exp(-log_scale)`` per coordinate (Glow's activation normalisation).

    Starts as the identity; :meth:`initialise` returns a copy fitted to a batch so that
    its output has zero mean and unit variance (Glow's data-dependent initialisation).
    """

    loc: jax.Array
    log_scale: jax.Array

    def __init__(self, dim, loc=None, log_scale=None):
        self.dim, self.cond_dim = dim, None
        self.loc = jnp.zeros((dim,)) if loc is None else jnp.asarray(loc)
        self.log_scale = jnp.zeros((dim,)) if log_scale is None else jnp.asarray(log_scale)

    def initialise(self, x: jax.Array) -> ActNorm:
        """``x (n, dim)`` -> an ActNorm that standardises ``x`` (a constant column is only
        centred: dividing it by its zero spread would multiply it by about 1e6)."""
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ActNorm.initialise expects a batch of shape (n, {self.dim}), got {x.shape}")
        sd = jnp.std(x, 0)
        return ActNorm(self.dim, jnp.mean(x, 0), jnp.log(jnp.where(sd > 1e-6, sd, 1.0)))

    def _forward(self, x, context):
        return (x - self.loc) * jnp.exp(-self.log_scale), -jnp.sum(self.log_scale)

    def _inverse(self, y, context):
        return y * jnp.exp(self.log_scale) + self.loc, jnp.sum(self.log_scale)


class Permute(Bijection):
    """``y = x[perm]`` (a constant integer permutation; ``logdet = 0``)."""

    perm: jax.Array
    inv: jax.Array

    def __init__(self, perm):
        if isinstance(perm, jax.core.Tracer):  # built under vmap (a stack of layers)
            self.perm, self.inv = perm, jnp.argsort(perm)
        else:
            perm = np.asarray(perm)
            if sorted(perm.tolist()) != list(range(len(perm))):
                raise ValueError(f"Permute: {perm} is not a permutation of 0..{len(perm) - 1}")
            self.perm, self.inv = jnp.asarray(perm), jnp.asarray(np.argsort(perm))
        self.dim, self.cond_dim = perm.shape[0], None

    def _forward(self, x, context):
        return x[self.perm], jnp.zeros((), x.dtype)

    def _inverse(self, y, context):
        return y[self.inv], jnp.zeros((), y.dtype)


class Reverse(Permute):
    """The reversal permutation ``y = x[::-1]``, used between couplings so that masks alternate.

    A :class:`Permute` (``perm`` is ``dim-1, ..., 0``) that applies the reversal as a
    static flip rather than a gather: no index arrays are read, the flip's gradient is a
    flip (a gather's is a scatter-add), and batched arrays keep their memory layout.
    """

    def __init__(self, dim: int):
        super().__init__(np.arange(dim)[::-1])

    def _forward(self, x, context):
        return x[::-1], jnp.zeros((), x.dtype)

    def _inverse(self, y, context):
        return y[::-1], jnp.zeros((), y.dtype)


def RandomPermute(key, dim: int) -> Permute:
    """A fixed random permutation drawn once from ``key``."""
    return Permute(jax.random.permutation(key, dim))


class LULinear(Bijection):
    """``y = P L U x + b`` with ``P`` a fixed permutation, ``L`` unit lower triangular and
    ``U`` upper triangular with diagonal ``exp(log_diag)`` (Glow's invertible 1x1
    convolution, LU form): ``logdet = sum(log_diag)``, inverse by two triangular solves.
    Starts as the identity (with a random ``P`` if a key is given)."""

    lower: jax.Array
    upper: jax.Array
    log_diag: jax.Array
    bias: jax.Array
    perm: jax.Array

    def __init__(self, dim, key=None):
        self.dim, self.cond_dim = dim, None
        self.lower = jnp.zeros((dim, dim))
        self.upper = jnp.zeros((dim, dim))
        self.log_diag = jnp.zeros((dim,))
        self.bias = jnp.zeros((dim,))
        self.perm = jnp.arange(dim) if key is None else jax.random.permutation(key, dim)

    def _factors(self):
        eye = jnp.eye(self.dim, dtype=self.lower.dtype)
        lower = jnp.tril(self.lower, -1) + eye
        upper = jnp.triu(self.upper, 1) + jnp.diag(jnp.exp(self.log_diag))
        return lower, upper

    def _forward(self, x, context):
        lower, upper = self._factors()
        y = jnp.zeros_like(x).at[self.perm].set(lower @ (upper @ x)) + self.bias
        return y, jnp.sum(self.log_diag)

    def _inverse(self, y, context):
        lower, upper = self._factors()
        v = (y - self.bias)[self.perm]
        v = jsl.solve_triangular(lower, v, lower=True, unit_diagonal=True)
        x = jsl.solve_triangular(upper, v, lower=False)
        return x, -jnp.sum(self.log_diag)


class TriangularAffine(Bijection):
    """``y = loc + L x`` with ``L`` lower triangular, diagonal ``softplus(.)`` (> 0).

    As a flow on a standard normal base it is the full-rank Gaussian ``N(loc, L L^T)``.
    Starts as ``N(loc, scale^2 I)`` for the given ``loc`` and ``scale``."""

    loc: jax.Array
    raw_diag: jax.Array
    off_diag: jax.Array

    def __init__(self, dim, loc=None, scale=None, chol=None):
        self.dim, self.cond_dim = dim, None
        # concrete inputs are prepared in NumPy (each eager jnp op compiles a program)
        traced = any(isinstance(a, jax.core.Tracer) for a in (loc, scale, chol))
        xp, dtype = (jnp, float) if traced else (np, np.float64)
        self.loc = jnp.asarray(xp.zeros((dim,)) if loc is None else xp.asarray(loc, dtype), float)
        if chol is not None:
            chol = xp.asarray(chol, dtype)
            diag, off_diag = xp.diag(chol), xp.tril(chol, -1)
        else:
            diag = xp.ones((dim,)) if scale is None else xp.broadcast_to(xp.asarray(scale, dtype), (dim,))
            off_diag = xp.zeros((dim, dim))
        if not traced and not bool(np.all(diag > 0)):
            raise ValueError(
                f"TriangularAffine: the {'diagonal of `chol`' if chol is not None else '`scale`'} "
                f"must be positive (a Cholesky factor's diagonal), got {diag}"
            )
        self.off_diag = jnp.asarray(off_diag, float)
        self.raw_diag = jnp.asarray(diag + xp.log(-xp.expm1(-diag)), float)  # softplus^{-1}

    @property
    def chol(self) -> jax.Array:
        return jnp.tril(self.off_diag, -1) + jnp.diag(softplus(self.raw_diag))

    def _forward(self, x, context):
        return self.loc + self.chol @ x, jnp.sum(jnp.log(softplus(self.raw_diag)))

    def _inverse(self, y, context):
        x = jsl.solve_triangular(self.chol, y - self.loc, lower=True)
        return x, -jnp.sum(jnp.log(softplus(self.raw_diag)))
