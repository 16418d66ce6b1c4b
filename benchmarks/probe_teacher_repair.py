"""Probe: can a trained run's decoder labels be repaired after the fact?

PseudoSeg with unlabelled images pays only when its teacher names most objects' classes right
(README, "Why PseudoSeg with unlabelled images does not pay here"). This probe asks whether two
cheap repairs of the teacher's labels get it closer, scored on the validation images of the
run's own config at the decoder's resolution (as `probe_pseudo_labels.py` scores them):

- mirror average: the mean of the decoder's softmax on the image and (mirrored back) on its
  left-right mirror image, DeepLab's evaluation-time flip, one more forward pass;
- object vote: each connected foreground region of the prediction (8-connected) gets one
  class, the class with the largest summed probability over its pixels ("sum") or the class
  of most of its pixels ("majority").

The network runs in inference mode on whole images padded to the aligned size
`n * output_stride + 1`, so the mirror of a padded image is on the same logit grid.

Run: `python benchmarks/probe_teacher_repair.py --run_dir RUN` (needs scipy: the `data`
extra).
"""

import argparse

import numpy as np
import tensorflow as tf
from probe_pseudo_labels import pad_to_aligned_size, print_label_scores, restore_run, score_labels
from scipy import ndimage

from wss.data import pipeline
from wss.resize import resize_labels, spatial_size


def object_vote(probs, predicted, rule):
    """Gives each connected foreground region of a prediction a single class.

    Args:
      probs: `[B, h, w, C]` numpy softmax.
      predicted: `[B, h, w]` numpy argmax of `probs`.
      rule: "sum" (largest summed foreground probability) or "majority" (most pixels).

    Returns:
      `[B, h, w]` int numpy labels; background pixels are left as they are.
    """
    voted = predicted.copy()
    for index in range(predicted.shape[0]):
        regions, count = ndimage.label(predicted[index] > 0, structure=np.ones((3, 3)))
        for region in range(1, count + 1):
            inside = regions == region
            if rule == "sum":
                label = 1 + int(np.argmax(probs[index][inside][:, 1:].sum(axis=0)))
            else:
                label = int(np.bincount(predicted[index][inside]).argmax())
            voted[index][inside] = label
    return voted


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True, help="a wss.train log directory")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()

    model, _, checkpoint, num_classes, spec = restore_run(args.run_dir)
    sums = {}

    def score(name, predicted, labels):
        score_labels(sums, name, predicted, labels, num_classes)

    for batch in pipeline.eval_dataset(spec, num_classes, batch_size=args.batch_size):
        batch = pad_to_aligned_size(batch, model.output_stride)
        image = batch["image"]
        plain = tf.nn.softmax(tf.cast(model(image, training=False)["logits"], tf.float32))
        mirrored = tf.nn.softmax(tf.cast(
            model(image[:, :, ::-1], training=False)["logits"], tf.float32))[:, :, ::-1]
        labels = resize_labels(batch["label"], spatial_size(plain)).numpy()
        for name, probs in (("decoder", plain.numpy()),
                            ("mirror average", ((plain + mirrored) / 2).numpy())):
            predicted = probs.argmax(axis=-1)
            score(name, predicted, labels)
            for rule in ("sum", "majority"):
                score(f"{name} + object vote ({rule})", object_vote(probs, predicted, rule),
                      labels)

    print(f"\n{checkpoint}: the decoder's labels of the validation images, repaired\n")
    print_label_scores(sums)


if __name__ == "__main__":
    main()
