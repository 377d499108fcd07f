"""Ready-made flows with sensible defaults. Every constructor starts at (or near) the
identity map, so a fresh flow is close to its base ``N(0, I)``, and stacks its repeated
layers with :class:`~flowpost.flows.bijection.Scan` (compile time independent of depth).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from .._checks import check_ints, check_positive
from .autoregressive import MaskedAutoregressive
from .bijection import Chain, Invert, Scan
from .coupling import Coupling
from .distribution import Flow
from .linear import RandomPermute, Reverse
from .residual import Planar, Radial, Sylvester
from .transformers import Affine, RationalQuadraticSpline


def _check(dim, layers, cond_dim=None):
    check_ints(dim=dim, layers=layers)
    if cond_dim is not None:
        check_ints(cond_dim=cond_dim)


def _stack(key, layers, make_block, base):
    return Flow(Scan.make(make_block, key, layers), base=base)


def realnvp(
    key,
    dim: int,
    *,
    layers: int = 10,
    hidden: Sequence[int] = (32, 32),
    cond_dim: int | None = None,
    activation=jax.nn.relu,
    base=None,
) -> Flow:
    """RealNVP (Dinh et al. 2017): ``layers`` affine couplings, halves alternating.

    Defaults follow Agrawal et al. 2020 (10 couplings, 2 x 32 hidden units)."""
    _check(dim, layers, cond_dim)

    def block(k):
        return Chain([Coupling(k, dim, Affine(), hidden, cond_dim, activation=activation), Reverse(dim)])

    return _stack(key, layers, block, base)


def spline(
    key,
    dim: int,
    *,
    layers: int = 5,
    knots: int = 8,
    bound: float = 5.0,
    hidden: Sequence[int] = (64, 64),
    autoregressive: bool = False,
    cond_dim: int | None = None,
    activation=jax.nn.relu,
    base=None,
) -> Flow:
    """Neural spline flow (Durkan et al. 2019): rational-quadratic spline couplings
    (``autoregressive=False``) or inverse-autoregressive splines (``True``: one-pass
    sampling and sample density, as variational inference wants)."""
    _check(dim, layers, cond_dim)
    check_ints(knots=knots)
    check_positive("spline", bound=bound)
    rqs = RationalQuadraticSpline(knots=knots, bound=bound)

    def block(k):
        k1, k2 = jax.random.split(k)
        if autoregressive:
            return Chain(
                [Invert(MaskedAutoregressive(k1, dim, rqs, hidden, cond_dim, activation)), RandomPermute(k2, dim)]
            )
        return Chain([Coupling(k1, dim, rqs, hidden, cond_dim, activation=activation), Reverse(dim)])

    return _stack(key, layers, block, base)


def _autoregressive(key, dim, layers, hidden, cond_dim, activation, base, invert):
    _check(dim, layers, cond_dim)

    def block(k):
        made = MaskedAutoregressive(k, dim, Affine(), hidden, cond_dim, activation)
        return Chain([Invert(made) if invert else made, Reverse(dim)])

    return _stack(key, layers, block, base)


def maf(
    key,
    dim: int,
    *,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    cond_dim: int | None = None,
    activation=jax.nn.relu,
    base=None,
) -> Flow:
    """Masked autoregressive flow (Papamakarios et al. 2017): ``log_prob`` of any point in
    one pass per layer; sampling takes ``dim`` passes per layer. For density estimation."""
    return _autoregressive(key, dim, layers, hidden, cond_dim, activation, base, invert=False)


def iaf(
    key,
    dim: int,
    *,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    cond_dim: int | None = None,
    activation=jax.nn.relu,
    base=None,
) -> Flow:
    """Inverse autoregressive flow (Kingma et al. 2016): sampling and the density of the
    flow's own samples in one pass per layer; ``log_prob`` of an arbitrary point takes
    ``dim`` passes. For variational inference."""
    return _autoregressive(key, dim, layers, hidden, cond_dim, activation, base, invert=True)


def planar(key, dim: int, *, layers: int = 10, cond_dim: int | None = None, base=None) -> Flow:
    """Planar flow (Rezende & Mohamed 2015); amortised parameters with ``cond_dim``."""
    _check(dim, layers, cond_dim)
    return _stack(key, layers, lambda k: Planar(k, dim, cond_dim), base)


def radial(key, dim: int, *, layers: int = 10, cond_dim: int | None = None, base=None) -> Flow:
    """Radial flow (Rezende & Mohamed 2015); amortised parameters with ``cond_dim``."""
    _check(dim, layers, cond_dim)
    return _stack(key, layers, lambda k: Radial(k, dim, cond_dim), base)


def sylvester(
    key,
    dim: int,
    *,
    layers: int = 4,
    kind: str = "orthogonal",
    m: int | None = None,
    n_householder: int = 8,
    cond_dim: int | None = None,
    base=None,
) -> Flow:
    """Sylvester flow (van den Berg et al. 2018), ``kind`` in ``"orthogonal"``,
    ``"householder"``, ``"triangular"`` (the latter alternates identity and reversal ``Q``)."""
    _check(dim, layers, cond_dim)
    if kind == "triangular":

        def block(k):
            k1, k2 = jax.random.split(k)
            return Chain(
                [Sylvester(k1, dim, kind, cond_dim=cond_dim), Sylvester(k2, dim, kind, flip=True, cond_dim=cond_dim)]
            )

        if layers % 2:
            raise ValueError("sylvester(kind='triangular') alternates Q = I and Q = reversal: use an even `layers`")
        return _stack(key, layers // 2, block, base)
    return _stack(key, layers, lambda k: Sylvester(k, dim, kind, m, n_householder, cond_dim=cond_dim), base)
