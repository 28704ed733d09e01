"""Both depthwise implementations compute the same function, forward and backward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficientnet_jax.layers import DepthwiseConv, conv_padding, drop_path, resolve_depthwise_impl


def max_relative(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [15, 16])
@pytest.mark.parametrize("padding", ["same", "symmetric"])
def test_depthwise_taps_equals_xla(kernel, stride, size, padding):
    x = jax.random.normal(jax.random.key(0), (6, size, size + 1, 8))  # odd and even sizes at once
    layers = {impl: DepthwiseConv(kernel, stride, padding=padding, impl=impl) for impl in ("xla", "taps")}
    params = layers["xla"].init(jax.random.key(1), x)
    cotangent = jax.random.normal(jax.random.key(2), layers["xla"].apply(params, x).shape)

    def loss(impl):
        return lambda p, x: jnp.sum(layers[impl].apply(p, x) * cotangent)

    outs = {impl: jax.jit(layers[impl].apply)(params, x) for impl in layers}
    grads = {impl: jax.jit(jax.grad(loss(impl), argnums=(0, 1)))(params, x) for impl in layers}
    assert outs["taps"].shape == outs["xla"].shape
    assert max_relative(outs["taps"], outs["xla"]) <= 1e-5
    (gp_t, gx_t), (gp_x, gx_x) = grads["taps"], grads["xla"]
    assert max_relative(gx_t, gx_x) <= 1e-5
    assert max_relative(gp_t["params"]["kernel"], gp_x["params"]["kernel"]) <= 1e-5


def test_same_padding_matches_tf():
    assert conv_padding(224, 3, 2, "same") == (0, 1)
    assert conv_padding(225, 3, 2, "same") == (1, 1)
    assert conv_padding(112, 5, 2, "same") == (1, 2)
    assert conv_padding(56, 5, 1, "same") == (2, 2)
    assert conv_padding(56, 5, 2, "symmetric") == (2, 2)
    with pytest.raises(ValueError, match="padding"):
        conv_padding(56, 3, 1, "valid")


def test_depthwise_impl_choice():
    assert resolve_depthwise_impl("auto") == ("taps" if jax.default_backend() == "cpu" else "xla")
    with pytest.raises(ValueError, match="depthwise_impl"):
        resolve_depthwise_impl("cudnn")


def test_drop_path_drops_whole_examples():
    x = jnp.ones((1000, 2, 2, 3))
    y = drop_path(x, 0.75, jax.random.key(0))
    per_example = np.asarray(y.reshape(1000, -1))
    assert set(np.unique(per_example)) <= {np.float32(0.0), np.float32(1 / 0.75)}
    assert np.all(per_example.min(1) == per_example.max(1))  # all or nothing per example
    assert abs((per_example[:, 0] == 0).mean() - 0.25) < 0.05
    traced = jax.jit(drop_path)(x, jnp.float32(0.75), jax.random.key(0))  # a scanned stage's traced rate
    np.testing.assert_array_equal(traced, y)
