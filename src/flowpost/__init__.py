"""flowpost: normalizing-flow variational inference in JAX.

    import flowpost as fp
    result = fp.fit(fp.targets.get("eight_schools"), key=jax.random.key(0))

Submodules and names load on first use, so ``import flowpost`` (and the ``flowpost``
command's ``--help``) does not pay for JAX until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["engine", "flows", "vi", "targets", "Target", "fit", "load", "FitResult"]

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "engine": (".engine", None),
    "flows": (".flows", None),
    "vi": (".vi", None),
    "targets": (".vi", "targets"),
    "Target": (".vi", "Target"),
    "fit": (".vi", "fit"),
    "load": (".vi", "load"),
    "FitResult": (".vi", "FitResult"),
    # applications and data files, not the core
    "bnn": (".experiments.bnn", None),
    "vae": (".experiments.vae", None),
    "data": (".data", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'flowpost' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # what static tools (type checkers, the API docs) see
    from . import data, engine, flows, vi  # noqa: F401
    from .experiments import bnn, vae  # noqa: F401
    from .vi import targets
    from .vi.fit import fit
    from .vi.result import FitResult, load
    from .vi.target import Target
