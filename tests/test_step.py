"""Mixup / CutMix inside the train step: pixels and targets are mixed in the same proportion."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train.step import mix_batch


def batch(n=6, size=16, classes=4):
    images = jnp.stack([jnp.full((size, size, 3), float(i)) for i in range(n)])
    return images, jax.nn.one_hot(jnp.arange(n) % classes, classes)


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_targets_follow_pixel_proportions(mixup, cutmix):
    images, targets = batch()
    for seed in range(5):
        mixed, soft = mix_batch(images, targets, jax.random.key(seed), mixup, cutmix)
        assert mixed.shape == images.shape and mixed.dtype == images.dtype
        np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
        # Image i is mixed with image n-1-i (constant images i and n-1-i): the mean pixel value
        # tells the proportion, which must equal the target weight of image i's class.
        # Images 0 and 5 have classes 0 and 1.
        own = (float(mixed[0].mean()) - 5.0) / (0.0 - 5.0)
        assert 0.0 <= own <= 1.0
        assert float(soft[0, 0]) == pytest.approx(own, abs=1e-5)
        assert float(soft[0, 1]) == pytest.approx(1 - own, abs=1e-5)


def test_disabled_is_identity():
    images, targets = batch()
    out_images, out_targets = mix_batch(images, targets, jax.random.key(0), 0.0, 0.0)
    assert out_images is images and out_targets is targets
