"""Naming a teacher's objects by a pretrained classifier's view of their crops.

A supervised teacher trained on a few labelled images finds the objects of an unlabelled image
but names many of them wrong, whole objects at a time; the pretrained image classifier (the
warm start: the demo's pretraining, or an ImageNet checkpoint) still recognises an object cut
out of its scene. `CropNamer` puts the two together, using only what a semi-supervised run has:

1. a *region* is a connected set (8-connectivity) of the pixels of one foreground class in the
   teacher's argmax (`connected_regions`), of at least `min_pixels` pixels;
2. each region is cut out as its bounding square plus `margin` pixels (`square_boxes`),
   resized to the classifier's crop;
3. a *crop scorer* (`wss.method.crop_classifier`), fit on the labelled images' objects (the
   connected regions of their masks, cut out alike), scores each crop's classes: the
   classifier fine-tuned on those crops (`FineTunedScorer`, the default), or a ridge
   regression on its frozen logits (`RidgeScorer`, `fit_ridge`);
4. the region is named by the foreground class with the largest product of the softmax of
   those scores (at `temperature`) and the teacher's mean foreground softmax over the region
   (`rename_regions`); pixels outside regions keep the teacher's argmax. With `min_confidence`
   a region whose normalised product (the posterior of its name) is below it gets the ignore
   label instead: the student does not learn from it.

Measured (benchmarks/RESULTS.md, twenty-ninth session): on the synthetic sets' validation
objects the teacher names 45.1% / 67.4% right, the ridge regression 54.5% / 69.8%, the product
58.9% / 74.3%; over the unlabelled training images' foreground, the fine-tuned classifier's
product names 4-6 points more right than the ridge's (thirty-second session). Used by
`wss.method.offline_labels` (`train.offline_pseudo_labels`).
"""

import numpy as np
import tensorflow as tf

from wss import config as config_lib
from wss.data.records import IGNORE_LABEL

# The 8 neighbours of a pixel (8-connectivity).
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def connected_components(label_map):
    """Connected components (8-connectivity) of each value of a label map.

    Label propagation with pointer jumping: every pixel starts as its own component (its flat
    index) and takes the smallest index among its neighbours of the same value until nothing
    changes.

    Args:
      label_map: int `[H, W]`.

    Returns:
      int64 `[H, W]`: for every pixel, the smallest flat index of its component (so two pixels
      share a value exactly when they are connected through pixels of their own value).
    """
    label_map = np.asarray(label_map)
    height, width = label_map.shape
    sentinel = height * width
    values = np.pad(label_map.astype(np.int64), 1, constant_values=-1)
    same = [values[1 + dy:1 + dy + height, 1 + dx:1 + dx + width] == label_map
            for dy, dx in _NEIGHBOURS]
    components = np.arange(sentinel, dtype=np.int64).reshape(height, width)
    while True:
        padded = np.pad(components, 1, constant_values=sentinel)
        smallest = components
        for (dy, dx), neighbour_same in zip(_NEIGHBOURS, same):
            neighbour = padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
            smallest = np.where(neighbour_same, np.minimum(smallest, neighbour), smallest)
        flat = smallest.ravel()
        flat = flat[flat]  # Pointer jumping: a pixel's component is its root's component.
        smallest = flat.reshape(height, width)
        if np.array_equal(smallest, components):
            return components
        components = smallest


def connected_regions(label_map, num_classes, min_pixels):
    """The connected regions (8-connectivity) of each foreground class of a label map.

    Args:
      label_map: int `[H, W]` class ids (0 is background; values >= `num_classes`, such as
        the ignore label, are not a class).
      num_classes: classes including background.
      min_pixels: regions with fewer pixels are left out.

    Returns:
      (list of boolean `[H, W]` masks, list of their class ids), by class id and then by the
      position of each region's first pixel in scan order.
    """
    label_map = np.asarray(label_map)
    components = connected_components(label_map)
    regions, classes = [], []
    for class_id in range(1, num_classes):
        of_class = label_map == class_id
        if not of_class.any():
            continue
        roots, counts = np.unique(components[of_class], return_counts=True)
        for root, count in zip(roots, counts):
            if count >= min_pixels:
                regions.append(components == root)
                classes.append(class_id)
    return regions, classes


