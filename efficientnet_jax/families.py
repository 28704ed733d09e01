"""Other scalable families, MobileNetV2, ResNet-18 and ResNet-50, for testing whether compound scaling
transfers and as baselines.

Each takes ``depth`` and ``width`` multipliers as independent fields (resolution is
the input size), so every dimension can have its own φ. Channels and repeats are
scaled with EfficientNet's own rules (``round_filters``, ``round_repeats``) and at
1.0 each equals torchvision's model exactly (3,504,872, 11,689,512 and 25,557,032
parameters at 1000 classes). Same conventions as ``EfficientNet``: ``__call__(x, train=False,
features_only=False)``, BatchNorm statistics in 'batch_stats', ``num_classes=0``
returns pooled features.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from efficientnet_jax.layers import Conv1x1, DepthwiseConv, DepthwiseImpl, conv_init, dense_init
from efficientnet_jax.inputs import check_images
from efficientnet_jax.scaling import round_filters, round_repeats

# (expand ratio t, channels c, repeats n, stride s): Sandler et al. 2018, Table 2.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
# (channels, repeats, stride) of ResNet-18's BasicBlock stages (He et al. 2016, Table 1).
RESNET18_STAGES = ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))
# (bottleneck channels, repeats, stride) of ResNet-50; each block outputs 4x its bottleneck channels.
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
BOTTLENECK_EXPANSION = 4


def _conv(features: int, kernel: int, stride: int, name: str, dtype, param_dtype) -> nn.Conv:
    """k×k convolution with PyTorch's symmetric k//2 padding (the torchvision weights' convention)."""
    pad = kernel // 2
    return nn.Conv(
        features, (kernel, kernel), strides=stride, padding=[(pad, pad), (pad, pad)], use_bias=False,
        kernel_init=conv_init, dtype=dtype, param_dtype=param_dtype, name=name,
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1×1 -> depthwise 3×3 -> linear project 1×1, residual when shapes match."""

    out_channels: int
    expand_ratio: int
    stride: int
    norm: Any
    depthwise: Any
    conv1x1: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        inputs = x
        hidden = x.shape[-1] * self.expand_ratio
        if self.expand_ratio != 1:
            x = nn.relu6(self.norm(name="expand_bn")(self.conv1x1(hidden, name="expand_conv")(x), use_running_average=not train))
        x = nn.relu6(self.norm(name="dw_bn")(self.depthwise(3, self.stride, name="dw_conv")(x), use_running_average=not train))
        x = self.norm(name="project_bn")(self.conv1x1(self.out_channels, name="project_conv")(x), use_running_average=not train)
        if self.stride == 1 and inputs.shape[-1] == self.out_channels:
            x = x + inputs
        return x


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) with depth and width multipliers.

    Like torchvision, the 1280-channel head is width-scaled only when width > 1.
    """

    num_classes: int = 1000
    width: float = 1.0
    depth: float = 1.0
    dropout: float = 0.2
    bn_momentum: float = 0.9  # flax decay; PyTorch's momentum 0.1
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    depthwise_impl: DepthwiseImpl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, features_only: bool = False):
        check_images(x)
        norm = functools.partial(
            nn.BatchNorm, momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=self.param_dtype
        )
        conv1x1 = functools.partial(Conv1x1, dtype=self.dtype, param_dtype=self.param_dtype)
        depthwise = functools.partial(
            DepthwiseConv, padding="symmetric", impl=self.depthwise_impl, dtype=self.dtype, param_dtype=self.param_dtype
        )
        features = {}
        x = _conv(round_filters(32, self.width), 3, 2, "stem_conv", self.dtype, self.param_dtype)(x)
        x = nn.relu6(norm(name="stem_bn")(x, use_running_average=not train))
        features["stem"] = x
        for i, (t, c, n, s) in enumerate(MOBILENET_V2_STAGES, start=1):
            for j in range(round_repeats(n, self.depth)):
                x = InvertedResidual(
                    round_filters(c, self.width), t, s if j == 0 else 1, norm=norm, depthwise=depthwise,
                    conv1x1=conv1x1, name=f"stage{i}_block{j + 1}",
                )(x, train)
            features[f"stage{i}"] = x
        x = conv1x1(round_filters(1280, max(1.0, self.width)), name="head_conv")(x)
        x = nn.relu6(norm(name="head_bn")(x, use_running_average=not train))
        features["head"] = x
        if features_only:
            return features
        return _classifier(self, x, train)


class BasicBlock(nn.Module):
    """ResNet basic block: 3×3 -> 3×3, projection shortcut (1×1, strided) when the shape changes."""

    out_channels: int
    stride: int
    norm: Any
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = _conv(self.out_channels, 3, self.stride, "conv1", self.dtype, self.param_dtype)(x)
        y = nn.relu(self.norm(name="bn1")(y, use_running_average=not train))
        y = _conv(self.out_channels, 3, 1, "conv2", self.dtype, self.param_dtype)(y)
        y = self.norm(name="bn2")(y, use_running_average=not train)
        return nn.relu(y + _shortcut(self, x, train))


def _shortcut(block: nn.Module, x: jax.Array, train: bool) -> jax.Array:
    """Identity, or a strided 1×1 projection + BN (named down_conv / down_bn) when the shape changes."""
    if block.stride == 1 and x.shape[-1] == block.out_channels:
        return x
    # A 1×1 stride-s conv with no padding reads every s-th pixel: slice, then an einsum.
    x = x[:, :: block.stride, :: block.stride, :]
    x = Conv1x1(block.out_channels, dtype=block.dtype, param_dtype=block.param_dtype, name="down_conv")(x)
    return block.norm(name="down_bn")(x, use_running_average=not train)


class Bottleneck(nn.Module):
    """ResNet bottleneck, torchvision's "v1.5": 1×1 -> 3×3 (strided) -> 1×1 (×4 channels), projection shortcut.

    The stride sits on the 3×3, as in torchvision and most PyTorch weights (+0.5% top-1 over the
    original v1, which strides the first 1×1 and which Keras' ResNet50 implements).
    """

    channels: int  # of the bottleneck; the block outputs channels * BOTTLENECK_EXPANSION
    stride: int
    norm: Any
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def out_channels(self) -> int:
        return self.channels * BOTTLENECK_EXPANSION

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv1x1 = functools.partial(Conv1x1, dtype=self.dtype, param_dtype=self.param_dtype)
        y = nn.relu(self.norm(name="bn1")(conv1x1(self.channels, name="conv1")(x), use_running_average=not train))
        y = _conv(self.channels, 3, self.stride, "conv2", self.dtype, self.param_dtype)(y)
        y = nn.relu(self.norm(name="bn2")(y, use_running_average=not train))
        y = self.norm(name="bn3")(conv1x1(self.out_channels, name="conv3")(y), use_running_average=not train)
        return nn.relu(y + _shortcut(self, x, train))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) with depth and width multipliers (torchvision layout at 1.0)."""

    stages = RESNET18_STAGES
    block = BasicBlock

    num_classes: int = 1000
    width: float = 1.0
    depth: float = 1.0
    dropout: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, features_only: bool = False):
        check_images(x)
        norm = functools.partial(
            nn.BatchNorm, momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=self.param_dtype
        )
        features = {}
        x = _conv(round_filters(64, self.width), 7, 2, "stem_conv", self.dtype, self.param_dtype)(x)
        x = nn.relu(norm(name="stem_bn")(x, use_running_average=not train))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        features["stem"] = x
        for i, (c, n, s) in enumerate(self.stages, start=1):
            for j in range(round_repeats(n, self.depth)):
                x = self.block(
                    round_filters(c, self.width), s if j == 0 else 1, norm=norm, dtype=self.dtype,
                    param_dtype=self.param_dtype, name=f"stage{i}_block{j + 1}",
                )(x, train)
            features[f"stage{i}"] = x
        if features_only:
            return features
        return _classifier(self, x, train)


class ResNet50(ResNet18):
    """ResNet-50 (He et al. 2016) with depth and width multipliers: torchvision's layout (v1.5) at 1.0.

    Width scales the bottleneck channels (rounded by ``round_filters``); each block's output is
    exactly 4× its bottleneck, as at 1.0.
    """

    stages = RESNET50_STAGES
    block = Bottleneck


# The families by the names a training config uses (``config.model``); weights sources check names against it.
FAMILIES: dict[str, type[nn.Module]] = {"mobilenet_v2": MobileNetV2, "resnet18": ResNet18, "resnet50": ResNet50}


def _classifier(module: nn.Module, x: jax.Array, train: bool) -> jax.Array:
    """Global average pool -> dropout -> dense, or pooled features when num_classes is 0."""
    x = jnp.mean(x, axis=(1, 2))
    if module.num_classes == 0:
        return x
    x = nn.Dropout(module.dropout, deterministic=not train)(x)
    return nn.Dense(
        module.num_classes, kernel_init=dense_init, dtype=module.dtype, param_dtype=module.param_dtype,
        name="classifier",
    )(x)
