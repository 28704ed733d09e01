"""The train and eval steps: pure functions of (state, batch); ``train.py`` jits them with shardings.

The batch arrives split over every device (the mesh's ``data`` x ``fsdp`` axes), the state
replicated or split over ``fsdp`` (``train/sharding.py``). Batch-norm statistics are
means over the whole (global) batch, so under ``jax.jit`` they are synced across
devices without any explicit collective.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from train.optim import ema_update


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    ema_batch_stats: Any
    nonfinite_steps: jax.Array  # updates skipped because the loss or a gradient was NaN/Inf


def create_train_state(model, tx, key, image_size: int) -> TrainState:
    x = jnp.zeros((1, image_size, image_size, 3), model.dtype)
    variables = model.init(key, x, train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params),
        ema_params=params, ema_batch_stats=batch_stats, nonfinite_steps=jnp.zeros((), jnp.int32),
    )


def mix_batch(images, targets, key, mixup_alpha: float, cutmix_alpha: float):
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) with the batch reversed as partner.

    With both enabled, each step picks one at random. Targets are mixed in proportion to the
    pixels each image contributes.
    """
    if not (mixup_alpha or cutmix_alpha):
        return images, targets
    choose, lam_key, box_key = jax.random.split(key, 3)
    partner_images, partner_targets = images[::-1], targets[::-1]
    alpha = cutmix_alpha or mixup_alpha
    lam = jax.random.beta(lam_key, alpha, alpha)
    if cutmix_alpha:
        h, w = images.shape[1:3]
        cut_h, cut_w = jnp.sqrt(1 - lam) * h, jnp.sqrt(1 - lam) * w
        cy, cx = jax.random.uniform(box_key, (2,)) * jnp.array([h, w])
        rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
        inside = ((jnp.abs(rows - cy) < cut_h / 2) & (jnp.abs(cols - cx) < cut_w / 2))[None, :, :, None]
        cut = (jnp.where(inside, partner_images, images), 1 - jnp.mean(inside))
    if mixup_alpha:
        mixed = (lam * images + (1 - lam) * partner_images, lam)
    if cutmix_alpha and mixup_alpha:
        use_cut = jax.random.bernoulli(choose)
        images = jnp.where(use_cut, cut[0], mixed[0])
        lam = jnp.where(use_cut, cut[1], mixed[1])
    else:
        images, lam = cut if cutmix_alpha else mixed
    return images.astype(partner_images.dtype), lam * targets + (1 - lam) * partner_targets


def _loss_and_stats(model, params, batch_stats, images, targets, key):
    logits, updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"], rngs={"dropout": key},
    )
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    correct = jnp.sum(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
    return loss, (updates["batch_stats"], correct)


def train_step(state: TrainState, batch: dict, *, model, tx, schedule, base_key, label_smoothing: float,
               ema_decay: float, accum_steps: int = 1, mixup_alpha: float = 0.0,
               cutmix_alpha: float = 0.0) -> tuple[TrainState, dict]:
    """One optimizer update. With ``accum_steps > 1`` the batch is split into micro-batches whose
    gradients are averaged (each micro-batch normalizes with its own BN statistics)."""
    key, mix_key = jax.random.split(jax.random.fold_in(base_key, state.step))
    grad_fn = jax.value_and_grad(
        lambda p, bs, x, y, k: _loss_and_stats(model, p, bs, x, y, k), has_aux=True
    )
    images = batch["image"]
    labels = optax.smooth_labels(jax.nn.one_hot(batch["label"], model.num_classes), label_smoothing)
    images, labels = mix_batch(images, labels, mix_key, mixup_alpha, cutmix_alpha)
    if accum_steps == 1:
        (loss, (batch_stats, correct)), grads = grad_fn(state.params, state.batch_stats, images, labels, key)
    else:
        micro = lambda a: a.reshape(accum_steps, a.shape[0] // accum_steps, *a.shape[1:])  # noqa: E731

        def accumulate(carry, xs):
            batch_stats, grad_sum, loss_sum, correct_sum = carry
            x, y, i = xs
            (loss, (batch_stats, correct)), grads = grad_fn(
                state.params, batch_stats, x, y, jax.random.fold_in(key, i)
            )
            grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
            return (batch_stats, grad_sum, loss_sum + loss, correct_sum + correct), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        init = (state.batch_stats, zeros, jnp.zeros(()), jnp.zeros((), jnp.int32))
        (batch_stats, grad_sum, loss_sum, correct), _ = jax.lax.scan(
            accumulate, init, (micro(images), micro(labels), jnp.arange(accum_steps))
        )
        grads = jax.tree.map(lambda g: g / accum_steps, grad_sum)
        loss = loss_sum / accum_steps

    # One test for the whole update: a global norm is finite iff every element is (or it overflows past
    # 1e19: no update to apply either). The gradients and the optimizer's update are tested, so an
    # update that would make finite parameters non-finite (a learning rate of inf) is skipped too.
    # A non-finite step changes nothing but the counters: the state stays the last good one. Deciding
    # once, with the update applied inside the branch, keeps XLA from emitting a check and a select per
    # state array (thousands of tiny kernels to compile for the unrolled large models, and a pass over
    # the state every step).
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads)) & jnp.isfinite(optax.global_norm(updates))

    def apply_update(state: TrainState) -> TrainState:
        params = optax.apply_updates(state.params, updates)
        return state.replace(
            params=params, batch_stats=batch_stats, opt_state=opt_state,
            ema_params=ema_update(state.ema_params, params, state.step, ema_decay),
            ema_batch_stats=ema_update(state.ema_batch_stats, batch_stats, state.step, ema_decay),
        )

    kept = jax.lax.cond(finite, apply_update, lambda state: state, state)
    kept = kept.replace(step=state.step + 1, nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
    metrics = {
        "loss": loss, "accuracy": correct / labels.shape[0], "learning_rate": schedule(state.step),
        "finite": finite,
    }
    if "stop" in batch:  # each process's preemption flag; the max is taken over the global batch, i.e. all of them
        metrics["stop"] = jnp.max(batch["stop"])
    return kept, metrics


def eval_step(params, batch_stats, batch: dict, *, model) -> dict:
    """Sums over the real (mask=True) examples of a padded eval batch."""
    logits = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=False)
    logits = logits.astype(jnp.float32)
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top5 = jnp.any(jax.lax.top_k(logits, min(5, logits.shape[-1]))[1] == labels[:, None], axis=-1)
    return {
        "loss": jnp.sum(loss * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
        "correct_top5": jnp.sum(top5 * mask),
        "count": jnp.sum(mask),
    }
