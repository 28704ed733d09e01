"""What every converter shares: one reading of model names, a variables skeleton to fill, and loud
failures on any mismatch."""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Path = tuple[str, ...]  # ('params', 'stage2_block1', 'dw_conv', 'kernel')


class WeightConversionError(ValueError):
    """Source weights do not fit the target model (names, shapes, dtypes, settings) or are not finite."""


class WeightFileError(WeightConversionError):
    """A weights file cannot be read at all (corrupt, truncated, refused pickle, malformed metadata).

    Raised at the reading boundary (``readers.py``, ``io.py``) for every way a file's bytes can be bad,
    so that callers handle one exception type and command-line tools print one line.
    """

    def __init__(self, path, cause, fix: str = "re-download or re-convert it"):
        super().__init__(f"cannot read weights file {path}: {cause}; {fix}")


# Casts a converter may make on its own: the precision a model computes in is not the file's business.
INTERCHANGEABLE_DTYPES = frozenset({np.dtype("float32"), np.dtype(jnp.bfloat16)})


def flatten(tree: Mapping) -> dict[Path, Any]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat[tuple(str(getattr(k, "key", k)) for k in path)] = leaf
    return flat


def unflatten(flat: Mapping[Path, Any]) -> dict:
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree


def parse_model_name(name: str) -> tuple[str, bool]:
    """``(our name, ported from TensorFlow?)`` for a model name as a weights source spells it.

    The one normaliser of names: a pretrained tag is dropped ('tf_efficientnet_b0.ns_jft_in1k') and
    timm's 'tf_' prefix, which marks weights ported from TF (TF "SAME" padding, BN epsilon 1e-3, our
    defaults), is removed. Whether the result is a known model is for the caller to say.
    """
    base = str(name).split(".")[0]
    return base.removeprefix("tf_"), base.startswith("tf_")


def variables_skeleton(model: nn.Module) -> dict[Path, jax.ShapeDtypeStruct]:
    """Abstract variables of ``model`` (nothing allocated): an EfficientNet at its native resolution,
    the other families (no spec; sizes do not depend on the input) at 64 pixels."""
    spec = getattr(model, "spec", None)
    r = spec.resolution if spec is not None else 64
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, r, r, 3), model.dtype), train=False)
    )
    return flatten(shapes)


def check_fits(model: nn.Module, variables: Mapping, source: str) -> dict:
    """``variables`` as arrays of ``model``'s dtypes, or ``WeightConversionError`` naming what differs."""
    return fill(variables_skeleton(model), dict(flatten(variables)), source=source)


def head_classes(variables: Mapping) -> int:
    """The class count of converted variables: the classifier's width, 0 for a headless backbone."""
    kernel = variables.get("params", {}).get("classifier", {}).get("kernel")
    return 0 if kernel is None else int(np.shape(kernel)[-1])


def _show(paths, limit=12) -> str:
    names = ["/".join(p) if isinstance(p, tuple) else str(p) for p in sorted(paths)]
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def fill(
    skeleton: Mapping[Path, jax.ShapeDtypeStruct],
    values: Mapping[Path, np.ndarray],
    source: str,
) -> dict:
    """Variables with every skeleton leaf taken from ``values``; any gap, extra or shape mismatch raises."""
    missing = set(skeleton) - set(values)
    unexpected = set(values) - set(skeleton)
    problems = []
    if missing:
        problems.append(f"{len(missing)} variables have no source in {source}: {_show(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} converted weights have no place in the model: {_show(unexpected)}")
    mismatched = [
        f"{'/'.join(p)}: model {tuple(skeleton[p].shape)} vs {source} {tuple(np.shape(values[p]))}"
        for p in sorted(set(skeleton) & set(values))
        if tuple(skeleton[p].shape) != tuple(np.shape(values[p]))
    ]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: " + "; ".join(mismatched[:12]))
    if problems:
        raise WeightConversionError(f"Cannot convert weights from {source}. " + " ".join(problems))
    check_dtypes({p: (values[p], skeleton[p].dtype) for p in skeleton}, source)
    return unflatten({p: jnp.asarray(values[p], dtype=skeleton[p].dtype) for p in skeleton})


def check_dtypes(pairs: Mapping[Path, tuple[Any, Any]], source: str) -> None:
    """``WeightConversionError`` naming every ``path: (value, target dtype)`` whose cast would change what the
    numbers mean (float64 rounded, int8 or bool read as floats); float32 <-> bfloat16 is allowed."""
    bad = []
    for path, (value, target) in sorted(pairs.items()):
        have, want = np.dtype(getattr(value, "dtype", np.asarray(value).dtype)), np.dtype(target)
        if have != want and not {have, want} <= INTERCHANGEABLE_DTYPES:
            bad.append(f"{'/'.join(path)}: {have} in {source}, the model needs {want}")
    if bad:
        raise WeightConversionError(f"{len(bad)} weights of {source} have a dtype the model does not take "
                                    f"(only float32 <-> bfloat16 is converted): " + "; ".join(bad[:12]))


def check_finite(variables: Mapping, source: str) -> None:
    """``WeightConversionError`` naming the leaves with NaN or infinite values: such weights would load
    and then predict ``nan`` (or train on garbage) without any other sign."""
    bad = [path for path, leaf in flatten(variables).items()
           if jnp.issubdtype(np.asarray(leaf).dtype, jnp.inexact)
           and not np.isfinite(np.asarray(leaf, np.float32)).all()]
    if bad:
        raise WeightConversionError(f"{source} holds NaN or infinite values in {len(bad)} weights: {_show(bad)}; "
                                    "the file is corrupt or came from a diverged run")
