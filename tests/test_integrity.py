"""Checkpoint integrity fails closed: a step whose SHA-256 records are missing, empty, unreadable or of
another version is never restored, and records live and die with their steps.

The real ``train.checkpoint.Checkpoints`` on a small state (orbax writes real files); faults are made
on disk the way media or an interrupted copy would make them.
"""
import json
import logging
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.checkpoint import FINGERPRINT_VERSION, LEGACY_VERSION, CheckpointError, Checkpoints, fingerprint

STATE = {"params": {"kernel": jnp.arange(4096, dtype=jnp.float32).reshape(64, 64), "bias": jnp.ones((64,))},
         "step": jnp.zeros((), jnp.int32)}


def state_at(step: int):
    return jax.tree.map(lambda x: x + step, STATE)


def abstract():
    return jax.eval_shape(lambda: STATE)


def names(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def step_names(directory: pathlib.Path) -> list[str]:
    return sorted((p.name for p in directory.iterdir() if p.name.isdigit()), key=int)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Ten asynchronous saves with keep=3, as the training loop makes them (``poll`` between saves)."""
    root = tmp_path_factory.mktemp("saved")
    checkpoints = Checkpoints(root / "checkpoints", keep=3)
    for step in range(1, 11):
        checkpoints.save(step, state_at(step))
        checkpoints.poll()
    checkpoints.close()
    return root


@pytest.fixture
def workdir(saved, tmp_path):
    for name in ("checkpoints", "checkpoints.sha256"):
        shutil.copytree(saved / name, tmp_path / name)
    return tmp_path


def restore(workdir, **kwargs):
    checkpoints = Checkpoints(workdir / "checkpoints", **kwargs)
    try:
        return checkpoints.restore_latest(abstract())
    finally:
        checkpoints.close()


def test_records_are_pruned_with_their_steps(saved):
    assert step_names(saved / "checkpoints") == ["8", "9", "10"]
    assert names(saved / "checkpoints.sha256") == ["10.0", "8.0", "9.0"]  # no orphans of steps 1-7
    record = json.loads((saved / "checkpoints.sha256" / "10.0").read_text())
    assert record["version"] == FINGERPRINT_VERSION and record["process_count"] == 1
    assert set(record["pieces"]) == {"params/bias@0:64", "params/kernel@0:64,0:64", "step@"}


def bitflip(step_dir: pathlib.Path) -> None:
    biggest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0x10
    biggest.write_bytes(bytes(data))


RECORD_FAULTS = {
    "deleted": lambda path: path.unlink(),
    "empty": lambda path: path.write_text(""),
    "garbage": lambda path: path.write_bytes(b"\x00\xff not json"),
    "other_version": lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), "version": "md5-v9"})),
    "one_of_two_processes": lambda path: path.write_text(json.dumps({**json.loads(path.read_text()),
                                                                      "process_count": 2})),
    "not_readable": lambda path: path.mkdir() if path.unlink() is None else None,  # a directory in its place
}


@pytest.mark.parametrize("fault", sorted(RECORD_FAULTS))
def test_a_bitflipped_step_without_a_valid_record_is_not_restored(workdir, fault, caplog):
    bitflip(workdir / "checkpoints" / "10")
    RECORD_FAULTS[fault](workdir / "checkpoints.sha256" / "10.0")
    with caplog.at_level(logging.WARNING):
        state, step = restore(workdir)
    assert step == 9
    np.testing.assert_array_equal(state["params"]["kernel"], state_at(9)["params"]["kernel"])
    log = caplog.text
    assert "Checkpoint of step 10" in log and "integrity record" in log and "moved, not deleted" in log
    moved = list((workdir / "checkpoints.corrupt").glob("10-*"))
    assert len(moved) == 1 and step_names(workdir / "checkpoints") == ["8", "9"]
    assert not list((workdir / "checkpoints.sha256").glob("10*"))  # the record went along, kept for inspection
    if fault != "deleted":
        assert [p.name.split("-")[0] for p in (workdir / "checkpoints.corrupt" / "sha256").iterdir()] == ["10.0"]


def test_a_bitflipped_step_with_its_record_fails_the_check(workdir, caplog):
    bitflip(workdir / "checkpoints" / "10")
    with caplog.at_level(logging.WARNING):
        _, step = restore(workdir)
    assert step == 9 and "do not match the SHA-256 recorded" in caplog.text


def test_a_reader_skips_a_bad_step_and_leaves_it_in_place(workdir, caplog):
    (workdir / "checkpoints.sha256" / "10.0").unlink()  # e.g. a step a live run committed a moment ago
    with caplog.at_level(logging.WARNING):
        _, step = restore(workdir, quarantine=False)
    assert step == 9 and "left in place" in caplog.text
    assert step_names(workdir / "checkpoints") == ["8", "9", "10"] and not (workdir / "checkpoints.corrupt").exists()


def test_no_step_loads_is_an_error_and_nothing_moves(workdir):
    for step in (8, 9, 10):  # e.g. a config whose model no longer matches: every step fails to load or check
        bitflip(workdir / "checkpoints" / str(step))
    with pytest.raises(CheckpointError, match=r"None of the checkpoints \[10, 9, 8\]"):
        restore(workdir)
    assert step_names(workdir / "checkpoints") == ["8", "9", "10"]


def test_only_unrecorded_steps_start_from_scratch_with_them_moved_aside(workdir, caplog):
    """A run killed between its first checkpoint's commit and its record's has nothing verified to resume."""
    shutil.rmtree(workdir / "checkpoints.sha256")
    with caplog.at_level(logging.WARNING):
        state, step = restore(workdir)
    assert (state, step) == (None, 0) and "Starting from scratch" in caplog.text
    assert step_names(workdir / "checkpoints") == [] and len(list((workdir / "checkpoints.corrupt").glob("*-*"))) == 3


def test_records_of_the_previous_format_are_still_checked(workdir, caplog):
    """Runs saved before per-process records have one ``sha256-v2`` digest of the whole state in <step>."""
    records = workdir / "checkpoints.sha256"
    for step in (8, 9, 10):
        (records / f"{step}.0").unlink()
        (records / str(step)).write_text(f"{LEGACY_VERSION} {fingerprint(state_at(step))}")
    _, step = restore(workdir)
    assert step == 10
    bitflip(workdir / "checkpoints" / "10")
    with caplog.at_level(logging.WARNING):
        state, step = restore(workdir)
    assert step == 9 and "do not match the SHA-256" in caplog.text
    assert list((workdir / "checkpoints.corrupt" / "sha256").glob("10-*"))
