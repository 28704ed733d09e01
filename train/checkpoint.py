"""Orbax checkpoints that never lose a good state.

Orbax writes each step into a temporary directory and renames it when complete, so a
kill mid-write leaves the previous steps intact (the next save of that step removes the
unfinished directory). On restore, a step that fails to load (truncated or corrupted
files) is reported and the next older one is tried; once an older one loads, the
unreadable ones are moved to ``<checkpoints>.corrupt/`` (kept for inspection, never
deleted, and out of the way of the resumed run's saves). Orbax does not checksum array data, so
each save also records a SHA-256 of the state in ``<checkpoints>.sha256/<step>``, checked on
restore: a flipped bit is a corrupt step, not a silently different parameter. A save that fails (disk full,
no permission) raises ``CheckpointError`` naming the directory and the cause; the state
passed to ``save`` is only read, so it stays usable.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import pathlib
import re
import time

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    pass


_CAUSES = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}
# tensorstore reports OS errors inside a ValueError's text: "... [os_error_code='28']"
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _cause(exc: BaseException) -> str | None:
    """A plain-words cause for a filesystem failure anywhere in ``exc``'s chain, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = getattr(exc, "errno", None)
        if code is None:
            match = _OS_ERROR_CODE.search(str(exc))
            code = int(match.group(1)) if match else None
        if code in _CAUSES:
            return _CAUSES[code]
        if isinstance(exc, OSError):
            return f"{type(exc).__name__}: {exc}"
        exc = exc.__cause__ or exc.__context__
    return None


FINGERPRINT_VERSION = "sha256-v2"  # a file of another version (or none) is not checked


def fingerprint(state) -> str:
    """SHA-256 of every leaf's dtype, shape and bytes: orbax/tensorstore do not checksum the array data,
    so a flipped bit in a checkpoint file would otherwise restore as a silently different number."""
    def name(key) -> str:  # the same for a field, a dict key or an index, so a state restored as dicts matches
        return str(getattr(key, "name", getattr(key, "key", getattr(key, "idx", key))))

    leaves = {"/".join(map(name, path)): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}
    digest = hashlib.sha256()
    for path in sorted(leaves):
        array = np.ascontiguousarray(jax.device_get(leaves[path]))
        digest.update(f"{path}:{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class Checkpoints:
    def __init__(self, directory: pathlib.Path, *, keep: int = 3, async_save: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                     create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)
        self._writing: int | None = None  # the step an asynchronous save may still be writing
        self.fingerprints = self.directory.with_name(self.directory.name + ".sha256")  # one file per step

    def _failed(self, step: int | None, e: BaseException) -> CheckpointError:
        self._writing = None
        # Orbax re-raises a failed asynchronous save on every later call: a fresh manager lets the
        # caller save again (e.g. once space is freed); the failure is reported once, here.
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 - the same failure again
            pass
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)
        cause = _cause(e) or f"{type(e).__name__}: {str(e)[:500]}"
        good = [s for s in self.manager.all_steps() if s != step]
        return CheckpointError(
            f"Could not write the checkpoint of step {step} to {self.directory}: {cause}. Free disk space, fix "
            f"the permissions or point --workdir elsewhere, then rerun the same command: it resumes from the "
            f"newest complete checkpoint (steps {sorted(good)} are untouched)."
        )

    def save(self, step: int, state) -> None:
        self.wait()  # orbax waits for the previous save anyway; its failure is reported as that step's
        try:
            if jax.process_index() == 0:  # written before the step commits: a step never lacks its own
                self.fingerprints.mkdir(exist_ok=True)
                (self.fingerprints / str(step)).write_text(f"{FINGERPRINT_VERSION} {fingerprint(state)}")
            self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        except Exception as e:  # noqa: BLE001
            raise self._failed(step, e) from e
        self._writing = step

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._failed(self._writing, e) from e
        self._writing = None

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state):
        """(state, step) of the newest checkpoint that loads, or (None, 0) when there is none."""
        failures = []
        for step in reversed(self.steps()):
            try:
                state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
                expected = self.fingerprints / str(step)
                recorded = expected.read_text().split() if expected.exists() else []
                if recorded[:1] == [FINGERPRINT_VERSION] and recorded[1:] != [fingerprint(state)]:  # other versions: unchecked
                    raise ValueError(f"its arrays do not match the SHA-256 recorded when it was saved ({expected})")
            except Exception as e:  # noqa: BLE001 - any failure means "this step is unusable"
                logging.warning("Checkpoint of step %d in %s is corrupt or incomplete and cannot be restored "
                                "(%s: %s); trying an older one.", step, self.directory, type(e).__name__, str(e)[:300])
                failures.append(step)
                continue
            if failures:
                moved = self._quarantine(failures)
                logging.warning("Resuming from step %d; the unreadable checkpoints of steps %s were moved, not "
                                "deleted, to %s.", step, failures, moved)
            return state, step
        if failures:
            raise CheckpointError(
                f"None of the checkpoints {failures} in {self.directory} can be restored. They were left in place; "
                "move them away to start from scratch."
            )
        return None, 0

    def _quarantine(self, steps: list[int]) -> pathlib.Path:
        """Move unreadable steps out of the manager's directory so the resumed run can save them anew."""
        target = self.directory.with_name(self.directory.name + ".corrupt")
        if jax.process_index() == 0:
            target.mkdir(exist_ok=True)
            for step in steps:
                (self.directory / str(step)).rename(target / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("efficientnet_jax_quarantine")
        self.manager.reload()
        return target

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


def with_sharding(abstract_tree, sharding):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract_tree)
