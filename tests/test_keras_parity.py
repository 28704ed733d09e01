"""Logits of our converted models equal keras.applications' (an independent implementation)."""
import jax
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.weights import WeightConversionError, from_keras, to_keras
from helpers import calibrated_variables, structured_images

# Every test here builds Keras models (a minute or more each on 2 cores): the slow tier. Keras itself is
# imported by the fixture, so that collecting the fast tier does not pay for importing it.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")

KERAS_MODELS = {"efficientnet_b0": "EfficientNetB0", "efficientnet_b2": "EfficientNetB2", "efficientnet_b5": "EfficientNetB5"}


def keras_reference(keras, name):
    km = getattr(keras.applications, KERAS_MODELS[name])(weights=None, classifier_activation=None)
    # Keras rescales/normalizes inside the model; compare from the normalized input on.
    normalize = keras.Model(km.input, km.get_layer("stem_conv_pad").input)
    return km, normalize


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b2", "efficientnet_b5"])
def test_logits_match_keras(name, keras):
    size = ej.model_info(name).resolution
    km, normalize = keras_reference(keras, name)
    ours = calibrated_variables(name, seed=3)
    to_keras(ours, km)
    converted = from_keras(km)  # the direction users take: Keras -> ours
    np.testing.assert_equal(
        {k: np.asarray(v) for k, v in ej.weights.common.flatten(converted).items()},
        {k: np.asarray(v) for k, v in ej.weights.common.flatten(ours).items()},
    )
    # Raw 0..255 images through Keras's own normalization give our inputs.
    raw = np.concatenate([
        (structured_images("noise", 2, size, seed=7) + 2) * 63.75,
        (structured_images("smooth", 2, size, seed=8) + 1.5) * 85.0,
    ]).astype(np.float32)
    x = np.asarray(normalize(raw))
    reference = km.predict(raw, batch_size=len(raw), verbose=0)
    model = ej.create_model(name)
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(converted, x))

    scale = np.abs(reference).max()
    # The comparison is meaningful only if the reference depends on its input...
    assert np.abs(reference - reference.mean(0)).max() > 0.05 * scale
    # ...and is itself stable: a 1e-6 input change moves it far less than our tolerance.
    nudged = km.predict(raw + 1e-6 * np.random.default_rng(0).standard_normal(raw.shape).astype(np.float32) * 255,
                        batch_size=len(raw), verbose=0)
    assert np.abs(nudged - reference).max() < 1e-5 * scale
    relative = np.abs(logits - reference).max() / scale
    print(f"{name}: max |ours - keras| / max |logit| = {relative:.2e}")
    assert relative <= 1e-4


def test_wrong_variant_fails_loudly(keras):
    km, _ = keras_reference(keras, "efficientnet_b0")
    with pytest.raises(WeightConversionError, match="block"):
        from_keras(km, model_name="efficientnet_b1")


def test_load_pretrained_reads_a_local_keras_weights_file(tmp_path, keras):
    """The 'keras' source offline: the same code path as weights='imagenet', from a file."""
    from efficientnet_jax.weights import load_pretrained

    km = keras.applications.EfficientNetB0(weights=None)
    rng = np.random.default_rng(0)
    km.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in km.get_weights()])
    km.save_weights(tmp_path / "b0.weights.h5")
    model, variables = load_pretrained("efficientnet_b0", tmp_path / "b0.weights.h5")
    assert model.num_classes == 1000
    jax.tree.map(np.testing.assert_array_equal, variables, from_keras(km))
