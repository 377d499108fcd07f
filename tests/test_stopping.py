"""The automatic budget of fp.fit (flowpost.vi.stopping): the rule's parts on known
inputs, a default fit that stops early with its accuracy kept, and explicit budgets
honoured exactly."""

import warnings

import jax
import numpy as np
import pytest

import flowpost as fp
from flowpost.engine import Status
from flowpost.vi import stopping
from flowpost.vi.diagnostics import psis

warnings.filterwarnings("ignore", category=FutureWarning)


def _normal_logpdf(x, m, s):
    return -0.5 * ((x - m) / s) ** 2 - np.log(s)


def _normalised(log_w):
    return log_w - np.logaddexp.reduce(log_w)


def test_moment_gap_measures_the_shift_and_the_scale_with_their_error():
    x = np.random.default_rng(0).standard_normal((40_000, 1))
    # q = N(0, 1); the target N(0.3, 1): the weighted mean is 0.3, the sd unchanged
    gap = stopping.moment_gap(x, _normalised(_normal_logpdf(x[:, 0], 0.3, 1.0) - _normal_logpdf(x[:, 0], 0, 1)))
    assert abs(gap["mean_gap"][0] - 0.3) < 0.03 and gap["sd_gap"][0] < 0.03, gap
    # the paired delta-method error of m_q - m_w: sqrt(E_q[(x - mu_q - w' (x - mu_w))^2] / n), w'
    # the weight relative to its mean: with w' = exp(0.3 x - 0.045), about 0.0022 here; the
    # weighted mean's own error, sqrt(E_q[w'^2 (x - 0.3)^2] / n), is 0.0055
    assert 0.0015 < gap["mean_se"][0] < 0.003, gap
    # the target N(0, 1.2^2): sd 20% wider, |log ratio| log 1.2 = 0.182
    gap = stopping.moment_gap(x, _normalised(_normal_logpdf(x[:, 0], 0.0, 1.2) - _normal_logpdf(x[:, 0], 0, 1)))
    assert gap["mean_gap"][0] < 0.03 and abs(gap["sd_gap"][0] - np.log(1.2)) < 0.03, gap
    assert not stopping.moments_agree(gap).all()
    # equal weights: q's moments are the weighted ones
    same = stopping.moment_gap(x, np.full(len(x), -np.log(len(x))))
    assert same["mean_gap"][0] < 1e-9 and same["sd_gap"][0] < 1e-9 and stopping.moments_agree(same).all()


def test_paired_errors_match_the_spread_of_the_gaps_over_repeats():
    """The errors that moment_gap claims for its gaps (paired: q's moment minus the
    weighted one, from the same draws) are the gaps' own spread over repeated pilots:
    q = N(0, 1) against N(0.02, 1.03^2), 200 pilots of 4000 draws. (The weighted
    estimate's own error, about 0.016 here, would claim ten times the spread.)"""
    rng = np.random.default_rng(3)
    gaps, errors = [], []
    for _ in range(200):
        x = rng.standard_normal((4000, 1))
        g = stopping.moment_gap(x, _normalised(_normal_logpdf(x[:, 0], 0.02, 1.03) - _normal_logpdf(x[:, 0], 0, 1)))
        gaps.append([g["mean_gap"][0], g["sd_gap"][0]])
        errors.append([g["mean_se"][0], g["sd_se"][0]])
    gaps, errors = np.array(gaps), np.array(errors)
    np.testing.assert_allclose(gaps.std(0), errors.mean(0), rtol=0.2)
    np.testing.assert_allclose(gaps.mean(0), [0.02 / 1.03, np.log(1.03)], atol=0.002)


def test_plateau_sees_a_rising_elbo_and_a_round_that_still_gained():
    rng = np.random.default_rng(1)
    noise = 0.05 * rng.standard_normal(200)
    assert stopping.plateau(-10 + noise)[0]
    flat, why = stopping.plateau(np.linspace(-11, -10, 200) + noise)
    assert not flat and "rose" in why
    flat, why = stopping.plateau(-10 + noise, previous_end=-10.5)
    assert not flat and "gained" in why
    assert stopping.plateau(-10 + noise, previous_end=-10.01)[0]


