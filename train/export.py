"""Export a run's trained weights as a file that ``load_pretrained``, ``predict`` and ``evaluate`` read.

    python -m train.export --workdir runs/flowers                  # -> runs/flowers/weights.msgpack
    python -m train.export --workdir runs/flowers --which raw --out flowers.safetensors

The newest checkpoint that loads is used (an unreadable newer one is skipped, never deleted).
``--which best`` (default) takes the EMA or the raw weights, whichever evaluated better at the end
of the run (``final_metrics.json``).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from efficientnet_jax.specs import list_models
from efficientnet_jax.weights import save_pretrained
from train.restore import load_config, restore_run


def _choose(which: str, workdir: pathlib.Path) -> str:
    if which != "best":
        return which
    metrics_file = workdir / "final_metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return "ema" if metrics.get("ema_accuracy", -1.0) >= metrics.get("accuracy", 0.0) else "raw"


def export_weights(workdir: str | pathlib.Path, out: str | pathlib.Path | None = None, which: str = "best"):
    """Write the run's weights (``which``: 'best', 'ema' or 'raw') with the model's settings; returns the path."""
    workdir = pathlib.Path(workdir).absolute()
    model_name = load_config(workdir).model
    if model_name not in list_models():
        raise ValueError(f"train.export writes EfficientNet weight files; {model_name!r} runs keep their "
                         f"weights in {workdir}/checkpoints (read them with train.restore.restore_run)")
    run = restore_run(workdir)
    which = _choose(which, workdir)
    out = pathlib.Path(out) if out else workdir / "weights.msgpack"
    save_pretrained(out, run.model, run.variables(which), source=f"{workdir} step {run.step} ({which} weights)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default=None, help="default: WORKDIR/weights.msgpack (.safetensors also works)")
    parser.add_argument("--which", choices=("best", "ema", "raw"), default="best")
    args = parser.parse_args(argv)
    try:
        path = export_weights(args.workdir, args.out, args.which)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
