"""Residual flows of the form ``y = z + (something small)``: planar and radial
(Rezende & Mohamed 2015, "Variational inference with normalizing flows") and Sylvester
(van den Berg et al. 2018, "Sylvester normalizing flows for variational inference").

Their parameters may be *amortised*: with ``cond_dim`` set, every parameter is
``base + W @ context`` (``W`` starts at zero), which is how a VAE's encoder produces
per-datapoint flow parameters. Planar and radial flows are inverted exactly (radial in
closed form, planar by a 1-D bisection, see :meth:`Planar.inverse`); Sylvester flows
have no tractable inverse and raise :class:`NoInverseError`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._math import softplus
from .bijection import Bijection, NoInverseError
from .nn import Linear

_SOFTPLUS_ONE = float(np.log(np.expm1(1.0)))


class AmortisedParams(eqx.Module):
    """Named parameter arrays, optionally shifted by a linear function of a context."""

    base: dict
    hyper: Linear | None

    def __init__(self, key, base: dict, cond_dim=None):
        self.base = base
        size = sum(int(np.prod(v.shape)) for v in base.values())
        self.hyper = None if not cond_dim else Linear(key, cond_dim, size, zero=True)

    def __call__(self, context):
        if self.hyper is None:
            return self.base
        flat, out, i = self.hyper(context), {}, 0
        for k in sorted(self.base):
            v = self.base[k]
            n = int(np.prod(v.shape))
            out[k] = v + flat[i : i + n].reshape(v.shape)
            i += n
        return out


class Planar(Bijection):
    """Planar flow ``y = z + u_hat * tanh(w.z + b)``.

    ``u_hat = u + (m(w.u) - w.u) w / |w|^2`` with ``m(a) = -1 + softplus(a + log(e - 1))``
    enforces ``w.u_hat > -1``, which makes the map invertible (Rezende & Mohamed 2015,
    appendix A; the shift in ``m`` makes ``u = 0`` the identity). ``logdet =
    log(1 + tanh'(w.z + b) w.u_hat)``.
    """

    params: AmortisedParams

    def __init__(self, key, dim, cond_dim=None):
        self.dim, self.cond_dim = dim, cond_dim
        kw, kh = jax.random.split(key)
        w = jax.random.normal(kw, (dim,)) / math.sqrt(dim)
        base = {"u": jnp.zeros((dim,)), "w": w, "b": jnp.zeros(())}
        self.params = AmortisedParams(kh, base, cond_dim)

    def _uwb(self, context):
        p = self.params(context)
        u, w, b = p["u"], p["w"], p["b"]
        wu = w @ u
        m = -1.0 + softplus(wu + _SOFTPLUS_ONE)
        u_hat = u + (m - wu) * w / (w @ w)
        return u_hat, w, b

    def _forward(self, z, context):
        u, w, b = self._uwb(context)
        t = jnp.tanh(w @ z + b)
        return z + u * t, jnp.log1p((1 - t**2) * (w @ u))

    def _inverse(self, y, context, iterations: int = 100):
        """Exact up to bisection tolerance: ``a = w.z`` solves ``a + c tanh(a + b) = w.y``
        (``c = w.u_hat > -1``, so the left side is strictly increasing) and lies in
        ``[w.y - |c|, w.y + |c|]``; then ``z = y - u_hat tanh(a + b)``."""
        u, w, b = self._uwb(context)
        c, target = w @ u, w @ y

        def body(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            above = mid + c * jnp.tanh(mid + b) > target
            return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

        lo, hi = jax.lax.fori_loop(0, iterations, body, (target - jnp.abs(c), target + jnp.abs(c)))
        a = jax.lax.stop_gradient(0.5 * (lo + hi))
        # a Newton step: carries gradients
        a = a - (a + c * jnp.tanh(a + b) - target) / (1 + c * (1 - jnp.tanh(a + b) ** 2))
        t = jnp.tanh(a + b)
        return y - u * t, -jnp.log1p((1 - t**2) * c)


class Radial(Bijection):
    """Radial flow ``y = z + beta h(alpha, r) (z - z0)``, ``h = 1 / (alpha + r)``,
    ``r = |z - z0|``, with ``alpha = softplus(.) > 0`` and ``beta = -alpha + softplus(.)
    >= -alpha`` for invertibility (Rezende & Mohamed 2015). The inverse is closed-form:
    ``|y - z0| = r (1 + beta / (alpha + r))`` is a quadratic in ``r``."""

    params: AmortisedParams

    def __init__(self, key, dim, cond_dim=None):
        self.dim, self.cond_dim = dim, cond_dim
        k0, kh = jax.random.split(key)
        base = {
            "z0": 0.1 * jax.random.normal(k0, (dim,)),
            "alpha": jnp.full((), _SOFTPLUS_ONE),  # alpha = 1
            "beta": jnp.full((), _SOFTPLUS_ONE),  # beta = -alpha + 1 = 0: the identity
        }
        self.params = AmortisedParams(kh, base, cond_dim)

    def _abz(self, context):
        p = self.params(context)
        alpha = softplus(p["alpha"])
        return alpha, -alpha + softplus(p["beta"]), p["z0"]

    @staticmethod
    def _norm(v):
        s = v @ v
        return jnp.where(s > 0, jnp.sqrt(jnp.where(s > 0, s, 1.0)), 0.0)

    def _logdet(self, alpha, beta, r):
        bh = beta / (alpha + r)
        return (self.dim - 1) * jnp.log1p(bh) + jnp.log1p(beta * alpha / (alpha + r) ** 2)

    def _forward(self, z, context):
        alpha, beta, z0 = self._abz(context)
        r = self._norm(z - z0)
        y = z + beta / (alpha + r) * (z - z0)
        return y, self._logdet(alpha, beta, r)

    def _inverse(self, y, context):
        alpha, beta, z0 = self._abz(context)
        ry = self._norm(y - z0)
        p = alpha + beta - ry
        r = 0.5 * (-p + jnp.sqrt(p**2 + 4 * ry * alpha))
        z = z0 + (y - z0) / (1 + beta / (alpha + r))
        return z, -self._logdet(alpha, beta, r)


class Sylvester(Bijection):
    """Sylvester flow ``y = z + Q R1 tanh(R2 Q^T z + b)`` (van den Berg et al. 2018).

    ``Q (dim, m)`` has orthonormal columns, ``R1, R2 (m, m)`` are upper triangular with
    diagonals ``tanh(.)`` so that ``R1_ii R2_ii > -1`` (invertibility), and
    ``logdet = sum_i log(1 + tanh'(.)_i R1_ii R2_ii)``. The ``kind`` picks ``Q``:

    - ``"orthogonal"``: ``m <= dim`` columns, the Q factor of a QR decomposition of a free
      ``(dim, m)`` matrix (exactly orthonormal; the paper uses Bjorck iterations);
    - ``"householder"``: ``m = dim``, a product of ``n_householder`` reflections;
    - ``"triangular"``: ``m = dim``, ``Q`` the identity or (``flip=True``) the reversal
      permutation, alternated between layers as in the paper.

    No closed-form inverse exists: :meth:`inverse` raises :class:`NoInverseError`.
    """

    params: AmortisedParams
    kind: str = eqx.field(static=True)
    m: int = eqx.field(static=True)
    flip: bool = eqx.field(static=True)

    def __init__(self, key, dim, kind="orthogonal", m=None, n_householder=8, flip=False, cond_dim=None):
        if kind not in ("orthogonal", "householder", "triangular"):
            raise ValueError(f"Sylvester: kind must be 'orthogonal', 'householder' or 'triangular', got {kind!r}")
        self.dim, self.cond_dim, self.kind, self.flip = dim, cond_dim, kind, flip
        self.m = (m or dim) if kind == "orthogonal" else dim
        if not 1 <= self.m <= dim:
            raise ValueError(f"Sylvester: m must be in [1, {dim}], got {m}")
        kq, k2, kh = jax.random.split(key, 3)
        base = {
            "r1": jnp.zeros((self.m, self.m)),  # R1 = 0: the identity
            "r2": jnp.triu(jax.random.normal(k2, (self.m, self.m)) / math.sqrt(self.m)),
            "b": jnp.zeros((self.m,)),
        }
        if kind == "orthogonal":
            base["q"] = jax.random.normal(kq, (dim, self.m))
        elif kind == "householder":
            base["v"] = jax.random.normal(kq, (n_householder, dim))
        self.params = AmortisedParams(kh, base, cond_dim)

    def _triangular(self, raw):
        strict = jnp.triu(raw, 1)
        return strict + jnp.diag(jnp.tanh(jnp.diag(raw)))

    def _q_apply(self, p):
        """Return ``(Q^T v, Q u)`` as two functions."""
        if self.kind == "orthogonal":
            q, _ = jnp.linalg.qr(p["q"])
            return (lambda v: q.T @ v), (lambda u: q @ u)
        if self.kind == "triangular":
            if self.flip:
                return (lambda v: v[::-1]), (lambda u: u[::-1])
            return (lambda v: v), (lambda u: u)
        vs = p["v"] / jnp.linalg.norm(p["v"], axis=1, keepdims=True)

        def reflect_all(x, order):
            for v in order:
                x = x - 2 * v * (v @ x)
            return x

        # Q = H_1 H_2 ... H_n:  Q u applies H_n first; Q^T v applies H_1 first.
        return (lambda v: reflect_all(v, vs)), (lambda u: reflect_all(u, vs[::-1]))

    def _forward(self, z, context):
        p = self.params(context)
        r1, r2 = self._triangular(p["r1"]), self._triangular(p["r2"])
        qt, q = self._q_apply(p)
        t = jnp.tanh(r2 @ qt(z) + p["b"])
        y = z + q(r1 @ t)
        return y, jnp.sum(jnp.log1p((1 - t**2) * jnp.diag(r1) * jnp.diag(r2)))

    def _inverse(self, y, context):
        raise NoInverseError(
            "Sylvester flows have no closed-form inverse (van den Berg et al. 2018): they can "
            "sample and give the density of their own samples (Flow.sample_and_log_prob), but "
            "not the density of an arbitrary point. Use a coupling or autoregressive flow for that."
        )
