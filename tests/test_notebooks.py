"""The colab/ notebooks run top to bottom (small settings, CPU, offline), and their install cells work.

Each notebook runs in a fresh temporary directory in a kernel of this interpreter, with
``EFFICIENTNET_NOTEBOOK_SMALL=1`` and the inline matplotlib backend (headless, and its figures
become ``image/png`` outputs that the tests count).
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import types
import venv

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLAB = ROOT / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))
KERNEL = "efficientnet-jax-tests"


def test_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb", "02_train_and_finetune.ipynb", "03_compound_scaling.ipynb"]


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec that starts this interpreter (found first on JUPYTER_PATH, whatever else is
    installed), and the environment the kernel inherits."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "efficientnet-jax tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("EFFICIENTNET_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("EFFICIENTNET_NOTEBOOK_OFFLINE", "1")  # make test is offline: no connection attempt
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("EFFICIENTNET_JAX_INSTALL", raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    return workdir


def execute(path: pathlib.Path, workdir: pathlib.Path, timeout: int = 600):
    nb = nbformat.read(path, as_version=4)
    # A generous kernel start-up time: under a loaded `make test` (xdist workers, XLA compiles) the
    # kernel can take well over nbclient's default 60 s to answer.
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, startup_timeout=300,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError with the cell and its traceback on any error
    return nb


def outputs(nb) -> tuple[str, int]:
    """All text outputs of a run, and how many images it displayed."""
    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out["text"])
            elif out.get("output_type") in ("execute_result", "display_data"):
                texts.append(out["data"].get("text/plain", ""))
                images += "image/png" in out["data"]
    return "".join(texts), images


@pytest.mark.slow
def test_quickstart_runs_and_classifies_real_photos(kernel_env):
    nb = execute(COLAB / "01_quickstart.ipynb", kernel_env)
    text, images = outputs(nb)
    assert "Not in Colab" in text  # the install cell did nothing here
    assert "SMALL = True" in text
    assert "5,288,548 parameters" in text and "0.386 G multiply-adds" in text
    # Real predictions of the converted Lite0 ImageNet weights on scikit-image's photos.
    assert re.search(r"coffee\s+espresso 9\d%", text), text
    assert re.search(r"chelsea\s+tiger cat", text), text
    assert "Offline: skipped" in text
    assert images >= 1


@pytest.mark.slow
def test_train_and_finetune_runs(kernel_env):
    nb = execute(COLAB / "02_train_and_finetune.ipynb", kernel_env)
    text, images = outputs(nb)
    assert "mesh: {'data': 1, 'fsdp': 1} on cpu" in text
    for workdir in ("runs/digits", "runs/textures"):
        records = [json.loads(line) for line in (kernel_env / workdir / "metrics.jsonl").read_text().splitlines()]
        assert {r["split"] for r in records} == {"train", "eval"}
    digits = [json.loads(line) for line in (kernel_env / "runs/digits/metrics.jsonl").read_text().splitlines()]
    assert digits[-1]["split"] == "eval" and digits[-1]["accuracy"] > 0.5, digits[-1]
    assert (kernel_env / "runs/textures/weights.msgpack").is_file()
    assert sorted(p.name for p in (kernel_env / "textures/train").iterdir()) == ["brick", "grass", "gravel"]
    assert images >= 4  # two pairs of curves, the samples, the predictions


@pytest.mark.slow
def test_compound_scaling_runs(kernel_env):
    nb = execute(COLAB / "03_compound_scaling.ipynb", kernel_env)
    text, images = outputs(nb)
    assert "alpha*beta^2*gamma^2 = 1.920" in text
    assert "efficientnet_b7:   66,347,960 params" in text
    assert "diagonal:" in text
    assert (kernel_env / "cka.png").is_file()
    assert images >= 2  # the scaling plots and the CKA heatmap


# ---------------------------------------------------------------- badges and install cells

def cells(path, kind):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == kind]


def repo_of(path) -> str:
    match = re.search(r'^REPO = "([\w.-]+/[\w.-]+)"$', cells(path, "code")[0].source, re.M)
    assert match, f"{path.name}: the first code cell must define REPO = \"owner/name\""
    return match.group(1)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_links_to_this_notebook(path):
    (first,) = cells(path, "markdown")[:1]
    match = re.search(r"\(https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/([\w./-]+)\)",
                      first.source)
    assert match, f"{path.name}: no Open-in-Colab badge in the first markdown cell"
    repo, file = match.groups()
    assert (ROOT / file).resolve() == path.resolve()
    assert repo == repo_of(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_stripped(path):
    for cell in cells(path, "code"):
        assert cell.outputs == [] and cell.execution_count is None


def test_notebooks_match_their_generator():
    sys.path.insert(0, str(COLAB))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(COLAB))
    for path in NOTEBOOKS:
        assert path.read_text() == make_notebooks.render(path.name), \
            f"{path.name} differs from colab/make_notebooks.py: edit the generator and rerun it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_installs_only_in_colab(path, monkeypatch):
    source = cells(path, "code")[0].source
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    monkeypatch.delenv("EFFICIENTNET_JAX_INSTALL", raising=False)
    monkeypatch.delenv("EFFICIENTNET_JAX_URL", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    saved_path = list(sys.path)
    exec(source, {})
    assert calls == []  # locally: nothing
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    try:
        exec(source, {})
    finally:
        sys.path[:] = saved_path
    url = f"https://github.com/{repo_of(path)}"
    pip = [c for c in calls if c[1:4] == ["-m", "pip", "install"]]
    assert len(pip) == 1 and pip[0][0] == sys.executable
    assert any(url in arg for c in calls for arg in c)  # pip from git+URL, or git clone URL


def _colab_like_venv(tmp_path, name):
    """A fresh venv that sees this venv's packages (Colab preinstalls jax, torch, TF, pip...) except
    efficientnet-jax itself, which the install cell must install."""
    env_dir = tmp_path / name
    venv.create(env_dir, with_pip=False)  # pip and setuptools come from ours, as everything else
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = pathlib.Path(sysconfig.get_paths()["purelib"])
    shared = tmp_path / f"{name}-shared"
    shared.mkdir()
    for entry in ours.iterdir():
        lowered = entry.name.lower()
        if lowered.startswith(("efficientnet_jax", "__editable__", "_efficientnet_jax")) or lowered.endswith(".pth"):
            continue
        (shared / entry.name).symlink_to(entry)
    (pathlib.Path(site) / "colab_preinstalled.pth").write_text(str(shared) + "\n")
    return python


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_train_and_finetune.ipynb"])
def test_install_cell_installs_into_a_fresh_env(name, tmp_path):
    """The install cell run for real in a fresh venv, from a clone of this repository's HEAD
    (the same git path Colab takes; only the URL differs), with Colab's preinstalled dependencies."""
    python = _colab_like_venv(tmp_path, "venv")
    missing = subprocess.run([str(python), "-c", "import efficientnet_jax"], capture_output=True, cwd=tmp_path)
    assert missing.returncode != 0  # not installed yet
    env = {**os.environ, "EFFICIENTNET_JAX_INSTALL": "1", "EFFICIENTNET_JAX_URL": f"file://{ROOT}",
           "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "JAX_PLATFORMS": "cpu", "PYTHONPATH": ""}
    check = ("import efficientnet_jax as ej, pathlib, sys\n"
             "print(ej.__file__)\n"
             "print(len(ej.list_models()))\n")
    if name.startswith("02"):
        check += "import train.train, train.configs.finetune\nprint(train.train.__file__)\n"
    source = cells(COLAB / name, "code")[0].source
    result = subprocess.run([str(python), "-c", source + "\n" + check], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.split()
    assert str(ROOT) not in lines[0] and str(tmp_path) in lines[0], lines  # the installed copy
    assert int(lines[1]) >= 15
    if name.startswith("02"):
        assert str(tmp_path) in lines[2], lines  # train/ from the clone the cell made
