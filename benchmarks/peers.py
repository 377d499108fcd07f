"""flowpost vs NumPyro's AutoIAFNormal vs FlowJAX's VI: the same flow on the same posterior.

Primary row: Bayesian logistic regression on German credit (25 coefficients, standardised
features + intercept, N(0, 1) prior), 8 draws per step, constant Adam at the same rate for
everyone (but flowpost's default family, which runs with fp.fit's default optimizer). The
flow is NumPyro's AutoIAFNormal with its defaults (3 IAF layers, MADE with hidden widths
[dim, dim], ELU, reversals between layers, N(0, I) base), rebuilt in each library:

- NumPyro: ``AutoIAFNormal(model)`` + ``SVI(..., Adam, Trace_ELBO(num_particles=8))`` on a
  NumPyro model written here (its log density is checked against flowpost's target at
  random points, up to a constant, and the check is printed);
- FlowJAX: ``masked_autoregressive_flow(flow_layers=3, nn_width=dim, nn_depth=2, elu,
  invert=False)`` (one-pass sampling = IAF) with ``ElboLoss(target, num_samples=8)``, trained
  by the loop of ``flowjax.train.fit_to_key_based_loss`` (its jitted ``step``, one Python
  call per step); the same step inside ``lax.scan`` is shown as a second row;
- flowpost: ``fp.flows.iaf(key, dim, layers=3, hidden=(dim, dim), activation=elu)`` with
  the plain reparameterised ELBO (as the peers, and what ``objective="elbo"`` does for an
  IAF), the same with the STL gradient forced (costly: an IAF's inverse is sequential), and
  the default family ``"flow"`` (Laplace start, counted in its time; STL; fp.fit's optimizer).

Measured, per library, in one process:

- steps/s after compilation: a chunk of ``--every`` steps timed on its compiled function,
  the libraries interleaved, median over repeats (``_common.time_interleaved``). flowpost
  and NumPyro run their own step function inside one jitted ``lax.scan`` per chunk (as
  ``fp.fit`` and ``SVI.run(progress_bar=False)`` do);
- compile s: wall time of the first chunk minus the steady-state time of a chunk;
- s to reference: training wall time (compile included, evaluation excluded) until
  the first checkpoint (every ``--every`` steps) whose ``--draws`` draws have
  max |mean - ref mean| / ref sd < 0.1 and max |log(sd / ref sd)| < 0.1.

German credit has no posteriordb reference: NumPyro NUTS (4 chains x 1000 warm-up + 1000
draws) is run once and cached in ``benchmarks/results/german_credit_nuts.npz`` (not in
git). The optional second row (``--second diamonds``) uses a posteriordb posterior and its
reference draws; NumPyro sees the identical log density through ``numpyro.factor``.

    python benchmarks/peers.py [--steps 10000] [--every 250] [--quick] [--second diamonds]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import subprocess
import time
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from _common import block, machine_info, time_interleaved, write_json  # noqa: E402

import flowpost as fp  # noqa: E402
from flowpost.vi import families, objectives  # noqa: E402
from flowpost.vi.fit import FitState, default_optimizer, flat_params, make_step  # noqa: E402
from flowpost.vi.init import laplace  # noqa: E402
from flowpost.vi.result import compare  # noqa: E402
from flowpost.vi.target import flatten_draws  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TOL_Z, TOL_LOG_SD = 0.1, 0.1
console = Console(width=200)


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "n/a"


# ---------------------------------------------------------------- the posterior, twice


def german_credit_data():
    """X (1000, 25) standardised + intercept, y in {0, 1}: exactly as fp.targets' german_credit."""
    raw = np.loadtxt(fp.data.path("classification/german.data-numeric"))
    x = raw[:, :-1]
    x = (x - x.mean(0)) / x.std(0)
    x = np.concatenate([x, np.ones((len(x), 1))], 1)
    return jnp.asarray(x, jnp.float32), jnp.asarray(raw[:, -1] - 1.0, jnp.float32)


def logistic_model(x, y, prior_scale=1.0):
    import numpyro
    import numpyro.distributions as dist

    beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).expand([x.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=x @ beta), obs=y)


def factor_model(target):
    """A NumPyro model whose log density (on R^dim) is ``target.log_prob`` itself."""
    import numpyro
    import numpyro.distributions as dist

    def model():
        u = numpyro.sample("u", dist.ImproperUniform(dist.constraints.real_vector, (), (target.dim,)))
        numpyro.factor("log_p", target.log_prob(u))

    return model


