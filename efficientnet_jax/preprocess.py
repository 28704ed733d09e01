"""Turn 0..255 images into the normalized inputs a variant's weights expect."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from efficientnet_jax.specs import ModelSpec, model_info


def preprocess(images, model: str | ModelSpec = "efficientnet_b0", dtype=jnp.float32):
    """(images - mean) / std with the variant's statistics (ImageNet for B*, 127/128 for Lite).

    ``images``: HWC or NHWC, RGB, values in 0..255 (uint8 or float). Returns NHWC ``dtype``.
    Resizing and cropping are left to the input pipeline.
    """
    spec = model_info(model) if isinstance(model, str) else model
    x = jnp.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be HWC or NHWC RGB with 3 channels, got shape {tuple(np.shape(images))}")
    mean = jnp.asarray(spec.mean, jnp.float32)
    std = jnp.asarray(spec.std, jnp.float32)
    return ((x.astype(jnp.float32) - mean) / std).astype(dtype)
