"""Pretrained weights: converters from every source, one loader, framework-neutral files.

Each converter returns ``variables`` for ``create_model(name)`` and fails loudly on any mismatch;
``load_pretrained`` (``sources.py``) decides the kind of source and the model once, then converts.
"""
from efficientnet_jax.weights.common import WeightConversionError, check_fits
from efficientnet_jax.weights.io import load_variables, save_pretrained, save_variables
from efficientnet_jax.weights.keras import from_keras, to_keras
from efficientnet_jax.weights.pytorch import from_torch_state_dict
from efficientnet_jax.weights.sources import load_pretrained, load_pretrained_variables
from efficientnet_jax.weights.timm import from_timm_state_dict
from efficientnet_jax.weights.torchvision_resnet import from_torchvision_resnet, load_torchvision_resnet

__all__ = ["WeightConversionError", "check_fits", "from_keras", "from_timm_state_dict", "from_torch_state_dict",
           "from_torchvision_resnet", "load_pretrained", "load_pretrained_variables", "load_torchvision_resnet",
           "load_variables", "save_pretrained", "save_variables", "to_keras"]
