"""Samples labelled subsets (1/2 ... 1/512) and writes labelled / unlabelled split files.

    # VOC: 1/2, 1/4, 1/8, 1/16 of the 1,464 VOC train images; the rest of train_aug unlabelled.
    python datasets/make_splits.py --records='OUT/train_aug-*' --num_classes=21 \
        --labelled_pool=OUT/train.txt --denominators=2,4,8,16 --seed=0 --output_dir=SPLITS \
        --name=voc

    # COCO: 1/32 ... 1/512 of train2017; the rest unlabelled.
    python datasets/make_splits.py --records='OUT/train2017-*' --num_classes=81 \
        --denominators=32,64,128,256,512 --output_dir=SPLITS --name=coco

For each denominator N it writes `NAME_1-N_labelled.txt` (ceil(pool / N) ids, drawn with the
seed and re-drawn until every class of the pool appears, paper appendix C) and
`NAME_1-N_unlabelled.txt` (the unlabelled pool minus those ids). The labelled pool is
`--labelled_pool` (default: every record); the unlabelled pool is `--unlabelled_pool` (default:
every record). Published lists (e.g. PseudoSeg's `data_splits/`) need no conversion: pass them
as split files directly.
"""

import argparse
import os
import sys

from wss.data import splits


def build(records_pattern, num_classes, denominators, output_dir, name, seed=0,
          labelled_pool=None, unlabelled_pool=None, max_tries=1000):
    """Writes the split files; returns `{denominator: (labelled_count, unlabelled_count)}`."""
    class_sets = splits.class_sets_from_records(records_pattern, num_classes)
    all_ids = sorted(class_sets)

    def pool(path):
        if path is None:
            return all_ids
        ids = splits.read_split_file(path)
        missing = [i for i in ids if i not in class_sets]
        if missing:
            raise ValueError(f"{len(missing)} id(s) of {path} are not in the records "
                             f"{records_pattern}: {', '.join(missing[:5])}")
        return ids

    labelled_ids, unlabelled_ids = pool(labelled_pool), pool(unlabelled_pool)
    out = {}
    for n in denominators:
        labelled = splits.sample_labelled_split(
            labelled_ids, class_sets, 1.0 / n, seed=seed, max_tries=max_tries)
        rest = splits.complement(unlabelled_ids, labelled)
        base = os.path.join(output_dir, f"{name}_1-{n}")
        splits.write_split_file(labelled, base + "_labelled.txt")
        splits.write_split_file(rest, base + "_unlabelled.txt")
        out[n] = (len(labelled), len(rest))
        print(f"1/{n}: {len(labelled)} labelled -> {base}_labelled.txt, "
              f"{len(rest)} unlabelled -> {base}_unlabelled.txt", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", required=True, help="TFRecord pattern of the pool")
    parser.add_argument("--num_classes", type=int, required=True)
    parser.add_argument("--denominators", default="2,4,8,16",
                        help="Comma-separated N of the 1/N subsets")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--name", default="split", help="File name prefix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labelled_pool", default=None,
                        help="Split file of the ids to sample from (default: all records)")
    parser.add_argument("--unlabelled_pool", default=None,
                        help="Split file of the unlabelled pool (default: all records)")
    parser.add_argument("--max_tries", type=int, default=1000)
    args = parser.parse_args(argv)
    denominators = [int(d) for d in args.denominators.split(",") if d]
    return build(args.records, args.num_classes, denominators, args.output_dir, args.name,
                 args.seed, args.labelled_pool, args.unlabelled_pool, args.max_tries)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
