"""What every network here accepts: NHWC float images of at least 32 pixels, checked with clear errors.

Its own module so that EfficientNet and the other families (``families.py``) share it without
one network module depending on another.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from efficientnet_jax.specs import MIN_RESOLUTION


def check_images(x: Any, in_channels: int = 3) -> None:
    """Raise a clear error for inputs the network cannot take (works on tracers: shapes are static)."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"images must be an array of shape (batch, height, width, {in_channels}), got {type(x).__name__}")
    if len(shape) != 4:
        hint = " Add a batch axis: images[None]." if len(shape) == 3 else ""
        raise ValueError(
            f"images must have rank 4 (batch, height, width, {in_channels}) in NHWC layout, got shape {tuple(shape)}.{hint}"
        )
    if shape[-1] != in_channels:
        hint = (
            " It looks like NCHW; transpose with images.transpose(0, 2, 3, 1)."
            if shape[1] == in_channels else ""
        )
        raise ValueError(
            f"images must have {in_channels} channels in the last axis (NHWC), got shape {tuple(shape)}.{hint}"
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"images must be floating point and normalized ((x - mean) / std, see model_info(name).mean/.std "
            f"or efficientnet_jax.preprocess), got dtype {dtype}"
        )
    if min(shape[1], shape[2]) < MIN_RESOLUTION:
        raise ValueError(
            f"images are {shape[1]}x{shape[2]}, too small for a network with total stride 32: "
            f"height and width must be at least {MIN_RESOLUTION} pixels"
        )