def square_boxes(regions, margin):
    """Each region's bounding square plus `margin` pixels, as normalised `[y1, x1, y2, x2]`.

    The square is centred on the bounding box; `tf.image.crop_and_resize` samples pixel
    `y1 * (H - 1)` to `y2 * (H - 1)`, so the boxes are normalised by `H - 1` and `W - 1`.

    Args:
      regions: boolean `[H, W]` masks, each with at least one pixel.
      margin: pixels added on every side.

    Returns:
      float32 `[len(regions), 4]`.
    """
    boxes = np.zeros((len(regions), 4), np.float32)
    for index, region in enumerate(regions):
        height, width = region.shape
        ys, xs = np.nonzero(region)
        centre_y, centre_x = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 + margin
        boxes[index] = [(centre_y - half) / max(height - 1, 1),
                        (centre_x - half) / max(width - 1, 1),
                        (centre_y + half) / max(height - 1, 1),
                        (centre_x + half) / max(width - 1, 1)]
    return boxes


def crop_regions(image, boxes, crop_size):
    """The image's crops of `boxes`, resized to `crop_size` (zeros outside the image).

    Args:
      image: `[H, W, 3]` image in [0, 255].
      boxes: float `[N, 4]` normalised boxes (`square_boxes`).
      crop_size: (height, width) of the crops.

    Returns:
      float32 `[N, crop height, crop width, 3]`.
    """
    image = tf.cast(tf.convert_to_tensor(image), tf.float32)[None]
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return tf.image.crop_and_resize(image, boxes, tf.zeros([tf.shape(boxes)[0]], tf.int32),
                                    list(crop_size), extrapolation_value=0.0)


def fit_ridge(features, classes, num_classes, l2):
    """Ridge regression from standardised features (plus a bias) to one-hot classes.

    Args:
      features: float `[N, D]`.
      classes: int `[N]` class ids in `[0, num_classes)`.
      num_classes: classes including background.
      l2: the ridge penalty (on the bias too).

    Returns:
      `(mean, std, weights)`: `scores = [(x - mean) / std, 1] @ weights`, `[N, num_classes]`.
    """
    features = np.asarray(features, np.float64)
    mean, std = features.mean(0), features.std(0) + 1e-6
    design = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], 1)
    targets = np.eye(num_classes)[np.asarray(classes)]
    weights = np.linalg.solve(design.T @ design + l2 * np.eye(design.shape[1]),
                              design.T @ targets)
    return mean, std, weights


def ridge_scores(features, ridge):
    """Class scores `[N, num_classes]` of `fit_ridge`'s regression."""
    mean, std, weights = ridge
    features = np.asarray(features, np.float64)
    design = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], 1)
    return design @ weights


def object_crops(examples, num_classes, crop_size, margin, min_pixels):
    """The crops of every object of labelled masks: connected regions of one class.

    Args:
      examples: iterable of (image `[H, W, 3]` in [0, 255], mask `[H, W]` with class ids and
        the ignore label).
      num_classes: classes including background.
      crop_size: (height, width) of the crops.
      margin: pixels around each region's bounding square.
      min_pixels: smaller regions are left out.

    Returns:
      `(crops float32 [N, crop height, crop width, 3], class ids int [N], pixel counts
      int [N])`, in the examples' order and within each as `connected_regions` orders them.
    """
    crops, classes, sizes = [], [], []
    for image, mask in examples:
        regions, region_classes = connected_regions(mask, num_classes, min_pixels)
        if regions:
            crops.append(crop_regions(image, square_boxes(regions, margin), crop_size))
            classes.extend(region_classes)
            sizes.extend(int(region.sum()) for region in regions)
    crops = tf.concat(crops, axis=0) if crops else tf.zeros([0, *crop_size, 3], tf.float32)
    return crops, np.asarray(classes, np.int64), np.asarray(sizes, np.int64)


def rename_regions(probabilities, regions, scores, temperature, min_confidence=0.0):
    """The teacher's argmax with each region renamed (step 4 of the module docstring).

    Args:
      probabilities: float `[H, W, C]` teacher softmax.
      regions: boolean `[H, W]` masks.
      scores: float `[len(regions), C]` crop scores (column 0, background, is not used).
      temperature: softmax temperature of the foreground scores.
      min_confidence: a region whose name has a posterior (the product of the crop's and the
        teacher's foreground softmaxes, normalised over the foreground classes) below this gets
        `IGNORE_LABEL`; 0 names every region.

    Returns:
      int32 `[H, W]` labels.
    """
    probabilities = np.asarray(probabilities)
    labels = probabilities.argmax(-1).astype(np.int32)
    for region, score in zip(regions, scores):
        logits = np.asarray(score[1:], np.float64) / temperature
        crop = np.exp(logits - logits.max())
        crop /= crop.sum()
        teacher = np.asarray(probabilities[region][:, 1:].mean(0), np.float64)
        product = teacher * crop
        total = product.sum()
        posterior = product / total if total > 0 else np.full_like(product, 1 / len(product))
        name = int(np.argmax(posterior))
        labels[region] = 1 + name if posterior[name] >= min_confidence else IGNORE_LABEL
    return labels


