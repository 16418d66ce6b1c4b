"""Probe data: a dataset copy whose unlabelled masks confuse whole objects at a chosen rate.

How accurate must pseudo labels be for the unlabelled loss to pay? With
`PseudoLabelConfig.source = 'ground_truth'`, L_u trains the strong view on the unlabelled images'
own masks (the ceiling of every real source). This script writes a copy of a dataset in which
those masks are wrong the way a weak teacher is wrong: each object (a connected region of one
class, 8-connectivity) of an image outside the labelled split is relabelled, with probability
`--rate`, to another foreground class drawn uniformly; background, ignore pixels, the labelled
images and every other file are copied unchanged, and `image/class/label` follows the new mask.
Trained with `demo.gin` plus the `ground_truth` binding, the copy gives the mIoU that pseudo
labels with that share of objects confused would reach (`benchmarks/RESULTS.md`, tenth
session).

With `--teacher_labels LABELS` the unlabelled images' masks are instead those of a teacher:
the `pseudo_labels/` directory that a self-training run writes (`demo_self_training.gin` with
`train.teacher_checkpoint = 'SUPERVISED_RUN'`, `self_training.threshold = 0.0` and
`train.num_steps = 1` writes the supervised run's argmax for every unlabelled image), so that
the same training measures how far that teacher's labels, fixed, take L_u (`benchmarks/
RESULTS.md`, twentieth session). With `--teacher_runs RUN [RUN ...]` the masks are made here
instead: the argmax of the mean softmax of those runs (an ensemble of supervised runs of one
config, e.g. seeds; with `--teacher_mirror`, each also averaged with its mirror image's, as
`PseudoSegObjective.teacher_mirror` does), each unlabelled image predicted whole
(`probe_teacher_ensemble.py`; twenty-sixth session).

Run: `python benchmarks/noisy_masks.py --data_dir DIR --output_dir OUT --rate 0.5`
(needs scipy: `pip install -e ".[data]"`), or `--teacher_labels LABELS` or
`--teacher_runs RUN [RUN ...]` instead of `--rate`.
Prints the share of objects relabelled and of foreground pixels whose class is still right.
"""

import argparse
import glob
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from wss.data import records, splits


def relabel_objects(mask, num_classes, rate, rng):
    """Relabels each foreground object of `mask` with probability `rate`.

    Args:
      mask: uint8 `[H, W]` class ids (0 background, 255 ignore).
      num_classes: classes including background (at least 3, so that another foreground
        class exists).
      rate: probability in [0, 1] that an object gets another class.
      rng: a `numpy.random.Generator`.

    Returns:
      (new mask, number of objects, number relabelled).
    """
    from scipy import ndimage  # Optional dependency (the `data` extra).

    out = mask.copy()
    objects = relabelled = 0
    for class_id in range(1, num_classes):
        components, count = ndimage.label(mask == class_id, structure=np.ones((3, 3)))
        for index in range(1, count + 1):
            objects += 1
            if rng.random() < rate:
                relabelled += 1
                shift = int(rng.integers(1, num_classes - 1))
                out[components == index] = 1 + (class_id - 1 + shift) % (num_classes - 1)
    return out, objects, relabelled


def read_teacher_masks(directory):
    """The encoded masks of a self-training run's pseudo-label records, by image id.

    Raises:
      ValueError: if `directory` holds no `train-*.tfrecord`.
    """
    shards = sorted(glob.glob(os.path.join(directory, "train-*.tfrecord")))
    if not shards:
        raise ValueError(f"--teacher_labels={directory}: no train-*.tfrecord (expected a "
                         f"self-training run's pseudo_labels/ directory)")
    masks = {}
    for shard in shards:
        for serialized in tf.data.TFRecordDataset(shard):
            feature = tf.train.Example.FromString(serialized.numpy()).features.feature
            image_id = records.image_id(feature[records.IMAGE_FILENAME].bytes_list.value[0])
            masks[image_id] = feature[records.MASK_ENCODED].bytes_list.value[0]
    return masks


