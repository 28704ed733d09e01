"""Orbax checkpoints that never lose a good state.

Orbax writes each step into a temporary directory and renames it when complete, so a
kill mid-write leaves the previous steps intact. On restore, a step that fails to
load (truncated or corrupted files) is reported and the next older one is tried;
nothing is ever deleted here.
"""
from __future__ import annotations

import logging
import pathlib

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    pass


class Checkpoints:
    def __init__(self, directory: pathlib.Path, *, keep: int = 3, async_save: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
            ),
        )

    def save(self, step: int, state) -> None:
        try:
            self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        except OSError as e:
            raise CheckpointError(
                f"Could not write the checkpoint of step {step} to {self.directory}: {e}. "
                "Free disk space or point --workdir elsewhere; earlier checkpoints are untouched."
            ) from e

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state):
        """(state, step) of the newest checkpoint that loads, or (None, 0) when there is none."""
        failures = []
        for step in reversed(self.steps()):
            try:
                state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
            except Exception as e:  # noqa: BLE001 - any failure means "this step is unusable"
                logging.warning("Checkpoint of step %d in %s cannot be restored (%s: %s); trying an older one.",
                                step, self.directory, type(e).__name__, str(e)[:300])
                failures.append(step)
                continue
            if failures:
                logging.warning("Resuming from step %d; unreadable checkpoints %s were left in place.", step, failures)
            return state, step
        if failures:
            raise CheckpointError(
                f"None of the checkpoints {failures} in {self.directory} can be restored. They were left in place; "
                "move them away to start from scratch."
            )
        return None, 0

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def with_sharding(abstract_tree, sharding):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract_tree)
