"""Both depthwise implementations compute the same function, forward and backward; so do the 1x1
convolution's and batch norm's own backward passes and plain autodiff (of ``nn.BatchNorm``)."""
import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest

from efficientnet_jax.layers import (
    BatchNorm, DepthwiseConv, conv_padding, drop_path, gate_folding_pays, gated_pointwise, pointwise,
    resolve_depthwise_impl,
)


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


@pytest.mark.parametrize("shape", [(3, 5, 7, 8), (3, 5, 7, 24), (4, 1, 1, 16), (6, 8)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_pointwise_backward_equals_autodiff(shape, dtype):
    """Fewer input than output channels, more, the squeeze-excite 1x1 maps, and a plain matrix."""
    c_out = 16
    x = jax.random.normal(jax.random.key(0), shape, dtype)
    w = jax.random.normal(jax.random.key(1), (shape[-1], c_out), dtype)
    cotangent = jax.random.normal(jax.random.key(2), (*shape[:-1], c_out), dtype)
    einsum = lambda x, w: jnp.einsum("...c,cd->...d", x, w)  # noqa: E731
    ours, vjp = jax.vjp(pointwise, x, w)
    reference, reference_vjp = jax.vjp(einsum, x, w)
    np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(reference, np.float32))
    tolerance = 1e-6 if dtype == jnp.float32 else 1e-2
    for got, want in zip(vjp(cotangent), reference_vjp(cotangent)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert max_relative(got.astype(jnp.float32), want.astype(jnp.float32)) <= tolerance


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gated_pointwise_equals_gating_then_pointwise(dtype):
    """Squeeze-excitation's gate folded into per-image kernels: the same values and gradients as scaling the
    feature map first; and ``Conv1x1`` takes that path only where it pays."""
    x = jax.random.normal(jax.random.key(0), (3, 6, 5, 8), dtype)
    gate = jax.nn.sigmoid(jax.random.normal(jax.random.key(1), (3, 1, 1, 8), dtype))
    w = jax.random.normal(jax.random.key(2), (8, 4), dtype)
    cotangent = jax.random.normal(jax.random.key(3), (3, 6, 5, 4), dtype)
    ours, vjp = jax.vjp(gated_pointwise, x, gate, w)
    reference, reference_vjp = jax.vjp(lambda x, gate, w: jnp.einsum("...c,cd->...d", x * gate, w), x, gate, w)
    tolerance = 1e-6 if dtype == jnp.float32 else 2e-2
    assert max_relative(ours.astype(jnp.float32), reference.astype(jnp.float32)) <= tolerance
    for got, want in zip(vjp(cotangent), reference_vjp(cotangent)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert max_relative(got.astype(jnp.float32), want.astype(jnp.float32)) <= tolerance
    assert gate_folding_pays(x, 3) and not gate_folding_pays(x, 4)  # 30 pixels per image


@pytest.mark.parametrize("activation", [None, nn.swish, nn.relu6])
@pytest.mark.parametrize("train", [False, True])
def test_batch_norm_equals_flax_batch_norm_then_activation(activation, train):
    """Outputs, running averages and gradients, in float64 so that a different order of float32
    roundings in the backward pass is not mistaken for a different function."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (4, 5, 6, 8), jnp.float64) * 3 + 1
        options = dict(momentum=0.9, epsilon=1e-3, dtype=jnp.float64, param_dtype=jnp.float64)
        ours, reference = BatchNorm(activation=activation, **options), nn.BatchNorm(**options)
        variables = reference.init(jax.random.key(1), x, use_running_average=True)
        variables = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape, a.dtype), variables)
        assert jax.tree.structure(ours.init(jax.random.key(1), x, use_running_average=True)) == \
            jax.tree.structure(variables)
        cotangent = jax.random.normal(jax.random.key(2), x.shape, jnp.float64)

        def run(module, then):
            def apply(params, x):
                y, stats = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                        use_running_average=not train, mutable=["batch_stats"])
                return then(y), stats
            return apply

        apply_ours = run(ours, lambda y: y)
        apply_reference = run(reference, activation or (lambda y: y))

        def grads(apply):
            return jax.grad(lambda p, x: jnp.sum(apply(p, x)[0] * cotangent), argnums=(0, 1))(variables["params"], x)

        pairs = [(apply_ours(variables["params"], x), apply_reference(variables["params"], x)),
                 (grads(apply_ours), grads(apply_reference))]
        for got, want in pairs:
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                assert max_relative(a, b) <= 1e-12


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
