"""Targets: an unnormalised log density on R^dim plus a map to the model's own space.

A :class:`Target` is what every fitting routine of :mod:`flowpost.vi` consumes. Its
``log_prob`` is defined on *unconstrained* vectors ``u`` of shape ``(dim,)`` and already
includes the log-Jacobian of ``constrain`` (so that ``exp(log_prob)`` is a density on
``R^dim``); ``constrain(u)`` returns the model's quantities as a dict of named arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_ints

Array = jax.Array


def _identity_constrain(u: Array) -> dict[str, Array]:
    return {"theta": u}


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
    """An unnormalised posterior on ``R^dim``.

    Args:
        log_prob: ``u (dim,) -> scalar``, the log density (up to a constant) of the
            unconstrained parameters, log-Jacobian of ``constrain`` included. Must be
            traceable by JAX (it is jitted, vmapped and differentiated).
        dim: the number of unconstrained parameters.
        constrain: ``u (dim,) -> dict[str, Array]``, the model's own quantities
            (constrained parameters, deterministic sites). Default: ``{"theta": u}``.
        names: optional flat names, one per entry of the flattened ``constrain`` output
            (e.g. ``["mu", "tau", "theta[0]", ...]``). Derived when not given. Without
            ``constrain``, ``dim`` names make each coordinate a quantity of its own
            (``constrain`` becomes ``u -> {names[i]: u[i]}``), so draws, summaries and
            ArviZ output use them.
        reference: optional reference posterior draws, flat name -> array ``(n,)``
            (the gold-standard draws of a posteriordb posterior, for instance).
        log_z: optional known log normalising constant of ``exp(log_prob)``.
        name: a label used in tables and file names.
        builtin: set by :func:`flowpost.targets.get` (``{"name": ..., "kwargs": {...}}``)
            so that :func:`flowpost.load` can rebuild a built-in target; leave it ``None``.
        rows: optional :class:`~flowpost.vi.subsample.Rows`: the log density is a sum over
            data rows and can be estimated from a batch of them, so :func:`flowpost.fit`
            subsamples (set by :func:`flowpost.targets.from_rows` and by
            :func:`flowpost.targets.from_numpyro` for a plate with ``subsample_size``).
    """

    log_prob: Callable[[Array], Array]
    dim: int
    constrain: Callable[[Array], Mapping[str, Array]] | None = None
    names: tuple[str, ...] | None = None
    reference: Mapping[str, np.ndarray] | None = None
    log_z: float | None = None
    name: str = "target"
    builtin: Mapping[str, Any] | None = None
    rows: Any = None

    def __post_init__(self):
        if not callable(self.log_prob):
            raise TypeError(f"Target: `log_prob` must be callable, got {type(self.log_prob).__name__}")
        check_ints("Target", dim=self.dim)
        object.__setattr__(self, "dim", int(self.dim))
        if self.constrain is not None and not callable(self.constrain):
            raise TypeError("Target: `constrain` must be callable or None")
        if self.names is not None:
            names = tuple(self.names) if not isinstance(self.names, str) else (self.names,)
            if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
                raise ValueError(f"Target: `names` must be distinct non-empty strings, got {names!r}")
            object.__setattr__(self, "names", names)
            if self.constrain is None and len(names) != self.dim:
                raise ValueError(
                    f"Target: {len(names)} `names` for dim {self.dim}: without `constrain`, give one "
                    "name per coordinate"
                )

    def to_model(self, u: Array) -> dict[str, Array]:
        """Model-space quantities of one unconstrained vector ``u (dim,)``."""
        if self.constrain is None:
            return _identity_constrain(u) if self.names is None else {n: u[i] for i, n in enumerate(self.names)}
        return dict(self.constrain(u))

    def flat_names(self) -> tuple[str, ...]:
        """Names of the flattened model-space quantities, 0-based as in ArviZ (``theta[0]``)."""
        return self._flat_names(jax.eval_shape(self.to_model, jax.ShapeDtypeStruct((self.dim,), jnp.float32)))

    def _flat_names(self, shapes) -> tuple[str, ...]:
        """:meth:`flat_names` from ``to_model``'s output shapes (name -> ``.shape``), for a
        caller that has traced ``to_model`` already."""
        derived = tuple(n for k, s in shapes.items() for n in flat_names(k, s.shape))
        if self.names is None:
            return derived
        if len(self.names) != len(derived):
            raise ValueError(
                f"Target {self.name!r}: {len(self.names)} `names` but `constrain` gives "
                f"{len(derived)} flattened quantities ({', '.join(derived[:6])}"
                f"{', ...' if len(derived) > 6 else ''})"
            )
        return self.names


def flat_names(name: str, shape: tuple[int, ...]) -> list[str]:
    """Flat names of an array quantity, 0-based as ArviZ numbers its coordinates:
    ``theta[0]``, ``theta[1,0]``... (a scalar keeps its name)."""
    if len(shape) == 0:
        return [name]
    idx = np.stack(np.unravel_index(np.arange(int(np.prod(shape))), shape), axis=1)
    return [f"{name}[{','.join(str(int(i)) for i in row)}]" for row in idx]


def flatten_draws(draws: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{name: (n, *shape)}`` -> ``{flat_name: (n,)}`` (names 0-based, as in ArviZ: ``theta[0]``)."""
    out: dict[str, np.ndarray] = {}
    for k, v in draws.items():
        v = np.asarray(v)
        shape = v.shape[1:]
        flat = v.reshape(v.shape[0], -1)
        for j, n in enumerate(flat_names(k, shape)):
            out[n] = flat[:, j]
    return out
