"""One entry point per export: ``export(model, variables, fmt, out)`` and ``export_pretrained(name, fmt, out)``.

Each format is a writer from (model, variables, image size, batch, calibration) to the file's bytes plus
what the sidecar records about its converter. Everything a user can get wrong (format, batch, image size,
a model a format cannot take, a missing package, missing weights) fails before any work, as an
``ExportError`` (a ValueError) or ``ImportError`` whose message names the fix.
"""
from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from typing import Any, Callable, Mapping

import numpy as np

from efficientnet_jax.export.calibration import calibration_batches
from efficientnet_jax.export.fused import fuse_network
from efficientnet_jax.export.onnx_graph import OPSET, onnx_model
from efficientnet_jax.export.quantize import SETTINGS, quantize_onnx
from efficientnet_jax.export.sidecar import INPUT_NAME, sidecar, write_sidecar
from efficientnet_jax.export.stablehlo import stablehlo_bytes
from efficientnet_jax.export.tflite import tflite_bytes
from efficientnet_jax.families import FAMILIES
from efficientnet_jax.model import EfficientNet
from efficientnet_jax.optional import extra, require
from efficientnet_jax.scan import unstack_blocks
from efficientnet_jax.specs import MIN_RESOLUTION
from efficientnet_jax.weights import load_pretrained

DEFAULT_SIZE = 224  # for models without a spec (ResNet, MobileNetV2)
GRAPH_FORMATS_NOTE = "builds EfficientNet graphs (efficientnet_*, efficientnetv2_*) only"


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class Format:
    """How one format is written: ``write(model, variables, size, batch, calibration) -> (bytes, converter)``."""

    name: str
    write: Callable[..., tuple[bytes, dict[str, Any]]]
    packages: tuple[str, ...]  # distributions whose versions the sidecar records
    needs_graph: bool  # built from the fused layers: EfficientNet only
    int8: bool = False


def _fused(model, variables, image_size):
    try:  # the fused layers are per block: a scanned model's stacked blocks are unrolled first
        return fuse_network(model, unstack_blocks(variables), image_size)
    except KeyError as e:
        raise ExportError(f"the variables lack {e} for {model.spec.name}: pass the variables of this model "
                          "(create_model / load_pretrained)") from None


def _write_stablehlo(model, variables, image_size, batch, calibration):
    data, platforms = stablehlo_bytes(model, variables, image_size, batch)
    return data, {"name": "jax.export", "serialization": "Exported.serialize", "platforms": list(platforms),
                  "symbolic_batch": "b" if batch is None else None,
                  "run": "jax.export.deserialize(open(FILE, 'rb').read()).call(images)"}


def _write_onnx(model, variables, image_size, batch, calibration):
    proto = onnx_model(_fused(model, variables, image_size), batch)
    return proto.SerializeToString(), {"name": "efficientnet_jax.export.onnx_graph (onnx.helper from the spec)",
                                       "opset": OPSET, "batch_norm": "folded into the convolutions"}


def _write_onnx_int8(model, variables, image_size, batch, calibration):
    proto = onnx_model(_fused(model, variables, image_size), batch)
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp, "int8.onnx")
        quantize_onnx(proto, calibration(batch), INPUT_NAME, out)
        data = out.read_bytes()
    return data, {"name": "efficientnet_jax.export.onnx_graph + onnxruntime.quantization", "opset": OPSET,
                  "quantization": SETTINGS}


def _write_tflite(model, variables, image_size, batch, calibration, int8=False):
    network = _fused(model, variables, image_size)
    data = tflite_bytes(network, batch, calibration(batch) if int8 else None)
    converter = {"name": "tf.lite.TFLiteConverter.from_concrete_functions (TF ops from the spec)",
                 "run": "ai_edge_litert.interpreter.Interpreter"}
    if int8:
        converter["quantization"] = {"ops": "TFLITE_BUILTINS_INT8 (full integer)", "input": "float32 (quantized "
                                     "in the graph)", "output": "float32", "representative_dataset": "calibration"}
    return data, converter


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("stablehlo", _write_stablehlo, (), needs_graph=False),
    Format("onnx", _write_onnx, ("onnx",), needs_graph=True),
    Format("onnx-int8", _write_onnx_int8, ("onnx", "onnxruntime"), needs_graph=True, int8=True),
    Format("tflite", _write_tflite, ("tensorflow", "tensorflow-cpu", "ai-edge-litert"), needs_graph=True),
    Format("tflite-int8", lambda *a: _write_tflite(*a, int8=True), ("tensorflow", "tensorflow-cpu", "ai-edge-litert"),
           needs_graph=True, int8=True),
)}


def check_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def parse_batch(batch: int | str | None) -> int | None:
    """None for a dynamic batch ('dynamic' or None), else a positive int."""
    if batch is None or batch == "dynamic":
        return None
    try:
        value = int(batch)
    except (TypeError, ValueError):
        value = 0
    if isinstance(batch, bool) or value < 1 or str(value) != str(batch).strip():
        raise ExportError(f"batch must be a positive integer or 'dynamic', got {batch!r}")
    return value


