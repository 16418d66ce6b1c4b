"""Probe: how often the offline labels' crop namer names a set's true objects right.

`demo.gin` renames each object of its teacher's labels by what the pretrained classifier,
fine-tuned on the labelled images' objects (`wss.method.crop_classifier.FineTunedScorer`), sees
in its crop. This probe measures that namer apart from the teacher: it fine-tunes the scorer on
the objects of the labelled split (connected regions of one class in the masks, as
`offline_pseudo_labels` cuts them) and names the validation images' true objects. It prints the
share of objects and of their pixels named right. Use it to compare pretrainings (the draw of
the pretraining, its data, its steps) in under a minute, before training on them.

Run: `python benchmarks/probe_crop_namer.py --data_dir DIR --num_classes N
[--checkpoint PREFIX] [--labelled_split labelled_1_16.txt] [--seed 0]` (default checkpoint: the
cached demo pretraining, run once if missing).
"""

import argparse
import os

import numpy as np

from wss import experiment
from wss.data import pipeline
from wss.method import crop_classifier, object_naming


def object_crops(data_dir, pattern, split_file, num_classes, crop_size, min_pixels, margin):
    """Crops of every object (a connected region of one class) of a set's masks.

    `wss.method.object_naming.object_crops` over the set's images, as `CropNamer.fit` cuts
    out its references.

    Returns:
      `(crops float32 [N, h, w, 3], class ids [N], pixel counts [N])`.
    """
    spec = pipeline.DatasetSpec(os.path.join(data_dir, pattern),
                                os.path.join(data_dir, split_file) if split_file else None)
    examples = ((batch["image"][0].numpy(), np.squeeze(batch["label"][0].numpy()))
                for batch in pipeline.eval_dataset(spec, num_classes=num_classes, batch_size=1))
    crops, classes, sizes = object_naming.object_crops(examples, num_classes, crop_size, margin,
                                                       min_pixels)
    if not classes.size:
        raise ValueError(f"no object of {min_pixels} pixels or more in {data_dir}/{pattern}")
    return crops.numpy(), classes, sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="a set in the project's schema")
    parser.add_argument("--num_classes", type=int, required=True, help="including background")
    parser.add_argument("--checkpoint", default=None, help="pretrained TF1 checkpoint prefix")
    parser.add_argument("--labelled_split", default="labelled_1_16.txt")
    parser.add_argument("--seed", type=int, default=0, help="the fine-tuning's seed")
    parser.add_argument("--crop_size", type=int, default=57, help="the pretraining's crop")
    parser.add_argument("--min_pixels", type=int, default=30)
    parser.add_argument("--margin", type=float, default=4.0)
    args = parser.parse_args()

    experiment.parse_experiment_config(gin_files=["pretrain_demo.gin"])
    checkpoint = args.checkpoint or experiment.pretrained_checkpoint("pretrain_demo.gin")
    crop_size = (args.crop_size, args.crop_size)
    references, reference_classes, _ = object_crops(
        args.data_dir, "train-*.tfrecord", args.labelled_split, args.num_classes, crop_size,
        args.min_pixels, args.margin)
    crops, classes, sizes = object_crops(args.data_dir, "val-*.tfrecord", None,
                                         args.num_classes, crop_size, args.min_pixels,
                                         args.margin)
    scorer = crop_classifier.FineTunedScorer(checkpoint, args.num_classes, seed=args.seed)
    loss = scorer.fit(references, reference_classes)
    named = np.asarray(scorer(crops))[:, 1:].argmax(axis=1) + 1
    right = named == classes
    print(f"\n{args.data_dir}: {checkpoint}, fine-tuned on {len(reference_classes)} labelled "
          f"objects (final loss {loss:.3f}), seed {args.seed}\n")
    print("| validation objects | named right | their pixels named right |")
    print("| --- | --- | --- |")
    print(f"| {len(classes)} | {right.mean():.1%} | {(right * sizes).sum() / sizes.sum():.1%} |")


if __name__ == "__main__":
    main()
