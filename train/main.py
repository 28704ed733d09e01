"""python -m train.main --config=train/configs/digits.py --workdir=DIR [--config.key=value ...]

Parses flags and calls ``train.train.train_and_evaluate``; user errors become one clear line.
"""
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only feeds tf.data; keep its C++ chatter out

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, sys_argv: list[str] | None = None):
    """--config (a locked ConfigDict: --config.KEY=VALUE sets a key of train/configs/base.py, an unknown
    KEY is an error) and --workdir; returns their holders. ``sys_argv``: the arguments the --config.KEY
    overrides are read from, when they are not ``sys.argv``."""
    config = config_flags.DEFINE_config_file("config", None, "Path to a config file (train/configs/*.py), "
                                             "optionally FILE:ARG (e.g. imagenet.py:b3,runlocal).",
                                             lock_config=True, flag_values=flag_values, sys_argv=sys_argv)
    workdir = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events and metrics.jsonl go here.",
                                  flag_values=flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)
    return config, workdir


_CONFIG, _WORKDIR = define_flags()


class _QuietLibraries(logging.Filter):
    """Orbax logs every save and tfds every dataset open at INFO; keep their warnings and errors."""

    def filter(self, record):
        noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
        return record.levelno >= logging.WARNING or not noisy


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("absl").addFilter(_QuietLibraries())
    from train.checkpoint import CheckpointError
    from train.input_pipeline import DatasetNotFoundError
    from train.metrics import OutputError
    from train.train import TrainingError, train_and_evaluate

    try:
        result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ValueError, FileNotFoundError, ImportError, TrainingError, CheckpointError, DatasetNotFoundError,
            OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if result.get("preempted"):
        print(f"Preempted at step {result['step']}; rerun the same command to resume.")
        return
    line = f"test accuracy {result['accuracy']:.4f} (top-5 {result['top5']:.4f}, {result['examples']} examples)"
    if "ema_accuracy" in result:
        line += f"; EMA weights {result['ema_accuracy']:.4f}"
    print(line)


def parse_flags(argv):
    """absl's parser, with a bad --config.KEY override reported in one line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        message = str(e)
        if "Traceback" in message:  # the config file's get_config raised: config_flags quotes its traceback
            message = [line for line in message.splitlines() if line.strip()][-1]
        print(f"error: bad flag in {' '.join(argv[1:])}: {message}. Config keys are listed in "
              "train/configs/base.py.", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
