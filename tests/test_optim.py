"""The reference recipe's optimizer pieces equal direct implementations of the TF formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import efficientnet_jax as ej
from train.optim import ema_decay, ema_update, learning_rate_schedule, rmsprop_tf, weight_decay_mask


def test_rmsprop_tf_matches_numpy_reference():
    """TF1 RMSProp: ms starts at 1, eps inside the sqrt, lr inside the momentum (lr changes each step)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5,))
    lrs = np.linspace(0.05, 0.01, 20)
    schedule = lambda step: jnp.asarray(lrs)[step]  # noqa: E731
    grad = lambda w: 2 * a.T @ (a @ w - b) / len(b)  # noqa: E731 - least squares

    w_ref, ms, mom = np.zeros(3), np.ones(3), np.zeros(3)
    for step in range(20):
        g = grad(w_ref)
        ms = 0.9 * ms + 0.1 * g**2
        mom = 0.9 * mom + lrs[step] * g / np.sqrt(ms + 1e-3)
        w_ref = w_ref - mom

    tx = rmsprop_tf(schedule)
    w = jnp.zeros(3)
    state = tx.init(w)
    for _ in range(20):
        updates, state = tx.update(jnp.asarray(grad(np.asarray(w, np.float64)), jnp.float32), state, w)
        w = optax.apply_updates(w, updates)
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=2e-5, atol=1e-6)


def test_lr_schedule_at_reference_settings():
    """0.016 per 256 at batch 4096, 5 warm-up epochs, x0.97 every 2.4 epochs (staircase, from step 0)."""
    base, steps_per_epoch = 0.016 * 4096 / 256, 1_281_167 / 4096
    lr = learning_rate_schedule(base_lr=base, steps_per_epoch=steps_per_epoch)
    warmup = int(5 * steps_per_epoch)  # 1563

    def reference(step):
        if step < warmup:
            return base * step / warmup
        return base * 0.97 ** np.floor(step / (steps_per_epoch * 2.4))

    for step in [0, 1, 100, warmup - 1, warmup, 5000, 50_000, 109_474]:
        assert float(lr(step)) == pytest.approx(reference(step), rel=1e-5), step
    assert float(lr(warmup)) == pytest.approx(base * 0.97**2, rel=1e-6)  # 1563 / 750.7 -> 2 decays

    cosine = learning_rate_schedule(base_lr=1.0, steps_per_epoch=10, schedule="cosine", warmup_epochs=0,
                                    total_steps=100)
    assert [float(cosine(s)) for s in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate_schedule(base_lr=1.0, steps_per_epoch=1, schedule="linear")


def test_ema_warmup_formula():
    for step in [0, 1, 10, 1000, 10**6]:
        assert float(ema_decay(step, 0.9999)) == pytest.approx(min(0.9999, (1 + step) / (10 + step)), rel=1e-6)
    ema = ema_update({"w": jnp.ones(2)}, {"w": jnp.zeros(2)}, 0, 0.9999)
    np.testing.assert_allclose(ema["w"], 0.1)  # step 0: decay 1/10


def test_weight_decay_skips_batchnorm_and_biases():
    model = ej.create_model("efficientnet_b0", num_classes=10)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))["params"]
    mask = weight_decay_mask(params)
    assert mask["stem_conv"]["kernel"] and mask["classifier"]["kernel"]
    assert mask["stage2_block1"]["dw_conv"]["kernel"] and mask["stage2_block1"]["se"]["reduce"]["kernel"]
    assert not mask["stem_bn"]["scale"] and not mask["stem_bn"]["bias"]
    assert not mask["classifier"]["bias"] and not mask["stage2_block1"]["se"]["expand"]["bias"]
