"""Distribution alignment of pseudo labels (ReMixMatch, Berthelot et al., ICLR 2020).

A self-trained segmenter drifts towards the classes it is surest of, background first: its
pseudo labels give too many pixels to background and to a few classes, and the student trained
on them does so more. Distribution alignment holds the pseudo labels' class proportions at those
of the labelled images. With `q` the per-pixel distribution before sharpening, `p_L` the running
mean of the labelled masks' class frequencies (valid pixels) and `p_Q` the running mean of `q`
over the unlabelled images' valid pixels:

    q_aligned = normalise(q * p_L / p_Q)

The running means are exponential moving averages (`decay`) kept as non-trainable variables
created by `DistributionAlignment`, updated once per step from the replica batches
(`tf.VariableAggregation.MEAN` averages replicas' updates under a `tf.distribute` strategy) and
checkpointed with the model, so a resumed run continues with the same statistics. Both start
uniform; the first update replaces them (no bias towards the start value).
"""

import tensorflow as tf

from wss.data.records import IGNORE_LABEL

_EPSILON = 1e-6


def align(probs, ratio):
    """Multiplies each class's probability by its factor and renormalises.

    Args:
      probs: `[..., C]` probabilities.
      ratio: `[C]` positive factors (`DistributionAlignment.ratio()`).

    Returns:
      float32 `[..., C]` distributions; classes with probability 0 stay at 0.
    """
    aligned = tf.cast(probs, tf.float32) * tf.cast(ratio, tf.float32)
    return tf.math.divide_no_nan(aligned, tf.reduce_sum(aligned, axis=-1, keepdims=True))


def label_frequencies(labels, num_classes, ignore_label=IGNORE_LABEL):
    """Class frequencies of the non-ignored pixels of a batch of masks.

    Args:
      labels: int `[B, H, W]` masks.
      num_classes: classes including background.
      ignore_label: the value of pixels to leave out.

    Returns:
      (float32 `[C]` frequencies summing to 1, or zeros without any counted pixel;
      float32 scalar count of counted pixels).
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    kept = tf.boolean_mask(labels, tf.logical_and(labels != ignore_label, labels < num_classes))
    counts = tf.cast(tf.math.bincount(kept, minlength=num_classes, maxlength=num_classes),
                     tf.float32)
    total = tf.reduce_sum(counts)
    return tf.math.divide_no_nan(counts, total), total


def mean_distribution(probs, valid=None):
    """The mean of per-pixel distributions over the valid pixels.

    Args:
      probs: `[B, H, W, C]` distributions.
      valid: optional `[B, H, W]` mask of pixels to count (1 = count).

    Returns:
      (float32 `[C]` mean distribution, zeros without any counted pixel; float32 scalar
      count of counted pixels).
    """
    probs = tf.cast(probs, tf.float32)
    if valid is None:
        valid = tf.ones(tf.shape(probs)[:-1], tf.float32)
    valid = tf.cast(valid, tf.float32)
    total = tf.reduce_sum(valid)
    sums = tf.reduce_sum(probs * valid[..., None], axis=[0, 1, 2])
    return tf.math.divide_no_nan(sums, total), total


class DistributionAlignment(tf.Module):
    """The running class marginals of labelled masks and pseudo labels, and their ratio.

    Args:
      num_classes: classes including background.
      decay: EMA decay of both running means, in [0, 1).

    Raises:
      ValueError: for a bad `num_classes` or `decay`.
    """

    def __init__(self, num_classes, decay=0.99, name="distribution_alignment"):
        super().__init__(name=name)
        if int(num_classes) < 2:
            raise ValueError(f"DistributionAlignment needs num_classes >= 2, got {num_classes}")
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"DistributionAlignment.decay={decay!r}: expected a number in "
                             f"[0, 1)")
        self.num_classes = int(num_classes)
        self.decay = float(decay)
        uniform = tf.fill([self.num_classes], 1.0 / self.num_classes)

        def state(variable_name, initial):
            return tf.Variable(initial, trainable=False, name=variable_name,
                               aggregation=tf.VariableAggregation.MEAN)

        self.labelled_marginal = state("labelled_marginal", uniform)
        self.pseudo_marginal = state("pseudo_marginal", uniform)
        self.updates = state("updates", tf.constant(0.0))

    def ratio(self):
        """`p_L / p_Q`, the per-class factors of `align` (float32 `[C]`)."""
        return tf.math.divide_no_nan(self.labelled_marginal + _EPSILON,
                                     self.pseudo_marginal + _EPSILON)

    def update(self, labels, pseudo_probs, valid=None):
        """Folds one batch into both running means.

        Args:
          labels: int `[B, H, W]` labelled masks (ignore label skipped).
          pseudo_probs: `[B, h, w, C]` the distributions that `align` acts on (restricted to
            the image labels where the pseudo labels are), before alignment.
          valid: optional `[B, h, w]` mask of the unlabelled images' real pixels.
        """
        labelled, _ = label_frequencies(labels, self.num_classes)
        pseudo, _ = mean_distribution(pseudo_probs, valid)
        # The first update replaces the uniform start.
        decay = tf.where(self.updates > 0, self.decay, 0.0)
        self.labelled_marginal.assign(decay * self.labelled_marginal + (1 - decay) * labelled)
        self.pseudo_marginal.assign(decay * self.pseudo_marginal + (1 - decay) * pseudo)
        self.updates.assign(self.updates + 1.0)
