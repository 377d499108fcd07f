"""Variational objectives as pure functions ``(q, log_p, key, n) -> (loss, elbo)``.

``q`` is a :class:`flowpost.flows.Flow` (the variational family, differentiated),
``log_p`` maps a batch ``(n, dim)`` to ``(n,)`` unnormalised log posterior values, and
``n`` is the number of draws per step. Each returns a scalar *loss to minimise* whose
gradient is the estimator named below, and the plain ELBO estimate of the same draws
(for progress and convergence, comparable across objectives).

- ``elbo``: reverse KL with the sticking-the-landing path gradient (Roeder et al. 2017):
  the score term, zero in expectation, is dropped by evaluating ``log q`` with stopped
  parameters. Falls back to the standard reparameterised ELBO for flows without a
  one-pass inverse (Sylvester; IAF, whose inverse is sequential).
- ``iwelbo``: the importance-weighted bound with ``K`` draws per group (Burda et al.
  2016) and the doubly-reparameterised gradient, DReG (Tucker et al. 2019).
- ``renyi``: the Renyi variational bound ``1/(1-alpha) log E[w^(1-alpha)]``
  (Li & Turner 2016), reparameterised.
- ``fkl``: the forward KL ``KL(p || q)`` by self-normalised importance sampling,
  ``max E_q[w log q]`` with ``w`` proportional to ``p / q`` (weights and draws stopped).
- ``iwfkl``: the same for a latent-variable family (:mod:`flowpost.vi.latent`), whose
  ``log q`` is replaced by its importance-weighted lower bound with ``K`` inner samples
  (``max sum_i w_i ELBO_lambda(theta_i)``); on a flow it is ``fkl``. See :func:`iwfkl`.

A latent-variable family (``family="sivi"`` / ``"hierarchical"``) has no exact ``log q``:
``elbo`` then maximises the family's own bound (:meth:`~flowpost.vi.latent.LatentFamily.elbo_bound`,
the SIVI or hierarchical bound, ``k=`` its extra inner samples), and ``iwelbo``, ``renyi``
and ``fkl`` refuse it with a ValueError.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import as_ints
from ..flows import Invert, MaskedAutoregressive, Sylvester
from .latent import is_latent

OBJECTIVES = ("elbo", "iwelbo", "renyi", "fkl", "iwfkl")


def has_inverse(q) -> bool:
    """Whether ``q`` can evaluate ``log q`` at arbitrary points (STL, DReG and fkl need it)."""
    is_syl = lambda m: isinstance(m, Sylvester)  # noqa: E731
    return not any(is_syl(m) for m in jax.tree.leaves(q, is_leaf=is_syl))


def has_fast_inverse(q) -> bool:
    """Whether ``log q`` of a given point costs about one forward pass: false for
    Sylvester flows (no inverse) and for IAF layers (their inverse takes ``dim``
    sequential passes), where STL would cost more than it saves."""
    is_iaf = lambda m: isinstance(m, Invert) and isinstance(m.bijection, MaskedAutoregressive)  # noqa: E731
    return has_inverse(q) and not any(is_iaf(m) for m in jax.tree.leaves(q, is_leaf=is_iaf))


def _log_q_stopped(q, x):
    """``log q(x)`` with the parameters of ``q`` stopped (gradients flow to ``x`` only)."""
    qs = jax.lax.stop_gradient(q)
    z, ld = jax.vmap(qs.bijection.inverse)(x)
    return qs.base.log_prob(z) + ld


def _draws(q, log_p, key, n, stl):
    x, lq = q.sample_and_log_prob(key, n)
    if stl:
        lq = _log_q_stopped(q, x)
    return x, lq, log_p(x)


def _refuse_latent(q, name):
    if is_latent(q):
        raise ValueError(
            f"objective={name!r} needs log q exactly; the {q.name!r} family has only bounds on it: "
            "use objective='elbo' (its own bound) or 'iwfkl'"
        )


def elbo(q, log_p, key, n, stl=True, k=None):
    """For a latent-variable family, its bound with ``k`` extra inner samples (default the
    family's ``k``); ``k`` is refused for a flow, whose ``log q`` is exact."""
    if is_latent(q):
        return q.elbo_bound(log_p, key, n, k)
    if k is not None:
        raise ValueError(
            "fit: objective 'elbo' takes the options ['stl'] for a flow, whose log q is exact; `k` "
            "(inner samples of a latent-variable family's bound) applies to family='sivi' or "
            "'hierarchical' only"
        )
    x, lq, lp = _draws(q, log_p, key, n, stl and has_fast_inverse(q))
    e = jnp.mean(lp - lq)
    return -e, e


def iwelbo(q, log_p, key, n, k=8):
    """``n`` draws in ``n // k`` groups of ``k`` (at least one group)."""
    _refuse_latent(q, "iwelbo")
    k = min(k, n)
    groups = max(n // k, 1)
    if not has_inverse(q):
        raise ValueError(
            "objective='iwelbo' (DReG) needs log q of the family's own draws with stopped "
            "parameters, i.e. an invertible flow; this family has no inverse"
        )
    x, lq, lp = _draws(q, log_p, key, groups * k, stl=True)
    lw = (lp - lq).reshape(groups, k)
    w = jax.lax.stop_gradient(jax.nn.softmax(lw, axis=1))
    surrogate = jnp.sum(w**2 * lw) / groups  # DReG for the inference network (Tucker et al. 2019, eq. 7)
    bound = jnp.mean(jax.nn.logsumexp(lw, axis=1) - math.log(k))
    return -(surrogate - jax.lax.stop_gradient(surrogate)) - jax.lax.stop_gradient(bound), jnp.mean(lw)


def renyi(q, log_p, key, n, alpha=0.5):
    """The Renyi bound of order ``alpha`` (Li & Turner 2016), reparameterised."""
    _refuse_latent(q, "renyi")
    x, lq = q.sample_and_log_prob(key, n)
    lw = log_p(x) - lq
    if alpha == 1.0:
        return -jnp.mean(lw), jnp.mean(lw)
    bound = (jax.nn.logsumexp((1 - alpha) * lw) - math.log(n)) / (1 - alpha)
    return -bound, jnp.mean(lw)


def fkl(q, log_p, key, n):
    """Forward KL by self-normalised importance sampling: ``max E_q[w log q]``."""
    _refuse_latent(q, "fkl")
    x, lq = q.sample_and_log_prob(key, n)
    x, lq = jax.lax.stop_gradient((x, lq))
    lw = log_p(x) - lq
    w = jax.nn.softmax(lw)
    z, ld = jax.vmap(q.bijection.inverse)(x)
    log_q = q.base.log_prob(z) + ld
    return -jnp.sum(w * log_q), jnp.mean(lw)


def iwfkl(q, log_p, key, n, k=8, proposal=None, defensive=None):
    """Importance-weighted forward KL: ``max_lambda sum_i w_i ELBO_lambda(theta_i)``.

    The construction ``max E_p[log q] = max E_r[(p / r) log q]`` with ``log q_lambda``
    replaced by its importance-weighted (IWAE) lower bound with ``k`` inner samples,
    ``ELBO_lambda(theta) = log (1/K) sum_k q(theta|eps_k) p(eps_k) / r(eps_k|theta)``
    (:meth:`flowpost.vi.latent.LatentFamily.log_prob`; ``K = 1`` is the VAE ELBO), at ``n``
    draws ``theta_i`` from the proposal, weighted by ``w_i`` proportional to
    ``p(theta_i, D) / proposal(theta_i)`` (self-normalised; draws and weights stopped).
    The family's reverse model is trained by the same weighted bound. On a flow,
    ``ELBO_lambda = log q_lambda`` exactly and this is :func:`fkl`.

    Args:
        k: inner samples ``K`` of ``ELBO_lambda``, and of the estimate of ``log q`` in
            the weights when the proposal is a latent-variable family.
        proposal: ``None`` (the current ``q``, stopped) or a fitted distribution with
            ``sample_and_log_prob`` (a flow fitted first: exact weights).
        defensive: with the default proposal, the fraction ``alpha`` of draws taken from a
            wide Gaussian ``g = N(loc, (3 chol)(3 chol)^T)`` (the family's whitening, 3
            times wider), the weights using the mixture ``(1 - alpha) q + alpha g``
            (defensive importance sampling, Hesterberg 1995; all draws weighted by the
            mixture, Owen & Zhou 2000): bounded weights, and modes up to ~6 Laplace
            standard deviations away are found even from a start in one mode. The
            ``g``-draws' ``log q`` is the IWAE lower estimate, which adds a bias of order
            ``1/K`` to their weights. Latent families only; default (``None``): 0.1 for a
            latent family with the default proposal, else 0.

    When the gradient is biased (as an estimate of ``-grad KL(p || q_lambda)``, i.e. of
    ``E_p[grad log q_lambda]``):

    1. self-normalisation: ``sum_i w_i f_i`` is a ratio estimate, biased by ``O(1/n)``
       and consistent as ``n -> inf``. With a latent proposal, its ``log q`` is the
       upper estimate with the generating eps included, whose ``p / q^_K`` are exact
       importance weights on the extended space (``E[1/q^_K | theta] = 1/q``): so the
       weights add no bias beyond this ``O(1/n)``, only variance, for every ``K``.
       (Weights from a *lower* estimate of ``log q`` would be biased for every ``n``.)
    2. the bound in place of ``log q``: ``E_p[grad ELBO_lambda] != E_p[grad log q]``;
       the gap ``log q - ELBO_lambda`` is ``O(1/K)`` (Burda et al. 2016; for ``K = 1`` it
       is ``KL(q(eps|theta) || r(eps|theta))``), and so is this bias. It does not shrink
       with ``n``; it vanishes only as ``K -> inf`` or when ``r`` is the exact posterior
       of ``eps``. Its direction: the fit prefers families whose bound is tight, i.e.
       whose latent posterior ``r`` can match (a VAE's well-known under-use of ``eps``).

    ``tests/test_latent.py`` measures both against the exact gradient (quadrature).

    Returns ``(loss, mean(log p - log proposal))``: with the default proposal, the
    family's ELBO estimate (a lower estimate); with a fixed proposal, the proposal's.
    """
    k_draw, k_in = jax.random.split(key)
    r = q if proposal is None else getattr(proposal, "q", proposal)  # a FitResult's q
    if r.dim != q.dim:
        raise ValueError(f"objective 'iwfkl': the proposal has dim {r.dim}, the family {q.dim}")
    if defensive is None:
        defensive = 0.1 if proposal is None and is_latent(q) else 0.0
    if defensive:
        if not (0.0 < defensive < 1.0) or proposal is not None or not is_latent(q):
            raise ValueError(
                "objective 'iwfkl': `defensive` must be in [0, 1), with the default proposal and a "
                f"latent-variable family, got {defensive!r}"
            )
        x, lr = _defensive_draws(q, k_draw, n, k, defensive)
    else:
        x, lr = r.sample_and_log_prob(k_draw, n, k=k) if is_latent(r) else r.sample_and_log_prob(k_draw, n)
    x, lr = jax.lax.stop_gradient((x, lr))
    lw = log_p(x) - lr
    w = jax.nn.softmax(lw)
    if is_latent(q):
        log_q = q.log_prob(x, k_in, k)
    else:
        if not has_inverse(q):
            raise ValueError("objective 'iwfkl' on a flow needs log q at any point, i.e. an invertible flow")
        z, ld = jax.vmap(q.bijection.inverse)(x)
        log_q = q.base.log_prob(z) + ld
    return -jnp.sum(w * log_q), jnp.mean(lw)


def _defensive_draws(q, key, n, k, alpha, scale=3.0):
    """``n`` draws from ``(1 - alpha) q + alpha g`` (``round(alpha n)`` of them, at least one,
    from ``g = whiten(N(0, scale^2 I))``) and the log density of that mixture at each."""
    n_g = max(1, min(n - 1, round(alpha * n)))
    kq, kg, ki = jax.random.split(key, 3)
    x_q, lq_q = q.sample_and_log_prob(kq, n - n_g, k=k)
    v_g = scale * jax.random.normal(kg, (n_g, q.dim), x_q.dtype)
    x_g = jax.vmap(lambda v: q.whiten.forward(v)[0])(v_g)
    x = jnp.concatenate([x_q, x_g])
    lq = jnp.concatenate([lq_q, q.log_prob(x_g, ki, k)])
    v, ld = jax.vmap(q.whiten.inverse)(x)
    lg = -0.5 * jnp.sum((v / scale) ** 2, -1) - q.dim * (math.log(scale) + 0.5 * math.log(2 * math.pi)) + ld
    return x, jnp.logaddexp(math.log1p(-alpha) + lq, math.log(alpha) + lg)


# the options of the named objectives: check and what it must be
def _check_option(name, value):
    """The option's value as a plain Python number (NumPy / JAX scalars accepted), or a
    clear ValueError."""
    if name == "k":
        return as_ints("fit: objective option", k=value)[0]
    if name == "alpha":
        real = (
            not isinstance(value, (bool, np.bool_))
            and np.ndim(value) == 0
            and (
                isinstance(value, numbers.Real)
                or np.issubdtype(getattr(value, "dtype", object), np.floating)
                or np.issubdtype(getattr(value, "dtype", object), np.integer)
            )
        )
        if not (real and math.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(
                f"fit: objective option `alpha` must be a finite number >= 0 (alpha < 0 gives an "
                f"upper bound on log p, not a variational bound), got {value!r}"
            )
        return float(value)
    if name == "proposal" and value is not None and not hasattr(getattr(value, "q", value), "sample_and_log_prob"):
        raise ValueError(f"fit: objective option `proposal` must be None, a fitted flow or a FitResult, got {value!r}")
    if name == "stl" and not isinstance(value, bool):
        raise ValueError(f"fit: objective option `stl` must be True or False, got {value!r}")
    return value


def get(objective, **options):
    """The objective function by name, with its options bound (``k=`` for iwelbo,
    ``alpha=`` for renyi, ``stl=`` for elbo), checked before anything is traced."""
    table = {"elbo": elbo, "iwelbo": iwelbo, "renyi": renyi, "fkl": fkl, "iwfkl": iwfkl}
    if callable(objective):
        return functools.partial(objective, **options) if options else objective
    if objective not in table:
        raise ValueError(f"fit: `objective` must be one of {OBJECTIVES} or a callable, got {objective!r}")
    fn = table[objective]
    allowed = list(inspect.signature(fn).parameters)[4:]
    for name in options:
        if name not in allowed:
            raise ValueError(f"fit: objective {objective!r} takes the options {allowed or 'none'}, got {name!r}")
    options = {name: _check_option(name, value) for name, value in options.items()}
    return functools.partial(fn, **options) if options else fn


# -- NaN as a rejection -----------------------------------------------------------------
def _hvp(log_prob, u, du):
    """``H(u) @ du``, the Hessian-vector product of ``log_prob`` at ``u (dim,)``: forward
    over reverse, or reverse over reverse where ``log_prob`` has no forward mode (a
    ``jax.custom_vjp`` inside it, e.g. ``jax.experimental.ode.odeint``)."""
    try:
        return jax.jvp(jax.grad(log_prob), (u,), (du,))[1]
    except TypeError:  # "can't apply forward-mode autodiff (jvp) to a custom_vjp function"
        return jax.grad(lambda x: jnp.vdot(jax.grad(log_prob)(x), du))(u)


def reject_nan(log_prob):
    """``log_prob`` with NaN read as ``-inf`` (a rejection, as Stan treats a log density it
    cannot evaluate), and a gradient of 0 wherever the value is not finite.

    A NaN density (an ODE solver failing at absurd parameter values, a Cholesky factor of
    a singular matrix) has a NaN gradient there too, and ``where(isnan(v), -inf, v)`` alone
    keeps it (its backward pass multiplies the zero cotangent by the NaN partials: JAX FAQ,
    "Gradients contain NaN where using where"). Here the first derivative comes from a
    ``custom_jvp`` rule that zeroes it where the value is not finite, and the second (the
    Laplace start's Hessian) from a nested rule (:func:`_hvp`), so ``jax.hessian`` also works
    for a ``log_prob`` that supports reverse mode only. Where the value is finite, value and
    derivatives are ``log_prob``'s own. Costs one value-and-gradient per gradient, as before.

    Args:
        log_prob: ``u (dim,) -> scalar`` float log density.
    Returns:
        the same signature; jit-, vmap- and grad-able (first and second order).
    """

    # a log density that carries its data as pytree leaves (flowpost._jit.Hoisted) keeps
    # them as traced inputs of the rules below: closed over, they would be compiled into
    # every program that differentiates it
    data, static = eqx.partition(log_prob, eqx.is_array)

    def lp(d, u):
        return eqx.combine(d, static)(u)

    def value_and_grad(d, u):
        v, g = jax.value_and_grad(lp, argnums=1)(d, u)
        return jnp.where(jnp.isnan(v), -jnp.inf, v), jnp.where(jnp.isfinite(v), g, jnp.zeros_like(g))

    @jax.custom_jvp
    def safe_value_and_grad(d, u):
        return value_and_grad(d, u)

    @safe_value_and_grad.defjvp
    def _(primals, tangents):  # the data's tangents are zero: nothing differentiates them
        (d, u), (_, du) = primals, tangents
        v, g = value_and_grad(d, u)
        hv = _hvp(lambda x: lp(d, x), u, du)
        return (v, g), (jnp.vdot(g, du), jnp.where(jnp.isfinite(v), hv, jnp.zeros_like(hv)))

    @jax.custom_jvp
    def safe(d, u):
        v = lp(d, u)
        return jnp.where(jnp.isnan(v), -jnp.inf, v)

    @safe.defjvp
    def _(primals, tangents):
        (d, u), (_, du) = primals, tangents
        v, g = safe_value_and_grad(d, u)
        return v, jnp.vdot(g, du)

    return _WithData(data, safe)


class _WithData(eqx.Module):
    """``fn(data, u)`` as a function of ``u``, with ``data`` as pytree leaves."""

    data: Any
    fn: Callable = eqx.field(static=True)

    def __call__(self, u):
        return self.fn(self.data, u)


def nonfinite_sites(target, u) -> str:
    """For :func:`~flowpost.vi.fit`'s refusal: ``"; at u = 0 the log density is NaN in site 'y'"``
    (and/or ``-inf in site ...``) for a target whose ``log_prob`` carries a per-site breakdown
    ``log_prob.by_site(u) -> {site: term}`` (:func:`~flowpost.targets.from_numpyro`), else ''."""
    by_site = getattr(target.log_prob, "by_site", None)
    if by_site is None:
        return ""
    try:
        terms = {k: float(v) for k, v in jax.jit(by_site)(u).items()}
    except Exception:  # noqa: BLE001  (only a better message was at stake)
        return ""
    nan = [k for k, v in terms.items() if np.isnan(v)]
    neg = [k for k, v in terms.items() if v == -np.inf]
    parts = ([f"NaN in site {', '.join(map(repr, nan))}"] if nan else []) + (
        [f"-inf in site {', '.join(map(repr, neg))}"] if neg else []
    )
    return f"; at u = 0 the log density is {' and '.join(parts)}" if parts else ""


def finite_in_float64(target, points) -> bool:
    """Whether ``target.log_prob`` is finite at all ``points (n, dim)`` when evaluated in
    float64; False if it cannot be evaluated so (e.g. a float32 scan carry)."""
    try:
        with jax.enable_x64(True):
            values = jax.jit(jax.vmap(target.log_prob))(jnp.asarray(points, jnp.float64))
            return bool(np.all(np.isfinite(np.asarray(values))))
    except Exception:  # noqa: BLE001  (only a better message was at stake)
        return False
