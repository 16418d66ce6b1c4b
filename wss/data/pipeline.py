"""tf.data input pipelines: labelled, unlabelled / image-labelled and evaluation streams.

Each stream is a function of an optional `tf.distribute.InputContext`, so that
`make_distributed(strategy, fn)` builds one dataset per replica through
`strategy.distribute_datasets_from_function`: the batch size given is the global one and each
pipeline gets `input_context.get_per_replica_batch_size(batch_size)`; files are sharded by
`input_pipeline_id`, or examples when a split file selects them (so that every pipeline gets
its share of a small labelled list) or when there are fewer files than pipelines.

Batches are dicts with the keys of docs/contracts.md:

- `labelled_dataset`: `image`, `label`, `valid`, `class_labels`, `has_mask`, `filename`;
- `unlabelled_dataset`: the same plus `strong`, `strong_valid`;
- `classification_dataset` (pretraining): `image`, `valid`, `class_labels`, `filename`;
- `eval_dataset`: `image`, `label`, `valid`, `class_labels`, `has_mask`, `filename`.

Training streams repeat, shuffle and have static shapes (`drop_remainder=True`). With `seed`
set they are deterministic: every random draw is a stateless op seeded per example from
`tf.data.Dataset.random(seed)` and the map keeps its order.

A dataset on disk is a `DatasetSpec`: a TFRecord file pattern, an optional split file of ids
to keep and an optional split file of ids to leave out.

Errors: a record that fails a check fails with its `image/filename`; a truncated or corrupt
record file makes tf.data raise without a file name, so iterate training streams through
`checked_iterator`, which then re-reads the files and raises `RecordError` naming the file and
record. Records are never skipped silently.
"""

import dataclasses
import functools
from typing import Callable, Optional, Sequence, Tuple, Union

import gin
import tensorflow as tf

from wss.data import augment, records, splits

AUTOTUNE = tf.data.AUTOTUNE

