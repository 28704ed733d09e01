"""FixRes's BN re-estimation: statistics become the average of per-batch statistics at the new resolution,
checked against a direct computation of the first BN layer's input; parameters stay as they were."""
import jax
import numpy as np

from efficientnet_jax.families import ResNet18
from test_families import random_variables
from train.fixres import reestimate_batch_stats


def test_batch_stats_are_averaged_over_batches_at_the_test_resolution():
    model = ResNet18(num_classes=10, width=0.25, depth=0.5, dropout=0.5)
    variables = random_variables(model, size=40)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(3, 40, 40, 3)).astype(np.float32) for _ in range(2)]
    updated = reestimate_batch_stats(model, variables, iter(batches))

    kernel = np.asarray(variables["params"]["stem_conv"]["kernel"])  # the stem conv feeds stem_bn directly
    means, variances = [], []
    for x in batches:
        y = np.asarray(jax.lax.conv_general_dilated(x, kernel, (2, 2), [(3, 3), (3, 3)],
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC")))
        means.append(y.mean(axis=(0, 1, 2)))
        variances.append(y.var(axis=(0, 1, 2)))
    np.testing.assert_allclose(updated["batch_stats"]["stem_bn"]["mean"], np.mean(means, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(updated["batch_stats"]["stem_bn"]["var"], np.mean(variances, 0), rtol=1e-4, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, updated["params"], variables["params"])
    deep_before = variables["batch_stats"]["stage4_block1"]["bn2"]["var"]
    assert not np.allclose(updated["batch_stats"]["stage4_block1"]["bn2"]["var"], deep_before)  # all layers
    again = reestimate_batch_stats(model, variables, iter(batches))  # no randomness (dropout off)
    jax.tree.map(np.testing.assert_array_equal, again, updated)
