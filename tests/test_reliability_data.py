"""Bad data is named, not trained on: labels outside the classes, one class, an empty split, a corrupt
TFRecord shard; and transparency is composited over white the same way in training and in ``predict``."""
import io
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from efficientnet_jax.predict import load_image
from train import augment, input_pipeline
from train.configs import base


def make_config(**overrides):
    config = base.get_config()
    config.update(dict(dataset="sklearn_digits", image_size=32, augment="none", eval_split="test"))
    config.update(overrides)
    return config


class ReliabilityUnlabelled(tfds.core.GeneratorBasedBuilder):
    """Two classes; example 5 of 'train' and example 2 of 'test' carry -1 (TFDS's "no label")."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = epath.Path(__file__)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 3)),
                                                 "label": tfds.features.ClassLabel(num_classes=2)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(8, bad=5), "test": self._generate_examples(4, bad=2)}

    def _generate_examples(self, n, bad):
        for i in range(n):
            yield i, {"image": np.full((8, 8, 3), i * 20, np.uint8), "label": -1 if i == bad else i % 2}


@pytest.fixture(scope="module")
def unlabelled_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_unlabelled"))
    tfds.builder("reliability_unlabelled", data_dir=data_dir).download_and_prepare()
    return data_dir


@pytest.mark.slow  # builds a TFDS dataset and traces both pipelines
def test_labels_outside_the_classes_are_named_in_training_and_evaluation(unlabelled_dir):
    config = make_config(dataset="reliability_unlabelled", data_dir=unlabelled_dir, image_size=8)
    data = input_pipeline.open_dataset(config)
    with pytest.raises(input_pipeline.DataError, match=r"outside \[0, 2\) \(example \d+ has label -1\)"):
        for _ in zip(range(4), data.train_iterator(local_batch_size=4)):
            pass
    with pytest.raises(input_pipeline.DataError, match=r"reliability_unlabelled:test: 1 of the 4 examples 0..3"):
        list(data.eval_iterator(local_batch_size=4))


def write_folder(root: pathlib.Path, classes, splits=("train", "test"), corrupt_train=False):
    for split in splits:
        for label in classes:
            (root / split / label).mkdir(parents=True)
            for i in range(3):
                path = root / split / label / f"{i}.png"
                if corrupt_train and split == "train":
                    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
                else:
                    Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(path)


def test_one_class_and_empty_splits_are_refused_by_name(tmp_path):
    write_folder(tmp_path / "one", ["cats"])
    with pytest.raises(input_pipeline.DataError, match="has 1 class \\(cats\\): a classifier needs at least 2"):
        input_pipeline.open_dataset(make_config(dataset=f"folder:{tmp_path / 'one'}"))
    assert input_pipeline.open_dataset(make_config(dataset=f"folder:{tmp_path / 'one'}"), train=False)  # eval: fine
    write_folder(tmp_path / "empty", ["a", "b"], corrupt_train=True)
    with pytest.raises(input_pipeline.DataError, match="train split 'train' of folder:.* is empty"):
        input_pipeline.open_dataset(make_config(dataset=f"folder:{tmp_path / 'empty'}"))


@pytest.mark.slow  # builds sklearn_digits in two shards
def test_a_corrupt_tfrecord_shard_is_named(tmp_path):
    data_dir = str(tmp_path)
    tfds.builder("sklearn_digits", data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=2))
    shard = sorted(pathlib.Path(data_dir).glob("sklearn_digits/1.0.0/*train.tfrecord*"))[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = bytes(16)  # a run of zeros inside one record: its CRC fails
    shard.write_bytes(bytes(data))
    config = make_config(data_dir=data_dir, shuffle_buffer=64)
    with pytest.raises(input_pipeline.DataError, match=f"record file .*{shard.name} is corrupt"):
        for _ in zip(range(200), input_pipeline.open_dataset(config).train_iterator(local_batch_size=64)):
            pass


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_over_white_in_training_as_in_predict(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (20, 30, 4), np.uint8)
    rgba[:5, :, 3] = 0  # fully transparent: white, whatever colour is stored
    image = Image.fromarray(rgba, "RGBA")
    options = {}
    if mode == "P":
        image = image.convert("RGB").convert("P")
        options = {"transparency": 3}
    elif mode == "LA":
        image = image.convert("LA")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    (tmp_path / "x.png").write_bytes(buffer.getvalue())
    served = load_image(tmp_path / "x.png")
    trained = augment.decode_image(tf.constant(buffer.getvalue())).numpy()
    np.testing.assert_array_equal(trained, served)
    if mode != "P":
        assert (served[:5] == 255).all()
