"""A NumPyro model end to end: the eight-schools model (non-centred), fitted by flowpost,
checked with its own diagnostics and ArviZ, saved and loaded.

    pip install -e '.[numpyro]'
    python examples/numpyro_model.py          # about a minute on a laptop CPU

Nothing is downloaded: the data are the eight schools of Rubin (1981).
"""

import tempfile

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import flowpost as fp

y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])  # estimated treatment effects
sigma = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])  # their standard errors


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", len(sigma)):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * eta)  # a deterministic site comes back too
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def main():
    # the model's unconstrained space (tau > 0 becomes log tau), log-Jacobians included
    target = fp.targets.from_numpyro(eight_schools, sigma, y=y)
    names = target.flat_names()
    print(f"{target.dim} unconstrained parameters; {len(names)} quantities: {', '.join(names[:3])}, ..., {names[-1]}")

    result = fp.fit(target, key=jax.random.key(0))  # every default: Laplace start, flow, 3000 steps
    print(f"status: {result.status}")

    diag = result.diagnostics(jax.random.key(1))
    print(
        f"ELBO {diag['elbo']:.2f} ± {diag['elbo_se']:.2f}, PSIS k-hat {diag['khat']:.2f} "
        f"(below 0.7: the importance weights are reliable), converged: {diag['converged']}"
    )
    for w in diag["warnings"]:
        print("warning:", w)

    # draws in the model's own terms: latent and deterministic sites
    draws = result.sample(jax.random.key(2), 4000)
    print(
        f"tau: mean {np.mean(draws['tau']):.2f}, 90% interval "
        f"[{np.quantile(draws['tau'], 0.05):.2f}, {np.quantile(draws['tau'], 0.95):.2f}]"
    )
    print("theta means:", np.round(np.mean(draws["theta"], axis=0), 1))

    # ArviZ: 4 chains of independent draws, so its tools run as on MCMC output
    print(az.summary(result.to_arviz(), var_names=["mu", "tau", "theta"], kind="stats"))

    # importance-resampled draws correct what is left of q's error
    fixed = result.resample(jax.random.key(3), 4000)
    print(f"tau mean after PSIS resampling: {np.mean(fixed['tau']):.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        result.save(f"{tmp}/eight_schools")
        again = fp.load(f"{tmp}/eight_schools", target=target)  # a user's target is passed back in
        same = np.allclose(again.sample(jax.random.key(2), 10)["tau"], result.sample(jax.random.key(2), 10)["tau"])
        print(f"saved and loaded: same draws for the same key: {same}")


if __name__ == "__main__":
    main()
