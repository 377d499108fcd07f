"""Diagnostics of a fitted variational posterior.

Following Yao et al. 2018 ("Yes, but did it work?"): the Pareto k-hat of the importance
weights ``w = p(theta, D) / q(theta)`` (ArviZ's PSIS), the effective sample size of the
(smoothed, normalised) weights ``1 / sum w_i^2``, and, because a low k-hat alone does not
prove a fit, the convergence of the optimisation itself (:func:`convergence`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import arviz as az
import jax
import numpy as np

from .._checks import check_ints
from .stopping import KHAT_MAX, moment_gap, moments_agree


def psis(log_w: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed log weights (normalised) and k-hat, by ArviZ's PSIS.

    Args:
        log_w: ``(n,)`` log importance weights; non-finite entries weigh 0.
    Returns:
        ``(log weights (n,) summing to one in exp, k-hat)``.
    """
    log_w = np.asarray(log_w, dtype=np.float64)
    finite = np.isfinite(log_w)
    if not finite.any():
        raise ValueError(
            f"none of the {log_w.size} draws has a finite importance weight log p - log q "
            "(the target is -inf, or NaN, wherever q puts its mass); q and the target do not "
            "overlap, so importance sampling cannot correct q"
        )
    if not finite.all():
        log_w = np.where(finite, log_w, -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lw, khat = az.psislw(log_w - np.max(log_w[finite]))
    return np.asarray(lw), float(khat)


def convergence(trace) -> dict[str, Any]:
    """Whether the ELBO trace had flattened over the last fifth of the run: its drift there
    is within the noise, or would add up to less than 0.1 nats over as many steps again.

    Args:
        trace: per-step ``elbo`` and ``grad_norm`` arrays (a :class:`flowpost.engine.Trace`).
    Returns:
        ``converged`` (bool), ``elbo_slope`` (nats per 1000 steps over the tail; NaN with
        fewer than 50 steps) and ``grad_norm`` (median over the tail).
    """
    e = np.asarray(trace.elbo, dtype=np.float64)
    g = np.asarray(trace.grad_norm, dtype=np.float64)
    if len(e) < 50:
        return {
            "converged": False,
            "elbo_slope": float("nan"),
            "grad_norm": float(np.median(g)) if len(g) else float("nan"),
        }
    tail = e[-max(len(e) // 5, 25) :]
    t = np.arange(len(tail))
    slope = float(np.polyfit(t, tail, 1)[0])
    se_slope = float(np.std(tail) * np.sqrt(12.0 / len(tail) ** 3))
    # flat if the drift over the tail is within its noise, or if as many steps again at that
    # drift would move the ELBO by less than 0.1 nats (a KL change too small to matter to
    # the importance weights; a fixed 0.01 nats / 1000 steps flagged 300-D fits that
    # matched NUTS to |z| 0.07 with 96% ESS)
    converged = abs(slope) < 3 * se_slope or abs(slope) * len(e) < 0.1
    return {"converged": bool(converged), "elbo_slope": slope * 1000, "grad_norm": float(np.median(g[-len(tail) :]))}


def diagnose(result, key=None, n: int = 4000) -> dict[str, Any]:
    """ELBO, PSIS k-hat, importance-sampling ESS and convergence of a fitted ``result``
    (a :class:`~flowpost.vi.result.FitResult`); see :meth:`FitResult.diagnostics`."""
    key = jax.random.key(12345) if key is None else key
    check_ints(least=10, n=n)  # PSIS fits a tail to the largest weights: it needs some
    u, log_w = result.log_weights(key, n)
    nan = np.isnan(log_w)  # a NaN log density is a rejection, -inf (fp.fit reads it so too)
    log_w = np.where(nan, -np.inf, log_w)
    finite = np.isfinite(log_w)
    if finite.any():
        lw, khat = psis(log_w)
        w = np.exp(lw)
        ess = float(1.0 / np.sum(w**2))
        m = np.max(log_w[finite])
        log_z = float(m + np.log(np.mean(np.exp(np.where(finite, log_w - m, -np.inf)))))
    else:  # nothing to weight: no correction, no evidence
        khat, ess, log_z = float("inf"), 0.0, float("nan")
    # the ELBO is the mean over ALL draws: a draw where the target is -inf makes it -inf
    # (q puts mass where the posterior has none), not the mean of the finite ones
    elbo = float(np.mean(log_w))
    elbo_se = float(np.std(log_w) / np.sqrt(n)) if finite.all() else float("nan")
    conv = convergence(result.trace)
    out = {
        "elbo": elbo,
        "elbo_se": elbo_se,
        "khat": khat,
        "ess": ess,
        "ess_fraction": ess / n,
        "log_evidence": log_z,
        "nonfinite_weights": int((~finite).sum()),
        "nan_density": int(nan.sum()),
        **conv,
        "message": result.message,
        "status": result.status.value,
        "start": None if result.start is None else result.start.note,
    }
    notes = []
    if khat > 0.7:
        notes.append(f"k-hat {khat:.2f} > 0.7: importance weights are unreliable; q misses part of the posterior")
    elif khat > 0.5:
        notes.append(f"k-hat {khat:.2f} in (0.5, 0.7]: usable, but treat tails and variances with care")
    if not np.isfinite(conv["elbo_slope"]):
        notes.append(f"{len(result.trace.elbo)} steps are too few to judge convergence (50 at least)")
    elif not conv["converged"]:
        notes.append(
            f"the ELBO was still moving at the end ({conv['elbo_slope']:+.3g} nats / 1000 steps): run more steps"
        )
        if khat <= 0.7:
            notes.append(
                "k-hat looks fine but the optimisation had not converged: the two disagree, do not "
                "trust k-hat alone (a collapsed q can give flat weights)"
            )
    if (~finite).any():
        notes.append(
            f"{int((~finite).sum())} of {n} draws have non-finite log p - log q, so the ELBO is "
            f"{elbo}: q puts mass where the target is -inf (or NaN); k-hat and ESS weigh those draws 0"
        )
    if nan.any():
        notes.append(
            f"the log density is NaN at {int(nan.sum())} of {n} draws from q, counted as -inf (rejections, "
            "as Stan counts them): q reaches where the model cannot be evaluated (e.g. an ODE solver "
            'failing); in float32 that may be round-off: try jax.config.update("jax_enable_x64", True) '
            "or jitter on a covariance's diagonal"
        )
    # which log q the weights used: exact for a flow; an estimate for a latent-variable
    # family (flowpost.vi.latent), whose k-hat is then that of an extended-space sampler
    out["log_q"] = getattr(result.q, "log_q_note", "exact")
    if out["log_q"] != "exact":
        notes.append(
            "log q is estimated, not exact: the 'elbo' is a lower bound on the ELBO (E[log q^] >= log q); "
            "k-hat and ESS are those of importance sampling on the extended space (theta, eps), whose weights "
            "p/q^ are exact there but noisier than p/q: typically a larger k-hat than exact weights would give, "
            "approaching it as K grows. It is not the k-hat of q's marginal density."
        )
    hard = khat > 0.7 or (~finite).any() or not conv["converged"]
    confirmed = False
    if finite.sum() >= 10:
        out["psis_moment_gap"] = gap = trust(result, u, log_w, khat, notes)
        hard = hard or bool(gap["off"])
        confirmed = bool(khat < KHAT_MAX and gap["confirmed"])
        if not hard and not confirmed:
            notes.append(unconfirmed(khat, gap))
    out["confirmed"] = confirmed
    out["flagged"] = bool(hard or not confirmed)
    out["warnings"] = notes
    return out


def unconfirmed(khat: float, gap: dict) -> str:
    """The warning for a fit whose accuracy the importance weights cannot confirm, though
    nothing says it is off (e.g. a half-Cauchy scale whose tail q lacks, where q and the
    PSIS-corrected draws agree: the trust section of ``docs/time-to-accuracy.md``)."""
    if khat >= KHAT_MAX:
        why = (
            f"k-hat {khat:.2f} >= {KHAT_MAX}: the weights' variance is infinite, so the PSIS-corrected "
            "moments cannot confirm q's own (a tail q lacks is invisible to them)"
        )
    else:
        why = (
            f"the PSIS-corrected moments are too noisy to confirm q's own within {MOMENT_GAP} posterior sd "
            f"(gaps up to {gap['max_mean_gap']:.3f} in a mean and {gap['max_sd_gap']:.3f} in a log sd, with "
            "twice their Monte Carlo error added)"
        )
    return (
        f"q's accuracy is not confirmed: {why}. Its draws may be off by more than {MOMENT_GAP} posterior sd, "
        "most likely in the sds of heavy-tailed quantities; fit longer (`steps=`), try a richer family, or "
        "check against NUTS"
    )


#: q's mean or sd is reported off when it differs from the PSIS-corrected one by more
#: than this many posterior sds (the accuracy bar: |z| < 0.1, |log sd| < 0.1)
MOMENT_GAP = 0.1


def trust(result, u, log_w, khat: float, notes: list) -> dict[str, Any]:
    """q's own means and sds against the importance-weighted (PSIS) ones, per quantity in
    the model's space; appends a warning to ``notes`` naming every quantity whose mean
    differs by more than :data:`MOMENT_GAP` posterior sd, or whose sd by more than that in
    log ratio, beyond twice the weighted estimate's Monte Carlo error
    (:func:`flowpost.vi.stopping.moment_gap`). Such a q is off where k-hat alone can look
    fine (issue 16: a mean-field fit with one sd 26% off had k-hat 0.49 and a flat ELBO).

    Returns ``{"max_mean_gap", "max_sd_gap", "off": {name: {"mean_gap", "sd_gap"}},
    "confirmed"}``; ``confirmed``: every gap plus twice its Monte Carlo error is within
    :data:`MOMENT_GAP` (:func:`flowpost.vi.stopping.moments_agree`)."""
    from .target import flatten_draws

    finite = np.isfinite(log_w)
    flat = flatten_draws(result.constrain(u))  # all n draws: the program the pilot compiled for n
    names = list(flat)
    x = np.stack([np.asarray(flat[k], np.float64) for k in names], 1)[finite]
    lw, _ = psis(log_w[finite])
    gap = moment_gap(x, lw)
    with np.errstate(invalid="ignore"):
        live = ~gap["constant"]  # a constant quantity (a correlation's unit diagonal) has no sd to compare
        off_m = live & (gap["mean_gap"] > MOMENT_GAP) & (gap["mean_gap"] > 2 * gap["mean_se"])
        off_s = live & (gap["sd_gap"] > MOMENT_GAP) & (gap["sd_gap"] > 2 * gap["sd_se"])
    off = {
        names[i]: {"mean_gap": float(gap["mean_gap"][i]), "sd_gap": float(gap["sd_gap"][i])}
        for i in np.flatnonzero(off_m | off_s)
    }
    if off:
        worst = sorted(off, key=lambda k: -max(off[k]["mean_gap"], off[k]["sd_gap"]))
        said = ", ".join(
            f"{k} (mean {off[k]['mean_gap']:.2f} sd apart, sd {100 * np.expm1(off[k]['sd_gap']):.0f}% apart)"
            for k in worst[:8]
        ) + (f" and {len(worst) - 8} more" if len(worst) > 8 else "")
        verdict = (
            f"k-hat {khat:.2f} < 0.7 says the corrected draws can be trusted"
            if khat < 0.7
            else f"but k-hat {khat:.2f} >= 0.7 says the corrected draws cannot be trusted either: q misses part "
            "of the posterior (a richer family, more steps, or NUTS)"
        )
        notes.append(
            f"q's own draws differ from the importance-weighted (PSIS) estimates by more than "
            f"{MOMENT_GAP} posterior sd in {len(off)} quantit{'y' if len(off) == 1 else 'ies'}: {said}. "
            f"`result.resample(key, n)` gives the corrected draws; {verdict}."
        )
    worst = lambda a: float(np.nanmax(a[live])) if live.any() else 0.0  # noqa: E731
    return {
        "max_mean_gap": worst(gap["mean_gap"]),
        "max_sd_gap": worst(gap["sd_gap"]),
        "off": off,
        "confirmed": bool(moments_agree(gap, MOMENT_GAP).all()),
    }


def compare(flat: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Worst standardised mean error and log sd ratio of ``flat`` draws against ``reference``
    (both flat name -> ``(n,)`` arrays)."""
    missing = sorted(set(reference) - set(flat))
    if missing:
        raise ValueError(f"draws lack reference quantities {missing[:5]}")
    z = {k: abs(np.mean(flat[k]) - np.mean(r)) / np.std(r) for k, r in reference.items()}
    s = {k: abs(np.log(np.std(flat[k]) / np.std(r))) for k, r in reference.items()}
    kz, ks = max(z, key=lambda k: z[k]), max(s, key=lambda k: s[k])
    return {"max_abs_z": float(z[kz]), "worst_mean": kz, "max_abs_log_sd": float(s[ks]), "worst_sd": ks}
