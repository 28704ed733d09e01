"""Fault injection into the real training program: a kill mid-checkpoint, a corrupt checkpoint, a full
disk, NaN batches, corrupt images. Each fault must leave the last good checkpoint loadable and the
resumed run equal to an uninterrupted one.

Runs go through ``train_and_evaluate`` in a subprocess (so it can be killed), all with one config
and one persistent compilation cache, so only the first run of each worker compiles. Faults are
injected at the boundaries, never inside our code: orbax's final rename (the commit of an
asynchronous write) is made to stall, a batch gets a NaN pixel, files are truncated or deleted, a
tmpfs fills up, a JPEG is garbage.
"""
import json
import os
import pathlib
import queue
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from helpers import final_state, read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE = dict(num_train_steps=8, checkpoint_every_steps=2, log_every_steps=2, eval_every_steps=0,
            lr_schedule="constant", warmup_epochs=0.0)  # a constant LR: a shorter run is a prefix of a longer one

RUN = textwrap.dedent(
    """
    import json, logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
    workdir, data_dir, overrides, fault = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    import numpy as np
    from train import input_pipeline
    from train.configs import digits
    from train.train import train_and_evaluate

    if "stall_commit_of_step" in fault:  # orbax wrote every file of the step; its commit (a rename) never comes
        import asyncio
        from orbax.checkpoint._src.path import async_path
        rename = async_path.rename

        async def stalled_rename(src, dst):
            if dst.name == str(fault["stall_commit_of_step"]):
                print("FAULT: checkpoint written, commit stalled", flush=True)
                await asyncio.sleep(3600)
            return await rename(src, dst)

        async_path.rename = stalled_rename
    if "poison_step" in fault:  # one NaN pixel in the batch of that step
        pipeline = input_pipeline.Dataset.train_iterator

        def poisoned(dataset, *, start_step=0, **kwargs):
            for step, batch in enumerate(pipeline(dataset, start_step=start_step, **kwargs), start_step + 1):
                if step == fault["poison_step"]:
                    batch = {**batch, "image": batch["image"].copy()}
                    batch["image"][0, 0, 0, 0] = np.nan
                yield batch

        input_pipeline.Dataset.train_iterator = poisoned

    config = digits.get_config("runlocal")
    config.data_dir = data_dir
    config.update(overrides)
    try:
        result = train_and_evaluate(config, workdir)
    except Exception as e:
        print(f"ERROR {type(e).__name__}: {e}", flush=True)
        sys.exit(3)
    print("RESULT " + json.dumps(result), flush=True)
    """
)


@pytest.fixture(scope="module")
def jit_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jit_cache")


def child_env(jit_cache):
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}",
            "JAX_COMPILATION_CACHE_DIR": str(jit_cache)}


