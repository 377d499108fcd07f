"""NumPyro models flowpost was not built around, fitted with default settings and checked
against NUTS on the same model.

Six small models that exercise what ``fp.targets.from_numpyro`` has to get right: a
simplex (Dirichlet mixture with ordered means, assignments summed out in a factor), a
correlation Cholesky factor (LKJ) with a deterministic site, ordered cutpoints (ordinal
regression), plates with deterministic sites and a half-Cauchy scale, ``handlers.mask``
(masked rows hold 1e6), and keyword arguments with a Student-t likelihood. Data are
simulated with fixed seeds.

For each: ``fp.fit(target, key=...)`` with every default (3000 steps), 4000 draws, and
NumPyro NUTS (4 chains x 1000 warm-up + 1000 draws); per site the worst ``|mean - NUTS
mean| / NUTS sd`` (|z|) and ``|log(sd / NUTS sd)|`` over its entries, then the worst over
sites (deterministic sites included), PSIS k-hat and the fit's wall time (mode search and
compile included). The same thresholds as the posteriordb table: |z| < 0.1, |log sd| < 0.1,
k-hat < 0.7 (NUTS's own Monte Carlo error in |z| is about 0.02).

    python benchmarks/numpyro_models.py [--steps 3000]
Writes benchmarks/results/numpyro_models.json.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=FutureWarning)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from _common import machine_info, write_json  # noqa: E402
from numpyro.distributions.transforms import OrderedTransform  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import flowpost as fp  # noqa: E402


def mixture(y):
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(2)))
    # ordered means: with exchangeable components the posterior has one mode per labelling
    # (with Normal(-1, 2) / Normal(1, 2) priors instead, NUTS's 4 chains split 2/2 between
    # the labellings and never mix, and a reverse-KL fit picks one of them)
    mu = numpyro.sample("mu", dist.TransformedDistribution(dist.Normal(0.0, 3.0).expand([2]), OrderedTransform()))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.factor("lik", jax.nn.logsumexp(jnp.log(w) + dist.Normal(mu, sigma).log_prob(y[:, None]), -1).sum())


def lkj_mvn(y):
    L = numpyro.sample("L", dist.LKJCholesky(3, 2.0))
    s = numpyro.sample("s", dist.HalfNormal(3.0).expand([3]).to_event(1))
    mu = numpyro.sample("mu", dist.Normal(0, 5).expand([3]).to_event(1))
    numpyro.deterministic("corr", L @ L.T)
    numpyro.sample("y", dist.MultivariateNormal(mu, scale_tril=s[:, None] * L), obs=y)


def ordinal(x, y):
    b = numpyro.sample("b", dist.Normal(0, 3))
    c = numpyro.sample("c", dist.TransformedDistribution(dist.Normal(0, 3).expand([3]), OrderedTransform()))
    numpyro.sample("y", dist.OrderedLogistic(b * x, c), obs=y)


def hierarchical(g, y, groups):
    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(2.0))
    with numpyro.plate("groups", groups):
        eta = numpyro.sample("eta", dist.Normal(0, 1))
    theta = numpyro.deterministic("theta", mu + tau * eta)
    sigma = numpyro.sample("sigma", dist.Exponential(1.0))
    numpyro.deterministic("snr", tau / sigma)
    with numpyro.plate("data", len(y)):
        numpyro.sample("y", dist.Normal(theta[g], sigma), obs=y)


def masked(x, y, m):
    a = numpyro.sample("a", dist.Normal(0, 3))
    b = numpyro.sample("b", dist.Normal(0, 3))
    s = numpyro.sample("s", dist.LogNormal(0, 1))
    with numpyro.plate("n", len(x)), numpyro.handlers.mask(mask=m):
        numpyro.sample("y", dist.Normal(a + b * x, s), obs=y)


def regression(X, y=None, prior_scale=1.0, robust=False):
    alpha = numpyro.sample("alpha", dist.Normal(0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0, prior_scale).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    mean = alpha + X @ beta
    if robust:
        lik = dist.StudentT(numpyro.sample("nu", dist.Gamma(2.0, 0.1)), mean, sigma)
    else:
        lik = dist.Normal(mean, sigma)
    numpyro.sample("y", lik, obs=y)


def problems():
    """(name, model, args, kwargs) with simulated data."""
    r = [np.random.default_rng(s) for s in range(6)]
    y_mix = np.concatenate([r[0].normal(-2, 1, 60), r[0].normal(1.5, 1, 40)]).astype(np.float32)
    corr = np.array([[1, 0.6, -0.3], [0.6, 1, 0.2], [-0.3, 0.2, 1]])
    y_mvn = r[1].multivariate_normal([0, 1, -1], 2 * corr, size=50).astype(np.float32)
    x_ord = r[2].normal(size=150).astype(np.float32)
    y_ord = np.digitize(1.2 * x_ord + r[2].logistic(size=150), [-1.0, 0.3, 1.5]).astype(np.int32)
    g = np.repeat(np.arange(6), 10)
    y_h = (r[3].normal(size=6)[g] + r[3].normal(size=60)).astype(np.float32)
    x_m = r[4].normal(size=80).astype(np.float32)
    y_m = (0.5 + 2 * x_m + 0.7 * r[4].normal(size=80)).astype(np.float32)
    keep = r[4].random(80) > 0.3
    y_m[~keep] = 1e6  # garbage where masked out
    X = r[5].normal(size=(100, 3)).astype(np.float32)
    y_r = (X @ np.array([1.0, -0.5, 0.0]) + 0.3 + 0.5 * r[5].normal(size=100)).astype(np.float32)
    return [("Dirichlet mixture", mixture, (y_mix,), {}),
            ("LKJ Cholesky MVN", lkj_mvn, (y_mvn,), {}),
            ("ordinal, ordered cutpoints", ordinal, (x_ord, y_ord), {}),
            ("hierarchical + deterministic", hierarchical, (g, y_h, 6), {}),
            ("handlers.mask", masked, (x_m, y_m, keep), {}),
            ("kwargs, Student-t", regression, (X,), {"y": y_r, "prior_scale": 0.5, "robust": True})]


def nuts(model, args, kwargs, seed=0):
    mcmc = MCMC(NUTS(model), num_warmup=1000, num_samples=1000, num_chains=4, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(jax.random.key(seed), *args, **kwargs)
    return {k: np.asarray(v, np.float64) for k, v in mcmc.get_samples().items()}


def worst(draws, ref):
    """Worst |z| and |log sd ratio| over the sites both have (entries with NUTS sd > 1e-6:
    e.g. the fixed diagonal of a correlation matrix is skipped)."""
    z, s = {}, {}
    for k, b in ref.items():
        a = np.asarray(draws[k], np.float64).reshape(len(draws[k]), -1)
        b = b.reshape(len(b), -1)
        sd = b.std(0)
        ok = sd > 1e-6
        if ok.any():
            z[k] = float(np.max(np.abs(a.mean(0) - b.mean(0))[ok] / sd[ok]))
            s[k] = float(np.max(np.abs(np.log(a.std(0)[ok] / sd[ok]))))
    kz, ks = max(z, key=z.get), max(s, key=s.get)
    return z[kz], kz, s[ks], ks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "numpyro_models.json"))
    a = ap.parse_args()
    console, rows = Console(width=160), []
    for name, model, args, kwargs in problems():
        t0 = time.perf_counter()
        target = fp.targets.from_numpyro(model, *args, **kwargs)
        result = fp.fit(target, steps=a.steps, key=jax.random.key(0), progress=False)
        seconds = time.perf_counter() - t0
        draws = result.sample(jax.random.key(1), 4000)
        ref = nuts(model, args, kwargs)
        z, kz, s, ks = worst(draws, ref)
        d = result.diagnostics()
        rows.append({"model": name, "dim": target.dim, "max_abs_z": z, "worst_mean": kz, "max_abs_log_sd": s,
                     "worst_sd": ks, "khat": d["khat"], "ess": d["ess"], "seconds": seconds,
                     "pass": bool(z < 0.1 and s < 0.1 and d["khat"] < 0.7), "message": result.message})
        console.print(rows[-1])
    table = Table(title=f"NumPyro models vs NUTS (fp.fit defaults, {a.steps} steps)")
    for col in ("model", "dim", "|z| (site)", "|log sd| (site)", "k-hat", "ESS", "fit s", "pass"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], str(r["dim"]), f"{r['max_abs_z']:.3f} ({r['worst_mean']})",
                      f"{r['max_abs_log_sd']:.3f} ({r['worst_sd']})", f"{r['khat']:.2f}", f"{r['ess']:.0f}",
                      f"{r['seconds']:.0f}", "yes" if r["pass"] else "NO")
    console.print(table)
    write_json(Path(a.out), {"machine": machine_info(), "steps": a.steps, "rows": rows})


if __name__ == "__main__":
    main()
