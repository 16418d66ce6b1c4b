"""Grad-CAM of the image classifier for all foreground classes at once.

Given the last backbone block `F` (`features['final']`, `[B, h, w, K]`) and the image classifier
`cls_logits = classify(F)` (`[B, C - 1]`, one logit per foreground class), Grad-CAM is

    w_ck    = mean_{ij} d cls_logit_c / d F_ijk
    cam_c   = ReLU(sum_k w_ck F_k)                                   [B, h, w, C - 1]

followed, as in the PseudoSeg reference (`compute_cam_v2`), by

    cam_c  *= y_c                (image-level label: ground truth or predicted)
    cam_c  /= max_{ij} cam_c     (0 where the maximum is 0; the reference divides by
                                  max(1e-5, max) and multiplies by [max > 0])

under `stop_gradient`. The maximum is taken over the whole map, padding included: the reference
does not mask it by the valid region, and neither do we.

For the DeepLab classifier (global average pooling + 1x1 conv with kernel `W` `[K, C - 1]` and a
bias) the gradient is constant, `d cls_logit_c / d F_ijk = W_kc / (h w)`, so
`cam_c = ReLU(F . W_c / (h w))`: one einsum (`gradcam_closed_form`). `gradcam_autodiff` computes
the same maps with `tf.GradientTape` for any differentiable `classify(F)`.
"""

import tensorflow as tf


def predicted_image_labels(cls_logits, threshold=0.5):
    """Image-level labels predicted by the classifier: `sigmoid(logits) >= threshold`.

    Args:
      cls_logits: `[B, C - 1]` classifier logits.
      threshold: probability threshold (the reference uses 0.5).

    Returns:
      float32 `[B, C - 1]` multi-hot labels under stop-gradient.
    """
    probs = tf.sigmoid(tf.cast(cls_logits, tf.float32))
    return tf.stop_gradient(tf.cast(probs >= threshold, tf.float32))


def image_level_labels(cls_logits, class_labels=None, threshold=0.5):
    """Labels that select the CAM classes: ground truth when given, else predictions.

    Args:
      cls_logits: `[B, C - 1]` classifier logits.
      class_labels: optional `[B, C - 1]` multi-hot ground truth.
      threshold: probability threshold for predicted labels.

    Returns:
      float32 `[B, C - 1]` under stop-gradient.
    """
    if class_labels is not None:
        return tf.stop_gradient(tf.cast(class_labels, tf.float32))
    return predicted_image_labels(cls_logits, threshold)


def normalize_cams(raw_cams, image_labels):
    """Masks raw CAMs by the image labels and scales each map by its spatial maximum.

    Args:
      raw_cams: `[B, h, w, C - 1]` non-negative maps.
      image_labels: `[B, C - 1]` multi-hot (or soft) labels.

    Returns:
      float32 `[B, h, w, C - 1]` in [0, 1] under stop-gradient; a class whose label is 0 or whose
      map is all zeros gives a zero map.
    """
    raw_cams = tf.cast(raw_cams, tf.float32)
    labels = tf.cast(image_labels, tf.float32)[:, tf.newaxis, tf.newaxis, :]
    cams = raw_cams * labels
    peak = tf.reduce_max(cams, axis=[1, 2], keepdims=True)
    # The reference's _div_maybe_zero: [peak > 0] * cams / max(1e-5, peak).
    cams = tf.cast(peak > 0, tf.float32) * cams / tf.maximum(peak, 1e-5)
    return tf.stop_gradient(cams)


def raw_gradcam_closed_form(final_features, classifier_kernel):
    """Un-normalised Grad-CAM of a GAP + 1x1 classifier, `ReLU(F . W / (h w))`.

    Args:
      final_features: `[B, h, w, K]` last backbone block.
      classifier_kernel: `[K, C - 1]` 1x1 kernel of the classifier (a `[1, 1, K, C - 1]` conv
        kernel is accepted too).

    Returns:
      float32 `[B, h, w, C - 1]`.
    """
    features = tf.cast(final_features, tf.float32)
    kernel = tf.cast(classifier_kernel, tf.float32)
    if kernel.shape.rank == 4:
        kernel = kernel[0, 0]
    shape = tf.shape(features)
    num_positions = tf.cast(shape[1] * shape[2], tf.float32)
    return tf.nn.relu(tf.einsum("bhwk,kc->bhwc", features, kernel) / num_positions)


def raw_gradcam_autodiff(final_features, classify):
    """Un-normalised Grad-CAM by automatic differentiation, for any classifier.

    Args:
      final_features: `[B, h, w, K]` last backbone block.
      classify: callable mapping `[B, h, w, K]` features to `[B, C - 1]` logits; each sample's
        logits must depend on that sample only (true in inference mode).

    Returns:
      float32 `[B, h, w, C - 1]`.
    """
    features = tf.cast(final_features, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        logits = tf.cast(classify(features), tf.float32)
    num_classes = logits.shape[-1]
    if num_classes is None:
        raise ValueError("classify must return logits with a static class dimension.")
    cams = []
    for c in range(num_classes):
        # d(sum_b logits[b, c]) / dF; summing over the batch is exact since sample b's logit
        # only depends on sample b.
        selector = tf.one_hot(tf.fill(tf.shape(logits)[:1], c), num_classes, dtype=tf.float32)
        grads = tape.gradient(logits, features, output_gradients=selector)
        weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)  # [B, 1, 1, K]
        cams.append(tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)))
    del tape
    return tf.stack(cams, axis=-1)


def gradcam(final_features, image_labels, classifier_kernel=None, classify=None):
    """Normalised Grad-CAM maps for all `C - 1` foreground classes.

    Exactly one of `classifier_kernel` (fast closed form for GAP + 1x1 classifiers) and
    `classify` (generic autodiff path) must be given.

    Args:
      final_features: `[B, h, w, K]` last backbone block (`features['final']`).
      image_labels: `[B, C - 1]` multi-hot labels selecting the classes (see
        `image_level_labels`).
      classifier_kernel: `[K, C - 1]` classifier kernel (`model.classifier_kernel`).
      classify: callable `final -> cls_logits` (`model.classify`).

    Returns:
      float32 `[B, h, w, C - 1]` in [0, 1], under stop-gradient.

    Raises:
      ValueError: if not exactly one of `classifier_kernel` and `classify` is given.
    """
    if (classifier_kernel is None) == (classify is None):
        raise ValueError("Pass exactly one of classifier_kernel and classify.")
    final_features = tf.stop_gradient(final_features)
    if classifier_kernel is not None:
        raw = raw_gradcam_closed_form(final_features, tf.stop_gradient(classifier_kernel))
    else:
        raw = raw_gradcam_autodiff(final_features, classify)
    return normalize_cams(raw, image_labels)
