"""Argument checks shared by every layer: clear errors naming the argument, raised before
anything is traced or compiled."""

from __future__ import annotations

import dataclasses
import numbers
import operator
import pathlib
import typing

import numpy as np

# what a command-line action reports as a red message and exit code 2, not a traceback:
# bad arguments and data or files that are missing or cannot be read or fetched
USER_ERRORS = (ValueError, TypeError, OSError)


def check_ints(who: str = "", least: int = 1, **values) -> None:
    """Raise ``ValueError`` unless every keyword value is an integer (not a bool) >= ``least``.

    ``who`` prefixes the message (e.g. ``"fit"`` -> ``"fit: `steps` must be ..."``)."""
    for name, v in values.items():
        if as_int(v) is None or v < least:
            what = "a positive integer" if least == 1 else f"an integer >= {least}"
            raise ValueError(f"{who + ': ' if who else ''}`{name}` must be {what}, got {v!r}")


def as_int(v) -> int | None:
    """``v`` as a Python int if it is an integer scalar (Python, NumPy or a concrete JAX
    one), else None (bools are not counts)."""
    if isinstance(v, (bool, np.bool_)) or np.ndim(v) != 0:
        return None
    if isinstance(v, numbers.Integral) or np.issubdtype(getattr(v, "dtype", np.float64), np.integer):
        try:
            return operator.index(v)
        except TypeError:  # an abstract (traced) JAX integer
            return None
    return None


def as_ints(who: str = "", least: int = 1, **values) -> tuple[int, ...]:
    """:func:`check_ints`, then the values as Python ints (NumPy and JAX integer scalars
    would otherwise reach ``lax.scan`` lengths and sample shapes, which need Python ints)."""
    check_ints(who, least, **values)
    return tuple(typing.cast(int, as_int(v)) for v in values.values())


def check_positive(who: str = "", **values) -> None:
    """Raise ``ValueError`` unless every keyword value is a finite real number > 0."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < float(v) < float("inf"):
            raise ValueError(f"{who + ': ' if who else ''}`{name}` must be a positive finite number, got {v!r}")


def out_folder(who: str, out) -> pathlib.Path | None:
    """``out`` as an existing folder (created if needed), or None; a ``ValueError`` if it
    cannot be one. Called before any training, so that a run is never lost to its path."""
    if out is None:
        return None
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{who}: `out` ({out}) cannot be used as a folder: it exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{who}: `out` ({out}) cannot be used as a folder: {e}") from e
    return out


def plain_numbers(config) -> None:
    """Replace NumPy scalars (``np.int64(4)`` from ``np.arange``) in the fields of a frozen
    dataclass by Python numbers, so the configuration is JSON and a static JAX value."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, np.generic):
            object.__setattr__(config, f.name, value.item())
