"""Fine-tuning: converted weights load into the train state, the head is replaced, the backbone can be frozen."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.weights import WeightConversionError, load_variables, save_variables
from helpers import final_state
from train.configs import finetune


@pytest.fixture(scope="module")
def pretrained_file(tmp_path_factory):
    """'Pretrained' Lite0-family weights with a 1000-class head, saved as users save converted weights."""
    model = ej.create_model("efficientnet_lite0", num_classes=1000, width=0.25, depth=0.34)
    variables = jax.jit(model.init, static_argnames="train")(jax.random.key(7), jnp.zeros((1, 32, 32, 3)), train=False)
    path = tmp_path_factory.mktemp("weights") / "lite0.msgpack"
    save_variables(path, variables)
    return path, variables


@pytest.mark.slow
def test_save_load_roundtrip(pretrained_file, tmp_path):
    path, variables = pretrained_file
    loaded = load_variables(path)
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(variables))
    with pytest.raises(FileNotFoundError, match="No weights file"):
        load_variables(tmp_path / "missing.msgpack")
    (tmp_path / "junk.msgpack").write_bytes(b"\x00not msgpack")
    with pytest.raises(ValueError, match="not a msgpack weights file"):
        load_variables(tmp_path / "junk.msgpack")


@pytest.mark.slow
def test_frozen_backbone_keeps_pretrained_weights_and_trains_new_head(pretrained_file, tmp_path, data_dir):
    from train.train import train_and_evaluate

    path, variables = pretrained_file
    config = finetune.get_config("runlocal")
    config.pretrained, config.data_dir, config.freeze_backbone = str(path), data_dir, True
    train_and_evaluate(config, tmp_path)
    _, state = final_state(tmp_path)
    params = state["params"]
    assert params["classifier"]["kernel"].shape[-1] == 10  # digits: a new 10-class head
    np.testing.assert_array_equal(params["stem_conv"]["kernel"], variables["params"]["stem_conv"]["kernel"])
    np.testing.assert_array_equal(params["stage6_block1"]["dw_conv"]["kernel"],
                                  variables["params"]["stage6_block1"]["dw_conv"]["kernel"])


@pytest.mark.slow
def test_weights_of_another_variant_are_refused(pretrained_file, tmp_path, data_dir):
    from train.train import train_and_evaluate

    config = finetune.get_config("runlocal")
    config.pretrained, config.data_dir = str(pretrained_file[0]), data_dir
    config.model_overrides = dict(width=0.5, depth=0.34)
    with pytest.raises(WeightConversionError, match="do not fit the model"):
        train_and_evaluate(config, tmp_path)


@pytest.mark.slow
def test_gradient_accumulation_with_mixup_and_cutmix_runs(tmp_path, data_dir):
    from train.configs import digits
    from train.train import train_and_evaluate

    config = digits.get_config("runlocal")
    config.data_dir, config.grad_accum_steps = data_dir, 4
    config.mixup_alpha, config.cutmix_alpha = 0.2, 1.0
    result = train_and_evaluate(config, tmp_path)
    assert np.isfinite(result["loss"])
