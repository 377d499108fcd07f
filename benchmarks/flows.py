"""Benchmark flowpost's flows against FlowJAX's equivalents.

For each flow and dimension, times the jitted ``sample_and_log_prob`` of a batch and
the gradient of the batch's mean log-density with respect to the flow's parameters
(the reparameterised variational-inference step), in steps per second, flowpost and
FlowJAX timed interleaved in the same process (see ``_common.py`` for the protocol).

Equivalent flows (same layers, hidden widths, depth, activation, knots and interval):

* ``realnvp``: ``fp.flows.realnvp(layers=10)``  vs  ``flowjax coupling_flow`` (affine).
* ``spline``:  ``fp.flows.spline(layers=5, knots=K, bound=B)`` (coupling)  vs
  ``coupling_flow`` with ``RationalQuadraticSpline(knots=K-1, interval=B)``: FlowJAX's
  ``knots`` counts *inner* knots (K-1 of them give K bins), flowpost's counts bins.
* ``iaf``:     ``fp.flows.iaf(layers=5)``  vs  ``masked_autoregressive_flow(invert=False)``.
  Both sample in ONE network pass per layer (an inverse autoregressive flow). FlowJAX's
  default ``invert=True`` is the MAF direction instead: its ``sample`` runs ``dim``
  sequential passes per layer (compare that with ``--flows maf-seq``).
* ``maf-seq`` (opt-in, slow): ``fp.flows.maf`` vs ``masked_autoregressive_flow(invert=True)``,
  both sampling sequentially (``dim`` passes per layer).

FlowJAX's couplings are built with ``invert=False`` so that sampling runs the couplings'
forward map, as flowpost's do (a spline's inverse is a different computation).

    python benchmarks/flows.py                       # dims 25 and 1000, batch 256
    python benchmarks/flows.py --dims 25 --repeats 5 # quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from _common import compile_fn, machine_info, time_interleaved, write_json  # noqa: E402

import flowpost as fp  # noqa: E402

try:
    import flowjax
    import flowjax.bijections as fjb
    import flowjax.distributions as fjd
    import flowjax.flows as fjf
except ImportError:  # pragma: no cover
    sys.exit("FlowJAX is needed for this benchmark: pip install 'flowpost[bench]' (or pip install flowjax)")

FLOWS = ("realnvp", "spline", "iaf", "maf-seq")
LABELS = {
    "realnvp": "RealNVP (10 affine couplings)",
    "spline": "Spline coupling (5 RQS layers)",
    "iaf": "MAF, one-pass sampling (IAF, 5 layers)",
    "maf-seq": "MAF, sequential sampling (5 layers)",
}


def build(name: str, dim: int, args, key):
    """``(flowpost flow, flowjax flow)`` of the same architecture."""
    hidden = (args.width,) * args.depth
    nn = dict(nn_width=args.width, nn_depth=args.depth, nn_activation=jax.nn.relu)
    base = fjd.StandardNormal((dim,))
    k1, k2 = jr.split(key)
    if name == "realnvp":
        ours = fp.flows.realnvp(k1, dim, layers=10, hidden=hidden, activation=jax.nn.relu)
        theirs = fjf.coupling_flow(k2, base_dist=base, flow_layers=10, invert=False, **nn)
    elif name == "spline":
        ours = fp.flows.spline(k1, dim, layers=5, knots=args.knots, bound=args.bound, hidden=hidden,
                               activation=jax.nn.relu)
        rqs = fjb.RationalQuadraticSpline(knots=args.knots - 1, interval=args.bound)
        theirs = fjf.coupling_flow(k2, base_dist=base, transformer=rqs, flow_layers=5, invert=False, **nn)
    elif name == "iaf":
        ours = fp.flows.iaf(k1, dim, layers=5, hidden=hidden, activation=jax.nn.relu)
        theirs = fjf.masked_autoregressive_flow(k2, base_dist=base, flow_layers=5, invert=False, **nn)
    elif name == "maf-seq":
        ours = fp.flows.maf(k1, dim, layers=5, hidden=hidden, activation=jax.nn.relu)
        theirs = fjf.masked_autoregressive_flow(k2, base_dist=base, flow_layers=5, invert=True, **nn)
    else:
        raise ValueError(name)
    return ours, theirs


def functions(flow, batch: int, flowpost_api: bool):
    """Jittable ``(sample_and_log_prob, grad)`` taking the flow's arrays as arguments."""
    arrays, static = eqx.partition(flow, eqx.is_array)
    params, consts = eqx.partition(arrays, eqx.is_inexact_array)
    shape = batch if flowpost_api else (batch,)

    def slp(params, consts, key):
        return eqx.combine(params, consts, static).sample_and_log_prob(key, shape)

    def loss(params, consts, key):
        return jnp.mean(slp(params, consts, key)[1])

    return slp, jax.grad(loss), (params, consts)


