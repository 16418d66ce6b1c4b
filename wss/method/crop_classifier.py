"""The pretrained classifier as a namer of object crops: a ridge probe or a fine-tuned copy.

`wss.method.object_naming.CropNamer` names each object of a teacher's labels by a *crop
scorer*, fit on the labelled images' objects (cut out the same way) and then asked for the
class scores of the unlabelled images' objects. Two scorers:

* `RidgeScorer`: the pretrained classifier's logits of a crop (its pooled last-block features
  for a checkpoint without a classifier), frozen, and a ridge regression from them to the
  classes (a linear probe; `object_naming.fit_ridge`).
* `FineTunedScorer`: a copy of the pretrained classifier with a new linear layer on its pooled
  last-block features, the whole network fine-tuned with Adam on the labelled crops (random
  flips, random square sub-crops resized back, brightness / contrast / saturation jitter;
  BatchNorm in inference mode, as the few crops would give poor batch statistics), scoring a
  crop by the mean logits of it and its mirror image.

Measured (benchmarks/RESULTS.md, thirty-second session): over the unlabelled training images'
objects, fine-tuning names more of the foreground right than the frozen features' ridge
regression (with the teacher's softmax, `random_colours` 54.5% against 50.1%, `large` 76.3%
against 73.1%, `shapes` 70.1% against 65.3%, seed 0): a linear probe on the frozen features
stays near its bound however many references it gets (thirty-first session).

A fine-tuned scorer is cached (`wss.cache`, `crop_scorer_<hash>`): its key is a hash of the
reference crops and classes, the fine-tuning's settings, the classifier checkpoint's files and
variable shapes, and the `wss` version. The second round of `demo.gin`'s offline labels, and
every seed of one labelled split, fit it on the same crops and load it instead (about 18 s on
2 cores); the loaded copy scores crops exactly as the one it was saved from.
"""

import hashlib
import json
import os

import gin
import keras
import numpy as np
import tensorflow as tf

from wss import cache
from wss.method import object_naming, teacher_stage

# The file a cached fine-tuned scorer writes last (its fit's summary), and its weights.
_SCORER_MARKER = "crop_scorer.json"
_WEIGHTS_FILENAME = "weights.npz"


def _save_variables(path, variables):
    """Writes the variables' values, in order, with their paths (`np.savez`)."""
    arrays = {f"v{index}": variable.numpy() for index, variable in enumerate(variables)}
    np.savez(path, paths=np.asarray([variable.path for variable in variables]), **arrays)


def _load_variables(path, variables):
    """Assigns the values `_save_variables` wrote to the same variables, in order.

    Raises:
      ValueError: naming `path` when its variables are not these (another architecture).
    """
    with np.load(path) as saved:
        paths = [str(name) for name in saved["paths"]]
        expected = [variable.path for variable in variables]
        if paths != expected:
            raise ValueError(f"{path}: a cached crop scorer of other variables ({len(paths)} "
                             f"against {len(expected)}); delete it to fine-tune again")
        for index, variable in enumerate(variables):
            variable.assign(saved[f"v{index}"])


@gin.configurable("crop_classifier", denylist=["checkpoint"])
def load_crop_classifier(checkpoint, output_stride=32):
    """The pretrained classifier of `checkpoint`, and whether it has a logits layer.

    The classifier is `wss.models.build_image_classifier` with its own gin bindings (those the
    pretraining used: `demo_model.gin` binds the demo's width; by default DeepLab's
    Xception-65 of the ImageNet checkpoints) and as many logits as the checkpoint's
    `<network>/logits` layer; a checkpoint without one (a segmentation checkpoint) loads the
    backbone alone.

    Args:
      checkpoint: a DeepLab TF1 checkpoint prefix (the run's warm start).
      output_stride: the classifier's output stride (ImageNet-style 32).

    Returns:
      (an `ImageClassifier`, whether its logits were loaded).

    Raises:
      ValueError: naming the checkpoint when it does not fit this run's backbone.
    """
    from wss.models import build_image_classifier, load_deeplab_checkpoint

    shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    probe = build_image_classifier(num_logits=1, output_stride=output_stride)
    bias_name = next(name for variable, name in probe.tf1_variable_table()
                     if name.endswith("logits/biases"))
    with_logits = bias_name in shapes
    classifier = probe
    if with_logits:
        classifier = build_image_classifier(num_logits=int(shapes[bias_name][-1]),
                                            output_stride=output_stride)
    try:
        load_deeplab_checkpoint(classifier, checkpoint, skip_last_layer=not with_logits)
    except ValueError as error:
        raise ValueError(f"{checkpoint}: the crop classifier of the offline pseudo labels "
                         f"(build_image_classifier's bindings, as in the pretraining) cannot "
                         f"load it: {error}") from error
    return classifier, with_logits


def _pooled(classifier, crops, training):
    from wss.models.classifier_head import global_pool

    features = classifier(crops, training=training)["features"]["final"]
    return tf.cast(global_pool(features)[:, 0, 0, :], tf.float32)


