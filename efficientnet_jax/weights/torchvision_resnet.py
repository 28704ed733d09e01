"""torchvision ResNet state dicts (``resnet50-*.pth``, ``resnet18-*.pth``) -> variables of our ResNet50 / ResNet18.

Our ResNets use torchvision's layout (v1.5: a bottleneck strides its 3×3) and its module names inside a
block (conv1/bn1 ... conv3/bn3), so the map is short: ``stageI_blockJ`` is ``layer{I}.{J-1}``, the
projection shortcut ``down_conv``/``down_bn`` is ``downsample.0``/``.1``, the stem ``conv1``/``bn1``
and the classifier ``fc``. Layout transposes are those of every PyTorch source (OIHW -> HWIO, dense
(out, in) -> (in, out)). Any key left over or missing, or any shape mismatch, raises
``WeightConversionError``.

Keras' ``keras.applications.ResNet50`` is deliberately not a source: it is the original v1 network
(stride 2 on the first 1×1 of a block, biases on every convolution), which computes a different
function from the v1.5 network built here; its weights would need another architecture, not a key map.
"""
from __future__ import annotations

import pathlib
import re
from typing import Any, Mapping

import numpy as np

from efficientnet_jax.families import ResNet18, ResNet50
from efficientnet_jax.weights.common import Path, WeightConversionError, fill, variables_skeleton
from efficientnet_jax.weights.pytorch import LEAF, as_numpy
from efficientnet_jax.weights.readers import read_state_dict

_TOP_LEVEL = {"stem_conv": "conv1", "stem_bn": "bn1", "classifier": "fc"}
_SHORTCUT = {"down_conv": "downsample.0", "down_bn": "downsample.1"}
_BLOCK = re.compile(r"stage(\d+)_block(\d+)$")
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def torchvision_key(path: Path) -> str:
    """torchvision state-dict key of one of our ResNet variables."""
    collection, *modules, leaf = path
    match = _BLOCK.match(modules[0])
    if match:
        module = f"layer{match[1]}.{int(match[2]) - 1}.{_SHORTCUT.get(modules[1], modules[1])}"
    else:
        module = _TOP_LEVEL[modules[0]]
    return f"{module}.{LEAF[(collection, leaf)]}"


def _to_ours(value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:  # (O, I, H, W) -> (H, W, I, O); 1×1 convs included (our Conv1x1 keeps (1, 1, I, O))
        return np.transpose(value, (2, 3, 1, 0))
    return value.T if value.ndim == 2 else value


def from_torchvision_resnet(state_dict: Mapping[str, Any], model: ResNet18 | None = None):
    """``(model, variables)`` from a torchvision ResNet-50 or ResNet-18 state dict (arrays or tensors).

    Without ``model`` the architecture is read off the keys (a ``conv3`` in the blocks: ResNet-50) at
    width and depth 1.0, with the class count of ``fc``; pass ``model`` for another member of the family.
    """
    weights = {k.removeprefix("module."): as_numpy(v) for k, v in state_dict.items()
               if not k.endswith(_IGNORED_SUFFIXES)}
    if model is None:
        if "conv1.weight" not in weights or "layer1.0.conv1.weight" not in weights:
            raise WeightConversionError(f"Not a torchvision ResNet state dict; its first keys: {sorted(weights)[:5]}")
        cls = ResNet50 if "layer1.0.conv3.weight" in weights else ResNet18
        num_classes = weights["fc.weight"].shape[0] if "fc.weight" in weights else 0
        model = cls(num_classes=num_classes)
    skeleton = variables_skeleton(model)
    keys = {path: torchvision_key(path) for path in skeleton}
    unused = sorted(set(weights) - set(keys.values()))
    if unused:
        raise WeightConversionError(
            f"The state dict has {len(unused)} keys that {type(model).__name__} (width {model.width}, depth "
            f"{model.depth}) does not have: {unused[:12]}")
    values = {path: _to_ours(weights[key]) for path, key in keys.items() if key in weights}
    return model, fill(skeleton, values, source="the torchvision state dict")


def load_torchvision_resnet(path: str | pathlib.Path, model: ResNet18 | None = None):
    """``from_torchvision_resnet`` of a file: ``.pth``/``.pt`` (read with torch, ``weights_only=True``: a
    pickle cannot run code) or ``.safetensors`` (no torch needed). Training checkpoints are unwrapped."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}")
    return from_torchvision_resnet(read_state_dict(path), model)