class CropNamer:
    """Renames the regions of a teacher's labels (`fit` on labelled objects, then call).

    Args:
      scorer: a crop scorer (`wss.method.crop_classifier.RidgeScorer` or `FineTunedScorer`):
        `scorer.fit(crops, classes)` learns from float32 crops `[N, h, w, 3]` in [0, 255] and
        their class ids, `scorer(crops)` gives class scores `[N, num_classes]` (column 0,
        background, is not used).
      num_classes: classes including background.
      crop_size: the crops' (height, width): the classifier's training crop.
      temperature: softmax temperature of the crop scores.
      margin: pixels around each region's bounding square.
      min_pixels: smaller regions keep the teacher's labels (and smaller labelled objects are
        not references).
      min_confidence: regions whose name's posterior is below this get the ignore label
        (`rename_regions`).
    """

    def __init__(self, scorer, num_classes, crop_size, temperature=0.1, margin=4.0,
                 min_pixels=30, min_confidence=0.0):
        self.scorer = scorer
        self.num_classes = num_classes
        self.crop_size = tuple(crop_size)
        self.temperature = temperature
        self.margin = margin
        self.min_pixels = min_pixels
        self.min_confidence = min_confidence
        self.num_references = 0

    def _crops(self, image, regions):
        return crop_regions(image, square_boxes(regions, self.margin), self.crop_size)

    def fit(self, examples):
        """Fits the scorer on labelled objects.

        Args:
          examples: iterable of (image `[H, W, 3]`, mask `[H, W]` with class ids and the
            ignore label).

        Returns:
          The number of reference objects.

        Raises:
          ValueError: when no labelled object has `min_pixels` pixels or more.
        """
        crops, classes, _ = object_crops(examples, self.num_classes, self.crop_size,
                                         self.margin, self.min_pixels)
        if not classes.size:
            raise ValueError(f"no labelled object of {self.min_pixels} pixels or more to learn "
                             f"the crops' classes from (offline_pseudo_labels.min_pixels)")
        self.scorer.fit(crops, classes)
        self.num_references = len(classes)
        return self.num_references

    def __call__(self, image, probabilities):
        """The teacher's argmax with each region renamed.

        Args:
          image: `[H, W, 3]` image in [0, 255].
          probabilities: float `[H, W, C]` teacher softmax of the image.

        Returns:
          int32 `[H, W]` labels (`IGNORE_LABEL` where a region's name is below
          `min_confidence`).

        Raises:
          RuntimeError: before `fit`.
        """
        if not self.num_references:
            raise RuntimeError("CropNamer: call fit() on labelled objects first")
        probabilities = np.asarray(probabilities)
        regions, _ = connected_regions(probabilities.argmax(-1), self.num_classes,
                                       self.min_pixels)
        if not regions:
            return probabilities.argmax(-1).astype(np.int32)
        scores = np.asarray(self.scorer(self._crops(image, regions)), np.float64)
        return rename_regions(probabilities, regions, scores, self.temperature,
                              self.min_confidence)


def check_settings(crop_size, temperature, l2, margin, min_pixels, min_confidence=0.0):
    """Fails naming the `offline_pseudo_labels` binding whose value is out of range."""
    config_lib.check_size("offline_pseudo_labels.crop_size", crop_size, minimum=8)
    config_lib.check_number("offline_pseudo_labels.temperature", temperature, minimum=0.0,
                            exclusive_minimum=True)
    config_lib.check_number("offline_pseudo_labels.l2", l2, minimum=0.0, exclusive_minimum=True)
    config_lib.check_number("offline_pseudo_labels.margin", margin, minimum=0.0)
    config_lib.check_int("offline_pseudo_labels.min_pixels", min_pixels, minimum=1)
    config_lib.check_number("offline_pseudo_labels.min_confidence", min_confidence, minimum=0.0,
                            maximum=1.0)
