"""The ``flowpost`` command: a thin layer over the library (every action is one call a
user can also make from Python).

Nothing heavy is imported here: JAX, the library and rich load inside the command that
needs them, so ``flowpost --help`` answers at once."""

from __future__ import annotations

import pathlib
from typing import Optional

import typer

from . import _ui
from .bnn import app as bnn_app
from .vae import app as vae_app

app = typer.Typer(
    help="flowpost: posteriors by normalizing-flow variational inference, in JAX.\n\n"
    "Start with `flowpost targets` to list the built-in posteriors, then "
    "`flowpost fit eight_schools --out runs/eight_schools`.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(vae_app, name="vae")
app.add_typer(bnn_app, name="bnn")


@app.command()
def targets():
    """List the built-in targets (toy densities, German credit, posteriordb posteriors)."""
    from ..vi import targets as T

    aliases = {v: k for k, v in T.aliases().items()}
    _ui.table(
        "built-in targets (`flowpost fit NAME`)",
        ("name", "alias"),
        [(n, aliases.get(n, "")) for n in T.names()],
        left=(0, 1),
    )


@app.command()
def fit(
    target: str = typer.Argument(..., help="a built-in target name (see `flowpost targets`)"),
    family: str = typer.Option("flow", help="flow | fullrank | meanfield"),
    objective: str = typer.Option("elbo", help="elbo | iwelbo | renyi | fkl"),
    steps: Optional[int] = typer.Option(
        None, help="optimisation steps, exactly (default: automatic, up to 3000, stopping once q is confirmed)"
    ),
    num_samples: Optional[int] = typer.Option(None, help="draws per step (default: 128 automatic, 256 with --steps)"),
    learning_rate: float = typer.Option(5e-3, help="peak learning rate of the default Adam schedule"),
    seed: int = typer.Option(0, help="PRNG seed"),
    draws: int = typer.Option(4000, help="posterior draws for the summary and outputs"),
    devices: Optional[int] = typer.Option(None, help="split each step's draws over N devices (default: one)"),
    out: Optional[pathlib.Path] = typer.Option(None, help="folder for summary.json, PNGs, posterior.nc"),
):
    """Fit a variational posterior to TARGET and report it.

    Prints a summary table (mean, sd, quantiles per quantity), k-hat, ESS and convergence.

    With --out, writes summary.json, loss.png, pairs.png, posterior.nc and the saved result (flowpost.load(OUT)).
    """
    import warnings

    import jax
    import numpy as np

    import flowpost as fp

    from .._checks import USER_ERRORS, out_folder

    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
    if draws < 10:
        _ui.error(f"--draws must be at least 10 (PSIS needs a tail), got {draws}")
        raise typer.Exit(2)
    try:
        t = fp.targets.get(target)
        out_folder("fit", out)  # before training: a fit must not be lost to an unusable --out
        result = fp.fit(
            t,
            family=family,
            objective=objective,
            steps=steps,
            num_samples=num_samples,
            learning_rate=learning_rate,
            key=jax.random.key(seed),
            devices=devices,
        )
    except USER_ERRORS as e:
        _ui.error(e)
        raise typer.Exit(2) from None
    key = jax.random.key(seed + 1)
    diag = result.diagnostics(key, n=draws)
    summary = result.summary(key, n=draws)
    ref = result.compare_reference(key) if t.reference else None

    columns = ("quantity", "mean", "sd", "5%", "50%", "95%") + (("ref mean", "ref sd") if t.reference else ())
    rows = []
    for name, s in summary.items():
        row = [name] + [f"{s[k]:.3g}" for k in ("mean", "sd", "q5", "q50", "q95")]
        if t.reference:
            have = name in t.reference
            row += [f"{np.mean(t.reference[name]):.3g}", f"{np.std(t.reference[name]):.3g}"] if have else ["", ""]
        rows.append(row)
    _ui.table(
        f"{t.name}: {family} / {objective}, {result.steps} steps, {result.seconds:.1f} s; summary of {draws} of "
        "q's own draws (not importance-resampled; result.resample gives those)",
        columns,
        rows,
    )
    _ui.say(
        f"ELBO {diag['elbo']:.3f} ± {diag['elbo_se']:.3f}   PSIS k-hat {diag['khat']:.2f}   "
        f"ESS {diag['ess']:.0f}/{draws}   converged: {diag['converged']}   "
        f"accuracy confirmed by the weights: {diag['confirmed']}   ({result.message})"
    )
    if diag["start"]:
        _ui.say(f"start: {diag['start']}")
    if ref:
        _ui.say(
            f"vs reference: worst |z| {ref['max_abs_z']:.3f} ({ref['worst_mean']}), "
            f"worst |log sd ratio| {ref['max_abs_log_sd']:.3f} ({ref['worst_sd']})"
        )
    for w in diag["warnings"]:
        _ui.warn(w)
    if out is not None:
        from ..engine.checkpoint import write_json
        from ..vi import plots

        result.save(out)
        plots.loss_curve(result.trace, out / "loss.png", title=f"{t.name} ({family}, {objective})")
        flat = fp.vi.flatten_draws(result.sample(key, draws))
        plots.pair_plot(flat, out / "pairs.png", reference=t.reference, title=t.name)
        payload = {
            "target": t.name,
            "family": family,
            "objective": objective,
            "steps": result.steps,
            "seconds": result.seconds,
            "diagnostics": diag,
            "summary": summary,
            "reference": ref,
        }
        write_json(out / "summary.json", payload)
        _ui.say(f"wrote {out}/summary.json, loss.png, pairs.png, posterior.nc, q.eqx")
        if len(flat) > plots.PAIR_MAX:
            _ui.say(
                f"pairs.png shows the first {plots.PAIR_MAX} of {len(flat)} quantities "
                "(all of them are in summary.json and posterior.nc)"
            )


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
