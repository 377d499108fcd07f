"""Where a variational family starts: the posterior mode and the Laplace covariance.

Starting at the mode, whitened by ``(-Hessian)^{-1}``, removes the scale and correlation
that make plain Adam from ``N(0, I)`` stall on ill-conditioned posteriors (where NumPyro's
autoguides, FlowJAX and Pathfinder fail on the posteriordb references, see the benchmark
pages; cf. Zhang et al. 2022, Pathfinder).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._jit import filter_once

#: above this dimension the dense Hessian is skipped (diagonal curvature by
#: Hessian-vector products would do; here the scale starts at ``fallback_scale``)
MAX_DENSE_DIM = 2000


class Laplace(NamedTuple):
    """``mode (dim,)``, ``chol (dim, dim)`` of the covariance, and how it was obtained."""

    mode: jax.Array
    chol: jax.Array
    log_prob: float
    iterations: int
    note: str


def find_mode(log_prob, x0, max_iter: int = 1000, tol: float = 1e-6):
    """Maximise ``log_prob`` by L-BFGS from ``x0``; returns ``(mode, log_prob(mode),
    iterations)``. A point whose value or gradient is not finite counts as a rejection
    (the line search backs off); the best finite point is kept.

    SciPy's L-BFGS-B (unbounded) drives one jitted value-and-gradient: the only compiled
    program is that small function. (optax's L-BFGS in one ``lax.while_loop`` found the
    same modes, to 1e-9 in log p, but its zoom line search made a large program: on arK,
    4.2 s against 0.4 s, the compilation being nearly all of it.) Stops when the gradient's
    largest entry is below ``tol``, when the objective's relative decrease falls below ten
    times its precision's epsilon, when a line search can make no progress (round-off),
    or after ``max_iter`` iterations (``iterations == max_iter``: e.g. walking down the neck
    of a funnel, which has no mode). If it stops where the gradient is not small (a stalled
    line search, not a mode), :func:`_find_mode_optax` goes on from there."""
    import scipy.optimize

    x0 = jnp.asarray(x0)
    best: dict[str, Any] = {"f": np.inf, "x": np.asarray(x0, np.float64)}

    def fun(x):
        f, g = _neg_value_and_grad(log_prob, jnp.asarray(x, x0.dtype))
        f, g = float(f), np.asarray(g, np.float64)
        if not (np.isfinite(f) and np.all(np.isfinite(g))):
            return 1e300, np.zeros_like(g)  # a rejection: far above any finite value, no pull
        if f < best["f"]:
            best["f"], best["x"] = f, np.array(x, np.float64)
        return f, g

    tol = _gradient_tol(tol, fun(np.asarray(x0, np.float64))[0], x0.dtype)
    res = scipy.optimize.minimize(
        fun,
        np.asarray(x0, np.float64),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15, "maxls": 40},
    )
    if res.status == 1:  # an iteration or evaluation cap
        return jnp.asarray(best["x"], x0.dtype), -best["f"], max_iter
    x = jnp.asarray(best["x"], x0.dtype)
    if np.isfinite(best["f"]):
        g = np.linalg.norm(np.asarray(_neg_value_and_grad(log_prob, x)[1], np.float64))
        if g > max(1e-3 * max(1.0, float(np.linalg.norm(best["x"]))), 10 * tol):
            # stalled, not a mode (seen in float32 on a funnel's neck, |g| 29): optax's zoom line
            # search goes on from here, with the iterations left
            mode, lp, it = _find_mode_optax(log_prob, x, max(max_iter - int(res.nit), 1), tol)
            return mode, lp, min(int(res.nit) + it, max_iter)
    return x, -best["f"], int(res.nit)


@filter_once  # log_prob an argument (a Hoisted density's data are inputs); a small program
def _neg_value_and_grad(log_prob, x):  # called tens of times: compiling it fast pays (flowpost._jit)
    return jax.value_and_grad(lambda v: -log_prob(v))(x)


def _gradient_tol(tol: float, f0: float, dtype) -> float:
    """The gradient tolerance the mode search can meet: at least ``100 eps |f|``, the
    round-off of a log density of magnitude ``|f|`` in its precision (a float32 sum over
    10^4 data rows has gradient round-off near 1e-3, and a 1e-6 tolerance ran every search
    to its iteration cap: 1000 full-data passes). The mode it leaves is off by about
    ``g sd^2``, a small fraction of a posterior sd ``sd`` whenever ``g sd << 1``."""
    scale = abs(f0) if np.isfinite(f0) and abs(f0) < 1e300 else 1.0
    return max(tol, 100 * float(jnp.finfo(dtype).eps) * max(1.0, scale))


def _find_mode_optax(log_prob, x0, max_iter: int = 1000, tol: float = 1e-6):
    """optax's L-BFGS (zoom line search) in one compiled ``lax.while_loop``; returns
    ``(mode, log_prob(mode), iterations)``. Non-finite steps keep the best point."""
    mode, lp, it = _optax_lbfgs(log_prob, x0, max_iter, tol)
    return mode, float(lp), int(it)


@eqx.filter_jit  # log_prob an argument: a Hoisted density's data are inputs, not constants
def _optax_lbfgs(log_prob, x0, max_iter, tol):
    opt = optax.lbfgs()
    f = lambda x: -log_prob(x)  # noqa: E731
    value_and_grad_from_state = optax.value_and_grad_from_state(f)

    def cond(carry):
        x, state, i, best, best_f = carry
        g = optax.tree_utils.tree_get(state, "grad")
        gn = jnp.linalg.norm(g)
        return (i < max_iter) & ((i == 0) | (gn > tol * jnp.maximum(1.0, jnp.linalg.norm(x))))

    def body(carry):
        x, state, i, best, best_f = carry
        value, grad = value_and_grad_from_state(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        x_new = optax.apply_updates(x, updates)
        fx = f(x_new)
        ok = jnp.isfinite(fx) & jnp.all(jnp.isfinite(x_new))
        better = ok & (fx < best_f)
        best = jnp.where(better, x_new, best)
        best_f = jnp.where(better, fx, best_f)
        x_new = jnp.where(ok, x_new, best)
        i = jnp.where(ok, i + 1, max_iter)
        return x_new, state, i, best, best_f

    state = opt.init(x0)
    carry = (x0, state, jnp.asarray(0), x0, f(x0))
    _, _, i, best, best_f = jax.lax.while_loop(cond, body, carry)
    return best, -best_f, i


@filter_once
def hessian(log_prob, x):
    """The Hessian of ``log_prob`` at ``x`` (a program compiled for one run; ``log_prob``
    is an argument, so a :class:`~flowpost._jit.Hoisted` density's data are inputs)."""
    return jax.hessian(log_prob)(x)


@filter_once
def value_and_grad(log_prob, x):
    """``(log_prob(x), its gradient)``, as :func:`hessian`."""
    return jax.value_and_grad(log_prob)(x)


def laplace(log_prob, dim: int, x0=None, max_iter: int = 1000, max_sd: float = 100.0) -> Laplace:
    """The mode of ``log_prob`` and the Cholesky factor of the Laplace covariance.

    The precision ``-H`` is symmetrised and its eigenvalues are floored at
    ``1 / max_sd^2`` (flat or convex directions get standard deviation ``max_sd``), so
    the result is always a valid covariance. The linear algebra runs in float64 (NumPy)
    because posteriors like kilpisjarvi's have Hessians with condition numbers ~1e10.
    """
    x0 = jnp.zeros((dim,)) if x0 is None else jnp.asarray(x0)
    mode, lp, it = find_mode(log_prob, x0, max_iter)
    if not np.isfinite(lp):
        return Laplace(x0, jnp.eye(dim, dtype=x0.dtype), lp, it, "no finite mode found; starting at N(x0, I)")
    capped = ""
    if it >= max_iter:  # e.g. walking down the neck of a funnel, which has no mode
        capped = (
            f"; the mode search stopped at its {max_iter}-iteration cap with gradient norm "
            f"{float(jnp.linalg.norm(jax.grad(log_prob)(mode))):.3g}"
        )
    if dim > MAX_DENSE_DIM:
        return Laplace(
            mode,
            jnp.eye(dim, dtype=x0.dtype),
            lp,
            it,
            "mode; unit scale (dimension too large for a dense Hessian)" + capped,
        )
    h = np.asarray(hessian(log_prob, mode), dtype=np.float64)
    if not np.all(np.isfinite(h)):
        return Laplace(mode, jnp.eye(dim, dtype=x0.dtype), lp, it, "mode; Hessian not finite, unit scale" + capped)
    mode, lp, h, polished = _newton_polish(log_prob, mode, lp, h, max_sd)
    if polished:  # appended to the mode search's own remark, as the cap's is
        capped += f"; {polished} Newton step(s) from where L-BFGS stopped"
    prec = -(h + h.T) / 2
    evals, evecs = np.linalg.eigh(prec)
    floored = int(np.sum(evals < 1.0 / max_sd**2))
    evals = np.maximum(evals, 1.0 / max_sd**2)
    cov = (evecs / evals) @ evecs.T
    chol = np.linalg.cholesky((cov + cov.T) / 2 + 1e-12 * np.eye(dim) * np.max(np.diag(cov)))
    note = "mode + Laplace covariance" + (f" ({floored} flat/non-concave directions floored)" if floored else "")
    return Laplace(mode, jnp.asarray(chol, dtype=x0.dtype), lp, it, note + capped)


def _newton_step(g: np.ndarray, h: np.ndarray, max_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """The saddle-free Newton step ``|H|^-1 g`` (eigenvalues by absolute value, floored at
    ``1 / max_sd^2``), toward the mode from a point with gradient ``g`` and Hessian ``h``;
    and the eigenvalues of ``-H`` (all positive where ``h`` is concave)."""
    evals, evecs = np.linalg.eigh(-(h + h.T) / 2)
    return evecs @ ((evecs.T @ g) / np.maximum(np.abs(evals), 1.0 / max_sd**2)), evals


def _newton_polish(log_prob, mode, lp, h, max_sd: float, max_steps: int = 8):
    """Newton steps from where L-BFGS stopped, while the Newton decrement ``g |H|^-1 g``
    (about twice the log density still to gain) exceeds 1e-4; the point kept is the one
    with the smallest decrement where the Hessian is concave (else the start).

    L-BFGS judges its line searches by the log density's value, which a float32 sum over
    many data rows resolves only to ``eps |f|``: at 10^5 rows of a hierarchical regression
    (|f| ~ 2e5) it stopped 13 nats below the mode, gradient norm 30, its Hessian there
    non-concave in the group scale, and 43% of the Laplace draws had no finite density.
    Newton steps use only the gradient and Hessian, whose round-off does not grow with
    ``|f|``: six steps reached gradient norm 0.005. Where L-BFGS found the mode the first
    decrement is below 1e-4 and nothing is done. Returns ``(mode, log_prob(mode), the
    Hessian there, steps taken)``."""
    neg_v, g = _neg_value_and_grad(log_prob, mode)  # the mode search's compiled program
    g = -np.asarray(g, np.float64)
    step, _ = _newton_step(g, h, max_sd)
    dec = float(g @ step)
    if not np.isfinite(dec) or dec < 1e-4:
        return mode, lp, h, 0
    best = (dec, mode, lp, h, 0)
    x = np.asarray(mode, np.float64)
    for k in range(1, max_steps + 1):
        x = x + step
        x_j = jnp.asarray(x, mode.dtype)
        neg_v, g = _neg_value_and_grad(log_prob, x_j)
        h = np.asarray(hessian(log_prob, x_j), np.float64)
        g = -np.asarray(g, np.float64)
        if not (np.isfinite(float(neg_v)) and np.all(np.isfinite(g)) and np.all(np.isfinite(h))):
            break
        step, evals = _newton_step(g, h, max_sd)  # this point's decrement and the next step
        dec = float(g @ step)
        if dec < best[0] and np.all(evals > 0):
            best = (dec, x_j, -float(neg_v), h, k)
        if dec < 1e-4:
            break
    return best[1], best[2], best[3], best[4]


def standard_start(start: Laplace) -> Laplace:
    """``N(0, I)`` in place of a Laplace ``start`` that cannot train, its note saying why.

    :func:`~flowpost.vi.fit` switches to it when the first step from ``start`` is not
    finite. That happens where the posterior has no mode: on a centred hierarchical model
    L-BFGS walks down the funnel's neck (log scale -19 at its iteration cap), the flat
    direction gets the floored sd, and the first draws have a non-finite log density."""
    dim = start.mode.shape[0]
    return Laplace(
        jnp.zeros_like(start.mode),
        jnp.eye(dim, dtype=start.mode.dtype),
        start.log_prob,
        start.iterations,
        f"N(0, I): the first step from the Laplace start was not finite ({start.note})",
    )
