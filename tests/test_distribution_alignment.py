"""Distribution alignment: running means, ratio and aligned pseudo labels against numpy."""

import numpy as np
import pytest
import tensorflow as tf

from wss.method import pseudo_labels
from wss.method.distribution_alignment import (
    DistributionAlignment,
    align,
    label_frequencies,
    mean_distribution,
)
from wss.method.pseudo_labels import PseudoLabelConfig


def _random_probs(rng, shape):
    logits = rng.normal(size=shape)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)


def test_label_frequencies_skip_ignored_pixels():
    labels = np.array([[[0, 0, 2], [255, 1, 0]]])
    frequencies = label_frequencies(tf.constant(labels), num_classes=3)
    np.testing.assert_allclose(frequencies.numpy(), [3 / 5, 1 / 5, 1 / 5], rtol=1e-6)
    empty = label_frequencies(tf.constant([[[255, 255]]]), num_classes=3)
    np.testing.assert_allclose(empty.numpy(), [0.0, 0.0, 0.0])


def test_mean_distribution_counts_valid_pixels_only():
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, (2, 3, 4, 5))
    valid = (rng.uniform(size=(2, 3, 4)) > 0.4).astype(np.float64)
    mean = mean_distribution(tf.constant(probs, tf.float32), tf.constant(valid))
    expected = (probs * valid[..., None]).sum((0, 1, 2)) / valid.sum()
    np.testing.assert_allclose(mean.numpy(), expected, rtol=1e-5)


def test_state_follows_the_emas_and_the_log_factors_accumulate():
    rng = np.random.default_rng(1)
    decay, target_decay, rate = 0.9, 0.5, 0.1
    alignment = DistributionAlignment(4, decay=decay, target_decay=target_decay, rate=rate,
                                      max_log_ratio=0.15)
    np.testing.assert_allclose(alignment.ratio().numpy(), np.ones(4))
    labelled_mean = target_mean = None
    log_ratio = np.zeros(4)
    for _ in range(3):
        labels = rng.integers(0, 4, size=(2, 6, 6))
        labels[0, 0, :3] = 255
        targets = _random_probs(rng, (2, 3, 3, 4))
        alignment.update(tf.constant(labels), tf.constant(targets, tf.float32))
        kept = labels[labels != 255]
        frequencies = np.bincount(kept, minlength=4) / kept.size
        batch_mean = targets.reshape(-1, 4).mean(0)
        if labelled_mean is None:  # The first update replaces the uniform start.
            labelled_mean, target_mean = frequencies, batch_mean
        else:
            labelled_mean = decay * labelled_mean + (1 - decay) * frequencies
            target_mean = target_decay * target_mean + (1 - target_decay) * batch_mean
        log_ratio = np.clip(log_ratio + rate * (np.log(labelled_mean + 1e-6)
                                                - np.log(target_mean + 1e-6)), -0.15, 0.15)
    np.testing.assert_allclose(alignment.labelled_marginal.numpy(), labelled_mean, rtol=1e-5)
    np.testing.assert_allclose(alignment.target_marginal.numpy(), target_mean, rtol=1e-5)
    np.testing.assert_allclose(alignment.ratio().numpy(), np.exp(log_ratio), rtol=1e-5)


def test_feedback_brings_biased_targets_to_the_labelled_marginal():
    """A fixed teacher that over-predicts background: aligned, its targets' marginal matches."""
    rng = np.random.default_rng(4)
    labels = np.zeros((4, 8, 8), np.int64)
    labels[:, :4, :2] = 1
    labels[:, 4:, 6:] = 2  # Labelled frequencies 0.75 / 0.125 / 0.125.
    logits = rng.normal(size=(4, 8, 8, 3)) + np.array([2.0, 0.0, -0.5])
    probs = tf.constant(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), tf.float32)
    alignment = DistributionAlignment(3, rate=0.05)
    config = PseudoLabelConfig(source="decoder", temperature=0.5, align_distribution=True)

    def targets():
        return pseudo_labels.make_pseudo_labels(
            tf.math.log(probs), None, config, alignment_ratio=alignment.ratio())[0]

    before = mean_distribution(targets()).numpy()
    for _ in range(400):
        alignment.update(tf.constant(labels), targets())
    after = mean_distribution(targets()).numpy()
    assert before[0] > 0.85  # The teacher's bias.
    np.testing.assert_allclose(after, [0.75, 0.125, 0.125], atol=0.02)


def test_align_multiplies_and_renormalises():
    rng = np.random.default_rng(2)
    probs = _random_probs(rng, (1, 2, 2, 3))
    probs[0, 0, 0, 2] = 0.0
    ratio = np.array([0.5, 2.0, 4.0])
    expected = probs * ratio
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(align(tf.constant(probs, tf.float32), ratio).numpy(), expected,
                               rtol=1e-5, atol=1e-7)


def test_aligned_pseudo_labels_restrict_then_align_then_sharpen():
    rng = np.random.default_rng(3)
    decoder = rng.normal(size=(2, 3, 3, 4))
    image_labels = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    ratio = np.array([0.5, 1.5, 2.0, 1.0])
    temperature = 0.5
    config = PseudoLabelConfig(source="decoder", temperature=temperature,
                               restrict_to_image_labels=True, align_distribution=True)
    targets, weights, distribution = pseudo_labels.make_pseudo_labels(
        tf.constant(decoder, tf.float32), None, config, image_labels=tf.constant(image_labels),
        alignment_ratio=tf.constant(ratio, tf.float32), return_distribution=True)
    probs = np.exp(decoder) / np.exp(decoder).sum(-1, keepdims=True)
    kept = probs[..., 1:] * image_labels[:, None, None, :]
    restricted = np.concatenate(
        [probs[..., :1], (1 - probs[..., :1]) * kept / kept.sum(-1, keepdims=True)], -1)
    aligned = restricted * ratio
    aligned /= aligned.sum(-1, keepdims=True)
    sharp = aligned ** (1 / temperature)
    sharp /= sharp.sum(-1, keepdims=True)
    np.testing.assert_allclose(targets.numpy(), sharp, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(distribution.numpy(), probs, rtol=1e-5)  # Unaligned, for ECE.
    np.testing.assert_allclose(weights.numpy(), 1.0)


def test_alignment_needs_its_ratio_and_sane_arguments():
    decoder = tf.zeros([1, 2, 2, 3])
    config = PseudoLabelConfig(source="decoder", align_distribution=True)
    with pytest.raises(ValueError, match="alignment_ratio"):
        pseudo_labels.make_pseudo_labels(decoder, None, config)
    with pytest.raises(ValueError, match="decay"):
        DistributionAlignment(3, decay=1.0)
    with pytest.raises(ValueError, match="target_decay"):
        DistributionAlignment(3, target_decay=-0.1)
    with pytest.raises(ValueError, match="rate"):
        DistributionAlignment(3, rate=0.0)
    with pytest.raises(ValueError, match="num_classes"):
        DistributionAlignment(1)