def _batched(function, crops, batch_size=256):
    crops = tf.convert_to_tensor(crops, tf.float32)
    return np.concatenate([function(crops[i:i + batch_size]).numpy()
                           for i in range(0, int(crops.shape[0]), batch_size)])


def crop_describer(checkpoint):
    """The pretrained classifier of `checkpoint` as a function of crops (float32 logits).

    Args:
      checkpoint: a DeepLab TF1 checkpoint prefix (see `load_crop_classifier`).

    Returns:
      (describe: float32 crops `[N, h, w, 3]` -> numpy `[N, D]`, a short description): the
      logits, or the pooled last-block features for a checkpoint without a classifier.

    Raises:
      ValueError: naming the checkpoint when it does not fit this run's backbone.
    """
    classifier, with_logits = load_crop_classifier(checkpoint)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def describe_batch(crops):
        if with_logits:
            return tf.cast(classifier(crops, training=False)["logits"], tf.float32)
        return _pooled(classifier, crops, False)

    kind = (f"{classifier.num_logits} classifier logits" if with_logits
            else "pooled backbone features")
    return (lambda crops: _batched(describe_batch, crops)), f"{kind} of {checkpoint}"


class RidgeScorer:
    """Class scores of crops: a ridge regression on frozen crop descriptions (a linear probe).

    Args:
      describe: float32 crops `[N, h, w, 3]` in [0, 255] -> features `[N, D]`
        (`crop_describer`).
      num_classes: classes including background.
      l2: ridge penalty.
      description: what `describe` is, for the logs and the labels' marker.
    """

    def __init__(self, describe, num_classes, l2=10.0, description="crop features"):
        self.describe = describe
        self.num_classes = num_classes
        self.l2 = l2
        self.description = f"a ridge regression (penalty {l2:g}) on the {description}"
        self._ridge = None

    def fit(self, crops, classes):
        """Fits the regression on labelled crops (`classes`: ids in `[1, num_classes)`)."""
        features = np.asarray(self.describe(crops), np.float64)
        self._ridge = object_naming.fit_ridge(features, classes, self.num_classes, self.l2)

    def __call__(self, crops):
        """Scores `[N, num_classes]` of the crops (column 0, background, is not used)."""
        return object_naming.ridge_scores(np.asarray(self.describe(crops), np.float64),
                                          self._ridge)


def augment_crops(crops, generator, min_scale=0.7, jitter=0.2):
    """Random flips, square sub-crops resized back, and colour jitter of a batch of crops.

    Args:
      crops: float32 `[N, h, w, 3]` in [0, 255].
      generator: a `tf.random.Generator`.
      min_scale: the smallest sub-crop side, as a fraction of the crop's.
      jitter: brightness (fraction of 255), contrast and saturation (factor 1 +- jitter).

    Returns:
      float32 `[N, h, w, 3]` in [0, 255].
    """
    crops = tf.convert_to_tensor(crops, tf.float32)
    count = tf.shape(crops)[0]
    height, width = crops.shape[1], crops.shape[2]
    flips = generator.uniform([count, 2]) < 0.5
    crops = tf.where(flips[:, 0, None, None, None], tf.reverse(crops, [2]), crops)
    crops = tf.where(flips[:, 1, None, None, None], tf.reverse(crops, [1]), crops)
    side = generator.uniform([count, 1], min_scale, 1.0)
    corner = generator.uniform([count, 2]) * (1.0 - side)
    boxes = tf.concat([corner, corner + side], axis=1)
    crops = tf.image.crop_and_resize(crops, boxes, tf.range(count), [height, width])
    brightness = generator.uniform([count, 1, 1, 1], -jitter, jitter) * 255.0
    contrast = generator.uniform([count, 1, 1, 1], 1.0 - jitter, 1.0 + jitter)
    saturation = generator.uniform([count, 1, 1, 1], 1.0 - jitter, 1.0 + jitter)
    mean = tf.reduce_mean(crops, axis=[1, 2, 3], keepdims=True)
    crops = (crops - mean) * contrast + mean + brightness
    grey = tf.reduce_mean(crops, axis=3, keepdims=True)
    crops = (crops - grey) * saturation + grey
    return tf.clip_by_value(crops, 0.0, 255.0)


