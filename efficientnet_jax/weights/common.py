"""What every converter shares: a variables skeleton to fill and loud failures on any mismatch."""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.model import EfficientNet

Path = tuple[str, ...]  # ('params', 'stage2_block1', 'dw_conv', 'kernel')


class WeightConversionError(ValueError):
    """Source weights do not fit the target model (names or shapes)."""


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


def variables_skeleton(model: EfficientNet) -> dict[Path, jax.ShapeDtypeStruct]:
    """Abstract variables of ``model`` at its native resolution (nothing allocated)."""
    r = model.spec.resolution
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, r, r, 3), model.dtype), train=False)
    )
    return flatten(shapes)


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
    return unflatten({p: jnp.asarray(values[p], dtype=skeleton[p].dtype) for p in skeleton})
