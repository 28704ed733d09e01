"""train.models: every name config.model accepts, one error for the rest, and the model_factory hook."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest

import efficientnet_jax as ej
from efficientnet_jax.families import MobileNetV2, ResNet18, ResNet50
from helpers import TinyNet
from train import models
from train.configs import base


def config(model, **overrides):
    cfg = base.get_config()
    cfg.model, cfg.model_overrides = model, overrides
    return cfg


def abstract_params(model, size=32):
    init = functools.partial(model.init, train=False)
    return jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))["params"]


def test_every_name_resolves_and_builds():
    names = models.model_names()
    assert set(ej.list_models()) < set(names) and {"mobilenet_v2", "resnet18", "resnet50"} < set(names)
    for name in names:
        model = models.build_model(config(name), 10)
        assert isinstance(model, nn.Module) and model.num_classes == 10
        settings = models.data_settings(name)
        assert settings.resolution >= 224 and len(settings.mean) == len(settings.std) == 3
    assert isinstance(models.build_model(config("resnet50"), 5), ResNet50)
    assert models.data_settings("efficientnet_lite0").mean == ej.model_info("efficientnet_lite0").mean
    assert models.data_settings("resnet18").resolution == 224


def test_unknown_names_and_overrides_fail_with_one_clear_error():
    for bad in ("resnet34", "efficientnet_b9", None):
        with pytest.raises(ValueError) as error:
            models.data_settings(bad)
        assert all(name in str(error.value) for name in models.model_names())
        with pytest.raises(ValueError):
            models.build_model(config(bad), 10)
    with pytest.raises(ValueError, match="widht"):
        models.build_model(config("resnet18", widht=0.5), 10)
    with pytest.raises(ValueError, match="widht"):
        models.build_model(config("efficientnet_b0", widht=0.5), 10)
    with pytest.raises(ValueError, match="remat"):
        models.build_model(ml_collections.ConfigDict({**config("mobilenet_v2").to_dict(), "remat": True}), 10)


def test_overrides_reach_the_family_module():
    model = models.build_model(config("resnet18", width=0.5, depth=0.5), 7)
    assert isinstance(model, ResNet18) and (model.width, model.depth) == (0.5, 0.5)
    cfg = config("mobilenet_v2", width=0.25)
    cfg.dtype = "bfloat16"
    assert models.build_model(cfg, 3).dtype == jnp.bfloat16


def test_settings_change_hyperparameters_not_parameters():
    """Progressive learning swaps the dropout rate of a built model; its parameters must not change."""
    b0 = models.build_model(config("efficientnet_b0", width=0.25, depth=0.34), 10)
    assert models.setting(b0, "dropout") == 0.2
    changed = models.with_settings(b0, dropout=0.05)
    assert models.setting(changed, "dropout") == 0.05 and changed.spec.width == 0.25
    assert jax.tree.structure(abstract_params(changed)) == jax.tree.structure(abstract_params(b0))
    small = MobileNetV2(num_classes=10, width=0.25)
    assert models.setting(models.with_settings(small, bn_momentum=0.0), "bn_momentum") == 0.0
    with pytest.raises(ValueError, match="dropout must be"):
        models.with_settings(b0, dropout=1.5)
    with pytest.raises(ValueError, match="no field"):
        models.setting(small, "drop_path")


@pytest.mark.slow
def test_model_factory_trains_an_in_memory_module(tmp_path, data_dir):
    from train.configs import digits
    from train.train import resolve_config, train_and_evaluate

    cfg = digits.get_config("runlocal")
    cfg.data_dir, cfg.model, cfg.num_train_steps, cfg.log_every_steps = data_dir, "tiny_net", 2, 1
    built = []

    def factory(num_classes, dtype):
        built.append((num_classes, dtype))
        return TinyNet(num_classes=num_classes, dtype=dtype)

    result = train_and_evaluate(cfg, tmp_path, model_factory=factory)
    assert built == [(10, jnp.float32)]
    assert result["examples"] == 360 and 0.0 <= result["accuracy"] <= 1.0
    assert '"tiny_net"' in (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="tiny_net"):  # without the factory, the name must be one of ours
        resolve_config(cfg)
    cfg.image_size = None
    with pytest.raises(ValueError, match="image_size"):
        resolve_config(cfg, custom_model=True)
