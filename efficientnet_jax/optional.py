"""Optional dependencies, imported where they are used, and named with their install command when missing.

A plain ``pip install efficientnet-jax`` brings jax, flax, numpy, safetensors and pillow only, so every
module of the package imports with just those; torch, keras, optax and matplotlib come with extras.
"""
from __future__ import annotations

import importlib
from types import ModuleType


def extra(name: str) -> str:
    """The pip argument that installs one of our extras ('train', 'torch', 'keras', 'lab')."""
    return f"'efficientnet-jax[{name}]'"


def require(module: str, purpose: str, install: str, hint: str = "") -> ModuleType:
    """``module`` imported, or an ImportError "``purpose`` needs ``module``: pip install ``install``".

    E.g. ``require("optax", "pruning fine-tuning", extra("train"))``. The original error is chained,
    so a broken installation is not mistaken for a missing one.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{purpose} needs {module.split('.')[0]}: pip install {install}{hint}") from e
