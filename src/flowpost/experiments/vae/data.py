"""Image data for the flow-VAEs: static binarized MNIST and Frey faces.

Both come from :func:`flowpost.data.path` (``$FLOWPOST_DATA``, sha256-checked, downloaded
from the canonical address when missing), or from an explicit ``file=`` (no checksum).

- Static binarized MNIST (Larochelle & Murray 2011), the split of the IWAE, IAF and
  Sylvester-flow papers: train 50000, valid 10000, test 10000 images of 28x28 in {0, 1}.
- Frey faces (Roweis): 1965 grey-level images of 28x20, values ``k / 255`` for
  ``k = 0..255``, split at random (seed 0) into 1565 train, 200 valid, 200 test, as in
  van den Berg et al. 2018.

Images are returned flattened, float32, one row per image.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib

import numpy as np

from ... import data as _data
from ..._checks import check_ints

DATASETS = ("mnist", "freyfaces")


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Train/valid/test images ``(n, height * width)`` float32, and what they are."""

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, int]
    binary: bool  # values in {0, 1} (Bernoulli decoder); else grey levels k/255

    @property
    def dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]


def check_binary(x, name: str = "x") -> None:
    """Raise ValueError unless every value of ``x`` is 0 or 1 (what a Bernoulli decoder models)."""
    x = np.asarray(x)
    bad = ~((x == 0) | (x == 1))
    if bad.any():
        vals = np.unique(x[bad])[:5]
        raise ValueError(
            f"`{name}`: a Bernoulli decoder needs images with values in {{0, 1}}, found "
            f"{int(bad.sum())} other value(s), e.g. {vals.tolist()}. Binarize the images "
            "(static binarized MNIST is already binary) or use a grey-level decoder."
        )


def _read_npz(file, keys):
    try:
        with np.load(file, allow_pickle=False) as d:
            missing = [k for k in keys if k not in d.files]
            if missing:
                raise ValueError(f"{file}: expected arrays {list(keys)}, missing {missing} (found {d.files})")
            return {k: np.asarray(d[k]) for k in keys}
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise ValueError(
            f"{file}: not a readable npz file ({type(e).__name__}: {e}); the file is "
            "truncated or corrupt. Delete it and fetch it again."
        ) from e


def _locate(relpath, file):
    return _data.path(relpath) if file is None else os.fspath(file)


def binarized_mnist(file=None) -> ImageData:
    """Static binarized MNIST. ``file``: an npz with ``train``, ``valid``, ``test`` (default:
    the checksum-verified ``mnist/binarized_mnist.npz`` under ``$FLOWPOST_DATA``)."""
    file = _locate("mnist/binarized_mnist.npz", file)
    arrays = _read_npz(file, ("train", "valid", "test"))
    for k, a in arrays.items():
        if a.ndim != 2 or a.shape[1] != 784:
            raise ValueError(f"{file}: `{k}` must have shape (n, 784), got {a.shape}")
        check_binary(a, f"{file}[{k!r}]")
    f = {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in arrays.items()}
    return ImageData("mnist", f["train"], f["valid"], f["test"], (28, 28), binary=True)


def frey_faces(file=None, seed: int = 0, n_valid: int = 200, n_test: int = 200) -> ImageData:
    """Frey faces, grey levels scaled to ``k / 255``, split at random with ``seed``."""
    file = _locate("freyfaces/freyfaces.npz", file)
    faces = _read_npz(file, ("faces",))["faces"]
    if faces.ndim != 2 or faces.shape[1] != 560 or faces.dtype != np.uint8:
        raise ValueError(f"{file}: `faces` must be uint8 of shape (n, 560), got {faces.dtype} {faces.shape}")
    perm = np.random.RandomState(seed).permutation(len(faces))
    x = faces[perm].astype(np.float32) / 255.0
    test, valid, train = x[:n_test], x[n_test : n_test + n_valid], x[n_test + n_valid :]
    return ImageData("freyfaces", train, valid, test, (28, 20), binary=False)


def subset(images: np.ndarray, limit: int | None) -> np.ndarray:
    """``limit`` images spread over the whole split (a fixed random choice, kept in file
    order), all of them for ``None``. Not the first ``limit``: the MNIST test file is
    sorted by digit, so its first 980 images are all zeros."""
    if limit is None or limit >= len(images):
        return images
    return images[np.sort(np.random.RandomState(0).permutation(len(images))[:limit])]


def load(name: str, *, file=None, limit: int | None = None) -> ImageData:
    """Data set by name (``"mnist"`` or ``"freyfaces"``); ``limit`` keeps ``limit`` images
    of each split, spread over it (:func:`subset`; quick runs and tests)."""
    if name not in DATASETS:
        raise ValueError(f"`dataset` must be one of {DATASETS}, got {name!r}")
    if limit is not None:
        check_ints(limit=limit)
    d = binarized_mnist(file) if name == "mnist" else frey_faces(file)
    if limit is not None:
        d = dataclasses.replace(
            d, train=subset(d.train, limit), valid=subset(d.valid, limit), test=subset(d.test, limit)
        )
    return d
