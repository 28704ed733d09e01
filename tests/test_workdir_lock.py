"""One run per workdir: a second run on a workdir in use stops at once, names the holder and touches
nothing; a holder that dies (even by SIGKILL) never blocks the next run."""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import final_state
from train import workdir_lock
from train.configs import digits

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_a_second_holder_is_refused_with_the_first_ones_name(tmp_path):
    lock = workdir_lock.acquire(tmp_path)
    try:
        holder = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
        with pytest.raises(workdir_lock.WorkdirInUseError, match=rf"in use by .*pid {os.getpid()} on host "):
            workdir_lock.acquire(tmp_path)
        assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text()) == holder  # the refused one wrote nothing
    finally:
        lock.release()
    workdir_lock.acquire(tmp_path).release()  # released: free again


@pytest.mark.slow  # imports the training program (TensorFlow for tf.data): ~10 s
def test_train_and_evaluate_on_a_held_workdir_stops_before_writing(tmp_path, data_dir):
    from train.train import TrainingError, train_and_evaluate

    config = digits.get_config("runlocal")
    config.data_dir = data_dir
    lock = workdir_lock.acquire(tmp_path)
    try:
        with pytest.raises(TrainingError, match="in use by another training run"):
            train_and_evaluate(config, tmp_path)
    finally:
        lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [workdir_lock.LOCK_FILE]


# The holder: the training program on a test-only model that compiles in seconds.
HOLDER = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from helpers import TinyNet
from train.configs import digits
from train.train import train_and_evaluate
config = digits.get_config("runlocal")
config.model, config.data_dir, config.num_train_steps = "tiny_net", sys.argv[2], 8
config.checkpoint_every_steps, config.log_every_steps, config.eval_every_steps = 2, 1, 0
train_and_evaluate(config, sys.argv[1], model_factory=TinyNet)
"""


def environment(jit_cache):
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(jit_cache),
            "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"}


def holder(workdir, data_dir, jit_cache):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), data_dir], cwd=ROOT,
                            env=environment(jit_cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until_stopped(pid: int) -> None:
    """Until every thread of ``pid`` is stopped (state 'T' in /proc), so that nothing it does changes files."""
    deadline = time.time() + 30
    while time.time() < deadline:
        states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                  for task in pathlib.Path(f"/proc/{pid}/task").iterdir()]
        if all(state in ("T", "t") for state in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


@pytest.mark.slow
def test_second_run_exits_2_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path, data_dir):
    jit_cache = tmp_path / "jit_cache"
    reference = holder(tmp_path / "reference", data_dir, jit_cache)
    assert reference.wait(timeout=900) == 0, reference.stderr.read()[-3000:]

    workdir = tmp_path / "shared"
    first = holder(workdir, data_dir, jit_cache)
    try:
        for line in first.stderr:  # progress lines: "step 3/8 ..."
            match = re.search(r"step (\d+)/\d+", line)
            if match and int(match.group(1)) >= 3:
                break
        first.send_signal(signal.SIGSTOP)  # the holder, frozen mid-run: it keeps its lock
        wait_until_stopped(first.pid)  # the signal is asynchronous: a checkpoint write may still be landing
        before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()}
        start = time.time()
        second = subprocess.run([sys.executable, "-m", "train.main", "--config=train/configs/digits.py:runlocal",
                                 f"--workdir={workdir}", f"--config.data_dir={data_dir}"], cwd=ROOT,
                                env=environment(jit_cache), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and time.time() - start < 30, second.stderr[-3000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
        assert f"pid {first.pid} on host {socket.gethostname()}" in errors[0] and str(workdir) in errors[0]
        assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.is_file()} == before  # touched nothing
        first.kill()  # SIGKILL: no chance to clean up; its lock file stays, naming it
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert json.loads((workdir / workdir_lock.LOCK_FILE).read_text())["pid"] == first.pid

    resumed = holder(workdir, data_dir, jit_cache)  # the next run: no cleanup needed
    assert resumed.wait(timeout=900) == 0, resumed.stderr.read()[-3000:]
    (step_a, a), (step_b, b) = final_state(tmp_path / "reference"), final_state(workdir)
    assert step_a == step_b == 8
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6, atol=1e-7)
