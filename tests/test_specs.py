"""The family decoded from one spec has exactly the published sizes."""
import jax
import jax.numpy as jnp
import pytest

import efficientnet_jax as ej
from efficientnet_jax.scaling import flops_factor

# Trainable parameters at 1000 classes (timm, torchvision and the TF reference agree).
PUBLISHED_PARAMS = {
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960, "efficientnet_b8": 87_413_142,
    "efficientnet_l2": 480_309_308,
    # Lite: the counts of the reference PyTorch/timm implementation (tf_efficientnet_lite*).
    "efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680, "efficientnet_lite2": 6_092_072,
    "efficientnet_lite3": 8_197_096, "efficientnet_lite4": 13_006_568,
}


def abstract_variables(name, **kwargs):
    model = ej.create_model(name, **kwargs)
    r = model.spec.resolution
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, r, r, 3)), train=False))


def test_list_models():
    assert ej.list_models() == list(PUBLISHED_PARAMS)


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_param_counts_equal_published(name):
    assert ej.count_params(abstract_variables(name)["params"]) == PUBLISHED_PARAMS[name]


def test_b0_batch_stats():
    assert ej.count_params(abstract_variables("efficientnet_b0")["batch_stats"]) == 42_016


def test_scaling_table():
    expected = {  # width, depth, resolution, dropout
        "efficientnet_b0": (1.0, 1.0, 224, 0.2), "efficientnet_b3": (1.2, 1.4, 300, 0.3),
        "efficientnet_b7": (2.0, 3.1, 600, 0.5), "efficientnet_l2": (4.3, 5.3, 800, 0.5),
        "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    }
    for name, values in expected.items():
        info = ej.model_info(name)
        assert (info.width, info.depth, info.resolution, info.dropout) == values
    assert ej.model_info("efficientnet_b0").crop_pct == pytest.approx(0.875)
    assert ej.model_info("efficientnet_lite0").mean == (127.0, 127.0, 127.0)


def test_round_filters():
    assert ej.round_filters(32, 1.0) == 32
    assert ej.round_filters(32, 1.1) == 32  # 35.2 -> 32 (>= 90%)
    assert ej.round_filters(1280, 1.1) == 1408
    assert ej.round_filters(16, 1.4) == 24  # 22.4 -> 24
    assert ej.round_filters(24, 1.2) == 32  # 28.8 -> 32
    assert ej.round_filters(16, 0.5) == 8  # never below the divisor
    assert ej.round_filters(44, 1.0) == 44  # width 1 keeps the table exact
    assert ej.round_filters(100, 0.46) == 48  # 46 -> 48; the 90% floor: 40 < 41.4 would bump
    assert ej.round_filters(11, 1.1, divisor=8) == 16  # 12.1 -> 16 (8 < 0.9*12.1)


def test_round_repeats():
    assert [ej.round_repeats(r, 1.1) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert ej.round_repeats(3, 1.0) == 3


def test_compound_scaling():
    d, w, r = ej.compound_scaling(1.0)
    assert (d, w, r) == (pytest.approx(1.2), pytest.approx(1.1), 258)
    assert ej.compound_scaling(0.0) == (1.0, 1.0, 224)
    assert flops_factor() == pytest.approx(1.92, abs=0.01)  # alpha * beta^2 * gamma^2 ~= 2
    with pytest.raises(ValueError, match="alpha"):
        ej.compound_scaling(1.0, alpha=0.5)


@pytest.mark.parametrize("phi", [-1.0, 0.5, 8.0])
def test_custom_phi_builds(phi):
    d, w, r = ej.compound_scaling(phi)
    model = ej.create_model("efficientnet_b0", depth=d, width=w, resolution=r, num_classes=10)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, r, r, 3)), train=False))
    base = ej.count_params(abstract_variables("efficientnet_b0", num_classes=10)["params"])
    n = ej.count_params(variables["params"])
    assert (n < base) if phi < 0 else (n > base)
    assert model.spec.stage_repeats()[0] == ej.round_repeats(1, d)


def test_lite_keeps_stem_head_and_end_stages():
    spec = ej.model_info("efficientnet_lite4")
    assert (spec.stem_channels, spec.head_channels) == (32, 1280)
    repeats = spec.stage_repeats()
    assert repeats[0] == repeats[-1] == 1 and repeats[1] == ej.round_repeats(2, 1.8)
    assert all(b.se_filters == 0 for b in spec.blocks())


def test_drop_path_grows_linearly():
    blocks = ej.model_info("efficientnet_b0").blocks()
    rates = [b.drop_path for b in blocks]
    assert rates[0] == 0.0 and rates == sorted(rates) and rates[-1] == pytest.approx(0.2 * 15 / 16)
    assert [b.name for b in blocks[:3]] == ["stage1_block1", "stage2_block1", "stage2_block2"]


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="efficientnet_b0.*efficientnet_lite4"):
        ej.create_model("efficientnet_b9")
    with pytest.raises(ValueError, match="Available models"):
        ej.model_info("resnet50")
    with pytest.raises(TypeError, match="unknown options"):
        ej.create_model("efficientnet_b0", widht=1.2)
