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


def test_a_good_fit_gets_no_such_warning():
    r = fp.fit(correlated(0.6), family="fullrank", steps=400, key=jax.random.key(0), progress=False)
    d = r.diagnostics()
    assert not moment_warnings(d) and d["psis_moment_gap"]["off"] == {}, d
    assert d["psis_moment_gap"]["max_mean_gap"] < 0.05 and d["psis_moment_gap"]["max_sd_gap"] < 0.05, d
