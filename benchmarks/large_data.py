"""Posteriors of many-row models: flowpost's subsampled default fit against NumPyro NUTS on
the full data, at N = 10^4, 10^5 and 10^6 rows.

Two models, written as NumPyro users write them, the data plate with ``subsample_size``
(flowpost then reads one batch of rows per step, with control variates around the mode;
NUTS runs the same model with the plate over all rows):

- ``logistic``: Bayesian logistic regression, 10 coefficients;
- ``hierarchical``: y = a[group] + x @ b + noise, 20 groups (a ~ N(mu, tau)), 5
  coefficients, a noise scale: 28 parameters.

For each (model, N) it reports the wall time (compilation included) of flowpost's default
fit and of NumPyro NUTS (1 chain, 1,000 warm-up + 1,000 draws), each one's accuracy
against a long NUTS reference (1 chain, 1,000 + 4,000; cached under
``benchmarks/results/cache``, not committed) and the ratio of the times. The accuracy
bar: |z| < 0.1 and |log sd| < 0.1 on every quantity. The hierarchical model's reference is
exact at every N without touching the rows: NUTS (4 chains x 5,000) on the same posterior
written through the data's sufficient statistics (:func:`hierarchical_collapsed`). It also
measures what the control variate does to the variance of the ELBO gradient at the Laplace
start (same batch size).

    python benchmarks/large_data.py [--sizes 10000,100000,1000000] [--models logistic,hierarchical]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import machine_info, write_json
from numpyro.infer import MCMC, NUTS
from rich.console import Console
from rich.table import Table

import flowpost as fp
from flowpost.vi import subsample

RESULTS = Path(__file__).parent / "results"
CACHE = RESULTS / "cache"
BATCH = 1000
GROUPS = 20


def logistic(x, y=None, batch=None):
    w = numpyro.sample("w", dist.Normal(0, 2).expand([x.shape[1]]).to_event(1))
    with numpyro.plate("data", x.shape[0], subsample_size=batch) as idx:
        numpyro.sample("y", dist.Bernoulli(logits=x[idx] @ w), obs=None if y is None else y[idx])


def hierarchical(x, g, y=None, batch=None):
    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    with numpyro.plate("groups", GROUPS):
        a = numpyro.sample("a", dist.Normal(mu, tau))
    b = numpyro.sample("b", dist.Normal(0, 2).expand([x.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("data", x.shape[0], subsample_size=batch) as idx:
        numpyro.sample("y", dist.Normal(a[g[idx]] + x[idx] @ b, sigma), obs=None if y is None else y[idx])


def make_data(model: str, n: int):
    rng = np.random.default_rng(n)
    if model == "logistic":
        x = rng.normal(size=(n, 10)).astype(np.float32)
        x[:, 0] = 1.0
        w = rng.normal(size=10) / 2
        y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w)))).astype(np.float32)
        return (jnp.asarray(x), jnp.asarray(y)), {}
    x = rng.normal(size=(n, 5)).astype(np.float32)
    g = rng.integers(0, GROUPS, n)
    a = 1.0 + 0.7 * rng.normal(size=GROUPS)
    y = (a[g] + x @ rng.normal(size=5) + 1.5 * rng.normal(size=n)).astype(np.float32)
    return (jnp.asarray(x), jnp.asarray(g), jnp.asarray(y)), {}


MODELS = {"logistic": logistic, "hierarchical": hierarchical}


def flat(draws: dict) -> dict:
    return fp.vi.flatten_draws({k: np.asarray(v) for k, v in draws.items()})


def nuts(model, args, key, warmup, samples, chains=1):
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=samples, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(key, *args)
    draws = jax.block_until_ready(mcmc.get_samples())
    return flat(draws), time.perf_counter() - t0


def hierarchical_collapsed(ztz, beta_hat, rss_min, n):
    """The hierarchical model's posterior from the data's sufficient statistics: the same
    priors and names, and the Gaussian likelihood through ``Z'Z`` (``Z = [one-hot(g), x]``),
    the least-squares fit ``beta_hat`` and its residual sum of squares ``rss_min`` (both in
    float64), since ``sum_i (y_i - z_i beta)^2 = rss_min + (beta - beta_hat)' Z'Z (beta -
    beta_hat)`` exactly. Its cost does not grow with N: an exact reference at 10^6 rows in
    seconds, where NUTS on the rows takes most of an hour for 5,000 draws."""
    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    with numpyro.plate("groups", GROUPS):
        a = numpyro.sample("a", dist.Normal(mu, tau))
    b = numpyro.sample("b", dist.Normal(0, 2).expand([beta_hat.shape[0] - GROUPS]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    d = jnp.concatenate([a, b]) - beta_hat
    rss = rss_min + d @ ztz @ d
    numpyro.factor("y", -n * jnp.log(sigma) - 0.5 * n * jnp.log(2 * jnp.pi) - 0.5 * rss / sigma**2)


def sufficient_statistics(x, g, y):
    """``(Z'Z, beta_hat, rss_min, n)`` of the hierarchical model's rows, in float64 (NumPy)."""
    x, g, y = np.asarray(x, np.float64), np.asarray(g), np.asarray(y, np.float64)
    z = np.concatenate([np.eye(GROUPS)[g], x], 1)
    ztz, zty = z.T @ z, z.T @ y
    beta_hat = np.linalg.solve(ztz, zty)
    r = y - z @ beta_hat
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731  (no cancellation is left to lose precision to)
    return f(ztz), f(beta_hat), f(r @ r), f(len(y))


def reference(name, model, args, n):
    path = CACHE / f"large_data_{name}_{n}.npz"
    if path.exists():
        return dict(np.load(path)), None
    if name == "hierarchical":  # exact at any N, from the sufficient statistics: 4 chains x 5,000
        draws, seconds = nuts(hierarchical_collapsed, sufficient_statistics(*args), jax.random.key(123), 1000, 5000, 4)
    else:
        draws, seconds = nuts(model, args, jax.random.key(123), 1000, 4000)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **draws)
    return draws, seconds


def gradient_variance(target, key, draws=64, repeats=64):
    """Variance (summed over parameters) of the ELBO gradient estimate at the Laplace start,
    over batches, with and without the control variate; same draws of q, same batch size."""
    start = fp.vi.laplace(target.log_prob, target.dim)
    q = fp.vi.families.make("meanfield", target.dim, start.mode, start.chol)
    cv = subsample.taylor_estimator(target.rows, target.log_prob, start.mode)
    naive = subsample.naive_estimator(target.rows)
    u = q.sample(key, draws)

    def grads(estimate):
        def one(k):
            log_p = subsample.batch_log_p(target.rows, estimate, k)
            return jax.grad(lambda v: jnp.mean(log_p(v)))(u)
        return jax.lax.map(one, jax.random.split(jax.random.fold_in(key, 1), repeats))

    full = jax.grad(lambda v: jnp.mean(jax.vmap(target.log_prob)(v)))(u)
    out = {}
    for label, est in (("control_variate", cv), ("plain", naive)):
        g = grads(est)
        out[label] = float(jnp.sum(jnp.var(g, axis=0)))
        out[f"{label}_bias"] = float(jnp.max(jnp.abs(jnp.mean(g, axis=0) - full)))
    out["reduction"] = out["plain"] / out["control_variate"]
    return out


def run_one(name, n, ref_only=False):
    model = MODELS[name]
    args, _ = make_data(name, n)
    ref, ref_s = reference(name, model, args, n)
    if ref_only:
        return None
    target = fp.targets.from_numpyro(model, *args, batch=min(BATCH, n))
    # each timed run compiles what it needs, as a first run would: the reference (when not
    # cached) compiled NUTS's programs for this model and these shapes, and an earlier row
    # compiled flowpost's for this model
    jax.clear_caches()
    t0 = time.perf_counter()
    r = fp.fit(target, key=jax.random.key(0), progress=False)
    fit_s = time.perf_counter() - t0
    c_fit = fp.vi.compare(flat(r.sample(jax.random.key(1), 8000)), ref)
    jax.clear_caches()
    draws, nuts_s = nuts(model, args, jax.random.key(7), 1000, 1000)
    c_nuts = fp.vi.compare(draws, ref)
    row = {"model": name, "n": n, "dim": target.dim, "batch": min(BATCH, n), "flowpost_s": fit_s,
           "flowpost_steps": r.steps, "flowpost_message": r.message,
           "flowpost_z": c_fit["max_abs_z"], "flowpost_log_sd": c_fit["max_abs_log_sd"],
           "nuts_s": nuts_s, "nuts_z": c_nuts["max_abs_z"], "nuts_log_sd": c_nuts["max_abs_log_sd"],
           "reference_s": ref_s, "speedup": nuts_s / fit_s,
           "gradient_variance": gradient_variance(target, jax.random.key(3))}
    row["flowpost_pass"] = row["flowpost_z"] < 0.1 and row["flowpost_log_sd"] < 0.1
    row["nuts_pass"] = row["nuts_z"] < 0.1 and row["nuts_log_sd"] < 0.1
    return row


def growth(rows, key):
    """Exponent of time ~ N^k between the smallest and largest N (sublinear: k < 1)."""
    if len(rows) < 2:
        return float("nan")
    a, b = rows[0], rows[-1]
    return float(np.log(b[key] / a[key]) / np.log(b["n"] / a["n"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--models", default="logistic,hierarchical")
    ap.add_argument("--reference-only", action="store_true", help="only compute (and cache) the references")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = []
    console = Console()
    for name in a.models.split(","):
        for n in sizes:
            console.print(f"[bold]{name}[/bold] N={n:,}")
            row = run_one(name, n, a.reference_only)
            if row is not None:
                rows.append(row)
                console.print(row)
    if a.reference_only:
        return
    path = RESULTS / "large_data.json"
    if path.exists():  # keep the rows of models and sizes not re-run now
        import json

        done = {(r["model"], r["n"]) for r in rows}
        rows = [r for r in json.loads(path.read_text())["rows"] if (r["model"], r["n"]) not in done] + rows
        rows.sort(key=lambda r: (r["model"], r["n"]))
    table = Table(title="flowpost (subsampled default fit) vs NumPyro NUTS (full data), wall s incl. compilation")
    for col in ("model", "N", "flowpost s", "|z| / |log sd|", "NUTS s", "|z| / |log sd| ", "NUTS / flowpost",
                "grad var cut"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['n']:,}", f"{r['flowpost_s']:.1f}",
                      f"{r['flowpost_z']:.3f} / {r['flowpost_log_sd']:.3f}" + ("" if r["flowpost_pass"] else " ✗"),
                      f"{r['nuts_s']:.1f}", f"{r['nuts_z']:.3f} / {r['nuts_log_sd']:.3f}" + ("" if r["nuts_pass"] else " ✗"),
                      f"{r['speedup']:.1f}x", f"{r['gradient_variance']['reduction']:.3g}x")
    console.print(table)
    summary = {}
    for name in {r["model"] for r in rows}:
        mine = [r for r in rows if r["model"] == name]
        summary[name] = {"flowpost_growth_exponent": growth(mine, "flowpost_s"),
                         "nuts_growth_exponent": growth(mine, "nuts_s")}
        console.print(f"{name}: time ~ N^{summary[name]['flowpost_growth_exponent']:.2f} (flowpost), "
                      f"N^{summary[name]['nuts_growth_exponent']:.2f} (NUTS)")
    write_json(path, {"machine": machine_info(), "batch": BATCH, "rows": rows,
                                             "growth": summary})


if __name__ == "__main__":
    main()
