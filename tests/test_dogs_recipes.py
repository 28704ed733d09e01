"""The Stanford Dogs recipes resolve to the intended runs, and without the data they stop with our clear
error before anything is compiled or downloaded (stanford_dogs cannot be downloaded in tests)."""
import pytest

from train import input_pipeline, models
from train.configs import stanford_dogs_b0, stanford_dogs_resnet50
from train.train import resolve_config, train_and_evaluate

RECIPES = {"efficientnet_b0": stanford_dogs_b0, "resnet50": stanford_dogs_resnet50}


@pytest.mark.parametrize("model", RECIPES)
def test_recipe_resolves(model):
    config = resolve_config(RECIPES[model].get_config())
    assert (config.model, config.dataset, config.image_size, config.eval_split) == (model, "stanford_dogs", 224, "test")
    assert config.mean == pytest.approx((123.675, 116.28, 103.53)) and config.augment == "inception"
    assert config.pretrained == ("keras" if model == "efficientnet_b0" else None)
    built = models.build_model(config, 120)
    assert built.num_classes == 120 and built.dtype.__name__ == "bfloat16"
    other = resolve_config(RECIPES["resnet50" if model == "efficientnet_b0" else "efficientnet_b0"].get_config())
    differing = {k for k in config.keys() if config[k] != other[k]}
    assert differing <= {"model", "pretrained", "backbone_lr_multiplier"}  # same data, schedule, optimizer
    local = resolve_config(RECIPES[model].get_config("runlocal"))
    assert (local.dataset, local.image_size, local.pretrained) == ("sklearn_digits", 32, None)


@pytest.mark.parametrize("model", RECIPES)
def test_missing_dataset_is_a_clear_error(model, tmp_path):
    config = RECIPES[model].get_config()
    config.data_dir = str(tmp_path / "tfds")
    with pytest.raises(input_pipeline.DatasetNotFoundError, match="tfds build stanford_dogs") as error:
        train_and_evaluate(config, tmp_path / "run")
    assert "does not download" in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()
