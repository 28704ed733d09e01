"""The TF reference's optimizer pieces, built from optax parts: RMSProp, LR schedule, L2 mask, EMA.

Each matches the reference's formula exactly (tests compare against direct NumPy
implementations), so the paper's recipe transfers without re-tuning.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from train.pretrained import param_labels


def learning_rate_schedule(
    *,
    base_lr: float,
    steps_per_epoch: float,
    schedule: str = "exponential",
    warmup_epochs: float = 5.0,
    decay_factor: float = 0.97,
    decay_epochs: float = 2.4,
    total_steps: int | None = None,
) -> Callable[[jax.Array], jax.Array]:
    """TF reference ``build_learning_rate``: linear warm-up from 0, then staircase exponential or cosine.

    The decay counts from step 0, not from the end of warm-up, as in the reference.
    """
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    decay_steps = steps_per_epoch * decay_epochs
    if schedule not in ("exponential", "cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'exponential', 'cosine' or 'constant', got {schedule!r}")
    if schedule == "cosine" and not total_steps:
        raise ValueError("the cosine schedule needs total_steps")

    def lr(step):
        step = jnp.asarray(step, jnp.float32)
        if schedule == "exponential":
            decayed = base_lr * decay_factor ** jnp.floor(step / decay_steps)
        elif schedule == "cosine":
            decayed = 0.5 * base_lr * (1 + jnp.cos(math.pi * step / total_steps))
        else:
            decayed = jnp.full_like(step, base_lr)
        if warmup_steps <= 0:
            return decayed
        return jnp.where(step < warmup_steps, base_lr * step / warmup_steps, decayed)

    return lr


def weight_decay_mask(params: Any) -> Any:
    """True for conv and dense kernels; False for BN scale/bias and every bias."""
    def keep(path, _):
        return str(getattr(path[-1], "key", path[-1])) == "kernel"

    return jax.tree_util.tree_map_with_path(keep, params)


def rmsprop_tf(learning_rate, *, decay: float = 0.9, momentum: float = 0.9, eps: float = 1e-3) -> optax.GradientTransformation:
    """TF1 RMSProp: ms starts at 1, eps inside the sqrt, and the LR applied *inside* the momentum.

    mom = momentum * mom + lr * g / sqrt(ms + eps); var -= mom. Scaling by the LR before the
    momentum trace (unlike ``optax.rmsprop``) matters whenever the LR changes over time.
    """
    return optax.chain(
        optax.scale_by_rms(decay=decay, eps=eps, initial_scale=1.0, eps_in_sqrt=True),
        optax.scale_by_learning_rate(learning_rate),
        optax.trace(decay=momentum),
    )


def build_optimizer(config, *, steps_per_epoch: float, total_steps: int, params: Any):
    """The optimizer the config asks for, and its LR schedule (for logging)."""
    base_lr = config.learning_rate * (config.batch_size / 256 if config.scale_lr_by_batch else 1.0)
    schedule = learning_rate_schedule(
        base_lr=base_lr, steps_per_epoch=steps_per_epoch, schedule=config.lr_schedule,
        warmup_epochs=config.warmup_epochs, decay_factor=config.lr_decay_factor,
        decay_epochs=config.lr_decay_epochs, total_steps=total_steps,
    )
    name = config.optimizer
    if name == "rmsprop_tf":
        core = rmsprop_tf(schedule, decay=config.rmsprop_decay, momentum=config.momentum, eps=config.rmsprop_eps)
    elif name == "sgd":
        core = optax.sgd(schedule, momentum=config.momentum, nesterov=True)
    elif name == "adamw":
        # AdamW decays decoupled from the gradient; L2 below is then usually 0.
        core = optax.adamw(schedule, weight_decay=config.adamw_weight_decay,
                           mask=weight_decay_mask(params))
    else:
        raise ValueError(f"optimizer must be 'rmsprop_tf', 'sgd' or 'adamw', got {name!r}")
    parts = []
    if config.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.weight_decay:
        # L2 in the loss, as the reference: grad += wd * w (its loss adds wd * sum(w^2) / 2).
        parts.append(optax.add_decayed_weights(config.weight_decay, mask=weight_decay_mask(params)))
    tx = optax.chain(*parts, core)
    if config.freeze_backbone or config.backbone_lr_multiplier != 1.0:
        # Fine-tuning: the backbone apart from the head.
        backbone = (optax.set_to_zero() if config.freeze_backbone
                    else optax.chain(tx, optax.scale(config.backbone_lr_multiplier)))
        tx = optax.multi_transform({"head": tx, "backbone": backbone}, param_labels(params))
    return tx, schedule


def ema_decay(step: jax.Array, decay: float) -> jax.Array:
    """tf.train.ExponentialMovingAverage with num_updates: min(decay, (1 + step) / (10 + step))."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Any, new: Any, step: jax.Array, decay: float) -> Any:
    d = ema_decay(step, decay)
    return jax.tree.map(lambda e, x: (d * e + (1.0 - d) * x).astype(e.dtype), ema, new)
