"""TensorFlow Datasets as a labelled, unlabelled or evaluation stream (optional extra).

Any TFDS dataset with an image feature (and, for labelled and evaluation streams, a
segmentation-mask feature) can stand where a TFRecord pattern stands: `tfds_dataset(...)`
returns a `TFDSSource`, which `wss.data.pipeline.read_records` reads instead of record files.
Each TFDS example is turned, inside the tf.data graph, into a serialized `tf.train.Example` of
the project's schema (`wss.data.records`): the image and the mask re-encoded as PNG, the id as
`image/filename`. Everything downstream (split files, checks, augmentation, batch keys) is
then the same as for records on disk. Gin, e.g. the Oxford-IIIT Pet masks (1 pet, 2
background, 3 border):

    train.labelled_pattern = @labelled/tfds_dataset()
    labelled/tfds_dataset.name = 'oxford_iiit_pet'
    labelled/tfds_dataset.split = 'train'
    labelled/tfds_dataset.label_map = {1: 1, 2: 0, 3: 255}

Masks: a `[H, W]` or `[H, W, 1]` integer feature. `label_map` maps its values to class ids
(255 = ignore); a value missing from it fails with the example's id, unless `unmapped_label`
gives its class. Without `label_map` the values are the class ids. Images: uint8 with 1, 3 or
4 channels (grey and RGBA become RGB when decoded). Ids: `id_key` (e.g. `file_name`), else
TFDS's own `tfds_id` (`NAME-SPLIT.tfrecord-00000-of-00004__12`); split files list these ids.

Nothing is downloaded unless `download=True`: a dataset that is not prepared in `data_dir`
fails with an error that says how to prepare it (`tfds build NAME`). Requires the `tfds`
extra (`pip install -e ".[tfds]"`); this module imports TFDS only when a source is read.
"""

import dataclasses
import functools
from typing import Dict, Mapping, Optional, Tuple

import gin
import tensorflow as tf

from wss.data import records

_no_autograph = tf.autograph.experimental.do_not_convert


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            "tfds_dataset needs TensorFlow Datasets: pip install -e \".[tfds]\" "
            "(or pip install tensorflow-datasets)") from None
    return tfds


@dataclasses.dataclass(frozen=True)
class TFDSSource:
    """A TFDS split read as serialized examples of the project's schema.

    Attributes:
      name: TFDS dataset name, optionally with config and version (`oxford_iiit_pet:4.*.*`).
      split: TFDS split, slicing included (`train`, `train[:90%]`).
      image_key: the image feature (`/` separates nested features).
      mask_key: the segmentation-mask feature, or None (unlabelled stream).
      id_key: the feature holding the image id, or None for TFDS's `tfds_id`.
      label_map: `((value, class_id), ...)` applied to mask values, or None.
      unmapped_label: class id of mask values missing from `label_map`; None makes them an
        error.
      data_dir: TFDS data directory (None: TFDS's default, `~/tensorflow_datasets`).
      download: download and prepare the dataset if needed (off: never downloads).
      split_file: optional split file of ids to keep (each must exist).
      exclude_file: optional split file of ids to leave out.
    """

    name: str
    split: str = "train"
    image_key: str = "image"
    mask_key: Optional[str] = "segmentation_mask"
    id_key: Optional[str] = None
    label_map: Optional[Tuple[Tuple[int, int], ...]] = None
    unmapped_label: Optional[int] = None
    data_dir: Optional[str] = None
    download: bool = False
    split_file: Optional[str] = None
    exclude_file: Optional[str] = None

    def with_splits(self, split_file=None, exclude_file=None) -> "TFDSSource":
        """The same source restricted by split files (as `DatasetSpec`'s fields)."""
        return dataclasses.replace(self, split_file=split_file, exclude_file=exclude_file)

    def describe(self) -> str:
        """`tfds:NAME[SPLIT]` for logs and errors."""
        return f"tfds:{self.name}[{self.split}]"

    def builder(self):
        """The TFDS builder, with the feature keys checked against its features."""
        tfds = _import_tfds()
        try:
            builder = tfds.builder(self.name, data_dir=self.data_dir)
        except Exception as e:  # noqa: BLE001 - TFDS raises various types for unknown names
            raise ValueError(f"tfds_dataset.name={self.name!r}: {e}") from None
        features = builder.info.features
        for binding, key in (("image_key", self.image_key), ("mask_key", self.mask_key),
                             ("id_key", self.id_key)):
            if key is not None and _feature(features, key) is None:
                raise ValueError(
                    f"tfds_dataset.{binding}={key!r}: {self.describe()} has no such feature; "
                    f"its features are {sorted(features.keys())}")
        return builder

    def tfds_dataset(self, shuffle_files=False, seed=None, deterministic=True):
        """The TFDS split as a dataset of TFDS example dicts (not converted)."""
        tfds = _import_tfds()
        builder = self.builder()
        if self.download:
            builder.download_and_prepare()
        options = tf.data.Options()
        options.deterministic = deterministic
        read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=self.id_key is None,
                                      options=options)
        try:
            return builder.as_dataset(split=self.split, shuffle_files=shuffle_files,
                                      read_config=read_config)
        except AssertionError as e:  # TFDS's "could not find data in DATA_DIR"
            raise FileNotFoundError(
                f"{self.describe()} is not prepared ({e}). Prepare it once with `tfds build "
                f"{self.name}` (add --data_dir=DIR when tfds_dataset.data_dir is set), or bind "
                "tfds_dataset.download = True") from None

    def serialized(self, shuffle_files=False, seed=None, deterministic=True):
        """Every example of the split as a serialized `tf.train.Example` (no split files)."""
        convert = _converter(self.image_key, self.mask_key, self.id_key, self.label_map,
                             self.unmapped_label, self.describe())
        ds = self.tfds_dataset(shuffle_files, seed, deterministic)
        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=deterministic)

    def read_serialized(self, input_context=None, shuffle_files=False, seed=None,
                        check_ids=True, deterministic=True) -> tf.data.Dataset:
        """What `wss.data.pipeline.read_records` returns for this source.

        Split files select and exclude ids as for record files; every input pipeline reads the
        whole split and keeps its share of the examples.
        """
        from wss.data import pipeline, splits

        keep = drop = None
        if self.split_file:
            keep = splits.read_split_file(self.split_file)
            if check_ids:
                splits.check_ids_present(keep, self.ids(), self.split_file, self.describe())
        if self.exclude_file:
            drop = splits.read_split_file(self.exclude_file)
        ds = self.serialized(shuffle_files, seed, deterministic)
        if keep is not None:
            ds = ds.filter(pipeline._id_filter(keep, keep=True))
        if drop is not None:
            ds = ds.filter(pipeline._id_filter(drop, keep=False))
        if input_context is not None and input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        return ds

    def ids(self) -> frozenset:
        """The ids of every example of the split (reads the split once; cached)."""
        return _source_ids(dataclasses.replace(self, split_file=None, exclude_file=None))


