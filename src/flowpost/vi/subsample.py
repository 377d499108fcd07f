"""Data subsampling: doubly stochastic VI (Titsias & Lazaro-Gredilla 2014) with control
variates around the mode.

A posterior whose likelihood is a sum over ``N`` rows,

    log p(u, D) = log p(u) + sum_{i=1..N} l_i(u),

has the unbiased minibatch estimate ``L_B(u) = log p(u) + (N / B) sum_{i in B} l_i(u)``
for a batch ``B`` of ``B`` rows drawn uniformly. Its noise grows with ``N`` while the
posterior's width shrinks as ``N^(-1/2)``, so plain subsampling cannot reach a fixed
accuracy at large ``N``. With control variates (Bardenet et al. 2017, "On Markov chain
Monte Carlo methods for tall data", section 7.2; Baker et al. 2019, "Control variates
for stochastic gradient MCMC"), the estimate is

    L(u) ~= T(u) + L_B(u) - T_B(u),

where ``T`` and ``T_B`` are the second-order Taylor expansions of ``L`` (the full data,
computed ONCE at the mode ``m``: value, gradient, Hessian) and of ``L_B`` (the same batch)
about ``m``. Both sides have the same expectation over batches, so the estimate stays
unbiased, and its variance is that of the Taylor remainder: ``O(|u - m|^3)`` per row
instead of ``O(|u - m|)``. With ``|u - m| ~ N^(-1/2)`` the variance of the whole sum falls
as ``1/(B N)`` rather than growing as ``N^2 / B``.

A :class:`Rows` is how a :class:`~flowpost.vi.target.Target` says it is such a sum (see
:func:`flowpost.targets.from_rows` and NumPyro plates with ``subsample_size``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp

from .._checks import check_ints
from .init import hessian as hessian_at
from .init import value_and_grad

Array = jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class Rows:
    """How a target's log density splits over rows.

    Args:
        sizes: per subsampled plate, ``name -> (N, B)``: its number of rows and the batch
            size of one step.
        log_prob_batch: ``(u (dim,), idx) -> scalar``, the unbiased estimate ``L_B(u)``
            of the full log density for the row indices ``idx`` (a dict ``name -> (B,)``
            int array): prior terms plus ``N / B`` times the batch's likelihood terms.
            With ``idx[name] = arange(N)`` for every plate it is the full log density.
    """

    sizes: Mapping[str, tuple[int, int]]
    log_prob_batch: Callable[[Array, Mapping[str, Array]], Array]

    def __post_init__(self):
        if not self.sizes:
            raise ValueError("Rows: `sizes` must name at least one subsampled plate")
        for name, (n, b) in self.sizes.items():
            check_ints(f"Rows[{name!r}]", n=n, batch_size=b)
            if b > n:
                raise ValueError(f"Rows[{name!r}]: batch size {b} exceeds the {n} rows")

    def draw(self, key) -> dict[str, Array]:
        """Row indices of one batch per plate, drawn uniformly with replacement (``O(B)``,
        unbiased; a permutation of ``N`` rows per step would cost ``O(N)``)."""
        keys = jax.random.split(key, len(self.sizes))
        return {name: jax.random.randint(k, (b,), 0, n) for k, (name, (n, b)) in zip(keys, self.sizes.items())}

    def all(self) -> dict[str, Array]:
        """The indices of every row (the full data)."""
        return {name: jnp.arange(n) for name, (n, _) in self.sizes.items()}

    @property
    def fraction(self) -> float:
        """The largest share of any plate's rows that one batch reads."""
        return max(b / n for n, b in self.sizes.values())


class Taylor(eqx.Module):
    """The control-variate estimate of the full log density (module docstring):
    ``estimate(u (dim,), idx, terms=None) -> scalar``. Its arrays (the mode, the
    full-data value, gradient and Hessian there, and the data of a hoisted
    ``log_prob_batch``) are pytree leaves, so a program that takes it as an argument
    gets them as inputs. Built by :func:`taylor_estimator`."""

    log_prob_batch: Callable
    mode: Array
    value: Array
    grad: Array
    hess: Array | None

    def batch_terms(self, idx):
        """``(L_B(m), grad L_B(m), Hessian of L_B at m or None)`` for the batch ``idx``."""
        f = lambda v: self.log_prob_batch(v, idx)  # noqa: E731
        v, g = jax.value_and_grad(f)(self.mode)
        return v, g, (None if self.hess is None else jax.hessian(f)(self.mode))

    def __call__(self, u, idx, terms=None):
        v_b, g_b, h_b = self.batch_terms(idx) if terms is None else terms
        d = u - self.mode
        taylor = self.value + self.grad @ d
        taylor_b = v_b + g_b @ d
        if self.hess is not None:
            taylor = taylor + 0.5 * d @ (self.hess @ d)
            taylor_b = taylor_b + 0.5 * d @ (h_b @ d)
        return taylor + (self.log_prob_batch(u, idx) - taylor_b)


def taylor_estimator(rows: Rows, log_prob, mode, hessian: bool = True) -> Taylor:
    """The control-variate estimate (a :class:`Taylor`) of the full log density
    ``log_prob`` from batches of ``rows``, expanded about ``mode``.

    The full-data value, gradient and (with ``hessian``) Hessian at ``mode`` are computed
    here, once. Without ``hessian`` (very large ``dim``), the first-order control variate
    (Baker et al. 2019): the variance then falls as ``1/B`` instead of ``1/(B N)``.

    Per batch, :meth:`Taylor.batch_terms` gives ``L_B(m)``, its gradient and, for a batch
    shared by many draws, its Hessian (``dim`` Hessian-vector products, once per step)."""
    mode = jnp.asarray(mode)
    value, grad = value_and_grad(log_prob, mode)  # one program, not one per op
    return Taylor(rows.log_prob_batch, mode, value, grad, hessian_at(log_prob, mode) if hessian else None)


class Naive(eqx.Module):
    """The plain minibatch estimate ``L_B(u)`` in :class:`Taylor`'s form."""

    log_prob_batch: Callable

    def batch_terms(self, idx):
        """No terms: nothing to subtract."""
        return ()

    def __call__(self, u, idx, terms=None):
        return self.log_prob_batch(u, idx)


def naive_estimator(rows: Rows) -> Naive:
    """The plain minibatch estimate ``L_B(u)`` (no control variate): its variance grows as
    ``N^2 / B``; for comparison and tiny ``N``."""
    return Naive(rows.log_prob_batch)


def batch_log_p(rows: Rows, estimate, key):
    """``log_p (n, dim) -> (n,)`` for ONE batch drawn with ``key``, shared by the draws of a
    step (doubly stochastic VI): the batch terms of the control variate are computed once."""
    idx = rows.draw(key)
    terms = jax.lax.stop_gradient(estimate.batch_terms(idx))
    return jax.vmap(lambda u: estimate(u, idx, terms))
