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


def composite_over_white(rgb, alpha):
    """Transparent pixels over a white background: the one rule for alpha in training, evaluation and
    ``predict`` (a model never sees the colour a transparent pixel happens to store).

    ``rgb`` (..., 3) and ``alpha`` (..., 1): float arrays in 0..255 of any array library with arithmetic
    operators (numpy, jax, TensorFlow); returns float in 0..255, to be rounded by the caller.
    """
    opacity = alpha / 255.0
    return rgb * opacity + 255.0 * (1.0 - opacity)


def center_crop_window(height: int, width: int, crop_pct: float) -> tuple[int, int, int]:
    """``(top, left, size)`` of the reference's square eval crop: ``crop_pct`` of the short side, centred
    (the rule of the training program's eval crop, ``train.augment.center_crop``)."""
    size = max(1, int(crop_pct * min(height, width)))
    return (height - size + 1) // 2, (width - size + 1) // 2, size


def resize_and_center_crop(image, resolution: int, crop_pct: float, method: str = "bicubic"):
    """Eval preprocessing of the TF reference: the central square of ``crop_pct`` of the shorter side,
    resized to resolution x resolution. ``image``: HWC, any dtype; returns float32.

    The crop is taken in the source's pixels before resizing, so the cost is bounded by the crop
    (at most the short side squared) and the output, whatever the aspect ratio: resizing the short side
    first would turn a 1 x 3000 image into a 256 x 768,000 array. An extreme aspect ratio gives a tiny
    crop (1 x 1 for a 1 x N image), upsampled: a uniform image, which is all such an input holds.
    """
    array = np.asarray(image)
    if array.ndim != 3:
        raise ValueError(f"image must be HWC, got shape {tuple(array.shape)}")
    top, left, size = center_crop_window(array.shape[0], array.shape[1], crop_pct)
    x = jnp.asarray(array[top:top + size, left:left + size], jnp.float32)
    x = jax.image.resize(x, (resolution, resolution, x.shape[2]), method=method, antialias=True)
    return jnp.clip(x, 0.0, 255.0)