# The map functions hold no Python control flow on tensors; skipping AutoGraph's conversion
# saves seconds of tracing per dataset.
_no_autograph = tf.autograph.experimental.do_not_convert


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset on disk.

    Attributes:
      file_pattern: TFRecord glob pattern (or comma-separated patterns).
      split_file: Optional split file: only these ids are read; each must be in the records.
      exclude_file: Optional split file whose ids are left out (e.g. the labelled list, to
        make the unlabelled stream the rest of train_aug).
    """

    file_pattern: str
    split_file: Optional[str] = None
    exclude_file: Optional[str] = None


@gin.configurable
def dataset_spec(file_pattern: str, split_file: Optional[str] = None,
                 exclude_file: Optional[str] = None) -> DatasetSpec:
    """Builds a `DatasetSpec` (gin: `labelled/dataset_spec.file_pattern = ...`)."""
    return DatasetSpec(file_pattern, split_file, exclude_file)


SpecLike = Union[DatasetSpec, str, dict]


def as_spec(spec: SpecLike) -> DatasetSpec:
    """Accepts a `DatasetSpec`, a file pattern, a dict of its fields or a source.

    A source is any other object with a `read_serialized` method (what `read_records` returns
    for it), e.g. `wss.data.tfds_source.TFDSSource`; it is returned as it is.
    """
    if isinstance(spec, DatasetSpec) or is_source(spec):
        return spec
    if isinstance(spec, str):
        return DatasetSpec(spec)
    if isinstance(spec, dict):
        return DatasetSpec(**spec)
    raise TypeError(f"Expected a DatasetSpec, a file pattern or a dict, got {spec!r}")


def is_source(spec) -> bool:
    """Whether `spec` is a non-file source (it has `read_serialized`), e.g. a TFDS split."""
    return not isinstance(spec, DatasetSpec) and hasattr(spec, "read_serialized")


def make_spec(pattern, split_file: Optional[str] = None,
              exclude_file: Optional[str] = None):
    """A `DatasetSpec` of a TFRecord pattern, or a source restricted by the split files.

    Args:
      pattern: a TFRecord pattern, or a source such as `tfds_dataset(...)` (gin:
        `train.labelled_pattern = @labelled/tfds_dataset()`).
      split_file: optional split file of ids to keep.
      exclude_file: optional split file of ids to leave out.
    """
    if is_source(pattern):
        return pattern.with_splits(split_file, exclude_file)
    return DatasetSpec(pattern, split_file, exclude_file)


def _filename_only(serialized):
    parsed = tf.io.parse_single_example(
        serialized, {records.IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, "")})
    return records.image_id_tf(parsed[records.IMAGE_FILENAME])


@functools.lru_cache(maxsize=32)
def record_ids(files: Tuple[str, ...]) -> frozenset:
    """The ids of all records of `files` (reads the records; cached per process).

    Raises:
      RecordError: A file is corrupt (named).
    """
    ds = tf.data.TFRecordDataset(list(files), num_parallel_reads=AUTOTUNE)
    ds = ds.map(_no_autograph(_filename_only), num_parallel_calls=AUTOTUNE).batch(4096)
    ids = set()
    try:
        for batch in ds:
            ids.update(x.decode("utf-8") for x in batch.numpy())
    except tf.errors.OpError:
        records.scan_records(list(files))
        raise
    return frozenset(ids)


def _selected_ids(spec: DatasetSpec, files: Sequence[str], check_ids: bool):
    """Returns (keep, drop) id lists of the spec; checks that listed ids exist."""
    keep = drop = None
    if spec.split_file:
        keep = splits.read_split_file(spec.split_file)
        if check_ids:
            splits.check_ids_present(keep, record_ids(tuple(files)), spec.split_file,
                                     f"the records {spec.file_pattern}")
    if spec.exclude_file:
        drop = splits.read_split_file(spec.exclude_file)
    return keep, drop


def _id_filter(ids: Sequence[str], keep: bool) -> Callable:
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(ids), tf.string), tf.ones([len(ids)], tf.int32)),
        default_value=0)

    @_no_autograph
    def predicate(serialized):
        found = table.lookup(_filename_only(serialized)) > 0
        return found if keep else tf.logical_not(found)

    return predicate


def read_records(
    spec: SpecLike,
    input_context: Optional[tf.distribute.InputContext] = None,
    shuffle_files: bool = False,
    seed: Optional[int] = None,
    check_ids: bool = True,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Serialized examples of a spec: sharded per input pipeline and filtered by its splits.

    Args:
      spec: The dataset.
      input_context: Shards files, or the selected examples when there is a split file
        or fewer files than pipelines.
      shuffle_files: Shuffle the file order each epoch.
      seed: Seed of the file shuffle.
      check_ids: Check that every id of the split file is in the records (reads the ids of
        all records once per process).
      deterministic: Keep the interleave order.

    Returns:
      A dataset of scalar strings.

    Raises:
      FileNotFoundError: No file matches, or a split file is missing.
      ValueError: A split file is empty or lists ids absent from the records.
    """
    spec = as_spec(spec)
    if is_source(spec):
        return spec.read_serialized(input_context, shuffle_files, seed, check_ids, deterministic)
    files = records.list_files(spec.file_pattern)
    keep, drop = _selected_ids(spec, files, check_ids)
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    # Files are sharded when there are enough of them. A split file selects examples that may
    # all sit in one pipeline's files (a small labelled list usually does), so then every
    # pipeline reads every file and takes its share of the selected examples.
    shard_examples = False
    if num_pipelines > 1:
        if keep is not None:
            if len(keep) < num_pipelines:
                raise ValueError(
                    f"Split file {spec.split_file} lists {len(keep)} example(s), fewer than the "
                    f"{num_pipelines} input pipelines that must share them.")
            shard_examples = True
        elif len(files) >= num_pipelines:
            files = files[pipeline_id::num_pipelines]
        else:
            shard_examples = True
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=1,
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if keep is not None:
        ds = ds.filter(_id_filter(keep, keep=True))
    if drop is not None:
        ds = ds.filter(_id_filter(drop, keep=False))
    if shard_examples:
        ds = ds.shard(num_pipelines, pipeline_id)
    return ds


def _per_replica(batch_size: int, input_context) -> int:
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def _pipeline_seed(seed: Optional[int], input_context, salt: int) -> Optional[int]:
    if seed is None:
        return None
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    return int(seed) * 1000003 + pipeline_id * 7919 + salt


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    return options


