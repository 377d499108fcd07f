"""Built-in targets, by name, and NumPyro models as targets.

    get("eight_schools")          # a posteriordb posterior (full name or short alias)
    get("funnel", dim=10)         # toy targets take keyword arguments
    names()                       # every registered name (canonical, not aliases)
    from_numpyro(model, *args, **kwargs)
    from_rows(log_lik, data, dim, log_prior=...)   # a per-row likelihood: fit subsamples it

Toy and 2-D targets: :mod:`.builtin`; posteriordb: :mod:`.posteriordb`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable

from ..target import Target
from . import builtin, posteriordb
from .rows import from_rows

__all__ = ["Target", "get", "names", "aliases", "from_numpyro", "from_rows"]

_REGISTRY = {
    **{f"u{i}": functools.partial(builtin.energy, f"u{i}") for i in range(1, 5)},
    "banana": builtin.banana,
    "funnel": builtin.funnel,
    "mixture": builtin.mixture,
    "gaussian": builtin.gaussian,
    "german_credit": builtin.german_credit,
    **{n: functools.partial(posteriordb.posterior, n) for n in posteriordb.POSTERIORS},
}
_ALIASES = dict(posteriordb.ALIASES)


def names() -> list[str]:
    """Canonical names of the built-in targets (``get`` also accepts the posteriordb aliases)."""
    return list(_REGISTRY)


def aliases() -> dict[str, str]:
    """Short alias -> canonical name (e.g. ``"eight_schools"`` -> the posteriordb name)."""
    return dict(_ALIASES)


def get(name: str, **kwargs) -> Target:
    """The built-in target ``name`` (see :func:`names`), built with ``kwargs``.

    Raises:
        ValueError: unknown name (close matches are suggested).
        TypeError: a keyword the target does not take (its accepted keywords are listed).
    """
    if not isinstance(name, str):
        raise TypeError(f"targets.get: `name` must be a str, got {type(name).__name__}")
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        near = difflib.get_close_matches(name, list(_REGISTRY) + list(_ALIASES), n=3)
        hint = f" Did you mean {near}?" if near else ""
        raise ValueError(f"targets.get: unknown target {name!r}.{hint} Known: {names()} (aliases {sorted(_ALIASES)})")
    make: Callable[..., Target] = _REGISTRY[key]  # type: ignore[assignment]
    params = inspect.signature(make).parameters
    bad = [k for k in kwargs if k not in params]
    if bad:
        raise TypeError(f"targets.get({name!r}): unexpected keyword(s) {bad}; it takes {list(params) or 'none'}")
    return dataclasses.replace(make(**kwargs), builtin={"name": key, "kwargs": dict(kwargs)})


def from_numpyro(model, *args, **kwargs) -> Target:
    """The posterior of a NumPyro model as a Target; see :func:`.numpyro.from_numpyro`."""
    from .numpyro import from_numpyro as _from_numpyro

    return _from_numpyro(model, *args, **kwargs)
