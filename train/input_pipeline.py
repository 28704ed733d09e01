"""TFDS / image folders -> tf.data -> per-process numpy batches (the caller builds global arrays).

Resumption is exact without saving iterator state. Each process reads a fixed, disjoint shard
of the train split; its example stream is epoch 0, epoch 1, ..., where epoch ``e`` is a
permutation of the shard that depends only on (seed, process, e), and each example's
augmentation only on (seed, process, e, its position in the epoch). Batch ``k`` is stream
positions [k*B, (k+1)*B), so ``train_iterator(start_step=k)`` starts at epoch ``k*B // n`` and
skips ``k*B % n`` records of it before decoding: resuming reads at most one epoch of the shard
and decodes nothing extra.

An epoch's order: the shard's files in a per-epoch random order (TFDS shuffles examples when it
prepares a dataset), then a full stateless permutation of each window of ``shuffle_buffer``
consecutive records, so a shard no larger than the window is fully permuted every epoch. Image
folders permute their file list. All of it is one tf.data graph (``flat_map`` over an epoch
counter), so batches run across epoch boundaries without a stall, and nothing depends on
TensorFlow's global seed.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
from typing import Any, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from efficientnet_jax.specs import IMAGENET_MEAN, IMAGENET_STD
from train import augment
import train.datasets  # noqa: F401  (registers sklearn_digits with TFDS)


def _keep_tensorflow_off_accelerators() -> None:
    """TF only feeds the input pipeline; JAX must own every GPU/TPU byte."""
    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except (RuntimeError, ValueError):  # devices already initialized, or kind unknown
            pass


_keep_tensorflow_off_accelerators()

DEFAULT_SHUFFLE_BUFFER = 10_000
EVAL_SPLIT_CANDIDATES = ("validation", "val", "test")  # 'validation' first: imagenet2012's test has no labels
AUGMENTS = ("inception", "pad_crop", "none")
PAD_CROP_FRACTION = 1 / 8  # CIFAR's 4 pixels at 32, scaled with the image size
PREPARED_HERE = ("sklearn_digits",)  # small enough to build offline on the fly


class DatasetNotFoundError(ValueError):
    """The dataset is known but its data is not where we looked."""


class DataError(ValueError):
    """The data is there but wrong: labels outside the classes, a corrupt file, too few classes or examples."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    num_train_examples: int
    num_eval_examples: int
    train_split: str
    eval_split: str
    label_names: tuple[str, ...] = ()  # by label index; ImageNet-style sources use WordNet synset ids


# ---- Sources: where the (encoded image, label) records come from --------------------------------
#
# ``records(..., order=None)`` is the shard in a fixed order (eval); with ``order=(file_seed,
# window_seed)``, seed tensors that may be symbolic (traced once inside flat_map), it is one
# epoch's order.

def _even_range(n: int, index: int, count: int, drop_remainder: bool) -> tuple[int, int]:
    """[start, stop) of part ``index`` of ``count`` contiguous parts (tfds.even_splits' rule)."""
    size, extra = divmod(n, count)
    if drop_remainder:
        return index * size, (index + 1) * size
    start = index * size + min(index, extra)
    return start, start + size + (index < extra)


def _permutation(n: int, seed: tf.Tensor) -> tf.Tensor:
    return tf.argsort(tf.random.stateless_uniform([n], seed))


def _window_shuffle(ds: tf.data.Dataset, window: int, seed: tf.Tensor) -> tf.data.Dataset:
    """Fully permute each run of ``window`` consecutive records, statelessly."""
    def permute(index, records):
        count = tf.shape(tf.nest.flatten(records)[0])[:1]
        window_seed = tf.random.experimental.stateless_fold_in(seed, index)
        order = tf.argsort(tf.random.stateless_uniform(count, window_seed))
        return tf.nest.map_structure(lambda t: tf.gather(t, order), records)

    return ds.batch(window).enumerate().map(permute).prefetch(1).unbatch()