def _training_stream(
    spec, batch_size, num_classes, map_fn, shuffle_buffer, seed, input_context, check_ids,
    skip_batches=0,
):
    seed_files = _pipeline_seed(seed, input_context, 1)
    seed_shuffle = _pipeline_seed(seed, input_context, 2)
    seed_aug = _pipeline_seed(seed, input_context, 3)
    deterministic = seed is not None
    ds = read_records(spec, input_context, shuffle_files=True, seed=seed_files,
                      check_ids=check_ids, deterministic=deterministic)
    if shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed_shuffle, reshuffle_each_iteration=True)
    ds = ds.repeat()
    randoms = tf.data.Dataset.random(seed=seed_aug)
    ds = tf.data.Dataset.zip((ds, randoms))
    if skip_batches:
        # Resuming: drop the serialized records of the batches already trained on, before any
        # decoding, so that a seeded stream continues exactly where it stopped.
        ds = ds.skip(skip_batches * _per_replica(batch_size, input_context))
    ds = ds.map(map_fn, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(_per_replica(batch_size, input_context), drop_remainder=True)
    ds = ds.prefetch(AUTOTUNE)
    return ds.with_options(_options(deterministic))


def _example_seed(random_value):
    return tf.stack([random_value, tf.constant(0x5EED, tf.int64)])


def _crop_class_labels(example, label, num_classes):
    """Image-level labels: `image/class/label` when the record has it, else the cropped mask."""
    return tf.cond(
        example["has_class_labels"],
        lambda: example["class_labels"],
        lambda: records.multi_hot(label, num_classes),
    )


@gin.configurable
def labelled_dataset(
    spec: SpecLike,
    batch_size: int,
    num_classes: int,
    crop_size: Sequence[int] = (513, 513),
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    scale_step: float = 0.25,
    shuffle_buffer: int = 1000,
    seed: Optional[int] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
    check_ids: bool = True,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """The labelled training stream: DeepLab's weak augmentation of masked examples.

    Args:
      spec: The dataset (e.g. VOC `train_aug` records with a labelled split file).
      batch_size: Global batch size (divided among input pipelines).
      num_classes: Number of classes C including background.
      crop_size: `(height, width)` of the training crop.
      min_scale, max_scale, scale_step: Random scale set (DeepLab's flags).
      shuffle_buffer: Examples in the shuffle buffer (serialized, before decoding).
      seed: Makes the stream deterministic when set.
      input_context: From `distribute_datasets_from_function`.
      check_ids: As in `read_records`.
      skip_batches: Batches to skip at the start (cheaply, before decoding): with `seed` set,
        a stream restarted with `skip_batches=N` continues exactly after its first N batches.

    Returns:
      A repeated dataset of dicts `image`, `label`, `valid`, `class_labels`, `has_mask`,
      `filename` with static batch shapes. A record without a mask fails with its filename.
    """
    @_no_autograph
    def map_fn(serialized, random_value):
        ex = records.parse_example(serialized, num_classes)
        check = tf.debugging.Assert(ex["has_mask"], [tf.strings.format(
            "Record {} of the labelled stream has no segmentation mask", [ex["filename"]])])
        with tf.control_dependencies([check]):
            image = tf.identity(ex["image"])
        view = augment.weak_view(image, ex["label"], _example_seed(random_value), crop_size,
                                 min_scale, max_scale, scale_step)
        return {
            "image": view["image"],
            "label": view["label"],
            "valid": view["valid"],
            "class_labels": _crop_class_labels(ex, view["label"], num_classes),
            "has_mask": ex["has_mask"],
            "filename": ex["filename"],
        }

    return _training_stream(spec, batch_size, num_classes, map_fn, shuffle_buffer, seed,
                            input_context, check_ids, skip_batches)


@gin.configurable
def unlabelled_dataset(
    spec: SpecLike,
    batch_size: int,
    num_classes: int,
    crop_size: Sequence[int] = (513, 513),
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    scale_step: float = 0.25,
    shuffle_buffer: int = 1000,
    seed: Optional[int] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
    check_ids: bool = True,
    skip_batches: int = 0,
    strong_view: Optional[augment.StrongViewConfig] = None,
) -> tf.data.Dataset:
    """The unlabelled / image-labelled training stream: weak and strong views of one crop.

    The strong view's settings are `strong_view`, a `wss.data.augment.StrongViewConfig`
    (gin: `StrongViewConfig.cutout_size = 8`, ...). `class_labels` come from
    `image/class/label` when a record has it, else from the cropped mask (as the reference),
    else are all 0. `label` is the weak view's mask (all 255 for records without one;
    `has_mask` tells).

    Args: as `labelled_dataset`, and
      strong_view: The strong view's settings; None builds a `StrongViewConfig()` (so its gin
        bindings apply).

    Returns:
      A repeated dataset of dicts `image`, `label`, `valid`, `strong`, `strong_valid`,
      `class_labels`, `has_mask`, `filename`, and `mix_mask` (the strong view's CutMix box)
      when `strong_view.cutmix_area` is > 0.
    """
    if strong_view is None:
        strong_view = augment.StrongViewConfig()
    if not isinstance(strong_view, augment.StrongViewConfig):
        raise TypeError(f"unlabelled_dataset.strong_view={strong_view!r}: expected a "
                        f"StrongViewConfig")

    @_no_autograph
    def map_fn(serialized, random_value):
        ex = records.parse_example(serialized, num_classes)
        seed_weak, seed_strong = tf.unstack(
            tf.random.experimental.stateless_split(_example_seed(random_value), 2))
        view = augment.weak_view(ex["image"], ex["label"], seed_weak, crop_size,
                                 min_scale, max_scale, scale_step)
        strong = augment.strong_view(view["image"], view["valid"], seed_strong, strong_view)
        element = {
            "image": view["image"],
            "label": view["label"],
            "valid": view["valid"],
            "strong": strong["strong"],
            "strong_valid": strong["strong_valid"],
            "class_labels": _crop_class_labels(ex, view["label"], num_classes),
            "has_mask": ex["has_mask"],
            "filename": ex["filename"],
        }
        if "mix_mask" in strong:  # StrongViewConfig.cutmix_area > 0.
            element["mix_mask"] = strong["mix_mask"]
        return element

    return _training_stream(spec, batch_size, num_classes, map_fn, shuffle_buffer, seed,
                            input_context, check_ids, skip_batches)


@gin.configurable
def classification_dataset(
    spec: SpecLike,
    batch_size: int,
    num_classes: int,
    crop_size: Sequence[int] = (224, 224),
    min_scale: float = 0.75,
    max_scale: float = 1.25,
    scale_step: float = 0.25,
    jitter_strength: float = 0.0,
    shuffle_buffer: int = 4000,
    seed: Optional[int] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
    check_ids: bool = True,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """The pretraining stream: augmented images with their image-level labels.

    Reads the project's schema (`image/class/label`, one or several ids per image) and
    ImageNet-style records (one `image/class/label` per image; TF-slim's 1001-class labelling
    with 0 unused maps to `num_classes=1001`). Augmentation: DeepLab's random scale, pad, crop
    and flip (`weak_view`), then colour jitter of the reference's amounts times
    `jitter_strength` (0 disables it).

    Args:
      spec: The records (and optional split file).
      batch_size: Global batch size (divided among input pipelines).
      num_classes: Number of ids including the unused 0: labels are ids 1..C-1.
      crop_size: `(height, width)` of the crop.
      min_scale, max_scale, scale_step: Random scale set.
      jitter_strength: Colour jitter strength (brightness 0.5, contrast 0.5, saturation 0.5,
        hue 0.25 at strength 1).
      shuffle_buffer: Examples in the shuffle buffer.
      seed: Makes the stream deterministic when set.
      input_context: From `distribute_datasets_from_function`.
      check_ids: As in `read_records`.
      skip_batches: Batches to skip at the start (resume of a seeded stream).

    Returns:
      A repeated dataset of dicts `image` float32 `[B, h, w, 3]`, `valid` `[B, h, w]`,
      `class_labels` float32 `[B, C - 1]` (multi-hot), `filename`.
    """
    @_no_autograph
    def map_fn(serialized, random_value):
        ex = records.parse_example(serialized, num_classes)
        seed_view, seed_jitter = tf.unstack(
            tf.random.experimental.stateless_split(_example_seed(random_value), 2))
        dummy = tf.zeros(tf.shape(ex["image"])[:2], tf.int32)
        view = augment.weak_view(ex["image"], dummy, seed_view, crop_size, min_scale,
                                 max_scale, scale_step)
        image = view["image"]
        if jitter_strength > 0:
            image = augment.color_jitter(
                image, seed_jitter, valid=view["valid"], brightness=0.5 * jitter_strength,
                contrast=0.5 * jitter_strength, saturation=0.5 * jitter_strength,
                hue=0.25 * jitter_strength, max_value=255.0)
            image = tf.where(view["valid"][:, :, None] > 0, image, augment.MEAN_PIXEL)
        return {"image": image, "valid": view["valid"], "class_labels": ex["class_labels"],
                "filename": ex["filename"]}

    return _training_stream(spec, batch_size, num_classes, map_fn, shuffle_buffer, seed,
                            input_context, check_ids, skip_batches)


@gin.configurable
def eval_dataset(
    spec: SpecLike,
    num_classes: int,
    batch_size: int = 1,
    crop_size: Optional[Sequence[int]] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
    check_ids: bool = True,
    mean_pixel: float = augment.MEAN_PIXEL,
) -> tf.data.Dataset:
    """The evaluation stream: every example once, in file order, without augmentation.

    Without `crop_size`, images keep their own size; batches of more than one image are padded
    to the largest in the batch. With `crop_size` (DeepLab's eval crop, e.g. 513 x 513) every
    image is padded to it; an image larger than the crop fails with its filename. Padding is
    the mean pixel, label 255, `valid` 0.

    Args:
      spec: The dataset (e.g. VOC `val` records).
      num_classes: Number of classes including background.
      batch_size: Global batch size.
      crop_size: Optional `(height, width)` to pad to.
      input_context: Shards the examples among input pipelines.
      check_ids: As in `read_records`.
      mean_pixel: Image padding value.

    Returns:
      A finite dataset of dicts `image`, `label`, `valid`, `class_labels`, `has_mask`,
      `filename`.
    """
    @_no_autograph
    def map_fn(serialized):
        ex = records.parse_example(serialized, num_classes)
        image = tf.cast(ex["image"], tf.float32)
        label = ex["label"]
        valid = tf.ones(tf.shape(label), tf.float32)
        if crop_size is not None:
            height, width = int(crop_size[0]), int(crop_size[1])
            shape = tf.shape(label)
            check = tf.debugging.Assert(
                tf.logical_and(shape[0] <= height, shape[1] <= width),
                [tf.strings.format("Record {}: image size {} exceeds the eval crop size "
                                   f"[{height}, {width}]", [ex["filename"], shape])])
            with tf.control_dependencies([check]):
                image, label, valid = augment.pad_to_size(image, label, height, width,
                                                          mean_pixel)
            image.set_shape([height, width, 3])
            label.set_shape([height, width])
            valid.set_shape([height, width])
        return {
            "image": image,
            "label": label,
            "valid": valid,
            "class_labels": ex["class_labels"],
            "has_mask": ex["has_mask"],
            "filename": ex["filename"],
        }

    ds = read_records(spec, input_context, shuffle_files=False, check_ids=check_ids)
    ds = ds.map(map_fn, num_parallel_calls=AUTOTUNE, deterministic=True)
    per_replica = _per_replica(batch_size, input_context)
    if crop_size is not None or per_replica == 1:
        ds = ds.batch(per_replica)
    else:
        ds = ds.padded_batch(per_replica, padding_values={
            "image": tf.constant(mean_pixel, tf.float32),
            "label": tf.constant(records.IGNORE_LABEL, tf.int32),
            "valid": tf.constant(0.0, tf.float32),
            "class_labels": tf.constant(0.0, tf.float32),
            "has_mask": tf.constant(False),
            "filename": tf.constant(""),
        })
    return ds.prefetch(AUTOTUNE).with_options(_options(True))


def make_distributed(strategy: tf.distribute.Strategy, dataset_fn: Callable, **kwargs):
    """One dataset per replica: `strategy.distribute_datasets_from_function`.

    A strategy whose only replica is the local CPU (the CPU demo, the tests) gets that
    replica's dataset itself, built with the same input context: `strategy.run` takes its
    batches as they are; distributing it would add a multi-device iterator with nothing to
    prefetch onto. Its tf.data autotuning is off: destroying an iterator at the end of a run
    waits for the autotuning thread's next wake-up, up to a minute per stream (TF 2.21,
    at random: 91 s for one two-stream run of the default quality grid, 0-1 s for others),
    while two PseudoSeg runs on 2 cores trained as fast without it (25.0 against 25.2 images
    per second). Parallel maps then use TensorFlow's default parallelism (the cores).

    Args:
      strategy: The distribution strategy.
      dataset_fn: A stream function taking `input_context=` (e.g. `labelled_dataset`, or a
        `functools.partial` of it, or a gin-configured one).
      **kwargs: Passed to `dataset_fn`.

    Returns:
      A `tf.distribute.DistributedDataset`, or a `tf.data.Dataset` for a local CPU replica.
    """
    if _single_local_cpu_replica(strategy):
        dataset = dataset_fn(input_context=tf.distribute.InputContext(), **kwargs)
        return dataset.with_options(_without_autotuning())
    return strategy.distribute_datasets_from_function(
        lambda input_context: dataset_fn(input_context=input_context, **kwargs))


def _without_autotuning() -> tf.data.Options:
    """Options that turn tf.data's autotuning (and its model thread) off."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _single_local_cpu_replica(strategy):
    """Whether `strategy` runs one replica, on this host's CPU, outside any cluster."""
    if strategy.num_replicas_in_sync != 1:
        return False
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.cluster_spec().as_dict():
        return False
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # The default strategy has no device list.
        return False
    return len(devices) == 1 and tf.DeviceSpec.from_string(devices[0]).device_type == "CPU"


class CheckedIterator:
    """An iterator that turns tf.data's anonymous read errors into `RecordError`s.

    On an error from the input pipeline, the record files of `specs` are re-read one by one
    (`records.scan_records`) and the first unreadable record is reported with its file name
    and index; if none is found the original error is re-raised.
    """

    def __init__(self, dataset, specs: Sequence[SpecLike], num_classes: Optional[int] = None):
        self._iterator = iter(dataset)
        self._specs = [as_spec(s) for s in specs]
        self._num_classes = num_classes

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._iterator)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            for spec in self._specs:
                if is_source(spec):  # Not record files: nothing to scan.
                    continue
                try:
                    records.scan_records(spec.file_pattern, self._num_classes)
                except records.RecordError as located:
                    raise located from error
            raise

    def get_next(self):
        """Same as `next(self)`."""
        return next(self)

    @property
    def element_spec(self):
        return self._iterator.element_spec


def checked_iterator(dataset, specs: Sequence[SpecLike],
                     num_classes: Optional[int] = None) -> CheckedIterator:
    """Wraps `iter(dataset)` (plain or distributed) as a `CheckedIterator`."""
    return CheckedIterator(dataset, specs, num_classes)


__all__ = [
    "CheckedIterator", "DatasetSpec", "as_spec", "checked_iterator", "classification_dataset",
    "dataset_spec", "eval_dataset", "is_source", "labelled_dataset", "make_distributed",
    "make_spec", "read_records", "record_ids", "unlabelled_dataset",
]


def batch_keys(stream: str) -> Tuple[str, ...]:
    """The keys of the batches of a stream (`labelled`, `unlabelled` or `eval`)."""
    base = ("image", "label", "valid", "class_labels", "has_mask", "filename")
    return base + ("strong", "strong_valid") if stream == "unlabelled" else base



def describe_spec(spec: SpecLike) -> str:
    """`records PATTERN[, split FILE][, excluding FILE]`, for error messages."""
    spec = as_spec(spec)
    text = spec.describe() if is_source(spec) else f"records {spec.file_pattern}"
    if spec.split_file:
        text += f", split {spec.split_file}"
    if spec.exclude_file:
        text += f", excluding {spec.exclude_file}"
    return text


def check_stream_not_empty(name: str, spec: SpecLike, num_classes: Optional[int] = None):
    """Fails naming the stream and its records / split when it would yield nothing.

    Reads until the first record that the split files keep (one record, usually).

    Raises:
      ValueError: the stream has no record.
      RecordError: a record file is corrupt (named).
    """
    spec = as_spec(spec)
    try:
        for _ in read_records(spec, check_ids=False).take(1):
            return
    except tf.errors.OpError as error:
        locate_input_error({name: (spec, num_classes)}, error)
        raise
    raise ValueError(f"the {name} stream is empty: no record of {describe_spec(spec)}")


def locate_input_error(specs, error):
    """Turns an anonymous error of the training streams into one that names the culprit.

    Args:
      specs: stream name -> (`DatasetSpec`, num_classes or None).
      error: the `tf.errors.OpError` that a step raised.

    Raises:
      RecordError: naming the stream, file and record index of the first unreadable record
        (the files are re-read one by one, decoding and checking every record).
      ValueError: for `OutOfRangeError`: naming the streams and how many records each has.
      Nothing is raised when no culprit is found: the caller re-raises `error`.
    """
    if isinstance(error, tf.errors.OutOfRangeError):
        counts = []
        for name, (spec, _) in specs.items():
            count = sum(1 for _ in read_records(spec, check_ids=False))
            counts.append(f"{name} ({describe_spec(spec)}): {count} record(s)")
        raise ValueError("a training stream ran out of records; every input pipeline needs at "
                         f"least one: {'; '.join(counts)}") from error
    for name, (spec, num_classes) in specs.items():
        if is_source(spec):  # Not record files: nothing to re-read.
            continue
        try:
            records.scan_records(as_spec(spec).file_pattern, num_classes)
        except records.RecordError as located:
            raise records.RecordError(f"{name} stream: {located}") from error
