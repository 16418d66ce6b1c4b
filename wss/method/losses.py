"""The PseudoSeg losses (section 3.1) and DeepLab's weight decay.

Every loss returns a float32 scalar for the batch it is given, i.e. the local batch of one
replica, as a *mean over that replica's valid pixels / entries* (matching the TF1 reference,
where each clone's loss was normalised by its own pixel count and clone losses were summed).
Under `tf.distribute` the trainer divides each by the number of replicas before summing
gradients (`loss / strategy.num_replicas_in_sync`), which reproduces the reference's
average over clones. Logits are cast to float32 inside each loss (mixed precision safe).

| loss | function | logits resolution | target |
| --- | --- | --- | --- |
| L_s  | `supervised_loss` | any, upsampled to the label size | int `[B, H, W]`, 255 ignored |
| L_u  | `unlabelled_loss` | decoder resolution `[B, h, w, C]` | pseudo labels `[B, h, w, C]` |
| L_u, offline | `offline_unlabelled_loss` | any, upsampled to the label size | int `[B, H, W]` |
| L_x  | `classification_loss` | `[B, C - 1]` | multi-hot `[B, C - 1]` |
| L_sa | `sgc_loss` | CAM resolution, upsampled to the label size | int labels `[B, H, W]` |

Weight decay (`weight_decay_loss`) follows DeepLab's slim `l2_regularizer`: `weight * sum(w^2) / 2`
over convolution and dense kernels (including separable convolutions' pointwise kernels);
depthwise kernels are excluded unless `regularize_depthwise=True` (DeepLab's
`regularize_depthwise=False` default for Xception and the decoder); BatchNorm parameters and
biases are never decayed.

These are plain functions, not gin configurables: their knobs (`L_u`'s weight, the weight-decay
options) are arguments of the objective that calls them (`wss.method.objective.PseudoSegObjective`).
"""

import tensorflow as tf

from wss import resize
from wss.data.records import IGNORE_LABEL


def _div_maybe_zero(total, count):
    """`total / count`, 0 when `count` is 0 (the reference's `_div_maybe_zero`)."""
    count = tf.cast(count, tf.float32)
    return tf.cast(count > 0, tf.float32) * total / tf.maximum(count, 1e-5)


def pixel_cross_entropy(logits, labels, ignore_label=IGNORE_LABEL, upsample=True):
    """Softmax cross-entropy against integer labels, mean over non-ignored pixels.

    Args:
      logits: `[B, h, w, C]` logits, any float dtype.
      labels: int `[B, H, W]` (or `[B, H, W, 1]`) class ids; `ignore_label` pixels are ignored.
      ignore_label: label value to ignore.
      upsample: if True, logits are bilinearly upsampled (align_corners=True) to the label size
        (DeepLab's `upsample_logits=True`); otherwise logits and labels must have equal size.

    Returns:
      float32 scalar: sum of pixel losses / number of non-ignored pixels (0 if none).
    """
    losses, keep = _pixel_losses(logits, labels, ignore_label, upsample)
    return _div_maybe_zero(tf.reduce_sum(losses * keep), tf.reduce_sum(keep))


def _pixel_losses(logits, labels, ignore_label=IGNORE_LABEL, upsample=True):
    """Per-pixel cross-entropy `[B, H, W]` and the float mask of non-ignored labels.

    Args and upsampling as `pixel_cross_entropy`'s (which averages these over the mask).
    """
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 4:
        labels = labels[..., 0]
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    if upsample:
        logits = resize.resize_like(logits, labels[..., tf.newaxis])
    keep = tf.not_equal(labels, ignore_label)
    safe_labels = tf.where(keep, labels, tf.zeros_like(labels))
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    return losses, tf.cast(keep, tf.float32)


def supervised_loss(logits, labels, ignore_label=IGNORE_LABEL):
    """L_s: pixel cross-entropy of the decoder on labelled images.

    Args:
      logits: `[B, h, w, C]` decoder logits (upsampled here to the label size, align_corners).
      labels: int `[B, H, W]`, `ignore_label` ignored.
      ignore_label: ignored label value.

    Returns:
      float32 scalar, mean over this replica's non-ignored pixels.
    """
    return pixel_cross_entropy(logits, labels, ignore_label)


def unlabelled_loss(pseudo_labels, strong_logits, strong_valid, pixel_weights=None, weight=1.0,
                    mask_align_corners=True):
    """L_u: soft cross-entropy between pseudo labels and the strong view's decoder logits.

    `sum_pixels(weight_px * valid * CE(y, softmax(strong_logits))) / sum_pixels(valid)`, where
    `valid` is `strong_valid` (padding and CutOut excluded) downsampled to the decoder resolution
    and `weight_px` the confidence weights of `make_pseudo_labels`. As in the reference, the
    denominator counts valid pixels, not only the confident ones.

    Args:
      pseudo_labels: `[B, h, w, C]` target distributions at the decoder resolution
        (stop-gradient is applied here as well).
      strong_logits: `[B, h, w, C]` strong-view decoder logits.
      strong_valid: `[B, H, W]` mask at the image resolution (or already `[B, h, w]`).
      pixel_weights: optional `[B, h, w]` weights (e.g. confidence threshold mask).
      weight: multiplier of the loss (the reference's `unlabeled_weight`, default 1;
        `PseudoSegObjective.unlabelled_weight`).
      mask_align_corners: alignment used to downsample the mask (see `wss.resize`).

    Returns:
      float32 scalar, `weight` times the mean over this replica's valid pixels.
    """
    strong_logits = tf.cast(strong_logits, tf.float32)
    targets = tf.stop_gradient(tf.cast(pseudo_labels, tf.float32))
    valid = resize.downsample_mask(strong_valid, resize.spatial_size(strong_logits),
                                   align_corners=mask_align_corners)
    losses = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=strong_logits)
    masked = valid
    if pixel_weights is not None:
        masked = masked * tf.stop_gradient(tf.cast(pixel_weights, tf.float32))
    loss = _div_maybe_zero(tf.reduce_sum(losses * masked), tf.reduce_sum(valid))
    return weight * loss


