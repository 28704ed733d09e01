"""Soak: digits training killed (SIGKILL, no warning) at random moments, rerun each time with the same
command, ends with the parameters of an uninterrupted run.

The short version runs in ``make test``: the runlocal model, 2 kills at random steps plus a random
delay (so some land mid-step, some mid-checkpoint). The long version is enabled by
``SOAK_MINUTES=30`` (marked slow): the default digits recipe (``SOAK_EPOCHS``, default 60), killed
after 1-4 more checkpoint intervals of progress plus a random delay of up to 3% of SOAK_MINUTES,
until it finishes; ``SOAK_SEED`` picks the kill points (printed).
"""
import os
import pathlib
import random
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import final_state

ROOT = pathlib.Path(__file__).resolve().parents[1]


def command(workdir, config, flags):
    return [sys.executable, "-m", "train.main", f"--config={config}", f"--workdir={workdir}", *flags]


def environment(jit_cache):
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(jit_cache)}


def run_to_end(workdir, config, flags, jit_cache):
    out = subprocess.run(command(workdir, config, flags), cwd=ROOT, env=environment(jit_cache),
                         capture_output=True, text=True, timeout=3 * 3600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def kill_after(workdir, config, flags, jit_cache, *, at_step=None, after_seconds=None, delay=0.0):
    """Start the run; SIGKILL it ``delay`` s after its log shows ``at_step`` (or after ``after_seconds``).

    Returns True if it was killed, False if it finished first.
    """
    proc = subprocess.Popen(command(workdir, config, flags), cwd=ROOT, env=environment(jit_cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start = time.time()
    try:
        if at_step is not None:
            for line in proc.stderr:  # progress lines: "step 7/24 ..."
                match = re.search(r"step (\d+)/\d+", line)
                if match and int(match.group(1)) >= at_step:
                    break
        else:
            while proc.poll() is None and time.time() - start < after_seconds:
                time.sleep(0.5)
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.kill()
        proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return not finished


def assert_same_state(reference, resumed):
    step_a, a = final_state(reference)
    step_b, b = final_state(resumed)
    assert step_a == step_b
    import jax

    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-7)
        worst = max(worst, float(np.max(np.abs(x - y), initial=0.0)))
    return worst


@pytest.mark.slow
def test_short_soak_two_random_kills_end_equal_to_an_uninterrupted_run(tmp_path, data_dir):
    # A fixed seed so that CI runs the same kills every time; SOAK_SEED=N explores others.
    seed = int(os.environ.get("SOAK_SEED", 20261203))
    rng = random.Random(seed)
    config = "train/configs/digits.py:runlocal"
    flags = [f"--config.data_dir={data_dir}", "--config.num_train_steps=24", "--config.checkpoint_every_steps=2",
             "--config.log_every_steps=1", "--config.eval_every_steps=0"]
    jit_cache = tmp_path / "jit_cache"
    run_to_end(tmp_path / "reference", config, flags, jit_cache)

    workdir = tmp_path / "killed"
    first, second = sorted(rng.sample(range(2, 23), 2))
    for step in (first, second):
        killed = kill_after(workdir, config, flags, jit_cache, at_step=step, delay=rng.uniform(0, 1.5))
        assert killed, f"the run finished before the kill at step {step} (SOAK_SEED={seed})"
    run_to_end(workdir, config, flags, jit_cache)
    assert_same_state(tmp_path / "reference", workdir)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SOAK_MINUTES"), reason="set SOAK_MINUTES=30 for the long soak")
def test_long_soak_random_kills_every_few_minutes(tmp_path, data_dir):
    minutes = float(os.environ["SOAK_MINUTES"])
    seed = int(os.environ.get("SOAK_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    config = "train/configs/digits.py"  # the default recipe
    flags = [f"--config.data_dir={data_dir}", "--config.checkpoint_every_steps=25", "--config.eval_every_steps=225",
             f"--config.num_epochs={os.environ.get('SOAK_EPOCHS', '60')}"]
    jit_cache = tmp_path / "jit_cache"
    workdir = tmp_path / "killed"
    kills, start = [], time.time()
    while True:  # kill after 1-4 more checkpoint intervals of progress plus up to 3% of SOAK_MINUTES
        resumed_at = final_state(workdir)[0] if (workdir / "checkpoints").exists() else 0
        at_step = (resumed_at or 0) + rng.randint(1, 4) * 25
        if not kill_after(workdir, config, flags, jit_cache, at_step=at_step, delay=rng.uniform(0, 0.03) * minutes * 60):
            break
        kills.append((at_step, round(time.time() - start)))
    killed_minutes = (time.time() - start) / 60
    run_to_end(workdir, config, flags, jit_cache)  # finished: only evaluates
    reference_start = time.time()
    run_to_end(tmp_path / "reference", config, flags, jit_cache)
    worst = assert_same_state(tmp_path / "reference", workdir)
    print(f"\nsoak: SOAK_SEED={seed}, {len(kills)} SIGKILLs at (step, s) {kills} over {killed_minutes:.1f} min; "
          f"uninterrupted reference {(time.time() - reference_start) / 60:.1f} min; max |difference| {worst:g}")
    assert len(kills) >= 2, "the run finished before two kills; raise SOAK_EPOCHS or lower SOAK_MINUTES"
