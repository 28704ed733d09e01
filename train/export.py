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

from efficientnet_jax.model import create_model
from efficientnet_jax.specs import list_models
from efficientnet_jax.weights import save_pretrained
from efficientnet_jax.weights.common import head_classes


def _choose(which: str, workdir: pathlib.Path) -> str:
    if which != "best":
        return which
    metrics_file = workdir / "final_metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return "ema" if metrics.get("ema_accuracy", -1.0) >= metrics.get("accuracy", 0.0) else "raw"


def export_weights(workdir: str | pathlib.Path, out: str | pathlib.Path | None = None, which: str = "best"):
    """Write the run's weights (``which``: 'best', 'ema' or 'raw') with the model's settings; returns the path."""
    from train.checkpoint import Checkpoints

    workdir = pathlib.Path(workdir).absolute()
    config_file = workdir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{workdir} holds no training run (no config.json); pass the --workdir of a run")
    config = json.loads(config_file.read_text())
    if config["model"] not in list_models():
        raise ValueError(f"train.export writes EfficientNet weight files; {config['model']!r} runs keep their "
                         f"weights in {workdir}/checkpoints (read them with orbax, or train.checkpoint.Checkpoints)")
    checkpoints = Checkpoints(workdir / "checkpoints", async_save=False)
    try:
        state, step = checkpoints.restore_latest(None)
    finally:
        checkpoints.close()
    if state is None:
        raise FileNotFoundError(f"{workdir}/checkpoints has no checkpoint yet")
    which = _choose(which, workdir)
    prefix = "ema_" if which == "ema" else ""
    variables = {"params": state[f"{prefix}params"], "batch_stats": state[f"{prefix}batch_stats"]}
    num_classes = head_classes(variables)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in (config.get("model_overrides") or {}).items()}
    model = create_model(config["model"], num_classes=num_classes, **overrides)
    out = pathlib.Path(out) if out else workdir / "weights.msgpack"
    save_pretrained(out, model, variables, source=f"{workdir} step {step} ({which} weights)")
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
