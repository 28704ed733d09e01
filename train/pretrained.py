"""Start a run from converted pretrained weights, with a fresh head when the class count differs.

The file must be for the run's model: the variant and the settings it records (width, depth, padding,
BN epsilon ...) are compared with the run's, and every leaf of the file must have a place in the model
and every leaf of the model a value in the file. ``config.pretrained_partial=True`` loads only what fits
(the same variant at another width, a backbone of another family member) and logs what it leaves out.
"""
from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

from efficientnet_jax.scan import is_scanned, stack_blocks, unstack_blocks
from efficientnet_jax.specs import list_models, model_info
from efficientnet_jax.weights import WeightConversionError
from efficientnet_jax.weights.common import check_dtypes, flatten, unflatten
from efficientnet_jax.weights.sources import Resolved, resolve_and_convert

HEAD = "classifier"
# Spec fields that change what the weights compute; resolution, dropout, drop path and BN momentum
# are training choices a fine-tuning run may change freely.
WEIGHT_SETTINGS = ("width", "depth", "stem_filters", "head_filters", "activation", "scale_stem_head",
                   "round_limit", "fix_first_last_repeats", "bn_epsilon", "padding")


def is_head(path: tuple) -> bool:
    return HEAD in path


def _names(paths, limit: int = 10) -> str:
    names = sorted("/".join(p) for p in paths)
    return ", ".join(names[:limit]) + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def merge_pretrained(fresh: dict, pretrained: dict, *, partial: bool = False,
                     source: str = "the pretrained weights") -> dict:
    """``fresh`` variables with every backbone leaf taken from ``pretrained``.

    Head leaves keep their fresh (random) initialization when the pretrained head is missing or has
    another shape (a new class count). A zero head (big_vision's choice) was measured slower here: it
    passes no gradient to the backbone until the head has grown (Lite0 on digits, 80 steps: 79.2%
    against 92.8% with the random head). Any other difference is an error naming the leaves: a backbone
    leaf missing from the file or of another shape, a leaf of the file with no place in the model, a
    dtype other than float32/bfloat16. ``partial``: keep those backbone leaves fresh and drop those file
    leaves instead, and log both.

    Either tree may be in the scanned layout (``scan_blocks``): leaves are matched per block, unrolled, and
    the result has ``fresh``'s layout.
    """
    scanned = is_scanned(fresh)
    ours, theirs = flatten(unstack_blocks(fresh)), flatten(unstack_blocks(pretrained))
    merged, kept_fresh, problems = {}, [], []
    for path, leaf in ours.items():
        source_leaf = theirs.get(path)
        if source_leaf is not None and np.shape(source_leaf) == np.shape(leaf):
            merged[path] = source_leaf
        elif is_head(path) or partial:
            merged[path] = leaf
            if not is_head(path):
                kept_fresh.append(path)
        else:
            problems.append(f"{'/'.join(path)}: model {np.shape(leaf)} vs file "
                            f"{'missing' if source_leaf is None else np.shape(source_leaf)}")
    unexpected = [p for p in theirs if p not in ours and not is_head(p)]
    if problems or (unexpected and not partial):
        parts = [f"{len(problems)} leaves: " + "; ".join(problems[:10])] if problems else []
        if unexpected:
            parts.append(f"{len(unexpected)} leaves of the file have no place in the model: {_names(unexpected)}")
        raise WeightConversionError(
            f"Pretrained weights {source} do not fit the model ({'; '.join(parts)}). Is --config.model the "
            "variant the weights were converted for? (--config.pretrained_partial=True loads only what fits)")
    loaded = {p: (v, ours[p].dtype) for p, v in merged.items() if v is not ours[p]}
    check_dtypes(loaded, source)
    if kept_fresh or unexpected:
        logging.warning("Partial load of %s: %d model leaves keep their fresh initialization (%s); %d leaves of "
                        "the file are dropped (%s).", source, len(kept_fresh), _names(kept_fresh) or "none",
                        len(unexpected), _names(unexpected) or "none")
    fresh_head = [p for p in ours if is_head(p) and np.shape(theirs.get(p)) != np.shape(ours[p])]
    if fresh_head:
        logging.info("New classifier head (%s); the backbone comes from the pretrained weights.",
                     ", ".join("/".join(p) for p in fresh_head))
    merged = unflatten({p: np.asarray(v, dtype=ours[p].dtype) for p, v in merged.items()})
    return stack_blocks(merged) if scanned else merged


