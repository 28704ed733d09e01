"""Every command-line tool turns every bad input into one ``error:`` line and exit status 2, no traceback:
one table of bad weights files (and bad images, datasets, a full disk) fed to ``predict``,
``train.evaluate`` and ``train.main --config.pretrained``, each a real process (run a few at a time)."""
import concurrent.futures
import os
import pathlib
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import efficientnet_jax as ej
from efficientnet_jax.weights import save_pretrained, save_variables

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(width=0.25, depth=0.34)  # the model of digits.py:runlocal, so a good file fits train.main's run


class _Evil:
    def __reduce__(self):  # unpickling would call print: a stand-in for any code
        return (print, ("pwned",))


def _tiny(name="efficientnet_b0"):
    model = ej.create_model(name, num_classes=10, **TINY)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    return model, jax.tree.map(lambda s: np.full(s.shape, 0.01, s.dtype), shapes)


def _truncate(path, suffix):
    data = path.read_bytes()
    bad = path.with_name(f"truncated{suffix}")
    bad.write_bytes(data[:len(data) // 2])
    return bad


def bad_files(root: pathlib.Path) -> dict[str, tuple[pathlib.Path, str]]:
    """name -> (file, a phrase its error must contain)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("keras")
    files = {}
    (root / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    files["corrupt h5"] = root / "corrupt.h5", "cannot read weights file"
    (root / "empty.keras").write_bytes(b"")
    files["empty keras"] = root / "empty.keras", "cannot read weights file"
    (root / "malicious.pth").write_bytes(pickle.dumps({"_conv_stem.weight": _Evil()}))
    files["malicious pth"] = root / "malicious.pth", "refused"
    torch.save({"_conv_stem.weight": torch.zeros(64, 64)}, root / "whole.pth")
    files["truncated pth"] = _truncate(root / "whole.pth", ".pth"), "cannot read weights file"
    model, variables = _tiny()
    save_variables(root / "list_metadata.msgpack", variables, metadata=[1, 2])
    files["metadata not an object"] = root / "list_metadata.msgpack", "not an object"
    for suffix in (".safetensors", ".msgpack"):
        save_pretrained(root / f"whole{suffix}", model, variables)
        files[f"truncated {suffix[1:]}"] = _truncate(root / f"whole{suffix}", suffix), "cannot read weights file"
    save_pretrained(root / "nan.msgpack", model, jax.tree.map(lambda a: np.full_like(a, np.nan), variables))
    files["all NaN"] = root / "nan.msgpack", "NaN or infinite"
    return files


def run(command: list[str], cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=env)


@pytest.mark.slow  # ~30 processes, each importing jax (4 at a time)
def test_every_cli_turns_every_bad_input_into_one_error_line(tmp_path, data_dir):
    from train import input_pipeline
    from train.configs import digits

    config = digits.get_config("runlocal")
    config.data_dir = data_dir
    input_pipeline.dataset_info(config)  # prepared once here, not by 10 processes at once
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(image)
    good = tmp_path / "good.msgpack"
    save_pretrained(good, *_tiny())
    b1 = tmp_path / "b1.msgpack"
    save_pretrained(b1, *_tiny("efficientnet_b1"))

    def train_main(weights, workdir, *extra):
        return ["train.main", "--config=train/configs/digits.py:runlocal", f"--workdir={workdir}",
                f"--config.data_dir={data_dir}", "--config.model=efficientnet_b0",
                f"--config.pretrained={weights}", *extra]

    cases = {}
    for name, (path, phrase) in bad_files(tmp_path).items():
        cases[f"predict, {name}"] = ["efficientnet_jax.predict", "--model", "efficientnet_b0", "--weights",
                                     str(path), str(image)], phrase
        cases[f"evaluate, {name}"] = ["train.evaluate", "--model", "efficientnet_b0", "--weights", str(path),
                                      "--dataset", f"folder:{tmp_path}/nowhere"], phrase
        cases[f"train.main, {name}"] = train_main(path, tmp_path / name.replace(" ", "_")), phrase
    (tmp_path / "notes.png").write_text("not an image")
    cases["predict, unreadable image"] = ["efficientnet_jax.predict", "--model", "efficientnet_b0", "--weights",
                                          str(good), str(tmp_path / "notes.png")], "notes.png"
    cases["evaluate, missing dataset"] = ["train.evaluate", "--model", "efficientnet_b0", "--weights", str(good),
                                          "--dataset", f"folder:{tmp_path}/nowhere"], "does not exist"
    cases["train.main, missing dataset"] = ["train.main", "--config=train/configs/digits.py:runlocal",
                                            f"--workdir={tmp_path / 'w_missing'}", "--config.dataset=cifar10",
                                            f"--config.data_dir={tmp_path}/empty_tfds"], "not prepared"
    full = tmp_path / "w_full_disk"
    full.mkdir()
    (full / "config.json").symlink_to("/dev/full")  # every write: ENOSPC
    cases["train.main, full disk"] = train_main(good, full), "disk full"
    cases["train.main, B1 weights for a B0 run"] = train_main(b1, tmp_path / "w_b1"), "efficientnet_b1 weights, not efficientnet_b0"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = dict(zip(cases, pool.map(lambda c: run(c[0], REPO), cases.values())))
    failures = []
    for name, out in results.items():
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        ok = (out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr
              and cases[name][1] in errors[0] and "pwned" not in out.stdout)
        if not ok:
            failures.append(f"{name}: exit {out.returncode}\n{out.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_a_full_disk_while_writing_metrics_is_one_clear_error(tmp_path):
    from train.metrics import MetricWriter, OutputError, write_text

    writer = MetricWriter(tmp_path)
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(OutputError, match="metrics.jsonl: disk full"):
        writer.write({"step": 1, "epoch": 0.1, "split": "train", "loss": 1.0})
    writer.close()
    (tmp_path / "config.json").symlink_to("/dev/full")
    with pytest.raises(OutputError, match="config.json: disk full"):
        write_text(tmp_path / "config.json", "{}")
