"""Converts Cityscapes (gtFine) into TFRecords with the 19 training classes.

    python datasets/build_cityscapes.py --cityscapes_root=.../cityscapes --output_dir=OUT

Layout read: `ROOT/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png` and
`ROOT/gtFine/SPLIT/CITY/*_gtFine_labelIds.png`. Label ids are mapped to the 19 train ids of
the official table (road 0 ... bicycle 18); every other id becomes 255. Ids are the image
names without `_leftImg8bit.png` (e.g. `aachen_000000_000019`), as in DeepLab. Splits `train`
(2,975) and `val` (500) by default; images are stored as their PNG bytes.

Note: Cityscapes has no background class; `class_labels` multi-hot vectors of the pipeline
(class c -> index c - 1) therefore leave out class 0 (road).
"""

import argparse
import glob
import os
import sys

import numpy as np

from wss.data import convert_utils as cu

NUM_CLASSES = 19

# labelId -> trainId of cityscapesScripts' labels.py (trainId 255 elsewhere).
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                  24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def train_id_lut() -> np.ndarray:
    """A 256-entry lookup table from label id to train id (255 when not trained)."""
    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut


def load_train_ids(path: str) -> np.ndarray:
    """Reads a `*_gtFine_labelIds.png` and maps it to train ids."""
    label_ids = cu.read_grey_png(path)
    if label_ids.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label image")
    # Ids above 33 do not exist (license plate is -1, stored as 255 only in *_trainIds).
    return train_id_lut()[np.clip(label_ids, 0, 255).astype(np.uint8)]


def split_items(root: str, split: str):
    """The items of one split, sorted by id."""
    image_dir = cu.require_dir(os.path.join(root, "leftImg8bit", split),
                               f"Cityscapes leftImg8bit/{split}")
    label_dir = cu.require_dir(os.path.join(root, "gtFine", split), f"Cityscapes gtFine/{split}")
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png")))
    if not images:
        raise FileNotFoundError(f"No *_leftImg8bit.png under {image_dir}")
    items = []
    for path in images:
        city = os.path.basename(os.path.dirname(path))
        image_id = os.path.basename(path)[: -len("_leftImg8bit.png")]
        label = os.path.join(label_dir, city, f"{image_id}_gtFine_labelIds.png")
        items.append(cu.Item(image_id, path, lambda p=label: load_train_ids(p), label))
    return items


def build(root, output_dir, splits=("train", "val"), num_shards=10):
    """Converts the splits; returns their counts."""
    cu.require_dir(root, "Cityscapes (--cityscapes_root)")
    counts = {}
    for split in splits:
        counts[split] = cu.convert_split(split_items(root, split), output_dir, split,
                                         num_shards, NUM_CLASSES)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cityscapes_root", required=True,
                        help="Directory holding leftImg8bit/ and gtFine/")
    parser.add_argument("--output_dir", required=True, help="Where to write the TFRecords")
    parser.add_argument("--splits", default="train,val", help="Comma-separated splits")
    parser.add_argument("--num_shards", type=int, default=10, help="Shards per split")
    args = parser.parse_args(argv)
    counts = build(args.cityscapes_root, args.output_dir, tuple(args.splits.split(",")),
                   args.num_shards)
    cu.print_summary("Cityscapes", counts, args.output_dir)
    return counts


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
