"""PyTorch state dicts in the efficientnet-pytorch / efficientnet-lite-pytorch format -> our variables.

The map is one function from our variable paths to state-dict keys (``_blocks.{i}._depthwise_conv``
with a global block index ``i``), plus the layout transposes (OIHW -> HWIO, (out, in) -> (in, out))
that every PyTorch source shares (``convert_state_dict``; timm's table lives in ``timm.py``).
Those weights were trained with TF "SAME" padding, our default. This module never imports torch:
pass a dict of arrays (``torch.load(path, weights_only=True)`` or safetensors' ``load_file``).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from efficientnet_jax.model import EfficientNet, create_model
from efficientnet_jax.specs import BlockSpec
from efficientnet_jax.weights.common import Path, WeightConversionError, fill, variables_skeleton

_TOP_LEVEL = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
              "classifier": "_fc"}
_IN_BLOCK = {
    ("expand_conv",): "_expand_conv", ("expand_bn",): "_bn0", ("dw_conv",): "_depthwise_conv", ("dw_bn",): "_bn1",
    ("se", "reduce"): "_se_reduce", ("se", "expand"): "_se_expand",
    ("project_conv",): "_project_conv", ("project_bn",): "_bn2",
}
# Leaf names of PyTorch's Conv2d / BatchNorm2d / Linear, shared by every PyTorch source.
LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
        ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_IGNORED_SUFFIXES = ("num_batches_tracked",)  # a PyTorch BN counter, not a weight

# key_for(our path, the block it belongs to or None, the block's global index) -> state-dict key
KeyFunction = Callable[[Path, "BlockSpec | None", int], str]


def torch_key(path: Path, block: BlockSpec | None, index: int) -> str:
    """efficientnet-pytorch state-dict key of one of our variables."""
    collection, *modules, leaf = path
    module = f"_blocks.{index}.{_IN_BLOCK[tuple(modules[1:])]}" if block else _TOP_LEVEL[modules[0]]
    return f"{module}.{LEAF[(collection, leaf)]}"


def _to_ours(value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:  # conv and depthwise: (O, I, H, W) -> (H, W, I, O)
        return np.transpose(value, (2, 3, 1, 0))
    if value.ndim == 2:  # dense: (out, in) -> (in, out)
        return value.T
    return value


def as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def state_dict_keys(model: EfficientNet, key_for: KeyFunction) -> dict[Path, str]:
    """Our variable paths -> the source's keys, for every variable of ``model``."""
    blocks = {b.name: (b, i) for i, b in enumerate(model.spec.blocks())}
    return {path: key_for(path, *blocks.get(path[1], (None, -1))) for path in variables_skeleton(model)}


def convert_state_dict(
    state_dict: Mapping[str, Any], model_name: str, *, key_for: KeyFunction, classifier_key: str,
    source: str, **model_kwargs: Any,
) -> dict:
    """Variables for ``create_model(model_name, **model_kwargs)`` from a PyTorch-layout state dict.

    The class count is read from ``classifier_key``; without it the model has ``num_classes=0``.
    Any key left over or missing, and any shape mismatch, raises ``WeightConversionError``.
    """
    weights = {k: as_numpy(v) for k, v in state_dict.items() if not k.endswith(_IGNORED_SUFFIXES)}
    num_classes = weights[classifier_key].shape[0] if classifier_key in weights else 0
    model = create_model(model_name, num_classes=num_classes, **model_kwargs)
    keys = state_dict_keys(model, key_for)
    unused = sorted(set(weights) - set(keys.values()))
    if unused:
        raise WeightConversionError(
            f"The {source} state dict has {len(unused)} keys that {model_name} does not have: {unused[:12]}. "
            "Is model_name right, and is the state dict in this format?"
        )
    values = {path: _to_ours(weights[key]) for path, key in keys.items() if key in weights}
    return fill(variables_skeleton(model), values, source=f"the {source} state dict for {model_name}")


def from_torch_state_dict(state_dict: Mapping[str, Any], model_name: str, **model_kwargs: Any) -> dict:
    """Variables for ``create_model(model_name)`` from an efficientnet-pytorch-format state dict
    (``_conv_stem``, ``_blocks.{i}``, ``_fc``): efficientnet-pytorch and the efficientnet-lite packages."""
    return convert_state_dict(state_dict, model_name, key_for=torch_key, classifier_key="_fc.weight",
                              source="efficientnet-pytorch", **model_kwargs)