def check_same_density(target, model, args, site, key, n=32, scale=0.3):
    """NumPyro's log joint minus flowpost's log_prob at ``n`` random points: constant?"""
    from numpyro.infer.util import log_density

    u = scale * jax.random.normal(key, (n, target.dim))
    lp_np = jax.vmap(lambda b: log_density(model, args, {}, {site: b})[0])(u)
    lp_fp = jax.vmap(target.log_prob)(u)
    d = np.asarray(lp_np, np.float64) - np.asarray(lp_fp, np.float64)
    spread = float(d.max() - d.min())
    rel = spread / float(np.abs(np.asarray(lp_fp)).mean())
    ok = rel < 1e-5
    console.print(f"[bold]density check[/] {target.name}: NumPyro - flowpost over {n} random points: "
                  f"mean {d.mean():+.4g}, spread {spread:.3g} (relative to |log p| ~ {np.abs(lp_fp).mean():.0f}: "
                  f"{rel:.1e}) -> {'identical up to a constant' if ok else 'MISMATCH'}")
    return {"points": n, "offset_mean": float(d.mean()), "spread": spread, "relative_spread": rel, "ok": bool(ok)}


def nuts_reference(x, y, path: pathlib.Path, chains=4, warmup=1000, samples=1000, seed=0):
    """NUTS draws of beta (chains * samples, 25), cached in ``path``."""
    if path.exists():
        z = np.load(path)
        console.print(f"reference: cached NUTS draws {path} ({path.stat().st_size / 1e6:.1f} MB, "
                      f"{z['beta'].shape[0]} draws)")
        return z["beta"], json.loads(str(z["meta"]))
    from numpyro.diagnostics import summary
    from numpyro.infer import MCMC, NUTS

    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(logistic_model), num_warmup=warmup, num_samples=samples, num_chains=chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(seed), x, y)
    seconds = time.perf_counter() - t0
    grouped = np.asarray(mcmc.get_samples(group_by_chain=True)["beta"], np.float64)
    s = summary(grouped)["Param:0"]
    meta = {"sampler": "numpyro NUTS", "chains": chains, "warmup": warmup, "samples": samples, "seed": seed,
            "seconds": seconds, "max_rhat": float(np.max(s["r_hat"])), "min_ess": float(np.min(s["n_eff"]))}
    beta = grouped.reshape(-1, grouped.shape[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, beta=beta, meta=json.dumps(meta))
    console.print(f"reference: NUTS {chains} x ({warmup} + {samples}) in {seconds:.0f} s, max r-hat "
                  f"{meta['max_rhat']:.3f}, min ESS {meta['min_ess']:.0f}; cached in {path} "
                  f"({path.stat().st_size / 1e6:.1f} MB)")
    return beta, meta


# ---------------------------------------------------------------- one runner per library
#
# A runner holds a training state and offers: chunk(state) -> state (``every`` steps,
# compiled once), draws(state, key) -> (n, dim) unconstrained draws, and init_s (time spent
# before the first step, e.g. flowpost's Laplace start).


class Runner:
    library: str
    flow: str
    init_s: float = 0.0

    def chunk(self, state):
        raise NotImplementedError

    def draws(self, state, key, n):
        raise NotImplementedError


def stl_elbo(q, log_p, key, n):
    """The STL ELBO (Roeder et al. 2017) for any invertible flow, IAF included: ``log q`` of
    the draws with stopped parameters through ``q.bijection.inverse``. For an IAF that
    inverse is ``dim`` sequential passes per layer, which is why flowpost's ``"elbo"``
    uses STL only for flows with a one-pass inverse (since commit 2e0068b)."""
    x, _ = q.sample_and_log_prob(key, n)
    qs = jax.lax.stop_gradient(q)
    z, ld = jax.vmap(qs.bijection.inverse)(x)
    e = jnp.mean(log_p(x) - (qs.base.log_prob(z) + ld))
    return -e, e


def _n_params(tree) -> int:
    return int(sum(a.size for a in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))))


class FlowpostRunner(Runner):
    """``make_step`` + ``lax.scan`` chunks, exactly as :func:`fp.fit` runs them."""

    def __init__(self, target, q, *, label, flow, lr, every, num_samples, objective, key, init_s=0.0,
                 optimizer=None):
        self.library, self.flow, self.init_s = label, flow, init_s
        opt = optimizer or optax.adam(lr)
        params, build = flat_params(q)
        self.params = _n_params(q)
        self.state = FitState.init(params, opt, key)
        step = make_step(build, objectives.get(objective), jax.vmap(target.log_prob), opt, num_samples)
        self.chunk = jax.jit(lambda s: jax.lax.scan(step, s, None, length=every)[0])
        self._draw = jax.jit(lambda p, k, n: build(p).sample(k, n), static_argnums=2)

    def draws(self, state, key, n):
        return self._draw(state.params, key, n)


