"""MBConv: expand 1x1 -> depthwise kxk -> squeeze-excite -> project 1x1 -> residual with drop path."""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

from efficientnet_jax.layers import DropPath
from efficientnet_jax.specs import BlockSpec


class MBConv(nn.Module):
    """Inverted residual block (Sandler et al. 2018) with squeeze-excitation (Tan & Le 2019).

    ``conv1x1``, ``depthwise``, ``squeeze_excite`` and ``norm`` are partials fixed by
    the model (dtype, padding, BN settings), so the block only wires them together.
    """

    block: BlockSpec
    conv1x1: Callable[..., nn.Module]
    depthwise: Callable[..., nn.Module]
    squeeze_excite: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    activation: Callable[[jax.Array], jax.Array]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b = self.block
        inputs = x
        if b.expand_ratio != 1:
            x = self.conv1x1(b.expanded_filters, name="expand_conv")(x)
            x = self.activation(self.norm(name="expand_bn")(x, use_running_average=not train))
        x = self.depthwise(b.kernel, b.stride, name="dw_conv")(x)
        x = self.activation(self.norm(name="dw_bn")(x, use_running_average=not train))
        if b.se_filters:
            x = self.squeeze_excite(b.se_filters, name="se")(x)
        x = self.conv1x1(b.out_filters, name="project_conv")(x)
        x = self.norm(name="project_bn")(x, use_running_average=not train)
        if b.has_residual:
            x = DropPath(b.drop_path, name="drop_path")(x, deterministic=not train) + inputs
        return x
