"""The two blocks of the family: MBConv (every EfficientNet) and Fused-MBConv (EfficientNetV2's early stages).

Both take partials fixed by the model (dtype, padding, BN settings) for their convolutions and
norms, so a block only wires them together, and both end in the same residual with drop path.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import flax.linen as nn
import jax

from efficientnet_jax.layers import drop_path
from efficientnet_jax.specs import BlockSpec

Drop = Optional[tuple[Union[float, jax.Array], jax.Array]]  # (keep probability, rng key), or None: keep all


def add_residual(block: BlockSpec, x: jax.Array, inputs: jax.Array, drop: Drop) -> jax.Array:
    """Drop path + skip when the block keeps the shape (stride 1, same channels); else ``x``.

    ``drop`` comes from the model (None in eval mode or at rate 0), which derives the key from the block's
    global index, so unrolled and scanned stages drop the same examples."""
    if not block.has_residual:
        return x
    return (x if drop is None else drop_path(x, *drop)) + inputs


class Block(nn.Module):
    """What every block is given: its spec, and the layer factories the model fixed (dtype, padding, BN)."""

    block: BlockSpec
    conv: Callable[..., nn.Module]
    conv1x1: Callable[..., nn.Module]
    depthwise: Callable[..., nn.Module]
    squeeze_excite: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    activation: Callable[[jax.Array], jax.Array]


class MBConv(Block):
    """Inverted residual block (Sandler et al. 2018) with squeeze-excitation (Tan & Le 2019):
    expand 1x1 -> depthwise k x k -> squeeze-excite -> project 1x1 (the projection applies the gate)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, drop: Drop = None) -> jax.Array:
        b = self.block
        inputs = x
        if b.expand_ratio != 1:
            x = self.conv1x1(b.expanded_filters, name="expand_conv")(x)
            x = self.norm(name="expand_bn", activation=self.activation)(x, use_running_average=not train)
        x = self.depthwise(b.kernel, b.stride, name="dw_conv")(x)
        x = self.norm(name="dw_bn", activation=self.activation)(x, use_running_average=not train)
        gate = self.squeeze_excite(b.se_filters, name="se")(x) if b.se_filters else None
        x = self.conv1x1(b.out_filters, name="project_conv")(x, gate=gate)
        x = self.norm(name="project_bn")(x, use_running_average=not train)
        return add_residual(b, x, inputs, drop)


class FusedMBConv(Block):
    """Fused-MBConv (Tan & Le 2021): one k x k (strided) conv replaces MBConv's expand 1x1 + depthwise,
    which runs faster on accelerators in early, high-resolution stages. Expansion e > 1: k x k conv to
    in*e channels, BN, act, then a 1x1 projection and BN; e = 1: the k x k conv to the output channels,
    BN and act only. Names follow Keras (``expand_conv``, ``project_conv``) so the converters map 1:1."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, drop: Drop = None) -> jax.Array:
        b = self.block
        inputs = x
        if b.expand_ratio != 1:
            x = self.conv(b.expanded_filters, b.kernel, b.stride, name="expand_conv")(x)
            x = self.norm(name="expand_bn", activation=self.activation)(x, use_running_average=not train)
            gate = self.squeeze_excite(b.se_filters, name="se")(x) if b.se_filters else None
            x = self.conv1x1(b.out_filters, name="project_conv")(x, gate=gate)
            x = self.norm(name="project_bn")(x, use_running_average=not train)
        else:
            x = self.conv(b.out_filters, b.kernel, b.stride, name="project_conv")(x)
            x = self.norm(name="project_bn", activation=self.activation)(x, use_running_average=not train)
        return add_residual(b, x, inputs, drop)


BLOCKS: dict[str, type[Block]] = {"mbconv": MBConv, "fused_mbconv": FusedMBConv}
