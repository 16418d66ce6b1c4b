"""Converts your own folders of images and masks into TFRecords, split files and dataset.json.

    python datasets/build_folder.py --images=my_data/images --masks=my_data/masks \
        [--unlabelled=my_data/unlabelled] [--image_labels=my_data/labels.csv] \
        [--class_names=my_data/classes.txt] --output_dir=my_records

Masks are PNG files of class ids matched to images by file stem (grey or palette PNGs like
VOC's `SegmentationClass`; 255 = ignore). Images may be JPEG, PNG, BMP, TIFF or WebP in any
mode (RGBA, grey and palette images are converted to RGB). Images without a mask, and those of
--unlabelled, form the unlabelled split; --val_fraction of the masked images (drawn with --seed)
are held out for validation. Output in --output_dir: train-*.tfrecord, val-*.tfrecord,
labelled.txt, unlabelled.txt, val.txt, class_names.txt and dataset.json; then train with

    python -m wss.train --gin_file=own_semi.gin --gin_bindings="OWN_DIR='my_records'"

Every file is checked before anything is written: unreadable files, masks of another size than
their image, masks without an image, unknown classes and duplicate ids are listed, each with its
file, and nothing is written; --skip_bad leaves them out (listed in skipped.txt) instead.
See docs/own_data.md.
"""

import argparse
import sys

from wss.data import folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="Directory of images (some with masks)")
    parser.add_argument("--masks", required=True,
                        help="Directory of PNG masks of class ids, matched by file stem")
    parser.add_argument("--unlabelled", default=None, help="Directory of images without masks")
    parser.add_argument("--image_labels", default=None,
                        help="CSV 'id,labels' of image-level labels (class names or ids) of "
                             "unlabelled images")
    parser.add_argument("--class_names", default=None,
                        help="File of class names, one per line; line i names class i")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="Classes including background (default: from --class_names, "
                             "else the largest mask value + 1)")
    parser.add_argument("--output_dir", required=True, help="Where to write the records")
    parser.add_argument("--val_fraction", type=float, default=0.1,
                        help="Fraction of the masked images held out for validation")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the held-out draw")
    parser.add_argument("--mask_suffix", default="",
                        help="Suffix of mask stems to strip before matching, e.g. _mask")
    parser.add_argument("--skip_bad", action="store_true",
                        help="Leave bad files out (listed) instead of failing")
    parser.add_argument("--num_shards", type=int, default=0,
                        help="TFRecord files of the train split (0: one per 1000 images)")
    args = parser.parse_args(argv)
    return folder.build(
        args.images, args.masks, args.output_dir, unlabelled_dir=args.unlabelled,
        image_labels=args.image_labels, class_names_file=args.class_names,
        num_classes=args.num_classes, val_fraction=args.val_fraction, seed=args.seed,
        skip_bad=args.skip_bad, mask_suffix=args.mask_suffix, num_shards=args.num_shards)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