class NumpyroRunner(Runner):
    """AutoIAFNormal (defaults) + SVI(Adam, Trace_ELBO(num_particles)). ``loop=False``:
    ``svi.update`` in one jitted ``lax.scan`` per chunk (what ``SVI.run(progress_bar=False)``
    compiles); ``loop=True``: one jitted ``svi.update`` call per step from Python, losses
    fetched once per chunk (what the default ``SVI.run(progress_bar=True)`` does)."""

    def __init__(self, model, args, site, *, lr, every, num_samples, key, loop=False):
        import numpyro
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoIAFNormal

        self.library = "NumPyro svi.run (default loop)" if loop else "NumPyro (lax.scan)"
        self.guide = AutoIAFNormal(model)
        svi = SVI(model, self.guide, numpyro.optim.Adam(lr), Trace_ELBO(num_particles=num_samples))
        self.state = svi.init(key, *args)
        self.params = int(sum(np.size(v) for v in jax.tree.leaves(svi.get_params(self.state))))
        self.flow = "AutoIAFNormal (defaults)"
        if loop:
            body = jax.jit(lambda s: svi.update(s, *args))

            def chunk(state):
                losses = []
                for _ in range(every):
                    state, loss = body(state)
                    losses.append(loss)
                jax.device_get(losses)
                return state

            self.chunk = chunk
        else:
            self.chunk = jax.jit(lambda s: jax.lax.scan(lambda c, _: (svi.update(c, *args)[0], None), s, None,
                                                        length=every)[0])
        self._get_params = svi.get_params
        self._draw = jax.jit(lambda p, k, n: self.guide.sample_posterior(k, p, sample_shape=(n,))[site],
                             static_argnums=2)

    def draws(self, state, key, n):
        return self._draw(self._get_params(state), key, n)


class FlowjaxRunner(Runner):
    """FlowJAX's ``fit_to_key_based_loss`` loop (its jitted ``step``, ``loss.item()`` per step),
    continued across chunks with the same optimiser state; or (``scan=True``) the same
    ``step`` inside one jitted ``lax.scan`` per chunk."""

    def __init__(self, target, *, lr, every, num_samples, key, scan=False):
        from flowjax.distributions import Normal
        from flowjax.flows import masked_autoregressive_flow
        from flowjax.train.losses import ElboLoss
        from flowjax.train.train_utils import step

        dim = target.dim
        k_flow, k_run = jax.random.split(key)
        flow = masked_autoregressive_flow(k_flow, base_dist=Normal(jnp.zeros(dim)), flow_layers=3, nn_width=dim,
                                          nn_depth=2, nn_activation=jax.nn.elu, invert=False)
        self.library = "FlowJAX (lax.scan)" if scan else "FlowJAX"
        self.flow = f"MAF invert=False, 3 x [{dim},{dim}] elu"
        self.model = flow
        loss = ElboLoss(target.log_prob, num_samples=num_samples)
        opt = optax.adam(lr)
        params, static = eqx.partition(flow, eqx.is_inexact_array)  # as fit_to_key_based_loss (no NonTrainable here)
        self.params = _n_params(flow)
        self.state = (params, opt.init(params), k_run)
        self.losses = []

        def one(params, opt_state, k):
            return step(params, static, key=k, optimizer=opt, opt_state=opt_state, loss_fn=loss)

        if scan:
            def body(c, k):
                p, o, _ = one(c[0], c[1], k)
                return (p, o), None

            @jax.jit
            def chunk(state):
                p, o, k = state
                k, sub = jax.random.split(k)
                (p, o), _ = jax.lax.scan(body, (p, o), jax.random.split(sub, every))
                return p, o, k
        else:
            def chunk(state):
                p, o, k = state
                k, sub = jax.random.split(k)
                for kk in jax.random.split(sub, every):
                    p, o, l = one(p, o, kk)
                    self.losses.append(l.item())
                return p, o, k

        self.chunk = chunk
        self._draw = eqx.filter_jit(lambda p, k, n: eqx.combine(p, static).sample(k, (n,)))

    def draws(self, state, key, n):
        return self._draw(state[0], key, n)


