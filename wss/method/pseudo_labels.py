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

`make_pseudo_labels` is a plain function; its ablation switches (source, normalisation, gamma,
T, soft / hard, threshold, restriction to the image labels) are the fields of
`PseudoLabelConfig`, a small frozen config object. Gin configures the config
(`PseudoLabelConfig.temperature = 0.1`), which the objective
(`wss.method.objective.PseudoSegObjective`,
argument `pseudo_labels`) receives and hands to `make_pseudo_labels` where it calls it.
"""

import dataclasses

import gin
import tensorflow as tf

from wss import config as config_lib
from wss import resize
from wss.data.records import IGNORE_LABEL
from wss.method.distribution_alignment import align

SOURCES = ("fusion", "decoder", "sgc", "ground_truth")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PseudoLabelConfig:
    """The ablation switches of the pseudo labels (see `make_pseudo_labels`).

    Gin: `PseudoLabelConfig.gamma = 0.3`, or a whole config as
    `PseudoSegObjective.pseudo_labels = @PseudoLabelConfig()`.

    Attributes:
      source: `'fusion'` (eq. 4), `'decoder'` (softmax of the decoder), `'sgc'` (softmax of
        the SGC head) or `'ground_truth'`: a diagnostic, not a method. The targets are the
        unlabelled images' own masks (one-hot at the decoder resolution; pixels without a
        mask get weight 0). It measures what the unlabelled path (strong view, L_u) could
        give with perfect pseudo labels, the ceiling of every real source.
      normalize: shared RMS normalisation before fusing (only used by `'fusion'`).
      gamma: decoder weight in the fusion, in [0, 1].
      temperature: sharpening temperature for soft labels, > 0 (1.0 = none).
      soft: soft (sharpened probabilities) or hard (one-hot argmax) labels.
      threshold: in [0, 1]; if > 0, pixels whose confidence (max probability, after
        sharpening for soft labels, as in the reference) is below it get weight 0.
      restrict_to_image_labels: give the foreground mass of the classes that the image-level
        labels mark absent to the present ones (an extension, off in the paper and reference).
      keep_per_class: in (0, 1]; below 1, class-balanced selection (as in CBST, Zou et al.,
        ECCV 2018): of the real pixels that the pseudo labels give to a class, only the
        `keep_per_class` most confident fraction keeps weight 1, per class and per replica
        batch. Confidence is the maximum of the distribution before sharpening, whose ranking
        the fusion's calibration makes meaningful; the rank within its class makes the rule
        independent of the number of classes and of the logits' scale (an extension, off in
        the paper and reference).
      align_distribution: distribution alignment (after ReMixMatch, Berthelot et al., ICLR
        2020): before sharpening, each class's probability is multiplied by a factor and the
        result renormalised; with `restrict_to_image_labels` the restriction comes first. The
        factors are moved by feedback until the final targets' class marginal, background
        included, matches the labelled masks' running class frequencies
        (`wss.method.distribution_alignment.DistributionAlignment`, state kept and
        checkpointed by the objective). An extension, off in the paper and reference; measured
        in the README (it did not help on the built-in sets).

    Raises:
      ValueError: on construction, for a bad value, naming the field
        (e.g. `PseudoLabelConfig.temperature=0.0: expected a number > 0`).
    """

    source: str = "fusion"
    normalize: bool = True
    gamma: float = 0.5
    temperature: float = 0.5
    soft: bool = True
    threshold: float = 0.0
    restrict_to_image_labels: bool = False
    keep_per_class: float = 1.0
    align_distribution: bool = False

    def __post_init__(self):
        name = type(self).__name__
        config_lib.check_choice(f"{name}.source", self.source, SOURCES)
        config_lib.check_bool(f"{name}.normalize", self.normalize)
        config_lib.check_number(f"{name}.gamma", self.gamma, minimum=0, maximum=1)
        config_lib.check_number(f"{name}.temperature", self.temperature, minimum=0,
                                exclusive_minimum=True)
        config_lib.check_bool(f"{name}.soft", self.soft)
        config_lib.check_number(f"{name}.threshold", self.threshold, minimum=0, maximum=1)
        config_lib.check_bool(f"{name}.restrict_to_image_labels", self.restrict_to_image_labels)
        config_lib.check_number(f"{name}.keep_per_class", self.keep_per_class, minimum=0,
                                maximum=1, exclusive_minimum=True)
        config_lib.check_bool(f"{name}.align_distribution", self.align_distribution)


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


def class_balanced_weights(probs, keep_fraction, valid=None):
    """Class-balanced selection: the most confident `keep_fraction` of each class's pixels.

    A pixel's class is the argmax of `probs` and its confidence the maximum. Per class `c`, with
    `n_c` real pixels of that class, the threshold is the `ceil(keep_fraction * n_c)`-th largest
    confidence among them; pixels at or above their class's threshold get weight 1 (ties at the
    threshold are all kept), the others and the pixels outside `valid` weight 0.

    Args:
      probs: `[B, H, W, C]` distributions.
      keep_fraction: in (0, 1]; 1 keeps every real pixel.
      valid: optional `[B, H, W]` mask of real pixels (padding 0), which alone are ranked.

    Returns:
      float32 `[B, H, W]` weights in {0, 1}.
    """
    probs = tf.cast(probs, tf.float32)
    num_classes = tf.shape(probs)[-1]
    flat = tf.reshape(probs, [-1, num_classes])
    confidence = tf.reduce_max(flat, axis=-1)
    predicted = tf.argmax(flat, axis=-1, output_type=tf.int32)
    real = tf.ones_like(confidence, dtype=tf.bool)
    if valid is not None:
        real = tf.reshape(tf.cast(valid, tf.float32) > 0, [-1])
    members = tf.logical_and(tf.equal(predicted[None, :], tf.range(num_classes)[:, None]),
                             real[None, :])  # [C, N]
    ranked = tf.sort(tf.where(members, confidence[None, :], -1.0), axis=-1,
                     direction="DESCENDING")
    counts = tf.reduce_sum(tf.cast(members, tf.float32), axis=-1)
    kept = tf.cast(tf.math.ceil(keep_fraction * counts), tf.int32)
    thresholds = tf.gather(ranked, tf.maximum(kept - 1, 0), batch_dims=1)  # [C]
    weights = tf.logical_and(confidence >= tf.gather(thresholds, predicted), real)
    return tf.reshape(tf.cast(weights, tf.float32), tf.shape(probs)[:-1])


def _source_distribution(decoder_logits, sgc_logits, config):
    """The distribution before sharpening: the calibrated fusion or one source's softmax."""
    source = config.source
    decoder_logits = tf.cast(decoder_logits, tf.float32)
    if source != "decoder":
        if sgc_logits is None:
            raise ValueError(f"source={source!r} needs sgc_logits.")
        sgc_logits = tf.cast(sgc_logits, tf.float32)
        if sgc_logits.shape[1:3] != decoder_logits.shape[1:3] or None in sgc_logits.shape[1:3]:
            sgc_logits = upsample_to(sgc_logits, decoder_logits)
    if source == "fusion":
        return calibrated_fusion(decoder_logits, sgc_logits, gamma=config.gamma,
                                 temperature=1.0, normalize=config.normalize)
    if source == "decoder":
        return tf.nn.softmax(decoder_logits, axis=-1)
    return tf.nn.softmax(sgc_logits, axis=-1)


