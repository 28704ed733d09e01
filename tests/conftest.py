import os
import shutil
import tempfile

# Keras 3 runs on JAX in our tests (no TensorFlow needed for the reference models),
# and TensorFlow, where imported by tfds, stays quiet and off any accelerator.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import pytest  # noqa: E402

_OWN_CACHE = "EFFICIENTNET_JAX_TEST_JIT_CACHE"


def pytest_configure(config):
    """One XLA compilation cache for the whole run: xdist workers and the training subprocesses that tests
    launch inherit it through the environment, so a program compiled once (the runlocal train step that
    a dozen tests run, a resumed run's step) is loaded, not recompiled. Cached executables are keyed by
    the program, the compile options and the jax version, so results are unchanged; the run starts with
    an empty cache, so nothing carries over between runs. Set JAX_COMPILATION_CACHE_DIR to keep one."""
    if hasattr(config, "workerinput") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[_OWN_CACHE] = tempfile.mkdtemp(prefix="ej-test-jit-")


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput") and os.environ.get(_OWN_CACHE):
        shutil.rmtree(os.environ.pop(_OWN_CACHE), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Slow tests first, so that two xdist workers do not end the run waiting on one long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One tfds data directory per session; sklearn_digits is prepared into it on first use."""
    return str(tmp_path_factory.mktemp("tfds"))
