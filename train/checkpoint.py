"""Orbax checkpoints that never lose a good state and never restore a bad one.

Orbax writes each step into a temporary directory and renames it when complete, so a
kill mid-write leaves the previous steps intact (the next save of that step removes the
unfinished directory). On restore, a step that fails to load (truncated or corrupted
files) or fails its integrity check is reported and the next older one is tried; once an
older one loads, the bad ones are moved to ``<checkpoints>.corrupt/`` (kept for inspection,
never deleted, and out of the way of the resumed run's saves).

Integrity: orbax does not checksum array data, so each process records a SHA-256 of every piece
of the state it holds (each distinct shard: its data, dtype, shape and place in the array) in
``<checkpoints>.sha256/<step>.<process_index>``. Integrity fails closed: a step whose records are
missing, empty, unreadable or of an unknown version is unverified and treated like a corrupt
one.

Checkpoints reshard: orbax writes each process's shards (nothing is gathered to one host) and restores
onto the shardings of the target it is given, so a run saved with ``fsdp=8`` on 8 devices continues
with ``fsdp=4``, or on 4 devices. The check does not depend on the layout: a recorded piece (a place
in an array) is cut out of the pieces the process now holds, whichever way those are split, and hashed
again. One process holds every array whole, so every piece is checked; with several processes a piece
that no single process holds whole in the new layout (the split moved to another dimension across
hosts) cannot be checked, and the restore says how many.

The record is committed after orbax has committed the step's data (a run killed in between
loses that step, never trusts it unchecked), and records are pruned with their steps. Saving
blocks the training loop only for a host copy of this process's pieces; the hashing runs on a
background thread, and no process gathers another's data. Records of the previous format (one
``sha256-v2`` digest of the whole state in ``<step>``) are still checked.

A save that fails (disk full, no permission) raises ``CheckpointError`` naming the directory and
the cause; the state passed to ``save`` is only read, so it stays usable.
"""
from __future__ import annotations

import concurrent.futures
import errno
import hashlib
import json
import logging
import math
import os
import pathlib
import re
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P


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


def os_error_cause(exc: BaseException) -> str | None:
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


FINGERPRINT_VERSION = "sha256-v3"  # per-process records of pieces, in <step>.<process_index>
LEGACY_VERSION = "sha256-v2"  # one digest of the whole state, in <step>: written before v3, still checked


def _name(key) -> str:  # the same for a field, a dict key or an index, so a state restored as dicts matches
    return str(getattr(key, "name", getattr(key, "key", getattr(key, "idx", key))))


