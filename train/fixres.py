"""FixRes (Touvron et al. 2019): batch-norm statistics re-estimated at the test resolution.

A model trained at resolution r and tested at a larger r' sees objects at another apparent size and
computes activations whose statistics differ from the running averages it learned at r; its BN layers
then normalize with the wrong mean and variance. FixRes's cheapest correction keeps every weight and
only re-estimates those statistics on training images preprocessed as at test time, at r'. The
statistics here are the plain average of per-batch means and variances (``precise BN``), not a
momentum average, so the result depends on the images only, not on their order.
"""
from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from train import models


def reestimate_batch_stats(model, variables: dict, images: Iterable[np.ndarray]) -> dict:
    """``variables`` with every BN mean/var replaced by its average over the batches of ``images``.

    ``images``: normalized NHWC batches at the resolution the model will be evaluated at. Parameters
    are untouched; dropout and drop path are off, as at test time.
    """
    # Momentum 0: the running statistics a train-mode call returns are exactly the batch's.
    probe = models.with_settings(model, bn_momentum=0.0, **_regularizers_off(model))

    @jax.jit
    def batch_stats_of(params, batch_stats, x):
        _, updates = probe.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                 mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
        return updates["batch_stats"]

    total, count = None, 0
    for x in images:
        stats = batch_stats_of(variables["params"], variables["batch_stats"], jnp.asarray(x))
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        count += 1
    if count == 0:
        raise ValueError("reestimate_batch_stats needs at least one batch of images")
    return {**variables, "batch_stats": jax.tree.map(lambda s: s / count, total)}


def _regularizers_off(model) -> dict:
    off = {}
    for field in ("dropout", "drop_path"):
        try:
            models.setting(model, field)
        except (ValueError, AttributeError):
            continue
        off[field] = 0.0
    return off
