"""Eight reference posteriors of posteriordb (Magnusson et al. 2022, stan-dev/posteriordb).

Each model is written by hand in JAX from its Stan program (densities as in the data
folder's ``posteriordb/MODELS.md``; constants dropped). ``log_prob(u)`` takes the
unconstrained vector u (dim,), laid out as listed per model below, and includes the
log-Jacobian of the map to the constrained parameters, using Stan's transforms:
positive x = exp(s); x in (0, 1) = sigmoid(t); ordered (mu1, mu2) = (m, m + exp(d));
garch's beta1 in (0, 1 - alpha1) = (1 - alpha1) sigmoid(v), re-derived for every u.
``constrain(u)`` returns exactly the quantities of the reference draws (same names), and
``reference`` holds the pooled gold-standard draws (10 chains x 1000).
:func:`unconstrain` maps reference-style draws back to u.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import zipfile
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.nn import log_sigmoid, sigmoid

from ..._math import softplus
from ..target import Target, flat_names

# posterior name -> (data name, short alias)
POSTERIORS = {
    "eight_schools-eight_schools_noncentered": ("eight_schools", "eight_schools"),
    "kilpisjarvi_mod-kilpisjarvi": ("kilpisjarvi_mod", "kilpisjarvi"),
    "sblrc-blr": ("sblrc", "sblrc"),
    "arK-arK": ("arK", "arK"),
    "garch-garch11": ("garch", "garch"),
    "gp_pois_regr-gp_pois_regr": ("gp_pois_regr", "gp_pois_regr"),
    "diamonds-diamonds": ("diamonds", "diamonds"),
    "low_dim_gauss_mix-low_dim_gauss_mix": ("low_dim_gauss_mix", "low_dim_gauss_mix"),
}
ALIASES = {alias: name for name, (_, alias) in POSTERIORS.items()}


@dataclasses.dataclass(frozen=True)
class _Model:
    dim: int
    log_prob: Callable  # (u, data) -> scalar
    constrain: Callable  # (u, data) -> dict
    unconstrain: Callable  # (flat draws, data, dtype) -> (n, dim) numpy


@functools.cache
def load_data(data_name: str) -> dict:
    """The model data of posteriordb's ``data/<data_name>.json.zip`` (lists -> float64 arrays)."""
    from ... import data

    with zipfile.ZipFile(data.path(f"posteriordb/data/{data_name}.json.zip")) as z:
        raw = json.loads(z.read(z.namelist()[0]))
    return {k: np.asarray(v, np.float64) if isinstance(v, list) else v for k, v in raw.items()}


@functools.cache
def _reference(name: str) -> dict[str, np.ndarray]:
    from ... import data

    with zipfile.ZipFile(data.path(f"posteriordb/draws/{name}.json.zip")) as z:
        chains = json.loads(z.read(z.namelist()[0]))
    out = {_zero_based(k): np.concatenate([np.asarray(c[k], np.float64) for c in chains]) for k in chains[0]}
    for v in out.values():
        v.flags.writeable = False
    return out


def _zero_based(key: str) -> str:
    """posteriordb's (Stan's) 1-based flat name -> ArviZ's 0-based one: ``theta[1]`` -> ``theta[0]``."""
    if not key.endswith("]") or "[" not in key:
        return key
    name, idx = key[:-1].split("[", 1)
    return f"{name}[{','.join(str(int(i) - 1) for i in idx.split(','))}]"


def load_reference(name: str) -> dict[str, np.ndarray]:
    """Pooled reference draws of a posterior: flat name -> (10000,) float64 (read-only).

    Names are 0-based as everywhere in flowpost and ArviZ (``theta[0]`` is posteriordb's
    ``theta[1]``)."""
    return dict(_reference(_canonical(name)))


def _stack(draws: Mapping, name: str, n: int) -> np.ndarray:
    return np.stack([np.asarray(draws[f"{name}[{i}]"], np.float64) for i in range(n)], -1)


def _col(draws: Mapping, name: str) -> np.ndarray:
    return np.asarray(draws[name], np.float64)[:, None]


def _normal_sum(r, log_sd):
    """sum_n log N(r_n; 0, e^log_sd) without the 2π constant; float32-safe."""
    return -0.5 * jnp.sum(r**2) * jnp.exp(-2 * log_sd) - r.size * log_sd


def _logit(p):
    return np.log(p) - np.log1p(-p)


# ---------------------------------------------------------------- the eight models


