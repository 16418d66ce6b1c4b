"""Converts COCO 2017 into semantic-segmentation TFRecords (81 classes).

    python datasets/build_coco.py --coco_root=.../coco --split=train2017 --output_dir=OUT
    python datasets/build_coco.py --coco_root=.../coco --split=val2017 --output_dir=OUT
    python datasets/build_coco.py --coco_root=.../coco --split=unlabeled2017 --output_dir=OUT

Layout read: `COCO_ROOT/annotations/instances_SPLIT.json` and `COCO_ROOT/SPLIT/*.jpg`.
Output: `OUT/SPLIT-0000i-of-0000N.tfrecord` and the id list `OUT/SPLIT.txt`; ids are the file
names without extension (`000000177254`), so PseudoSeg's lists (`train2017/000000177254`) match.

Masks (needs pycocotools): class 0 is background; the 80 categories, in the standard order of
increasing category id, are classes 1..80. Instance masks come from the instance annotations
(`COCO.annToMask`, polygons or RLE). Overlaps: instances are painted from the largest area to
the smallest, so a smaller object lying on a larger one keeps its pixels. Crowd regions
(`iscrowd=1`) not covered by a non-crowd instance become 255 (ignored) with `--crowd=ignore`
(default) or get their category with `--crowd=class`. Images without annotations are kept
(all background). `--split=unlabeled2017` writes images only (no mask).
"""

import argparse
import os
import sys

import numpy as np

from wss.data import convert_utils as cu

NUM_CLASSES = 81
DEFAULT_SHARDS = {"train2017": 128, "val2017": 8, "unlabeled2017": 128}


def category_map(coco):
    """Maps COCO category ids, sorted, to classes 1..80."""
    return {cat: i + 1 for i, cat in enumerate(sorted(coco.getCatIds()))}


def semantic_mask(coco, image_info, cat_to_class, crowd="ignore"):
    """The `[H, W]` uint8 class mask of one image from its instance annotations."""
    height, width = image_info["height"], image_info["width"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"], iscrowd=None))
    mask = np.zeros((height, width), np.uint8)
    covered = np.zeros((height, width), bool)
    for ann in sorted((a for a in anns if not a.get("iscrowd", 0)),
                      key=lambda a: a.get("area", 0), reverse=True):
        if ann["category_id"] not in cat_to_class:
            raise ValueError(f"annotation {ann['id']} of image {image_info['file_name']} has "
                             f"unknown category id {ann['category_id']}")
        m = coco.annToMask(ann).astype(bool)
        mask[m] = cat_to_class[ann["category_id"]]
        covered |= m
    for ann in (a for a in anns if a.get("iscrowd", 0)):
        m = coco.annToMask(ann).astype(bool) & ~covered
        mask[m] = 255 if crowd == "ignore" else cat_to_class[ann["category_id"]]
    return mask


def build(coco_root, split, output_dir, num_shards=None, crowd="ignore", limit=None):
    """Converts one split; returns its counts."""
    cu.require_dir(coco_root, "COCO (--coco_root)")
    image_dir = cu.require_dir(os.path.join(coco_root, split), f"COCO {split} image")
    num_shards = num_shards or DEFAULT_SHARDS.get(split, 8)
    if split.startswith("unlabeled"):
        names = sorted(f for f in os.listdir(image_dir) if f.lower().endswith((".jpg", ".png")))
        items = [cu.Item(os.path.splitext(f)[0], os.path.join(image_dir, f)) for f in names]
    else:
        try:
            from pycocotools.coco import COCO
        except ImportError:
            raise ImportError("build_coco.py needs pycocotools: pip install pycocotools "
                              "(or pip install wss[data])") from None
        ann_file = cu.require_file(
            os.path.join(coco_root, "annotations", f"instances_{split}.json"), "COCO annotation")
        coco = COCO(ann_file)
        cat_to_class = category_map(coco)
        if len(cat_to_class) != NUM_CLASSES - 1:
            print(f"warning: {ann_file} has {len(cat_to_class)} categories, not 80",
                  file=sys.stderr)
        items = []
        for image_id in sorted(coco.getImgIds()):
            info = coco.loadImgs(image_id)[0]
            path = os.path.join(image_dir, info["file_name"])
            items.append(cu.Item(
                os.path.splitext(info["file_name"])[0], path,
                lambda info=info: semantic_mask(coco, info, cat_to_class, crowd),
                f"{ann_file} (image id {image_id})"))
    if limit:
        items = items[:limit]
    return {split: cu.convert_split(items, output_dir, split, num_shards, NUM_CLASSES)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco_root", required=True,
                        help="Directory holding annotations/ and the image directories")
    parser.add_argument("--split", required=True,
                        choices=["train2017", "val2017", "unlabeled2017"])
    parser.add_argument("--output_dir", required=True, help="Where to write the TFRecords")
    parser.add_argument("--num_shards", type=int, default=None,
                        help="Number of TFRecord files (default 128 train, 8 val)")
    parser.add_argument("--crowd", choices=["ignore", "class"], default="ignore",
                        help="Label of crowd regions: 255 (ignore) or their category")
    parser.add_argument("--limit", type=int, default=None, help="Convert only N images")
    args = parser.parse_args(argv)
    counts = build(args.coco_root, args.split, args.output_dir, args.num_shards, args.crowd,
                   args.limit)
    cu.print_summary("COCO", counts, args.output_dir)
    return counts


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError, ImportError) as e:
        sys.exit(f"error: {e}")