def target_gradient_chunk(target, num_samples, every):
    """The floor under every row: ``every`` steps of only what no flow library can skip, the
    draws' noise and the gradient of the target's log density at ``num_samples`` points (no
    flow, no optimiser). A library that is Rx NumPyro's rate must run its flow, its ELBO and
    Adam in what is left of NumPyro's step after this."""
    log_p = jax.vmap(target.log_prob)

    def step(carry, _):
        u, key = carry
        key, sub = jax.random.split(key)
        g = jax.grad(lambda v: jnp.mean(log_p(v)))(u + jax.random.normal(sub, u.shape))
        return (u + 1e-9 * g, key), None

    return jax.jit(lambda c: jax.lax.scan(step, c, None, length=every)[0]), \
        (jnp.zeros((num_samples, target.dim)), jax.random.key(0))


# ---------------------------------------------------------------- the measurement


def accuracy(target, u, reference):
    model = jax.jit(jax.vmap(target.to_model))(u)
    c = compare(flatten_draws({k: np.asarray(v, np.float64) for k, v in model.items()}), reference)
    return float(c["max_abs_z"]), float(c["max_abs_log_sd"])


def train(runner, target, reference, steps, every, n_draws, key):
    """Chunks until ``steps``; returns (first chunk s, [checkpoints], s to reference or None)."""
    state, elapsed, first, reached, checks = runner.state, runner.init_s, None, None, []
    z, lsd = accuracy(target, runner.draws(state, key, n_draws), reference)
    checks.append({"step": 0, "seconds": elapsed, "max_abs_z": z, "max_abs_log_sd": lsd})
    if z < TOL_Z and lsd < TOL_LOG_SD:
        reached = {"step": 0, "seconds": elapsed}
    done = 0
    while done < steps:
        t0 = time.perf_counter()
        state = block(runner.chunk(state))
        dt = time.perf_counter() - t0
        first = dt if first is None else first
        elapsed += dt
        done += every
        key, sub = jax.random.split(key)
        z, lsd = accuracy(target, runner.draws(state, sub, n_draws), reference)
        checks.append({"step": done, "seconds": elapsed, "chunk_s": dt, "max_abs_z": z, "max_abs_log_sd": lsd})
        if not math.isfinite(z) or not math.isfinite(lsd):
            break
        if reached is None and z < TOL_Z and lsd < TOL_LOG_SD:
            reached = {"step": done, "seconds": elapsed}
    runner.final = state
    return first, checks, reached


_COMPILE_EVENTS: list[tuple[str, float]] = []


def _on_event(name, seconds, **_):
    if name.startswith("/jax/core/compile/"):
        _COMPILE_EVENTS.append((name, seconds))


def fpfit_check(target, family, lr, num_samples, steps, steps_per_s, key):
    """``fp.fit`` itself, end to end: wall time, JAX compile time inside it (trace + lower +
    XLA compile, from jax.monitoring) and how many big XLA compiles (> 0.3 x the largest: the step)."""
    _COMPILE_EVENTS.clear()
    t0 = time.perf_counter()
    r = fp.fit(target, family=family, num_samples=num_samples, steps=steps, optimizer=optax.adam(lr), key=key,
               objective_options={"stl": False}, progress=False)
    block(r.q)
    wall = time.perf_counter() - t0
    backend = [s for n, s in _COMPILE_EVENTS if n.endswith("backend_compile_duration")]
    big = [s for s in backend if s > 0.3 * max(backend, default=0.0)]
    return {"steps": steps, "wall_s": wall, "compile_s": float(sum(s for _, s in _COMPILE_EVENTS)),
            "big_compiles": len(big), "big_compile_s": float(sum(big)),
            "training_s_at_steady_rate": steps / steps_per_s, "fit_seconds": r.seconds}


