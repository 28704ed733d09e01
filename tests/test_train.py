"""The training program end to end on the embedded digits data: outputs, resumption, devices, errors."""
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from helpers import assert_same_end, final_state, read_metrics
from train.configs import digits

ROOT = pathlib.Path(__file__).resolve().parents[1]


def small_config(data_dir, **overrides):
    config = digits.get_config("runlocal")
    config.data_dir = data_dir
    for key, value in overrides.items():
        config[key] = value
    return config


def cli(workdir, *flags, env=None, wait=True):
    command = [sys.executable, "-m", "train.main", "--config=train/configs/digits.py:runlocal",
               f"--workdir={workdir}", *flags]
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_train_writes_metrics_checkpoints_and_events(tmp_path, data_dir):
    from train.train import train_and_evaluate

    result = train_and_evaluate(small_config(data_dir), tmp_path)
    assert result["examples"] == 360 and 0.0 <= result["accuracy"] <= 1.0
    records = read_metrics(tmp_path)
    assert {r["split"] for r in records} == {"train", "eval"}
    for r in records:
        assert {"step", "epoch", "split", "loss", "accuracy"} <= set(r)
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]
    assert "ema_accuracy" in records[-1]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    step, state = final_state(tmp_path)
    assert step == 6 and int(state["step"]) == 6
    # Running the finished command again resumes at the end and only evaluates.
    again = train_and_evaluate(small_config(data_dir), tmp_path)
    assert again["accuracy"] == pytest.approx(result["accuracy"])


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
    from train.train import TrainingError, train_and_evaluate

    train_and_evaluate(small_config(data_dir), tmp_path)
    _, good = final_state(tmp_path)
    exploding = small_config(data_dir, num_train_steps=12, learning_rate=float("inf"), lr_schedule="constant",
                             warmup_epochs=0.0, checkpoint_every_steps=1)
    with pytest.raises(TrainingError, match="NaN/Inf at step 7.*intact"):
        train_and_evaluate(exploding, tmp_path)
    step, state = final_state(tmp_path)
    assert step == 6
    np.testing.assert_array_equal(state["params"]["stem_conv"]["kernel"], good["params"]["stem_conv"]["kernel"])


def interrupt_when(proc, path, sig):
    """Send ``sig`` once ``path`` (a finished checkpoint) exists; return the run's exit code."""
    deadline = time.time() + 600
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, f"run ended before {path} appeared"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=600)
    return proc.returncode


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_result(tmp_path, data_dir):
    """SIGKILL (a dead host), then SIGTERM (a preemption), then a resume to the end: the final
    metrics and parameters equal those of an uninterrupted run."""
    flags = [f"--config.data_dir={data_dir}", "--config.num_train_steps=60", "--config.checkpoint_every_steps=5",
             "--config.eval_every_steps=20", "--config.log_every_steps=5"]
    reference = cli(tmp_path / "reference", *flags)
    assert reference.returncode == 0, reference.stderr[-3000:]

    workdir = tmp_path / "interrupted"
    interrupt_when(cli(workdir, *flags, wait=False), workdir / "checkpoints" / "5", signal.SIGKILL)
    killed_at, _ = final_state(workdir)
    assert 5 <= killed_at < 60, "the run finished before the kill; nothing was tested"
    returncode = interrupt_when(cli(workdir, *flags, wait=False), workdir / "checkpoints" / str(killed_at + 5),
                                signal.SIGTERM)
    assert returncode == 0  # a preemption is a clean exit after a checkpoint
    preempted_at, _ = final_state(workdir)
    assert killed_at < preempted_at < 60, "the run finished before SIGTERM; nothing was tested"
    resumed = cli(workdir, *flags)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_end(tmp_path / "reference", workdir)


DEVICE_RUN = textwrap.dedent(
    """
    import os, sys, json
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"
    import jax
    from train.configs import digits
    from train.train import train_and_evaluate
    assert jax.device_count() == int(sys.argv[1])
    config = digits.get_config("runlocal")
    config.data_dir, config.batch_size, config.num_train_steps = sys.argv[3], 16, 4
    config.log_every_steps, config.ema_decay = 1, 0.0
    train_and_evaluate(config, sys.argv[2])
    import numpy as np
    from helpers import final_state  # restore on the topology that saved it
    _, state = final_state(sys.argv[2])
    leaves = {part: jax.tree.leaves(state[part]) for part in ("params", "batch_stats")}
    np.savez(f"{sys.argv[2]}/final.npz", **{f"{p}_{i}": np.asarray(x) for p, xs in leaves.items() for i, x in enumerate(xs)})
    """
)


@pytest.mark.slow
def test_eight_devices_equal_one(tmp_path, data_dir):
    """Global-batch semantics: same loss curve, parameters and BN statistics on 1 and 8 devices."""
    runs = {}
    for devices in (1, 8):
        workdir = tmp_path / f"d{devices}"
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"}
        out = subprocess.run([sys.executable, "-c", DEVICE_RUN, str(devices), str(workdir), data_dir], cwd=ROOT,
                             capture_output=True, text=True, timeout=900, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[devices] = ([r["loss"] for r in read_metrics(workdir) if r["split"] == "train"],
                         dict(np.load(workdir / "final.npz")))
    (loss1, state1), (loss8, state8) = runs[1], runs[8]
    assert len(loss1) == 4
    np.testing.assert_allclose(loss8, loss1, rtol=1e-4)
    for part in ("params", "batch_stats"):
        keys = [k for k in state1 if k.startswith(part)]
        scale = max(np.abs(state1[k]).max() for k in keys)
        assert max(np.abs(state1[k] - state8[k]).max() for k in keys) <= 1e-4 * scale, part


@pytest.mark.parametrize(
    "flags, env, message",
    [
        (["--config.no_such_key=1"], {}, "no_such_key"),
        # Each of these starts the program up to its model, dataset or mesh (~20 s): the slow tier.
        pytest.param(["--config.model=efficientnet_b9"], {}, "efficientnet_b0", marks=pytest.mark.slow),
        pytest.param(["--config.dataset=no_such_dataset"], {}, "no_such_dataset", marks=pytest.mark.slow),
        pytest.param(["--config.dataset=cifar10", "--config.data_dir={missing}"], {}, "cifar10",
                     marks=pytest.mark.slow),
        pytest.param(["--config.batch_size=12"], {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
                     "divisible", marks=pytest.mark.slow),
    ],
)
def test_bad_input_exits_with_a_clear_message(tmp_path, data_dir, flags, env, message):
    flags = [f.format(missing=tmp_path / "missing") for f in flags] + [f"--config.data_dir={data_dir}"] * (
        "--config.data_dir" not in " ".join(flags))
    result = cli(tmp_path / "run", *flags, env=env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_imagenet_recipe_runs_on_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    from train.configs import imagenet
    from train.train import train_and_evaluate

    config = imagenet.get_config("b0,runlocal")
    # tfds.testing.mock_data swaps the process's file-system functions for a fake while it builds each
    # dataset; an asynchronous checkpoint write on another thread at that moment would see the fake.
    config.async_checkpoints = False
    with tfds.testing.mock_data(num_examples=16):
        result = train_and_evaluate(config, tmp_path)
    assert result["examples"] > 0


@pytest.mark.slow
def test_default_recipe_reaches_97_percent_on_digits(tmp_path, data_dir):
    """What `make train` runs (train/configs/digits.py, unchanged but for the data directory)."""
    from train.train import train_and_evaluate

    config = digits.get_config()
    config.data_dir = data_dir
    result = train_and_evaluate(config, tmp_path)
    assert result["examples"] == 360
    assert result["accuracy"] >= 0.97, result
