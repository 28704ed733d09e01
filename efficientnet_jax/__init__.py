"""EfficientNet B0-B8, L2 and Lite0-4 as Flax Linen modules, and tools to study scaling.

>>> import efficientnet_jax as ej
>>> model = ej.create_model('efficientnet_b0')
"""
from efficientnet_jax.families import MobileNetV2, ResNet18, ResNet50
from efficientnet_jax.flops import count_flops, count_params
from efficientnet_jax.inputs import check_images
from efficientnet_jax.model import EfficientNet, create_model
from efficientnet_jax.preprocess import preprocess
from efficientnet_jax.scan import stack_blocks, unstack_blocks
from efficientnet_jax.scaling import compound_scaling, fast_scaling, round_filters, round_repeats
from efficientnet_jax.search import search_coefficients, single_dimension_baselines
from efficientnet_jax.specs import BlockSpec, ModelSpec, StageSpec, list_models, model_info

__version__ = "0.1.0"

__all__ = [
    "BlockSpec", "EfficientNet", "MobileNetV2", "ModelSpec", "ResNet18", "ResNet50", "StageSpec", "check_images",
    "compound_scaling", "count_flops", "count_params", "create_model", "fast_scaling", "list_models", "model_info",
    "preprocess", "round_filters", "round_repeats", "search_coefficients", "single_dimension_baselines",
    "stack_blocks", "unstack_blocks",
]