def _leaves(state) -> dict:
    return {"/".join(map(_name, path)): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def fingerprint(state) -> str:
    """SHA-256 of every leaf's dtype, shape and bytes, the whole state on one host (the ``sha256-v2``
    records): orbax/tensorstore do not checksum the array data, so a flipped bit in a checkpoint file
    would otherwise restore as a silently different number."""
    leaves = _leaves(state)
    digest = hashlib.sha256()
    for path in sorted(leaves):
        array = np.ascontiguousarray(jax.device_get(leaves[path]))
        digest.update(f"{path}:{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _span(index: tuple, shape: tuple) -> str:
    """A shard's place in its array, e.g. '0:8,0:32' (the same whichever devices hold it)."""
    return ",".join(f"{0 if s.start is None else s.start}:{n if s.stop is None else s.stop}"
                    for s, n in zip(index, shape))


def _bounds(span: str) -> list[tuple[int, int]]:
    """'0:8,0:32' -> [(0, 8), (0, 32)]; '' (a scalar) -> []."""
    return [tuple(map(int, part.split(":"))) for part in span.split(",")] if span else []


def _cut(span: str, pieces: dict[str, np.ndarray]) -> np.ndarray | None:
    """The part ``span`` of an array, copied out of ``pieces`` of it (``{span: array}``, disjoint, as one
    process holds them in any layout), or None when they do not hold all of it."""
    if span in pieces:
        return pieces[span]
    bounds = _bounds(span)
    out, covered = None, 0
    for piece_span, array in pieces.items():
        piece_bounds = _bounds(piece_span)
        overlap = [(max(a, c), min(b, d)) for (a, b), (c, d) in zip(bounds, piece_bounds)]
        if any(lo >= hi for lo, hi in overlap):
            continue
        if out is None:
            out = np.empty([b - a for a, b in bounds], array.dtype)
        out[tuple(slice(lo - a, hi - a) for (lo, hi), (a, _) in zip(overlap, bounds))] = \
            array[tuple(slice(lo - c, hi - c) for (lo, hi), (c, _) in zip(overlap, piece_bounds))]
        covered += math.prod(hi - lo for lo, hi in overlap)
    return out if out is not None and covered == out.size else None


def host_pieces(state) -> dict[str, np.ndarray]:
    """This process's distinct pieces of every leaf of ``state``, in host memory it owns:
    ``{'path@span': array}``. A replicated array is one piece; a sharded one gives the shards this
    process holds, each once. The copies stay valid after the state's buffers are donated."""
    leaves = _leaves(state)
    shards = {}
    for path, leaf in leaves.items():
        if isinstance(leaf, jax.Array):
            for shard in leaf.addressable_shards:
                shards.setdefault(f"{path}@{_span(shard.index, leaf.shape)}", shard.data)
        else:
            leaf = np.asarray(leaf)
            shards[f"{path}@{_span((slice(None),) * leaf.ndim, leaf.shape)}"] = leaf
    arrays = jax.device_get(list(shards.values()))  # one call: all transfers start before any is waited for
    return {key: array.copy() if not array.flags.owndata else array  # on CPU a view of the device buffer
            for key, array in zip(shards, map(np.asarray, arrays))}


def piece_digests(pieces: dict[str, np.ndarray]) -> dict[str, str]:
    """SHA-256 of each piece's dtype, shape and bytes (hashlib releases the GIL: this runs beside training)."""
    digests = {}
    for key, array in pieces.items():
        digest = hashlib.sha256(f"{key}:{array.dtype}{array.shape}".encode())
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
        digests[key] = digest.hexdigest()
    return digests


class Unverified(Exception):
    """A step's integrity records are missing, unreadable or of another version."""


def _write_atomically(path: pathlib.Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)  # readers see the whole record or none


class Checkpoints:
    """``quarantine=False`` (readers such as ``train.restore``, which may run beside a training run whose
    newest step has no record yet) skips bad steps without moving them."""

    def __init__(self, directory: pathlib.Path, *, keep: int = 3, async_save: bool = True, quarantine: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                     create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)
        self._async = async_save
        self._quarantine_bad = quarantine
        self._writing: int | None = None  # the step an asynchronous save may still be writing
        self._digests: concurrent.futures.Future | None = None  # its pieces' SHA-256, being computed
        self._hasher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint_sha256")
        self.fingerprints = self.directory.with_name(self.directory.name + ".sha256")  # the records

    def _failed(self, step: int | None, e: BaseException) -> CheckpointError:
        self._writing, self._digests = None, None
        # Orbax re-raises a failed asynchronous save on every later call: a fresh manager lets the
        # caller save again (e.g. once space is freed); the failure is reported once, here.
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 - the same failure again
            pass
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)
        cause = os_error_cause(e) or f"{type(e).__name__}: {str(e)[:500]}"
        good = [s for s in self.manager.all_steps() if s != step]
        return CheckpointError(
            f"Could not write the checkpoint of step {step} to {self.directory}: {cause}. Free disk space, fix "
            f"the permissions or point --workdir elsewhere, then rerun the same command: it resumes from the "
            f"newest complete checkpoint (steps {sorted(good)} are untouched)."
        )

    def save(self, step: int, state) -> None:
        """Start writing ``state`` as ``step``; returns once this process's part is copied to host memory."""
        self.wait()  # orbax waits for the previous save anyway; its failure is reported as that step's
        try:
            pieces = host_pieces(state)
            self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        except Exception as e:  # noqa: BLE001
            raise self._failed(step, e) from e
        self._writing, self._digests = step, self._hasher.submit(piece_digests, pieces)
        if not self._async:
            self.wait()

    def poll(self) -> None:
        """Commit the record of a save that has finished writing (cheap; the loop calls it every step), so a
        step is unverified only for the moment between its commit and its record's."""
        if (self._writing is not None and self._digests.done()
                and not self.manager.is_saving_in_progress()):
            self.wait()

    def wait(self) -> None:
        """Wait for the save in progress, then commit its record."""
        try:
            self.manager.wait_until_finished()
            if self._writing is not None:
                self._commit_record(self._writing, self._digests.result())
        except Exception as e:  # noqa: BLE001
            raise self._failed(self._writing, e) from e
        self._writing, self._digests = None, None

    def _commit_record(self, step: int, digests: dict[str, str]) -> None:
        self.fingerprints.mkdir(exist_ok=True)
        record = {"version": FINGERPRINT_VERSION, "step": step, "process_index": jax.process_index(),
                  "process_count": jax.process_count(), "pieces": digests}
        _write_atomically(self.fingerprints / f"{step}.{jax.process_index()}", json.dumps(record))
        if jax.process_index() == 0:
            self._prune_records()

    def _prune_records(self) -> None:
        """Delete the records of steps orbax no longer keeps (``keep``): a record never outlives its step."""
        kept = {p.name for p in self.directory.iterdir() if p.name.isdigit()}
        for record in self.fingerprints.iterdir():
            if record.name.split(".")[0] not in kept and not record.name.startswith("."):
                record.unlink(missing_ok=True)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def _records(self, step: int) -> list[dict]:
        """The step's records (v3: one per process that saved it; legacy: one), or ``Unverified``."""
        legacy = self.fingerprints / str(step)
        found = sorted(self.fingerprints.glob(f"{step}.*")) if self.fingerprints.is_dir() else []
        if not found and legacy.is_file():
            try:
                version, digest = legacy.read_text().split()
            except (OSError, ValueError) as e:
                raise Unverified(f"its integrity record {legacy} is unreadable ({e})") from None
            if version != LEGACY_VERSION:
                raise Unverified(f"its integrity record {legacy} is of an unknown version {version!r}")
            return [{"version": LEGACY_VERSION, "digest": digest}]
        if not found:
            raise Unverified(f"it has no integrity record in {self.fingerprints}")
        records = []
        for path in found:
            try:
                record = json.loads(path.read_text())
                version, count = record["version"], int(record["process_count"])
                if not isinstance(record["pieces"], dict):
                    raise TypeError("pieces is not a mapping")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise Unverified(f"its integrity record {path} is empty or unreadable ({type(e).__name__}: "
                                 f"{str(e)[:200]})") from None
            if version != FINGERPRINT_VERSION:
                raise Unverified(f"its integrity record {path} is of an unknown version {version!r}")
            records.append(record)
        if {str(i) for i in range(count)} != {p.name.split(".", 1)[1] for p in found}:
            raise Unverified(f"it has integrity records {[p.name for p in found]} for a save by {count} processes")
        return records

    def _verify(self, step: int, state) -> tuple[list[str], set[str]]:
        """Raise ``ValueError`` unless every recorded piece that this process holds whole, in whatever layout
        ``state`` is now split, matches its SHA-256, and the records cover every array of ``state``.
        Returns (the recorded pieces of ``state``'s arrays, those this process checked)."""
        records = self._records(step)
        if records[0]["version"] == LEGACY_VERSION:
            if fingerprint(state) != records[0]["digest"]:
                raise ValueError(f"its arrays do not match the SHA-256 recorded when it was saved "
                                 f"({self.fingerprints / str(step)})")
            return [], set()
        expected = {}
        for record in records:
            expected.update(record["pieces"])
        held: dict[str, dict[str, np.ndarray]] = {}  # path -> span -> this process's piece
        for key, array in host_pieces(state).items():
            path, _, span = key.rpartition("@")
            held.setdefault(path, {})[span] = array
        recorded_size: dict[str, int] = {}  # elements of each array the records cover (their pieces are disjoint)
        for key in expected:
            path, _, span = key.rpartition("@")
            recorded_size[path] = recorded_size.get(path, 0) + math.prod(b - a for a, b in _bounds(span))
        sizes = {path: math.prod(np.shape(leaf)) for path, leaf in _leaves(state).items()}
        uncovered = [path for path in held if recorded_size.get(path, 0) != sizes[path]]
        if uncovered:
            raise ValueError(f"{len(uncovered)} arrays have no recorded SHA-256 for all of their elements "
                             f"(e.g. {uncovered[0]}; records {self.fingerprints}/{step}.*)")
        recorded = [key for key in expected if key.rpartition("@")[0] in held]
        wrong, checked = [], set()
        for key in recorded:
            path, _, span = key.rpartition("@")
            piece = _cut(span, held[path])
            if piece is None:  # split across processes in this layout: another process may hold it whole
                continue
            if piece_digests({key: piece})[key] != expected[key]:
                wrong.append(key)
            checked.add(key)
        if wrong:
            raise ValueError(f"{len(wrong)} arrays do not match the SHA-256 recorded when it was saved "
                             f"(e.g. {wrong[0]}; records {self.fingerprints}/{step}.*)")
        return recorded, checked

    def restore_latest(self, abstract_state):
        """(state, step) of the newest checkpoint that loads and passes its integrity check, or (None, 0)
        when there is none. With several processes they agree on the step (one's bad shard fails it for all).

        ``abstract_state`` (shapes, dtypes and shardings, e.g. ``with_sharding(jax.eval_shape(...), shardings)``)
        is the layout restored onto, whichever layout saved the step. ``None`` restores the tree as saved, in
        the saved layout where this topology has its devices, else replicated on every device."""
        if abstract_state is None:
            everywhere = jax.sharding.Mesh(np.asarray(jax.devices()), ("devices",))
            restore_args = ocp.args.StandardRestore(None, fallback_sharding=NamedSharding(everywhere, P()))
        else:
            restore_args = ocp.args.StandardRestore(abstract_state)
        failures, unrecorded = [], []
        for step in reversed(self.steps()):
            state, problem, checked = None, None, ([], set())
            try:
                self._records(step)  # an unverified step is not even read
                state = self.manager.restore(step, args=restore_args)
                checked = self._verify(step, state)
            except Unverified as e:
                problem = f"Unverified: {e}"
                unrecorded.append(step)
            except Exception as e:  # noqa: BLE001 - any failure means "this step is unusable"
                problem = f"{type(e).__name__}: {str(e)[:300]}"
            problem = _agreed(problem)
            if problem is not None:
                logging.warning("Checkpoint of step %d in %s is corrupt or incomplete and cannot be "
                                "restored (%s); trying an older one.", step, self.directory, problem)
                failures.append(step)
                continue
            unchecked = _checked_by_none(*checked)
            if unchecked:
                logging.warning("Checkpoint of step %d: %d of %d recorded pieces are split across processes in "
                                "this layout and could not be checked (e.g. %s); the others match.", step,
                                len(unchecked), len(checked[0]), unchecked[0])
            if failures and self._quarantine_bad:
                moved = self._quarantine(failures)
                logging.warning("Resuming from step %d; the unreadable checkpoints of steps %s were moved, not "
                                "deleted, to %s.", step, failures, moved)
            elif failures:
                logging.warning("Using step %d; the unusable checkpoints of steps %s were left in place.",
                                step, failures)
            return state, step
        if failures and unrecorded == failures and self._quarantine_bad:
            # Only steps without (valid) records, e.g. the first checkpoint of a run killed between its
            # commit and its record's: nothing to resume from, nothing restored unchecked.
            moved = self._quarantine(failures)
            logging.warning("Starting from scratch: no checkpoint passes its integrity check; the unverified "
                            "checkpoints of steps %s were moved, not deleted, to %s.", failures, moved)
            return None, 0
        if failures:
            raise CheckpointError(
                f"None of the checkpoints {failures} in {self.directory} can be restored. They were left in place; "
                "move them away to start from scratch."
            )
        return None, 0

    def _quarantine(self, steps: list[int]) -> pathlib.Path:
        """Move unreadable steps, and their records, out of the manager's directory so the resumed run can
        save them anew."""
        target = self.directory.with_name(self.directory.name + ".corrupt")
        if jax.process_index() == 0:
            target.mkdir(exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for step in steps:
                (self.directory / str(step)).rename(target / f"{step}-{stamp}")
                records = ([self.fingerprints / str(step), *self.fingerprints.glob(f"{step}.*")]
                           if self.fingerprints.is_dir() else [])
                for record in (r for r in records if r.exists()):
                    (target / "sha256").mkdir(exist_ok=True)
                    record.rename(target / "sha256" / f"{record.name}-{stamp}")
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("efficientnet_jax_quarantine")
        self.manager.reload()
        return target

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()
            self._hasher.shutdown(wait=False)


def _checked_by_none(recorded: list[str], checked: set[str]) -> list[str]:
    """The recorded pieces that no process could check (each process checks those it holds whole)."""
    keys = sorted(recorded)
    mask = np.asarray([key in checked for key in keys], bool)
    if jax.process_count() > 1 and keys:  # every process has the same records and state tree, so the same keys
        from jax.experimental import multihost_utils

        mask = np.any(multihost_utils.process_allgather(mask), axis=0)
    return [key for key, ok in zip(keys, mask) if not ok]


def _agreed(problem: str | None) -> str | None:
    """``problem``, or with several processes the same verdict on all: one process's failure fails the step
    for every process (each checks only the pieces it holds)."""
    if jax.process_count() == 1:
        return problem
    from jax.experimental import multihost_utils

    failed = multihost_utils.process_allgather(np.int32(problem is not None))
    if problem is None and np.any(failed):
        problem = f"processes {np.flatnonzero(failed).tolist()} found it unusable"
    return problem


def with_sharding(abstract_tree, sharding):
    """``abstract_tree``'s shapes and dtypes placed by ``sharding``: one sharding for every leaf, or a tree of
    them (``sharding.state_shardings``). The target a checkpoint is restored onto, in any layout."""
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract_tree)
    return jax.tree.map(lambda s, placed: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=placed),
                        abstract_tree, sharding)
