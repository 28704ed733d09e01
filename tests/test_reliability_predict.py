"""`predict` memory is bounded by the batch and the output size, not by the input: a 1 x 3000 PNG, a PNG
whose header claims 20000 x 20000, and 300 files against 3 (each run a real process, its peak RSS
measured by the process itself)."""
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import efficientnet_jax as ej
from efficientnet_jax.preprocess import center_crop_window, resize_and_center_crop
from efficientnet_jax.weights import save_pretrained
from test_predict import png_claiming

TINY = dict(width=0.25, depth=0.34, resolution=64)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Random weights of a tiny B0 (10 classes, 64 px), saved as users save converted weights: no download."""
    model = ej.create_model("efficientnet_b0", num_classes=10, **TINY)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.1).astype(s.dtype), shapes)
    variables["batch_stats"] = jax.tree.map(np.abs, variables["batch_stats"])
    path = tmp_path_factory.mktemp("weights") / "tiny.msgpack"
    save_pretrained(path, model, variables)
    return path


# The peak is read from /proc/self/status (VmHWM, the high-water mark of the process's own memory map):
# ru_maxrss would include the RSS of the pytest process that forked it, which Linux carries over exec.
_MEASURED = """
import runpy, sys
out = sys.argv.pop(1)
try:
    runpy.run_module("efficientnet_jax.predict", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status:
        open(out, "w").write(next(line for line in status if line.startswith("VmHWM")).split()[1])
"""


def run_predict(weights, *args, tmp_path):
    """(exit status, stdout, stderr, peak RSS in bytes) of one `python -m efficientnet_jax.predict` process."""
    peak = tmp_path / "peak_kib"
    out = subprocess.run([sys.executable, "-c", _MEASURED, str(peak), "--model", "efficientnet_b0",
                          "--weights", str(weights), *map(str, args)], capture_output=True, text=True, timeout=600)
    return out.returncode, out.stdout, out.stderr, int(peak.read_text()) * 1024


def test_the_crop_is_taken_before_resizing_and_matches_the_training_window():
    assert center_crop_window(1, 3000, 0.875) == (0, 1500, 1)
    assert center_crop_window(480, 640, 0.875) == (30, 110, 420)
    wide = np.zeros((1, 3000, 3), np.uint8)
    wide[:, 1500] = 200
    np.testing.assert_allclose(resize_and_center_crop(wide, 64, 0.875), 200.0, atol=1e-3)
    tf = pytest.importorskip("tensorflow")
    from train.augment import center_crop  # the training program's eval crop: the same window

    for h, w in [(1, 3000), (37, 91), (480, 640), (640, 480), (5, 5)]:
        image = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), np.uint8)
        top, left, size = center_crop_window(h, w, 0.875)
        ours = np.asarray(resize_and_center_crop(image[top:top + size, left:left + size], 16, 1.0))
        theirs = center_crop(tf.constant(image), 16, 0.875).numpy()
        assert theirs.shape == (16, 16, 3)
        if size == 1:
            np.testing.assert_array_equal(theirs, np.broadcast_to(image[top, left], theirs.shape))
        assert np.abs(ours.mean() - theirs.mean()) < 8, (h, w)


@pytest.mark.slow  # three processes, each importing jax and compiling the tiny model
def test_hostile_images_cost_little_memory(tiny_weights, tmp_path):
    Image.fromarray(np.full((1, 3000, 3), 90, np.uint8)).save(tmp_path / "line.png")
    png_claiming(tmp_path / "bomb.png", 20_000, 20_000)
    for name, want in (("line.png", 0), ("bomb.png", 2)):
        status, out, err, peak = run_predict(tiny_weights, tmp_path / name, tmp_path=tmp_path)
        assert status == want and "Traceback" not in err and peak < 2 * 2**30, (name, status, err, peak)
        assert err.count("error:") == (status == 2), err
        if status == 0:
            assert out.splitlines()[0].endswith(name) and len(out.splitlines()) == 6
        print(f"{name}: exit {status}, peak RSS {peak / 2**20:.0f} MiB")


@pytest.mark.slow  # two processes
def test_peak_memory_does_not_grow_with_the_number_of_files(tiny_weights, tmp_path):
    rng = np.random.default_rng(0)
    peaks = {}
    for count in (3, 300):
        folder = tmp_path / f"images{count}"
        folder.mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (120, 160, 3), np.uint8)).save(folder / f"{i:03d}.png")
        (folder / "notes.txt").write_text("not an image: a directory stands for its image files only")
        status, out, err, peaks[count] = run_predict(tiny_weights, folder, "--json", "--top", "1",
                                                     tmp_path=tmp_path)
        assert status == 0 and len(out.splitlines()) == count, err
    print(f"peak RSS: 3 files {peaks[3] / 2**20:.0f} MiB, 300 files {peaks[300] / 2**20:.0f} MiB")
    assert abs(peaks[300] - peaks[3]) < 0.2 * peaks[3], peaks


def test_pixel_limit_is_configurable(tiny_weights, tmp_path, capsys):
    from efficientnet_jax.predict import main

    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "small.png")
    assert main(["--model", "efficientnet_b0", "--weights", str(tiny_weights), "--max_pixels", "9999",
                 str(tmp_path / "small.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "100x100" in err and "9,999" in err, err


@pytest.mark.slow  # compiles the tiny model
def test_unreadable_images_are_reported_and_the_rest_classified(tiny_weights, tmp_path, capsys):
    from efficientnet_jax.predict import main

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[:len(data) // 2])
    assert main(["--model", "efficientnet_b0", "--weights", str(tiny_weights), "--top", "2",
                 str(tmp_path / "truncated.png"), str(tmp_path / "good.png")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("error:") == 1 and "truncated.png" in captured.err
    assert captured.out.splitlines()[0].endswith("good.png") and len(captured.out.splitlines()) == 3
