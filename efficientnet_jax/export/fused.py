"""The format-neutral network: a spec and its variables as a plain list of fused layers with numpy weights.

Every graph emitter (ONNX, TFLite) walks this list, so the decisions that make an export exact are taken
once, here: batch norm folded into the preceding convolution (in float64), TF "SAME" padding resolved to
explicit (before, after) pads for the image size being exported (the odd pixel goes after, which
converters that only know symmetric padding get wrong), depthwise kernels as grouped convolutions.
The list is built for one image size because "SAME" pads depend on it; the batch stays free.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Union

import numpy as np

from efficientnet_jax.layers import conv_padding
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.specs import BlockSpec


@dataclasses.dataclass(frozen=True)
class Conv:
    """Convolution + bias (+ activation). ``weight`` is HWIO: (k, k, in / groups, out)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int = 1
    pads: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))  # (top, bottom), (left, right)
    groups: int = 1  # == channels for a depthwise convolution
    activation: str | None = None  # 'swish', 'relu6', 'relu', 'sigmoid' or None

    @property
    def kernel(self) -> int:
        return self.weight.shape[0]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[-1]


@dataclasses.dataclass(frozen=True)
class SqueezeExcite:
    """x * sigmoid(expand(act(reduce(mean over H, W of x)))); ``expand`` carries the sigmoid."""

    reduce: Conv
    expand: Conv


@dataclasses.dataclass(frozen=True)
class Residual:
    """x + layers(x): a block that keeps its shape (drop path is the identity at inference)."""

    layers: tuple["Layer", ...]


@dataclasses.dataclass(frozen=True)
class GlobalPool:
    """Mean over H and W: (N, H, W, C) -> (N, C)."""


@dataclasses.dataclass(frozen=True)
class Dense:
    """(N, C) @ weight (C, classes) + bias."""

    weight: np.ndarray
    bias: np.ndarray


Layer = Union[Conv, SqueezeExcite, Residual, GlobalPool, Dense]


@dataclasses.dataclass(frozen=True)
class FusedNetwork:
    """What an emitter needs: the layers, the input size they were resolved for, and the output width."""

    layers: tuple[Layer, ...]
    image_size: int
    num_outputs: int  # classes, or the pooled feature width when the model has no head


def _conv_bn(params: Mapping, stats: Mapping, conv: str, bn: str, epsilon: float, *, stride: int,
             size: tuple[int, int], padding: str, activation: str | None, depthwise: bool = False) -> Conv:
    """``conv`` followed by the batch norm ``bn`` as one convolution with a bias (inference statistics)."""
    kernel = np.asarray(params[conv]["kernel"], np.float64)
    scale = np.asarray(params[bn]["scale"], np.float64) / np.sqrt(np.asarray(stats[bn]["var"], np.float64) + epsilon)
    bias = np.asarray(params[bn]["bias"], np.float64) - np.asarray(stats[bn]["mean"], np.float64) * scale
    groups = kernel.shape[-1] if depthwise else 1  # flax's depthwise kernel is (k, k, 1, C): C groups of one
    k = kernel.shape[0]
    pads = tuple(conv_padding(s, k, stride, padding) for s in size)
    return Conv(weight=(kernel * scale).astype(np.float32), bias=bias.astype(np.float32), stride=stride,
                pads=pads, groups=groups, activation=activation)


def _dense_conv(params: Mapping, name: str, activation: str) -> Conv:
    return Conv(weight=np.asarray(params[name]["kernel"], np.float32),
                bias=np.asarray(params[name]["bias"], np.float32), activation=activation)


def _squeeze_excite(params: Mapping, act: str) -> SqueezeExcite:
    return SqueezeExcite(_dense_conv(params, "reduce", act), _dense_conv(params, "expand", "sigmoid"))


