"""MobileNetV2, ResNet-18 and ResNet-50: published sizes at 1.0, our conventions, and multipliers that scale MACs."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax import similarity
from efficientnet_jax.families import MobileNetV2, ResNet18, ResNet50

# torchvision's models at 1000 classes (mobilenet_v2: 3,504,872 params, 0.30 GMACs;
# resnet18: 11,689,512 params, 1.81 GMACs; resnet50 (v1.5): 25,557,032 params, 4.09 GMACs), the same
# as the papers' tables.
PUBLISHED = {MobileNetV2: (3_504_872, 300e6), ResNet18: (11_689_512, 1.814e9), ResNet50: (25_557_032, 4.089e9)}


def abstract(model, size=224):
    init = functools.partial(model.init, train=False)
    return jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))


def random_variables(model, size=32, seed=0):
    """Variables of the right structure without compiling init (which takes ~10 s on CPU)."""
    rng = np.random.default_rng(seed)
    variables = abstract(model, size)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if "var" in name:
            return jnp.ones(leaf.shape, leaf.dtype)
        fan_in = max(1, int(np.prod(leaf.shape[:-1])))
        return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, variables)


def macs(model, size=224):
    return ej.count_flops(model, abstract(model, size), (1, size, size, 3))


@pytest.mark.parametrize("cls", [MobileNetV2, ResNet18, ResNet50])
def test_published_params_and_macs(cls):
    params, published_macs = PUBLISHED[cls]
    model = cls()
    assert ej.count_params(abstract(model)["params"]) == params
    assert macs(model) == pytest.approx(published_macs, rel=0.01)


def test_multipliers_use_the_shared_rounding_rules():
    variables = abstract(MobileNetV2(width=0.75, depth=1.5, num_classes=10), 64)["params"]
    stages = {k.split("_")[0] for k in variables if k.startswith("stage")}
    assert len(stages) == 7
    assert "stage4_block6" in variables and "stage4_block7" not in variables  # ceil(1.5 * 4) = 6
    assert variables["stem_conv"]["kernel"].shape[-1] == ej.round_filters(32, 0.75) == 24
    assert variables["head_conv"]["kernel"].shape[-1] == 1280  # head only grows with width > 1
    variables = abstract(ResNet18(width=1.3, depth=1.4, num_classes=10), 64)["params"]
    assert "stage2_block3" in variables and "stage2_block4" not in variables  # ceil(1.4 * 2) = 3
    assert variables["stage4_block1"]["conv1"]["kernel"].shape[-1] == ej.round_filters(512, 1.3)
    variables = abstract(ResNet50(width=0.75, depth=1.4, num_classes=10), 64)["params"]
    assert "stage3_block9" in variables and "stage3_block10" not in variables  # ceil(1.4 * 6) = 9
    block = variables["stage2_block1"]  # bottleneck ×0.75 = 96, output exactly 4× that
    assert block["conv2"]["kernel"].shape == (3, 3, 96, 96) and block["conv3"]["kernel"].shape == (1, 1, 96, 384)
    assert block["down_conv"]["kernel"].shape == (1, 1, 4 * 48, 384)  # stage 1 outputs 4 × round_filters(64, 0.75)


@pytest.mark.parametrize("cls", [pytest.param(MobileNetV2, marks=pytest.mark.slow), ResNet18,
                                 pytest.param(ResNet50, marks=pytest.mark.slow)])  # ~10 s each to trace
def test_multipliers_scale_macs_as_expected(cls):
    base = macs(cls())
    assert 1.85 < macs(cls(depth=2.0)) / base < 2.1  # stages double, stem and head do not
    assert 3.6 < macs(cls(width=2.0)) / base < 4.0  # ~w² (stem input and classifier ~w)
    assert macs(cls(), 448) / base == pytest.approx(4.0, rel=0.01)  # resolution: r²
    assert macs(cls(width=0.5)) / base < 0.35


@pytest.mark.parametrize("cls", [pytest.param(MobileNetV2, marks=pytest.mark.slow), ResNet18])
def test_forward_conventions(cls):
    model = cls(num_classes=10, width=0.5, depth=0.5)
    backbone = model.clone(num_classes=0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)

    assert set(abstract(model, 32)) == {"params", "batch_stats"}

    @jax.jit
    def run(variables, x):  # one compilation for both modes
        return model.apply(variables, x, train=False), model.apply(variables, x, train=False, features_only=True)

    variables = random_variables(model)
    logits, feats = run(variables, x)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
    assert {"stem", "stage1", "stage4"} <= set(feats)
    assert all(f.shape[0] == 2 and f.ndim == 4 for f in feats.values())
    last = "head" if "head" in feats else "stage4"
    pooled = jax.eval_shape(lambda v: backbone.apply(v, x, train=False), variables)
    assert pooled.shape == (2, feats[last].shape[-1])
    def train(v):
        return model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)})

    out, updates = jax.eval_shape(train, variables)
    assert out.shape == (2, 10)
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])
    with pytest.raises(ValueError, match="NHWC"):
        jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 3, 32, 32)), train=False), variables)


def test_compare_models_on_a_family():
    """The CKA helper runs on any model with features_only: a model against itself is all-ones on the diagonal."""
    model = ResNet18(num_classes=10, width=0.25, depth=0.5)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(12, 32, 32, 3)), jnp.float32)
    variables = random_variables(model)
    matrix, labels_a, labels_b = similarity.compare_models(model, variables, model, variables, x, batch_size=8)  # 8 + 4 padded
    assert labels_a == labels_b == ["stem", "stage1", "stage2", "stage3", "stage4"]
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-9)
    pooled = similarity.extract_features(model, variables, x, pool=True, batch_size=12)
    assert pooled["stage4"].shape == (12, ej.round_filters(512, 0.25))
