"""The one place where ``config.model`` becomes a Flax module.

EfficientNet variants come from ``efficientnet_jax.create_model`` and the other families
(MobileNetV2, ResNet-18, ResNet-50) from ``efficientnet_jax.families``, so a recipe, a
``--config.model=`` flag and the experiments all reach the same models through one lookup,
and a wrong name fails once, listing every valid name. ``config.model_overrides`` goes to
the model either way (spec fields for EfficientNet, module fields for the families).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

import efficientnet_jax as ej
from efficientnet_jax.families import MobileNetV2, ResNet18, ResNet50
from efficientnet_jax.model import check_spec
from efficientnet_jax.specs import IMAGENET_MEAN, IMAGENET_STD

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
FAMILIES: dict[str, type[nn.Module]] = {"mobilenet_v2": MobileNetV2, "resnet18": ResNet18, "resnet50": ResNet50}
FAMILY_RESOLUTION = 224  # torchvision's ImageNet models: 224 px, ImageNet mean/std


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """What a model's (pretrained) weights expect of the input; a config's None values default to it."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def model_names() -> list[str]:
    return ej.list_models() + list(FAMILIES)


def _unknown(name: Any) -> ValueError:
    return ValueError(f"Unknown model {name!r}; config.model must be one of: {', '.join(model_names())}")


def data_settings(name: str) -> DataSettings:
    if name in FAMILIES:
        return DataSettings(FAMILY_RESOLUTION, IMAGENET_MEAN, IMAGENET_STD)
    if name not in ej.list_models():
        raise _unknown(name)
    spec = ej.model_info(name)
    return DataSettings(spec.resolution, tuple(spec.mean), tuple(spec.std))


def build_model(config, num_classes: int) -> nn.Module:
    """``config.model`` with ``config.model_overrides``, computing in ``config.dtype``."""
    name, overrides = config.model, dict(config.model_overrides or {})
    dtype = DTYPES[config.dtype]
    if name in FAMILIES:
        if config.remat or config.scan_blocks:
            raise ValueError(f"remat and scan_blocks are implemented for EfficientNet only, not {name}")
        return FAMILIES[name](num_classes=num_classes, dtype=dtype, **_check_fields(FAMILIES[name], overrides))
    if name not in ej.list_models():
        raise _unknown(name)
    try:
        return ej.create_model(name, num_classes=num_classes, dtype=dtype, remat=config.remat,
                               scan_blocks=config.scan_blocks, **overrides)
    except TypeError as e:  # unknown override: a config mistake, reported like the others
        raise ValueError(f"config.model_overrides: {e}") from None


def _fields(cls: type[nn.Module]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def _check_fields(cls: type[nn.Module], overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(_fields(cls)))
    if unknown:
        raise ValueError(f"config.model_overrides: {cls.__name__} has no fields {unknown}; it has {_fields(cls)}")
    return overrides


# ---- Settings of a built module (progressive learning and FixRes change them per stage) ---------------

def setting(model: nn.Module, field: str) -> Any:
    """A hyperparameter of a built model (``dropout``, ``bn_momentum`` ...), wherever the model keeps it."""
    if isinstance(model, ej.EfficientNet):
        return getattr(model.spec, field)
    if field not in _fields(type(model)):
        raise ValueError(f"{type(model).__name__} has no field {field!r}")
    return getattr(model, field)


def with_settings(model: nn.Module, **fields: Any) -> nn.Module:
    """The same architecture (same parameters) with other hyperparameters, e.g. another dropout rate."""
    if isinstance(model, ej.EfficientNet):
        spec = dataclasses.replace(model.spec, **fields)
        check_spec(spec)
        return model.clone(spec=spec)
    for field in fields:
        setting(model, field)  # raises for a field the module does not have
    return model.clone(**fields)
