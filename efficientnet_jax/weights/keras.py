"""keras.applications.EfficientNetB0-B7 and EfficientNetV2B0-B3/S/M/L <-> our variables.

The map is one table from our module names to Keras layer names (``block2a_dwconv``
...), plus each layer's weight order. Keras names V1's and V2's layers alike except the
depthwise conv (V2: ``dwconv2``); Fused-MBConv reuses ``expand_conv``/``project_conv``, as ours
does. Works with Keras 3 on any backend; this module does not import Keras (the caller passes
a built model).
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from efficientnet_jax.model import create_model
from efficientnet_jax.weights.common import Path, WeightConversionError, fill, flatten, variables_skeleton

# Our names -> the keras.applications constructors (Keras has no V2-XL).
KERAS_APPLICATIONS = {
    **{f"efficientnet_b{i}": f"EfficientNetB{i}" for i in range(8)},
    **{f"efficientnetv2_b{i}": f"EfficientNetV2B{i}" for i in range(4)},
    "efficientnetv2_s": "EfficientNetV2S", "efficientnetv2_m": "EfficientNetV2M", "efficientnetv2_l": "EfficientNetV2L",
}
# Our top-level modules -> Keras layers.
_TOP_LEVEL = {"stem_conv": "stem_conv", "stem_bn": "stem_bn", "head_conv": "top_conv", "head_bn": "top_bn", "classifier": "predictions"}
# Our block submodules -> the suffix after Keras's "block{stage}{letter}_".
_IN_BLOCK = {
    ("expand_conv",): "expand_conv", ("expand_bn",): "expand_bn",
    ("dw_conv",): "dwconv", ("dw_bn",): "bn",
    ("se", "reduce"): "se_reduce", ("se", "expand"): "se_expand",
    ("project_conv",): "project_conv", ("project_bn",): "project_bn",
}
# Position of each of our leaves in Keras's layer.get_weights().
_WEIGHT_INDEX = {
    ("params", "kernel"): 0, ("params", "bias"): 1,  # conv / dense (bias of a BN handled below)
}
_BN_INDEX = {("params", "scale"): 0, ("params", "bias"): 1, ("batch_stats", "mean"): 2, ("batch_stats", "var"): 3}
_BLOCK = re.compile(r"stage(\d+)_block(\d+)$")
# Keras layers that carry weights we deliberately do not import (input normalization).
_IGNORED_KERAS_CLASSES = ("Normalization",)


def keras_location(path: Path, v2: bool = False) -> tuple[str, int]:
    """(Keras layer name, index in its get_weights()) of one of our variables; ``v2``: an EfficientNetV2."""
    collection, *modules, leaf = path
    match = _BLOCK.match(modules[0])
    if match:
        stage, index = int(match[1]), int(match[2])
        suffix = _IN_BLOCK[tuple(modules[1:])]
        layer = f"block{stage}{chr(ord('a') + index - 1)}_{suffix}{'2' if v2 and suffix == 'dwconv' else ''}"
    else:
        layer = _TOP_LEVEL[modules[0]]
    is_bn = modules[-1].endswith("bn")
    return layer, (_BN_INDEX if is_bn else _WEIGHT_INDEX)[(collection, leaf)]


def _swap_depthwise_axes(path: Path, value: np.ndarray) -> np.ndarray:
    """Keras depthwise kernels are (k, k, C, 1), ours (k, k, 1, C); the swap is its own inverse."""
    return np.transpose(value, (0, 1, 3, 2)) if path[-2] == "dw_conv" else value


def is_v2(keras_model) -> bool:
    """Whether a Keras EfficientNet is a V2, by its layers (V2 names its depthwise convs ``dwconv2``), so a
    renamed model is told apart too."""
    return any(layer.name.endswith("_dwconv2") for layer in keras_model.layers)


def _squashed(name: str) -> str:
    """'efficientnetv2-s', 'EfficientNetV2S' and 'efficientnetv2_s' all become 'efficientnetv2s'."""
    return re.sub(r"[-_]", "", name.lower())


def _keras_model_name(keras_model) -> str:
    """Our name for a Keras model named as keras.applications names them ('efficientnetb0', 'efficientnetv2-s')."""
    ours = {_squashed(name): name for name in KERAS_APPLICATIONS}
    name = ours.get(_squashed(keras_model.name))
    if name is None:
        raise WeightConversionError(
            f"Cannot tell which variant Keras model {keras_model.name!r} is; pass model_name= "
            f"(one of {', '.join(KERAS_APPLICATIONS)})"
        )
    return name


def _keras_weights(keras_model) -> dict[str, list[np.ndarray]]:
    return {
        layer.name: [np.asarray(w) for w in layer.get_weights()]
        for layer in keras_model.layers
        if layer.weights and type(layer).__name__ not in _IGNORED_KERAS_CLASSES
    }


def from_keras(keras_model, model_name: str | None = None, **model_kwargs: Any) -> dict:
    """Variables for ``create_model(model_name)`` from a ``keras.applications.EfficientNetB*`` or
    ``EfficientNetV2*`` model.

    The Keras model's own input ``Rescaling``/``Normalization`` layers (V2: ``include_preprocessing``)
    are not part of our model: feed it inputs normalized with ``model_info(name).mean/std``
    (``preprocess``). ``include_top=False`` models convert to ``num_classes=0``.
    """
    name = model_name or _keras_model_name(keras_model)
    source = _keras_weights(keras_model)
    num_classes = source["predictions"][0].shape[-1] if "predictions" in source else 0
    model = create_model(name, num_classes=num_classes, **model_kwargs)
    skeleton, v2 = variables_skeleton(model), is_v2(keras_model)
    values, used = {}, set()
    for path in skeleton:
        layer, index = keras_location(path, v2)
        if layer in source and index < len(source[layer]):
            values[path] = _swap_depthwise_axes(path, source[layer][index])
            used.add(layer)
    unused = sorted(set(source) - used)
    if unused:
        raise WeightConversionError(
            f"Keras model {keras_model.name!r} has weighted layers that {name} does not have: {unused[:12]}"
            f"{' ...' if len(unused) > 12 else ''}. Is model_name right?"
        )
    return fill(skeleton, values, source=f"Keras model {keras_model.name!r}")


def to_keras(variables: dict, keras_model) -> None:
    """Write our variables into a Keras EfficientNet or EfficientNetV2 (same variant) in place."""
    v2 = is_v2(keras_model)
    by_layer: dict[str, dict[int, np.ndarray]] = {}
    for path, value in flatten(variables).items():
        layer, index = keras_location(path, v2)
        by_layer.setdefault(layer, {})[index] = _swap_depthwise_axes(path, np.asarray(value))
    target = _keras_weights(keras_model)
    if set(by_layer) != set(target):
        raise WeightConversionError(
            f"Layers differ: only in ours {sorted(set(by_layer) - set(target))[:12]}, "
            f"only in Keras {sorted(set(target) - set(by_layer))[:12]}"
        )
    for layer_name, current in target.items():
        new = [by_layer[layer_name][i] for i in range(len(current))]
        for old, fresh in zip(current, new):
            if old.shape != fresh.shape:
                raise WeightConversionError(f"{layer_name}: Keras shape {old.shape} vs ours {fresh.shape}")
        keras_model.get_layer(layer_name).set_weights(new)