def _check_model(model, fmt: Format, image_size: int) -> None:
    if fmt.needs_graph and not isinstance(model, EfficientNet):
        raise ExportError(f"--format {fmt.name} {GRAPH_FORMATS_NOTE}, not {type(model).__name__}: "
                          "export it with --format stablehlo")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_RESOLUTION:
        raise ExportError(f"image size must be an integer of at least {MIN_RESOLUTION} pixels (the network has "
                          f"stride 32), got {image_size!r}")


def _calibration_for(model, image_size: int, source) -> Callable[[int | None], list]:
    """A function of the batch giving calibration inputs of that batch size (1 when dynamic)."""
    def batches(batch: int | None) -> list:
        samples = calibration_batches(model.spec, image_size, source)
        if batch is None:
            return samples
        stacked = np.concatenate(samples)
        count = max(1, len(stacked) // batch)
        return [np.resize(stacked, (count * batch, *stacked.shape[1:]))[i * batch:(i + 1) * batch]
                for i in range(count)]

    return batches


def export(model, variables: Mapping, fmt: str, out: str | pathlib.Path, *, batch: int | str | None = "dynamic",
           image_size: int | None = None, calibration: str | pathlib.Path | None = None,
           weights: str | None = None) -> pathlib.Path:
    """Write ``model`` with ``variables`` as ``out`` in format ``fmt`` (see ``FORMATS``) and ``out``.json
    beside it (the sidecar: input layout, normalization, resolution, crop, class names, converter, versions).

    ``batch``: 'dynamic' (default) or a fixed size. ``image_size``: the input resolution (default the
    model's; TF "SAME" pads are resolved for it). ``calibration`` (int8 only): a folder of images, 'photos'
    (default: the bundled scikit-image / scikit-learn photos) or 'digits'. ``weights``: recorded in the sidecar.
    Returns ``out``.
    """
    spec_format = check_format(fmt)
    batch_size = parse_batch(batch)
    spec = getattr(model, "spec", None)
    size = image_size if image_size is not None else (spec.resolution if spec is not None else DEFAULT_SIZE)
    _check_model(model, spec_format, size)
    if calibration is not None and not spec_format.int8:
        raise ExportError(f"--calibration is for the int8 formats (onnx-int8, tflite-int8), not {fmt}")
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data, converter = spec_format.write(model, variables, size, batch_size,
                                        _calibration_for(model, size, calibration) if spec_format.int8 else None)
    if spec_format.int8:
        converter["calibration"] = str(calibration or "photos")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    num_outputs = getattr(model, "num_classes", 0) or (spec.head_channels if spec is not None else 0)
    write_sidecar(out, sidecar(model=model, fmt=fmt, image_size=size, batch=batch_size, num_outputs=num_outputs,
                               converter=converter, packages=spec_format.packages, weights=weights))
    return out


def workdir_weights(workdir: str | pathlib.Path) -> pathlib.Path:
    """RUN/weights.msgpack, or a FileNotFoundError naming the command that writes it."""
    path = pathlib.Path(workdir) / "weights.msgpack"
    if not pathlib.Path(workdir).is_dir():
        raise FileNotFoundError(f"No run directory at {workdir}")
    if not path.is_file():
        raise FileNotFoundError(f"No {path}: write it with `python -m train.export --workdir {workdir}` "
                                f"(or restore and export in one go: `python -m train.export --workdir {workdir} "
                                "--format FORMAT --out FILE`)")
    return path


def export_pretrained(name: str, fmt: str, out: str | pathlib.Path, *, weights: str | pathlib.Path | None = None,
                      workdir: str | pathlib.Path | None = None, **options: Any) -> pathlib.Path:
    """``export`` of ``load_pretrained(name, weights)``; ``workdir``: a training run's RUN/weights.msgpack.
    Options are checked before the weights load."""
    spec_format = check_format(fmt)
    parse_batch(options.get("batch", "dynamic"))
    if options.get("calibration") is not None and not spec_format.int8:
        raise ExportError(f"--calibration is for the int8 formats (onnx-int8, tflite-int8), not {fmt}")
    if weights is not None and workdir is not None:
        raise ExportError("pass either --weights or --workdir, not both")
    if spec_format.needs_graph and name in FAMILIES:
        raise ExportError(f"--format {fmt} {GRAPH_FORMATS_NOTE}, not {name}: export it with --format stablehlo")
    if workdir is not None:
        weights = workdir_weights(workdir)
    _check_requirements(spec_format)
    model, variables = load_pretrained(name, weights)
    return export(model, variables, fmt, out, weights=str(weights) if weights is not None else "default", **options)


def _check_requirements(fmt: Format) -> None:
    """Fail on a missing optional package before spending time loading weights."""
    if fmt.name.startswith("onnx"):
        require("onnx", f"{fmt.name} export", extra("export"))
        if fmt.int8:
            require("onnxruntime", f"{fmt.name} export", extra("export"))
    elif fmt.name.startswith("tflite"):
        require("tensorflow", f"{fmt.name} export", "tensorflow-cpu", hint=f" (and {extra('export')} to run it)")