def ensemble_teacher_masks(data_dir, run_dirs, labelled_split="labelled_1_16.txt",
                           mirror=False):
    """The encoded argmax masks, by image id, of an ensemble of runs on the unlabelled images.

    Args:
      data_dir: the dataset (`train-*.tfrecord` and the split file).
      run_dirs: `wss.train` log directories (or, after the first, checkpoint prefixes) of one
        config.
      labelled_split: split file of the images that keep their masks (not predicted).
      mirror: also average each run's softmax on the mirror image.

    Raises:
      ValueError: if `data_dir` holds no `train-*.tfrecord`.
    """
    # The teacher's code is a sibling script (run from benchmarks/, like this one).
    from probe_teacher_ensemble import ensemble_probabilities, restore_ensemble

    labelled = set(splits.read_split_file(os.path.join(data_dir, labelled_split)))
    shards = sorted(glob.glob(os.path.join(data_dir, "train-*.tfrecord")))
    if not shards:  # Before the models are restored, which takes a while.
        raise ValueError(f"no train-*.tfrecord in {data_dir}")
    models = restore_ensemble(list(run_dirs))[0]
    masks = {}
    for shard in shards:
        for serialized in tf.data.TFRecordDataset(shard):
            feature = tf.train.Example.FromString(serialized.numpy()).features.feature
            image_id = records.image_id(feature[records.IMAGE_FILENAME].bytes_list.value[0])
            if image_id in labelled:
                continue
            image = tf.io.decode_image(feature[records.IMAGE_ENCODED].bytes_list.value[0],
                                       channels=3, expand_animations=False)
            probs = ensemble_probabilities(models, tf.cast(image, tf.float32)[None],
                                           flip=mirror)
            masks[image_id] = records.encode_mask(
                tf.argmax(probs[0], axis=-1, output_type=tf.int32).numpy().astype(np.uint8))
    return masks


