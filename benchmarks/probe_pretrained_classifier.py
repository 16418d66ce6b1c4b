"""Probe: does the demo's pretrained classifier recognise the segmentation sets' objects?

The demo's pretraining (`pretrain_demo.gin`) learns 70 shape x texture categories that include
every class of both built-in segmentation sets. This probe asks whether that knowledge reaches
the segmentation sets' objects at all, before any fine-tuning: every object of the validation
images (a class's pixels in one image, at least `--min_pixels`) is cropped to its bounding
square plus a margin, resized to the pretraining crop, and classified by the pretrained
network with its logits restricted to the set's classes. Names are `shape_texture`, so the
table also gives how often the shape and the texture alone are right; chance is one over the
number of shapes and of textures.

Run: `python benchmarks/probe_pretrained_classifier.py [--variant random_colours]
[--checkpoint PREFIX]` (default: the cached demo pretraining, run once if missing).
"""

import argparse
import os

import numpy as np

from wss import experiment
from wss.data import pipeline, synthetic, synthetic_classification
from wss.method import object_naming
from wss.models import build_image_classifier, load_deeplab_checkpoint


def object_crops(images_and_masks, num_classes, crop_size, min_pixels, margin):
    """Square crops around every object, resized to `crop_size`, and their class ids.

    An object here is all of a class's pixels in one image (the sixteenth session's probe);
    `wss.method.object_naming` cuts out each connected region instead.
    """
    crops, classes = [], []
    for image, mask in images_and_masks:
        for class_id in range(1, num_classes):
            region = mask == class_id
            if region.sum() < min_pixels:
                continue
            boxes = object_naming.square_boxes([region], margin)
            crops.append(object_naming.crop_regions(image, boxes, crop_size)[0].numpy())
            classes.append(class_id)
    return np.stack(crops), np.array(classes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="random_colours", choices=sorted(synthetic.VARIANTS))
    parser.add_argument("--checkpoint", default=None, help="TF1 checkpoint prefix")
    parser.add_argument("--min_pixels", type=int, default=60)
    parser.add_argument("--margin", type=float, default=4.0)
    args = parser.parse_args()

    experiment.parse_experiment_config(gin_files=["pretrain_demo.gin"])
    checkpoint = args.checkpoint or experiment.pretrained_checkpoint("pretrain_demo.gin")
    model = build_image_classifier(num_logits=synthetic_classification.NUM_CLASSES - 1)
    print(load_deeplab_checkpoint(model, checkpoint).summary())

    variant = synthetic.get_variant(args.variant)
    directory = experiment.synthetic_dataset_dir(variant=args.variant)
    dataset = pipeline.eval_dataset(
        pipeline.DatasetSpec(os.path.join(directory, "val-*.tfrecord")), variant.num_classes)
    pairs = ((batch["image"][0].numpy(), np.squeeze(batch["label"][0].numpy()))
             for batch in dataset)
    crops, classes = object_crops(pairs, variant.num_classes, (57, 57), args.min_pixels,
                                  args.margin)
    logits = np.concatenate([model(crops[i:i + 64], training=False)["logits"].numpy()
                             for i in range(0, len(crops), 64)])
    # Logit k is category id k + 1; restrict to the set's classes (ids 1..C-1).
    names = variant.class_names
    columns = [synthetic_classification.CATEGORY_NAMES.index(name) for name in names[1:]]
    predicted = logits[:, columns].argmax(axis=1) + 1
    shape = np.array([name.split("_")[0] for name in names])
    texture = np.array([name.split("_")[-1] for name in names])
    print(f"\n{args.variant}: {len(classes)} validation objects, pretrained classifier "
          f"({checkpoint})\n")
    print("| named right | accuracy | chance |\n| --- | --- | --- |")
    print(f"| class | {np.mean(predicted == classes):.3f} | {1 / (len(names) - 1):.3f} |")
    print(f"| shape | {np.mean(shape[predicted] == shape[classes]):.3f} | "
          f"{1 / len(set(shape[1:])):.3f} |")
    print(f"| texture | {np.mean(texture[predicted] == texture[classes]):.3f} | "
          f"{1 / len(set(texture[1:])):.3f} |")


if __name__ == "__main__":
    main()