def check_settings(model, resolved: Resolved, *, partial: bool = False) -> None:
    """Refuse weights made for another variant or other settings than ``model``'s (an EfficientNet), where
    the source says what they were made for; ``partial``: log the differences instead."""
    spec = getattr(model, "spec", None)
    if spec is None or not resolved.settings_known or resolved.model not in list_models():
        return
    theirs = dataclasses.replace(model_info(resolved.model), **resolved.overrides)
    differ = [f for f in WEIGHT_SETTINGS if getattr(theirs, f) != getattr(spec, f)]
    if theirs.name == spec.name and theirs.stages == spec.stages and not differ:
        return
    show = ", ".join(f"{f}={getattr(theirs, f)!r} (the run: {getattr(spec, f)!r})" for f in differ)
    message = (f"{resolved.location} holds weights of {theirs.name}{' with ' + show if show else ''}; this run "
               f"trains {spec.name}")
    if partial:
        logging.warning("%s: loading only the leaves that fit (pretrained_partial).", message)
        return
    raise WeightConversionError(f"{message}. Set --config.model / --config.model_overrides to the weights' model, "
                                "or --config.pretrained_partial=True to load only what fits")


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Pretrained variables read and checked against the run's model, before anything is compiled."""

    variables: dict
    location: str  # what messages name
    partial: bool = False


def read_pretrained(source: str, model_name: str | None = None, *, model=None, partial: bool = False,
                    **model_kwargs) -> Pretrained:
    """Any ``load_pretrained`` source for ``model_name`` (a file saved by ``save_pretrained``/``save_variables``,
    'pypi', 'keras', a timm or efficientnet-pytorch file, for ``resnet18``/``resnet50`` a torchvision state
    dict), resolved and converted as ``load_pretrained_variables`` does, so a run starts from exactly the
    variables ``load_pretrained`` gives. ``model_kwargs``: model settings to convert for (e.g. a narrower
    width); our own files are taken as saved and fit to the run's model by ``merge_pretrained``.
    ``model``: the run's model, whose variant and settings the source's must match (``check_settings``);
    ``partial``: load what fits and log the rest (``config.pretrained_partial``)."""
    # a file that cannot be read is named before any mismatch
    resolved, variables = resolve_and_convert(model_name, source, other_model=partial, **model_kwargs)
    if model is not None:
        check_settings(model, resolved, partial=partial)
    return Pretrained(variables=variables, location=resolved.location, partial=partial)


def load_into_state(state, pretrained: Pretrained, sharding):
    """The train state with params, batch_stats and their EMA copies from ``pretrained`` (``merge_pretrained``)."""
    fresh = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    merged = merge_pretrained(fresh, pretrained.variables, partial=pretrained.partial, source=pretrained.location)
    # Two device copies: the train step donates the state, and a buffer cannot be donated twice.
    raw, ema = jax.device_put(merged, sharding), jax.device_put(merged, sharding)
    return state.replace(params=raw["params"], batch_stats=raw["batch_stats"],
                         ema_params=ema["params"], ema_batch_stats=ema["batch_stats"])


def param_labels(params) -> dict:
    """'head' or 'backbone' per leaf, for optax.multi_transform."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "head" if is_head(tuple(str(getattr(k, "key", k)) for k in path)) else "backbone", params
    )
