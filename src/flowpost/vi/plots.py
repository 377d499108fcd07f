"""PNG plots of a fit: the loss curve and a pair plot of posterior draws (with reference
draws overlaid when the target has them). Uses matplotlib's Agg backend (no screen)."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def loss_curve(trace, path, title: str = "") -> pathlib.Path:
    """The per-step ELBO estimate (light) and its running mean (dark) against the step."""
    elbo = np.asarray(trace.elbo, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    steps = np.arange(1, len(elbo) + 1)
    ax.plot(steps, elbo, color="tab:blue", alpha=0.25, lw=0.6, label="per step")
    w = max(len(elbo) // 50, 1)
    if len(elbo) >= w:
        run = np.convolve(elbo, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], run, color="tab:blue", lw=1.5, label=f"running mean ({w})")
    finite = elbo[np.isfinite(elbo)]
    if finite.size:
        lo = np.quantile(finite[len(finite) // 10:] if finite.size > 10 else finite, 0.01)
        ax.set_ylim(lo - 0.1 * abs(lo) - 1, np.max(finite) + 0.05 * abs(np.max(finite)) + 1)
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO estimate")
    ax.set_title(title or "training")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def pair_plot(flat: dict[str, np.ndarray], path, reference: dict[str, np.ndarray] | None = None,
              max_vars: int = 6, title: str = "") -> pathlib.Path:
    """Lower-triangle scatter and diagonal histograms of up to ``max_vars`` quantities."""
    names = list(flat)[:max_vars]
    k = len(names)
    fig, axes = plt.subplots(k, k, figsize=(1.9 * k + 1, 1.9 * k + 1), dpi=110, squeeze=False)
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
    fig.suptitle(title or "posterior draws", fontsize=10)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
