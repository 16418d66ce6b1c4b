"""Pseudo labels of the weak view: calibrated fusion (PseudoSeg eq. 4), sharpening, variants.

Calibrated fusion of the weak view's decoder logits `p` and SGC logits `m` (`[B, h, w, C]`,
the SGC logits upsampled to the decoder resolution, `upsample_to`):

    s      = rsqrt(mean(concat([p, m])^2) + 1e-8)   one factor for both tensors, whole batch
    p', m' = s p, s m
    a      = gamma softmax(p') + (1 - gamma) softmax(m')
    y      = a^(1/T) / sum_c a_c^(1/T)             sharpening

Paper vs reference (googleinterns/wss, `train_wss.py`): the paper normalises each logit map by
`sqrt(sum p^2)`; the reference multiplies both maps by one shared factor, the reciprocal RMS over
all values of both tensors of the replica's batch, as implemented here. The reference fixes
gamma = 0.5 (`(prob + att_prob) / 2`); gamma is a parameter here. Normalisation is only applied
when fusing (as in the reference: a single source uses its plain softmax). Sharpening is only
applied to soft labels (hard labels are the argmax, which sharpening does not change).

`make_pseudo_labels` is the gin-configurable entry point with the ablation switches.
"""

import gin
import tensorflow as tf

from wss import resize

SOURCES = ("fusion", "decoder", "sgc")


def upsample_to(logits, reference):
    """Bilinearly upsamples `logits` (align_corners=True) to the spatial size of `reference`.

    Args:
      logits: `[B, h, w, C]` (e.g. SGC logits at the CAM resolution).
      reference: `[B, H, W, ...]` tensor (e.g. decoder logits).

    Returns:
      float32 `[B, H, W, C]`.
    """
    return resize.resize_like(logits, reference)


def normalize_logits(decoder_logits, sgc_logits, epsilon=1e-8):
    """Scales both logit maps by one shared factor `rsqrt(mean(concat([p, m])^2) + eps)`.

    Args:
      decoder_logits: `[B, H, W, C]`.
      sgc_logits: `[B, H, W, C]`, same shape.
      epsilon: added to the mean square.

    Returns:
      Pair of float32 `[B, H, W, C]` tensors.
    """
    p = tf.cast(decoder_logits, tf.float32)
    m = tf.cast(sgc_logits, tf.float32)
    mean_square = (tf.reduce_sum(tf.square(p)) + tf.reduce_sum(tf.square(m))) / tf.cast(
        tf.size(p) + tf.size(m), tf.float32
    )
    scale = tf.math.rsqrt(mean_square + epsilon)
    return p * scale, m * scale


def sharpen(probs, temperature):
    """Sharpens a distribution over the last axis: `a^(1/T) / sum_c a_c^(1/T)`.

    Computed in the log domain (`softmax(log(a) / T)`) so that small temperatures do not
    underflow; zero probabilities stay zero.

    Args:
      probs: `[..., C]` probabilities.
      temperature: `T > 0`; 1.0 returns the input (normalised).

    Returns:
      float32 `[..., C]`.
    """
    probs = tf.cast(probs, tf.float32)
    if isinstance(temperature, (int, float)) and temperature == 1.0:
        return probs / tf.reduce_sum(probs, axis=-1, keepdims=True)
    log_probs = tf.math.log(tf.maximum(probs, 1e-30))
    log_probs = tf.where(probs > 0, log_probs, tf.fill(tf.shape(log_probs), -1e30))
    return tf.nn.softmax(log_probs / temperature, axis=-1)


def calibrated_fusion(decoder_logits, sgc_logits, gamma=0.5, temperature=0.5, normalize=True):
    """Calibrated fusion of decoder and SGC predictions (eq. 4) followed by sharpening.

    Args:
      decoder_logits: `[B, H, W, C]` weak-view decoder logits.
      sgc_logits: `[B, H, W, C]` SGC logits at the same resolution (see `upsample_to`).
      gamma: weight of the decoder distribution.
      temperature: sharpening temperature (1.0 = none).
      normalize: scale both logit maps by the shared RMS factor first.

    Returns:
      float32 `[B, H, W, C]` pseudo-label probabilities under stop-gradient.
    """
    p = tf.cast(decoder_logits, tf.float32)
    m = tf.cast(sgc_logits, tf.float32)
    if normalize:
        p, m = normalize_logits(p, m)
    fused = gamma * tf.nn.softmax(p, axis=-1) + (1.0 - gamma) * tf.nn.softmax(m, axis=-1)
    return tf.stop_gradient(sharpen(fused, temperature))


