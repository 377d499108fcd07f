"""Checkpoints and saved results: one format, versioned here, every write atomic.

A **tree file** (``*.eqx``) is one line of strict JSON (the header: ``format`` and the
caller's metadata, plus the structure of the saved tree) followed by the tree's arrays as
:func:`equinox.tree_serialise_leaves` bytes. It is written to a temporary file, flushed,
``fsync``'d and renamed into place: a crash never leaves half a file.

A **result folder** (``fp.fit``'s and ``fp.bnn``'s ``result.save(path)``) is written as
a whole into a temporary sibling folder and renamed into place (:func:`folder`), so it
never mixes the files of two runs, and a folder that holds anything but a flowpost result
is refused rather than overwritten.

Formats already released are read: result folders of formats 1-4 (``q.eqx`` held bare
leaves, ``meta.json`` the metadata) and VAE checkpoints of format ``"flowpost-vae/1"``
(the header layout of today, with that format string).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any

import equinox as eqx
import jax
import numpy as np

#: the version of every file this module writes
FORMAT = 5
#: earlier versions this module reads
READS = (1, 2, 3, 4, "flowpost-vae/1")


def plain(value):
    """``value`` with NumPy scalars and arrays as Python numbers and lists, tuples as lists,
    and every non-finite float (NaN, inf: not JSON) as None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value, indent: int | None = None) -> str:
    """Strict JSON (``allow_nan=False``) of ``plain(value)``."""
    return json.dumps(plain(value), indent=indent, allow_nan=False)


def json_or_none(value):
    """``value`` if it survives JSON unchanged in kind (a built-in target's name and
    keywords), else None."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return None


def _atomic(path, write) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it and rename it into place."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path, value, indent: int | None = 2) -> None:
    """Write ``value`` as strict JSON to ``path``, atomically (NaN and inf become null)."""
    _atomic(path, lambda f: f.write((dumps(value, indent) + "\n").encode()))


def write_npz(path, **arrays) -> None:
    """Write NumPy arrays to ``path`` (``.npz``), atomically."""
    plain_arrays: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    _atomic(path, lambda f: np.savez(f, **plain_arrays))


def write_bytes(path, write) -> None:
    """``write(f)`` into ``path`` atomically (e.g. an ArviZ netCDF written to a buffer)."""
    _atomic(path, write)


# -- tree files ---------------------------------------------------------------------------
def structure(tree) -> list:
    """Path, shape and dtype of every array of ``tree``, and the repr of its base
    distribution if it has one (which has no arrays, e.g. a Student-t's degrees of freedom):
    what a saved tree must match to be read into ``tree``. (Not the whole tree's repr: that
    holds the memory addresses of static functions, which differ between processes.)"""
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_array))[0]
    out = [[jax.tree_util.keystr(path), list(a.shape), str(a.dtype)] for path, a in leaves]
    return out + ([["base", repr(tree.base)]] if hasattr(tree, "base") else [])


def settings(tree) -> str:
    """The printed tree with arrays as dtype[shape] and memory addresses removed: its
    non-array settings (a spline's bound, an activation, a base's df), the same in every
    process, so that loading into a tree built with other settings is an error."""
    return re.sub(r" at 0x[0-9a-f]+", "", eqx.tree_pformat(tree, short_arrays=True))


def write_tree(path, tree, meta: dict | None = None) -> None:
    """Write ``tree``'s arrays with a JSON header (``format``, ``meta``, ``structure``,
    ``settings``) to the file ``path``, atomically."""
    header = {"format": FORMAT, **(meta or {}), "structure": structure(tree), "settings": settings(tree)}

    def write(f):
        f.write(dumps(header).encode() + b"\n")
        eqx.tree_serialise_leaves(f, tree)

    _atomic(path, write)


def read_header(path) -> dict:
    """The JSON header of a tree file; ``{}`` for a bare-leaves file of formats 1-4."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            first = f.read(1)
            if first != b"{":
                return {}
            header = json.loads(first + f.readline())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a flowpost file ({e})") from e
    if not isinstance(header, dict) or header.get("format") not in (FORMAT, *READS):
        raise ValueError(
            f"{path}: not a flowpost file of a known format "
            f"(format {header.get('format') if isinstance(header, dict) else None!r})"
        )
    return header