@functools.lru_cache(maxsize=16)
def _source_ids(source: TFDSSource) -> frozenset:
    ds = source.tfds_dataset()
    id_key = source.id_key or "tfds_id"
    ds = ds.map(_no_autograph(lambda ex: records.image_id_tf(_id_string(_get(ex, id_key)))))
    return frozenset(x.decode("utf-8") for batch in ds.batch(4096).as_numpy_iterator()
                     for x in batch)


def _feature(features, key):
    node = features
    for part in key.split("/"):
        try:
            node = node[part]
        except (KeyError, TypeError):
            return None
    return node


def _get(example: Dict, key: str):
    node = example
    for part in key.split("/"):
        node = node[part]
    return node


def _id_string(value):
    return value if value.dtype == tf.string else tf.strings.as_string(value)


def _lookup(label_map, unmapped_label):
    """A function mapping int64 mask values through `label_map` (-1 for unmapped values)."""
    keys = tf.constant([int(k) for k, _ in label_map], tf.int64)
    values = tf.constant([int(v) for _, v in label_map], tf.int64)
    default = -1 if unmapped_label is None else int(unmapped_label)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values),
                                      default_value=default)
    return table.lookup


# ------------------------------------------------------------------ tf.train.Example in-graph


def _feature_proto(field: str, message: str, values: tf.Tensor) -> tf.Tensor:
    """A serialized `tensorflow.Feature` holding `values` (a 1-D tensor) in `field`."""
    values = tf.reshape(values, [1, -1])
    inner = tf.io.encode_proto(tf.shape(values, out_type=tf.int32)[None, 1:], [values],
                               ["value"], message)
    return tf.io.encode_proto([[1]], [inner[:, None]], [field], "tensorflow.Feature")[0]


def _bytes(value: tf.Tensor) -> tf.Tensor:
    return _feature_proto("bytes_list", "tensorflow.BytesList", tf.reshape(value, [1]))


def _int64(value: tf.Tensor) -> tf.Tensor:
    return _feature_proto("int64_list", "tensorflow.Int64List",
                          tf.reshape(tf.cast(value, tf.int64), [-1]))


