"""Pruning baselines: global magnitude masks, masked fine-tuning, channel slicing that cuts real MACs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import efficientnet_jax as ej
from efficientnet_jax import pruning


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32),
                 "bias": jnp.asarray(rng.normal(size=(8,)), jnp.float32)},
        "dense": {"kernel": jnp.asarray(rng.normal(size=(8, 10)) * 0.1, jnp.float32)},
        "bn": {"scale": jnp.ones((8,))},
    }


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_global_magnitude_masks_hit_the_target_and_keep_the_largest(sparsity):
    params = _params()
    masks = pruning.magnitude_masks(params, sparsity)
    assert pruning.sparsity_of(params, masks) == pytest.approx(sparsity, abs=1 / 368)
    assert bool(jnp.all(masks["conv"]["bias"])) and bool(jnp.all(masks["bn"]["scale"]))
    kept = np.concatenate([np.abs(np.asarray(params[m]["kernel"]))[np.asarray(masks[m]["kernel"])]
                           for m in ("conv", "dense")])
    dropped = np.concatenate([np.abs(np.asarray(params[m]["kernel"]))[~np.asarray(masks[m]["kernel"])]
                              for m in ("conv", "dense")])
    if sparsity:
        assert dropped.max() <= kept.min()  # one global threshold
        # global, not per layer: the small dense weights are pruned far more than the conv ones
        assert 1 - float(jnp.mean(masks["dense"]["kernel"])) > 1 - float(jnp.mean(masks["conv"]["kernel"]))


def test_masked_updates_keep_pruned_weights_at_zero():
    params = _params()
    masks = pruning.magnitude_masks(params, 0.7)
    params = pruning.apply_masks(params, masks)
    tx = optax.chain(optax.adam(0.1), pruning.masked_updates(masks))
    state = tx.init(params)
    for _ in range(3):
        grads = jax.tree_util.tree_map(jnp.ones_like, params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert pruning.sparsity_of(params) == pytest.approx(pruning.sparsity_of(params, masks))
    assert pruning.sparsity_of(params) >= 0.69


def test_prune_schedule_is_cubic_and_reaches_the_target():
    assert pruning.prune_schedule(0, 100, 0.8) == 0.0
    assert pruning.prune_schedule(75, 100, 0.8) == pytest.approx(0.8)
    assert pruning.prune_schedule(100, 100, 0.8) == pytest.approx(0.8)
    assert 0 < pruning.prune_schedule(20, 100, 0.8) < 0.8


def test_unstructured_sparsity_does_not_change_dense_macs_but_sparse_estimate_drops():
    params = _params()
    masks = pruning.magnitude_masks(params, 0.5)
    assert pruning.sparse_macs(1000, params, masks) == pytest.approx(500, abs=3)


class _TinyCNN(nn.Module):
    """Conv-BN-conv-dense: enough structure (a conv feeding a BN and the next conv) to slice, compiles in ms."""
    width: int = 16

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (3, 3), strides=2, use_bias=False, name="stem")(x)
        x = nn.BatchNorm(use_running_average=not train, name="stem_bn")(x)
        x = nn.Conv(2 * self.width, (3, 3), name="conv")(nn.relu(x))
        return nn.Dense(10, name="head")(jnp.mean(nn.relu(x), axis=(1, 2)))


@pytest.mark.slow  # traces two models to count their MACs
@pytest.mark.parametrize("by_l1", [False, True])
def test_channel_slicing_builds_a_narrower_model_with_fewer_macs(by_l1):
    big, small = _TinyCNN(width=16), _TinyCNN(width=8)
    x = jnp.ones((2, 16, 16, 3))
    big_vars = big.init(jax.random.key(0), x)
    small_shapes = jax.eval_shape(lambda k: small.init(k, x), jax.random.key(0))
    small_vars = pruning.slice_variables(big_vars, small_shapes, by_l1=by_l1)
    assert jax.tree_util.tree_map(jnp.shape, small_vars) == jax.tree_util.tree_map(jnp.shape, small_shapes)
    out = small.apply(small_vars, x)
    assert out.shape == (2, 10) and bool(jnp.all(jnp.isfinite(out)))
    big_macs = ej.count_flops(big, big_vars, (1, 16, 16, 3))
    small_macs = ej.count_flops(small, small_vars, (1, 16, 16, 3))
    assert small_macs < 0.35 * big_macs  # the 3x3 conv's MACs fall 4x with both of its widths halved
    kernel = np.asarray(big_vars["params"]["stem"]["kernel"])
    kept = np.asarray(small_vars["params"]["stem"]["kernel"])
    if by_l1:  # the 8 stem filters with the largest L1 norm, in their original order
        top = np.sort(np.argsort(-np.abs(kernel).reshape(-1, 16).sum(0))[:8])
        np.testing.assert_array_equal(kept, kernel[..., top])
    else:  # leading channels everywhere: the small model is the big one's sub-width
        np.testing.assert_array_equal(kept, kernel[..., :8])
        np.testing.assert_array_equal(np.asarray(small_vars["batch_stats"]["stem_bn"]["mean"]),
                                      np.asarray(big_vars["batch_stats"]["stem_bn"]["mean"])[:8])


def test_slicing_refuses_a_deeper_target():
    with pytest.raises(ValueError):
        pruning.slice_variables({"params": {"a": {"kernel": jnp.ones((2, 4))}}},
                                {"params": {"a": {"kernel": jnp.ones((2, 8))}}})
