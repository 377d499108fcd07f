"""Elementwise parametrised monotone maps ("transformers") used by coupling and
autoregressive flows: ``y_i = tau(x_i; params_i)``.

A transformer is a small static object with ``n_params`` (unconstrained numbers per
dimension) and two pure functions, each mapping ``(params (d, n_params), x (d,))`` to
``(y (d,), logdet (d,))``, where ``logdet`` is the elementwise ``log|dy/dx|``. All-zero
parameters give the identity.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .._math import softplus

_SOFTPLUS_ONE = float(np.log(np.expm1(1.0)))  # softplus(_SOFTPLUS_ONE) == 1


def _columns(params, splits):
    """``params[..., :s0], params[..., s0:s1], ...`` as one split, whose gradient is a
    single concatenation (separate slices differentiate to zero-padded copies summed)."""
    return jnp.split(params, splits, axis=-1)


def _positive(raw, minimum):
    """``minimum + (1 - minimum) * softplus(raw + c)``: positive, equal to 1 at ``raw = 0``."""
    return minimum + (1.0 - minimum) * softplus(raw + _SOFTPLUS_ONE)


@dataclasses.dataclass(frozen=True)
class Affine:
    """``y = x * scale + shift`` with ``scale = softplus(.)`` bounded below by ``min_scale``.

    The softplus (rather than ``exp``) keeps float32 free of overflow for any parameters
    (Dinh et al. 2017 use ``exp``; the family is the same).
    """

    min_scale: float = 1e-3
    n_params: int = 2

    def _shift_scale(self, params):
        shift, raw = _columns(params, [1])
        return shift[..., 0], _positive(raw[..., 0], self.min_scale)

    def forward(self, params, x):
        """``y = f(x; params)`` elementwise, with ``log|dy/dx|`` per element."""
        shift, scale = self._shift_scale(params)
        return x * scale + shift, jnp.log(scale)

    def inverse(self, params, y):
        """``x = f^{-1}(y; params)`` elementwise, with ``log|dx/dy|`` per element."""
        shift, scale = self._shift_scale(params)
        return (y - shift) / scale, -jnp.log(scale)


@dataclasses.dataclass(frozen=True)
class RationalQuadraticSpline:
    """Monotone rational-quadratic spline on ``[-bound, bound]`` with ``knots`` bins and
    identity (slope-1) linear tails outside (Durkan et al. 2019, "Neural Spline Flows").

    Per dimension there are ``3 * knots - 1`` parameters: ``knots`` bin widths, ``knots``
    bin heights (both through a softmax with a floor) and ``knots - 1`` interior
    derivatives (softplus with a floor); the two boundary derivatives are 1, which makes
    the tails continuous in value and slope.
    """

    knots: int = 8
    bound: float = 5.0
    min_width: float = 1e-3
    min_height: float = 1e-3
    min_derivative: float = 1e-3

    @property
    def n_params(self) -> int:
        return 3 * self.knots - 1

    def _knots(self, params):
        k, b = self.knots, self.bound
        raw_w, raw_h, raw_d = _columns(params, [k, 2 * k])
        w = jax.nn.softmax(raw_w, axis=-1)
        w = self.min_width + (1 - self.min_width * k) * w
        h = jax.nn.softmax(raw_h, axis=-1)
        h = self.min_height + (1 - self.min_height * k) * h
        d = _positive(raw_d, self.min_derivative)
        ones = jnp.ones(d.shape[:-1] + (1,), d.dtype)
        d = jnp.concatenate([ones, d, ones], axis=-1)
        zero = jnp.zeros(w.shape[:-1] + (1,), w.dtype)
        xk = jnp.concatenate([zero, jnp.cumsum(w, axis=-1)], axis=-1)
        yk = jnp.concatenate([zero, jnp.cumsum(h, axis=-1)], axis=-1)
        # exact end points: cumsum may leave the last knot a rounding error away from 1
        xk = (2 * xk.at[..., -1].set(1.0) - 1) * b
        yk = (2 * yk.at[..., -1].set(1.0) - 1) * b
        return xk, yk, d

    @staticmethod
    def _bin(knots, v):
        # index k with knots[k] <= v < knots[k+1], clipped to the valid bins
        idx = jnp.sum(v[..., None] >= knots[..., 1:-1], axis=-1)
        return idx

    @staticmethod
    def _take(a, idx):
        return jnp.take_along_axis(a, idx[..., None], axis=-1)[..., 0]

    def _gather(self, params, v, on_x):
        xk, yk, d = self._knots(params)
        idx = self._bin(xk if on_x else yk, v)
        t = self._take
        x0, x1, y0, y1 = t(xk, idx), t(xk, idx + 1), t(yk, idx), t(yk, idx + 1)
        return x0, x1 - x0, y0, y1 - y0, t(d, idx), t(d, idx + 1)

    def forward(self, params, x):
        """``y = f(x; params)`` elementwise, with ``log|dy/dx|`` per element."""
        inside = jnp.abs(x) < self.bound
        xc = jnp.clip(x, -self.bound, self.bound)
        x0, w, y0, h, d0, d1 = self._gather(params, xc, on_x=True)
        s = h / w
        xi = jnp.clip((xc - x0) / w, 0.0, 1.0)
        om = xi * (1 - xi)
        den = s + (d1 + d0 - 2 * s) * om
        y = y0 + h * (s * xi**2 + d0 * om) / den
        dy = s**2 * (d1 * xi**2 + 2 * s * om + d0 * (1 - xi) ** 2) / den**2
        return jnp.where(inside, y, x), jnp.where(inside, jnp.log(dy), 0.0)

    def inverse(self, params, y):
        """``x = f^{-1}(y; params)`` elementwise, with ``log|dx/dy|`` per element."""
        inside = jnp.abs(y) < self.bound
        yc = jnp.clip(y, -self.bound, self.bound)
        x0, w, y0, h, d0, d1 = self._gather(params, yc, on_x=False)
        s = h / w
        dy = yc - y0
        c2 = d1 + d0 - 2 * s
        a = h * (s - d0) + dy * c2
        b = h * d0 - dy * c2
        c = -s * dy
        disc = jnp.maximum(b**2 - 4 * a * c, 0.0)
        xi = jnp.clip(2 * c / (-b - jnp.sqrt(disc)), 0.0, 1.0)
        x = x0 + xi * w
        om = xi * (1 - xi)
        den = s + c2 * om
        dlog = jnp.log(s**2 * (d1 * xi**2 + 2 * s * om + d0 * (1 - xi) ** 2)) - 2 * jnp.log(den)
        return jnp.where(inside, x, y), jnp.where(inside, -dlog, 0.0)
