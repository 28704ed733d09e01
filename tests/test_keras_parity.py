"""Logits of our converted models equal keras.applications' (an independent implementation)."""
import jax
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.flops import jaxpr_macs
from efficientnet_jax.weights import WeightConversionError, from_keras, to_keras
from efficientnet_jax.weights.keras import KERAS_APPLICATIONS
from helpers import calibrated_variables, structured_images

# Every test here builds Keras models (a minute or more each on 2 cores): the slow tier. Keras itself is
# imported by the fixture, so that collecting the fast tier does not pay for importing it.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")

def keras_reference(keras, name, **kwargs):
    """The Keras model and the part of it before the stem conv (its input normalization)."""
    km = getattr(keras.applications, KERAS_APPLICATIONS[name])(weights=None, classifier_activation=None, **kwargs)
    stem_input = "stem_conv_pad" if "stem_conv_pad" in [layer.name for layer in km.layers] else "stem_conv"
    normalize = keras.Model(km.input, km.get_layer(stem_input).input)
    return km, normalize


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b2", "efficientnet_b5", "efficientnetv2_b0",
                                  "efficientnetv2_s"])
def test_logits_match_keras(name, keras):
    """Compared from the normalized input on (V2: ``include_preprocessing=False``, the bare network)."""
    size = ej.model_info(name).resolution
    bare = "v2" in name
    km, normalize = keras_reference(keras, name, **({"include_preprocessing": False} if bare else {}))
    # Raw 0..255 images through Keras's own normalization (V1) or ours (V2, bare) give our inputs.
    raw = np.concatenate([
        (structured_images("noise", 2, size, seed=7) + 2) * 63.75,
        (structured_images("smooth", 2, size, seed=8) + 1.5) * 85.0,
    ]).astype(np.float32)
    if bare:
        raw = np.asarray(ej.preprocess(raw, name))
    x = np.asarray(normalize(raw))
    unit = 1.0 if bare else 255.0  # one unit of Keras's input, on the scale of the normalized input
    # V2-B0 calibrated on other images amplifies a 1e-6 input change to ~1e-2 of its logits (Keras's too), so
    # the V2 models are calibrated on the compared batch; V1 is stable either way and keeps the 'mixed' batch.
    ours = calibrated_variables(name, seed=3, images=x if bare else None)
    to_keras(ours, km)
    converted = from_keras(km)  # the direction users take: Keras -> ours
    np.testing.assert_equal(
        {k: np.asarray(v) for k, v in ej.weights.common.flatten(converted).items()},
        {k: np.asarray(v) for k, v in ej.weights.common.flatten(ours).items()},
    )
    reference = km.predict(raw, batch_size=len(raw), verbose=0)
    model = ej.create_model(name)
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(converted, x))

    scale = np.abs(reference).max()
    # The comparison is meaningful only if the reference depends on its input...
    assert np.abs(reference - reference.mean(0)).max() > 0.05 * scale
    # ...and is itself stable: a 1e-6 input change moves it far less than our tolerance.
    nudged = km.predict(raw + 1e-6 * np.random.default_rng(0).standard_normal(raw.shape).astype(np.float32) * unit,
                        batch_size=len(raw), verbose=0)
    assert np.abs(nudged - reference).max() < 1e-5 * scale
    relative = np.abs(logits - reference).max() / scale
    print(f"{name}: max |ours - keras| / max |logit| = {relative:.2e}")
    assert relative <= 1e-4


@pytest.mark.parametrize("name", ["efficientnetv2_b2", "efficientnetv2_m"])
def test_v2_preprocessing_is_model_info(name, keras):
    """Keras's include_preprocessing layers compute (x - mean) / std with model_info's mean and std (B models:
    ImageNet statistics; S/M/L: (x - 128) / 128), and are skipped by the converter."""
    km, normalize = keras_reference(keras, name, include_top=False, input_shape=(64, 64, 3))
    raw = (np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3))).astype(np.float32)
    np.testing.assert_allclose(np.asarray(normalize(raw)), np.asarray(ej.preprocess(raw, name)), atol=1e-5)
    variables = from_keras(km)
    assert "classifier" not in variables["params"] and "stem_conv" in variables["params"]


@pytest.mark.parametrize("name", ["efficientnetv2_b0", "efficientnetv2_s"])
def test_v2_macs_equal_keras(name, keras):
    """count_flops of ours equals the same jaxpr counter run on the Keras model (JAX backend) at the eval size."""
    r = ej.model_info(name).resolution
    km, _ = keras_reference(keras, name, include_preprocessing=False)
    x = jax.ShapeDtypeStruct((1, r, r, 3), np.float32)
    trainable, non_trainable = ([v.value for v in vs] for vs in (km.trainable_variables, km.non_trainable_variables))
    keras_call = lambda x: km.stateless_call(trainable, non_trainable, x)[0]  # noqa: E731
    model = ej.create_model(name)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, r, r, 3), np.float32)))
    assert ej.count_flops(model, variables, (1, r, r, 3)) == jaxpr_macs(jax.make_jaxpr(keras_call)(x).jaxpr)


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
