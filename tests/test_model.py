"""The Flax module: outputs, training mode, dtypes, remat, backbone features and input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import efficientnet_jax as ej

from helpers import random_variables

TINY = dict(width=0.25, depth=0.34, drop_path=0.0, dropout=0.0)  # a fast member of the family
SIZE = 64


def tiny(**kwargs):
    return ej.create_model("efficientnet_b0", num_classes=kwargs.pop("num_classes", 10), **{**TINY, **kwargs})


def images(n=2, size=SIZE, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, size, size, 3))


@pytest.fixture(scope="module")
def tiny_variables():
    """Variables of ``tiny()`` drawn without compiling its ``init`` (see ``helpers.random_variables``)."""
    return random_variables(tiny(), images(1))


@pytest.mark.slow
def test_every_parameter_gets_a_gradient(tiny_variables):
    model = tiny()
    x = images(4)
    variables = tiny_variables

    def loss(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

    grads = jax.jit(jax.grad(loss))(variables["params"])
    dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads) if not jnp.any(g != 0)]
    assert not dead


def test_train_mode_updates_batch_stats_and_uses_rngs(tiny_variables):
    model = tiny(drop_path=0.5, dropout=0.5)
    x = images(4)
    variables = tiny_variables
    run = jax.jit(lambda v, x, key: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}))
    out1, updated = run(variables, x, jax.random.key(1))
    out2, _ = run(variables, x, jax.random.key(2))
    assert not np.allclose(out1, out2)  # drop path and dropout are random in training
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], updated["batch_stats"])
    assert all(jax.tree.leaves(changed))
    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
    np.testing.assert_array_equal(evaluate(variables, x), evaluate(variables, x))


def test_features_and_headless_outputs(tiny_variables):
    model = tiny()
    x = images(2, size=96)
    features = jax.jit(lambda v, x: model.apply(v, x, train=False, features_only=True))(tiny_variables, x)
    names = ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head"]
    assert sorted(features) == sorted(names)
    strides = [96 // features[n].shape[1] for n in names]
    assert strides == [2, 2, 4, 8, 16, 16, 32, 32, 32]
    assert features["head"].shape[-1] == model.spec.head_channels

    headless = ej.create_model("efficientnet_b0", num_classes=0, **TINY)
    hv = {"params": {k: v for k, v in tiny_variables["params"].items() if k != "classifier"},
          "batch_stats": tiny_variables["batch_stats"]}
    pooled = jax.jit(lambda v, x: headless.apply(v, x, train=False))(hv, x)
    assert pooled.shape == (2, headless.spec.head_channels)


@pytest.mark.slow
def test_bfloat16_compute_with_float32_params(tiny_variables):
    x = images(2)
    f32 = tiny()
    variables = tiny_variables
    bf16 = tiny(dtype=jnp.bfloat16)
    out = jax.jit(lambda v, x: bf16.apply(v, x, train=False))(variables, x)
    ref = jax.jit(lambda v, x: f32.apply(v, x, train=False))(variables, x)
    assert out.dtype == jnp.bfloat16
    abstract = jax.eval_shape(lambda: bf16.init(jax.random.key(0), x, train=False))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract["params"]))
    assert float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref))) <= 0.05 * float(jnp.max(jnp.abs(ref))) + 1e-3


@pytest.mark.slow
def test_remat_changes_memory_not_results(tiny_variables):
    x = images(2)
    plain, remat = tiny(), tiny(remat=True)
    variables = tiny_variables

    def grads(model):
        def loss(p):
            out, _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, train=True,
                                 mutable=["batch_stats"])
            return jnp.sum(out**2)
        return jax.jit(jax.grad(loss))(variables["params"])

    # Recomputation reorders float sums; leaves whose true gradient is 0 carry only rounding
    # noise, so compare every leaf against the largest gradient.
    a, b = grads(plain), grads(remat)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(a))
    worst = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert worst <= 1e-4 * scale


@pytest.mark.slow  # two more compiles of the tiny model
def test_symmetric_padding_variant(tiny_variables):
    x = images(1, size=64)  # even sizes: TF "same" pads (0, 1) at stride 2, symmetric (1, 1)
    same, symmetric = tiny(), tiny(padding="symmetric")
    a = jax.jit(lambda v, x: same.apply(v, x, train=False))(tiny_variables, x)
    b = jax.jit(lambda v, x: symmetric.apply(v, x, train=False))(tiny_variables, x)
    assert a.shape == b.shape and not np.allclose(a, b, rtol=1e-3, atol=0)


def test_preprocess_uses_variant_statistics():
    img = np.full((8, 8, 3), 127, np.uint8)
    assert np.allclose(ej.preprocess(img, "efficientnet_lite0"), 0.0)
    b0 = ej.preprocess(img, "efficientnet_b0")
    assert b0.shape == (1, 8, 8, 3) and b0.dtype == jnp.float32


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((64, 64, 3), np.float32), ValueError, r"rank 4.*images\[None\]"),
        (np.zeros((1, 3, 64, 64), np.float32), ValueError, r"3 channels.*NCHW.*transpose"),
        (np.zeros((1, 64, 64, 1), np.float32), ValueError, r"3 channels in the last axis"),
        (np.zeros((1, 64, 64, 3), np.uint8), TypeError, r"floating point.*normalized.*got dtype uint8"),
        (np.zeros((1, 16, 16, 3), np.float32), ValueError, r"too small.*at least 32"),
        ([[1.0]], TypeError, r"must be an array"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad, error, message, tiny_variables):
    with pytest.raises(error, match=message):
        tiny().apply(tiny_variables, bad, train=False)
