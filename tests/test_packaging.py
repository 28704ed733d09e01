"""The package imports light, its README example runs, and it installs from a wheel into a clean venv."""
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


def test_readme_example_runs():
    out = run_python(readme_example(), cwd=ROOT)
    assert "(2, 1000)" in out


@pytest.mark.slow
def test_wheel_installs_into_clean_venv(tmp_path):
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
    out = run_python(
        "import efficientnet_jax as ej, efficientnet_jax.weights, jax, jax.numpy as jnp\n"
        "m = ej.create_model('efficientnet_lite0')\n"
        "v = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))\n"
        "print(ej.count_params(v['params']), ej.__file__)",
        python=str(python), cwd=tmp_path,
    )
    count, location = out.split()
    assert count == "4652008" and str(env_dir) in location