def check_like(header: dict, like, who: str, what: str = "the family") -> None:
    """A clear ValueError if ``like`` does not have the saved tree's arrays or settings."""
    if "structure" in header:
        want = structure(like)
        if header.get("format") == 2:  # format 2 stored the arrays only, not the base
            want = [entry for entry in want if entry[0] != "base"]
        if want != header["structure"]:
            raise ValueError(
                f"{who}: the saved parameters do not match the structure of {what} (saved by "
                "another version or with other options); pass `like=`, a flow built with the "
                "same constructor and options"
            )
    # formats before 4 saved no settings (an edited meta may still carry them: ignored)
    fmt = header.get("format")
    saved = header.get("settings", header.get("static")) if not isinstance(fmt, int) or fmt >= 4 else None
    if saved is not None and settings(like) != saved:  # e.g. a spline's bound, an activation
        old, new = saved.splitlines(), settings(like).splitlines()
        i = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        line = lambda lines: lines[i].strip() if i < len(lines) else "(end)"  # noqa: E731
        raise ValueError(
            f"{who}: the tree to load into has other settings than the saved one: saved "
            f"{line(old)!r}, given {line(new)!r} (line {i + 1} of the printed tree); build "
            "`like=` with the options the saved one was made with"
        )


def read_tree(path, like, who: str = "load"):
    """The arrays of the tree file ``path`` (any released format) in the structure of ``like``."""
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        if f.read(1) == b"{":
            f.readline()
        else:
            f.seek(0)
        try:
            return eqx.tree_deserialise_leaves(f, like)
        except Exception as e:  # noqa: BLE001  (shape/dtype mismatch or truncation, re-raised clearly)
            raise ValueError(
                f"{path}: the file does not match the model's architecture (or tree) or is "
                f"truncated ({type(e).__name__}: {e})"
            ) from e


# -- result folders -----------------------------------------------------------------------
MARKER = "meta.json"


@contextlib.contextmanager
def folder(path, who: str = "save"):
    """``with folder(path) as tmp:`` write a result's files into ``tmp``; on success ``tmp``
    replaces ``path`` as a whole. ``path`` may be missing, empty, or a saved flowpost result
    (replaced); anything else is refused (its files would mix with the result's). In a
    multi-process run only process 0 writes; the others' files go to a scratch folder that
    is removed."""
    path = pathlib.Path(path)
    if jax.process_index() != 0:  # a multi-process run: process 0 writes, the others write nothing
        scratch = pathlib.Path(tempfile.mkdtemp(prefix="flowpost-"))
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    if path.exists() and not path.is_dir():
        raise ValueError(f"{who}: {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).is_file():
        raise ValueError(
            f"{who}: {path} holds other files and is not a saved flowpost result; save into a new "
            "or empty folder (a result folder is replaced whole, never mixed with other files)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_meta(path, who: str) -> dict:
    """``meta.json`` of a result folder (``who`` names the caller in errors); from format 5
    on it is a copy of the header of the folder's ``q.eqx``."""
    path = pathlib.Path(path)
    if not (path / MARKER).exists() or not (path / "q.eqx").exists():
        raise FileNotFoundError(f"{who}: {path} is not a saved flowpost result (meta.json and q.eqx expected)")
    return json.loads((path / MARKER).read_text())


def buffer_writer(write_to_path):
    """Adapt a writer that only takes a file name (e.g. netCDF) to :func:`write_bytes`."""

    def write(f):
        with tempfile.TemporaryDirectory() as d:
            tmp = pathlib.Path(d) / "file"
            write_to_path(str(tmp))
            f.write(tmp.read_bytes())

    return write


__all__ = [
    "FORMAT",
    "READS",
    "plain",
    "dumps",
    "json_or_none",
    "write_json",
    "write_npz",
    "write_bytes",
    "structure",
    "settings",
    "write_tree",
    "read_header",
    "check_like",
    "read_tree",
    "folder",
    "read_meta",
    "buffer_writer",
]