def offline_unlabelled_loss(labels, strong_logits, strong_valid, weight=1.0):
    """L_u against offline hard labels at the image resolution, as L_s is computed.

    The strong view's logits are upsampled to the labels' size (bilinear, aligned corners:
    `pixel_cross_entropy`'s, DeepLab's `upsample_logits`) and compared with the labels there,
    instead of the labels being sampled at the decoder's stride (`unlabelled_loss`, whose
    online targets only exist there). `sum(CE * valid * known) / sum(valid)`: the denominator
    counts the valid pixels, ignored labels included, as `unlabelled_loss`'s does.

    Args:
      labels: int `[B, H, W]` offline pseudo labels of the strong view; `IGNORE_LABEL` ignored.
      strong_logits: `[B, h, w, C]` strong-view decoder logits.
      strong_valid: `[B, H, W]` mask of the strong view's real pixels (padding and CutOut 0).
      weight: multiplier of the loss (`PseudoSegObjective.unlabelled_weight`).

    Returns:
      float32 scalar, `weight` times the mean over this replica's valid pixels.
    """
    losses, known = _pixel_losses(strong_logits, labels)
    valid = tf.cast(strong_valid, tf.float32)
    return weight * _div_maybe_zero(tf.reduce_sum(losses * known * valid), tf.reduce_sum(valid))


def classification_loss(cls_logits, class_labels):
    """L_x: multi-label sigmoid cross-entropy of the image classifier.

    Args:
      cls_logits: `[B, C - 1]` classifier logits.
      class_labels: `[B, C - 1]` multi-hot labels.

    Returns:
      float32 scalar, mean over the `B * (C - 1)` entries of this replica.
    """
    losses = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(class_labels, tf.float32), logits=tf.cast(cls_logits, tf.float32))
    return tf.reduce_mean(losses)


def sgc_loss(sgc_logits, labels, ignore_label=IGNORE_LABEL):
    """L_sa: pixel cross-entropy of the SGC head on labelled images.

    The SGC head's inputs are stop-gradient, so this loss trains the head's variables only.

    Args:
      sgc_logits: `[B, h, w, C]` SGC logits at the CAM resolution (upsampled here to the label
        size, align_corners).
      labels: int `[B, H, W]`, `ignore_label` ignored.
      ignore_label: ignored label value.

    Returns:
      float32 scalar, mean over this replica's non-ignored pixels.
    """
    return pixel_cross_entropy(sgc_logits, labels, ignore_label)


def is_decayed_variable(variable, regularize_depthwise=False):
    """Whether DeepLab's L2 weight decay applies to a variable (see the module docstring).

    Kernels are recognised by name: the last path component is `kernel`, `pointwise_kernel` or
    `depthwise_kernel` (Keras), or `weights` (slim-style names); a kernel is depthwise when its
    name is `depthwise_kernel` or its layer's name contains `depthwise`.

    Args:
      variable: a `tf.Variable` / Keras variable.
      regularize_depthwise: whether depthwise kernels are decayed too.

    Returns:
      bool.
    """
    path = getattr(variable, "path", None) or variable.name
    path = path.split(":")[0]
    parts = path.split("/")
    name = parts[-1]
    if name not in ("kernel", "pointwise_kernel", "depthwise_kernel", "weights"):
        return False
    if len(variable.shape) < 2:
        return False
    layer = parts[-2] if len(parts) > 1 else ""
    depthwise = name == "depthwise_kernel" or "depthwise" in layer
    return regularize_depthwise or not depthwise


def weight_decay_loss(variables, weight=4e-5, regularize_depthwise=False, exclude=()):
    """DeepLab's L2 weight decay, `weight * sum_w sum(w^2) / 2` over the selected kernels.

    Args:
      variables: iterable of variables (e.g. `model.trainable_variables`).
      weight: decay factor (4e-5 for Xception, 1e-4 for ResNet in DeepLab;
        `PseudoSegObjective.weight_decay`, `pretrain.weight_decay`).
      regularize_depthwise: also decay depthwise kernels.
      exclude: substrings; variables whose path contains any of them are skipped (e.g. the SGC
        head, which the reference did not regularise).

    Returns:
      float32 scalar.
    """
    terms = []
    for variable in variables:
        path = getattr(variable, "path", None) or variable.name
        if any(pattern in path for pattern in exclude):
            continue
        if is_decayed_variable(variable, regularize_depthwise):
            terms.append(tf.nn.l2_loss(tf.cast(variable, tf.float32)))
    if not terms:
        return tf.constant(0.0, tf.float32)
    return weight * tf.add_n(terms)
