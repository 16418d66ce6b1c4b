"""Split files and the seeded sampling of labelled subsets (PseudoSeg appendix C).

A split file holds one image id per line. An id is `image/filename` without directory and
extension; lines with a directory or extension (e.g. PseudoSeg's COCO lists,
`train2017/000000177254`) are reduced to the id the same way, so published lists are used as
they are. Blank lines and lines starting with `#` are skipped.

Labelled subsets are drawn at random with a seed and re-drawn until every class appears in at
least one labelled image, as in the paper ("we re-sample until every class is present"). The
unlabelled (or image-labelled) stream is the rest of the pool, disjoint from the labelled list.
"""

import math
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Union

import numpy as np

from wss.data.records import image_id


def read_split_file(path: str) -> List[str]:
    """Reads a split file into a list of ids (order kept, duplicates removed).

    Raises:
      FileNotFoundError: The file does not exist (named).
      ValueError: The file holds no id (named).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Split file {path} does not exist")
    ids, seen = [], set()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            i = image_id(line.split()[0])
            if i not in seen:
                seen.add(i)
                ids.append(i)
    if not ids:
        raise ValueError(f"Split file {path} is empty")
    return ids


def check_ids_present(ids: Sequence[str], present, split_file: str, source: str) -> None:
    """Fails naming the split file and the first missing ids when some are not in the data.

    Args:
      ids: the split file's ids.
      present: the ids the data has (a set or frozenset).
      split_file: the split file's path (for the message).
      source: what was searched, e.g. "the records PATTERN" (for the message).

    Raises:
      ValueError: if an id of `ids` is not in `present`.
    """
    missing = [i for i in ids if i not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{len(missing)} id(s) of split file {split_file} are not in {source}: {shown}")


def write_split_file(ids: Iterable[str], path: str) -> None:
    """Writes ids one per line (atomically: temporary file, then rename)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for i in ids:
            f.write(f"{i}\n")
    os.replace(tmp, path)


def _count(pool_size: int, fraction_or_count: Union[float, int]) -> int:
    """An int is a count; a float a fraction of the pool, rounded up (1464 / 16 -> 92)."""
    if isinstance(fraction_or_count, (int, np.integer)) and not isinstance(fraction_or_count, bool):
        count = int(fraction_or_count)
    else:
        fraction = float(fraction_or_count)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        count = int(math.ceil(pool_size * fraction - 1e-9))
    if not 0 < count <= pool_size:
        raise ValueError(f"Cannot sample {count} ids out of {pool_size}")
    return count


def sample_labelled_split(
    ids: Sequence[str],
    class_sets: Union[Mapping[str, Iterable[int]], Sequence[Iterable[int]]],
    fraction_or_count: Union[float, int],
    seed: int = 0,
    required_classes: Optional[Iterable[int]] = None,
    max_tries: int = 1000,
) -> List[str]:
    """Samples a labelled subset in which every class appears, re-drawing with one RNG.

    Args:
      ids: The pool of image ids (e.g. VOC train_aug or COCO train2017).
      class_sets: The classes present in each image, as a mapping id -> classes or a sequence
        aligned with `ids`. The ignore label (255) is not a class.
      fraction_or_count: A fraction in (0, 1] of the pool (rounded up, as the reference's
        92 / 183 / 366 / 732 of VOC's 1,464 and 3,697 ... 232 of COCO's 118,287) or a count.
      seed: Seed of the RNG (`numpy.random.default_rng`); the result depends only on the
        arguments.
      required_classes: Classes that must all appear; default the union over the pool.
      max_tries: Draws before giving up.

    Returns:
      The sampled ids, sorted.

    Raises:
      ValueError: A required class is absent from the pool, or no draw in `max_tries` covers
        all of them.
    """
    ids = list(ids)
    if isinstance(class_sets, Mapping):
        sets = [set(int(c) for c in class_sets[i]) - {255} for i in ids]
    else:
        sets = [set(int(c) for c in s) - {255} for s in class_sets]
        if len(sets) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(sets)} class sets")
    pool_classes: Set[int] = set().union(*sets) if sets else set()
    required = pool_classes if required_classes is None else set(required_classes)
    missing = required - pool_classes
    if missing:
        raise ValueError(f"Classes {sorted(missing)} appear in no image of the pool")
    count = _count(len(ids), fraction_or_count)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        chosen = rng.choice(len(ids), size=count, replace=False)
        covered = set().union(*(sets[i] for i in chosen))
        if required <= covered:
            return sorted(ids[i] for i in chosen)
    raise ValueError(
        f"No sample of {count} images out of {len(ids)} covered every class in {max_tries} "
        "draws; use a larger subset"
    )


def complement(pool: Iterable[str], labelled: Iterable[str]) -> List[str]:
    """The ids of `pool` not in `labelled`, in pool order (the unlabelled stream)."""
    taken = set(labelled)
    return [i for i in pool if i not in taken]


def class_sets_from_records(file_pattern, num_classes: int) -> Dict[str, Set[int]]:
    """Maps each record's id to its classes: those of its mask, else its image labels.

    Decodes the masks only (not the images). For building splits, not for training.
    """
    import tensorflow as tf

    from wss.data import records

    features = {
        records.IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, ""),
        records.MASK_ENCODED: tf.io.FixedLenFeature((), tf.string, ""),
        records.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
    }

    @tf.autograph.experimental.do_not_convert
    def ids_and_classes(serialized):
        parsed = tf.io.parse_single_example(serialized, features)
        encoded = parsed[records.MASK_ENCODED]

        def from_mask():
            mask = tf.io.decode_png(encoded, channels=1)
            present = tf.unique(tf.reshape(tf.cast(mask, tf.int64), [-1]))[0]
            return tf.boolean_mask(present, present != records.IGNORE_LABEL)

        classes = tf.cond(tf.strings.length(encoded) > 0, from_mask,
                          lambda: parsed[records.CLASS_LABEL].values)
        return records.image_id_tf(parsed[records.IMAGE_FILENAME]), classes

    files = records.list_files(file_pattern)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
    ds = ds.map(ids_and_classes, num_parallel_calls=tf.data.AUTOTUNE)
    out = {}
    try:
        for i, classes in ds:
            out[i.numpy().decode("utf-8")] = {int(c) for c in classes.numpy()}
    except tf.errors.OpError:
        records.scan_records(files)
        raise
    bad = {i: sorted(c for c in cs if c >= num_classes) for i, cs in out.items()}
    bad = {i: c for i, c in bad.items() if c}
    if bad:
        first = next(iter(bad))
        raise ValueError(f"Record {first} has class ids {bad[first]} >= {num_classes}")
    return out


__all__ = [
    "class_sets_from_records", "complement", "read_split_file", "sample_labelled_split",
    "write_split_file",
]