def run(args) -> list[dict]:
    rows = []
    key = jr.key(args.seed)
    for dim in args.dims:
        for name in args.flows:
            ours, theirs = build(name, dim, args, jr.fold_in(key, dim))
            fp_slp, fp_grad, fp_args = functions(ours, args.batch, True)
            fj_slp, fj_grad, fj_args = functions(theirs, args.batch, False)
            k = jr.key(args.seed + 1)
            for op, f_ours, f_theirs in (("sample_and_log_prob", fp_slp, fj_slp), ("grad", fp_grad, fj_grad)):
                a_ours, a_theirs = (*fp_args, k), (*fj_args, k)
                c_ours, t_ours = compile_fn(f_ours, *a_ours)
                c_theirs, t_theirs = compile_fn(f_theirs, *a_theirs)
                s_ours, s_theirs = time_interleaved([c_ours, c_theirs], [a_ours, a_theirs], args.repeats,
                                                    args.target_s)
                row = dict(flow=name, label=LABELS[name], dim=dim, batch=args.batch, op=op,
                           flowpost_steps_per_s=1 / s_ours, flowjax_steps_per_s=1 / s_theirs,
                           ratio=s_theirs / s_ours, flowpost_compile_s=t_ours, flowjax_compile_s=t_theirs)
                rows.append(row)
                print(f"  {name:8s} dim={dim:<5d} {op:20s} flowpost {row['flowpost_steps_per_s']:9.2f}/s  "
                      f"flowjax {row['flowjax_steps_per_s']:9.2f}/s  ratio {row['ratio']:.2f}  "
                      f"compile {t_ours:.2f}s / {t_theirs:.2f}s", flush=True)
    return rows


def show(rows, args) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"flowpost vs FlowJAX {flowjax.__version__}: batch {args.batch}, hidden "
                        f"{args.width}x{args.depth} relu, spline {args.knots} bins on [-{args.bound}, {args.bound}], "
                        f"median of {args.repeats} ({jax.default_backend()})")
    for col in ("flow", "dim", "op"):
        table.add_column(col, no_wrap=True)
    for col in ("flowpost steps/s", "FlowJAX steps/s", "ratio fp/fj", "compile s fp", "compile s fj"):
        table.add_column(col, justify="right")
    for r in rows:
        ratio = f"{r['ratio']:.2f}"
        ratio = f"[green]{ratio}[/]" if r["ratio"] >= 1 else f"[red]{ratio}[/]"
        table.add_row(r["label"], str(r["dim"]), r["op"], f"{r['flowpost_steps_per_s']:.2f}",
                      f"{r['flowjax_steps_per_s']:.2f}", ratio, f"{r['flowpost_compile_s']:.2f}",
                      f"{r['flowjax_compile_s']:.2f}")
    Console(width=max(160, Console().width)).print(table)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[25, 1000])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per function (median reported)")
    p.add_argument("--target-s", type=float, default=0.2, help="seconds of calls per repeat (at least one call)")
    p.add_argument("--flows", nargs="+", choices=FLOWS, default=["realnvp", "spline", "iaf"])
    p.add_argument("--width", type=int, default=64, help="hidden width (flowpost hidden=(width,)*depth)")
    p.add_argument("--depth", type=int, default=2, help="number of hidden layers")
    p.add_argument("--knots", type=int, default=8, help="spline bins (FlowJAX knots = bins - 1)")
    p.add_argument("--bound", type=float, default=5.0, help="spline interval [-bound, bound]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "flows.json")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    rows = run(args)
    show(rows, args)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(args.out, dict(benchmark="flows", config=config, flowjax=flowjax.__version__,
                              machine=machine_info(), wall_s=time.perf_counter() - t0, rows=rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
