"""Distribution alignment of pseudo labels (ReMixMatch, Berthelot et al., ICLR 2020).

A self-trained segmenter drifts towards the classes it is surest of, background first: its
pseudo labels give too many pixels to background and to a few classes, and the student trained
on them does so more. Distribution alignment holds the pseudo labels' class proportions at those
of the labelled images: with `q` the per-pixel distribution before sharpening and `r` per-class
factors, `q_aligned = normalise(q * r)`. The factors are set by feedback
(`DistributionAlignment`): they move until the class marginal of the final pseudo labels
matches `p_L`, the running mean of the labelled masks' class frequencies.

The state (the labelled frequencies, an exponential moving average, and the log factors) is
kept in non-trainable variables, updated once per step from the replica batches
(`tf.VariableAggregation.MEAN` averages replicas' updates under a `tf.distribute` strategy) and
checkpointed with the model, so a resumed run continues with the same statistics.
"""

import tensorflow as tf

from wss import config as config_lib
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
      float32 `[C]` frequencies summing to 1, or zeros without any counted pixel.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    kept = tf.boolean_mask(labels, tf.logical_and(labels != ignore_label, labels < num_classes))
    counts = tf.cast(tf.math.bincount(kept, minlength=num_classes, maxlength=num_classes),
                     tf.float32)
    return tf.math.divide_no_nan(counts, tf.reduce_sum(counts))


def mean_distribution(probs, valid=None):
    """The mean of per-pixel distributions over the valid pixels.

    Args:
      probs: `[B, H, W, C]` distributions.
      valid: optional `[B, H, W]` mask of pixels to count (1 = count).

    Returns:
      float32 `[C]` mean distribution, zeros without any counted pixel.
    """
    probs = tf.cast(probs, tf.float32)
    if valid is None:
        valid = tf.ones(tf.shape(probs)[:-1], tf.float32)
    valid = tf.cast(valid, tf.float32)
    sums = tf.reduce_sum(probs * valid[..., None], axis=[0, 1, 2])
    return tf.math.divide_no_nan(sums, tf.reduce_sum(valid))


class DistributionAlignment(tf.Module):
    """The labelled masks' running class frequencies and the alignment factors that match them.

    The factors are a feedback controller on the final pseudo labels: each step moves the log
    factor of each class by `rate * (log p_L - log p_T)`, where `p_T` is the running class
    marginal of the final targets (after restriction, alignment and sharpening; an exponential
    moving average with `target_decay`, as one batch holds few classes), so classes that
    the targets over-represent lose weight and the others gain it until the targets' marginal
    meets the labelled one. (Aligning the distribution before sharpening by the plain ratio of
    marginals, ReMixMatch's rule, measured worse here: the calibrated fusion is flat, and its
    marginal says little about that of the sharpened targets.)

    Args:
      num_classes: classes including background.
      decay: EMA decay of the labelled frequencies, in [0, 1).
      target_decay: EMA decay of the targets' marginal, in [0, 1).
      rate: step size of the log factors, > 0.
      max_log_ratio: bound on the magnitude of each log factor.

    Raises:
      ValueError: for a bad argument, naming it.
    """

    def __init__(self, num_classes, decay=0.99, target_decay=0.9, rate=0.02, max_log_ratio=5.0,
                 name="distribution_alignment"):
        super().__init__(name=name)
        self.num_classes = config_lib.check_int("DistributionAlignment.num_classes",
                                                num_classes, minimum=2)
        self.decay, self.target_decay = (
            config_lib.check_number(f"DistributionAlignment.{arg}", value, minimum=0,
                                    maximum=1, exclusive_maximum=True)
            for arg, value in (("decay", decay), ("target_decay", target_decay)))
        self.rate = config_lib.check_number("DistributionAlignment.rate", rate, minimum=0,
                                            exclusive_minimum=True)
        self.max_log_ratio = config_lib.check_number("DistributionAlignment.max_log_ratio",
                                                     max_log_ratio, minimum=0,
                                                     exclusive_minimum=True)

        def state(variable_name, initial):
            return tf.Variable(initial, trainable=False, name=variable_name,
                               aggregation=tf.VariableAggregation.MEAN)

        uniform = tf.fill([self.num_classes], 1.0 / self.num_classes)
        self.labelled_marginal = state("labelled_marginal", uniform)
        self.target_marginal = state("target_marginal", uniform)
        self.log_ratio = state("log_ratio", tf.zeros([self.num_classes]))
        self.updates = state("updates", tf.constant(0.0))

    def ratio(self):
        """The per-class factors of `align` (float32 `[C]`)."""
        return tf.exp(self.log_ratio)

    def update(self, labels, targets, valid=None):
        """Folds one batch into the labelled frequencies and moves the factors.

        Args:
          labels: int `[B, H, W]` labelled masks (ignore label skipped).
          targets: `[B, h, w, C]` this step's final pseudo labels.
          valid: optional `[B, h, w]` mask of the unlabelled images' real pixels.
        """
        labelled = label_frequencies(labels, self.num_classes)
        produced = mean_distribution(targets, valid)
        seen = self.updates > 0  # The first update replaces the uniform starts.
        decay = tf.where(seen, self.decay, 0.0)
        target_decay = tf.where(seen, self.target_decay, 0.0)
        self.labelled_marginal.assign(decay * self.labelled_marginal + (1 - decay) * labelled)
        self.target_marginal.assign(target_decay * self.target_marginal
                                    + (1 - target_decay) * produced)
        step = self.rate * (tf.math.log(self.labelled_marginal + _EPSILON)
                            - tf.math.log(self.target_marginal + _EPSILON))
        self.log_ratio.assign(tf.clip_by_value(self.log_ratio + step, -self.max_log_ratio,
                                               self.max_log_ratio))
        self.updates.assign(self.updates + 1.0)
