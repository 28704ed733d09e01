import os

# Keras 3 runs on JAX in our tests (no TensorFlow needed for the reference models),
# and TensorFlow, where imported by tfds, stays quiet and off any accelerator.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One tfds data directory per session; sklearn_digits is prepared into it on first use."""
    return str(tmp_path_factory.mktemp("tfds"))
