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
    # EfficientNetV2: Keras applications (include_top=True, trainable weights); XL: timm's 208.12M.
    "efficientnetv2_b0": 7_139_704, "efficientnetv2_b1": 8_141_052, "efficientnetv2_b2": 10_096_086,
    "efficientnetv2_b3": 14_358_406, "efficientnetv2_s": 21_458_488, "efficientnetv2_m": 54_139_356,
    "efficientnetv2_l": 118_515_272, "efficientnetv2_xl": 208_119_808,
}
# Batch-norm statistics (Keras's non-trainable weights).
PUBLISHED_BATCH_STATS = {
    "efficientnet_b0": 42_016, "efficientnetv2_b0": 60_608, "efficientnetv2_b1": 71_072,
    "efficientnetv2_b2": 82_288, "efficientnetv2_b3": 109_216, "efficientnetv2_s": 153_872,
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


@pytest.mark.parametrize("name", list(PUBLISHED_BATCH_STATS))
def test_batch_stats_equal_published(name):
    assert ej.count_params(abstract_variables(name)["batch_stats"]) == PUBLISHED_BATCH_STATS[name]


def test_v2_stages_follow_the_paper():
    s = ej.model_info("efficientnetv2_s").blocks()
    assert [b.block for b in s[:10]] == ["fused_mbconv"] * 10 and s[10].block == "mbconv"
    assert s[1].has_residual and s[0].has_residual  # S stage 1: 24 -> 24 at stride 1
    b0 = ej.model_info("efficientnetv2_b0")
    assert not b0.blocks()[0].has_residual  # B0 stage 1: 32 -> 16
    assert all(b.se_filters == 0 for b in b0.blocks() if b.block == "fused_mbconv")
    assert all(b.se_filters == b.in_filters // 4 for b in b0.blocks() if b.block == "mbconv")
    assert {b.kernel for b in b0.blocks()} == {3}
    assert (b0.stem_channels, b0.head_channels, b0.stage_repeats()) == (32, 1280, (1, 2, 2, 3, 5, 8))
    # No 90% floor in V2: 48 * 1.2 = 57.6 -> 56 (V1's rule would keep 56 too), 16 * 1.2 = 19.2 -> 16 (< 90%).
    b3 = ej.model_info("efficientnetv2_b3")
    assert [b.out_filters for b in b3.blocks()][:1] == [16] and ej.round_filters(16, 1.2) == 24
    assert (b3.stem_channels, b3.head_channels) == (40, 1536)


def test_v2_input_settings():
    """B0-B3 keep V1's preprocessing; S/M/L/XL were trained on (x - 128) / 128, evaluated uncropped."""
    assert ej.model_info("efficientnetv2_b2").mean == ej.model_info("efficientnet_b0").mean
    assert ej.model_info("efficientnetv2_b2").crop_pct == pytest.approx(260 / 292)
    for name in ("efficientnetv2_s", "efficientnetv2_m", "efficientnetv2_l", "efficientnetv2_xl"):
        info = ej.model_info(name)
        assert (info.mean, info.std, info.crop_pct) == ((128.0,) * 3, (128.0,) * 3, 1.0)
    assert ej.create_model("efficientnetv2_s", resolution=256).spec.crop_pct == pytest.approx(256 / 288)


def test_scaling_table():
    expected = {  # width, depth, resolution, dropout
        "efficientnetv2_b3": (1.2, 1.4, 300, 0.3), "efficientnetv2_m": (1.0, 1.0, 480, 0.3),
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
    assert ej.round_filters(16, 1.2, round_limit=0.0) == 16  # EfficientNetV2: no floor (V1: 24)


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