class _TfdsSource:
    def __init__(self, name: str, data_dir: str | None, prepare: bool):
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError:
            raise _unknown_dataset(name) from None
        self.name = name
        if not self.builder.is_prepared():
            if prepare and name in PREPARED_HERE:
                self.builder.download_and_prepare()
            else:
                try:  # raises where the data is missing; succeeds under tfds.testing.mock_data
                    self.builder.as_dataset(split=None)
                except AssertionError:
                    raise DatasetNotFoundError(_not_prepared_message(self.builder, data_dir)) from None
        keys = self.builder.info.supervised_keys
        self.image_key, self.label_key = keys if keys and len(keys) == 2 else ("image", "label")
        features = self.builder.info.features
        if not isinstance(features[self.image_key], tfds.features.Image):
            raise ValueError(f"{name}: feature {self.image_key!r} is not an image; only image classification "
                             "datasets are supported")
        self.num_classes = features[self.label_key].num_classes
        self.label_names = tuple(features[self.label_key].names)
        self.splits = tuple(self.builder.info.splits.keys())  # empty under mock_data
        # TFRecord files we can read in any order ourselves; otherwise (mock_data, ArrayRecord)
        # tfds' reader gives one fixed order and only the shuffle window varies per epoch.
        file_format = self.builder.info.file_format
        self._own_reader = bool(self.splits) and file_format in (None, tfds.core.FileFormat.TFRECORD)
        self._decoders = {self.image_key: tfds.decode.SkipDecoding()}

    def num_examples(self, split: str) -> int:
        if self.splits:
            return self.builder.info.splits[split].num_examples
        # No split metadata (tfds.testing.mock_data): count what the reader yields.
        return int(self._parse(self.builder.as_dataset(split=split, decoders=self._decoders)).cardinality())

    def _parse(self, ds):
        return ds.map(lambda ex: (ex[self.image_key], tf.cast(ex[self.label_key], tf.int32)))

    def _shard(self, split, process_index, process_count, drop_remainder):
        if split in self.splits:  # an absolute slice resolves without tfds' per-call "Dropping" warning
            start, stop = _even_range(self.num_examples(split), process_index, process_count, drop_remainder)
            return f"{split}[{start}:{stop}]"
        # 'train[:90%]', 'train+validation', or no split metadata (mock_data)
        return tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count,
                                          drop_remainder=drop_remainder)

    def corrupt_files(self, split: str) -> list[str]:
        """The record files of ``split`` that do not read to the end (checksums, truncation), by a full read."""
        if not self.splits:
            return []
        bad = []
        for instruction in self.builder.info.splits[split].file_instructions:
            path = os.fspath(instruction.filename)
            try:
                for _ in tf.data.TFRecordDataset(path):
                    pass
            except tf.errors.OpError:
                bad.append(path)
        return bad

    def records(self, split: str, *, process_index: int, process_count: int, drop_remainder: bool,
                order: tuple[tf.Tensor, tf.Tensor] | None = None, window: int = 0) -> tf.data.Dataset:
        shard = self._shard(split, process_index, process_count, drop_remainder)
        if not self._own_reader:
            ds = self._parse(self.builder.as_dataset(
                split=shard, shuffle_files=False, decoders=self._decoders,
                read_config=tfds.ReadConfig(try_autocache=False, skip_prefetch=True)))
            return ds if order is None else _window_shuffle(ds, window, order[1])
        files = self.builder.info.splits[shard].file_instructions
        columns = (tf.constant([os.fspath(f.filename) for f in files], tf.string),
                   tf.constant([f.skip for f in files], tf.int64), tf.constant([f.take for f in files], tf.int64))
        if order is not None:  # a new file order every epoch: windows hold different files each time
            perm = _permutation(len(files), order[0])
            columns = tuple(tf.gather(c, perm) for c in columns)
        ds = tf.data.Dataset.from_tensor_slices(columns).interleave(
            lambda path, skip, take: tf.data.TFRecordDataset(path).skip(skip).take(take),
            cycle_length=max(1, min(16, len(files))), block_length=16, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True)
        if order is not None:
            ds = _window_shuffle(ds, window, order[1])
        features = self.builder.info.features
        return self._parse(ds.map(lambda record: features.deserialize_example(record, decoders=self._decoders),
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


class _FolderSource:
    """``folder:/root`` with root/<split>/<class>/<image>; TFDS's ImageFolder lists and labels it."""

    def __init__(self, root: str, skip_corrupt: bool = True):
        root = os.path.expanduser(root)
        self.skip_corrupt = skip_corrupt
        if not tf.io.gfile.isdir(root):
            raise DatasetNotFoundError(
                f"Image folder {root!r} does not exist. Expected {root}/train/<class>/*.jpg and "
                f"{root}/test/<class>/*.jpg (or val/); set --config.dataset=folder:/path/to/root.")
        self.builder = tfds.folder_dataset.ImageFolder(root)
        self.name = f"folder:{root}"
        self.splits = tuple(self.builder.info.splits.keys())
        if not self.splits:
            raise DatasetNotFoundError(f"Image folder {root!r} has no <split>/<class>/<image> files "
                                       "(.jpg, .jpeg, .png).")
        self.num_classes = self.builder.info.features["label"].num_classes
        self.label_names = tuple(self.builder.info.features["label"].names)

    def num_examples(self, split: str) -> int:
        if split not in self.splits:
            raise ValueError(f"{self.name} has no split {split!r}; it has {list(self.splits)}")
        return len(self._examples(split))

    def _examples(self, split: str) -> list:
        """ImageFolder's file list in its fixed (seeded) order, without the files that do not decode.

        Every file is decoded once, when a split is first used (cached per process), so corrupt
        images are dropped before sharding and shuffling: positions, shards and resumption stay
        exact. With ``skip_corrupt_images=False`` a corrupt file is an error instead.
        """
        examples = self.builder._split_examples[split]  # pylint: disable=protected-access
        key = (self.name, split, len(examples))
        if key not in _DECODABLE:
            _DECODABLE[key] = _decodable([e.image_path for e in examples])
        bad = [e.image_path for e, ok in zip(examples, _DECODABLE[key]) if not ok]
        if bad and not self.skip_corrupt:
            raise ValueError(
                f"{len(bad)} of the {len(examples)} images of {self.name}:{split} cannot be decoded: "
                f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. Replace or remove them, or set "
                "--config.skip_corrupt_images=True to skip them.")
        if bad:
            logging.warning("Skipping %d of the %d images of %s:%s that cannot be decoded: %s%s", len(bad),
                            len(examples), self.name, split, ", ".join(bad[:5]), " ..." if len(bad) > 5 else "")
        return [e for e, ok in zip(examples, _DECODABLE[key]) if ok]

    def corrupt_files(self, split: str) -> list[str]:
        del split  # undecodable images are found (and skipped or refused) when a split is first used
        return []

    def records(self, split: str, *, process_index: int, process_count: int, drop_remainder: bool,
                order: tuple[tf.Tensor, tf.Tensor] | None = None, window: int = 0) -> tf.data.Dataset:
        del window  # permuting the file list is a full shuffle at the cost of a list of paths
        # ImageFolder's as_dataset() can neither shard nor shuffle reproducibly: we read the files ourselves.
        examples = self._examples(split)
        start, stop = _even_range(len(examples), process_index, process_count, drop_remainder)
        label_of = self.builder.info.features["label"].str2int
        paths = tf.constant([e.image_path for e in examples[start:stop]], tf.string)
        labels = tf.constant([label_of(e.label) for e in examples[start:stop]], tf.int32)
        if order is not None:
            perm = _permutation(stop - start, order[0])
            paths, labels = tf.gather(paths, perm), tf.gather(labels, perm)
        return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
            lambda path, label: (tf.io.read_file(path), label), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True)


_DECODABLE: dict[tuple, np.ndarray] = {}  # (source, split, file count) -> which files decode


def _decodable(paths: list[str]) -> np.ndarray:
    """Which of ``paths`` decode as images (read and decoded in parallel, with the pipeline's decoder)."""
    def decode(index, path):
        image = augment.decode_and_center_crop(tf.io.read_file(path), 8, 1.0)
        return index, tf.reduce_sum(tf.cast(image, tf.int32))  # consume the pixels: the decode must run

    ok = np.zeros(len(paths), bool)
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string)).enumerate().map(
        decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    for index, _ in ds.as_numpy_iterator():
        ok[index] = True
    return ok


def _unknown_dataset(name: str) -> ValueError:
    close = difflib.get_close_matches(name, tfds.list_builders(), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(
        f"Unknown dataset {name!r}.{hint} Use a TFDS name (list them with: python -c \"import "
        "tensorflow_datasets as tfds; print(tfds.list_builders())\"), 'sklearn_digits', or "
        "'folder:/path/to/root' for root/{train,test}/<class>/<image>.")


def _not_prepared_message(builder, data_dir: str | None) -> str:
    name, root = builder.name, builder.data_dir_root
    where = "the TFDS default data_dir" if data_dir is None else "--config.data_dir"
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        build = f"tfds build {name} --data_dir={root} --manual_dir=/path/to/downloaded/files"
        note = f" ({name} needs a manual download; `tfds build` prints the instructions.)"
    else:
        build, note = f"tfds build {name} --data_dir={root}", ""
    return (f"Dataset {name!r} is not prepared in {root} ({where}; looked for {builder.data_dir}). "
            f"Prepare it once with `{build}`{note}, or set --config.data_dir to the directory that "
            "already holds it. The training program does not download datasets itself.")


def _open_source(config) -> _TfdsSource | _FolderSource:
    name = config.dataset
    if name.startswith("folder:"):
        return _FolderSource(name[len("folder:"):], skip_corrupt=config.skip_corrupt_images)
    return _TfdsSource(name, config.data_dir, prepare=config.prepare_dataset)


def _eval_split(config, source) -> str:
    if config.eval_split:
        return config.eval_split
    have = [s for s in EVAL_SPLIT_CANDIDATES if s in source.splits]
    if source.splits and not have:
        raise ValueError(f"{source.name} has none of the eval splits {EVAL_SPLIT_CANDIDATES} (it has "
                         f"{list(source.splits)}); set --config.eval_split")
    return have[0] if have else EVAL_SPLIT_CANDIDATES[0]


def eval_crop_pct(config) -> float | None:
    """The fraction of the short side the eval centre crop keeps: ``config.crop_pct`` if set; else None
    (the reference's size/(size+32), ``efficientnet_jax.specs.eval_crop_pct``) after ImageNet-style
    ('inception') training, and 1.0 (the whole square) after any other.

    Small-image recipes train on the whole image, so cutting its border at eval would only
    remove what the model was trained to see.
    """
    if config.crop_pct is None and config.augment != "inception":
        return 1.0
    return config.crop_pct


def open_dataset(config, *, train: bool = True) -> Dataset:
    """The run's dataset, opened once: its info, resolved splits and eval crop, and its iterators.

    ``train=False``: only the eval split must exist (evaluating weights on a folder that holds just
    ``val/``); the info then describes the eval split in its train fields too.
    """
    _check(config)
    source = _open_source(config)
    eval_split = _eval_split(config, source)
    train_split = config.train_split if train else eval_split
    info = DatasetInfo(name=source.name, num_classes=source.num_classes,
                       num_train_examples=source.num_examples(train_split),
                       num_eval_examples=source.num_examples(eval_split),
                       train_split=train_split, eval_split=eval_split, label_names=source.label_names)
    if train and info.num_classes < 2:  # evaluating an ImageNet model on one class folder is fine
        raise DataError(f"{info.name} has {info.num_classes} class{'es' if info.num_classes != 1 else ''} "
                        f"({', '.join(info.label_names) or 'no names'}): a classifier needs at least 2 "
                        "(for folders: one subfolder per class under each split)")
    for role, split, count in (("train", train_split, info.num_train_examples),
                               ("eval", eval_split, info.num_eval_examples)):
        if count == 0 and (train or role == "eval"):
            raise DataError(f"The {role} split {split!r} of {info.name} is empty (0 examples"
                            f"{', after skipping undecodable images' if info.name.startswith('folder:') else ''}); "
                            f"set --config.{role}_split to a split with examples")
    return Dataset(config=config, source=source, info=info)


def checked_batches(batches: Iterator[dict[str, np.ndarray]], source, split: str,
                    num_classes: int) -> Iterator[dict[str, np.ndarray]]:
    """``batches`` with every real label checked against ``[0, num_classes)`` (an all-zero one-hot target
    in training, NaN in evaluation otherwise) and a corrupt record file named instead of TensorFlow's
    position-only ``DataLossError``."""
    seen = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except tf.errors.DataLossError as e:
            bad = source.corrupt_files(split)
            where = f"the record file{'s' if len(bad) > 1 else ''} {', '.join(bad)}" if bad else "a record file"
            raise DataError(f"{source.name}:{split}: {where} is corrupt ({e.message.splitlines()[0][:200]}); "
                            "rebuild the dataset (tfds build --overwrite) or restore the file") from None
        labels = batch["label"] if "mask" not in batch else batch["label"][batch["mask"]]
        outside = (labels < 0) | (labels >= num_classes)
        if outside.any():
            first = seen + int(np.argmax(outside))
            raise DataError(f"{source.name}:{split}: {int(outside.sum())} of the {len(labels)} examples "
                            f"{seen}..{seen + len(labels) - 1} read by this process have labels outside "
                            f"[0, {num_classes}) (example {first} has label {int(labels[np.argmax(outside)])}); "
                            "fix the labels or the dataset's class count")
        seen += len(labels)
        yield batch


def dataset_info(config) -> DatasetInfo:
    """``open_dataset(config).info``."""
    return open_dataset(config).info


# ---- Preprocessing -----------------------------------------------------------------------------

def _check(config) -> None:
    if config.augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {config.augment!r}")
    if config.randaugment and config.autoaugment:
        raise ValueError("set randaugment or autoaugment, not both")


def _train_preprocess(config):
    """Traced once per iterator; autograph off because the ops are plain graph code (and it adds ~1 s)."""
    size, kind = config.image_size, config.augment
    ra, aa = config.randaugment, config.autoaugment

    @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int64)], autograph=False)
    def preprocess(image_bytes, seed):
        crop_seed, flip_seed, policy_seed = augment.split_seed(seed, 3)
        if kind == "inception":
            image = augment.random_flip(augment.decode_and_inception_crop(image_bytes, size, crop_seed), flip_seed)
        else:
            image = augment.decode_and_center_crop(image_bytes, size, 1.0)
            if kind == "pad_crop":
                image = augment.pad_and_random_crop(image, crop_seed, max(1, round(size * PAD_CROP_FRACTION)))
        if ra:
            num_layers, magnitude = ra
            image = augment.randaugment(image, policy_seed, int(num_layers), float(magnitude))
        if aa:
            image = augment.autoaugment(image, policy_seed)
        return tf.ensure_shape(image, [size, size, 3])

    return preprocess


