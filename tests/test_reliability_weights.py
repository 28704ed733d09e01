"""Pretrained weights are checked against the run: another variant or other settings, leaves with no
place, non-finite values and lossy dtype casts are errors naming them; partial loading is explicit."""
import functools
import logging

import jax
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.weights import (WeightConversionError, load_pretrained, save_pretrained,
                                      save_variables)
from efficientnet_jax.weights.common import WeightFileError

TINY = dict(width=0.25, depth=0.34)


def tiny(name="efficientnet_b0", value=0.01, dtype=None, **overrides):
    model = ej.create_model(name, num_classes=10, **{**TINY, **overrides})
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    return model, jax.tree.map(lambda s: np.full(s.shape, value, dtype or s.dtype), shapes)


def start_run(model, path, partial=False):
    """What ``config.pretrained`` does, on a zero train state (no compilation)."""
    optax = pytest.importorskip("optax")
    from train.pretrained import load_into_state, read_pretrained
    from train.step import create_train_state

    abstract = jax.eval_shape(functools.partial(create_train_state, model, optax.identity(), image_size=32),
                              jax.random.key(0))
    state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    pretrained = read_pretrained(str(path), model.spec.name, model=model, partial=partial)
    return load_into_state(state, pretrained, jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def test_weights_of_another_variant_fail_naming_both_unless_partial(tmp_path, caplog):
    b0, _ = tiny()
    save_pretrained(tmp_path / "b1.msgpack", *tiny("efficientnet_b1", depth=1.0))
    with pytest.raises(WeightConversionError, match="holds efficientnet_b1 weights, not efficientnet_b0"):
        start_run(b0, tmp_path / "b1.msgpack")
    with caplog.at_level(logging.WARNING):
        state = start_run(b0, tmp_path / "b1.msgpack", partial=True)
    assert "leaves of the file are dropped" in caplog.text and "efficientnet_b1" in caplog.text
    assert float(state.params["stem_conv"]["kernel"].ravel()[0]) == pytest.approx(0.01)


def test_leaves_with_no_place_and_other_settings_are_errors(tmp_path):
    b0, _ = tiny()
    save_variables(tmp_path / "b1_plain.msgpack", tiny("efficientnet_b1", depth=1.0)[1])  # no settings recorded
    with pytest.raises(WeightConversionError, match="114 leaves of the file have no place in the model: batch_stats/stage2_block2"):
        start_run(b0, tmp_path / "b1_plain.msgpack")
    save_pretrained(tmp_path / "symmetric.msgpack", *tiny(padding="symmetric", bn_epsilon=1e-5))
    with pytest.raises(WeightConversionError, match="bn_epsilon=1e-05 \\(the run: 0.001\\).*padding='symmetric'"):
        start_run(b0, tmp_path / "symmetric.msgpack")
    save_pretrained(tmp_path / "good.msgpack", *tiny(dropout=0.5))  # a training choice: free to differ
    start_run(b0, tmp_path / "good.msgpack")


@pytest.mark.slow  # builds the tiny model's skeleton eight times
def test_non_finite_weights_and_lossy_dtypes_are_refused(tmp_path):
    b0, _ = tiny()
    save_pretrained(tmp_path / "nan.msgpack", *tiny(value=np.nan))
    with pytest.raises(WeightConversionError, match="NaN or infinite values in 197 weights"):
        load_pretrained("efficientnet_b0", tmp_path / "nan.msgpack")
    with pytest.raises(WeightConversionError, match="NaN or infinite"):
        start_run(b0, tmp_path / "nan.msgpack")
    for dtype in (np.float64, np.int8):
        save_pretrained(tmp_path / "cast.safetensors", b0, tiny(dtype=dtype)[1])
        with pytest.raises(WeightConversionError, match=f"{np.dtype(dtype).name} in .*the model needs float32"):
            load_pretrained("efficientnet_b0", tmp_path / "cast.safetensors")
        with pytest.raises(WeightConversionError, match="the model needs float32"):
            start_run(b0, tmp_path / "cast.safetensors")
    import jax.numpy as jnp

    save_pretrained(tmp_path / "bf16.msgpack", b0, tiny(dtype=jnp.bfloat16)[1])  # float32 <-> bfloat16: fine
    assert load_pretrained("efficientnet_b0", tmp_path / "bf16.msgpack")[1]["params"]["stem_conv"]["kernel"].dtype \
        == np.float32


def test_unreadable_files_raise_one_exception_type(tmp_path):
    (tmp_path / "x.msgpack").write_bytes(b"\x92\x01")
    pytest.importorskip("h5py")
    (tmp_path / "x.h5").write_bytes(b"junk")
    for name in ("x.msgpack", "x.h5"):
        with pytest.raises(WeightFileError, match=f"cannot read weights file .*{name}"):
            load_pretrained("efficientnet_b0", tmp_path / name)
