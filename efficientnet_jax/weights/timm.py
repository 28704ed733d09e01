"""timm state dicts (``tf_efficientnet_b0``, ``efficientnet_b0``, ``tf_efficientnet_lite0``,
``tf_efficientnetv2_s`` ...) -> our variables.

timm numbers blocks by stage (``blocks.{stage}.{block}``) and names the convs of a block by its
kind: a depthwise-separable block (expand ratio 1, V1's first stage) has ``conv_dw, bn1, conv_pw,
bn2``; an inverted residual (MBConv) ``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``; V2's Fused-MBConv
is an "edge residual" ``conv_exp, bn1, conv_pwl, bn2``, or with expansion 1 a ``conv, bn1``.
timm's ``efficientnetv2_rw_*`` are other architectures (their own stage tables) and are refused.

Padding and BN epsilon follow the source: timm's ``tf_*`` weights were ported from TensorFlow
(TF "SAME" padding, epsilon 1e-3: our defaults); its other EfficientNets were trained in PyTorch
(symmetric padding, epsilon 1e-5). ``timm_model_kwargs`` says which; ``load_pretrained`` resolves it
once per call (``sources.py``) and calls ``convert_timm_state_dict`` with the settings already decided.
"""
from __future__ import annotations

from typing import Any, Mapping

from efficientnet_jax.specs import BlockSpec, list_models
from efficientnet_jax.weights.common import Path, WeightConversionError, parse_model_name
from efficientnet_jax.weights.pytorch import LEAF, convert_state_dict

_TOP_LEVEL = {"stem_conv": "conv_stem", "stem_bn": "bn1", "head_conv": "conv_head", "head_bn": "bn2",
              "classifier": "classifier"}
_SQUEEZE_EXCITE = {("se", "reduce"): "se.conv_reduce", ("se", "expand"): "se.conv_expand"}
_INVERTED_RESIDUAL = {
    ("expand_conv",): "conv_pw", ("expand_bn",): "bn1", ("dw_conv",): "conv_dw", ("dw_bn",): "bn2",
    ("project_conv",): "conv_pwl", ("project_bn",): "bn3", **_SQUEEZE_EXCITE,
}
_DEPTHWISE_SEPARABLE = {
    ("dw_conv",): "conv_dw", ("dw_bn",): "bn1", ("project_conv",): "conv_pw", ("project_bn",): "bn2",
    **_SQUEEZE_EXCITE,
}
_EDGE_RESIDUAL = {
    ("expand_conv",): "conv_exp", ("expand_bn",): "bn1", ("project_conv",): "conv_pwl", ("project_bn",): "bn2",
    **_SQUEEZE_EXCITE,
}
_CONV_BN_ACT = {("project_conv",): "conv", ("project_bn",): "bn1"}
# Settings of timm's PyTorch-trained (not ``tf_``) EfficientNets.
_PYTORCH_TRAINED = {"padding": "symmetric", "bn_epsilon": 1e-5}


def timm_key(path: Path, block: BlockSpec | None, index: int) -> str:
    """timm state-dict key of one of our variables."""
    del index
    collection, *modules, leaf = path
    if block is None:
        module = _TOP_LEVEL[modules[0]]
    else:
        if block.block == "fused_mbconv":
            table = _CONV_BN_ACT if block.expand_ratio == 1 else _EDGE_RESIDUAL
        else:
            table = _DEPTHWISE_SEPARABLE if block.expand_ratio == 1 else _INVERTED_RESIDUAL
        module = f"blocks.{block.stage - 1}.{block.index - 1}.{table[tuple(modules[1:])]}"
    return f"{module}.{LEAF[(collection, leaf)]}"


def timm_overrides(ported_from_tf: bool) -> dict[str, Any]:
    """Spec overrides timm weights need: none for ``tf_*`` (ported from TF), PyTorch's settings otherwise."""
    return {} if ported_from_tf else dict(_PYTORCH_TRAINED)


def timm_model_kwargs(timm_name: str) -> tuple[str, dict[str, Any]]:
    """Our model name and spec overrides for a timm model name: 'tf_efficientnet_b3' ->
    ('efficientnet_b3', {}); 'efficientnet_b3' -> ('efficientnet_b3', symmetric padding, eps 1e-5)."""
    ours, ported_from_tf = parse_model_name(timm_name)  # 'tf_efficientnet_b0.ns_jft_in1k' -> efficientnet_b0
    if ours not in list_models():
        raise WeightConversionError(
            f"timm model {timm_name!r} has no counterpart here; timm names are ours with an optional "
            f"'tf_' prefix: {', '.join(list_models())}"
        )
    return ours, timm_overrides(ported_from_tf)


def convert_timm_state_dict(state_dict: Mapping[str, Any], model_name: str, **model_kwargs: Any) -> dict:
    """Variables for ``create_model(model_name, **model_kwargs)`` from a timm state dict, with our model
    name and every setting already decided (padding and epsilon included): nothing is re-derived."""
    return convert_state_dict(state_dict, model_name, key_for=timm_key, classifier_key="classifier.weight",
                              source="timm", **model_kwargs)


def from_timm_state_dict(state_dict: Mapping[str, Any], timm_name: str, **model_kwargs: Any) -> dict:
    """Variables from a timm state dict. ``timm_name`` is timm's model name ('tf_efficientnet_lite0',
    'efficientnet_b0'); build the model with ``create_model(*timm_model_kwargs(timm_name))``-style
    settings, or use ``load_pretrained``, which does that for you."""
    name, overrides = timm_model_kwargs(timm_name)
    return convert_timm_state_dict(state_dict, name, **{**overrides, **model_kwargs})
