import os

# Keras 3 runs on JAX in our tests (no TensorFlow needed for the reference models),
# and TensorFlow, where imported by tfds, stays quiet and off any accelerator.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