class FineTunedScorer:
    """Class scores of crops: the pretrained classifier fine-tuned on the labelled crops.

    Args:
      checkpoint: the pretrained classifier's DeepLab TF1 checkpoint prefix.
      num_classes: classes including background (the new layer scores the foreground ones).
      steps: Adam steps.
      learning_rate: Adam's rate, constant.
      batch_size: crops a step, drawn at random with replacement.
      seed: seeds the crops drawn and their augmentation.
      reuse: cache the fine-tuned weights (`wss.cache`) and load them when the same crops,
        settings and checkpoint come again, instead of fine-tuning.
      cache_dir: the cache root (default: `wss.cache.default_cache_dir()`).
    """

    def __init__(self, checkpoint, num_classes, steps=300, learning_rate=3e-4, batch_size=32,
                 seed=0, reuse=False, cache_dir=None):
        self.checkpoint = checkpoint
        self.num_classes = num_classes
        self.steps = steps
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.seed = seed
        self.reuse = reuse
        self.cache_dir = cache_dir
        self.description = (f"the classifier of {checkpoint} fine-tuned on the labelled "
                            f"objects' crops ({steps} steps of {batch_size})")
        self._score = None
        self.final_loss = None
        self.loaded_from = None

    def cache_name(self, classifier, crops, classes):
        """The cache entry name of this scorer fit on `crops` and `classes`.

        Args:
          classifier: the loaded classifier (its variables' names and shapes are in the key).
          crops: float32 `[N, h, w, 3]`.
          classes: int `[N]`.

        Returns:
          `crop_scorer_<12 hex digits>`.
        """
        import wss

        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(np.asarray(crops, np.float32)).tobytes())
        digest.update(np.asarray(classes, np.int64).tobytes())
        digest.update(json.dumps([self.num_classes, self.steps, float(self.learning_rate),
                                  self.batch_size, self.seed, wss.__version__]).encode())
        for line in teacher_stage.init_fingerprint(self.checkpoint):  # Its files' stats.
            digest.update(line.encode() + b"\0")
        for variable in classifier.backbone.variables:
            digest.update(f"{variable.path} {variable.shape}".encode())
        return f"crop_scorer_{digest.hexdigest()[:12]}"

    def fit(self, crops, classes):
        """Fine-tunes a fresh copy of the classifier on labelled crops (or loads it, `reuse`).

        Args:
          crops: float32 `[N, h, w, 3]` in [0, 255].
          classes: int `[N]` class ids in `[1, num_classes)`.

        Returns:
          The mean training loss of the last tenth of the steps.
        """
        classifier, _ = load_crop_classifier(self.checkpoint)
        crops = tf.convert_to_tensor(crops, tf.float32)
        layer = keras.layers.Dense(self.num_classes - 1, kernel_initializer="zeros",
                                   name="crop_logits")
        layer.build([None, _pooled(classifier, crops[:1], False).shape[-1]])
        variables = classifier.backbone.variables + layer.variables
        if not self.reuse:
            self.final_loss = self._fine_tune(classifier, layer, crops, classes)
        else:
            name = self.cache_name(classifier, crops, classes)
            fitted = []

            def build(directory):
                loss = self._fine_tune(classifier, layer, crops, classes)
                _save_variables(os.path.join(directory, _WEIGHTS_FILENAME), variables)
                with open(os.path.join(directory, _SCORER_MARKER), "w") as f:
                    json.dump({"final_loss": loss, "description": self.description}, f)
                fitted.append(loss)

            directory = cache.ensure_cached(name, build, marker=_SCORER_MARKER,
                                            cache_dir=self.cache_dir)
            if fitted:
                self.final_loss = fitted[0]
            else:
                _load_variables(os.path.join(directory, _WEIGHTS_FILENAME), variables)
                with open(os.path.join(directory, _SCORER_MARKER)) as f:
                    self.final_loss = float(json.load(f)["final_loss"])
                self.loaded_from = directory

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def score_batch(batch):
            logits = (layer(_pooled(classifier, batch, False))
                      + layer(_pooled(classifier, tf.reverse(batch, [2]), False))) / 2.0
            return tf.concat([tf.zeros_like(logits[:, :1]), logits], axis=1)

        self._score = score_batch
        return self.final_loss

    def _fine_tune(self, classifier, layer, crops, classes):
        """Trains the backbone and `layer` on the crops; the last tenth's mean loss."""
        targets = tf.convert_to_tensor(np.asarray(classes) - 1, tf.int32)
        # The backbone and the new layer (the pretraining's logits layer is not used).
        variables = classifier.backbone.trainable_variables + layer.trainable_variables
        optimizer = keras.optimizers.Adam(self.learning_rate)
        optimizer.build(variables)
        generator = tf.random.Generator.from_seed(self.seed)
        count = int(crops.shape[0])

        @tf.function
        def train_step():
            picks = generator.uniform([self.batch_size], 0, count, dtype=tf.int32)
            batch = augment_crops(tf.gather(crops, picks), generator)
            with tf.GradientTape() as tape:
                # BatchNorm in inference mode: the pretraining's statistics, not a few crops'.
                logits = layer(_pooled(classifier, batch, False))
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    tf.gather(targets, picks), logits))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        losses = [float(train_step()) for _ in range(self.steps)]
        tail = losses[-max(1, len(losses) // 10):]
        return float(np.mean(tail)) if tail else float("nan")

    def __call__(self, crops):
        """Scores `[N, num_classes]` of the crops: column 0 (background) is 0 and unused."""
        return _batched(self._score, crops)
