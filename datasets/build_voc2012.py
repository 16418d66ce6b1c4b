"""Converts PASCAL VOC 2012 (+ SBD) into TFRecords: `train`, `val` and `train_aug`.

    python datasets/build_voc2012.py --voc_root=.../VOCdevkit/VOC2012 \
        --sbd_root=.../benchmark_RELEASE/dataset --output_dir=OUT

Splits:
  train      1,464 images of VOC `ImageSets/Segmentation/train.txt`;
  val        1,449 images of VOC `ImageSets/Segmentation/val.txt`;
  train_aug 10,582 images: VOC train + SBD train + SBD val, minus VOC val (needs --sbd_root).

Masks: VOC `SegmentationClass/*.png` are palette PNGs whose index is the class (255 = border,
ignored); SBD masks come from `cls/*.mat` (`GTcls.Segmentation`). In train_aug an image with a
VOC mask keeps it; the others use SBD's. Images are stored as the original JPEG bytes (from VOC
`JPEGImages`, else SBD `img`). Ids are file names without extension, as in DeepLab. Each split
also gets its id list `OUT/SPLIT.txt`.
"""

import argparse
import os
import sys

from wss.data import convert_utils as cu

NUM_CLASSES = 21


def voc_items(voc_root, ids, sbd_root=None):
    """Items of VOC ids, with VOC masks or else SBD masks."""
    items = []
    for i in ids:
        image_path = os.path.join(voc_root, "JPEGImages", f"{i}.jpg")
        if not os.path.isfile(image_path) and sbd_root:
            image_path = os.path.join(sbd_root, "img", f"{i}.jpg")
        voc_mask = os.path.join(voc_root, "SegmentationClass", f"{i}.png")
        if os.path.isfile(voc_mask) or not sbd_root:
            items.append(cu.Item(i, image_path, lambda p=voc_mask: cu.read_palette_png(p),
                                 voc_mask))
        else:
            sbd_mask = os.path.join(sbd_root, "cls", f"{i}.mat")
            items.append(cu.Item(i, image_path, lambda p=sbd_mask: cu.read_sbd_mat(p),
                                 sbd_mask))
    return items


def build(voc_root, output_dir, sbd_root=None, num_shards=4, train_aug_shards=10):
    """Converts the splits; returns their counts."""
    cu.require_dir(voc_root, "VOC 2012 (--voc_root)")
    list_dir = os.path.join(voc_root, "ImageSets", "Segmentation")
    train = cu.read_id_list(os.path.join(list_dir, "train.txt"))
    val = cu.read_id_list(os.path.join(list_dir, "val.txt"))
    cu.require_dir(os.path.join(voc_root, "JPEGImages"), "VOC JPEGImages")
    cu.require_dir(os.path.join(voc_root, "SegmentationClass"), "VOC SegmentationClass")
    plan = {"train": voc_items(voc_root, train), "val": voc_items(voc_root, val)}
    if sbd_root:
        cu.require_dir(sbd_root, "SBD (--sbd_root)")
        cu.require_dir(os.path.join(sbd_root, "cls"), "SBD cls")
        sbd = (cu.read_id_list(os.path.join(sbd_root, "train.txt"))
               + cu.read_id_list(os.path.join(sbd_root, "val.txt")))
        val_set = set(val)
        aug, seen = [], set()
        for i in train + sbd:
            if i not in val_set and i not in seen:
                seen.add(i)
                aug.append(i)
        plan["train_aug"] = voc_items(voc_root, aug, sbd_root)
    counts = {}
    for split, items in plan.items():
        shards = train_aug_shards if split == "train_aug" else num_shards
        counts[split] = cu.convert_split(items, output_dir, split, shards, NUM_CLASSES)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc_root", required=True, help="VOCdevkit/VOC2012 directory")
    parser.add_argument("--sbd_root", default=None,
                        help="benchmark_RELEASE/dataset directory of SBD (for train_aug)")
    parser.add_argument("--output_dir", required=True, help="Where to write the TFRecords")
    parser.add_argument("--num_shards", type=int, default=4, help="Shards of train and val")
    parser.add_argument("--train_aug_shards", type=int, default=10, help="Shards of train_aug")
    args = parser.parse_args(argv)
    counts = build(args.voc_root, args.output_dir, args.sbd_root, args.num_shards,
                   args.train_aug_shards)
    cu.print_summary("PASCAL VOC 2012", counts, args.output_dir)
    return counts


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
