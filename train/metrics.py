"""Where metrics go: ``metrics.jsonl`` (one JSON object per line), TensorBoard, and the terminal."""
from __future__ import annotations

import json
import logging
import pathlib
import sys
import time

from train.checkpoint import os_error_cause


class OutputError(RuntimeError):
    """A run output (metrics.jsonl, TensorBoard events, config.json) cannot be written: disk full, quota,
    permissions. The message says which file and why; checkpoints already written are untouched."""

    def __init__(self, path, error: BaseException):
        cause = os_error_cause(error) or f"{type(error).__name__}: {str(error)[:300]}"
        super().__init__(f"Could not write {path}: {cause}. Free disk space, fix the permissions or point "
                         "--workdir elsewhere, then rerun the same command: it resumes from the newest checkpoint.")


def write_text(path: pathlib.Path, text: str) -> None:
    """``path.write_text(text)``, with a failure of the file system as ``OutputError``."""
    try:
        pathlib.Path(path).write_text(text)
    except OSError as e:
        raise OutputError(path, e) from e


class MetricWriter:
    """Writes on process 0 only; every record has ``step``, ``epoch`` and ``split``."""

    def __init__(self, workdir: pathlib.Path, enabled: bool = True):
        self.enabled = enabled
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._tb = None
        if enabled:
            import tensorflow as tf  # already loaded by the input pipeline; CPU only

            tensorboard = pathlib.Path(workdir) / "tensorboard"
            try:
                self._tb = tf.summary.create_file_writer(str(tensorboard))
            except (OSError, tf.errors.OpError) as e:
                raise OutputError(tensorboard, e) from e

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, str)) else v)
                  for k, v in record.items()}
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise OutputError(self.path, e) from e
        import tensorflow as tf

        try:
            with self._tb.as_default(step=int(record["step"])):
                for key, value in record.items():
                    if key not in ("step", "split") and isinstance(value, (int, float)):
                        tf.summary.scalar(f"{record['split']}/{key}", value)
            self._tb.flush()
        except (OSError, tf.errors.OpError) as e:
            raise OutputError(self.path.with_name("tensorboard"), e) from e

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A tqdm bar on a terminal; plain log lines (at log steps) otherwise."""

    def __init__(self, total: int, start: int, enabled: bool = True):
        self.total, self.start_time, self.start = total, time.time(), start
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
        self.enabled = enabled

    def update(self, step: int, info: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if info:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)
        elif info and self.enabled:
            elapsed = time.time() - self.start_time
            rate = (step - self.start) / max(elapsed, 1e-9)
            eta = (self.total - step) / max(rate, 1e-9)
            text = " ".join(f"{k} {v:.4g}" for k, v in info.items())
            logging.info("step %d/%d %s eta %.0fs", step, self.total, text, eta)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