def _out_size(size: tuple[int, int], conv: Conv) -> tuple[int, int]:
    return tuple((s + sum(p) - conv.kernel) // conv.stride + 1 for s, p in zip(size, conv.pads))


def _block(block: BlockSpec, params: Mapping, stats: Mapping, size: tuple[int, int], *, epsilon: float,
           padding: str, act: str) -> tuple[list[Layer], tuple[int, int]]:
    """One MBConv / Fused-MBConv block as fused layers, and the spatial size after it."""
    p, s = params[block.name], stats.get(block.name, {})
    fuse = dict(epsilon=epsilon, padding=padding)
    layers: list[Layer] = []
    if block.block == "fused_mbconv":
        if block.expand_ratio != 1:
            layers.append(_conv_bn(p, s, "expand_conv", "expand_bn", stride=block.stride, size=size,
                                   activation=act, **fuse))
            size = _out_size(size, layers[-1])
            if block.se_filters:
                layers.append(_squeeze_excite(p["se"], act))
            layers.append(_conv_bn(p, s, "project_conv", "project_bn", stride=1, size=size, activation=None, **fuse))
        else:
            layers.append(_conv_bn(p, s, "project_conv", "project_bn", stride=block.stride, size=size,
                                   activation=act, **fuse))
            size = _out_size(size, layers[-1])
    else:
        if block.expand_ratio != 1:
            layers.append(_conv_bn(p, s, "expand_conv", "expand_bn", stride=1, size=size, activation=act, **fuse))
        layers.append(_conv_bn(p, s, "dw_conv", "dw_bn", stride=block.stride, size=size, activation=act,
                               depthwise=True, **fuse))
        size = _out_size(size, layers[-1])
        if block.se_filters:
            layers.append(_squeeze_excite(p["se"], act))
        layers.append(_conv_bn(p, s, "project_conv", "project_bn", stride=1, size=size, activation=None, **fuse))
    if block.has_residual:
        return [Residual(tuple(layers))], size
    return layers, size


def fuse_network(model: EfficientNet, variables: Mapping, image_size: int) -> FusedNetwork:
    """``model`` with ``variables`` (unrolled layout, as ``create_model`` builds them) as fused layers
    for square ``image_size`` inputs. Inference only: dropout and drop path are the identity."""
    spec = model.spec
    params, stats = variables["params"], variables.get("batch_stats", {})
    act = spec.activation
    fuse = dict(epsilon=spec.bn_epsilon, padding=spec.padding)
    size = (image_size, image_size)
    layers: list[Layer] = [_conv_bn(params, stats, "stem_conv", "stem_bn", stride=2, size=size, activation=act,
                                    **fuse)]
    size = _out_size(size, layers[0])
    for block in spec.blocks():
        block_layers, size = _block(block, params, stats, size, act=act, **fuse)
        layers.extend(block_layers)
    layers.append(_conv_bn(params, stats, "head_conv", "head_bn", stride=1, size=size, activation=act, **fuse))
    layers.append(GlobalPool())
    outputs = spec.head_channels
    if model.num_classes:
        layers.append(Dense(np.asarray(params["classifier"]["kernel"], np.float32),
                            np.asarray(params["classifier"]["bias"], np.float32)))
        outputs = model.num_classes
    return FusedNetwork(tuple(layers), image_size, outputs)


def reference_forward(network: FusedNetwork, x: np.ndarray) -> np.ndarray:
    """The fused network in float64 numpy (slow; for tests of the fusion itself)."""
    def conv(layer: Conv, h: np.ndarray) -> np.ndarray:
        h = np.pad(h, ((0, 0), *layer.pads, (0, 0)))
        k, s = layer.kernel, layer.stride
        out_h, out_w = (h.shape[1] - k) // s + 1, (h.shape[2] - k) // s + 1
        w = layer.weight.astype(np.float64)
        out = np.zeros((h.shape[0], out_h, out_w, layer.out_channels))
        for i in range(k):
            for j in range(k):
                tap = h[:, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s, :]
                out += tap * w[i, j, 0] if layer.groups > 1 else tap @ w[i, j]
        return activate(out + layer.bias, layer.activation)

    def run(layers, h):
        for layer in layers:
            if isinstance(layer, Conv):
                h = conv(layer, h)
            elif isinstance(layer, SqueezeExcite):
                g = conv(layer.expand, conv(layer.reduce, h.mean(axis=(1, 2), keepdims=True)))
                h = h * g
            elif isinstance(layer, Residual):
                h = h + run(layer.layers, h)
            elif isinstance(layer, GlobalPool):
                h = h.mean(axis=(1, 2))
            else:
                h = h @ layer.weight.astype(np.float64) + layer.bias
        return h

    return run(network.layers, np.asarray(x, np.float64))


def activate(x: np.ndarray, activation: str | None) -> np.ndarray:
    if activation == "swish":
        return x / (1.0 + np.exp(-x))
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if activation == "relu6":
        return np.clip(x, 0.0, 6.0)
    if activation == "relu":
        return np.maximum(x, 0.0)
    return x
