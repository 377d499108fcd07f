"""When the default fit stops, and what it costs until then.

``fp.fit(target, key=...)`` with ``steps=None`` (the default) does not run a fixed budget.
It trains in *rounds* of doubling length, each a warm restart of a cosine learning-rate
cycle (SGDR, Loshchilov & Hutter 2017): 200, 400, 800 and 1600 steps, so the rounds end
at steps 200, 600, 1400 and 3000 (the old fixed budget is the cap). At every round's end
the learning rate has decayed to 1% of its peak, so ``q`` there is as precise as a fixed
budget of that length would leave it, and it is checked (:func:`decide`):

1. **importance-sampling pilot**: ``n`` draws from ``q`` and their log weights
   ``log p - log q``; PSIS k-hat below 0.5, where the weights have a finite variance
   (Vehtari et al. 2024), so the Monte Carlo errors of (2) mean what they say (between
   0.5 and 0.7 the corrected estimates are usable but converge slower than their
   delta-method error claims: eight_schools stopped at k-hat 0.55 with a log sd 0.08 off
   while the pilot saw it within the bar);
2. **corrected moments**: ``q``'s own mean and sd of every quantity of the model (the
   flattened output of ``target.constrain``, deterministic sites included: the space
   the accuracy bar is judged in) against the PSIS-weighted ones (:func:`moment_gap`),
   which estimate the posterior's. The gap plus twice its Monte Carlo standard error
   must be below 0.05 (posterior sd for a mean, log ratio for a sd), half the accuracy
   bar: the weighted estimate is itself biased where the weights' tail is heavy (a
   half-Cauchy scale: q's sd 0.062 in log from the corrected one, which was 0.07 from
   the reference; with a bound of 0.1 that fit stopped 0.133 off). A pilot too noisy to
   confirm it (a low ESS) does not stop the fit.
3. **ELBO plateau** (:func:`plateau`): the ELBO of the round's last quarter has not
   risen beyond its noise over the quarter before, and, from the second round on, the
   round improved on the previous round's end by less than :func:`elbo_delta` (0.05
   nats + 0.01 per coordinate) plus noise.

All three hold: stop. Else the next round (restart at the peak rate). Why this is
reliable: (1) and (2) are an estimate of the posterior's moments that does not come
from ``q``'s own draws alone, so a ``q`` that is off by more than the bar in a mean or a
sd fails them however flat its ELBO is; the ELBO test (3) guards the case importance
weights cannot see, a ``q`` that has not yet spread into mass it never draws (flat
weights, low k-hat). A check that fails wrongly costs one more round (the cap is the old
budget); one that passes wrongly is what the thresholds are set against (the versions
tried, and what each let through, are in ``docs/time-to-accuracy.md``). The checks cost
one batch of draws and a PSIS fit per round end.

**Draws per step** (:func:`plan`): 128 in the automatic mode (256 with a fixed
``steps=``, as before). The sticking-the-landing gradient (``objective="elbo"``) has
variance that vanishes as ``q`` approaches the posterior, and each round ends at 1% of
the peak rate, which averages the remaining noise over many steps as a larger batch
would (Smith et al. 2018); more draws late would need a second compiled step program,
which costs more than it saves on small posteriors.

**A user who asks** for ``steps=`` gets exactly that many (the old cosine schedule over
``steps``, no early stop unless ``tol`` is given); ``num_samples=`` is always honoured.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import optax

from ..engine import fold_in_on_host

#: lengths of the warm-restart rounds of the automatic mode (their sum is the cap)
ROUNDS = (200, 400, 800, 1600)
#: draws per step in the automatic mode / with a user's fixed ``steps``
AUTO_SAMPLES, FIXED_SAMPLES = 128, 256
#: q's moments must be within this many posterior sds of the PSIS-corrected ones, with the
#: weighted estimate's Monte Carlo error added (twice it): half the accuracy bar, because
#: the corrected estimate can itself be off by as much again (see :func:`decide`)
MOMENT_BOUND = 0.05
#: below this PSIS k-hat the importance weights have a finite variance (Vehtari et al.
#: 2024), so the Monte Carlo errors of the corrected moments mean what they say and can
#: confirm q's own: the pilot's gate here and ``diagnostics()``'s ``confirmed``
KHAT_MAX = 0.5
#: pilot draws at a round's end (the number :meth:`FitResult.diagnostics` uses, so the
#: compiled sampler serves both)
PILOT_DRAWS = 4000


class Plan(NamedTuple):
    """``steps`` (the cap), ``num_samples`` and ``ends``: the steps at which a round ends and
    the rule is checked (empty: a fixed budget, no rounds)."""

    steps: int
    num_samples: int
    ends: tuple[int, ...]

    @property
    def automatic(self) -> bool:
        """Whether the budget is the automatic one (rounds and the rule), not a fixed one."""
        return bool(self.ends)


def plan(steps: int | None = None, num_samples: int | None = None) -> Plan:
    """The budget of a fit: ``steps=None`` is the automatic mode (rounds of :data:`ROUNDS`,
    :data:`AUTO_SAMPLES` draws unless ``num_samples`` is given); a given ``steps`` is a
    fixed budget (:data:`FIXED_SAMPLES` draws unless given). Values are passed on
    unchecked (the caller checks them)."""
    if steps is None:
        ends = tuple(int(e) for e in np.cumsum(ROUNDS))
        return Plan(ends[-1], AUTO_SAMPLES if num_samples is None else num_samples, ends)
    return Plan(steps, FIXED_SAMPLES if num_samples is None else num_samples, ())


def schedule(learning_rate: float, rounds=ROUNDS) -> optax.Schedule:
    """Warm restarts: each round a linear warm-up over a tenth of it (at most 50 steps) from
    a tenth of the rate, then a cosine decay to 1% of it at the round's end."""
    parts = [
        optax.warmup_cosine_decay_schedule(
            learning_rate / 10, learning_rate, min(50, max(r // 10, 1)), r, learning_rate / 100
        )
        for r in rounds
    ]
    return optax.join_schedules(parts, [int(b) for b in np.cumsum(rounds)[:-1]])


def optimizer(learning_rate: float, rounds=ROUNDS) -> optax.GradientTransformation:
    """Adam on :func:`schedule`, global-norm clipping at 10 (as the fixed-budget default)."""
    return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule(learning_rate, rounds)))


