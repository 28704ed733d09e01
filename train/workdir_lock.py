"""One training run per workdir.

Two runs on one workdir replace each other's checkpoints, rewrite ``config.json`` and interleave
``metrics.jsonl``. A run therefore takes an exclusive ``fcntl.flock`` on ``<workdir>/.lock`` before it
writes anything and holds it until it ends. The kernel drops the lock when the holder dies in any way
(SIGKILL, a crash, an OOM kill), so a dead run never blocks the next one and nothing needs cleaning up;
the file itself stays and only records the last holder (host, pid, start time) for the message a second
run prints. With several processes, process 0 holds the lock for the whole run (all processes share the
workdir) and tells the others whether it got it, so they all stop together.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import pathlib
import socket

import jax
import numpy as np

LOCK_FILE = ".lock"


class WorkdirInUseError(RuntimeError):
    """Another live run holds the workdir (the message names it)."""


class WorkdirLock:
    def __init__(self, fd: int | None):
        self._fd = fd  # None on processes other than 0

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _holder(path: pathlib.Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its name"


def _try_lock(workdir: pathlib.Path) -> tuple[int | None, str]:
    """(descriptor, '') when this process now holds the lock, else (None, the holder's description)."""
    path = workdir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # creates it if new; never truncates before the lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None, _holder(path)
    except BaseException:
        os.close(fd)
        raise
    holder = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    return fd, ""


def acquire(workdir: str | pathlib.Path) -> WorkdirLock:
    """Hold ``workdir`` for this run, or raise ``WorkdirInUseError`` naming the run that holds it.

    Call it before writing anything into ``workdir`` (it must exist); release the returned lock when the
    run ends. Every process calls it: process 0 takes the lock, the others learn the outcome.
    """
    workdir = pathlib.Path(workdir)
    fd, holder = _try_lock(workdir) if jax.process_index() == 0 else (None, "")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        got = bool(multihost_utils.broadcast_one_to_all(np.int32(fd is not None)))  # process 0's outcome
        if not got and jax.process_index() != 0:
            holder = "another run (see process 0's message)"
    else:
        got = fd is not None
    if not got:
        raise WorkdirInUseError(
            f"{workdir} is in use by another training run ({holder}); wait for it to end or stop it, or pass "
            f"another --workdir. The lock is released automatically when that process exits."
        )
    return WorkdirLock(fd)