def _pilot(shift):
    """q = N(0, I_2); the posterior N((shift, 0), diag(1.01^2, 1)) (a posterior exactly q
    gives constant weights, where PSIS's tail fit says k-hat inf): draws and log weights."""

    def draw(key):
        u = np.asarray(jax.random.normal(key, (4000, 2)), np.float64)
        return u, _normal_logpdf(u[:, 0], shift, 1.01) - _normal_logpdf(u[:, 0], 0.0, 1.0)

    return draw


def _feed(rule, draw, elbo, chunk=100):
    """Chunks of ``elbo`` into ``rule``; the step at which it says stop (None: never)."""
    for i in range(0, len(elbo), chunk):
        if rule(draw, elbo[i : i + chunk], i + chunk):
            return i + chunk
    return None


def test_rule_does_not_stop_while_the_elbo_still_moves_nor_while_q_is_off():
    plan = stopping.plan()
    noise = 0.02 * np.random.default_rng(2).standard_normal(plan.steps)
    rising = np.concatenate([np.linspace(-12, -10, 200), np.full(plan.steps - 200, -10.0)]) + noise
    # q matches the posterior exactly, but the ELBO rises through the first round (still
    # moving at its end), and the second gains 0.125 nats over the first's last quarter
    rule = stopping.Rule(plan, psis, jax.random.key(0))
    assert _feed(rule, _pilot(0.0), rising) == 1400
    assert [d for d, _ in rule.checks] == [200, 600, 1400]
    assert "rose" in rule.checks[0][1].reason and "gained" in rule.checks[1][1].reason
    # a flat ELBO, but q's mean 0.2 posterior sd off: never stops (the cap ends it)
    rule = stopping.Rule(plan, psis, jax.random.key(0))
    assert _feed(rule, _pilot(0.2), -10 + noise) is None
    assert all("not confirmed" in c.reason for _, c in rule.checks)
    assert 0.15 < rule.checks[0][1].worst_mean_gap < 0.25
    # flat and right: the first round end
    rule = stopping.Rule(plan, psis, jax.random.key(0))
    assert _feed(rule, _pilot(0.0), -10 + noise) == 200


def test_plan_honours_what_the_user_asks_for():
    assert stopping.plan() == stopping.Plan(3000, 128, (200, 600, 1400, 3000))
    assert stopping.plan(num_samples=16) == stopping.Plan(3000, 16, (200, 600, 1400, 3000))
    assert stopping.plan(500) == stopping.Plan(500, 256, ())
    assert stopping.plan(500, 16) == stopping.Plan(500, 16, ())


def test_explicit_steps_are_run_exactly():
    t = fp.targets.get("gaussian", dim=3, seed=1)
    r = fp.fit(t, family="fullrank", steps=130, num_samples=16, chunk=50, key=jax.random.key(0), progress=False)
    assert r.steps == 130 and len(r.trace.elbo) == 130 and r.status == Status.COMPLETED and r.message == "completed"


@pytest.fixture(scope="module")
def easy():
    return fp.targets.get("gaussian", dim=4, seed=3)


def test_default_fit_stops_early_on_an_easy_posterior_and_stays_accurate(easy):
    r = fp.fit(easy, key=jax.random.key(0), progress=False)
    assert r.status == Status.EARLY_STOP and r.steps == 200, r.message
    assert r.message.startswith("converged at step 200 of at most 3000")
    c = r.compare_reference(n=20_000)  # against exact draws of the Gaussian
    assert c["max_abs_z"] < 0.05 and c["max_abs_log_sd"] < 0.05, c
    d = r.diagnostics()
    assert d["khat"] < 0.5 and not d["psis_moment_gap"]["off"]
