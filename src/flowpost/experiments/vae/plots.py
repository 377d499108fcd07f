"""PNG grids of VAE images: samples from the prior and reconstructions (drawn on an Agg
canvas without pyplot, so the session's matplotlib backend is left alone)."""

from __future__ import annotations

import pathlib

import equinox as eqx
import jax
import numpy as np

from ...vi.plots import figure


def image_grid(images, image_shape, path, title: str = "", cols: int = 10) -> pathlib.Path:
    """Save ``images (n, H*W)`` with values in [0, 1] as a grid PNG at ``path``."""
    images = np.asarray(images).reshape(-1, *image_shape)
    n = len(images)
    rows = -(-n // cols)
    h, w = image_shape
    canvas = np.ones((rows * (h + 2), cols * (w + 2)))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = im
    fig = figure(figsize=(cols * (w + 2) / 28, rows * (h + 2) / 28 + (0.4 if title else 0)), dpi=100)
    ax = fig.subplots()
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    path = pathlib.Path(path)
    fig.savefig(path, bbox_inches="tight")
    return path


def samples(model, key, image_shape, path, n: int = 100, title: str = "") -> pathlib.Path:
    """Decoder means for ``n`` prior draws."""
    return image_grid(eqx.filter_jit(lambda m, k: m.generate(k, n))(model, key), image_shape, path, title)


def reconstructions(model, x, key, image_shape, path, title: str = "") -> pathlib.Path:
    """Rows alternate: originals ``x (n, D)`` (n up to 50) and their reconstructions."""
    x = np.asarray(x)[:50]
    keys = jax.random.split(key, len(x))
    rec = np.asarray(eqx.filter_jit(lambda m, a, k: jax.vmap(m.reconstruct)(a, k))(model, x, keys))
    pairs = np.concatenate(
        [np.stack([x[i : i + 10], rec[i : i + 10]]) for i in range(0, len(x), 10) if len(x[i : i + 10]) == 10]
        or [x[None], rec[None]]
    )
    return image_grid(pairs.reshape(-1, x.shape[1]), image_shape, path, title)
