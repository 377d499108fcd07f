"""Latent-variable families against flows, on the same posteriors and the same budget.

"Can any generative model be the posterior?" (issue 17, docs/generative-posteriors.md).
Methods (family/objective):

- ``flow/elbo``: the default flow (exact log q, STL reverse KL);
- ``meanfield/elbo``: the mean-field Gaussian;
- ``sivi/elbo``: semi-implicit VI, the SIVI bound with K = 50 (Yin & Zhou 2018);
- ``hierarchical/elbo``: hierarchical VI with a conditional-RealNVP reverse model, K = 4
  (Ranganath et al. 2016; Sobolev & Vetrov 2019);
- ``sivi/iwfkl``, ``hierarchical/iwfkl``: the importance-weighted forward KL of the question
  (``max sum_i w_i ELBO_lambda(theta_i)``, K = 8, proposal = the current q, 10% defensive).

Every method gets the same number of target evaluations: ``steps x num_samples`` (inner
samples K evaluate the family's networks, not the target; their cost is in the wall time).
Posteriors: U1-U4 (Rezende & Mohamed 2015), banana, Neal's funnel (10-D), SIVI's X-shaped
mixture (Yin & Zhou 2018, a paper example) and the eight
posteriordb references. For U1-U4 (no reference draws) the reference is drawn from the
density on a 0.01 grid. Reported: worst |z| and |log sd| against the reference draws,
PSIS k-hat with the estimate of log q it used (``exact``, or ``ext K``: the extended-space
weights of a latent family, see flowpost.vi.latent), the ELBO (a lower bound for latent
families) and ``log Z - ELBO`` where ``log Z`` is known, and wall time (fit + compile).

    python benchmarks/families.py [--posteriors u1,banana,...] [--methods flow/elbo,...]
                                  [--steps 1000] [--num-samples 128]
    python benchmarks/families.py --table             # the table again, from the JSON
    python benchmarks/families.py --khat-vs-k arK --steps 500   # k-hat against the K of log q^

Writes ``benchmarks/results/families.json`` and, per posterior, side-by-side scatter
plots of two coordinates (reference and every method) to
``benchmarks/results/families_<posterior>.png``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import flowpost as fp  # noqa: E402
from flowpost.vi.target import flatten_draws  # noqa: E402
from flowpost.vi.targets import posteriordb  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import machine_info  # noqa: E402

from flowpost.engine.checkpoint import write_json  # noqa: E402  (strict JSON: NaN as null)

TOYS = ["u1", "u2", "u3", "u4", "banana", "funnel", "xshape"]
METHODS = ["flow/elbo", "meanfield/elbo", "sivi/elbo", "hierarchical/elbo", "sivi/iwfkl", "hierarchical/iwfkl"]
RESULTS = pathlib.Path(__file__).parent / "results"


def grid_reference(target, n=10_000, half=4.5, step=0.01, seed=0):
    """``n`` draws from a 2-D density by sampling cells of a ``step`` grid on
    ``[-half, half]^2`` in proportion to the density, jittered within the cell."""
    g = np.arange(-half, half, step) + step / 2
    z1, z2 = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([z1.ravel(), z2.ravel()], 1).astype(np.float32)
    lp = np.asarray(jax.jit(jax.vmap(target.log_prob))(jnp.asarray(pts)), np.float64)
    p = np.exp(lp - lp.max())
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(p), size=n, p=p / p.sum())
    draws = pts[idx] + rng.uniform(-step / 2, step / 2, (n, 2))
    return flatten_draws(jax.vmap(target.to_model)(jnp.asarray(draws)))


def xshape(n_ref=10_000, seed=0):
    """SIVI's "X-shaped" toy (Yin & Zhou 2018, section 4.1): the equal mixture of
    ``N(0, [[2, 1.8], [1.8, 2]])`` and ``N(0, [[2, -1.8], [-1.8, 2]])``; normalised."""
    covs = np.array([[[2.0, 1.8], [1.8, 2.0]], [[2.0, -1.8], [-1.8, 2.0]]])
    precs, logdets = np.linalg.inv(covs), np.linalg.slogdet(covs)[1]

    def log_prob(x):
        quad = jnp.einsum("i,kij,j->k", x, jnp.asarray(precs, x.dtype), x)
        return jax.nn.logsumexp(-0.5 * quad - 0.5 * jnp.asarray(logdets, x.dtype) - jnp.log(2 * jnp.pi)) - jnp.log(2.0)

    rng = np.random.default_rng(seed)
    chols = np.linalg.cholesky(covs)
    draws = np.einsum("nij,nj->ni", chols[rng.integers(2, size=n_ref)], rng.standard_normal((n_ref, 2)))
    return fp.Target(log_prob, 2, lambda x: {"x": x}, reference={"x[0]": draws[:, 0], "x[1]": draws[:, 1]},
                     log_z=0.0, name="xshape")


def load_target(name):
    if name == "xshape":
        return xshape()
    if name == "funnel":
        return fp.targets.get("funnel", dim=10)
    t = fp.targets.get(name)
    if not t.reference:
        import dataclasses

        t = dataclasses.replace(t, reference={k: np.asarray(v) for k, v in grid_reference(t).items()})
    return t


def run_one(target, method, steps, num_samples, seed):
    family, objective = method.split("/")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = fp.fit(target, family=family, objective=objective, steps=steps, num_samples=num_samples,
                        key=jax.random.key(seed), progress=False)
    wall = time.perf_counter() - t0
    d = result.diagnostics(n=2000)
    c = result.compare_reference(n=10_000)
    note = d["log_q"]
    log_q = "exact" if note == "exact" else "ext K=" + note.split("K=")[1].split(" ")[0]
    gap = None if target.log_z is None else float(target.log_z - d["elbo"])
    row = {"posterior": target.name, "method": method, "family": family, "objective": objective,
           "max_abs_z": c["max_abs_z"], "max_abs_log_sd": c["max_abs_log_sd"], "worst_mean": c["worst_mean"],
           "worst_sd": c["worst_sd"], "khat": d["khat"], "log_q": log_q, "ess_fraction": d["ess_fraction"],
           "elbo": d["elbo"], "log_z_minus_elbo": gap, "converged": d["converged"], "seconds": wall,
           "target_evals": steps * num_samples, "message": result.message}
    draws = flatten_draws(result.sample(jax.random.key(1), 2000))
    return row, draws


def plot(target, draws_by_method, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(target.reference)[:2]
    if len(names) < 2:
        return
    ref = target.reference
    cols = ["reference", *draws_by_method]
    fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 2.8), sharex=True, sharey=True)
    lo = [np.quantile(ref[k], 0.005) for k in names]
    hi = [np.quantile(ref[k], 0.995) for k in names]
    pad = [0.15 * (h - l) for l, h in zip(lo, hi)]
    for ax, col in zip(np.atleast_1d(axes), cols):
        d = ref if col == "reference" else draws_by_method[col]
        ax.scatter(np.asarray(d[names[0]])[:2000], np.asarray(d[names[1]])[:2000], s=1, alpha=0.3,
                   color="k" if col == "reference" else "C0")
        ax.set_title(col, fontsize=8)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_xlabel(names[0], fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel(names[1], fontsize=7)
    fig.suptitle(target.name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def table(rows, title):
    t = Table(title=title)
    for col in ("posterior", "method", "|z|", "|log sd|", "k-hat", "log q", "ELBO", "logZ-ELBO", "s"):
        t.add_column(col)
    for r in rows:
        if "error" in r:
            t.add_row(r["posterior"], r["method"], "error", r["error"][:40], "", "", "", "", "")
            continue
        gap = "" if r["log_z_minus_elbo"] is None else f"{r['log_z_minus_elbo']:.3f}"
        t.add_row(r["posterior"], r["method"], f"{r['max_abs_z']:.3f}", f"{r['max_abs_log_sd']:.3f}",
                  f"{r['khat']:.2f}", r["log_q"], f"{r['elbo']:.2f}", gap, f"{r['seconds']:.0f}")
    return t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--posteriors", default=",".join(TOYS + list(posteriordb.POSTERIORS)))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--num-samples", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "families.json"))
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--table", action="store_true", help="only print the table of the results in --out")
    p.add_argument("--khat-vs-k", metavar="POSTERIOR", help="only: k-hat of one fitted latent family of each kind "
                   "against the K of its log q estimate (results/families_khat.json)")
    a = p.parse_args()
    out = pathlib.Path(a.out)
    if a.khat_vs_k:
        rows = khat_vs_k(a.khat_vs_k, a.steps, a.num_samples, a.seed)
        write_json(out.parent / f"{out.stem}_khat.json", {"posterior": a.khat_vs_k, "steps": a.steps,
                                                           "num_samples": a.num_samples, "rows": rows})
        return
    if a.table:
        saved = json.loads(out.read_text())
        Console(width=150).print(table(saved["rows"], f"families: {saved['steps']} steps x {saved['num_samples']} draws "
                                             f"per method (= {saved['target_evals_per_method']} target evaluations)"))
        print(markdown(saved["rows"]))
        return
    previous = json.loads(out.read_text())["rows"] if out.exists() else []
    rows = []
    methods = a.methods.split(",")
    for name in a.posteriors.split(","):
        target = load_target(name)
        draws = {}
        for method in methods:
            try:
                row, draws[method] = run_one(target, method, a.steps, a.num_samples, a.seed)
            except Exception as e:  # noqa: BLE001  (recorded; the benchmark goes on)
                row = {"posterior": target.name, "method": method, "error": f"{type(e).__name__}: {e}"}
            rows.append(row)
            print(json.dumps(row), flush=True)
        if not a.no_plots and draws:
            plot(target, draws, out.parent / f"{out.stem}_{target.name}.png")
        # written after every posterior (a long run may be stopped); rows of posteriors and
        # methods not rerun in this call are kept (runs may be split)
        done = {(r["posterior"], r["method"]) for r in rows}
        merged = [r for r in previous if (r["posterior"], r["method"]) not in done] + rows
        write_json(out, {"steps": a.steps, "num_samples": a.num_samples, "seed": a.seed,
                         "target_evals_per_method": a.steps * a.num_samples, "machine": machine_info(),
                         "rows": merged})
    Console(width=150).print(table(merged, f"families: {a.steps} steps x {a.num_samples} draws per method "
                                f"(= {a.steps * a.num_samples} target evaluations), seed {a.seed}"))
    print(markdown(merged))


def khat_vs_k(name, steps, num_samples, seed, n=2000):
    """Fit each latent family once; then PSIS k-hat, ELBO (lower bound) and ESS of the same
    fitted q with the extended-space estimate of log q at several K (``eval_k``)."""
    import dataclasses

    from flowpost.vi import latent

    target = load_target(name)
    rows = []
    for family, ks in (("hierarchical", (1, 4, 16, 64, 256)), ("sivi", (10, 100, 1000, 5000))):
        r = fp.fit(target, family=family, steps=steps, num_samples=num_samples, key=jax.random.key(seed),
                   progress=False)
        q = r.q
        for k in ks:
            if family == "hierarchical":
                qk = latent.Hierarchical(q.decoder, q.whiten, q.dim, q.latent_dim, q.k, k, q.reverse)
            else:
                qk = latent.SemiImplicit(q.decoder, q.whiten, q.dim, q.latent_dim, q.k, k)
            d = dataclasses.replace(r, q=qk).diagnostics(n=n)
            rows.append({"family": family, "eval_k": k, "khat": d["khat"], "elbo": d["elbo"],
                         "ess_fraction": d["ess_fraction"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows) -> str:
    """One row per posterior, one column per method: |z| / |log sd| / k-hat."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cells = {(r["posterior"], r["method"]): r for r in rows}
    out = ["| posterior | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name in dict.fromkeys(r["posterior"] for r in rows):
        row = []
        for m in methods:
            r = cells.get((name, m))
            row.append("" if r is None else "error" if "error" in r else
                       f"{r['max_abs_z']:.2g}/{r['max_abs_log_sd']:.2g}/{r['khat']:.2f}")
        out.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
