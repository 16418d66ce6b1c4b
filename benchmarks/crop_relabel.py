"""Probe data: a frozen teacher's pseudo labels with each object renamed by a crop classifier.

Why: the supervised 1/16 teacher finds the objects of an unlabelled image but names many of
them wrong (its errors are of shape, whole objects at a time), and fine-tuning on a few scenes
loses what the pretrained network knew about shapes; yet cropped to one object, the pretrained
network still recognises it (`probe_pretrained_classifier.py`). This script puts that back into
the pseudo labels, using only what a semi-supervised run has (the labelled images' masks, the
unlabelled images, the teacher, the pretraining):

1. the teacher (a `wss.train` run, e.g. `demo_supervised.gin`'s) predicts every unlabelled
   image whole, averaged with its mirror image (`PseudoSegObjective.teacher_mirror`);
2. a *region* is a connected set (8-connectivity) of pixels with one predicted foreground
   class, of at least `--min_pixels` pixels (smaller ones keep the teacher's labels);
3. each region is cropped to its bounding square plus `--margin` pixels and resized to the
   pretraining crop, and the pretrained image classifier's logits describe it;
4. a ridge regression from those logits (standardised) to the classes, fit on the labelled
   images' objects (a class's connected pixels in a labelled mask, the same crops), scores
   each region's classes; softmax at `--temperature`;
5. the region gets the foreground class with the largest product of that softmax and the
   teacher's mean foreground probability over the region.

The copy of the dataset (`noisy_masks.write_noisy_copy`) then has these labels as the
unlabelled images' masks; `demo.gin` with `PseudoLabelConfig.source = 'ground_truth'`,
`train.teacher_checkpoint = None`, `train.ema_teacher_decay = 0.0` and
`PseudoSegObjective.teacher_mirror = False` trains L_u on them (the teacher's own labels,
fixed, give what `demo.gin`'s online frozen teacher gives: `benchmarks/RESULTS.md`,
twenty-sixth session). Measured: `benchmarks/RESULTS.md`, twenty-ninth session.

Run (needs scipy: `pip install -e ".[data]"`):
`python benchmarks/crop_relabel.py --data_dir SET --output_dir COPY --teacher_run RUN
--num_classes N [--pretrained_checkpoint PREFIX]` (default: the cached demo pretraining).
Prints the share of the unlabelled images' foreground pixels that the teacher and the
relabelled labels name right (the sets' masks are known).
"""

import argparse
import glob
import os

import numpy as np
import tensorflow as tf
from noisy_masks import write_noisy_copy  # noqa: E402 (same directory)
from probe_teacher_ensemble import ensemble_probabilities, restore_ensemble  # noqa: E402

from wss import experiment
from wss.data import records, splits, synthetic_classification
from wss.models import build_image_classifier, load_deeplab_checkpoint

CROP_SIZE = (57, 57)  # pretrain_demo.gin's crop.


def class_regions(prediction, num_classes, min_pixels):
    """The connected regions (8-connectivity) of each foreground class of a label map.

    Args:
      prediction: int `[H, W]` class ids (0 background).
      num_classes: classes including background.
      min_pixels: regions smaller than this are left out.

    Returns:
      list of boolean `[H, W]` masks, by class id and then scan order.
    """
    from scipy import ndimage  # Optional dependency (the `data` extra).

    eight = ndimage.generate_binary_structure(2, 2)
    regions = []
    for class_id in range(1, num_classes):
        components, count = ndimage.label(prediction == class_id, structure=eight)
        for index in range(1, count + 1):
            region = components == index
            if region.sum() >= min_pixels:
                regions.append(region)
    return regions


def square_box(region, margin):
    """The region's bounding square plus `margin` pixels, normalised `[y1, x1, y2, x2]`."""
    height, width = region.shape
    ys, xs = np.nonzero(region)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 + margin
    return [(cy - half) / height, (cx - half) / width, (cy + half) / height,
            (cx + half) / width]


def fit_ridge(features, classes, num_classes, l2):
    """Ridge regression from standardised features (plus a bias) to one-hot classes.

    Args:
      features: float `[N, D]`.
      classes: int `[N]` class ids in `[0, num_classes)`.
      num_classes: classes including background.
      l2: the ridge penalty (on the bias too).

    Returns:
      `(mean, std, weights)`; `scores = [(x - mean) / std, 1] @ weights`, `[N, num_classes]`.
    """
    mean, std = features.mean(0), features.std(0) + 1e-6
    design = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], 1)
    targets = np.eye(num_classes)[classes]
    weights = np.linalg.solve(design.T @ design + l2 * np.eye(design.shape[1]),
                              design.T @ targets)
    return mean, std, weights


def ridge_scores(features, ridge):
    """Class scores `[N, num_classes]` of `fit_ridge`'s regression."""
    mean, std, weights = ridge
    design = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], 1)
    return design @ weights


def relabel_regions(probabilities, regions, scores, temperature):
    """The teacher's argmax with each region renamed (step 5 of the module docstring).

    Args:
      probabilities: float `[H, W, C]` teacher softmax.
      regions: boolean `[H, W]` masks (`class_regions` of the argmax).
      scores: float `[len(regions), C]` crop scores (column 0, background, is not used).
      temperature: softmax temperature of the foreground scores.

    Returns:
      int `[H, W]` labels.
    """
    labels = probabilities.argmax(-1)
    for region, score in zip(regions, scores):
        logits = score[1:] / temperature
        crop = np.exp(logits - logits.max())
        crop /= crop.sum()
        teacher = probabilities[region][:, 1:].mean(0)
        labels[region] = 1 + int(np.argmax(teacher * crop))
    return labels


