"""diagnostics() compares q's own moments with the importance-weighted (PSIS) ones and
warns, naming the quantities, when they differ by more than 0.1 posterior sd (issue 16
section 3: a fit that is off and looks fine)."""

import warnings

import jax
import numpy as np
import pytest

import flowpost as fp

warnings.filterwarnings("ignore", category=FutureWarning)


def correlated(rho):
    """N(0, S) on (a, b, c): a and b correlated by ``rho``, c independent. The KL-optimal
    mean-field q has sds sqrt(1 - rho^2) for a and b (the precision's diagonal) and 1 for c."""
    cov = np.array([[1.0, rho, 0.0], [rho, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return fp.targets.get("gaussian", dim=3, mean=np.zeros(3), cov=cov)


def moment_warnings(d):
    return [w for w in d["warnings"] if "importance-weighted (PSIS)" in w]


@pytest.mark.parametrize("rho", [0.6])
def test_meanfield_with_sds_off_and_a_fine_khat_is_named(rho):
    t = correlated(rho)
    r = fp.fit(t, family="meanfield", steps=400, key=jax.random.key(0), progress=False)
    d = r.diagnostics()
    # the fit looks fine by k-hat and convergence: the sds of a and b are 20% too small
    assert d["khat"] < 0.7 and d["converged"], d
    sd_q = r.sample_unconstrained(jax.random.key(1), 20_000)[0].std(0)
    assert np.allclose(sd_q[:2], np.sqrt(1 - rho**2), atol=0.03), sd_q
    (w,) = moment_warnings(d)
    off = d["psis_moment_gap"]["off"]
    assert set(off) == {"theta[0]", "theta[1]"}, off  # c is right and not named
    for k in off:
        assert abs(off[k]["sd_gap"] - np.log(1 / np.sqrt(1 - rho**2))) < 0.08, off
    assert "theta[0]" in w and "theta[1]" in w and "theta[2]" not in w
    assert "result.resample(key, n)" in w and "can be trusted" in w and "cannot" not in w
    # and the resampled draws are the corrected ones
    res = r.resample(jax.random.key(2), 4000)["theta"]
    assert np.all(np.abs(np.log(res[:, :2].std(0))) < 0.08), res.std(0)


def test_a_hard_case_says_the_corrected_draws_cannot_be_trusted_either():
    t = correlated(0.97)  # mean-field sds 0.24 of the posterior's
    r = fp.fit(t, family="meanfield", steps=400, key=jax.random.key(0), progress=False)
    d = r.diagnostics()
    assert d["khat"] >= 0.7, d
    (w,) = moment_warnings(d)
    assert "cannot be trusted" in w and "theta[0]" in w
    assert d["flagged"] and not d["confirmed"]


def test_a_good_fit_gets_no_such_warning():
    r = fp.fit(correlated(0.6), family="fullrank", steps=400, key=jax.random.key(0), progress=False)
    d = r.diagnostics()
    assert not moment_warnings(d) and d["psis_moment_gap"]["off"] == {}, d
    assert d["confirmed"] and not d["flagged"], d
    assert d["psis_moment_gap"]["max_mean_gap"] < 0.05 and d["psis_moment_gap"]["max_sd_gap"] < 0.05, d


def test_a_fit_the_weights_cannot_confirm_is_flagged_until_they_can():
    """q = N(0, I) against N(0, 1.06^2 I): 6% narrow, inside the bar. With 100 draws the
    corrected moments are too noisy to confirm it (flagged, with the reason: at these keys
    a gap of 0.1 is within twice its Monte Carlo error); with 20,000 they confirm it (not
    flagged). Nothing is reported off either way."""
    import dataclasses

    import jax.numpy as jnp

    std = fp.fit(fp.Target(lambda u: -0.5 * jnp.sum(u**2), 2), family="meanfield", steps=100,
                 key=jax.random.key(0), progress=False)  # stays at its exact Laplace start
    narrow = dataclasses.replace(std, target=fp.Target(lambda u: -0.5 * jnp.sum((u / 1.06) ** 2), 2))
    few, many = narrow.diagnostics(jax.random.key(0), 100), narrow.diagnostics(jax.random.key(0), 20_000)
    for d in (few, many):
        assert d["khat"] < 0.5 and d["converged"] and not d["psis_moment_gap"]["off"], d
    assert not few["confirmed"] and few["flagged"]
    (note,) = [w for w in few["warnings"] if "not confirmed" in w]
    assert "too noisy to confirm" in note and "k-hat" not in note.split(":")[1]
    assert many["confirmed"] and not many["flagged"] and not many["warnings"], many
    assert abs(many["psis_moment_gap"]["max_sd_gap"] - np.log(1.06)) < 0.01
