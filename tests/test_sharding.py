"""A jitted forward pass with the batch sharded over 8 (fake CPU) devices, on the training program's mesh,
gives the 1-device logits: with the variables replicated (fsdp=1) and split over an fsdp=4 axis (every
array that 4 divides, small ones included, so the depthwise, SE and BN variables are split too)."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    import efficientnet_jax as ej
    from train import sharding

    assert jax.device_count() == 8, jax.devices()
    model = ej.create_model("efficientnet_b0", num_classes=10, width=0.25, depth=0.34)
    x = jax.random.normal(jax.random.key(1), (8, 64, 64, 3))
    variables = jax.jit(model.init, static_argnames="train")(jax.random.key(0), x[:1], train=False)
    forward = lambda v, x: model.apply(v, x, train=False)

    one = jax.jit(forward)(jax.device_put(variables, jax.devices()[0]), jax.device_put(x, jax.devices()[0]))
    mesh = sharding.make_mesh()
    replicated, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    sharded = jax.jit(forward, in_shardings=(replicated, batch), out_shardings=batch)(
        jax.device_put(variables, replicated), jax.device_put(x, batch))
    assert len(sharded.sharding.device_set) == 8

    mesh = sharding.make_mesh(fsdp=4)
    split = sharding.state_shardings(variables, mesh, min_size=0)
    assert sum(s.spec != jax.sharding.PartitionSpec() for s in jax.tree.leaves(split)) > 100
    batch = sharding.batch_sharded(mesh)
    fsdp = jax.jit(forward, in_shardings=(split, batch), out_shardings=batch)(
        jax.device_put(variables, split), jax.device_put(x, batch))
    print(json.dumps({"one": np.asarray(one).tolist(), "sharded": np.asarray(sharded).tolist(),
                      "fsdp": np.asarray(fsdp).tolist()}))
    """
)


@pytest.mark.slow
def test_sharded_and_fsdp_forward_match_single_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    one = np.asarray(out["one"])
    assert one.shape == (8, 10)
    for layout in ("sharded", "fsdp"):
        np.testing.assert_allclose(np.asarray(out[layout]), one, rtol=1e-5, atol=1e-6 * np.abs(one).max())
