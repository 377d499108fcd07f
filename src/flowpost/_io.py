"""Strict JSON output shared by the CLI and the experiments: files any JSON parser reads."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np


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


def write_json(path, value, indent: int | None = 2) -> None:
    """Write ``plain(value)`` as strict JSON (``allow_nan=False``) to ``path``."""
    pathlib.Path(path).write_text(json.dumps(plain(value), indent=indent, allow_nan=False) + "\n")
