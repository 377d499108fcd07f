"""What a user meets before any fitting: imports that are quick and change no global
state, the command line's output, and plots that say what they show."""

import subprocess
import sys

import numpy as np


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_the_cli_and_the_package_import_no_jax_until_needed():
    out = _run(
        "import sys, flowpost, flowpost.cli; print(sorted(m for m in ('jax', 'rich', 'matplotlib', 'numpyro') "
        "if m in sys.modules))"
    )
    assert out.strip() == "[]", out


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    code = f"""
import matplotlib
matplotlib.use("svg")
import numpy as np
from flowpost.vi import plots
from flowpost.experiments.vae import plots as vplots
from flowpost.experiments.bnn import predict
plots.pair_plot({{"a": np.zeros(50), "b": np.ones(50)}}, {str(tmp_path / "p.png")!r})
vplots.image_grid(np.zeros((4, 4)), (2, 2), {str(tmp_path / "g.png")!r})
predict.regression_plot(np.zeros(5), np.ones(5), np.arange(5.0), {str(tmp_path / "r.png")!r})
import matplotlib.pyplot as plt
print(matplotlib.get_backend(), len(plt.get_fignums()))
"""
    assert _run(code).split() == ["svg", "0"]
    assert (tmp_path / "p.png").stat().st_size > 0 and (tmp_path / "r.png").stat().st_size > 0


def test_pair_plot_shows_every_quantity_up_to_its_limit(tmp_path):
    from flowpost.vi import plots

    flat = {f"theta[{i}]": np.random.default_rng(i).normal(size=100) for i in range(10)}
    plots.pair_plot(flat, tmp_path / "all.png")  # 10 <= PAIR_MAX: all of them
    many = {f"b[{i}]": np.zeros(20) + i for i in range(plots.PAIR_MAX + 3)}
    plots.pair_plot(many, tmp_path / "some.png", max_vars=plots.PAIR_MAX)
    assert (tmp_path / "all.png").stat().st_size > 0 and (tmp_path / "some.png").stat().st_size > 0


def test_cli_tables_are_never_cut(capsys):
    from flowpost.cli import _ui

    names = [f"a_rather_long_quantity_name[{i}]" for i in range(3)]
    _ui.table(
        "title",
        ("quantity", "mean", "sd", "5%", "50%", "95%", "ref mean", "ref sd"),
        [[n] + ["-1.23e+03"] * 7 for n in names],
    )
    out = capsys.readouterr().out
    assert "…" not in out and all(n in out for n in names) and "ref mean" in out
    _ui.error("bad value for theta[0]")  # brackets are text, not markup
    assert "theta[0]" in capsys.readouterr().out
