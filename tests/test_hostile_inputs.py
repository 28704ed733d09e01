"""Hostile inputs to the library: every call either works or raises our clear error (a ValueError or
TypeError naming the problem and the fix), never a crash deep inside XLA or a silent wrong answer.

One tiny model is built once (its variables drawn without compiling ``init``); shape and dtype checks run under ``jax.eval_shape``
(tracing runs our checks, nothing compiles), and only a handful of concrete shapes are executed.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import efficientnet_jax as ej
from efficientnet_jax.weights import WeightConversionError, from_torch_state_dict, load_variables, save_variables

from helpers import random_variables

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TINY = dict(width=0.1, depth=0.1)


@pytest.fixture(scope="module")
def tiny():
    model = ej.create_model("efficientnet_b0", num_classes=3, **TINY)
    variables = random_variables(model, jnp.zeros((1, 32, 32, 3)))
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    return model, variables, apply


def outcome(fn, *args, **kwargs):
    """'ok' with the result, or the exception; anything that is not our kind of error fails the test."""
    try:
        return "ok", fn(*args, **kwargs)
    except (ValueError, TypeError) as e:
        assert len(str(e)) > 20, f"unhelpful message: {e!r}"
        return "error", e


DTYPES = [np.uint8, np.int32, np.int64, np.bool_, np.float16, np.float32, np.float64, np.complex64, jnp.bfloat16]


@pytest.mark.slow
@SETTINGS
@given(
    shape=st.lists(st.integers(0, 70), min_size=0, max_size=6).map(tuple),
    dtype=st.sampled_from(DTYPES),
)
def test_apply_any_shape_and_dtype_works_or_says_what_is_wrong(tiny, shape, dtype):
    model, variables, _ = tiny
    x = jax.ShapeDtypeStruct(shape, dtype)
    kind, result = outcome(jax.eval_shape, lambda v, x: model.apply(v, x, train=False), variables, x)
    valid = (len(shape) == 4 and shape[-1] == 3 and min(shape[1:3]) >= 32
             and jnp.issubdtype(dtype, jnp.floating))
    if valid:
        assert kind == "ok", result
        assert result.shape == (shape[0], 3)
    else:
        assert kind == "error", f"accepted {shape} {dtype}"
        message = str(result)
        if len(shape) != 4:
            assert "rank 4" in message
        elif shape[-1] != 3:
            assert "channels" in message
        elif not jnp.issubdtype(dtype, jnp.floating):
            assert "floating point" in message and "preprocess" in message
        else:
            assert "too small" in message and "32" in message


@pytest.mark.slow
def test_apply_runs_on_empty_batches_odd_sizes_and_nans(tiny):
    model, variables, apply = tiny
    empty = apply(variables, jnp.zeros((0, 32, 32, 3)))
    assert empty.shape == (0, 3)
    odd = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.ones((1, 33, 47, 3)))
    assert odd.shape == (1, 3) and np.isfinite(odd).all()
    # A NaN image gives NaN logits for that image only: visible, not a silent wrong answer for the others.
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    clean = apply(variables, x)
    x[1, 5, 5, 0] = np.nan
    poisoned = apply(variables, x)
    assert np.isnan(poisoned[1]).all()
    np.testing.assert_allclose(poisoned[0], clean[0], rtol=1e-6)
    half = apply(variables, jnp.asarray(x[:1], jnp.float16))  # half precision input is cast, not rejected
    np.testing.assert_allclose(half, clean[:1], rtol=0.05, atol=0.05)


def test_apply_rejects_non_arrays(tiny):
    model, variables, _ = tiny
    for bad in ([[1.0, 2.0]], None, "image.jpg", 3.0):
        kind, error = outcome(model.apply, variables, bad, train=False)
        assert kind == "error" and "images must be" in str(error)


@SETTINGS
@given(name=st.one_of(st.text(max_size=20), st.sampled_from(["efficientnet_b9", "EfficientNet_B0", "b0", ""]),
                      st.integers(), st.none()))
def test_unknown_model_names_list_the_known_ones(name):
    kind, error = outcome(ej.create_model, name)
    if name in ej.list_models():
        assert kind == "ok"
        return
    assert kind == "error" and "efficientnet_b0" in str(error)
    kind, error = outcome(ej.model_info, name)
    assert kind == "error" and "efficientnet_b0" in str(error)


BAD_OVERRIDES = {
    "width": [0.0, -1.0, float("nan"), float("inf"), "wide"],
    "depth": [0.0, -0.5, float("nan"), None],
    "resolution": [0, -224, 16, 2.5, "224"],
    "dropout": [-0.1, 1.0, 1.5, float("nan")],
    "drop_path": [-0.1, 1.0, 2.0],
    "bn_momentum": [-0.5, 1.5],
    "bn_epsilon": [0.0, -1e-3],
    "padding": ["valid", "SAME", None],
    "activation": ["gelu", "Swish", None],
    "stem_filters": [0, -32],
    "head_filters": [0],
    "stages": [(), None],
    "mean": [(1.0, 2.0)],
    "std": [(0.0, 1.0, 1.0), (1.0,)],
}


@SETTINGS
@given(field_and_value=st.sampled_from([(f, v) for f, values in BAD_OVERRIDES.items() for v in values]))
def test_bad_spec_overrides_fail_in_create_model_naming_the_field(field_and_value):
    field, value = field_and_value
    kind, error = outcome(ej.create_model, "efficientnet_b0", **{field: value})
    assert kind == "error", f"create_model accepted {field}={value!r}"
    assert field in str(error)


@SETTINGS
@given(num_classes=st.one_of(st.integers(-5, -1), st.floats(allow_nan=True), st.text(max_size=3), st.just(True)))
def test_bad_class_counts_are_refused(num_classes):
    kind, error = outcome(ej.create_model, "efficientnet_b0", num_classes=num_classes)
    assert kind == "error" and "num_classes" in str(error)


def test_unknown_options_name_the_fields():
    with pytest.raises(TypeError, match="unknown options.*'widht'.*spec fields"):
        ej.create_model("efficientnet_b0", widht=0.5)


# ---- Converters and weight files -------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_state_dict(tiny):
    """A valid efficientnet-pytorch state dict of the tiny model, made from our own variables."""
    from efficientnet_jax.weights.common import flatten
    from efficientnet_jax.weights.pytorch import state_dict_keys, torch_key

    model, variables, _ = tiny
    keys = state_dict_keys(model, torch_key)
    state = {}
    for path, value in flatten(variables).items():
        value = np.asarray(value)
        if value.ndim == 4:
            value = np.transpose(value, (3, 2, 0, 1))
        elif value.ndim == 2:
            value = value.T
        state[keys[path]] = value
    return state


def convert(state):
    return from_torch_state_dict(state, "efficientnet_b0", **TINY)


def test_round_trip_through_the_torch_format_is_exact(tiny, torch_state_dict):
    _, variables, _ = tiny
    converted = convert(torch_state_dict)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(converted), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@SETTINGS
@given(data=st.data())
def test_damaged_state_dicts_are_refused_naming_the_keys(torch_state_dict, data):
    keys = sorted(torch_state_dict)
    state = dict(torch_state_dict)
    damage = data.draw(st.sampled_from(["drop", "extra", "reshape", "transpose", "scalar", "string"]))
    key = data.draw(st.sampled_from([k for k in keys if not k.startswith("_fc")]))
    if damage == "drop":
        del state[key]
    elif damage == "extra":
        key = key + "_copy"
        state[key] = state[key[: -len("_copy")]]
    elif damage == "reshape":
        state[key] = np.zeros(state[key].shape + (2,), np.float32)
    elif damage == "transpose":
        if state[key].ndim < 2 or state[key].shape == state[key].shape[::-1]:
            state[key] = np.zeros((1,) + state[key].shape, np.float32)
        else:
            state[key] = np.ascontiguousarray(state[key].T)
    elif damage == "scalar":
        state[key] = np.float32(1.0)
    elif damage == "string":
        state[key] = "weights"
    kind, error = outcome(convert, state)
    assert kind == "error" and isinstance(error, WeightConversionError), damage
    expected = {"drop": "no source", "extra": key}.get(damage, "shape mismatch")
    assert expected in str(error), error


def test_state_dict_of_another_model_is_refused(torch_state_dict):
    with pytest.raises(WeightConversionError):
        from_torch_state_dict(torch_state_dict, "efficientnet_b3")
    with pytest.raises(ValueError, match="efficientnet_b0"):
        from_torch_state_dict(torch_state_dict, "efficientnet_b99")


@SETTINGS
@given(junk=st.one_of(st.binary(max_size=200), st.sampled_from([b"", b"\x80", b"\xc0", b"\x92\x01\x02", b"\xa3abc",
                                                                 b"\x81\xa6params\x01"])))
def test_load_variables_refuses_junk_bytes(tmp_path_factory, junk):
    path = tmp_path_factory.mktemp("junk") / "weights.msgpack"
    path.write_bytes(junk)
    kind, error = outcome(load_variables, path)
    assert kind == "error", f"load_variables returned {error!r} for junk bytes {junk[:20]!r}"
    assert str(path) in str(error)


def test_load_variables_round_trip_and_missing_file(tiny, tmp_path):
    _, variables, _ = tiny
    save_variables(tmp_path / "w.msgpack", variables)
    loaded = load_variables(tmp_path / "w.msgpack")
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="save_variables"):
        load_variables(tmp_path / "missing.msgpack")


def test_model_info_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ej.model_info("efficientnet_b0").width = 2.0