def _eight_schools() -> _Model:
    """u = (theta_trans[1..8], mu, log tau)."""

    def log_prob(u, d):
        tt, mu, s = u[:8], u[8], u[9]
        theta = mu + jnp.exp(s) * tt
        prior = -0.5 * jnp.sum(tt**2) - 0.5 * (mu / 5) ** 2 - softplus(2 * s - 2 * math.log(5.0)) + s
        y, sig = jnp.asarray(d["y"], u.dtype), jnp.asarray(d["sigma"], u.dtype)
        return prior - 0.5 * jnp.sum(((y - theta) / sig) ** 2)

    def constrain(u, d):
        return {"theta": u[8] + jnp.exp(u[9]) * u[:8], "mu": u[8], "tau": jnp.exp(u[9])}

    def unconstrain(r, d, dtype):
        mu, tau = _col(r, "mu"), _col(r, "tau")
        return np.concatenate([(_stack(r, "theta", 8) - mu) / tau, mu, np.log(tau)], 1)

    return _Model(10, log_prob, constrain, unconstrain)


def _kilpisjarvi() -> _Model:
    """u = (alpha, beta, log sigma); sigma has a flat prior."""

    def log_prob(u, d):
        a, b, s = u[0], u[1], u[2]
        prior = -0.5 * ((a - d["pmualpha"]) / d["psalpha"]) ** 2 - 0.5 * ((b - d["pmubeta"]) / d["psbeta"]) ** 2
        r = jnp.asarray(d["y"], u.dtype) - a - b * jnp.asarray(d["x"], u.dtype)
        return prior + s + _normal_sum(r, s)

    def constrain(u, d):
        return {"alpha": u[0], "beta": u[1], "sigma": jnp.exp(u[2])}

    def unconstrain(r, d, dtype):
        return np.concatenate([_col(r, "alpha"), _col(r, "beta"), np.log(_col(r, "sigma"))], 1)

    return _Model(3, log_prob, constrain, unconstrain)


def _sblrc() -> _Model:
    """u = (beta[1..5], log sigma)."""

    def log_prob(u, d):
        beta, s = u[:5], u[5]
        prior = -0.5 * jnp.sum((beta / 10) ** 2) - 0.5 * jnp.exp(2 * s) / 100 + s
        r = jnp.asarray(d["y"], u.dtype) - jnp.asarray(d["X"], u.dtype) @ beta
        return prior + _normal_sum(r, s)

    def constrain(u, d):
        return {"beta": u[:5], "sigma": jnp.exp(u[5])}

    def unconstrain(r, d, dtype):
        return np.concatenate([_stack(r, "beta", 5), np.log(_col(r, "sigma"))], 1)

    return _Model(6, log_prob, constrain, unconstrain)


def _ark() -> _Model:
    """u = (alpha, beta[1..5], log sigma); y[t] ~ N(alpha + sum_k beta[k] y[t-k], sigma)."""

    def log_prob(u, d):
        alpha, beta, s = u[0], u[1:6], u[6]
        y, k = d["y"], int(d["K"])
        lags = np.stack([y[k - j : len(y) - j] for j in range(1, k + 1)], 1)  # (T-K, K): y[t-j]
        prior = -0.5 * (alpha / 10) ** 2 - 0.5 * jnp.sum((beta / 10) ** 2)
        prior += -softplus(2 * s - 2 * math.log(2.5)) + s
        r = jnp.asarray(y[k:], u.dtype) - alpha - jnp.asarray(lags, u.dtype) @ beta
        return prior + _normal_sum(r, s)

    def constrain(u, d):
        return {"alpha": u[0], "beta": u[1:6], "sigma": jnp.exp(u[6])}

    def unconstrain(r, d, dtype):
        return np.concatenate([_col(r, "alpha"), _stack(r, "beta", 5), np.log(_col(r, "sigma"))], 1)

    return _Model(7, log_prob, constrain, unconstrain)


