"""The one mesh of the training program, where the train state lives on it, and how host batches become
global arrays on it.

Two axes over every device of every process: ``data`` x ``fsdp`` = (devices / fsdp, fsdp). The batch is
split along its first dimension over both. With ``fsdp=1`` (the default) the state is replicated: pure data
parallelism. With ``fsdp=N`` each large array of the state (parameters, optimizer state, EMA) is split
into N pieces along its largest dimension that N divides, so a device holds about 1/N of the state; XLA
inserts the all-gathers before the arrays are used and reduce-scatters their gradients (no ``shard_map``).
Both axes are Auto (not jax's default Explicit), so XLA's partitioner propagates the shardings through
every op (the reshapes of gradient accumulation included) without sharding annotations inside the model.
"""
from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
# Arrays below this many elements stay replicated: splitting them saves little memory and costs one
# collective each (biases, BN scales and statistics, a small head).
MIN_SHARDED_SIZE = 2**14


def make_mesh(fsdp: int = 1) -> Mesh:
    """The ``data`` x ``fsdp`` mesh over ``jax.devices()`` (all processes), shape (devices / fsdp, fsdp).

    ``jax.make_mesh`` orders the devices so that an ``fsdp`` group is as close as the topology allows (the
    devices of one host before another's), which keeps the frequent state gathers on the fastest links."""
    devices = jax.device_count()
    if fsdp < 1 or devices % fsdp:
        divisors = [n for n in range(1, devices + 1) if devices % n == 0]
        raise ValueError(f"config.fsdp={fsdp} must divide the {devices} devices; use one of {divisors}")
    return jax.make_mesh((devices // fsdp, fsdp), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (metrics, small state arrays, the whole state with fsdp=1)."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (batch) dimension split over every device (``data`` x ``fsdp``)."""
    return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = MIN_SHARDED_SIZE) -> P:
    """Where an array of ``shape`` lives: split over ``fsdp`` along its largest dimension that ``fsdp``
    divides (ties: the leading one), or replicated (``P()``) when ``fsdp`` is 1, the array has fewer than
    ``min_size`` elements, or no dimension divides."""
    if fsdp == 1 or math.prod(shape) < min_size:
        return P()
    candidates = [(-n, i) for i, n in enumerate(shape) if n % fsdp == 0]
    if not candidates:
        return P()
    dim = min(candidates)[1]
    return P(*(None,) * dim, FSDP_AXIS)


def state_shardings(abstract_state, mesh: Mesh, min_size: int = MIN_SHARDED_SIZE):
    """A ``NamedSharding`` for every leaf of ``abstract_state`` (arrays or ``ShapeDtypeStruct``s, e.g. from
    ``jax.eval_shape``) by ``fsdp_spec``: the jit in/out shardings of the train state. Parameters, their
    optimizer slots and their EMA copies have the same shapes, so they are split alike."""
    fsdp = mesh.shape[FSDP_AXIS]
    return jax.tree.map(lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), fsdp, min_size)),
                        abstract_state)


def device_bytes(abstract_state, shardings) -> int:
    """Bytes of ``abstract_state`` one device holds under ``shardings`` (its shard of each leaf), computed
    from shapes alone: nothing is allocated."""
    return sum(math.prod(sharding.shard_shape(tuple(leaf.shape))) * np.dtype(leaf.dtype).itemsize
               for leaf, sharding in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(shardings)))


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """Global arrays from this process's part of each batch entry (``make_array_from_process_local_data``):
    with several processes, each passes its own rows and the result holds all of them."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
