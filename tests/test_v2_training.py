"""EfficientNetV2 through the training program: progressive stages on digits, exact resume mid-stage,
the imagenet_v2 recipes (on tfds mock data, fine-tuning from a saved file)."""
import signal

import pytest

import efficientnet_jax as ej
from helpers import assert_same_end, final_state, random_variables, read_metrics
from test_train import cli, interrupt_when
from train.configs import digits, imagenet_v2

# digits.py's model shrink (width 0.5, depth 0.5) applied to V2-B0, trained in two progressive stages: 32 px
# (the smallest input of a stride-32 network), then 40 px (the 32 px digits upsampled).
V2_DIGITS = ["--config.model=efficientnetv2_b0", "--config.image_size=40", "--config.progressive.stages=2",
             "--config.progressive.initial_image_size=32"]


def test_recipes_follow_the_paper():
    s = imagenet_v2.get_config("s")
    assert (s.model, s.image_size, s.eval_image_size, s.crop_pct, s.randaugment) == (
        "efficientnetv2_s", 300, 384, 1.0, (2, 15.0))
    assert (s.progressive.stages, s.progressive.initial_image_size, s.progressive.initial_randaugment_magnitude,
            s.progressive.initial_dropout, s.model_overrides["dropout"]) == (4, 128, 5.0, 0.1, 0.3)
    assert (s.optimizer, s.learning_rate * s.batch_size / 256, s.lr_decay_factor, s.lr_decay_epochs) == (
        "rmsprop_tf", pytest.approx(0.256), 0.97, 2.4)
    assert (s.weight_decay, s.ema_decay, s.num_epochs, ej.model_info(s.model).bn_momentum) == (1e-5, 0.9999, 350, 0.99)
    m, big = imagenet_v2.get_config("m"), imagenet_v2.get_config("l")
    assert (m.mixup_alpha, m.model_overrides["dropout"], big.mixup_alpha, big.randaugment[1]) == (0.2, 0.4, 0.4, 25)
    b3 = imagenet_v2.get_config("b3")
    assert b3.autoaugment and b3.randaugment is None and (b3.image_size, b3.eval_image_size) == (240, 300)
    with pytest.raises(ValueError, match="variants: s, m, l, xl, b0"):
        imagenet_v2.get_config("xxl")


@pytest.mark.slow
def test_v2_b0_learns_digits_through_progressive_stages(tmp_path, data_dir):
    from train.train import train_and_evaluate

    config = digits.get_config()
    config.data_dir, config.model, config.num_epochs, config.image_size = data_dir, "efficientnetv2_b0", 30.0, 40
    config.progressive.stages, config.progressive.initial_image_size = 2, 32
    result = train_and_evaluate(config, tmp_path)
    sizes = {r["image_size"] for r in read_metrics(tmp_path) if r["split"] == "train"}
    assert sizes == {32, 40}
    assert result["examples"] == 360 and result["accuracy"] >= 0.95, result


@pytest.mark.slow
def test_v2_run_resumes_exactly_mid_stage(tmp_path, data_dir):
    """SIGTERM inside the second stage, then a resume: the end equals an uninterrupted run."""
    flags = [f"--config.data_dir={data_dir}", "--config.num_train_steps=16", "--config.checkpoint_every_steps=2",
             "--config.eval_every_steps=16", "--config.log_every_steps=2", *V2_DIGITS]
    reference = cli(tmp_path / "reference", *flags)
    assert reference.returncode == 0, reference.stderr[-3000:]
    workdir = tmp_path / "interrupted"
    assert interrupt_when(cli(workdir, *flags, wait=False), workdir / "checkpoints" / "10", signal.SIGTERM) == 0
    preempted_at, _ = final_state(workdir)
    assert 8 < preempted_at < 16, "not interrupted inside the second stage; nothing was tested"
    resumed = cli(workdir, *flags)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_end(tmp_path / "reference", workdir)


@pytest.mark.slow
def test_imagenet_v2_recipe_fine_tunes_s_from_a_saved_file_on_mock_data(tmp_path):
    """imagenet_v2.py:s,runlocal (4 progressive stages) starting from a save_pretrained file of the same V2-S."""
    import jax.numpy as jnp
    import tensorflow_datasets as tfds

    from efficientnet_jax.weights import save_pretrained
    from train.train import train_and_evaluate

    config = imagenet_v2.get_config("s,runlocal")
    # tfds.testing.mock_data swaps the process's file-system functions for a fake while it builds each
    # dataset; an asynchronous checkpoint write on another thread at that moment would see the fake.
    config.async_checkpoints = False
    model = ej.create_model("efficientnetv2_s", num_classes=1000, **config.model_overrides)
    variables = random_variables(model, jnp.zeros((1, 64, 64, 3)), seed=1)
    config.pretrained = str(tmp_path / "v2s.msgpack")
    save_pretrained(config.pretrained, model, variables)
    with tfds.testing.mock_data(num_examples=16):
        result = train_and_evaluate(config, tmp_path / "run")
    sizes = [r["image_size"] for r in read_metrics(tmp_path / "run") if r["split"] == "train"]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4  # 32 px growing to 64 px in 4 stages
    assert result["examples"] > 0
