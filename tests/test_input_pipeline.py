"""The input side of training: the embedded digits dataset, augmentations, sharding, resumption."""
from __future__ import annotations

import collections
import hashlib
import math

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image, ImageEnhance, ImageOps

from train import augment, input_pipeline
from train.configs import base
from train.datasets import digits

MEAN = np.asarray(input_pipeline.IMAGENET_MEAN, np.float32)
STD = np.asarray(input_pipeline.IMAGENET_STD, np.float32)


def make_config(**overrides) -> ml_collections.ConfigDict:
    config = base.get_config()
    config.update(dict(dataset="sklearn_digits", image_size=32, augment="none"))
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """Prepared once through the pipeline's own prepare_dataset path (offline, a few seconds)."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    input_pipeline.dataset_info(make_config(data_dir=data_dir))
    return data_dir


@pytest.fixture(scope="module")
def sharded_digits_dir(tmp_path_factory):
    """The same data in 4 files per split, for the file-order permutation and multi-file shards."""
    data_dir = str(tmp_path_factory.mktemp("tfds_sharded"))
    tfds.builder("sklearn_digits", data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=4))
    return data_dir


def unnormalize(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round(images * STD + MEAN), 0, 255).astype(np.uint8)


def fingerprints(images: np.ndarray, labels: np.ndarray) -> collections.Counter:
    """Multiset of (image bytes, label): equality means 'the same examples, each as often'."""
    return collections.Counter((hashlib.sha1(im.tobytes()).hexdigest(), int(y)) for im, y in zip(images, labels))


def raw_split(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    ds = tfds.builder("sklearn_digits", data_dir=data_dir).as_dataset(split=split, batch_size=-1)
    return ds["image"].numpy(), ds["label"].numpy()


# ---- The embedded dataset ------------------------------------------------------------------------

def test_digits_builder_prepared_offline(digits_dir):
    builder = tfds.builder("sklearn_digits", data_dir=digits_dir)
    assert builder.is_prepared()
    assert builder.info.version == "1.0.0"
    assert builder.info.splits["train"].num_examples == 1437
    assert builder.info.splits["test"].num_examples == 360
    assert builder.info.features["label"].num_classes == 10
    images, labels = raw_split(digits_dir, "test")
    assert images.shape == (360, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images[..., 0], images[..., 2])  # grey replicated to RGB
    assert images.max() == 255 and images.min() == 0  # 0..16 scaled to 0..255
    counts = np.bincount(labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    info = input_pipeline.dataset_info(make_config(data_dir=digits_dir))
    assert info == input_pipeline.DatasetInfo("sklearn_digits", 10, 1437, 360, "train", "test",
                                              label_names=tuple(str(i) for i in range(10)))


def test_digits_upscale_matches_tf_bilinear():
    small = np.random.default_rng(0).integers(0, 17, (4, 8, 8))
    ref = tf.image.resize(small[..., None] * (255 / 16), (32, 32), "bilinear").numpy()[..., 0]
    assert np.array_equal(digits.upscale(small)[..., 1], np.clip(np.round(ref), 0, 255).astype(np.uint8))


# ---- Augmentations -----------------------------------------------------------------------------

def _image(height=40, width=56, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (height, width, 3)), tf.uint8)


SEED = tf.constant([3, 4], tf.int64)


@pytest.mark.parametrize("name", sorted(augment.OPS))
def test_ops_keep_shape_and_dtype(name):
    image = _image()
    for level in (0, 5, 10, 28):  # 28: magnitudes above 10 must not break any op
        out = augment.OPS[name](image, float(level), SEED)
        assert out.shape == image.shape and out.dtype == tf.uint8


def test_ops_match_pil():
    """Our pixel ops against PIL's, which the reference's ops reimplement (±1 for rounding)."""
    x = np.random.default_rng(1).integers(40, 220, (30, 30, 3)).astype(np.uint8)
    pil, t = Image.fromarray(x), tf.constant(x)
    pairs = [
        (augment.equalize(t), ImageOps.equalize(pil), 0),
        (augment.autocontrast(t), ImageOps.autocontrast(pil), 1),
        (augment.posterize(t, 3), ImageOps.posterize(pil, 3), 0),
        (augment.solarize(t, 128), ImageOps.solarize(pil, 128), 0),
        (augment.invert(t), ImageOps.invert(pil), 0),
        (augment.color(t, 1.5), ImageEnhance.Color(pil).enhance(1.5), 1),
        (augment.contrast(t, 1.7), ImageEnhance.Contrast(pil).enhance(1.7), 1),
        (augment.brightness(t, 0.6), ImageEnhance.Brightness(pil).enhance(0.6), 1),
        (augment.sharpness(t, 1.7), ImageEnhance.Sharpness(pil).enhance(1.7), 1),
        (augment.rotate(t, 20.0), pil.rotate(20, fillcolor=(128,) * 3), 0),
    ]
    for ours, theirs, tol in pairs:
        assert np.abs(ours.numpy().astype(int) - np.asarray(theirs).astype(int)).max() <= tol


@pytest.mark.parametrize("kind", ["inception", "center", "pad_crop", "flip", "randaugment",
                                  pytest.param("autoaugment", marks=pytest.mark.slow)])  # ~12 s to trace
def test_augmentations_keep_shape_dtype_and_are_stateless(kind):
    image = _image()
    fns = {
        "inception": lambda im, s: augment.inception_crop(im, 24, s),
        "center": lambda im, s: augment.center_crop(im, 24),
        "pad_crop": lambda im, s: augment.pad_and_random_crop(im, s, 4),
        "flip": augment.random_flip,
        "randaugment": lambda im, s: augment.randaugment(im, s, 2, 9),
        "autoaugment": augment.autoaugment,
    }
    fn = fns[kind]
    shape = (24, 24, 3) if kind in ("inception", "center") else tuple(image.shape)
    outs = [fn(image, tf.constant([s, 7], tf.int64)).numpy() for s in range(6)]
    for out in outs:
        assert out.shape == shape and out.dtype == np.uint8
    again = [fn(image, tf.constant([s, 7], tf.int64)).numpy() for s in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(outs, again))  # same seed, same result
    if kind != "center":
        assert len({o.tobytes() for o in outs}) > 1  # the seed matters
    traced = tf.function(fn, autograph=False)  # and tf.data's graph mode gives the same answer
    assert np.array_equal(traced(image, tf.constant([0, 7], tf.int64)).numpy(), outs[0])


def test_fused_jpeg_crops_match_decode_then_crop():
    jpeg = tf.io.encode_jpeg(_image(61, 83), quality=95)
    decoded = tf.io.decode_jpeg(jpeg, channels=3)
    for s in range(4):
        seed = tf.constant([s, 1], tf.int64)
        fused = augment.decode_and_inception_crop(jpeg, 32, seed).numpy().astype(int)
        plain = augment.inception_crop(decoded, 32, seed).numpy().astype(int)
        assert np.abs(fused - plain).mean() < 1.0
    fused = augment.decode_and_center_crop(jpeg, 32).numpy().astype(int)
    assert np.abs(fused - augment.center_crop(decoded, 32).numpy().astype(int)).mean() < 1.0
    png = tf.io.encode_png(decoded)  # non-JPEG bytes take the decode-then-crop path
    assert augment.decode_and_inception_crop(png, 32, SEED).shape == (32, 32, 3)


def test_center_crop_is_the_reference_fraction():
    image = tf.reshape(tf.range(100 * 100 * 3) % 251, (100, 100, 3))
    image = tf.cast(image, tf.uint8)
    # 224 / (224 + 32) = 0.875 of the short side; at crop_pct 1 and the same size it is the identity.
    assert augment.eval_crop_pct(224) == 0.875
    assert np.array_equal(augment.center_crop(image, 100, crop_pct=1.0).numpy(), image.numpy())
    assert np.array_equal(augment.center_crop(image, 87, crop_pct=0.875).numpy(), image[7:94, 7:94].numpy())


# ---- Eval iterator -----------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size,sharded", [(7, False), (32, False), (360, False), (500, False), (32, True)])
def test_eval_sees_every_example_exactly_once(digits_dir, sharded_digits_dir, batch_size, sharded):
    data_dir = sharded_digits_dir if sharded else digits_dir
    config = make_config(data_dir=data_dir)
    want = fingerprints(*raw_split(data_dir, "test"))
    for process_count in (1, 2, 3):
        per_process = [list(input_pipeline.eval_iterator(config, local_batch_size=batch_size, process_index=p,
                                                         process_count=process_count))
                       for p in range(process_count)]
        expected_batches = math.ceil(360 / (batch_size * process_count))
        assert [len(batches) for batches in per_process] == [expected_batches] * process_count
        images, labels = [], []
        for batches in per_process:
            for b in batches:
                assert b["image"].shape == (batch_size, 32, 32, 3) and b["image"].dtype == np.float32
                assert b["label"].dtype == np.int32 and b["mask"].dtype == bool
                images.append(b["image"][b["mask"]])
                labels.append(b["label"][b["mask"]])
        got = fingerprints(unnormalize(np.concatenate(images)), np.concatenate(labels))
        assert got == want, (batch_size, process_count)


# ---- Train iterator ----------------------------------------------------------------------------

def take(iterator, n):
    return [next(iterator) for _ in range(n)]


@pytest.mark.slow
def test_train_resumes_exactly_across_epoch_boundaries(digits_dir):
    # 1437 examples in batches of 64: batch 22 straddles epochs 0 and 1, batch 44 epochs 1 and 2.
    config = make_config(data_dir=digits_dir, augment="pad_crop", randaugment=(2, 9), seed=3)
    fresh = take(input_pipeline.train_iterator(config, local_batch_size=64), 46)
    for b in fresh:
        assert b["image"].shape == (64, 32, 32, 3) and b["image"].dtype == np.float32
        assert b["label"].shape == (64,) and b["label"].dtype == np.int32
    for start in (5, 22, 44):
        resumed = take(input_pipeline.train_iterator(config, local_batch_size=64, start_step=start), 2)
        for got, want in zip(resumed, fresh[start:start + 2]):
            np.testing.assert_array_equal(got["label"], want["label"])
            np.testing.assert_array_equal(got["image"], want["image"])
    other_seed = next(input_pipeline.train_iterator(make_config(data_dir=digits_dir, seed=4), local_batch_size=64))
    assert not np.array_equal(other_seed["label"], fresh[0]["label"])


@pytest.mark.parametrize("sharded", [False, True])
def test_train_epochs_are_permutations_of_disjoint_process_shards(digits_dir, sharded_digits_dir, sharded):
    # Sharded: 4 files, windows of 100 records; each process's shard spans file boundaries.
    data_dir = sharded_digits_dir if sharded else digits_dir
    config = make_config(data_dir=data_dir, augment="none", shuffle_buffer=100 if sharded else None)
    images, labels = raw_split(data_dir, "train")
    everything = fingerprints(images, labels)
    epochs = {}
    for p in range(2):  # 718 examples each (one of 1437 dropped); batch 100 does not divide 718
        batches = take(input_pipeline.train_iterator(config, local_batch_size=100, process_index=p,
                                                     process_count=2), 15)
        x = unnormalize(np.concatenate([b["image"] for b in batches]))
        y = np.concatenate([b["label"] for b in batches])
        epochs[p] = (fingerprints(x[:718], y[:718]), fingerprints(x[718:1436], y[718:1436]))
        assert epochs[p][0] == epochs[p][1]  # epoch 1 holds the same examples as epoch 0...
        assert not np.array_equal(y[:718], y[718:1436])  # ...in another order
    union = epochs[0][0] + epochs[1][0]
    assert sum(union.values()) == 1436 and not union - everything  # disjoint shards of the split
    assert sum((everything - union).values()) == 1


def test_train_resumes_exactly_with_many_files_and_small_windows(sharded_digits_dir):
    config = make_config(data_dir=sharded_digits_dir, augment="pad_crop", shuffle_buffer=100, seed=5)
    fresh = take(input_pipeline.train_iterator(config, local_batch_size=50, process_index=1, process_count=2), 17)
    for start in (3, 14):  # mid-window, and straddling the epoch boundary at 718
        resumed = take(input_pipeline.train_iterator(config, local_batch_size=50, start_step=start,
                                                     process_index=1, process_count=2), 3)
        for got, want in zip(resumed, fresh[start:start + 3]):
            np.testing.assert_array_equal(got["image"], want["image"])


def test_train_batch_larger_than_the_dataset(digits_dir):
    config = make_config(data_dir=digits_dir, train_split="test")  # 360 examples, batch 500
    fresh = take(input_pipeline.train_iterator(config, local_batch_size=500), 3)
    resumed = next(input_pipeline.train_iterator(config, local_batch_size=500, start_step=2))
    np.testing.assert_array_equal(resumed["image"], fresh[2]["image"])
    counts = collections.Counter(np.concatenate([b["label"] for b in fresh])[:720].tolist())
    assert counts == collections.Counter(2 * raw_split(digits_dir, "test")[1].tolist())


# ---- ImageNet settings on mock data, image folders -------------------------------------------------

@pytest.mark.slow  # tfds mock data through the ImageNet pipeline
def test_imagenet_settings_on_mock_data():
    config = make_config(dataset="imagenet2012", augment="inception", randaugment=(2, 9), image_size=224)
    with tfds.testing.mock_data(num_examples=10):
        info = input_pipeline.dataset_info(config)
        assert (info.num_classes, info.train_split, info.num_train_examples) == (1000, "train", 10)
        batches = take(input_pipeline.train_iterator(config, local_batch_size=4), 3)
        evals = list(input_pipeline.eval_iterator(config, local_batch_size=4))
    for b in batches:
        assert b["image"].shape == (4, 224, 224, 3) and b["image"].dtype == np.float32
        assert b["label"].shape == (4,) and (0 <= b["label"]).all() and (b["label"] < 1000).all()
        assert np.isfinite(b["image"]).all() and abs(float(b["image"].mean())) < 3
    assert [int(b["mask"].sum()) for b in evals] == [4, 4, 2]


def _write_folder(root, sizes):
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 5), ("test", 3)):
        for label in ("cat", "dog", "emu"):
            (root / split / label).mkdir(parents=True)
            for i in range(per_class):
                h, w = sizes[i % len(sizes)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.jpg", quality=90)


def test_image_folder(tmp_path):
    _write_folder(tmp_path, [(40, 30), (33, 50), (64, 64)])
    config = make_config(dataset=f"folder:{tmp_path}", augment="inception", image_size=32)
    info = input_pipeline.dataset_info(config)
    assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (3, 15, 9)
    assert (info.train_split, info.eval_split) == ("train", "test")
    fresh = take(input_pipeline.train_iterator(config, local_batch_size=4), 5)
    assert all(b["image"].shape == (4, 32, 32, 3) for b in fresh)
    resumed = next(input_pipeline.train_iterator(config, local_batch_size=4, start_step=4))
    np.testing.assert_array_equal(resumed["image"], fresh[4]["image"])
    for process_count in (2, 10):  # 10 processes for 9 images: one process has only padding
        labels = []
        for p in range(process_count):
            batches = list(input_pipeline.eval_iterator(config, local_batch_size=4, process_index=p,
                                                        process_count=process_count))
            assert len(batches) == math.ceil(9 / (4 * process_count))
            labels.extend(label for b in batches for label in b["label"][b["mask"]].tolist())
        assert sorted(labels) == [0] * 3 + [1] * 3 + [2] * 3


# ---- Bad input ---------------------------------------------------------------------------------

def test_unknown_dataset_names_the_dataset_and_how_to_list(tmp_path):
    with pytest.raises(ValueError, match="list_builders") as error:
        input_pipeline.dataset_info(make_config(dataset="cifar_10", data_dir=str(tmp_path)))
    assert "'cifar_10'" in str(error.value) and "'cifar10'" in str(error.value)  # a close match is offered
    assert not isinstance(error.value, input_pipeline.DatasetNotFoundError)


@pytest.mark.parametrize("name,fix", [("cifar10", "tfds build cifar10"), ("imagenet2012", "--manual_dir")])
def test_missing_data_says_where_it_looked_and_how_to_fix(tmp_path, name, fix):
    config = make_config(dataset=name, data_dir=str(tmp_path))
    with pytest.raises(input_pipeline.DatasetNotFoundError, match=fix) as error:
        next(input_pipeline.train_iterator(config, local_batch_size=8))
    assert name in str(error.value) and str(tmp_path) in str(error.value) and "data_dir" in str(error.value)
    assert not (tmp_path / "downloads").exists()  # nothing was downloaded


def test_digits_is_not_prepared_when_told_not_to(tmp_path):
    with pytest.raises(input_pipeline.DatasetNotFoundError, match="sklearn_digits"):
        input_pipeline.dataset_info(make_config(data_dir=str(tmp_path), prepare_dataset=False))
    with pytest.raises(input_pipeline.DatasetNotFoundError, match="does not exist"):
        input_pipeline.dataset_info(make_config(dataset=f"folder:{tmp_path}/nowhere"))


def test_bad_augment_settings():
    with pytest.raises(ValueError, match="augment must be one of"):
        next(input_pipeline.train_iterator(make_config(augment="mixup"), local_batch_size=8))
    with pytest.raises(ValueError, match="not both"):
        next(input_pipeline.train_iterator(make_config(randaugment=(2, 9), autoaugment=True), local_batch_size=8))
