"""Weight converters. Each returns ``variables`` for ``create_model(name)`` and fails loudly on any mismatch."""
from efficientnet_jax.weights.common import WeightConversionError
from efficientnet_jax.weights.io import load_variables, save_variables
from efficientnet_jax.weights.keras import from_keras, to_keras
from efficientnet_jax.weights.pytorch import from_torch_state_dict

__all__ = ["WeightConversionError", "from_keras", "from_torch_state_dict", "load_variables", "save_variables",
           "to_keras"]
