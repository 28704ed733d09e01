"""PyTorch state dicts in the efficientnet-pytorch / efficientnet-lite-pytorch format -> our variables.

The map is one function from our variable paths to state-dict keys (``_blocks.{i}._depthwise_conv``
with a global block index ``i``), plus the layout transposes (OIHW -> HWIO, (out, in) -> (in, out)).
Those weights were trained with TF "SAME" padding, our default. This module never imports torch:
pass a dict of arrays (``torch.load(path, weights_only=True)`` or safetensors' ``load_file``).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from efficientnet_jax.model import create_model
from efficientnet_jax.weights.common import Path, WeightConversionError, fill, variables_skeleton

_TOP_LEVEL = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
              "classifier": "_fc"}
_IN_BLOCK = {
    ("expand_conv",): "_expand_conv", ("expand_bn",): "_bn0", ("dw_conv",): "_depthwise_conv", ("dw_bn",): "_bn1",
    ("se", "reduce"): "_se_reduce", ("se", "expand"): "_se_expand",
    ("project_conv",): "_project_conv", ("project_bn",): "_bn2",
}
_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
         ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_IGNORED_SUFFIXES = ("num_batches_tracked",)  # a PyTorch BN counter, not a weight


def torch_key(path: Path, block_index: Mapping[str, int]) -> str:
    """State-dict key of one of our variables."""
    collection, *modules, leaf = path
    if modules[0] in block_index:
        module = f"_blocks.{block_index[modules[0]]}.{_IN_BLOCK[tuple(modules[1:])]}"
    else:
        module = _TOP_LEVEL[modules[0]]
    return f"{module}.{_LEAF[(collection, leaf)]}"


def _to_ours(path: Path, value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:  # conv and depthwise: (O, I, H, W) -> (H, W, I, O)
        return np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:  # dense: (out, in) -> (in, out)
        return value.T
    return value


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def from_torch_state_dict(state_dict: Mapping[str, Any], model_name: str, **model_kwargs: Any) -> dict:
    """Variables for ``create_model(model_name)`` from an efficientnet-pytorch-format state dict.

    The class count is read from ``_fc``; a state dict without ``_fc`` converts to ``num_classes=0``.
    Any key left over or missing, and any shape mismatch, raises ``WeightConversionError``.
    """
    source = {k: _as_numpy(v) for k, v in state_dict.items() if not k.endswith(_IGNORED_SUFFIXES)}
    num_classes = source["_fc.weight"].shape[0] if "_fc.weight" in source else 0
    model = create_model(model_name, num_classes=num_classes, **model_kwargs)
    block_index = {block.name: i for i, block in enumerate(model.spec.blocks())}
    skeleton = variables_skeleton(model)
    keys = {path: torch_key(path, block_index) for path in skeleton}
    unused = sorted(set(source) - set(keys.values()))
    if unused:
        raise WeightConversionError(
            f"The state dict has {len(unused)} keys that {model_name} does not have: {unused[:12]}. "
            "Is model_name right, and is this the efficientnet-pytorch format (not timm's)?"
        )
    values = {path: _to_ours(path, source[key]) for path, key in keys.items() if key in source}
    return fill(skeleton, values, source=f"the PyTorch state dict for {model_name}")
