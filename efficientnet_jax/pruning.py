"""Pruning baselines for the scaling-vs-pruning comparison.

Two kinds, because they save different things:

* **Global magnitude pruning** (unstructured): ``magnitude_masks`` keeps the largest-|w| fraction of
  all conv/dense kernels together (one threshold over the whole network), ``apply_masks`` zeroes the
  rest and ``masked_updates`` keeps them at zero while fine-tuning (``optax.chain(tx,
  masked_updates(masks))``, or ``prune_schedule`` for gradual pruning). Dense XLA kernels still
  multiply the zeros: ``count_flops`` and wall time do not drop; ``sparse_macs`` reports the MACs a
  sparse kernel *could* skip.
* **Channel pruning** (structured): ``slice_variables`` initialises a narrower model of the same
  depth (e.g. ``create_model(..., width=0.75 * w)``) from a wider trained one, keeping for every
  layer its leading channels (``by_l1=True``: the output channels with the largest L1 norm where
  a module's own kernel decides, ``channel_order``). The narrow model's real
  MACs (``count_flops``) are what is saved.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from efficientnet_jax.optional import extra, require


def _is_kernel(path, leaf) -> bool:
    name = str(getattr(path[-1], "key", path[-1]))
    return name == "kernel" and getattr(leaf, "ndim", 0) >= 2


def magnitude_masks(params: Any, sparsity: float) -> Any:
    """Boolean masks (True = keep) removing the ``sparsity`` fraction of smallest-|w| kernel weights globally.

    Only conv and dense kernels are pruned; biases, BN and other leaves get all-True masks.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    kernels = [np.abs(np.asarray(leaf, np.float32)).ravel() for path, leaf in flat if _is_kernel(path, leaf)]
    if not kernels:
        raise ValueError("no conv/dense kernels to prune")
    values = np.concatenate(kernels)
    k = int(round(sparsity * values.size))
    threshold = -np.inf if k == 0 else np.partition(values, k - 1)[k - 1]

    def mask(path, leaf):
        if not _is_kernel(path, leaf):
            return jnp.ones(jnp.shape(leaf), bool)
        a = np.abs(np.asarray(leaf, np.float32))
        return jnp.asarray(a > threshold)

    masks = jax.tree_util.tree_map_with_path(mask, params)
    # Ties at the threshold may remove a few more than k; that is at most the number of tied values.
    return masks


def apply_masks(params: Any, masks: Any) -> Any:
    """Pruned weights set to zero."""
    return jax.tree_util.tree_map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)


def masked_updates(masks: Any) -> Any:
    """An optax transformation that zeroes the updates of pruned weights; chain it after the optimizer:
    ``optax.chain(tx, masked_updates(m))``.

    optax is imported here, not with the module: only the ``train`` extra installs it.
    """
    optax = require("optax", "pruning fine-tuning (masked_updates)", extra("train"))

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)), updates, masks), state

    return optax.GradientTransformation(init, update)


def prune_schedule(step: int, total_steps: int, final_sparsity: float, begin: float = 0.0,
                   end: float = 0.75) -> float:
    """Gradual pruning (Zhu & Gupta 2017): s_t = s_f (1 - (1 - t)^3) between ``begin`` and ``end`` of training."""
    t = (step / max(total_steps, 1) - begin) / max(end - begin, 1e-9)
    t = min(max(t, 0.0), 1.0)
    return final_sparsity * (1.0 - (1.0 - t) ** 3)


def sparsity_of(params: Any, masks: Any | None = None) -> float:
    """Fraction of kernel weights that are zero (or masked out)."""
    total = zeros = 0
    tree = params if masks is None else apply_masks(params, masks)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if _is_kernel(path, leaf):
            a = np.asarray(leaf)
            total += a.size
            zeros += int((a == 0).sum())
    return zeros / max(total, 1)


def sparse_macs(dense_macs: int, params: Any, masks: Any) -> int:
    """MACs a kernel that skips zero weights could save, approximated as dense MACs × kept fraction.

    An approximation (layers differ in MACs per weight); dense XLA does not realise it at all.
    """
    return int(round(dense_macs * (1.0 - sparsity_of(params, masks))))


# ---------------------------------------------------------------- structured (channel) pruning


def channel_order(kernel: np.ndarray) -> np.ndarray:
    """Output channels (last axis) by decreasing L1 norm."""
    k = np.abs(np.asarray(kernel, np.float32))
    return np.argsort(-k.reshape(-1, k.shape[-1]).sum(axis=0), kind="stable")


def _slice_leaf(big: np.ndarray, shape: tuple[int, ...], order: np.ndarray | None) -> np.ndarray:
    big = np.asarray(big)
    if big.shape == tuple(shape):
        return big
    if big.ndim != len(shape) or any(s > b for s, b in zip(shape, big.shape)):
        raise ValueError(f"cannot slice a {big.shape} array down to {tuple(shape)}")
    index = []
    for axis, (s, b) in enumerate(zip(shape, big.shape)):
        if s == b:
            index.append(slice(None))
        elif axis == big.ndim - 1 and order is not None and len(order) == b:
            index.append(np.sort(order[:s]))
        else:
            index.append(slice(0, s))
    out = big
    for axis, idx in enumerate(index):  # one axis at a time: numpy's mixed fancy indexing reorders axes
        out = out[(slice(None),) * axis + (idx,)]
    return out


def slice_variables(big_variables: Any, small_variables: Any, *, by_l1: bool = False) -> Any:
    """Variables for a narrower model of the same structure, cut from a wider model's.

    ``small_variables`` only supplies the target shapes (e.g. from ``jax.eval_shape(small.init, ...)``).
    By default every axis keeps its leading channels (consistent across a conv, its BN and the next
    layer's input, like a slimmable network's sub-width). With ``by_l1``, the output channels of each kernel (and of the BN/bias leaves of the same
    module, which share its last axis) are the highest-L1 ones of the big kernel; input axes keep the
    leading channels, so this is a warm start for fine-tuning rather than an exact sub-network.
    """
    big_flat = dict(jax.tree_util.tree_flatten_with_path(big_variables)[0])
    small_flat, treedef = jax.tree_util.tree_flatten_with_path(small_variables)
    orders: dict[tuple, np.ndarray] = {}
    if by_l1:
        for path, leaf in big_flat.items():
            if _is_kernel(path, leaf):
                orders[tuple(str(getattr(p, "key", p)) for p in path[1:-1])] = channel_order(leaf)
    leaves = []
    for path, small in small_flat:
        if path not in big_flat:
            raise ValueError(f"{jax.tree_util.keystr(path)} is missing from the big model (depths differ?)")
        module = tuple(str(getattr(p, "key", p)) for p in path[1:-1])
        leaves.append(jnp.asarray(_slice_leaf(big_flat[path], tuple(small.shape), orders.get(module))))
    return jax.tree_util.tree_unflatten(treedef, leaves)
