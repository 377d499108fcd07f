"""The ``flowpost`` command: a thin layer over the library (every action is one call a
user can also make from Python)."""

from __future__ import annotations

import pathlib
import warnings
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .._checks import USER_ERRORS, out_folder
from .._io import write_json
from .bnn import app as bnn_app
from .vae import app as vae_app

warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")

app = typer.Typer(
    help="flowpost: posteriors by normalizing-flow variational inference, in JAX.\n\n"
         "Start with `flowpost targets` to list the built-in posteriors, then "
         "`flowpost fit eight_schools --out runs/eight_schools`.",
    no_args_is_help=True, add_completion=False)
app.add_typer(vae_app, name="vae")
app.add_typer(bnn_app, name="bnn")
console = Console()


@app.command()
def targets():
    """List the built-in targets (toy densities, German credit, posteriordb posteriors)."""
    from ..vi import targets as T

    table = Table(title="built-in targets (`flowpost fit NAME`)")
    table.add_column("name")
    table.add_column("alias")
    aliases = {v: k for k, v in T.aliases().items()}
    for n in T.names():
        table.add_row(n, aliases.get(n, ""))
    console.print(table)


@app.command()
def fit(
    target: str = typer.Argument(..., help="a built-in target name (see `flowpost targets`)"),
    family: str = typer.Option("flow", help="flow | fullrank | meanfield"),
    objective: str = typer.Option("elbo", help="elbo | iwelbo | renyi | fkl"),
    steps: int = typer.Option(3000, help="optimisation steps"),
    num_samples: int = typer.Option(256, help="draws per step"),
    learning_rate: float = typer.Option(5e-3, help="peak learning rate of the default Adam schedule"),
    seed: int = typer.Option(0, help="PRNG seed"),
    draws: int = typer.Option(4000, help="posterior draws for the summary and outputs"),
    out: Optional[pathlib.Path] = typer.Option(None, help="folder for summary.json, PNGs, posterior.nc"),
):
    """Fit a variational posterior to TARGET and report it.

    Prints a summary table (mean, sd, quantiles per quantity; k-hat, ESS). With --out,
    writes summary.json, loss.png, pairs.png, posterior.nc and the saved result (load it
    with flowpost.load(OUT))."""
    import jax
    import numpy as np

    import flowpost as fp
    from ..vi import plots

    if draws < 10:
        console.print(f"[red]error:[/red] --draws must be at least 10 (PSIS needs a tail), got {draws}")
        raise typer.Exit(2)
    try:
        t = fp.targets.get(target)
        out_folder("fit", out)  # before training: a fit must not be lost to an unusable --out
        result = fp.fit(t, family=family, objective=objective, steps=steps, num_samples=num_samples,
                        learning_rate=learning_rate, key=jax.random.key(seed))
    except USER_ERRORS as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2)
    key = jax.random.key(seed + 1)
    diag = result.diagnostics(key, n=draws)
    summary = result.summary(key, n=draws)
    ref = result.compare_reference(key) if t.reference else None

    table = Table(title=f"{t.name}: {family} / {objective}, {result.steps} steps, {result.seconds:.1f} s")
    for col in ("quantity", "mean", "sd", "5%", "50%", "95%") + (("ref mean", "ref sd") if t.reference else ()):
        table.add_column(col, justify="right" if col != "quantity" else "left")
    for name, s in summary.items():
        row = [name] + [f"{s[k]:.3g}" for k in ("mean", "sd", "q5", "q50", "q95")]
        if t.reference and name in t.reference:
            row += [f"{np.mean(t.reference[name]):.3g}", f"{np.std(t.reference[name]):.3g}"]
        table.add_row(*row)
    console.print(table)
    console.print(f"ELBO {diag['elbo']:.3f} ± {diag['elbo_se']:.3f}   PSIS k-hat {diag['khat']:.2f}   "
                  f"ESS {diag['ess']:.0f}/{draws}   converged: {diag['converged']}   ({result.message})")
    if diag["start"]:
        console.print(f"start: {diag['start']}")
    if ref:
        console.print(f"vs reference: worst |z| {ref['max_abs_z']:.3f} ({ref['worst_mean']}), "
                      f"worst |log sd ratio| {ref['max_abs_log_sd']:.3f} ({ref['worst_sd']})")
    for w in diag["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if out is not None:
        result.save(out)
        plots.loss_curve(result.trace, out / "loss.png", title=f"{t.name} ({family}, {objective})")
        flat = fp.vi.flatten_draws(result.sample(key, draws))
        plots.pair_plot(flat, out / "pairs.png", reference=t.reference, title=t.name)
        payload = {"target": t.name, "family": family, "objective": objective, "steps": result.steps,
                   "seconds": result.seconds, "diagnostics": diag, "summary": summary, "reference": ref}
        write_json(out / "summary.json", payload)
        console.print(f"wrote {out}/summary.json, loss.png, pairs.png, posterior.nc, q.eqx")


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