def _garch() -> _Model:
    """u = (mu, log alpha0, logit alpha1, v); beta1 = (1 - alpha1) sigmoid(v). Flat priors."""

    def log_prob(u, d):
        mu, s0, a, v = u[0], u[1], u[2], u[3]
        alpha0, alpha1, beta1 = jnp.exp(s0), sigmoid(a), sigmoid(-a) * sigmoid(v)
        log_jac = s0 + log_sigmoid(a) + 2 * log_sigmoid(-a) + log_sigmoid(v) + log_sigmoid(-v)
        y = jnp.asarray(d["y"], u.dtype)

        def step(var, y_prev):
            var = alpha0 + alpha1 * (y_prev - mu) ** 2 + beta1 * var
            return var, var

        var1 = jnp.asarray(d["sigma1"] ** 2, u.dtype)
        _, var = jax.lax.scan(step, var1, y[:-1])
        var = jnp.concatenate([var1[None], var])
        return log_jac - 0.5 * jnp.sum((y - mu) ** 2 / var + jnp.log(var))

    def constrain(u, d):
        return {"mu": u[0], "alpha0": jnp.exp(u[1]), "alpha1": sigmoid(u[2]), "beta1": sigmoid(-u[2]) * sigmoid(u[3])}

    def unconstrain(r, d, dtype):
        a1 = _col(r, "alpha1")
        return np.concatenate(
            [_col(r, "mu"), np.log(_col(r, "alpha0")), _logit(a1), _logit(_col(r, "beta1") / (1 - a1))], 1
        )

    return _Model(4, log_prob, constrain, unconstrain)


def _gp_jitter(alpha, dtype):
    """1e-10 as in the Stan program; in float32, where K is numerically singular for rho >~ 3,
    alpha^2 * 1e-5 more (f's sd changes by ~3e-3 alpha; negligible next to its posterior sd)."""
    return 1e-10 + (alpha**2 * 1e-5 if jnp.finfo(dtype).bits < 64 else 0.0)


def _gp_chol(rho, alpha, x, dtype):
    """cholesky(alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + jitter I), shape (N, N)."""
    x = jnp.asarray(x, dtype)
    corr = jnp.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * rho**2))
    return jnp.linalg.cholesky(alpha**2 * corr + _gp_jitter(alpha, dtype) * jnp.eye(len(x), dtype=dtype))


def _safe_exp(f, c=40.0):
    """exp(f), continued for f > c by its 2nd-order Taylor polynomial at c, so that float32
    neither overflows nor gives NaN gradients (log p < -e^40 there: no posterior mass)."""
    e = jnp.exp(jnp.minimum(f, c))
    t = jnp.maximum(f - c, 0.0)
    return e * (1 + t + 0.5 * t**2)


def _gp_pois_regr() -> _Model:
    """u = (log rho, log alpha, f_tilde[1..11]); f = cholesky(K) f_tilde."""

    def log_prob(u, d):
        sr, sa, ft = u[0], u[1], u[2:]
        rho, alpha = jnp.exp(sr), jnp.exp(sa)
        f = _gp_chol(rho, alpha, d["x"], u.dtype) @ ft
        prior = 25 * sr - 4 * rho - 0.5 * (alpha / 2) ** 2 + sa - 0.5 * jnp.sum(ft**2)
        return prior + jnp.sum(jnp.asarray(d["k"], u.dtype) * f - _safe_exp(f))

    def constrain(u, d):
        rho, alpha = jnp.exp(u[0]), jnp.exp(u[1])
        return {"rho": rho, "alpha": alpha, "f": _gp_chol(rho, alpha, d["x"], u.dtype) @ u[2:]}

    def unconstrain(r, d, dtype):
        rho, alpha, f = _col(r, "rho"), _col(r, "alpha"), _stack(r, "f", 11)
        x = d["x"]
        k = alpha[:, :, None] ** 2 * np.exp(-((x[:, None] - x[None]) ** 2) / (2 * rho[:, :, None] ** 2))
        chol = np.linalg.cholesky(k + _gp_jitter(alpha[:, :, None], dtype) * np.eye(len(x)))
        ft = np.linalg.solve(chol, f[..., None])[..., 0]
        return np.concatenate([np.log(rho), np.log(alpha), ft], 1)

    return _Model(13, log_prob, constrain, unconstrain)


def _diamonds() -> _Model:
    """u = (b[1..24], Intercept, log sigma); Xc = X[:, 1:] centred."""

    def log_prob(u, d):
        b, c, s = u[:24], u[24], u[25]
        xc = d["X"][:, 1:] - d["X"][:, 1:].mean(0)
        prior = -0.5 * jnp.sum(b**2) - 2 * jnp.log1p(((c - 8) / 10) ** 2 / 3)
        prior += -2 * softplus(2 * s - math.log(300.0)) + s  # half-StudentT(3, 0, 10): (sigma/10)^2/3
        r = jnp.asarray(d["Y"], u.dtype) - c - jnp.asarray(xc, u.dtype) @ b
        return prior + _normal_sum(r, s)

    def constrain(u, d):
        return {"b": u[:24], "Intercept": u[24], "sigma": jnp.exp(u[25])}

    def unconstrain(r, d, dtype):
        return np.concatenate([_stack(r, "b", 24), _col(r, "Intercept"), np.log(_col(r, "sigma"))], 1)

    return _Model(26, log_prob, constrain, unconstrain)


