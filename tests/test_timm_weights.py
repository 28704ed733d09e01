"""timm state dicts: the converter consumes exactly the real keys of five timm models, and gives
timm's own logits on small random models generated with real timm (tests/fixtures/make_timm_fixtures.py)."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import efficientnet_jax as ej
from efficientnet_jax.weights import WeightConversionError, from_timm_state_dict, load_pretrained
from efficientnet_jax.weights.pytorch import state_dict_keys
from efficientnet_jax.weights.timm import timm_key, timm_model_kwargs

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TIMM_KEYS = json.loads((FIXTURES / "timm_keys.json").read_text())["models"]
TINY = dict(width=0.25, depth=0.34)


@pytest.mark.parametrize("timm_name", sorted(TIMM_KEYS))
def test_converter_consumes_exactly_timms_keys(timm_name):
    shapes = TIMM_KEYS[timm_name]
    ours, overrides = timm_model_kwargs(timm_name)
    expected = {k for k in shapes if not k.endswith("num_batches_tracked")}
    assert set(state_dict_keys(ej.create_model(ours, **overrides), timm_key).values()) == expected
    state_dict = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    variables = from_timm_state_dict(state_dict, timm_name)  # every shape fits, or fill() raises
    assert ej.count_params(variables["params"]) == sum(
        np.prod(s) for k, s in shapes.items() if not k.endswith(("running_mean", "running_var", "tracked")))


def tiny_fixture(timm_name):
    tensors = load_file(FIXTURES / f"timm_tiny_{timm_name}.safetensors")
    images = tensors.pop("__test__.images").transpose(0, 2, 3, 1)
    return tensors, images, tensors.pop("__test__.logits_float64")


@pytest.mark.parametrize("timm_name", ["tf_efficientnet_b0", "efficientnet_b0", "tf_efficientnet_lite0",
                                       "tf_efficientnetv2_b0",
                                       pytest.param("tf_efficientnetv2_s", marks=pytest.mark.slow)])
def test_logits_match_timm(timm_name, tmp_path):
    """Exact in float64 (the architecture and the conversion); float32 adds only its own rounding, which
    grows with depth (V2-S's 26 tiny blocks reach ~2e-5 of the largest logit)."""
    state_dict, images, expected = tiny_fixture(timm_name)
    path = tmp_path / "timm.safetensors"
    save_file(state_dict, path)  # what a user downloads from the hub, read without torch
    model, variables = load_pretrained(timm_name, path, **TINY)
    scale = np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 0.05 * scale
    float32 = np.abs(np.asarray(jax.jit(model.apply)(variables, images)) - expected).max() / scale
    with jax.enable_x64(True):
        model64 = model.clone(dtype=jnp.float64, param_dtype=jnp.float64)
        as64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        float64 = np.abs(np.asarray(model64.apply(as64, jnp.asarray(images, jnp.float64))) - expected).max() / scale
    print(f"{timm_name}: max |ours - timm (float64)| / max |logit| = {float64:.1e} in float64, {float32:.1e} in float32")
    assert float64 <= 1e-10
    assert float32 <= 5e-5


def test_padding_follows_the_timm_variant():
    assert timm_model_kwargs("tf_efficientnet_b3.ns_jft_in1k") == ("efficientnet_b3", {})
    assert timm_model_kwargs("efficientnet_b3") == ("efficientnet_b3", {"padding": "symmetric", "bn_epsilon": 1e-5})
    assert timm_model_kwargs("tf_efficientnetv2_s.in21k_ft_in1k") == ("efficientnetv2_s", {})
    assert timm_model_kwargs("efficientnetv2_m")[1] == {"padding": "symmetric", "bn_epsilon": 1e-5}
    with pytest.raises(WeightConversionError, match="efficientnet_b0, "):  # another architecture
        timm_model_kwargs("efficientnetv2_rw_s")


def test_missing_and_extra_keys_are_named():
    state_dict, _, _ = tiny_fixture("tf_efficientnet_b0")
    broken = {k: v for k, v in state_dict.items() if k != "blocks.1.0.conv_pwl.weight"}
    with pytest.raises(WeightConversionError, match="stage2_block1/project_conv/kernel"):
        from_timm_state_dict(broken, "tf_efficientnet_b0", **TINY)
    with pytest.raises(WeightConversionError, match="blocks.9.0.conv_dw.weight"):
        from_timm_state_dict({**state_dict, "blocks.9.0.conv_dw.weight": np.zeros((8, 1, 3, 3))},
                             "tf_efficientnet_b0", **TINY)
    with pytest.raises(WeightConversionError, match="shape mismatch"):
        from_timm_state_dict(state_dict, "tf_efficientnet_b0", width=0.5, depth=0.34)
