"""Code shared by the dataset converters in `datasets/` (VOC + SBD, COCO, Cityscapes).

Each converter lists `Item`s (an id, an image file and a way to get the mask) and hands them to
`convert_split`, which encodes them with `wss.data.records`, writes sharded TFRecords
atomically, prints a progress line every few seconds and writes the split's id list.
Errors name the source file.
"""

import os
import sys
import time
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional

import numpy as np

from wss.data import records, splits


class Item(NamedTuple):
    """One example to convert.

    Attributes:
      image_id: Stored as `image/filename`.
      image_path: JPEG or PNG file, stored as it is.
      load_mask: Optional callable returning the `[H, W]` uint8 class-id mask.
      mask_path: The mask's source (file, or annotation), for error messages.
      class_labels: Optional image-level class ids.
    """

    image_id: str
    image_path: str
    load_mask: Optional[Callable[[], np.ndarray]] = None
    mask_path: Optional[str] = None
    class_labels: Optional[List[int]] = None


def require_dir(path: str, what: str) -> str:
    """Returns `path` if it is a directory, else raises FileNotFoundError naming it."""
    if not path or not os.path.isdir(path):
        raise FileNotFoundError(f"{what} directory {path!r} does not exist")
    return path


def require_file(path: str, what: str) -> str:
    """Returns `path` if it is a file, else raises FileNotFoundError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file {path!r} does not exist")
    return path


def read_id_list(path: str) -> List[str]:
    """Reads an id list (e.g. `ImageSets/Segmentation/train.txt`), naming a missing file."""
    require_file(path, "Id list")
    return splits.read_split_file(path)


def read_palette_png(path: str) -> np.ndarray:
    """Reads a palette ("P" mode) PNG as its index array (VOC `SegmentationClass`).

    Raises:
      records.RecordError: The PNG is not a palette image (e.g. an RGB rendering), naming it.
    """
    from PIL import Image

    require_file(path, "Mask")
    with Image.open(path) as im:
        if im.mode != "P":
            raise records.RecordError(
                f"{path}: expected a palette (mode P) PNG whose indices are class ids, got "
                f"mode {im.mode}")
        return np.array(im, dtype=np.uint8)


def read_grey_png(path: str) -> np.ndarray:
    """Reads a single-channel PNG (Cityscapes label ids) as an integer array."""
    from PIL import Image

    require_file(path, "Label")
    with Image.open(path) as im:
        if im.mode not in ("L", "I", "I;16", "P"):
            raise records.RecordError(f"{path}: expected a single-channel PNG, got mode "
                                      f"{im.mode}")
        return np.array(im)


def read_sbd_mat(path: str) -> np.ndarray:
    """Reads the class mask of an SBD `cls/*.mat` file (`GTcls.Segmentation`)."""
    import scipy.io

    require_file(path, "SBD mask")
    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
        mask = mat["GTcls"].Segmentation
    except Exception as e:  # noqa: BLE001 - any loader failure becomes a named error
        raise records.RecordError(f"{path}: cannot read GTcls.Segmentation: {e}") from None
    return np.asarray(mask).astype(np.uint8)


def image_size(path: str):
    """(height, width) of an image file, from its header."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]


class Progress:
    """Prints `label: n/total (rate/s)` at most every `interval` seconds, to stderr."""

    def __init__(self, label: str, total: Optional[int] = None, interval: float = 5.0,
                 stream=None):
        self.label, self.total, self.interval = label, total, interval
        self.stream = stream or sys.stderr
        self.start = self.last = time.time()

    def __call__(self, count: int) -> None:
        now = time.time()
        if now - self.last >= self.interval or (self.total and count == self.total):
            self.last = now
            total = f"/{self.total}" if self.total else ""
            rate = count / max(now - self.start, 1e-6)
            print(f"{self.label}: {count}{total} examples ({rate:.1f}/s)", file=self.stream,
                  flush=True)


def _encode(item: Item, num_classes: int) -> bytes:
    require_file(item.image_path, "Image")
    mask = None
    if item.load_mask is not None:
        mask = item.load_mask()
    with open(item.image_path, "rb") as f:
        image_bytes = f.read()
    where = item.image_path + (f" / {item.mask_path}" if item.mask_path else "")
    try:
        return records.encode_example(image_bytes, item.image_id, mask=mask,
                                      class_labels=item.class_labels, num_classes=num_classes)
    except records.RecordError as e:
        raise records.RecordError(f"{where}: {e}") from None


def convert_split(
    items: List[Item],
    output_dir: str,
    split: str,
    num_shards: int,
    num_classes: int,
    write_ids: bool = True,
) -> Dict[str, int]:
    """Writes one split: `OUTPUT_DIR/SPLIT-0000i-of-0000N.tfrecord` and `OUTPUT_DIR/SPLIT.txt`.

    Args:
      items: The examples, in order.
      output_dir: Output directory (created).
      split: Split name, the file prefix.
      num_shards: Number of TFRecord files (at most the number of items).
      num_classes: For checking mask values and class labels.
      write_ids: Also write the id list `SPLIT.txt`.

    Returns:
      Counts: `examples`, `with_mask`, `shards`.
    """
    os.makedirs(output_dir, exist_ok=True)
    num_shards = max(1, min(num_shards, len(items)))
    progress = Progress(f"{split}", total=len(items))

    def examples() -> Iterable[bytes]:
        for item in items:
            yield _encode(item, num_classes)

    count = records.write_records(examples(), os.path.join(output_dir, split), num_shards,
                                  progress=progress)
    if write_ids:
        splits.write_split_file([i.image_id for i in items], os.path.join(output_dir,
                                                                           f"{split}.txt"))
    return {"examples": count, "with_mask": sum(i.load_mask is not None for i in items),
            "shards": num_shards}


def print_summary(title: str, counts: Dict[str, Dict[str, int]], output_dir: str) -> None:
    """Prints the per-split counts at the end of a conversion."""
    print(f"{title}: wrote to {output_dir}")
    for split, c in counts.items():
        print(f"  {split}: {c['examples']} examples ({c['with_mask']} with masks) "
              f"in {c['shards']} shard(s)")