def restrict_to_classes(probs, image_labels):
    """Moves the foreground mass of absent classes to the present ones; background is kept.

    With `b` the background probability and `q_c = p_c [c present]`, the foreground classes
    get `(1 - b) q_c / sum_c q_c` (the present classes' share of the foreground mass; evenly
    among them when they have none), so the foreground / background decision is unchanged
    and only the class identity is constrained. An image without present classes becomes
    all background.

    Args:
      probs: `[B, H, W, C]` distributions (channel 0 is background).
      image_labels: `[B, C - 1]` multi-hot labels of the foreground classes present.

    Returns:
      float32 `[B, H, W, C]`.
    """
    probs = tf.cast(probs, tf.float32)
    labels = tf.cast(image_labels, tf.float32)[:, None, None, :]
    background = probs[..., :1]
    kept = probs[..., 1:] * labels
    total = tf.reduce_sum(kept, axis=-1, keepdims=True)
    count = tf.reduce_sum(labels, axis=-1, keepdims=True)
    share = tf.where(total > 0, tf.math.divide_no_nan(kept, total),
                     labels / tf.maximum(count, 1.0))
    foreground = (1.0 - background) * share
    background = tf.where(count > 0, background, tf.ones_like(background))
    return tf.concat([background, foreground], axis=-1)


@gin.configurable
def make_pseudo_labels(
    decoder_logits,
    sgc_logits=None,
    source="fusion",
    normalize=True,
    gamma=0.5,
    temperature=0.5,
    soft=True,
    threshold=0.0,
    return_distribution=False,
    image_labels=None,
    restrict_to_image_labels=False,
):
    """Pseudo labels and per-pixel weights for the unlabelled loss, with ablation switches.

    Args:
      decoder_logits: `[B, H, W, C]` weak-view decoder logits.
      sgc_logits: `[B, h, w, C]` weak-view SGC logits; upsampled to `H x W` when the sizes
        differ. Required unless `source == 'decoder'`.
      source: `'fusion'` (eq. 4), `'decoder'` (softmax of the decoder) or `'sgc'` (softmax of
        the SGC head).
      normalize: shared RMS normalisation before fusing (only used by `'fusion'`).
      gamma: decoder weight in the fusion.
      temperature: sharpening temperature for soft labels (1.0 = none).
      soft: soft (sharpened probabilities) or hard (one-hot argmax) labels.
      threshold: if > 0, pixels whose confidence (max probability, after sharpening for soft
        labels, as in the reference) is below it get weight 0.
      image_labels: optional `[B, C - 1]` multi-hot labels of the classes present (ground truth
        with image-level labels, else the classifier's predictions): the labels that select
        the Grad-CAM classes.
      restrict_to_image_labels: give the foreground mass of the classes that `image_labels`
        marks absent to the present ones (`restrict_to_classes`), in the sharpened soft target
        (or, for hard labels, before the argmax), as the CAMs of absent classes are zeroed: an
        extension of the paper's rule from the SGC branch to the pseudo label; background is
        untouched. The returned distribution is not restricted.
      return_distribution: also return the distribution before sharpening (the calibrated
        fusion itself, or the single source's softmax), whose calibration the diagnostics
        measure.

    Returns:
      (targets, weights): float32 `[B, H, W, C]` target distributions (one-hot when hard) and
      float32 `[B, H, W]` pixel weights in {0, 1}, both under stop-gradient; with
      `return_distribution`, a third element, the `[B, H, W, C]` distribution.

    Raises:
      ValueError: on an unknown source or a missing `sgc_logits`.
    """
    if source not in SOURCES:
        raise ValueError(f"Unknown pseudo-label source {source!r}; expected one of {SOURCES}.")
    decoder_logits = tf.cast(decoder_logits, tf.float32)
    if source != "decoder":
        if sgc_logits is None:
            raise ValueError(f"source={source!r} needs sgc_logits.")
        sgc_logits = tf.cast(sgc_logits, tf.float32)
        if sgc_logits.shape[1:3] != decoder_logits.shape[1:3] or None in sgc_logits.shape[1:3]:
            sgc_logits = upsample_to(sgc_logits, decoder_logits)

    if source == "fusion":
        probs = calibrated_fusion(decoder_logits, sgc_logits, gamma=gamma, temperature=1.0,
                                  normalize=normalize)
    elif source == "decoder":
        probs = tf.nn.softmax(decoder_logits, axis=-1)
    else:
        probs = tf.nn.softmax(sgc_logits, axis=-1)
    if restrict_to_image_labels and image_labels is None:
        raise ValueError("restrict_to_image_labels=True needs image_labels.")

    if soft:
        # Restricting after sharpening keeps the (sharpened) background / foreground decision:
        # before it, the flat calibrated fusion would hand most pixels to foreground.
        targets = sharpen(probs, temperature)
        if restrict_to_image_labels:
            targets = restrict_to_classes(targets, image_labels)
    else:
        if restrict_to_image_labels:
            probs = restrict_to_classes(probs, image_labels)
        targets = tf.one_hot(tf.argmax(probs, axis=-1), tf.shape(probs)[-1], dtype=tf.float32)
    confidence = tf.reduce_max(targets if soft else probs, axis=-1)
    if threshold > 0:
        weights = tf.cast(confidence >= threshold, tf.float32)
    else:
        weights = tf.ones_like(confidence)
    if return_distribution:
        return tf.stop_gradient(targets), tf.stop_gradient(weights), tf.stop_gradient(probs)
    return tf.stop_gradient(targets), tf.stop_gradient(weights)
