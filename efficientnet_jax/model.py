"""EfficientNet: stem -> MBConv stages -> head -> pool -> dropout -> classifier."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from efficientnet_jax.blocks import MBConv
from efficientnet_jax.layers import (
    ACTIVATIONS, Conv1x1, DepthwiseConv, DepthwiseImpl, SqueezeExcite, conv_init, conv_padding, dense_init,
)
from efficientnet_jax.specs import MIN_RESOLUTION, ModelSpec, model_info


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
            f" It looks like NCHW; transpose with images.transpose(0, 2, 3, 1)."
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


class EfficientNet(nn.Module):
    """One EfficientNet from a ``ModelSpec``.

    ``__call__(x, train)`` returns logits (or pooled features when ``num_classes=0``);
    ``features_only=True`` returns the feature maps of the stem, every stage and the head,
    for use as a backbone. ``train=True`` needs a 'dropout' rng and a mutable 'batch_stats'.
    """

    spec: ModelSpec
    num_classes: int = 1000
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    depthwise_impl: DepthwiseImpl = "auto"
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, features_only: bool = False):
        check_images(x)
        spec = self.spec
        act = ACTIVATIONS[spec.activation]
        norm = functools.partial(
            nn.BatchNorm, momentum=spec.bn_momentum, epsilon=spec.bn_epsilon,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        conv1x1 = functools.partial(Conv1x1, dtype=self.dtype, param_dtype=self.param_dtype)
        depthwise = functools.partial(
            DepthwiseConv, padding=spec.padding, impl=self.depthwise_impl,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        squeeze_excite = functools.partial(
            SqueezeExcite, activation=act, dtype=self.dtype, param_dtype=self.param_dtype
        )
        block_cls = nn.remat(MBConv, static_argnums=(2,)) if self.remat else MBConv

        features = {}
        x = nn.Conv(
            spec.stem_channels, (3, 3), strides=2, use_bias=False,
            padding=[conv_padding(x.shape[d], 3, 2, spec.padding) for d in (1, 2)],
            kernel_init=conv_init, dtype=self.dtype, param_dtype=self.param_dtype, name="stem_conv",
        )(x)
        x = act(norm(name="stem_bn")(x, use_running_average=not train))
        features["stem"] = x
        for block in spec.blocks():
            x = block_cls(
                block, conv1x1=conv1x1, depthwise=depthwise, squeeze_excite=squeeze_excite,
                norm=norm, activation=act, name=block.name,
            )(x, train)
            features[f"stage{block.stage}"] = x
        x = conv1x1(spec.head_channels, name="head_conv")(x)
        x = act(norm(name="head_bn")(x, use_running_average=not train))
        features["head"] = x
        if features_only:
            return features
        x = jnp.mean(x, axis=(1, 2))
        if self.num_classes == 0:
            return x
        x = nn.Dropout(spec.dropout, deterministic=not train)(x)
        return nn.Dense(
            self.num_classes, kernel_init=dense_init, dtype=self.dtype,
            param_dtype=self.param_dtype, name="classifier",
        )(x)


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    depthwise_impl: DepthwiseImpl = "auto",
    remat: bool = False,
    **spec_overrides: Any,
) -> EfficientNet:
    """Build a named variant; keyword overrides change its spec.

    ``create_model('efficientnet_b0', width=w, depth=d, resolution=r)`` builds a new
    member of the family (see ``compound_scaling``); any ``ModelSpec`` field can be
    overridden the same way (``dropout``, ``drop_path``, ``padding``, ``bn_momentum``...).
    """
    spec = model_info(name)
    known = {f.name for f in dataclasses.fields(ModelSpec)}
    unknown = sorted(set(spec_overrides) - known)
    if unknown:
        raise TypeError(f"create_model got unknown options {unknown}; spec fields are {sorted(known)}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 returns pooled features), got {num_classes}")
    if spec_overrides:
        spec = dataclasses.replace(spec, **spec_overrides)
    return EfficientNet(
        spec=spec, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype,
        depthwise_impl=depthwise_impl, remat=remat,
    )
