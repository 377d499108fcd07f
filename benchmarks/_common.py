"""Shared timing helpers for the benchmarks.

Protocol: every function is lowered and compiled ahead of time (compile time measured
separately), warmed up once, then timed on its compiled executable with
``block_until_ready`` after every call. Competing implementations are timed
interleaved in the same process (their order alternating from one repeat to the next),
and the median over repeats is reported, so that a background load on the machine hits
both sides alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from flowpost.engine import checkpoint


def block(tree):
    return jax.block_until_ready(tree)


def compile_fn(fn: Callable, *args) -> tuple[Callable, float]:
    """``(jax.jit(fn), seconds to trace, lower and compile it for args)``.

    The jitted function itself (not the ``Compiled`` object, whose calls go through
    Python) is returned, warmed up, so that timings use JAX's usual C++ dispatch path.
    """
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    jitted.lower(*args).compile()
    seconds = time.perf_counter() - t0
    block(jitted(*args))  # warm-up (and the dispatch cache)
    return jitted, seconds


def calls_per_repeat(fns: Sequence[Callable], args: Sequence[tuple], target_s: float) -> list[int]:
    """Enough calls of each function to fill about ``target_s`` seconds per repeat."""
    counts = []
    for fn, a in zip(fns, args):
        t0 = time.perf_counter()
        block(fn(*a))
        dt = max(time.perf_counter() - t0, 1e-6)
        counts.append(max(1, int(target_s / dt)))
    return counts


def time_interleaved(fns: Sequence[Callable], args: Sequence[tuple], repeats: int,
                     target_s: float = 0.2) -> list[float]:
    """Median seconds per call of each function, timed interleaved."""
    counts = calls_per_repeat(fns, args, target_s)
    samples: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    for r in range(repeats):
        for i in (order if r % 2 == 0 else order[::-1]):
            fn, a, n = fns[i], args[i], counts[i]
            t0 = time.perf_counter()
            for _ in range(n):
                block(fn(*a))
            samples[i].append((time.perf_counter() - t0) / n)
    return [statistics.median(s) for s in samples]


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
    }


def write_json(path: Path, payload: dict) -> None:
    """``payload`` as strict JSON (NaN / inf as null), the library's own writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(path, payload)
