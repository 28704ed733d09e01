"""EfficientNet and EfficientNetV2: stem -> MBConv / Fused-MBConv stages -> head -> pool -> dropout -> classifier."""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.blocks import BLOCKS
from efficientnet_jax.inputs import check_images
from efficientnet_jax.scan import scan_name
from efficientnet_jax.layers import (
    ACTIVATIONS, BatchNorm, Conv, Conv1x1, DepthwiseConv, DepthwiseImpl, SqueezeExcite, dense_init,
)
from efficientnet_jax.specs import MIN_RESOLUTION, ModelSpec, StageSpec, model_info


class EfficientNet(nn.Module):
    """One EfficientNet (V1, Lite or V2) from a ``ModelSpec``.

    ``__call__(x, train)`` returns logits (or pooled features when ``num_classes=0``);
    ``features_only=True`` returns the feature maps of the stem, every stage and the head,
    for use as a backbone. ``train=True`` needs a 'dropout' rng and a mutable 'batch_stats'.

    ``scan_blocks=True`` runs each stage's blocks 2..N (equal shapes) as one ``nn.scan``, their variables
    stacked under ``stageS_scan`` (see ``efficientnet_jax.scan``): the same function, compiled once per
    stage instead of once per block. ``remat`` recomputes each block's activations in the backward pass.
    """

    spec: ModelSpec
    num_classes: int = 1000
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    depthwise_impl: DepthwiseImpl = "auto"
    remat: bool = False
    scan_blocks: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, features_only: bool = False):
        check_images(x)
        spec = self.spec
        act = ACTIVATIONS[spec.activation]
        norm = functools.partial(
            BatchNorm, momentum=spec.bn_momentum, epsilon=spec.bn_epsilon,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        conv = functools.partial(Conv, padding=spec.padding, dtype=self.dtype, param_dtype=self.param_dtype)
        conv1x1 = functools.partial(Conv1x1, dtype=self.dtype, param_dtype=self.param_dtype)
        depthwise = functools.partial(
            DepthwiseConv, padding=spec.padding, impl=self.depthwise_impl,
            dtype=self.dtype, param_dtype=self.param_dtype,
        )
        squeeze_excite = functools.partial(
            SqueezeExcite, activation=act, dtype=self.dtype, param_dtype=self.param_dtype
        )
        block_classes = {kind: nn.remat(cls, static_argnums=(2,)) if self.remat else cls
                         for kind, cls in BLOCKS.items()}
        factories = dict(conv=conv, conv1x1=conv1x1, depthwise=depthwise, squeeze_excite=squeeze_excite,
                         norm=norm, activation=act)
        # One key for all drop-path masks; each block folds in its global index, in either layout.
        drop_key = self.make_rng("dropout") if train and spec.drop_path > 0 else None

        features = {}
        x = conv(spec.stem_channels, 3, 2, name="stem_conv")(x)
        x = norm(name="stem_bn", activation=act)(x, use_running_average=not train)
        features["stem"] = x
        blocks = spec.blocks()
        position = 0
        for stage in range(1, len(spec.stages) + 1):
            stage_blocks = [b for b in blocks if b.stage == stage]
            if not stage_blocks:
                continue
            unrolled = stage_blocks[:1] if self.scan_blocks else stage_blocks
            for block in unrolled:
                drop = None if drop_key is None or block.drop_path == 0 else (
                    1.0 - block.drop_path, jax.random.fold_in(drop_key, position))
                x = block_classes[block.block](block, **factories, name=block.name)(x, train, drop)
                position += 1
            repeated = stage_blocks[len(unrolled):]
            if repeated:
                x = self._scan(block_classes[repeated[0].block](repeated[0], **factories, name=scan_name(stage)),
                               x, train, repeated, drop_key, position)
                position += len(repeated)
            features[f"stage{stage}"] = x
        x = conv1x1(spec.head_channels, name="head_conv")(x)
        x = norm(name="head_bn", activation=act)(x, use_running_average=not train)
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

    @staticmethod
    def _scan(block: nn.Module, x: jax.Array, train: bool, repeated: list, drop_key, position: int) -> jax.Array:
        """``repeated`` (blocks of one shape) as one ``nn.scan`` over the stacked variables of ``block``;
        each step gets its own keep probability and drop-path key, as the unrolled block would."""
        if drop_key is None:
            drops = None
        else:  # Python floats -> the default float dtype, rounded once, as the unrolled block's Python float
            keeps = jnp.asarray(np.array([1.0 - b.drop_path for b in repeated]))
            keys = jax.vmap(lambda i: jax.random.fold_in(drop_key, i))(
                jnp.arange(position, position + len(repeated), dtype=jnp.uint32))
            drops = (keeps, keys)

        def step(module, carry, drop):
            return module(carry, train, drop), None

        scan = nn.scan(step, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                       length=len(repeated))
        return scan(block, x, drops)[0]


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def check_spec(spec: ModelSpec) -> None:
    """Raise a clear error, naming the field, for a spec the network cannot be built from."""
    def bad(field: str, expected: str):
        raise ValueError(f"{field} must be {expected}, got {getattr(spec, field)!r} (model {spec.name})")

    for field in ("width", "depth"):
        if not (_is_number(getattr(spec, field)) and getattr(spec, field) > 0):
            bad(field, "a positive finite number (1.0 is the base network; see compound_scaling)")
    if not (_is_int(spec.resolution) and spec.resolution >= MIN_RESOLUTION):
        bad("resolution", f"an integer of at least {MIN_RESOLUTION} pixels (the network has stride 32)")
    for field in ("dropout", "drop_path"):
        if not (_is_number(getattr(spec, field)) and 0 <= getattr(spec, field) < 1):
            bad(field, "a rate in [0, 1)")
    if not (_is_number(spec.bn_momentum) and 0 <= spec.bn_momentum <= 1):
        bad("bn_momentum", "in [0, 1] (Flax's decay convention: 0.99 keeps 99% of the running statistics)")
    if not (_is_number(spec.bn_epsilon) and spec.bn_epsilon > 0):
        bad("bn_epsilon", "a positive number (1e-3 in the TF reference)")
    if spec.padding not in ("same", "symmetric"):
        bad("padding", "'same' (TF) or 'symmetric' (PyTorch-style)")
    if spec.activation not in ACTIVATIONS:
        bad("activation", f"one of {sorted(ACTIVATIONS)}")
    for field in ("stem_filters", "head_filters"):
        value = getattr(spec, field)
        if not (_is_int(value) and value > 0):
            bad(field, "a positive integer")
    if not (isinstance(spec.stages, tuple) and spec.stages and all(isinstance(s, StageSpec) for s in spec.stages)):
        bad("stages", "a non-empty tuple of StageSpec")
    if any(s.block not in BLOCKS for s in spec.stages):
        bad("stages", f"StageSpec rows whose block is one of {sorted(BLOCKS)}")
    if not (_is_number(spec.round_limit) and 0 <= spec.round_limit <= 1):
        bad("round_limit", "a fraction in [0, 1] (0.9 for EfficientNet, 0 for EfficientNetV2)")
    if spec.uncropped_from is not None and not _is_int(spec.uncropped_from):
        bad("uncropped_from", "None or an integer resolution")
    for field in ("mean", "std"):
        value = getattr(spec, field)
        if not (isinstance(value, (tuple, list)) and len(value) == 3 and all(_is_number(v) for v in value)):
            bad(field, "three finite numbers, one per RGB channel")
    if min(spec.std) <= 0:
        bad("std", "positive in every channel")


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    depthwise_impl: DepthwiseImpl = "auto",
    remat: bool = False,
    scan_blocks: bool = False,
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
    if not _is_int(num_classes) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0 (0 returns pooled features), got {num_classes!r}")
    if spec_overrides:
        spec = dataclasses.replace(spec, **spec_overrides)
        check_spec(spec)
    return EfficientNet(
        spec=spec, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype,
        depthwise_impl=depthwise_impl, remat=remat, scan_blocks=scan_blocks,
    )
