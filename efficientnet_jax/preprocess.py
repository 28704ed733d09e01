"""Turn 0..255 images into the normalized inputs a variant's weights expect."""
from __future__ import annotations

import jax
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


def resize_and_center_crop(image, resolution: int, crop_pct: float, method: str = "bicubic"):
    """Eval preprocessing of the TF reference: resize the shorter side to resolution / crop_pct,
    then take the central resolution x resolution crop. ``image``: HWC, any dtype; returns float32."""
    x = jnp.asarray(image, jnp.float32)
    if x.ndim != 3:
        raise ValueError(f"image must be HWC, got shape {tuple(x.shape)}")
    h, w = x.shape[:2]
    scale = resolution / crop_pct / min(h, w)
    new_h, new_w = max(resolution, round(h * scale)), max(resolution, round(w * scale))
    x = jax.image.resize(x, (new_h, new_w, x.shape[2]), method=method, antialias=True)
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    return jnp.clip(x[top:top + resolution, left:left + resolution], 0.0, 255.0)