def _low_dim_gauss_mix() -> _Model:
    """u = (mu1, log(mu2 - mu1), log sigma1, log sigma2, logit theta)."""

    def log_prob(u, d):
        m1, dd, s, t = u[0], u[1], u[2:4], u[4]
        mu, sig = jnp.stack([m1, m1 + jnp.exp(dd)]), jnp.exp(s)
        prior = -0.5 * jnp.sum((mu / 2) ** 2) - 0.5 * jnp.sum((sig / 2) ** 2)
        prior += 4 * log_sigmoid(t) + 4 * log_sigmoid(-t)  # Beta(5, 5)
        log_jac = dd + jnp.sum(s) + log_sigmoid(t) + log_sigmoid(-t)
        y = jnp.asarray(d["y"], u.dtype)[:, None]
        comp = -0.5 * ((y - mu) * jnp.exp(-s)) ** 2 - s + jnp.stack([log_sigmoid(t), log_sigmoid(-t)])
        return prior + log_jac + jnp.sum(jnp.logaddexp(comp[:, 0], comp[:, 1]))

    def constrain(u, d):
        return {"mu": jnp.stack([u[0], u[0] + jnp.exp(u[1])]), "sigma": jnp.exp(u[2:4]), "theta": sigmoid(u[4])}

    def unconstrain(r, d, dtype):
        mu = _stack(r, "mu", 2)
        return np.concatenate(
            [mu[:, :1], np.log(mu[:, 1:] - mu[:, :1]), np.log(_stack(r, "sigma", 2)), _logit(_col(r, "theta"))], 1
        )

    return _Model(5, log_prob, constrain, unconstrain)


_MODELS = {
    "eight_schools-eight_schools_noncentered": _eight_schools,
    "kilpisjarvi_mod-kilpisjarvi": _kilpisjarvi,
    "sblrc-blr": _sblrc,
    "arK-arK": _ark,
    "garch-garch11": _garch,
    "gp_pois_regr-gp_pois_regr": _gp_pois_regr,
    "diamonds-diamonds": _diamonds,
    "low_dim_gauss_mix-low_dim_gauss_mix": _low_dim_gauss_mix,
}


def _canonical(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in POSTERIORS:
        raise ValueError(f"posteriordb: unknown posterior {name!r}; known: {sorted(POSTERIORS)} or {sorted(ALIASES)}")
    return name


def unconstrain(name: str, draws: Mapping[str, np.ndarray], dtype=None) -> np.ndarray:
    """Reference-style draws (flat 0-based name -> (n,)) -> unconstrained u, shape (n, dim), float64.

    ``dtype``: the precision the target will be evaluated in (default: JAX's default float);
    it matters only for gp_pois_regr, whose Cholesky jitter is larger in float32.
    """
    name = _canonical(name)
    dtype = jnp.dtype(dtype if dtype is not None else jnp.result_type(float))
    return _MODELS[name]().unconstrain(draws, load_data(POSTERIORS[name][0]), dtype)


def posterior(name: str) -> Target:
    """The Target of a posteriordb posterior (full name or alias), with its reference draws."""
    name = _canonical(name)
    model, d = _MODELS[name](), load_data(POSTERIORS[name][0])
    ref = load_reference(name)
    shapes = jax.eval_shape(lambda u: model.constrain(u, d), jax.ShapeDtypeStruct((model.dim,), jnp.float32))
    # in JAX's pytree order (sorted keys), as Target.flat_names() and jax.vmap(constrain) give them
    names = tuple(n for k, v in shapes.items() for n in flat_names(k, v.shape))
    if sorted(names) != sorted(ref):
        raise AssertionError(f"{name}: constrain gives {names}, reference has {tuple(ref)}")
    return Target(
        log_prob=functools.partial(model.log_prob, d=d),
        dim=model.dim,
        constrain=functools.partial(model.constrain, d=d),
        names=names,
        reference=ref,
        name=name,
    )
