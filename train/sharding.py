"""The one mesh of the training program and how host batches become global arrays on it.

One ``data`` axis over every device of every process: the state is replicated, each batch is
split along its first dimension. The axis is Auto (not jax's default Explicit), so XLA's
partitioner propagates the batch sharding through every op (the reshapes of gradient
accumulation included) without sharding annotations inside the model.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh() -> Mesh:
    """A 1-D mesh, axis ``data``, over ``jax.devices()`` (all processes)."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (the train state)."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (batch) dimension split over ``data``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """Global arrays from this process's part of each batch entry (``make_array_from_process_local_data``):
    with several processes, each passes its own rows and the result holds all of them."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