def _ground_truth_targets(decoder_logits, masks, return_distribution):
    """One-hot masks as targets, weight 0 where the mask is unknown (the `ground_truth` source).

    Raises:
      ValueError: without `masks`.
    """
    if masks is None:
        raise ValueError("PseudoLabelConfig.source='ground_truth' needs the unlabelled images' "
                         "masks (masks=...)")
    masks = tf.cast(masks, tf.int32)
    known = tf.not_equal(masks, IGNORE_LABEL)
    num_classes = tf.shape(decoder_logits)[-1]
    targets = tf.one_hot(tf.where(known, masks, 0), num_classes, dtype=tf.float32)
    weights = tf.cast(known, tf.float32)
    if return_distribution:
        return tf.stop_gradient(targets), tf.stop_gradient(weights), tf.stop_gradient(targets)
    return tf.stop_gradient(targets), tf.stop_gradient(weights)


def make_pseudo_labels(
    decoder_logits,
    sgc_logits=None,
    config=None,
    *,
    image_labels=None,
    masks=None,
    valid=None,
    return_distribution=False,
    source=None,
    normalize=None,
    gamma=None,
    temperature=None,
    soft=None,
    threshold=None,
    restrict_to_image_labels=None,
    keep_per_class=None,
    alignment_ratio=None,
):
    """Pseudo labels and per-pixel weights for the unlabelled loss, with ablation switches.

    The switches are `config`'s (a `PseudoLabelConfig`; without one, its defaults: fusion,
    normalised, gamma 0.5, T 0.5, soft, no threshold, unrestricted); a switch given as a keyword
    argument overrides the config's value. Gin bindings do not reach this function: they
    configure the `PseudoLabelConfig` that the objective passes in.

    Args:
      decoder_logits: `[B, H, W, C]` weak-view decoder logits.
      sgc_logits: `[B, h, w, C]` weak-view SGC logits; upsampled to `H x W` when the sizes
        differ. Required unless the source is `'decoder'`.
      config: a `PseudoLabelConfig`, or None for its defaults.
      image_labels: optional `[B, C - 1]` multi-hot labels of the classes present (ground truth
        with image-level labels, else the classifier's predictions): the labels that select
        the Grad-CAM classes. Required with `restrict_to_image_labels`.
      masks: `[B, H, W]` int32 masks of the images at the decoder resolution (255 where
        unknown); required by, and only used by, the `'ground_truth'` source.
      valid: optional `[B, H, W]` mask of real (non-padding) pixels at the decoder resolution;
        only class-balanced selection uses it (padding is not ranked and gets weight 0).
      alignment_ratio: `[C]` per-class factors of distribution alignment
        (`DistributionAlignment.ratio()`); required by, and only used with,
        `align_distribution`.
      return_distribution: also return the distribution before sharpening (the calibrated
        fusion itself, or the single source's softmax), whose calibration the diagnostics
        measure.
      source, normalize, gamma, temperature, soft, threshold, restrict_to_image_labels,
      keep_per_class: override the config's field of the same name (documented in
        `PseudoLabelConfig`; `restrict_to_image_labels` acts on the sharpened soft target, or
        before the argmax for hard labels; the returned distribution is not restricted).

    Returns:
      (targets, weights): float32 `[B, H, W, C]` target distributions (one-hot when hard) and
      float32 `[B, H, W]` pixel weights in {0, 1}, both under stop-gradient; with
      `return_distribution`, a third element, the `[B, H, W, C]` distribution.

    Raises:
      ValueError: on a bad switch value (naming it), a missing `sgc_logits` or missing
        `image_labels`.
    """
    config = config_lib.with_overrides(
        PseudoLabelConfig, config, source=source, normalize=normalize, gamma=gamma,
        temperature=temperature, soft=soft, threshold=threshold,
        restrict_to_image_labels=restrict_to_image_labels, keep_per_class=keep_per_class)
    if config.source == "ground_truth":
        return _ground_truth_targets(decoder_logits, masks, return_distribution)
    probs = _source_distribution(decoder_logits, sgc_logits, config)
    distribution = probs
    restrict = config.restrict_to_image_labels
    if restrict and image_labels is None:
        raise ValueError("restrict_to_image_labels=True needs image_labels.")
    if config.align_distribution and alignment_ratio is None:
        raise ValueError("align_distribution=True needs alignment_ratio "
                         "(DistributionAlignment.ratio()).")

    if config.align_distribution:
        # Restrict, align, then sharpen: the alignment sets the background / foreground
        # balance of exactly the distribution that is sharpened.
        probs = restrict_to_classes(probs, image_labels) if restrict else probs
        probs = align(probs, alignment_ratio)
        targets = (sharpen(probs, config.temperature) if config.soft else
                   tf.one_hot(tf.argmax(probs, axis=-1), tf.shape(probs)[-1], dtype=tf.float32))
    elif config.soft:
        # Restricting after sharpening keeps the (sharpened) background / foreground decision:
        # before it, the flat calibrated fusion would hand most pixels to foreground.
        targets = sharpen(probs, config.temperature)
        if restrict:
            targets = restrict_to_classes(targets, image_labels)
    else:
        if restrict:
            probs = restrict_to_classes(probs, image_labels)
        targets = tf.one_hot(tf.argmax(probs, axis=-1), tf.shape(probs)[-1], dtype=tf.float32)
    confidence = tf.reduce_max(targets if config.soft else probs, axis=-1)
    if config.threshold > 0:
        weights = tf.cast(confidence >= config.threshold, tf.float32)
    else:
        weights = tf.ones_like(confidence)
    if config.keep_per_class < 1:
        ranked = restrict_to_classes(probs, image_labels) if restrict and config.soft else probs
        weights = weights * class_balanced_weights(ranked, config.keep_per_class, valid)
    if return_distribution:
        return (tf.stop_gradient(targets), tf.stop_gradient(weights),
                tf.stop_gradient(distribution))
    return tf.stop_gradient(targets), tf.stop_gradient(weights)