def serialize_example(features: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """Serializes `{key: serialized tensorflow.Feature}` as a `tf.train.Example`, in-graph."""
    keys = sorted(features)
    entries = tf.io.encode_proto(
        tf.ones([len(keys), 2], tf.int32),
        [tf.constant(keys)[:, None], tf.stack([features[k] for k in keys])[:, None]],
        ["key", "value"], "tensorflow.Features.FeatureEntry")
    feature_map = tf.io.encode_proto([[len(keys)]], [entries[None]], ["feature"],
                                     "tensorflow.Features")
    return tf.io.encode_proto([[1]], [feature_map[:, None]], ["features"],
                              "tensorflow.Example")[0]


def _converter(image_key, mask_key, id_key, label_map, unmapped_label, where):
    """The map function TFDS example -> serialized example of `wss.data.records`' schema."""
    lookup = _lookup(label_map, unmapped_label) if label_map else None

    @_no_autograph
    def convert(example):
        filename = _id_string(_get(example, id_key or "tfds_id"))
        image = _get(example, image_key)
        if image.dtype != tf.uint8:
            raise ValueError(f"tfds_dataset.image_key={image_key!r} of {where}: expected uint8 "
                             f"images, got {image.dtype.name}")
        if image.shape.rank == 2:
            image = image[:, :, None]
        features = {
            records.IMAGE_ENCODED: _bytes(tf.io.encode_png(image, compression=1)),
            records.IMAGE_FILENAME: _bytes(filename),
            records.IMAGE_FORMAT: _bytes(tf.constant("png")),
            records.IMAGE_HEIGHT: _int64(tf.shape(image)[0]),
            records.IMAGE_WIDTH: _int64(tf.shape(image)[1]),
            records.IMAGE_CHANNELS: _int64(tf.constant(3)),
        }
        if mask_key is not None:
            mask = _get(example, mask_key)
            if not mask.dtype.is_integer:
                raise ValueError(f"tfds_dataset.mask_key={mask_key!r} of {where}: expected an "
                                 f"integer mask, got {mask.dtype.name}")
            if mask.shape.rank == 3:
                mask = mask[:, :, 0]
            values = tf.cast(mask, tf.int64)
            if lookup is not None:
                mapped = lookup(values)
                unmapped = tf.boolean_mask(values, mapped < 0)
                check = tf.debugging.Assert(tf.equal(tf.size(unmapped), 0), [tf.strings.format(
                    "Example {} of " + where + ": mask values {} are not in "
                    "tfds_dataset.label_map (bind tfds_dataset.unmapped_label to map them)",
                    [filename, tf.unique(unmapped)[0]], summarize=10)])
                with tf.control_dependencies([check]):
                    values = tf.identity(mapped)
            bad = tf.boolean_mask(values, tf.logical_or(values < 0, values > 255))
            check = tf.debugging.Assert(tf.equal(tf.size(bad), 0), [tf.strings.format(
                "Example {} of " + where + ": mask values {} outside 0..255 (bind "
                "tfds_dataset.label_map)", [filename, tf.unique(bad)[0]], summarize=10)])
            with tf.control_dependencies([check]):
                encoded = tf.io.encode_png(tf.cast(values, tf.uint8)[:, :, None], compression=1)
            features[records.MASK_ENCODED] = _bytes(encoded)
            features[records.MASK_FORMAT] = _bytes(tf.constant("png"))
        return serialize_example(features)

    return convert


@gin.configurable
def tfds_dataset(name, split="train", image_key="image", mask_key="segmentation_mask",
                 id_key=None, label_map=None, unmapped_label=None, data_dir=None,
                 download=False) -> TFDSSource:
    """A TFDS split as a stream source (gin: `train.labelled_pattern = @labelled/tfds_dataset()`).

    Args:
      name: TFDS dataset name (`oxford_iiit_pet`, `NAME/CONFIG:VERSION`).
      split: TFDS split (slicing allowed: `train[:90%]`).
      image_key: the image feature.
      mask_key: the segmentation-mask feature; None for an unlabelled stream without masks.
      id_key: the feature used as image id; None for TFDS's `tfds_id`.
      label_map: dict (or pairs) mask value -> class id (255 = ignore).
      unmapped_label: class id of values missing from `label_map` (None: an error).
      data_dir: TFDS data directory.
      download: let TFDS download and prepare the dataset (off by default: nothing is ever
        downloaded at run time unless asked).

    Returns:
      A `TFDSSource` (usable wherever a TFRecord pattern is: `train.labelled_pattern`,
      `train.unlabelled_pattern`, `evaluate_checkpoint.pattern`).
    """
    if label_map is not None:
        items = label_map.items() if isinstance(label_map, Mapping) else label_map
        label_map = tuple(sorted((int(k), int(v)) for k, v in items))
        bad = [v for _, v in label_map if not 0 <= v <= 255]
        if bad:
            raise ValueError(f"tfds_dataset.label_map maps to {bad}, outside 0..255")
    return TFDSSource(name=name, split=split, image_key=image_key, mask_key=mask_key,
                      id_key=id_key, label_map=label_map, unmapped_label=unmapped_label,
                      data_dir=data_dir, download=download)


__all__ = ["TFDSSource", "serialize_example", "tfds_dataset"]
