"""StableHLO through ``jax.export``: the model's own forward pass, weights embedded, the batch left symbolic.

The file is ``Exported.serialize()`` bytes; any JAX (same or newer, within JAX's compatibility window)
runs it without this package::

    exported = jax.export.deserialize(open("lite0.stablehlo", "rb").read())
    logits = exported.call(images)  # (N, H, W, 3) float32, normalized as the sidecar says
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from efficientnet_jax.model import EfficientNet


def depthwise_impl_for(platforms: Sequence[str]) -> str:
    """CPU-only files keep the tap-sum depthwise (XLA:CPU runs grouped convolutions at dense cost);
    a file for an accelerator gets XLA's grouped convolution, which every backend runs."""
    return "taps" if tuple(platforms) == ("cpu",) else "xla"


def stablehlo_bytes(model, variables: Mapping, image_size: int, batch: int | None,
                    platforms: Sequence[str] | None = None) -> tuple[bytes, tuple[str, ...]]:
    """``(serialized Exported, platforms it was lowered for)``; ``batch=None`` exports a symbolic batch 'b'."""
    platforms = tuple(platforms or (jax.default_backend(),))
    if isinstance(model, EfficientNet):
        # float32 whatever the run trained in: the file's input is float32 (the sidecar says so)
        model = model.clone(depthwise_impl=depthwise_impl_for(platforms), dtype=jnp.float32)
    variables = jax.tree.map(jnp.asarray, variables)

    def forward(images):
        # The weights are constants of the file; the barrier keeps XLA from constant-folding them (batch norm's
        # scale * rsqrt(var + eps) folded at compile time rounds differently from the same arithmetic at run
        # time), so the file computes what ``model.apply`` with the weights as arguments computes: measured on
        # B0 with calibrated random weights, 4e-7 relative to our logits with it and 2e-6 without.
        return model.apply(jax.lax.optimization_barrier(variables), images, train=False)

    if batch is None:
        shape = jax.export.symbolic_shape(f"b, {image_size}, {image_size}, 3")
    else:
        shape = (batch, image_size, image_size, 3)
    exported = jax.export.export(jax.jit(forward), platforms=platforms)(jax.ShapeDtypeStruct(shape, jnp.float32))
    return bytes(exported.serialize()), platforms
