"""Export a run's trained weights as a file that ``load_pretrained``, ``predict`` and ``evaluate`` read.

    python -m train.export --workdir runs/flowers                  # -> runs/flowers/weights.msgpack
    python -m train.export --workdir runs/flowers --which raw --out flowers.safetensors
    python -m train.export --workdir runs/flowers --format onnx-int8          # -> runs/flowers/model-int8.onnx

``--format`` (stablehlo, onnx, onnx-int8, tflite, tflite-int8) restores the run and writes a deployable
file with its JSON sidecar through ``efficientnet_jax.export`` in the same command.

The newest checkpoint that loads is used (an unreadable newer one is skipped, never deleted).
``--which best`` (default) takes the EMA or the raw weights, whichever evaluated better at the end
of the run (``final_metrics.json``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

from efficientnet_jax.export import FORMATS, export
from efficientnet_jax.export.formats import check_format, parse_batch
from efficientnet_jax.specs import list_models
from efficientnet_jax.weights import save_pretrained
from train.restore import load_config, restore_run


def _choose(which: str, workdir: pathlib.Path) -> str:
    if which != "best":
        return which
    metrics_file = workdir / "final_metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return "ema" if metrics.get("ema_accuracy", -1.0) >= metrics.get("accuracy", 0.0) else "raw"


# Default file names of --format exports, inside the workdir.
EXPORT_NAMES = {"stablehlo": "model.stablehlo", "onnx": "model.onnx", "onnx-int8": "model-int8.onnx",
                "tflite": "model.tflite", "tflite-int8": "model-int8.tflite"}


def _restore(workdir: pathlib.Path):
    model_name = load_config(workdir).model
    if model_name not in list_models():
        raise ValueError(f"train.export writes EfficientNet weight files; {model_name!r} runs keep their "
                         f"weights in {workdir}/checkpoints (read them with train.restore.restore_run)")
    return restore_run(workdir)


def export_run(workdir: str | pathlib.Path, fmt: str, out: str | pathlib.Path | None = None, which: str = "best",
               **options) -> pathlib.Path:
    """Restore the run and write its weights (``which``) as ``fmt`` (see ``efficientnet_jax.export.FORMATS``)
    with the sidecar; ``options``: ``batch``, ``image_size``, ``calibration``. Returns the file's path."""
    workdir = pathlib.Path(workdir).absolute()
    check_format(fmt)
    parse_batch(options.get("batch", "dynamic"))
    run = _restore(workdir)
    which = _choose(which, workdir)
    out = pathlib.Path(out) if out else workdir / EXPORT_NAMES[fmt]
    return export(_as_evaluated(run), run.variables(which), fmt, out,
                  weights=f"{workdir} step {run.step} ({which} weights)", **options)


def _as_evaluated(run):
    """The run's model with the eval resolution and the mean/std it was trained with in its spec, so the export
    takes the images the run evaluated on and the sidecar says how to make them (digits: 32 px)."""
    config = run.config
    size = config.eval_image_size or config.image_size or run.model.spec.resolution
    spec = dataclasses.replace(run.model.spec, resolution=int(size), mean=tuple(config.mean), std=tuple(config.std))
    return run.model.clone(spec=spec)


def export_weights(workdir: str | pathlib.Path, out: str | pathlib.Path | None = None, which: str = "best"):
    """Write the run's weights (``which``: 'best', 'ema' or 'raw') with the model's settings; returns the path."""
    workdir = pathlib.Path(workdir).absolute()
    run = _restore(workdir)
    which = _choose(which, workdir)
    out = pathlib.Path(out) if out else workdir / "weights.msgpack"
    save_pretrained(out, run.model, run.variables(which), source=f"{workdir} step {run.step} ({which} weights)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default=None, help="default: WORKDIR/weights.msgpack (.safetensors also works); "
                        "with --format: WORKDIR/model.stablehlo, model.onnx, model-int8.onnx ...")
    parser.add_argument("--which", choices=("best", "ema", "raw"), default="best")
    parser.add_argument("--format", default=None, help=f"write a deployable file instead: {', '.join(FORMATS)}")
    parser.add_argument("--batch", default="dynamic", help="with --format: a batch size or 'dynamic'")
    parser.add_argument("--image-size", "--image_size", dest="image_size", type=int, default=None,
                        help="with --format: input resolution (default: the run's eval image size)")
    parser.add_argument("--calibration", default=None,
                        help="with --format onnx-int8 / tflite-int8: a folder of images, 'photos' or 'digits'")
    args = parser.parse_args(argv)
    try:
        if args.format is None:
            path = export_weights(args.workdir, args.out, args.which)
        else:
            path = export_run(args.workdir, args.format, args.out, args.which, batch=args.batch,
                              image_size=args.image_size, calibration=args.calibration)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