def moment_gap(x: np.ndarray, log_w: np.ndarray) -> dict:
    """q's own moments against importance-weighted ones, per column of ``x``.

    Both come from the same draws, so their Monte Carlo errors are largely shared: where
    the weights are nearly even, the weighted mean moves with q's own. The errors given
    are those of the *differences* (paired), by the delta method: with ``w`` the
    normalised weights and ``n`` draws, the mean gap ``m_q - m_w`` is, to first order,
    ``sum_i [(x_i - m_q) / n - w_i (x_i - m_w)]``, so its variance is estimated by the sum
    of those terms' squares; the variance gap likewise with ``(x_i - m)^2 - v`` in place of
    ``x_i - m``. (The error of the weighted estimate alone, ``sqrt(sum w_i^2 (x_i -
    m_w)^2)``, also counts the noise q's own moment shares with it: about 0.02 sd for
    4000 draws whatever q's accuracy, and twice it took up most of a 0.05 bound.) The
    expansion needs weights of finite variance, which PSIS k-hat < 0.5 indicates.

    Args:
        x: ``(n, k)`` draws from q (any coordinates: unconstrained, or model quantities).
        log_w: ``(n,)`` normalised log weights (PSIS-smoothed: ``exp`` sums to one).
    Returns:
        ``mean_gap`` and ``sd_gap`` ``(k,)``: ``|mean_q - mean_w| / sd_w`` and
        ``|log(sd_q / sd_w)|``; ``mean_se`` and ``sd_se`` ``(k,)``: the Monte Carlo
        standard errors of those differences, in the same units; ``constant`` ``(k,)``:
        columns without spread (nothing to compare).
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    n = len(x)
    w = np.exp(np.asarray(log_w, np.float64))
    w = (w / w.sum())[:, None]
    mq, mw = x.mean(0), (w * x).sum(0)
    dq, dw = x - mq, x - mw
    vq, vw = (dq**2).mean(0), (w * dw**2).sum(0)
    vq_, vw_ = np.maximum(vq, 1e-300), np.maximum(vw, 1e-300)  # floored: a constant column divides by them
    sw = np.sqrt(vw_)
    mean_se = np.sqrt(((dq / n - w * dw) ** 2).sum(0)) / sw
    sd_se = np.sqrt((((dq**2 - vq) / (n * vq_) - w * (dw**2 - vw) / vw_) ** 2).sum(0)) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        sd_gap = np.abs(0.5 * np.log(vq / vw))
    constant = sw <= 1e-9 * (1.0 + np.abs(mw))  # e.g. the unit diagonal of a correlation matrix
    return {
        "mean_gap": np.abs(mq - mw) / sw,
        "sd_gap": sd_gap,
        "mean_se": mean_se,
        "sd_se": sd_se,
        "constant": constant,
    }


def moments_agree(gap: dict, bound: float = MOMENT_BOUND, z: float = 2.0) -> np.ndarray:
    """Per column: whether q's mean and sd are within ``bound`` of the weighted ones even
    after adding ``z`` Monte Carlo standard errors to the gap (a constant column agrees)."""
    ok_m = gap["mean_gap"] + z * gap["mean_se"] <= bound
    ok_s = gap["sd_gap"] + z * gap["sd_se"] <= bound
    ok = np.where(np.isfinite(gap["mean_gap"]), ok_m, True) & np.where(np.isfinite(gap["sd_gap"]), ok_s, True)
    return ok | gap.get("constant", False)


def plateau(elbo: np.ndarray, previous_end: float | None = None, delta: float = 0.05) -> tuple[bool, str]:
    """Whether a round's ELBO trace (per step, the round only) has flattened.

    The mean over the round's last quarter against the quarter before: a rise of more
    than ``delta`` nats and twice its standard error (steps are independent estimates)
    is still moving.
    Given ``previous_end`` (the last-quarter mean of the round before), the round must
    also have gained less than ``delta`` nats plus twice that standard error over it: a
    full extra round that buys less than that much KL has nothing left to give. (The ELBO
    cannot resolve the accuracy bar itself: a mean 0.1 sd off in one coordinate costs 0.005
    nats; that is the moment check's job. This test catches a q still spreading out.)"""
    e = np.asarray(elbo, np.float64)
    q = max(len(e) // 4, 1)
    tail, before = e[-q:], e[-2 * q : -q]
    se = float(np.sqrt(np.var(tail) / len(tail) + (np.var(before) / len(before) if len(before) else 0.0)))
    if len(before) and tail.mean() - before.mean() > max(2 * se, delta):
        return False, f"the ELBO still rose by {tail.mean() - before.mean():.3g} nats over the round's last quarter"
    if previous_end is not None and tail.mean() - previous_end > delta + 2 * se:
        return False, f"the round gained {tail.mean() - previous_end:.3g} nats of ELBO over the previous one"
    return True, "ELBO flat"


def elbo_delta(dim: int) -> float:
    """The ELBO change that counts as movement for :func:`plateau`: 0.05 nats plus 0.01 per
    coordinate. (With a flat 0.05, eight_schools, 10 coordinates, ran to step 1400 on
    gains of 0.06-0.10 nats while its pilot moments already agreed at step 200.)"""
    return 0.05 + 0.01 * dim


class Check(NamedTuple):
    """The outcome of :func:`decide` at one round's end."""

    stop: bool
    khat: float
    worst_mean_gap: float
    worst_sd_gap: float
    reason: str


def decide(
    elbo_round: np.ndarray,
    previous_end: float | None,
    x: np.ndarray,
    log_w_psis: np.ndarray,
    khat: float,
    bound: float = MOMENT_BOUND,
    khat_max: float = KHAT_MAX,
) -> Check:
    """Stop at a round's end? ``elbo_round``: the round's per-step ELBO; ``x``, ``log_w_psis``,
    ``khat``: pilot draws of q, their PSIS log weights and k-hat (see the module text)."""
    gap = moment_gap(x, log_w_psis)
    agree = moments_agree(gap, bound)
    live = ~gap["constant"]
    worst = lambda a: float(np.nanmax(a[live])) if live.any() else 0.0  # noqa: E731
    wm, ws, sm, ss = worst(gap["mean_gap"]), worst(gap["sd_gap"]), worst(gap["mean_se"]), worst(gap["sd_se"])
    flat, why = plateau(elbo_round, previous_end, elbo_delta(x.shape[1]))
    if not np.isfinite(khat) or khat >= khat_max:
        return Check(False, khat, wm, ws, f"pilot k-hat {khat:.2f} >= {khat_max}")
    if not agree.all():
        return Check(
            False,
            khat,
            wm,
            ws,
            f"q's moments are not confirmed within {bound} of the PSIS-corrected ones "
            f"in {int((~agree).sum())} coordinate(s) (worst gaps {wm:.3f} sd in a mean, "
            f"{ws:.3f} in a log sd; Monte Carlo errors up to {sm:.3f}, {ss:.3f})",
        )
    if not flat:
        return Check(False, khat, wm, ws, why)
    return Check(
        True,
        khat,
        wm,
        ws,
        f"pilot k-hat {khat:.2f}; q's moments within {bound} of the PSIS-corrected ones "
        f"with twice their Monte Carlo error (worst gaps {wm:.3f} sd in a mean, {ws:.3f} "
        f"in a log sd); ELBO flat",
    )


def pilot(q, log_p, key, n: int = PILOT_DRAWS, to_model=None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` draws of ``q`` and their log weights ``log_p(u) - log q(u)`` (``log_p``, a
    jitted map of a batch ``(n, dim)`` to ``(n,)``), as float64 NumPy arrays ``(n, k)`` and
    ``(n,)``. With ``to_model`` (a jitted batch map ``u -> {name: (n, ...)}``, e.g. of
    ``target.to_model``) the draws are the model's quantities, flattened: the space of the
    accuracy bar. (Checked on ``u`` alone, a half-Cauchy scale passed the pilot at a log sd
    gap of 0.037 for ``log tau`` while ``tau``'s sd was 13% off the reference.) The draws
    come from the compiled sampler that :meth:`FitResult.diagnostics` uses, so with
    ``n = PILOT_DRAWS`` the diagnostics compile nothing more for it."""
    from .result import _sample

    u, log_q = _sample(q, key, n)
    log_w = np.asarray(log_p(u), np.float64) - np.asarray(log_q, np.float64)  # on the host: no program
    if to_model is None:
        return np.asarray(u, np.float64), log_w
    x = [np.asarray(v, np.float64).reshape(n, -1) for v in to_model(u).values()]
    return np.concatenate(x, 1), log_w


class Rule:
    """The automatic mode's rule, called after every chunk: at the first chunk that reaches
    a round end of ``plan``, :func:`decide` on a pilot (``draw(key) -> (u, log_w)``, e.g.
    :func:`pilot` of the current ``q``); ``psis(log_w) -> (log weights, k-hat)``.
    ``checks`` keeps every round's ``(step, Check)``."""

    def __init__(self, plan: Plan, psis, key):
        self.plan, self.psis, self.key = plan, psis, key
        self.elbo: list[np.ndarray] = []
        self.checks: list[tuple[int, Check]] = []
        self._previous_end: float | None = None
        self._round_start = 0
        self._next = 0  # index into plan.ends

    def __call__(self, draw, elbo_chunk, done: int) -> bool:
        """Record a chunk's per-step ELBO; at a round end, whether to stop."""
        self.elbo.append(np.asarray(elbo_chunk, np.float64).ravel())
        if self._next >= len(self.plan.ends) or done < self.plan.ends[self._next] or done >= self.plan.steps:
            return False
        while self._next < len(self.plan.ends) and done >= self.plan.ends[self._next]:
            self._next += 1
        elbo = np.concatenate(self.elbo)[self._round_start : done]
        u, log_w = draw(fold_in_on_host(self.key, done))
        finite = np.isfinite(log_w)
        if finite.mean() < 0.99:
            check = Check(
                False,
                float("inf"),
                float("nan"),
                float("nan"),
                f"{int((~finite).sum())} of {len(log_w)} pilot draws have a non-finite weight",
            )
        else:
            lw, khat = self.psis(log_w)
            check = decide(elbo, self._previous_end, u[finite], lw[finite], khat)
        self.checks.append((done, check))
        q = max(len(elbo) // 4, 1)
        self._previous_end, self._round_start = float(np.mean(elbo[-q:])), done
        return check.stop

    def summary(self) -> str:
        """The checks in words, for the fit's message."""
        return "; ".join(f"step {d}: {'stop' if c.stop else 'go on'} ({c.reason})" for d, c in self.checks)