def run_row(name, target, reference, runners, a, key):
    console.rule(f"[bold]{name}[/] (dim {target.dim}, {a.num_samples} draws/step, Adam {a.lr}, "
                 f"{a.steps} steps, checkpoint every {a.every})")
    rows = []
    for r in runners:
        first, checks, reached = train(r, target, reference, a.steps, a.every, a.draws, jax.random.fold_in(key, 7))
        last = checks[-1]
        console.print(f"  {r.library:24s} first chunk {first:6.2f} s; step {last['step']}: |z| "
                      f"{last['max_abs_z']:.3f} |log sd| {last['max_abs_log_sd']:.3f}; reached: {reached}")
        rows.append({"posterior": name, "library": r.library, "flow": r.flow, "params": r.params,
                     "first_chunk_s": first, "init_s": r.init_s, "checkpoints": checks, "reached": reached})
    console.print(f"  steady state: interleaved timing ({a.repeats} repeats)... load: {load()}")
    floor_chunk, floor_state = target_gradient_chunk(target, a.num_samples, a.every)
    *per_chunk, floor = time_interleaved([r.chunk for r in runners] + [floor_chunk],
                                         [(r.final,) for r in runners] + [(floor_state,)], a.repeats,
                                         target_s=a.target_s)
    for row, r, t in zip(rows, runners, per_chunk):
        row["steps_per_s"] = a.every / t
        row["compile_s"] = max(row["first_chunk_s"] - t, 0.0)
        # later chunks far slower than the steady state: recompilations (their excess time)
        slow = [c["chunk_s"] - t for c in row["checkpoints"][2:] if c["chunk_s"] > 2 * t + 0.5]
        row["recompiles"], row["recompile_s"] = len(slow), float(sum(slow))
        row["target_gradient_only_steps_per_s"] = a.every / floor
    console.print(f"  floor: noise + gradient of log p at {a.num_samples} draws alone, {a.every / floor:.0f} steps/s")
    return rows