def write_noisy_copy(data_dir, output_dir, rate, seed=0, labelled_split="labelled_1_16.txt",
                     num_classes=None, teacher_masks=None):
    """Writes the copy; returns counts `{objects, relabelled, foreground, foreground_right}`.

    Args:
      data_dir: a dataset in the project's layout (`train-*.tfrecord`, split files,
        `metadata.json` unless `num_classes` is given).
      output_dir: where the copy goes (created; must not be `data_dir`).
      rate: probability that an unlabelled image's object is relabelled.
      seed: seed of the relabelling draws.
      labelled_split: split file (in `data_dir`) of the images whose masks stay true.
      num_classes: classes including background; default `metadata.json`'s.
      teacher_masks: None, or encoded masks by image id (`read_teacher_masks`) that replace
        the unlabelled images' masks instead of the relabelling (`rate` is then unused).

    Raises:
      ValueError: for a rate outside [0, 1], an output directory equal to the input, fewer
        than 3 classes, or missing files (naming them).
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"--rate={rate}: expected a number in [0, 1]")
    if os.path.realpath(data_dir) == os.path.realpath(output_dir):
        raise ValueError(f"--output_dir={output_dir} is the input directory")
    if num_classes is None:
        metadata = os.path.join(data_dir, "metadata.json")
        if not os.path.exists(metadata):
            raise ValueError(f"{metadata} not found: pass --num_classes")
        with open(metadata) as f:
            num_classes = int(json.load(f)["num_classes"])
    if num_classes < 3:
        raise ValueError(f"num_classes={num_classes}: relabelling needs 2 foreground classes")
    split_path = os.path.join(data_dir, labelled_split)
    labelled = set(splits.read_split_file(split_path))
    shards = sorted(glob.glob(os.path.join(data_dir, "train-*.tfrecord")))
    if not shards:
        raise ValueError(f"no train-*.tfrecord in {data_dir}")
    os.makedirs(output_dir, exist_ok=True)
    for name in os.listdir(data_dir):
        source = os.path.join(data_dir, name)
        if os.path.isfile(source) and not name.startswith("train-"):
            shutil.copy(source, os.path.join(output_dir, name))
    rng = np.random.default_rng(seed)
    counts = dict(objects=0, relabelled=0, foreground=0, foreground_right=0)
    for shard in shards:
        target = os.path.join(output_dir, os.path.basename(shard))
        temporary = os.path.join(output_dir, "." + os.path.basename(shard) + ".tmp")
        with tf.io.TFRecordWriter(temporary) as writer:  # Renamed when complete.
            for serialized in tf.data.TFRecordDataset(shard):
                example = tf.train.Example.FromString(serialized.numpy())
                feature = example.features.feature
                image_id = records.image_id(feature[records.IMAGE_FILENAME].bytes_list.value[0])
                if image_id not in labelled and records.MASK_ENCODED in feature:
                    encoded = feature[records.MASK_ENCODED].bytes_list.value[0]
                    mask = tf.io.decode_png(encoded, channels=1)[..., 0].numpy()
                    if teacher_masks is None:
                        noisy, objects, relabelled = relabel_objects(mask, num_classes, rate,
                                                                     rng)
                    elif image_id in teacher_masks:
                        noisy = tf.io.decode_png(teacher_masks[image_id],
                                                 channels=1)[..., 0].numpy()
                        objects = relabelled = 0
                    else:
                        raise ValueError(f"--teacher_labels: no pseudo label for {image_id}")
                    foreground = (mask > 0) & (mask != records.IGNORE_LABEL)
                    counts["objects"] += objects
                    counts["relabelled"] += relabelled
                    counts["foreground"] += int(foreground.sum())
                    counts["foreground_right"] += int((noisy[foreground] == mask[foreground]).sum())
                    feature[records.MASK_ENCODED].bytes_list.value[0] = records.encode_mask(noisy)
                    if records.CLASS_LABEL in feature:
                        present = sorted(int(c) for c in np.unique(noisy)
                                         if 0 < c < records.IGNORE_LABEL)
                        labels = feature[records.CLASS_LABEL].int64_list
                        del labels.value[:]
                        labels.value.extend(present)
                writer.write(example.SerializeToString())
        os.replace(temporary, target)
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--rate", type=float)
    what.add_argument("--teacher_labels", help="a self-training run's pseudo_labels/ directory")
    what.add_argument("--teacher_runs", nargs="+",
                      help="supervised runs of one config whose mean softmax labels the images")
    parser.add_argument("--teacher_mirror", action="store_true",
                        help="with --teacher_runs: also average each run's mirror image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labelled_split", default="labelled_1_16.txt")
    parser.add_argument("--num_classes", type=int, default=None)
    args = parser.parse_args()
    teacher_masks = None
    if args.teacher_labels:
        teacher_masks = read_teacher_masks(args.teacher_labels)
    elif args.teacher_runs:
        teacher_masks = ensemble_teacher_masks(args.data_dir, args.teacher_runs,
                                               args.labelled_split, args.teacher_mirror)
    counts = write_noisy_copy(args.data_dir, args.output_dir, args.rate or 0.0, args.seed,
                              args.labelled_split, args.num_classes, teacher_masks)
    print("| rate | objects | relabelled | foreground pixels with the right class |")
    print("| --- | --- | --- | --- |")
    source = args.rate
    if args.teacher_labels or args.teacher_runs:
        source = f"teacher {args.teacher_labels or ' + '.join(args.teacher_runs)}"
    print(f"| {source} | {counts['objects']} | {counts['relabelled']} | "
          f"{100 * counts['foreground_right'] / max(counts['foreground'], 1):.1f}% |")


if __name__ == "__main__":
    main()
