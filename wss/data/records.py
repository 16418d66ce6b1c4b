"""The TFRecord schema of `wss`: one writer and one reader for every dataset.

Records use DeepLab's `tf.train.Example` keys (research/deeplab/datasets/build_data.py), so
records built by DeepLab's converters and the pre-built PseudoSeg records are read as they are:

| key | type | meaning |
| --- | --- | --- |
| `image/encoded` | bytes | JPEG or PNG bytes of the RGB image |
| `image/filename` | bytes | the image id (DeepLab stores it without directory or extension) |
| `image/format` | bytes | `jpeg` or `png` |
| `image/height`, `image/width` | int64 | image size |
| `image/channels` | int64 | 3 |
| `image/segmentation/class/encoded` | bytes | grey PNG of class ids, 255 = ignore; optional |
| `image/segmentation/class/format` | bytes | `png`; optional |
| `image/class/label` | int64 list | foreground class ids present (image-level labels); optional |

An unlabelled example has no mask; an image-labelled example has `image/class/label` and no
mask. The reader decodes images by content (JPEG or PNG, like the reference), whatever
`image/format` says.

Errors: every check made while reading names the record's `image/filename`. A record file
that is truncated or corrupt makes `tf.data` raise `DataLossError` without the file's name;
`scan_records` (and `wss.data.pipeline.checked_iterator`, which calls it on failure) reads the
files one by one and raises `RecordError` naming the file and the record index.
"""

import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

IGNORE_LABEL = 255

IMAGE_ENCODED = "image/encoded"
IMAGE_FILENAME = "image/filename"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
MASK_ENCODED = "image/segmentation/class/encoded"
MASK_FORMAT = "image/segmentation/class/format"
CLASS_LABEL = "image/class/label"

_FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png"}
_ID_EXTENSIONS = re.compile(r"\.(jpe?g|png)$", re.IGNORECASE)


class RecordError(ValueError):
    """A record or record file that cannot be read; the message names the file or image."""


def image_id(filename: Union[str, bytes]) -> str:
    """Returns the id of an image: its file name without directory and image extension.

    Args:
      filename: A path or `image/filename` value, e.g. `JPEGImages/2007_000032.jpg`.

    Returns:
      The id, e.g. `2007_000032`.
    """
    if isinstance(filename, bytes):
        filename = filename.decode("utf-8")
    return _ID_EXTENSIONS.sub("", os.path.basename(filename))


def image_id_tf(filename: tf.Tensor) -> tf.Tensor:
    """The TensorFlow counterpart of `image_id` for a string tensor."""
    name = tf.strings.regex_replace(filename, r"^.*/", "")
    return tf.strings.regex_replace(name, r"(?i)\.(jpe?g|png)$", "")


def list_files(file_pattern: Union[str, Sequence[str]]) -> List[str]:
    """Expands one or more glob patterns (comma-separated or a list) into sorted file names.

    Args:
      file_pattern: A glob pattern, a comma-separated list of them, or a list of them.

    Returns:
      The sorted matching file names.

    Raises:
      FileNotFoundError: A pattern matches no file.
    """
    patterns = file_pattern.split(",") if isinstance(file_pattern, str) else list(file_pattern)
    files = []
    for pattern in patterns:
        pattern = pattern.strip()
        matched = sorted(tf.io.gfile.glob(pattern)) if pattern else []
        if not matched:
            raise FileNotFoundError(f"No TFRecord file matches {pattern!r}")
        files.extend(matched)
    return files


