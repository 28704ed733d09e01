"""The package imports light, its README example runs, and it installs from a wheel into a clean venv where
every module imports without extras and a function needing an extra names it."""
import json
import os
import pathlib
import re
import subprocess
import sys
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code, python=sys.executable, cwd=None, timeout=900):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_import_does_not_pull_tensorflow_or_torch():
    out = run_python(
        "import sys, efficientnet_jax, efficientnet_jax.weights\n"
        "print(sorted(m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules))"
    )
    assert out.strip() == "[]"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md must hold the usage example between <!-- example --> and a python block"
    return match.group(1)


@pytest.mark.slow  # a fresh process compiling B0's init at 224 px: up to a minute
def test_readme_example_runs():
    out = run_python(readme_example(), cwd=ROOT)
    assert "(2, 1000)" in out


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory):
    """A fresh venv holding only ``pip install <our wheel>`` (no extras), built once for this module's tests.
    It is created from the interpreter running the tests (same Python version); pip reads its packages
    from the configured index or its cache."""
    tmp_path = tmp_path_factory.mktemp("clean-install")
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("efficientnet_jax-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    return env_dir


@pytest.mark.slow
def test_wheel_installs_into_clean_venv(clean_venv, tmp_path):
    python = clean_venv / "bin" / "python"
    out = run_python(
        "import efficientnet_jax as ej, efficientnet_jax.weights, jax, jax.numpy as jnp\n"
        "m = ej.create_model('efficientnet_lite0')\n"
        "v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))\n"
        "print(ej.count_params(v['params']), ej.__file__)",
        python=str(python), cwd=tmp_path,
    )
    count, location = out.split()
    assert count == "4652008" and str(clean_venv) in location


# The optional dependencies that the extras install and a plain install must not bring.
EXTRAS_ONLY = {"torch": "torch", "keras": "keras", "matplotlib": "lab"}


@pytest.mark.slow
def test_every_module_imports_without_extras(clean_venv, tmp_path):
    """After a plain ``pip install efficientnet-jax``, every module of the package imports."""
    out = run_python(
        "import importlib, importlib.util, json, pkgutil, traceback\n"
        "import efficientnet_jax\n"
        f"absent = {{m: importlib.util.find_spec(m) is None for m in {sorted(EXTRAS_ONLY)!r}}}\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(efficientnet_jax.__path__, 'efficientnet_jax.'))\n"
        "failed = {}\n"
        "for name in names:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed[name] = traceback.format_exc(limit=-3)\n"
        "print(json.dumps({'absent': absent, 'names': names, 'failed': failed, 'file': efficientnet_jax.__file__}))",
        python=str(clean_venv / "bin" / "python"), cwd=tmp_path,
    )
    report = json.loads(out.splitlines()[-1])
    assert str(clean_venv) in report["file"], report["file"]
    assert all(report["absent"].values()), f"a plain install brought an extra's package: {report['absent']}"
    assert {"efficientnet_jax.pruning", "efficientnet_jax.similarity", "efficientnet_jax.weights.keras",
            "efficientnet_jax.predict"} <= set(report["names"]), report["names"]
    assert not report["failed"], "modules that do not import without extras:\n" + "\n".join(
        f"{name}:\n{tb}" for name, tb in report["failed"].items())


# A function that needs an extra, the call that reaches it, and what its error must name. flax itself
# depends on optax, so a plain install has it: that case hides optax (a ``None`` entry in sys.modules makes
# its import fail) to check the message a user without it would see.
NEEDS_AN_EXTRA = {
    "torch-file": ("from efficientnet_jax.weights import load_pretrained\n"
                   "load_pretrained('efficientnet_lite0', TINY_PTH)", "torch", "torch"),
    "keras-source": ("from efficientnet_jax.weights import load_pretrained\n"
                     "load_pretrained('efficientnet_b0', 'keras')", "keras", "keras"),
    "keras-variables": ("from efficientnet_jax.weights.sources import load_pretrained_variables\n"
                        "load_pretrained_variables('efficientnet_b0', 'keras')", "keras", "keras"),
    "pruning-finetune": ("import sys\nfrom efficientnet_jax import pruning\nsys.modules['optax'] = None\n"
                         "pruning.masked_updates({'w': True})", "optax", "train"),
    "similarity-plot": ("import numpy as np\nfrom efficientnet_jax.similarity import plot_similarity\n"
                        "plot_similarity(np.eye(2), ['a', 'b'], ['a', 'b'], OUT_PNG)", "matplotlib", "lab"),
}


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory):
    """A real (tiny) PyTorch state-dict file, written with the torch of the test environment."""
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("pth") / "tiny.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(NEEDS_AN_EXTRA))
def test_function_needing_an_extra_names_it(case, clean_venv, tiny_pth, tmp_path):
    call, module, extra = NEEDS_AN_EXTRA[case]
    out = run_python(
        f"TINY_PTH, OUT_PNG = {str(tiny_pth)!r}, {str(tmp_path / 'plot.png')!r}\n"
        "try:\n" + "".join(f"    {line}\n" for line in call.splitlines()) +
        "except ImportError as e:\n    print('ImportError:', e)\n"
        "except Exception as e:\n    print(type(e).__name__ + ':', e)\n"
        "else:\n    print('no error')\n",
        python=str(clean_venv / "bin" / "python"), cwd=tmp_path,
    )
    message = out.strip().splitlines()[-1]
    assert message.startswith("ImportError:"), message
    assert module in message and f"efficientnet-jax[{extra}]" in message, message
