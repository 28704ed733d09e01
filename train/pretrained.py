"""Start a run from converted pretrained weights, with a fresh head when the class count differs."""
from __future__ import annotations

import logging
import pathlib

import jax
import numpy as np

from efficientnet_jax.weights import WeightConversionError, load_pretrained, load_torchvision_resnet, load_variables
from efficientnet_jax.weights.common import flatten, unflatten

HEAD = "classifier"


def is_head(path: tuple) -> bool:
    return HEAD in path


def merge_pretrained(fresh: dict, pretrained: dict) -> dict:
    """``fresh`` variables with every backbone leaf taken from ``pretrained``.

    Head leaves keep their fresh (random) initialization when the pretrained head is missing or has
    another shape (a new class count). A zero head (big_vision's choice) was measured slower here: it
    passes no gradient to the backbone until the head has grown (Lite0 on digits, 80 steps: 79.2%
    against 92.8% with the random head). Any backbone mismatch is an error naming the leaves.
    """
    ours, theirs = flatten(fresh), flatten(pretrained)
    merged, problems = {}, []
    for path, leaf in ours.items():
        source = theirs.get(path)
        if source is not None and np.shape(source) == np.shape(leaf):
            merged[path] = np.asarray(source, dtype=leaf.dtype)
        elif is_head(path):
            merged[path] = leaf
        else:
            problems.append(f"{'/'.join(path)}: model {np.shape(leaf)} vs file "
                            f"{'missing' if source is None else np.shape(source)}")
    if problems:
        raise WeightConversionError(
            f"Pretrained weights do not fit the model ({len(problems)} leaves): " + "; ".join(problems[:10])
            + ". Is --config.model the variant the weights were converted for?"
        )
    fresh_head = [p for p in ours if is_head(p) and np.shape(theirs.get(p)) != np.shape(ours[p])]
    if fresh_head:
        logging.info("New classifier head (%s); the backbone comes from the pretrained weights.",
                     ", ".join("/".join(p) for p in fresh_head))
    return unflatten(merged)


_CONVERTED_SOURCES = ("pypi", "keras")
_CONVERTED_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".h5", ".keras")


_TORCHVISION_MODELS = ("resnet18", "resnet50")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def _is_torchvision_file(source: str, model_name: str | None) -> bool:
    """A torchvision ResNet state dict (torch file, or safetensors not written by us) for a ResNet run."""
    suffix = pathlib.Path(source).suffix
    if model_name not in _TORCHVISION_MODELS:
        return False
    return suffix in _TORCH_SUFFIXES or (suffix == ".safetensors" and "params" not in load_variables(source))


def _read(source: str, model_name: str | None) -> dict:
    """Our variables from a file of ours as saved (the run's model settings decide the fit), or
    converted from another source."""
    if _is_torchvision_file(source, model_name):
        return load_torchvision_resnet(source)[1]
    if model_name and (source in _CONVERTED_SOURCES or pathlib.Path(source).suffix in _CONVERTED_SUFFIXES):
        return load_pretrained(model_name, source)[1]
    variables = load_variables(source)
    if model_name and "params" not in variables:  # a timm / efficientnet-pytorch .safetensors
        return load_pretrained(model_name, source)[1]
    return variables


def load_into_state(state, source: str, sharding, model_name: str | None = None):
    """The train state with params, batch_stats and their EMA copies from ``source``: a file saved by
    ``save_pretrained``/``save_variables`` or, given ``model_name``, any ``load_pretrained`` source
    ('pypi', 'keras', a timm or efficientnet-pytorch file), or for ``resnet18``/``resnet50`` a
    torchvision state dict (``resnet50-11ad3fa6.pth`` ...)."""
    pretrained = _read(source, model_name)
    fresh = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    merged = merge_pretrained(fresh, pretrained)
    # Two device copies: the train step donates the state, and a buffer cannot be donated twice.
    raw, ema = jax.device_put(merged, sharding), jax.device_put(merged, sharding)
    return state.replace(params=raw["params"], batch_stats=raw["batch_stats"],
                         ema_params=ema["params"], ema_batch_stats=ema["batch_stats"])


def param_labels(params) -> dict:
    """'head' or 'backbone' per leaf, for optax.multi_transform."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "head" if is_head(tuple(str(getattr(k, "key", k)) for k in path)) else "backbone", params
    )
