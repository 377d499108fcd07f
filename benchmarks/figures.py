"""The documentation's benchmark figures, drawn from ``benchmarks/results/*.json`` as they
are (nothing is re-run):

    python benchmarks/figures.py [--out docs/img]

writes ``posteriordb.png``, ``uci.png``, ``flows.png`` and ``vae.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flowpost.vi.plots import figure

RESULTS = Path(__file__).resolve().parent / "results"
FAMILIES = ("flow", "fullrank", "meanfield")
COLOURS = {"flow": "tab:blue", "fullrank": "tab:orange", "meanfield": "tab:green"}


def _load(name: str):
    return json.loads((RESULTS / name).read_text())


def posteriordb(out: Path) -> Path:
    """Worst |z| and worst |log sd ratio| per posterior and family, with the 0.1 targets."""
    rows = _load("posteriordb.json")
    posteriors = list(dict.fromkeys(r["posterior"] for r in rows))
    cell = {(r["posterior"], r["family"]): r for r in rows}
    fig = figure(figsize=(10, 4.2), dpi=110)
    axes = fig.subplots(1, 3, sharey=True)
    y = np.arange(len(posteriors))
    for ax, (key, label, target) in zip(
        axes,
        (
            ("max_abs_z", "worst |z| of the means", 0.1),
            ("max_abs_log_sd", "worst |log sd ratio|", 0.1),
            ("khat", "PSIS k-hat", 0.7),
        ),
    ):
        for i, fam in enumerate(FAMILIES):
            vals = [max(cell[(p, fam)][key], 1e-3) for p in posteriors]
            ax.barh(y + (i - 1) * 0.27, vals, height=0.27, color=COLOURS[fam], label=fam)
        ax.axvline(target, color="k", lw=1, ls="--")
        ax.set_xscale("log")
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(y, [p.split("-")[-1] for p in posteriors])
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3)
    fig.suptitle("posteriordb reference posteriors, default settings (dashed: the pass thresholds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = out / "posteriordb.png"
    fig.savefig(path)
    return path


def uci(out: Path) -> Path:
    """Test log-likelihood minus MC dropout's (2018 re-run), per data set."""
    base, het, sel = _load("uci.json"), _load("uci_heteroscedastic.json"), _load("uci_select.json")
    sets = list(base["results"])
    drop = {d: base["published"]["mc_dropout_2018"][d][2] for d in sets}
    pbp = {d: base["published"]["pbp"][d][2] for d in sets}
    series = {
        "PBP": [pbp[d] for d in sets],
        "meanfield": [base["results"][d]["meanfield"]["test_ll_mean"] for d in sets],
        "subspace": [base["results"][d]["subspace"]["test_ll_mean"] for d in sets],
        "subspace, noise model chosen on validation": [sel["results"][d]["test_ll_mean"] for d in sets],
        "ensemble of 3, heteroscedastic": [het["results"][d]["subspacex3"]["test_ll_mean"] for d in sets],
    }
    fig = figure(figsize=(9, 4.6), dpi=110)
    ax = fig.subplots()
    x = np.arange(len(sets))
    width = 0.8 / len(series)
    for i, (label, vals) in enumerate(series.items()):
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            np.array(vals) - np.array([drop[d] for d in sets]),
            width=width,
            label=label,
        )
    ax.axhline(0, color="k", lw=1)
    ax.set_xticks(x, [d.split("-")[0] for d in sets], fontsize=8)
    ax.set_ylabel("test LL - MC dropout's (nats)")
    ax.set_title("UCI regression, all splits: above 0 beats MC dropout", fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    path = out / "uci.png"
    fig.savefig(path)
    return path


def flows(out: Path) -> Path:
    """flowpost's steps per second over FlowJAX's, per flow, dimension and operation."""
    rows = _load("flows.json")["rows"]
    labels = [
        f"{r['label'].split(' (')[0]}, d={r['dim']}, {r['op'].replace('sample_and_log_prob', 'sample')}" for r in rows
    ]
    fig = figure(figsize=(7, 4.5), dpi=110)
    ax = fig.subplots()
    y = np.arange(len(rows))
    ratios = [r["ratio"] for r in rows]
    ax.barh(y, ratios, color=["tab:blue" if v >= 1 else "tab:red" for v in ratios])
    ax.axvline(1, color="k", lw=1)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("flowpost steps/s ÷ FlowJAX steps/s")
    ax.set_title("flows against FlowJAX, CPU (right of 1: flowpost faster)", fontsize=10)
    fig.tight_layout()
    path = out / "flows.png"
    fig.savefig(path)
    return path


def vae(out: Path) -> Path:
    """Test -ELBO against seconds per epoch, every posterior flow, 2 CPU epochs."""
    rows = _load("vae.json")["rows"]
    fig = figure(figsize=(6, 4), dpi=110)
    ax = fig.subplots()
    for r in rows:
        ax.scatter(r["seconds_per_epoch"], r["test_neg_elbo"], color="tab:blue")
        ax.annotate(
            r["flow"],
            (r["seconds_per_epoch"], r["test_neg_elbo"]),
            fontsize=8,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xlabel("seconds per epoch (CPU)")
    ax.set_ylabel("test -ELBO (nats, lower is better)")
    ax.set_title("flow-VAEs on MNIST, MLP, 2 epochs", fontsize=10)
    fig.tight_layout()
    path = out / "vae.png"
    fig.savefig(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for make in (posteriordb, uci, flows, vae):
        print(make(args.out))


if __name__ == "__main__":
    main()