def start(workdir, data_dir, jit_cache, overrides=None, fault=None, prefix=()):
    command = [*prefix, sys.executable, "-c", RUN, str(workdir), data_dir, json.dumps({**BASE, **(overrides or {})}),
               json.dumps(fault or {})]
    return subprocess.Popen(command, cwd=ROOT, env=child_env(jit_cache), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def run(*args, **kwargs) -> tuple[int, str]:
    proc = start(*args, **kwargs)
    out, _ = proc.communicate(timeout=900)
    return proc.returncode, out


def wait_for_line(proc, marker: str, timeout: float = 600) -> str:
    """Read ``proc``'s output until a line contains ``marker``; return what was read."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)], daemon=True).start()
    seen = []
    while True:
        line = lines.get(timeout=timeout)
        assert line is not None, f"the run ended before {marker!r}:\n{''.join(seen)[-3000:]}"
        seen.append(line)
        if marker in line:
            return "".join(seen)


def assert_same_params(a, b):
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6, atol=1e-7)


def all_finite(tree) -> bool:
    import jax

    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


def step_dirs(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir, jit_cache):
    """The uninterrupted run every faulted run must end equal to (and the compilation cache warm-up)."""
    workdir = tmp_path_factory.mktemp("reference")
    code, out = run(workdir, data_dir, jit_cache)
    assert code == 0, out[-3000:]
    step, state = final_state(workdir)
    assert step == 8 and all_finite(state)
    return workdir, state


@pytest.mark.slow
def test_sigkill_during_async_checkpoint_write_keeps_the_previous_one(reference, tmp_path, data_dir, jit_cache):
    proc = start(tmp_path, data_dir, jit_cache, fault={"stall_commit_of_step": 6})
    try:
        wait_for_line(proc, "FAULT: checkpoint written, commit stalled")
    finally:
        proc.kill()
        proc.wait()
    assert step_dirs(tmp_path) == [2, 4]  # step 6 exists only as orbax's uncommitted temporary directory
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("6.")]
    records = sorted(p.name for p in (tmp_path / "checkpoints.sha256").iterdir())
    assert records == ["2.0", "4.0"], records  # a record is committed after its step's data, never before
    step, _ = final_state(tmp_path)
    assert step == 4
    code, out = run(tmp_path, data_dir, jit_cache)
    assert code == 0, out[-3000:]
    assert "Resumed from step 4" in out
    step, state = final_state(tmp_path)
    assert step == 8
    assert_same_params(reference[1], state)


def corrupt(step_dir: pathlib.Path, how: str) -> None:
    files = sorted((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
    if how == "truncate":  # a half-written copy: every file cut to half its size
        for p in files:
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif how == "delete_data":  # the biggest array data file is gone
        files[0].unlink()
    elif how == "delete_metadata":
        (step_dir / "default" / "_METADATA").unlink()
    elif how == "bitflip":  # silent media corruption: orbax restores it without complaint, the SHA-256 does not
        data = bytearray(files[0].read_bytes())
        for offset in range(len(data) // 7, len(data), len(data) // 7):
            data[offset] ^= 0x10
        files[0].write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncate", "delete_data", "delete_metadata", "bitflip"])
def test_corrupt_latest_checkpoint_is_reported_and_the_previous_one_used(reference, tmp_path, data_dir,
                                                                         jit_cache, how):
    for name in ("checkpoints", "checkpoints.sha256"):
        shutil.copytree(reference[0] / name, tmp_path / name)
    assert step_dirs(tmp_path) == [4, 6, 8]
    corrupt(tmp_path / "checkpoints" / "8", how)
    kept = sorted(str(p.relative_to(tmp_path / "checkpoints" / "8")) for p in (tmp_path / "checkpoints" / "8").rglob("*"))
    code, out = run(tmp_path, data_dir, jit_cache)
    assert code == 0, out[-3000:]
    assert "Checkpoint of step 8" in out and "corrupt or incomplete" in out
    assert "Resuming from step 6" in out and "moved, not deleted" in out
    quarantined = list((tmp_path / "checkpoints.corrupt").glob("8-*"))
    assert len(quarantined) == 1  # never deleted: every file of the bad step is still there
    assert sorted(str(p.relative_to(quarantined[0])) for p in quarantined[0].rglob("*")) == kept
    step, state = final_state(tmp_path)
    assert step == 8
    assert_same_params(reference[1], state)


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


DISK_FULL = textwrap.dedent(
    """
    import json, logging, os, pathlib, subprocess, sys
    import numpy as np
    workdir, data_dir, run_script, base = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

    def train(steps):
        overrides = json.dumps({**json.loads(base), "num_train_steps": steps})
        out = subprocess.run([sys.executable, "-c", run_script, str(workdir), data_dir, overrides, "{}"],
                             capture_output=True, text=True)
        return out.returncode, out.stdout + out.stderr

    report = {}

    def show(stage):
        import shutil
        print(stage, sorted(os.listdir(workdir / "checkpoints")), shutil.disk_usage(workdir / "checkpoints"),
              file=sys.stderr, flush=True)

    report["first"] = train(4)
    show("first")
    filler = workdir / "checkpoints" / ".filler"  # the checkpoint file system (a small tmpfs) fills up
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\\0" * 65536)
                f.flush()
        except OSError as e:
            report["fill"] = str(e)
    show("filled")
    report["full"] = train(8)
    show("full")
    print(report["full"][1][-3000:], file=sys.stderr)

    # The library level: a failed save raises, the state handed to it stays intact and savable.
    import jax, orbax.checkpoint as ocp
    from train.checkpoint import CheckpointError, Checkpoints
    checkpoints = Checkpoints(workdir / "checkpoints")
    state, step = checkpoints.restore_latest(None)  # as saved
    before = [np.array(x) for x in jax.tree.leaves(state)]
    try:
        checkpoints.save(5, state)
        checkpoints.wait()
        report["direct"] = "saved?!"
    except CheckpointError as e:
        report["direct"] = str(e)
    report["restored_step"] = step
    report["state_intact"] = all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, jax.tree.leaves(state)))
    report["steps_after_failure"] = checkpoints.steps()
    show("direct")
    filler.unlink()
    show("freed")
    checkpoints.save(5, state)  # space again: the same in-memory state saves
    checkpoints.wait()
    report["saved_after_freeing"] = checkpoints.steps()
    checkpoints.manager.delete(5)
    checkpoints.close()

    report["resumed"] = train(8)
    sys.path.insert(0, "tests")
    from helpers import final_state
    step, state = final_state(workdir)
    np.savez(workdir / "final.npz", *[np.asarray(x) for x in jax.tree.leaves(state["params"])])
    report["final_step"] = step
    print("REPORT " + json.dumps(report))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` (user namespaces) to mount a small tmpfs")
def test_full_disk_fails_the_save_clearly_and_keeps_the_previous_checkpoint(reference, tmp_path, data_dir,
                                                                            jit_cache):
    checkpoint_dir = tmp_path / "checkpoints"
    checkpoint_dir.mkdir()
    # A private mount namespace: a 64 MB tmpfs over the checkpoint directory, gone when the run ends.
    shell = 'mount -t tmpfs -o size=64m tmpfs "$1" && shift && exec "$@"'
    out = subprocess.run(["unshare", "-rm", "sh", "-c", shell, "sh", str(checkpoint_dir), sys.executable, "-c",
                          DISK_FULL, str(tmp_path), data_dir, RUN, json.dumps(BASE)], cwd=ROOT,
                         env=child_env(jit_cache), capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0 and "REPORT " in out.stdout, (out.stdout + out.stderr)[-4000:]
    report = json.loads(out.stdout.split("REPORT ", 1)[1])
    assert report["first"][0] == 0, report["first"][1][-3000:]
    assert "No space left" in report["fill"]
    code, log = report["full"]
    assert code == 3, log[-3000:]
    assert "ERROR CheckpointError: Could not write the checkpoint of step 6" in log, log[-3000:]
    error = log[log.index("ERROR CheckpointError"):]
    assert "disk full" in error and str(checkpoint_dir) in error
    assert "steps [2, 4] are untouched" in error
    assert report["restored_step"] == 4 and report["steps_after_failure"] == [2, 4]
    assert "disk full" in report["direct"] and str(checkpoint_dir) in report["direct"]
    assert report["state_intact"] and report["saved_after_freeing"] == [2, 4, 5]
    assert report["resumed"][0] == 0 and "Resumed from step 4" in report["resumed"][1]
    assert report["final_step"] == 8
    import jax

    final = np.load(tmp_path / "final.npz")
    for i, x in enumerate(jax.tree.leaves(reference[1]["params"])):
        np.testing.assert_allclose(final[f"arr_{i}"], np.asarray(x), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nan_batch_stops_or_skips_and_never_writes_a_poisoned_checkpoint(reference, tmp_path, data_dir,
                                                                         jit_cache, policy):
    code, out = run(tmp_path, data_dir, jit_cache, overrides={"nan_policy": policy}, fault={"poison_step": 5})
    saved = step_dirs(tmp_path)
    for step in saved:  # every checkpoint on disk holds finite parameters, statistics and optimizer state
        import orbax.checkpoint as ocp

        with ocp.CheckpointManager(tmp_path.absolute() / "checkpoints") as manager:
            assert all_finite(manager.restore(step, args=ocp.args.StandardRestore())), step
    if policy == "stop":
        assert code == 3 and "ERROR TrainingError: Loss or gradients became NaN/Inf at step 5" in out
        assert saved == [2, 4]
        return
    assert code == 0, out[-3000:]
    assert saved == [4, 6, 8]
    _, state = final_state(tmp_path)
    assert int(state["nonfinite_steps"]) == 1 and int(state["step"]) == 8
    train = [r for r in read_metrics(tmp_path) if r["split"] == "train"]
    assert [r["skipped_steps"] for r in train] == [0, 0, 1, 0]  # logged in the window of steps 5-6
    assert "Skipped 1 non-finite updates (steps [5])" in out


def _write_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("test", 2)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / split / label / f"{i}.jpg")


@pytest.mark.slow
def test_corrupt_images_are_counted_and_skipped_or_fail_when_configured(tmp_path, caplog):
    import logging

    from train import input_pipeline
    from train.configs import base

    root = tmp_path / "images"
    _write_folder(root)
    whole = (root / "train" / "a" / "0.jpg").read_bytes()
    corrupt = {"train/a/0.jpg": whole[: len(whole) // 2], "train/b/garbage.jpg": b"not an image" * 20,
               "train/b/empty.jpg": b"", "test/a/1.jpg": whole[:40]}
    for name, data in corrupt.items():
        (root / name).write_bytes(data)
    config = base.get_config()
    config.update(dict(dataset=f"folder:{root}", image_size=16, augment="inception", skip_corrupt_images=True))
    with caplog.at_level(logging.WARNING):
        info = input_pipeline.dataset_info(config)
    assert (info.num_train_examples, info.num_eval_examples) == (12 + 2 - 3, 4 - 1)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "Skipping 3 of the 14 images" in warned and "garbage.jpg" in warned and "Skipping 1 of the 4" in warned
    batches = [next(input_pipeline.train_iterator(config, local_batch_size=11)) for _ in range(2)]
    assert all(np.isfinite(b["image"]).all() for b in batches)
    evals = list(input_pipeline.eval_iterator(config, local_batch_size=4))
    assert int(sum(b["mask"].sum() for b in evals)) == 3
    resumed = next(input_pipeline.train_iterator(config, local_batch_size=2, start_step=3))  # positions stay exact
    fresh = input_pipeline.train_iterator(config, local_batch_size=2)
    np.testing.assert_array_equal(resumed["image"], [next(fresh) for _ in range(4)][3]["image"])

    config.skip_corrupt_images = False
    with pytest.raises(ValueError, match=r"3 of the 14 images .* cannot be decoded.*skip_corrupt_images=True"):
        input_pipeline.dataset_info(config)
