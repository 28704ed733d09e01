"""Preemption across processes: SIGTERM reaches ONE of two processes (4 fake CPU devices each); both
save the same step, before any eval of it, and exit cleanly; the relaunched job resumes and ends equal to
an uninterrupted one.

One chain of launches covers both cases: the first launch gets SIGTERM on process 1 at a random step
that is not an eval step; the second (resumed) launch gets it on process 0 so that the stop lands on an
eval step, with a second SIGTERM during the save; the third runs to the end. The signals are real, sent
by the process to itself at a chosen batch (the step is then exact) or from inside orbax's save. A
test-only model keeps each launch to seconds of compilation.
"""
import json
import os
import pathlib
import random
import sys
import textwrap

import numpy as np
import pytest

from helpers import read_metrics
from test_multiprocess import free_port, run_processes

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 12, 4  # checkpoints and evals at steps 4, 8 and 12

WORKER = textwrap.dedent(
    """
    import faulthandler, json, logging, os, signal, sys
    faulthandler.dump_traceback_later(240, exit=True)  # a hang shows where it is, not just a timeout
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
    process_id, port, workdir, data_dir, steps, every = sys.argv[1:7]
    process_id, steps, every, fault = int(process_id), int(steps), int(every), json.loads(sys.argv[7])
    import jax
    import numpy as np
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id,
                               initialization_timeout=120)
    from helpers import TinyNet, final_state
    from train import input_pipeline
    from train.configs import digits
    from train.train import train_and_evaluate

    if fault.get("process") == process_id:  # SIGTERM to this process just before it trains step `at`
        pipeline = input_pipeline.Dataset.train_iterator

        def signalled(dataset, *, start_step=0, **kwargs):
            for step, batch in enumerate(pipeline(dataset, start_step=start_step, **kwargs), start_step + 1):
                if step == fault["at"]:
                    print(f"FAULT: SIGTERM to process {process_id} before step {step}", flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)
                yield batch

        input_pipeline.Dataset.train_iterator = signalled
        if "again_in_save_of" in fault:  # and once more while the checkpoint of that step is being saved
            import orbax.checkpoint as ocp
            save = ocp.CheckpointManager.save

            def interrupted(self, step, *args, **kwargs):
                if step == fault["again_in_save_of"]:
                    os.kill(os.getpid(), signal.SIGTERM)
                return save(self, step, *args, **kwargs)

            ocp.CheckpointManager.save = interrupted

    config = digits.get_config("runlocal")
    config.model, config.data_dir, config.batch_size, config.num_train_steps = "tiny_net", data_dir, 16, steps
    config.log_every_steps, config.checkpoint_every_steps, config.eval_every_steps = 1, every, every
    config.lr_schedule, config.warmup_epochs = "constant", 0.0
    result = train_and_evaluate(config, workdir, model_factory=TinyNet)
    print("RESULT " + json.dumps(result), flush=True)
    if not result.get("preempted"):
        step, state = final_state(workdir)  # restored on the topology that saved it, by every process
        if process_id == 0:
            leaves = jax.tree_util.tree_flatten_with_path(state)[0]
            np.savez(f"{workdir}/final.npz", **{jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves})
    """
)


def launch(workdir, data_dir, cache_dir, fault=None) -> list[tuple[dict, str]]:
    """Both processes to their end: [(result, output)] by process."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_COMPILATION_CACHE_DIR": str(cache_dir)}
    port = free_port()
    finished = run_processes([[sys.executable, "-u", "-c", WORKER, str(i), str(port), str(workdir), data_dir,
                                str(STEPS), str(EVERY), json.dumps(fault or {})] for i in range(2)], env)
    if not all(returncode == 0 and "RESULT " in out for returncode, out in finished):
        pytest.fail("\n".join(f"process {i} (exit {returncode}):\n{out[-4000:]}"
                              for i, (returncode, out) in enumerate(finished)))
    return [(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]), out) for _, out in finished]


def saved_steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def assert_stopped_together(runs, step):
    for i, (result, out) in enumerate(runs):
        assert result["preempted"] and result["step"] == step, (i, result, out[-3000:])
        assert f"Stopped at step {step} after SIGTERM" in out, out[-3000:]


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step_and_the_rerun_ends_equal(tmp_path, data_dir):
    seed = int(os.environ.get("PREEMPTION_SEED", 20261203))
    rng = random.Random(seed)
    first_stop = rng.choice([s for s in range(2, STEPS - EVERY - 1) if s % EVERY])  # not an eval step
    eval_stop = rng.choice([s for s in range(EVERY, STEPS, EVERY) if s - 1 > first_stop])  # an eval step
    from train import input_pipeline
    from train.configs import digits

    config = digits.get_config("runlocal")
    config.data_dir = data_dir
    input_pipeline.dataset_info(config)  # prepared once here: two processes preparing it at once collide
    cache = tmp_path / "jit_cache"
    reference = tmp_path / "reference"
    launch(reference, data_dir, cache)

    workdir = tmp_path / "preempted"
    runs = launch(workdir, data_dir, cache, fault={"process": 1, "at": first_stop - 1})
    assert_stopped_together(runs, first_stop)  # the step after the signal, on both processes
    assert "received by another process" in runs[0][1] and "SIGTERM received" in runs[1][1]
    assert first_stop in saved_steps(workdir), f"PREEMPTION_SEED={seed}"
    assert sorted(p.name for p in (workdir / "checkpoints.sha256").glob(f"{first_stop}.*")) == \
        [f"{first_stop}.0", f"{first_stop}.1"]  # each process's record of its own pieces

    runs = launch(workdir, data_dir, cache, fault={"process": 0, "at": eval_stop - 1, "again_in_save_of": eval_stop})
    assert all(f"Resumed from step {first_stop}" in out for _, out in runs)
    assert_stopped_together(runs, eval_stop)
    assert "SIGTERM received again" in runs[0][1]  # logged; the save went on
    assert eval_stop in saved_steps(workdir)
    evals = [r["step"] for r in read_metrics(workdir) if r["split"] == "eval"]
    assert eval_stop not in evals, evals  # saved, then stopped: the grace period was not spent on eval

    runs = launch(workdir, data_dir, cache)
    assert all(f"Resumed from step {eval_stop}" in out and not result.get("preempted") for result, out in runs)
    train = {run: [r for r in read_metrics(run) if r["split"] == "train"] for run in (reference, workdir)}
    assert [r["step"] for r in train[workdir]] == [r["step"] for r in train[reference]] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([r["loss"] for r in train[workdir]], [r["loss"] for r in train[reference]], rtol=1e-4)
    final = {run: json.loads((run / "final_metrics.json").read_text()) for run in (reference, workdir)}
    for key in ("loss", "accuracy", "ema_loss"):
        assert final[workdir][key] == pytest.approx(final[reference][key], rel=1e-4), key
    ref_state, state = dict(np.load(reference / "final.npz")), dict(np.load(workdir / "final.npz"))
    assert ref_state.keys() == state.keys()
    for key, value in ref_state.items():  # the same two processes, so only float32 reduction order may differ
        np.testing.assert_allclose(state[key], value, rtol=1e-4, atol=1e-4 * (np.abs(value).max(initial=0) + 1e-30),
                                   err_msg=key)