# ----------------------------------------------------------------------------- writing


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(values) -> tf.train.Feature:
    if np.isscalar(values):
        values = [values]
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _image_size(image_bytes: bytes, filename: str):
    try:
        shape = tf.io.extract_jpeg_shape(image_bytes) if _is_jpeg(image_bytes) else None
        if shape is None:
            shape = tf.shape(tf.io.decode_image(image_bytes, expand_animations=False))
    except tf.errors.OpError as e:
        raise RecordError(f"{filename}: cannot decode the image: {e.message}") from None
    return int(shape[0]), int(shape[1])


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def encode_image(image: np.ndarray, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """Encodes a uint8 `[H, W, 3]` array as JPEG or PNG bytes."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    if _FORMATS[image_format] == "jpeg":
        return tf.io.encode_jpeg(image, quality=quality).numpy()
    return tf.io.encode_png(image).numpy()


def encode_mask(mask: np.ndarray) -> bytes:
    """Encodes an integer `[H, W]` mask of class ids (255 = ignore) as a grey PNG."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"Expected a [H, W] mask, got shape {mask.shape}")
    if mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise ValueError("Mask values must lie in 0..255")
    return tf.io.encode_png(mask.astype(np.uint8)[..., None]).numpy()


def validate_mask(mask: np.ndarray, num_classes: int, filename: str) -> None:
    """Checks that a mask holds only class ids `0..num_classes-1` and 255.

    Raises:
      RecordError: naming `filename` and the unknown values.
    """
    values = np.unique(np.asarray(mask))
    bad = values[(values >= num_classes) & (values != IGNORE_LABEL)]
    bad = np.concatenate([bad, values[values < 0]])
    if bad.size:
        raise RecordError(
            f"{filename}: mask holds class ids {bad.tolist()} outside 0..{num_classes - 1} "
            f"and {IGNORE_LABEL}"
        )


def _encoded_image(image: Union[bytes, np.ndarray], filename: str,
                   image_format: Optional[str]):
    """The encoded bytes, format and size of an image given as bytes or as an array.

    Returns:
      (image bytes, `jpeg` or `png`, height, width).

    Raises:
      RecordError: undecodable bytes or an array that is not uint8 `[H, W, 3]` (or `[H, W]`).
    """
    if isinstance(image, (bytes, bytearray)):
        image_bytes = bytes(image)
        detected = "jpeg" if _is_jpeg(image_bytes) else "png"
        image_format = detected if image_format is None else _FORMATS[image_format]
        height, width = _image_size(image_bytes, filename)
        return image_bytes, image_format, height, width
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise RecordError(f"{filename}: expected a uint8 [H, W, 3] image, got "
                          f"{image.dtype} {image.shape}")
    image_format = _FORMATS[image_format or "jpeg"]
    height, width = image.shape[:2]
    return encode_image(image, image_format), image_format, height, width


def _mask_bytes(mask: Union[bytes, np.ndarray], height: int, width: int, filename: str,
                num_classes: Optional[int]) -> bytes:
    """The PNG bytes of a mask given as PNG bytes (kept as they are) or as an array.

    Raises:
      RecordError: an undecodable mask, a size other than the image's, or (with
        `num_classes`) values that are not classes.
    """
    if isinstance(mask, (bytes, bytearray)):
        mask_bytes = bytes(mask)
        try:
            mask_array = tf.io.decode_png(mask_bytes, channels=1).numpy()[..., 0]
        except tf.errors.OpError as e:
            raise RecordError(f"{filename}: cannot decode the mask: {e.message}") from None
    else:
        mask_array = np.asarray(mask)
        if mask_array.ndim == 3 and mask_array.shape[2] == 1:
            mask_array = mask_array[..., 0]
        mask_bytes = None
    if mask_array.shape != (height, width):
        raise RecordError(
            f"{filename}: image is {height}x{width} but its mask is "
            f"{mask_array.shape[0]}x{mask_array.shape[1] if mask_array.ndim > 1 else '?'}"
        )
    if num_classes is not None:
        validate_mask(mask_array, num_classes, filename)
    if mask_bytes is None:
        mask_bytes = encode_mask(mask_array)
    return mask_bytes


def _sorted_class_labels(class_labels: Iterable[int], filename: str,
                         num_classes: Optional[int]) -> List[int]:
    """The distinct class ids, sorted; with `num_classes`, checked to be `0..C-1`."""
    labels = sorted({int(c) for c in class_labels})
    if num_classes is not None:
        bad = [c for c in labels if c < 0 or c >= num_classes]
        if bad:
            raise RecordError(f"{filename}: class labels {bad} outside 0..{num_classes - 1}")
    return labels


def encode_example(
    image: Union[bytes, np.ndarray],
    filename: str,
    mask: Union[None, bytes, np.ndarray] = None,
    class_labels: Optional[Iterable[int]] = None,
    image_format: Optional[str] = None,
    num_classes: Optional[int] = None,
) -> bytes:
    """Builds one serialized `tf.train.Example` in the schema of this module.

    Args:
      image: Encoded JPEG/PNG bytes (stored as they are) or a uint8 `[H, W, 3]` array
        (encoded with `image_format`).
      filename: The image id stored as `image/filename` (DeepLab stores ids without extension).
      mask: Optional class-id mask: a `[H, W]` integer array or PNG bytes; 255 = ignore.
      class_labels: Optional foreground class ids present in the image (`image/class/label`).
      image_format: `jpeg` or `png`; for arrays defaults to `jpeg`, for bytes it is detected.
      num_classes: If given, mask values and class labels are checked against it.

    Returns:
      The serialized example.

    Raises:
      RecordError: The image cannot be decoded, the mask and image sizes differ, or a class id
        is out of range; the message names `filename`.
    """
    image_bytes, image_format, height, width = _encoded_image(image, filename, image_format)
    feature = {
        IMAGE_ENCODED: _bytes_feature(image_bytes),
        IMAGE_FILENAME: _bytes_feature(filename.encode("utf-8")),
        IMAGE_FORMAT: _bytes_feature(image_format.encode("utf-8")),
        IMAGE_HEIGHT: _int64_feature(height),
        IMAGE_WIDTH: _int64_feature(width),
        IMAGE_CHANNELS: _int64_feature(3),
    }
    if mask is not None:
        feature[MASK_ENCODED] = _bytes_feature(
            _mask_bytes(mask, height, width, filename, num_classes))
        feature[MASK_FORMAT] = _bytes_feature(b"png")
    if class_labels is not None:
        feature[CLASS_LABEL] = _int64_feature(
            _sorted_class_labels(class_labels, filename, num_classes))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Deterministic: the feature map is written in key order, so the same example gives the
    # same bytes in every process (the default order follows a per-process hash table).
    return example.SerializeToString(deterministic=True)


def shard_paths(output_prefix: str, num_shards: int) -> List[str]:
    """Returns DeepLab-style shard names `PREFIX-00000-of-0000N.tfrecord`."""
    return [f"{output_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def write_records(
    examples: Iterable[bytes],
    output_prefix: str,
    num_shards: int = 1,
    progress=None,
) -> int:
    """Writes serialized examples into sharded TFRecord files, atomically.

    Examples go round-robin into `num_shards` files named as `shard_paths`; each file is
    written under a temporary name and renamed only after every example was written, so an
    interrupted run leaves no partial shard behind (and removes its temporary files).

    Args:
      examples: Iterable of serialized `tf.train.Example`s (e.g. from `encode_example`).
      output_prefix: Path prefix, e.g. `OUT/train`; the directory is created.
      num_shards: Number of output files.
      progress: Optional callable `progress(count)` called after every example.

    Returns:
      The number of examples written.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    paths = shard_paths(output_prefix, num_shards)
    directory = os.path.dirname(output_prefix)
    if directory:
        tf.io.gfile.makedirs(directory)
    temps = [os.path.join(os.path.dirname(p), "." + os.path.basename(p) + ".tmp") for p in paths]
    writers = [tf.io.TFRecordWriter(t) for t in temps]
    count = 0
    try:
        for serialized in examples:
            writers[count % num_shards].write(serialized)
            count += 1
            if progress is not None:
                progress(count)
        for w in writers:
            w.close()
        for temp, path in zip(temps, paths):
            tf.io.gfile.rename(temp, path, overwrite=True)
    except BaseException:
        for w in writers:
            w.close()
        for temp in temps:
            if tf.io.gfile.exists(temp):
                tf.io.gfile.remove(temp)
        raise
    return count


# ----------------------------------------------------------------------------- reading

_FEATURES = {
    IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
    IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
    IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    MASK_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
    CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
}


def _decode_checked(content: tf.Tensor, channels: int, what: str, filename: tf.Tensor):
    """Decodes JPEG or PNG bytes after checking the signature, naming `filename` on error."""
    is_jpeg = tf.strings.substr(content, 0, 3) == b"\xff\xd8\xff"
    is_png = tf.strings.substr(content, 0, 8) == b"\x89PNG\r\n\x1a\n"
    check = tf.debugging.Assert(
        tf.logical_or(is_jpeg, is_png),
        [tf.strings.format(f"Record {{}}: {what} is neither JPEG nor PNG (empty or corrupt)",
                           [filename])],
    )
    with tf.control_dependencies([check]):
        decoded = tf.cond(
            is_jpeg,
            lambda: tf.io.decode_jpeg(content, channels=channels),
            lambda: tf.io.decode_png(content, channels=channels),
        )
    decoded.set_shape([None, None, channels])
    return decoded


def multi_hot(class_ids: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Multi-hot float32 `[C - 1]` of foreground ids (class c -> index c - 1).

    Works on id lists and on whole masks alike (a histogram, cheap for large masks).
    Background (0), the ignore label and ids outside `1..C-1` are dropped.
    """
    ids = tf.reshape(tf.cast(class_ids, tf.int32), [-1])
    ids = tf.where(tf.logical_and(ids >= 0, ids < num_classes), ids, num_classes)
    hist = tf.math.bincount(ids, minlength=num_classes + 1, maxlength=num_classes + 1)
    hot = tf.cast(hist[1:num_classes] > 0, tf.float32)
    hot.set_shape([num_classes - 1])
    return hot


def _decode_label(mask_bytes: tf.Tensor, has_mask: tf.Tensor, shape: tf.Tensor,
                  filename: tf.Tensor) -> tf.Tensor:
    """The int32 `[H, W]` mask of an example; without one, `IGNORE_LABEL` everywhere."""

    def decode_mask():
        m = _decode_checked(mask_bytes, 1, "mask", filename)
        return tf.cast(m[:, :, 0], tf.int32)

    return tf.cond(
        has_mask, decode_mask, lambda: tf.fill(shape, tf.constant(IGNORE_LABEL, tf.int32))
    )


def _record_checks(parsed: Dict, filename: tf.Tensor, shape: tf.Tensor, label: tf.Tensor,
                   class_ids: tf.Tensor, num_classes: int) -> List[tf.Operation]:
    """Assertions, each naming the record: mask size and values, class ids, stored size."""
    checks = []
    mask_shape = tf.shape(label)
    checks.append(tf.debugging.Assert(
        tf.reduce_all(tf.equal(mask_shape, shape)),
        [tf.strings.format("Record {}: image size {} but mask size {}",
                           [filename, shape, mask_shape])],
    ))
    # Mask values are uint8 (0..255): a histogram finds the bad ones cheaply.
    hist = tf.math.bincount(tf.reshape(label, [-1]), minlength=256, maxlength=256)
    bad_values = tf.where(hist[num_classes:IGNORE_LABEL] > 0)[:, 0] + num_classes
    checks.append(tf.debugging.Assert(
        tf.equal(tf.size(bad_values), 0),
        [tf.strings.format(
            f"Record {{}}: mask values {{}} outside 0..{num_classes - 1} and 255",
            [filename, bad_values], summarize=20)],
    ))
    checks.append(tf.debugging.Assert(
        tf.reduce_all(tf.logical_and(class_ids >= 0, class_ids < num_classes)),
        [tf.strings.format(
            f"Record {{}}: image/class/label ids {{}} outside 0..{num_classes - 1}",
            [filename, class_ids], summarize=20)],
    ))
    height, width = parsed[IMAGE_HEIGHT], parsed[IMAGE_WIDTH]
    stored = tf.cast(tf.stack([height, width]), tf.int32)
    checks.append(tf.debugging.Assert(
        tf.logical_or(tf.reduce_all(stored == 0), tf.reduce_all(stored == shape)),
        [tf.strings.format("Record {}: stores size {} but its image decodes to {}",
                           [filename, stored, shape])],
    ))
    return checks


def parse_example(serialized: tf.Tensor, num_classes: int, validate: bool = True) -> Dict:
    """Parses and decodes one serialized example (pure TF, usable inside `tf.data` map).

    Args:
      serialized: Scalar string tensor, one serialized `tf.train.Example`.
      num_classes: Number of classes C including background.
      validate: Check mask size and values and class ids, failing with the filename.

    Returns:
      A dict with `image` uint8 `[H, W, 3]`, `label` int32 `[H, W]` (all 255 without a mask),
      `has_mask` bool, `class_ids` int32 `[N]` (from `image/class/label`, may be empty),
      `has_class_labels` bool (the record carries `image/class/label`), `class_labels`
      float32 `[C - 1]` (multi-hot from `image/class/label`, else from the whole mask),
      `filename` string (as stored) and `id` string (`image_id` of it).

    Raises:
      tf.errors.InvalidArgumentError (when run): a check failed; the message names the file.
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    filename = parsed[IMAGE_FILENAME]
    image = _decode_checked(parsed[IMAGE_ENCODED], 3, "image", filename)
    shape = tf.shape(image)[:2]
    mask_bytes = parsed[MASK_ENCODED]
    has_mask = tf.strings.length(mask_bytes) > 0
    label = _decode_label(mask_bytes, has_mask, shape, filename)
    class_ids = tf.cast(parsed[CLASS_LABEL].values, tf.int32)
    # A record "carries image labels" when it has the key with at least one id, or has no mask
    # (an image-labelled example of background only stores an empty list).
    has_class_labels = tf.logical_or(tf.size(class_ids) > 0, tf.logical_not(has_mask))
    checks = []
    if validate:
        checks = _record_checks(parsed, filename, shape, label, class_ids, num_classes)
    with tf.control_dependencies(checks):
        image = tf.identity(image)
        label = tf.identity(label)
    from_list = multi_hot(class_ids, num_classes)
    class_labels = tf.cond(
        has_class_labels, lambda: from_list, lambda: multi_hot(label, num_classes)
    )
    return {
        "image": image,
        "label": label,
        "has_mask": has_mask,
        "class_ids": class_ids,
        "has_class_labels": has_class_labels,
        "class_labels": class_labels,
        "filename": filename,
        "id": image_id_tf(filename),
    }


def read_examples(file_pattern, num_classes: int, validate: bool = True) -> List[Dict]:
    """Reads every example of the files eagerly into numpy dicts (for tests and tools).

    Args:
      file_pattern: As in `list_files`.
      num_classes: Number of classes including background.
      validate: As in `parse_example`.

    Returns:
      A list of dicts with the keys of `parse_example`, values as numpy (strings decoded).

    Raises:
      RecordError: A file is corrupt or a record fails a check; names the file.
    """
    out = []
    for path in list_files(file_pattern):
        index = 0
        try:
            for serialized in tf.data.TFRecordDataset(path):
                ex = parse_example(serialized, num_classes, validate)
                ex = {k: v.numpy() for k, v in ex.items()}
                ex["filename"] = ex["filename"].decode("utf-8")
                ex["id"] = ex["id"].decode("utf-8")
                out.append(ex)
                index += 1
        except tf.errors.OpError as e:
            raise RecordError(f"{path}: record {index} (0-based): {_short(e)}") from None
    return out


def _short(error: tf.errors.OpError) -> str:
    message = error.message
    message = re.sub(r"\{\{function_node[^}]*\}\}\s*", "", message)
    message = re.sub(r"\s*\[Op:[^\]]*\].*$", "", message, flags=re.S)
    return message.strip()


def scan_records(file_pattern, num_classes: Optional[int] = None) -> int:
    """Reads every record file one by one and raises on the first unreadable record.

    Args:
      file_pattern: As in `list_files`.
      num_classes: If given, every record is also parsed and checked with `parse_example`.

    Returns:
      The number of records.

    Raises:
      RecordError: naming the file and record index of a truncated or corrupt record, or one
        that fails to decode or fails a check.
    """
    total = 0
    for path in list_files(file_pattern):
        ds = tf.data.TFRecordDataset(path)
        if num_classes is not None:
            ds = ds.map(tf.autograph.experimental.do_not_convert(
                lambda s: parse_example(s, num_classes)["filename"]))
        count = 0
        try:
            for _ in ds:
                count += 1
        except tf.errors.OpError as e:
            raise RecordError(
                f"{path}: record {count} (0-based) cannot be read: {_short(e)}"
            ) from None
        total += count
    return total


def count_records(file_pattern) -> int:
    """Counts the records of the files (reads them; no parsing)."""
    return sum(1 for path in list_files(file_pattern) for _ in tf.data.TFRecordDataset(path))


__all__ = [
    "IGNORE_LABEL", "RecordError", "count_records", "encode_example", "encode_image",
    "encode_mask", "image_id", "image_id_tf", "list_files", "multi_hot", "parse_example",
    "read_examples", "scan_records", "shard_paths", "validate_mask", "write_records",
]