def _normalizer(config):
    mean = tf.constant(config.mean or IMAGENET_MEAN, tf.float32)  # None: a config not yet resolved for a model
    std = tf.constant(config.std or IMAGENET_STD, tf.float32)

    def normalize(batch):
        return {**batch, "image": (tf.cast(batch["image"], tf.float32) - mean) / std}

    return normalize


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1  # parallelism across examples, not inside ops
    return options


# ---- Iterators ---------------------------------------------------------------------------------

def _process_seed(seed: int, process_index: int) -> tf.Tensor:
    return tf.constant([seed % 2**63, process_index], tf.int64)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A run's data source, opened once (``open_dataset``), with the settings of ``config``.

    ``with_config`` gives the same source under other preprocessing settings (a progressive-learning
    stage's image size and RandAugment magnitude) without opening it again.
    """

    config: Any
    source: Any  # where the (encoded image, label) records come from (TFDS or an image folder)
    info: DatasetInfo

    @property
    def eval_crop_pct(self) -> float | None:
        """See ``eval_crop_pct``."""
        return eval_crop_pct(self.config)

    def with_config(self, config) -> Dataset:
        _check(config)
        return dataclasses.replace(self, config=config)

    def train_iterator(self, *, local_batch_size: int, start_step: int = 0, process_index: int = 0,
                       process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """Endless {'image': float32 (B, H, W, 3), 'label': int32 (B,)} of this process's shard.

        Starting at ``start_step=k`` yields exactly batches k, k+1, ... of the run from step 0.
        """
        config, source, split = self.config, self.source, self.info.train_split
        total = source.num_examples(split)
        n = total // process_count  # every process gets the same share; the remainder is never read
        if n == 0:
            raise ValueError(f"{source.name}:{split} has {total} examples, fewer than the {process_count} processes")
        window = config.shuffle_buffer or min(DEFAULT_SHUFFLE_BUFFER, n)
        preprocess = _train_preprocess(config)
        process_seed = _process_seed(config.seed, process_index)

        def epoch(e):
            """Epoch ``e`` (a traced scalar): (augmentation seed, image bytes, label) in its order."""
            file_seed, window_seed, augment_seed = augment.split_seed(
                tf.random.experimental.stateless_fold_in(process_seed, e), 3)
            ds = source.records(split, process_index=process_index, process_count=process_count,
                                drop_remainder=True, order=(file_seed, window_seed), window=window)
            return ds.take(n).enumerate().map(
                lambda pos, rec: (tf.random.experimental.stateless_fold_in(augment_seed, pos), rec[0], rec[1]))

        first_epoch, offset = divmod(start_step * local_batch_size, n)
        ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch)
        ds = ds.skip(offset)  # before decoding: resuming reads at most an epoch of records, decodes none
        ds = ds.map(lambda seed, image, label: {"image": preprocess(image, seed), "label": label},
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(local_batch_size, drop_remainder=True).map(_normalizer(config))
        ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
        yield from checked_batches(ds.as_numpy_iterator(), source, split, self.info.num_classes)

    def eval_iterator(self, *, local_batch_size: int, process_index: int = 0,
                      process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """One pass: {'image', 'label', 'mask'}; padding rows have mask False.

        Every process yields ceil(N / (B * processes)) batches, so collectives line up, and the
        processes' real rows together are each eval example exactly once.
        """
        split = self.info.eval_split
        total = self.source.num_examples(split)
        num_batches = max(1, math.ceil(total / (local_batch_size * process_count)))
        size, crop_pct = self.config.eval_image_size or self.config.image_size, self.eval_crop_pct

        @tf.function(input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)], autograph=False)
        def preprocess(image_bytes, label):
            image = augment.decode_and_center_crop(image_bytes, size, crop_pct)
            return {"image": image, "label": label, "mask": tf.constant(True)}

        ds = self.source.records(split, process_index=process_index, process_count=process_count,
                                 drop_remainder=False)
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        padding = {"image": tf.zeros([size, size, 3], tf.uint8), "label": tf.constant(0, tf.int32),
                   "mask": tf.constant(False)}
        ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat()).take(num_batches * local_batch_size)
        ds = ds.batch(local_batch_size).map(_normalizer(self.config)).prefetch(tf.data.AUTOTUNE)
        yield from checked_batches(ds.with_options(_options()).as_numpy_iterator(), self.source, split,
                                   self.info.num_classes)


def train_iterator(config, **kwargs) -> Iterator[dict[str, np.ndarray]]:
    """``open_dataset(config).train_iterator(**kwargs)``, for one-off use (a run opens its dataset once)."""
    yield from open_dataset(config).train_iterator(**kwargs)


def eval_iterator(config, **kwargs) -> Iterator[dict[str, np.ndarray]]:
    """``open_dataset(config).eval_iterator(**kwargs)``, for one-off use (a run opens its dataset once)."""
    yield from open_dataset(config).eval_iterator(**kwargs)
