"""PNG plots of a fit: the loss curve and a pair plot of posterior draws (with reference
draws overlaid when the target has them).

The figures are drawn on matplotlib's Agg canvas directly (:func:`figure`), without
pyplot: importing or calling this module never changes the matplotlib backend of the
session (a notebook's inline backend stays as it was) and leaves no open pyplot figures.
matplotlib is an optional dependency (``pip install 'flowpost[plots]'``).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

# a pair plot shows at most this many quantities unless asked for more (a k x k grid)
PAIR_MAX = 12


def figure(figsize: tuple[float, float] = (6.0, 4.0), dpi: int = 100) -> Any:
    """A ``matplotlib.figure.Figure`` on its own Agg canvas (no pyplot, no global backend).

    Save it with ``fig.savefig(path)``; it is freed with the last reference to it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("flowpost's plots need matplotlib: pip install 'flowpost[plots]'") from e
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def loss_curve(trace, path, title: str = "") -> pathlib.Path:
    """The per-step ELBO estimate (light) and its running mean (dark) against the step."""
    elbo = np.asarray(trace.elbo, dtype=np.float64)
    fig = figure(figsize=(6, 3.5), dpi=120)
    ax = fig.subplots()
    steps = np.arange(1, len(elbo) + 1)
    ax.plot(steps, elbo, color="tab:blue", alpha=0.25, lw=0.6, label="per step")
    w = max(len(elbo) // 50, 1)
    if len(elbo) >= w:
        run = np.convolve(elbo, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1 :], run, color="tab:blue", lw=1.5, label=f"running mean ({w})")
    finite = elbo[np.isfinite(elbo)]
    if finite.size:
        lo = np.quantile(finite[len(finite) // 10 :] if finite.size > 10 else finite, 0.01)
        ax.set_ylim(lo - 0.1 * abs(lo) - 1, np.max(finite) + 0.05 * abs(np.max(finite)) + 1)
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO estimate")
    ax.set_title(title or "training")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    return path


def pair_plot(
    flat: Mapping[str, np.ndarray],
    path,
    reference: Mapping[str, np.ndarray] | None = None,
    max_vars: int | None = PAIR_MAX,
    title: str = "",
) -> pathlib.Path:
    """Lower-triangle scatter and diagonal histograms of the quantities in ``flat``.

    Every quantity is shown when there are at most ``max_vars`` (``None``: no limit);
    otherwise the first ``max_vars`` in ``flat``'s order, and the figure's title says so
    ("first 12 of 26 quantities"): a plot never drops quantities silently."""
    names = list(flat)
    total = len(names)
    if max_vars is not None and total > max_vars:
        names = names[:max_vars]
    k = len(names)
    cell = 1.9 if k <= 6 else max(1.0, 12.0 / k)
    fig = figure(figsize=(cell * k + 1, cell * k + 1), dpi=110)
    axes = fig.subplots(k, k, squeeze=False)
    rng = np.random.default_rng(0)
    sub = rng.permutation(len(flat[names[0]]))[:2000]
    ref_sub = None
    if reference:
        n_ref = len(next(iter(reference.values())))
        ref_sub = rng.permutation(n_ref)[:2000]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                if reference and a in reference:
                    ax.hist(reference[a], bins=40, density=True, color="0.6", alpha=0.6, label="reference")
                ax.hist(flat[a], bins=40, density=True, histtype="step", color="tab:blue", lw=1.4, label="flowpost")
            else:
                if reference and a in reference and b in reference:
                    ax.scatter(reference[b][ref_sub], reference[a][ref_sub], s=1, color="0.6", alpha=0.4)
                ax.scatter(flat[b][sub], flat[a][sub], s=1, color="tab:blue", alpha=0.4)
            if i == k - 1:
                ax.set_xlabel(b, fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(a, fontsize=8)
            ax.tick_params(labelsize=6)
    if reference:
        axes[0, 0].legend(fontsize=6, loc="upper right")
    shown = f"all {total} quantities" if k == total else f"first {k} of {total} quantities"
    fig.suptitle(f"{title or 'posterior draws'} ({shown})", fontsize=10)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    return path
