"""Several devices and hosts, on JAX's own distributed runtime (``jax.sharding``,
``jax.distributed``): data parallelism.

A trainer given ``devices=N`` builds a one-axis :class:`jax.sharding.Mesh` (``"data"``)
over ``N`` devices (:func:`mesh`). Its parameters, optimiser state and data are
replicated on every device (:func:`replicate`); inside the step, the arrays whose
leading axis is a batch (the draws of ``q`` at which the target is evaluated, the rows of
a minibatch) are constrained to be split along that axis (:func:`shard`). XLA's SPMD
partitioner then runs each device's share and all-reduces the gradient; the update is
the same on every device. The result is the single-device computation to floating-point
rounding (a sum split over devices is added in another order).

Several processes (hosts, or GPUs driven one per process) join with
:func:`initialize` (``jax.distributed.initialize``) before anything else; ``jax.devices()``
then lists every process's devices and the mesh spans them all. Every process runs the
same program on the same inputs (same key, same data); only process 0 writes files
(:func:`is_writer`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    cpu_collectives: str = "gloo",
) -> None:
    """Join a multi-process run (``jax.distributed.initialize``); call it first, in every
    process. On CPUs the collectives go through ``cpu_collectives`` (gloo). With no
    arguments JAX reads the cluster from its environment (SLURM, Open MPI, TPU pods)."""
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)  # used by CPU devices only
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


def mesh(devices, who: str = "fit") -> Mesh | None:
    """A one-axis mesh (``"data"``) over the first ``devices`` of ``jax.devices()`` (all
    processes'), or None for ``devices=None`` (one device, today's behaviour)."""
    if devices is None:
        return None
    from .._checks import as_ints

    (n,) = as_ints(who, devices=devices)
    available = jax.devices()
    if n > len(available):
        hint = (
            " On a CPU, start Python with XLA_FLAGS=--xla_force_host_platform_device_count=N to split it "
            "into N devices."
            if available[0].platform == "cpu"
            else ""
        )
        raise ValueError(f"{who}: devices={n} but JAX sees {len(available)} ({available[0].platform}).{hint}")
    return Mesh(np.array(available[:n]), (AXIS,))


def check_divisible(m: Mesh | None, size: int, what: str, who: str = "fit") -> None:
    """A clear error, before compiling, when ``size`` cannot be split evenly over the mesh."""
    if m is not None and size % m.size:
        raise ValueError(f"{who}: {what} ({size}) must be a multiple of devices ({m.size}) to be split over them")


def shard(x, m: Mesh | None):
    """``x`` constrained to be split along its leading axis over ``m`` (no-op without a mesh)."""
    if m is None:
        return x
    spec = PartitionSpec(AXIS, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(m, spec))


def replicate(tree, m: Mesh | None):
    """Every array of ``tree`` placed whole on every device of ``m`` (no-op without a mesh)."""
    if m is None:
        return tree
    sharding = NamedSharding(m, PartitionSpec())
    several = jax.process_count() > 1

    def one(a):
        if not isinstance(a, (np.ndarray, jax.Array)):
            return a  # static parts of a module (functions, settings)
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        if several:  # each process holds the same values: the global array is made from them
            return jax.make_array_from_process_local_data(sharding, np.asarray(a))
        return jax.device_put(a, sharding)

    return jax.tree.map(one, tree)


def to_host(tree):
    """NumPy copies of a (replicated) tree's arrays, in any number of processes: a
    replicated array that spans other processes' devices is read from this one's."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            a = a.addressable_data(0)
        return np.asarray(a)

    return jax.tree.map(one, tree)


def local(tree):
    """``tree`` with every array that spans other processes' devices replaced by this
    process's copy (the arrays are replicated), so that it can be used like a one-device
    result (sampling, saving)."""

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return a.addressable_data(0)
        return a

    return jax.tree.map(one, tree)


def is_writer() -> bool:
    """Whether this process writes files (process 0 of a multi-process run)."""
    return jax.process_index() == 0