def object_crops(image, mask, num_classes, min_pixels, margin):
    """Crops (float `[N, 57, 57, 3]`) of a labelled mask's objects and their class ids."""
    regions = class_regions(mask, num_classes, min_pixels)
    if not regions:
        return np.zeros((0,) + CROP_SIZE + (3,), np.float32), np.zeros((0,), np.int64)
    boxes = [square_box(region, margin) for region in regions]
    crops = tf.image.crop_and_resize(image[None].astype(np.float32), boxes,
                                     [0] * len(boxes), CROP_SIZE, extrapolation_value=0.0)
    return crops.numpy(), np.array([int(mask[region][0]) for region in regions])


def _read_train(data_dir):
    """Yields `(image id, image uint8 [H, W, 3], mask uint8 [H, W] or None)` of the train shards."""
    shards = sorted(glob.glob(os.path.join(data_dir, "train-*.tfrecord")))
    if not shards:
        raise ValueError(f"--data_dir={data_dir}: no train-*.tfrecord")
    for shard in shards:
        for serialized in tf.data.TFRecordDataset(shard):
            feature = tf.train.Example.FromString(serialized.numpy()).features.feature
            image_id = records.image_id(feature[records.IMAGE_FILENAME].bytes_list.value[0])
            image = tf.io.decode_image(feature[records.IMAGE_ENCODED].bytes_list.value[0],
                                       channels=3, expand_animations=False).numpy()
            mask = None
            if records.MASK_ENCODED in feature:
                mask = tf.io.decode_png(feature[records.MASK_ENCODED].bytes_list.value[0],
                                        channels=1)[..., 0].numpy()
            yield image_id, image, mask


def _same_size_chunks(examples, size=64):
    """Lists of up to `size` consecutive examples whose images have one shape."""
    chunk = []
    for example in examples:
        if chunk and (len(chunk) == size or example[1].shape != chunk[0][1].shape):
            yield chunk
            chunk = []
        chunk.append(example)
    if chunk:
        yield chunk


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--teacher_run", required=True, help="a wss.train log directory")
    parser.add_argument("--num_classes", type=int, required=True)
    parser.add_argument("--labelled_split", default="labelled_1_16.txt")
    parser.add_argument("--pretrained_checkpoint", default=None,
                        help="TF1 prefix of the image classifier (default: pretrain_demo.gin's)")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--l2", type=float, default=10.0)
    parser.add_argument("--margin", type=float, default=4.0)
    parser.add_argument("--min_pixels", type=int, default=30)
    args = parser.parse_args()

    labelled = set(splits.read_split_file(os.path.join(args.data_dir, args.labelled_split)))
    teacher = restore_ensemble([args.teacher_run])[0]
    experiment.parse_experiment_config(gin_files=["pretrain_demo.gin"])
    checkpoint = (args.pretrained_checkpoint
                  or experiment.pretrained_checkpoint("pretrain_demo.gin"))
    classifier = build_image_classifier(num_logits=synthetic_classification.NUM_CLASSES - 1)
    load_deeplab_checkpoint(classifier, checkpoint)
    describe = tf.function(lambda crops: classifier(crops, training=False)["logits"])

    def features(crops):
        return np.concatenate([
            tf.reshape(describe(tf.constant(crops[i:i + 256])), [len(crops[i:i + 256]), -1])
            .numpy() for i in range(0, len(crops), 256)])

    reference_crops, reference_classes = [], []
    for image_id, image, mask in _read_train(args.data_dir):
        if image_id in labelled and mask is not None:
            crops, classes = object_crops(image, mask, args.num_classes, args.min_pixels,
                                          args.margin)
            reference_crops.append(crops)
            reference_classes.append(classes)
    reference_classes = np.concatenate(reference_classes)
    if not len(reference_classes):
        raise ValueError(f"{args.labelled_split}: no labelled object of {args.min_pixels} "
                         f"pixels or more")
    ridge = fit_ridge(features(np.concatenate(reference_crops)), reference_classes,
                      args.num_classes, args.l2)

    masks, right = {}, np.zeros(3)
    for chunk in _same_size_chunks(
            example for example in _read_train(args.data_dir) if example[0] not in labelled):
        images = np.stack([image for _, image, _ in chunk])
        all_probabilities = ensemble_probabilities(
            teacher, tf.constant(images, tf.float32), flip=True).numpy()
        for (image_id, image, mask), probabilities in zip(chunk, all_probabilities):
            prediction = probabilities.argmax(-1)
            regions = class_regions(prediction, args.num_classes, args.min_pixels)
            labels = prediction
            if regions:
                boxes = [square_box(region, args.margin) for region in regions]
                crops = tf.image.crop_and_resize(image[None].astype(np.float32), boxes,
                                                 [0] * len(boxes), CROP_SIZE,
                                                 extrapolation_value=0.0).numpy()
                labels = relabel_regions(probabilities, regions,
                                         ridge_scores(features(crops), ridge),
                                         args.temperature)
            masks[image_id] = records.encode_mask(labels.astype(np.uint8))
            if mask is not None:
                foreground = (mask > 0) & (mask != records.IGNORE_LABEL)
                right += [foreground.sum(), (prediction[foreground] == mask[foreground]).sum(),
                          (labels[foreground] == mask[foreground]).sum()]
    write_noisy_copy(args.data_dir, args.output_dir, 0.0, labelled_split=args.labelled_split,
                     num_classes=args.num_classes, teacher_masks=masks)
    print(f"{len(reference_classes)} labelled objects, {len(masks)} unlabelled images")
    if right[0]:
        print(f"foreground pixels named right: teacher {100 * right[1] / right[0]:.2f}%, "
              f"relabelled {100 * right[2] / right[0]:.2f}%")


if __name__ == "__main__":
    main()