def fmt_reached(row, steps):
    if row["reached"] is None:
        c = row["checkpoints"][-1]
        return f"not reached in {steps} steps (|z| {c['max_abs_z']:.2f}, |log sd| {c['max_abs_log_sd']:.2f})"
    r = row["reached"]
    return f"{r['seconds']:.1f} s (step {r['step']})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10000, help="training steps per library")
    p.add_argument("--every", type=int, default=250, help="checkpoint (and timed chunk) length in steps")
    p.add_argument("--draws", type=int, default=4000, help="draws per accuracy checkpoint")
    p.add_argument("--num-samples", type=int, default=8, help="draws per step (ELBO particles)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="constant Adam rate (all rows but family='flow': fp.fit's default optimizer)")
    p.add_argument("--repeats", type=int, default=7, help="repeats of the interleaved steady-state timing")
    p.add_argument("--target-s", type=float, default=0.5, help="seconds per timed repeat")
    p.add_argument("--second", default="", help="a posteriordb posterior for a second row (e.g. diamonds)")
    p.add_argument("--no-fpfit", action="store_true", help="skip the end-to-end fp.fit run (wall time, compile count)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1000 steps, 1000 draws, 3 repeats")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "peers.json"))
    a = p.parse_args()
    if a.quick:
        a.steps, a.draws, a.repeats, a.target_s = min(a.steps, 1000), min(a.draws, 1000), 3, 0.2
    if a.steps % a.every:
        p.error("--steps must be a multiple of --every")

    load_before = load()
    console.print(f"load before: {load_before}")
    key = jax.random.key(a.seed)
    iaf_label = "3 x IAF [{d},{d}] elu"

    # -- primary row: German credit
    target = fp.targets.get("german_credit")
    x, y = german_credit_data()
    check = check_same_density(target, logistic_model, (x, y), "beta", jax.random.fold_in(key, 1))
    beta, ref_meta = nuts_reference(x, y, RESULTS / "german_credit_nuts.npz")
    reference = flatten_draws({"beta": beta})

    def flowpost_runners(target):
        d = target.dim
        k_iaf, k_run, k_flow = jax.random.split(jax.random.fold_in(key, 2), 3)
        iaf = fp.flows.iaf(k_iaf, d, layers=3, hidden=(d, d), activation=jax.nn.elu)
        common = dict(lr=a.lr, every=a.every, num_samples=a.num_samples, key=k_run)
        plain = functools.partial(objectives.elbo, stl=False)
        out = [FlowpostRunner(target, iaf, label="flowpost", flow=iaf_label.format(d=d) + ", ELBO", objective=plain,
                              **common),
               FlowpostRunner(target, iaf, label="flowpost, STL forced", flow=iaf_label.format(d=d) + ", STL ELBO",
                              objective=stl_elbo, **common)]
        t0 = time.perf_counter()
        start = laplace(target.log_prob, target.dim)
        q = families.make("flow", d, start.mode, start.chol, key=k_flow)
        block(q)
        out.append(FlowpostRunner(target, q, label="flowpost family='flow'", objective="elbo",
                                  init_s=time.perf_counter() - t0,
                                  optimizer=default_optimizer(a.steps),
                                  flow="default: Laplace + RealNVP 8 x [32,32] + Student-t, STL, fp.fit's optimizer",
                                  **common))
        return out, iaf

    def peers(target, model, args, site):
        k_np, k_fj = jax.random.split(jax.random.fold_in(key, 3))
        common = dict(lr=a.lr, every=a.every, num_samples=a.num_samples)
        return [NumpyroRunner(model, args, site, key=k_np, **common),
                NumpyroRunner(model, args, site, key=k_np, loop=True, **common),
                FlowjaxRunner(target, key=k_fj, **common),
                FlowjaxRunner(target, key=k_fj, scan=True, **common)]

    fpr, iaf = flowpost_runners(target)
    runners = fpr + peers(target, logistic_model, (x, y), "beta")
    console.print("parameters: " + ", ".join(f"{r.library} {r.params}" for r in runners))
    rows = run_row("german_credit", target, reference, runners, a, key)

    fpfit = None
    if not a.no_fpfit:
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        rate = next(r["steps_per_s"] for r in rows if r["library"] == "flowpost")
        n = 1000 if a.quick else 3000
        fpfit = fpfit_check(target, iaf, a.lr, a.num_samples, n, rate, jax.random.fold_in(key, 4))
        console.print(f"fp.fit(family=IAF, objective_options={{'stl': False}}, steps={n}) end to end: "
                      f"{fpfit['wall_s']:.1f} s wall; JAX compile {fpfit['compile_s']:.1f} s "
                      f"({fpfit['big_compiles']} XLA compiles of the step, {fpfit['big_compile_s']:.1f} s); "
                      f"{n} steps at the steady rate would take {fpfit['training_s_at_steady_rate']:.1f} s")

    if a.second:
        t2 = fp.targets.get(a.second)
        ref2 = {k: np.asarray(v) for k, v in t2.reference.items()}
        fpr2, _ = flowpost_runners(t2)
        runners2 = fpr2 + peers(t2, factor_model(t2), (), "u")
        check2 = check_same_density(t2, factor_model(t2), (), "u", jax.random.fold_in(key, 5))
        rows += run_row(t2.name, t2, ref2, runners2, a, key)
    load_after = load()

    np_rows = {r["posterior"]: r for r in rows if r["library"] == "NumPyro (lax.scan)"}
    np_loop = {r["posterior"]: r for r in rows if r["library"].startswith("NumPyro svi.run")}
    table = Table(title=f"Same flow, same posterior: {a.num_samples} draws/step, Adam {a.lr}, {a.steps} steps "
                        f"(reference: |z| < {TOL_Z} and |log sd| < {TOL_LOG_SD}, checked every {a.every} steps)")
    numeric = ("params", "steps/s", "x NumPyro scan / loop", "compile s")
    for col in ("posterior", "library", "flow", "params", "steps/s", "x NumPyro scan / loop", "compile s",
                "s to reference"):
        table.add_column(col, justify="right" if col in numeric else "left")
    for r in rows:
        ratio = r["steps_per_s"] / np_rows[r["posterior"]]["steps_per_s"]
        ratio_loop = r["steps_per_s"] / np_loop[r["posterior"]]["steps_per_s"]
        r["speedup_vs_numpyro"], r["speedup_vs_numpyro_default_loop"] = ratio, ratio_loop
        table.add_row(r["posterior"], r["library"], r["flow"], str(r["params"]), f"{r['steps_per_s']:.0f}",
                      f"{ratio:.2f} / {ratio_loop:.2f}", f"{r['compile_s']:.2f}" + (f" (+{r['recompiles']} recompiles, "
                      f"{r['recompile_s']:.1f} s)" if r["recompiles"] else ""), fmt_reached(r, a.steps))
    console.print(table)
    for name, r in np_rows.items():
        f = r["target_gradient_only_steps_per_s"]
        console.print(f"{name}: the target's gradient alone (noise + grad log p at {a.num_samples} draws, no flow, "
                      f"no optimiser) runs at {f:.0f} steps/s = {f / r['steps_per_s']:.2f} x NumPyro (lax.scan)")
    console.print(f"load before: {load_before}\nload after:  {load_after}")

    payload = {"settings": {k: v for k, v in vars(a).items() if k != "out"}, "machine": machine_info(),
               "load_before": load_before, "load_after": load_after, "density_check": check,
               "reference": {"german_credit": {**ref_meta, "file": "benchmarks/results/german_credit_nuts.npz"}},
               "fp_fit_check": fpfit, "rows": rows}
    if a.second:
        payload["density_check_second"] = check2
    write_json(pathlib.Path(a.out), payload)
    console.print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
