"""Tests of calibrated fusion, sharpening and the pseudo-label variants.

Module under test: wss.method.pseudo_labels.
"""

import gin
import numpy as np
import pytest
import tensorflow as tf

from wss import resize
from wss.method import pseudo_labels


def np_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def np_sharpen(a, temperature):
    a = a ** (1.0 / temperature)
    return a / a.sum(axis=-1, keepdims=True)


def np_fusion(p, m, gamma=0.5, temperature=0.5, normalize=True):
    p = p.astype(np.float64)
    m = m.astype(np.float64)
    if normalize:
        scale = 1.0 / np.sqrt(np.mean(np.concatenate([p, m]) ** 2) + 1e-8)
        p, m = p * scale, m * scale
    return np_sharpen(gamma * np_softmax(p) + (1 - gamma) * np_softmax(m), temperature)


def _logits(seed, shape=(2, 4, 5, 6)):
    rng = np.random.default_rng(seed)
    decoder = rng.normal(scale=4.0, size=shape).astype(np.float32)
    sgc = rng.normal(loc=1.0, scale=0.7, size=shape).astype(np.float32)
    return decoder, sgc


@pytest.mark.parametrize("gamma,temperature,normalize", [
    (0.5, 0.5, True), (0.5, 0.5, False), (0.3, 1.0, True), (0.8, 0.25, True)])
def test_calibrated_fusion_matches_numpy(gamma, temperature, normalize):
    decoder, sgc = _logits(seed=int(gamma * 10 + temperature * 100))
    out = pseudo_labels.calibrated_fusion(decoder, sgc, gamma=gamma, temperature=temperature,
                                          normalize=normalize).numpy()
    expected = np_fusion(decoder, sgc, gamma, temperature, normalize)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_normalisation_is_one_shared_factor():
    decoder, sgc = _logits(seed=1)
    p, m = pseudo_labels.normalize_logits(decoder, sgc)
    scale = p.numpy() / decoder
    np.testing.assert_allclose(scale, scale.flat[0], rtol=1e-5)
    np.testing.assert_allclose(m.numpy() / sgc, scale.flat[0], rtol=1e-5)
    both = np.concatenate([p.numpy(), m.numpy()])
    np.testing.assert_allclose(np.mean(both.astype(np.float64) ** 2), 1.0, rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.1, 2.0])
def test_sharpen_matches_numpy(temperature):
    rng = np.random.default_rng(2)
    probs = np_softmax(rng.normal(scale=2.0, size=(3, 4, 7)))
    out = pseudo_labels.sharpen(probs.astype(np.float32), temperature).numpy()
    np.testing.assert_allclose(out, np_sharpen(probs, temperature), rtol=2e-5, atol=1e-7)


def test_sharpen_small_temperature_is_finite():
    probs = np.array([[1e-4, 2e-4, 1.0 - 3e-4], [0.0, 0.5, 0.5]], np.float32)
    out = pseudo_labels.sharpen(probs, 0.01).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(out[1], [0, 0.5, 0.5], atol=1e-6)


def test_sources_and_upsampling():
    decoder, sgc = _logits(seed=3, shape=(2, 9, 9, 4))
    small = sgc[:, ::2, ::2]  # [2, 5, 5, 4]
    up = resize.resize_bilinear(small, (9, 9)).numpy()
    targets, weights = pseudo_labels.make_pseudo_labels(decoder, small, source="fusion")
    np.testing.assert_allclose(targets.numpy(), np_fusion(decoder, up), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(weights.numpy(), np.ones((2, 9, 9)))
    targets, _ = pseudo_labels.make_pseudo_labels(decoder, source="decoder", temperature=1.0)
    np.testing.assert_allclose(targets.numpy(), np_softmax(decoder.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)
    targets, _ = pseudo_labels.make_pseudo_labels(decoder, small, source="sgc", temperature=0.5)
    np.testing.assert_allclose(targets.numpy(), np_sharpen(np_softmax(up), 0.5),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        pseudo_labels.make_pseudo_labels(decoder, source="fusion")
    with pytest.raises(ValueError):
        pseudo_labels.make_pseudo_labels(decoder, sgc, source="average")


def test_ground_truth_source_is_the_one_hot_mask_with_unknown_pixels_ignored():
    decoder, _ = _logits(seed=5, shape=(2, 4, 5, 3))
    masks = np.random.default_rng(5).integers(0, 3, (2, 4, 5)).astype(np.int32)
    masks[1, 0, :] = 255
    targets, weights, distribution = pseudo_labels.make_pseudo_labels(
        decoder, config=pseudo_labels.PseudoLabelConfig(source="ground_truth"),
        masks=tf.constant(masks), return_distribution=True)
    known = masks != 255
    expected = np.eye(3)[np.where(known, masks, 0)]
    np.testing.assert_array_equal(targets.numpy(), expected)
    np.testing.assert_array_equal(distribution.numpy(), expected)
    np.testing.assert_array_equal(weights.numpy(), known.astype(np.float32))
    with pytest.raises(ValueError, match="ground_truth.*masks"):
        pseudo_labels.make_pseudo_labels(decoder, source="ground_truth")


def test_hard_labels_with_threshold_ignore_exactly_low_confidence_pixels():
    decoder, sgc = _logits(seed=4, shape=(2, 6, 7, 5))
    fused = np_fusion(decoder, sgc, temperature=1.0)
    # A threshold halfway between two neighbouring confidences, away from float ties.
    confidences = np.sort(fused.max(-1).ravel())
    threshold = float(0.5 * (confidences[30] + confidences[31]))
    targets, weights = pseudo_labels.make_pseudo_labels(
        decoder, sgc, source="fusion", soft=False, threshold=threshold)
    expected_weights = (fused.max(-1) >= threshold).astype(np.float32)
    assert 0 < expected_weights.sum() < expected_weights.size  # both cases occur
    np.testing.assert_array_equal(weights.numpy(), expected_weights)
    np.testing.assert_array_equal(targets.numpy().argmax(-1), fused.argmax(-1))
    np.testing.assert_array_equal(targets.numpy().max(-1), 1.0)
    np.testing.assert_array_equal(targets.numpy().sum(-1), 1.0)


def test_soft_labels_threshold_uses_sharpened_confidence():
    decoder, sgc = _logits(seed=5, shape=(2, 6, 7, 5))
    expected = np_fusion(decoder, sgc, temperature=0.5)
    confidences = np.sort(expected.max(-1).ravel())
    threshold = float(0.5 * (confidences[40] + confidences[41]))
    targets, weights = pseudo_labels.make_pseudo_labels(
        decoder, sgc, temperature=0.5, threshold=threshold)
    np.testing.assert_allclose(targets.numpy(), expected, rtol=1e-5, atol=1e-6)
    expected_weights = (expected.max(-1) >= threshold).astype(np.float32)
    assert expected_weights.sum() == confidences.size - 41
    np.testing.assert_array_equal(weights.numpy(), expected_weights)


def test_outputs_are_stop_gradient():
    decoder, sgc = (tf.Variable(x) for x in _logits(seed=6))
    with tf.GradientTape() as tape:
        targets, _ = pseudo_labels.make_pseudo_labels(decoder, sgc)
        total = tf.reduce_sum(targets * tf.range(6, dtype=tf.float32))
    assert all(g is None for g in tape.gradient(total, [decoder, sgc]))


def test_gin_bindings_configure_the_config_not_the_function():
    decoder, sgc = _logits(seed=7)
    try:
        gin.parse_config([
            "PseudoLabelConfig.source = 'decoder'",
            "PseudoLabelConfig.temperature = 1.0",
        ])
        config = pseudo_labels.PseudoLabelConfig()
        targets, _ = pseudo_labels.make_pseudo_labels(decoder, sgc, config)
        plain, _ = pseudo_labels.make_pseudo_labels(decoder, sgc)  # Gin does not reach it.
    finally:
        gin.clear_config()
    assert config == pseudo_labels.PseudoLabelConfig(source="decoder", temperature=1.0)
    np.testing.assert_allclose(targets.numpy(), np_softmax(decoder.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain.numpy(), np_fusion(decoder, sgc), rtol=1e-5, atol=1e-6)


def test_mixed_precision_inputs():
    decoder, sgc = _logits(seed=8)
    out = pseudo_labels.calibrated_fusion(tf.cast(decoder, tf.float16), tf.cast(sgc, tf.float16))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), np_fusion(decoder, sgc), atol=2e-2)


def test_restrict_to_image_labels_matches_numpy():
    rng = np.random.default_rng(3)
    probs = rng.random((3, 3, 4, 5))
    probs /= probs.sum(-1, keepdims=True)
    labels = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]], np.float32)
    probs[1, 0, 0] = [0.3, 0.2, 0.0, 0.4, 0.1]  # No mass on the present class 2.
    out = pseudo_labels.restrict_to_classes(probs, labels).numpy()
    expected = np.zeros_like(probs)
    for b in range(3):
        present = np.nonzero(labels[b])[0] + 1
        for i in range(3):
            for j in range(4):
                p = probs[b, i, j]
                if not len(present):
                    expected[b, i, j, 0] = 1.0
                    continue
                expected[b, i, j, 0] = p[0]
                mass = p[present]
                share = mass / mass.sum() if mass.sum() > 0 else np.full(len(present),
                                                                          1 / len(present))
                expected[b, i, j, present] = (1 - p[0]) * share
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    # The foreground / background split of an image with present classes is unchanged.
    np.testing.assert_allclose(out[:2, ..., 0], probs[:2, ..., 0], rtol=1e-6)
    targets, _, distribution = pseudo_labels.make_pseudo_labels(
        np.log(probs + 1e-9), source="decoder", temperature=0.5, image_labels=labels,
        restrict_to_image_labels=True, return_distribution=True)
    np.testing.assert_allclose(distribution, probs, rtol=1e-4, atol=1e-6)  # Unrestricted.
    sharpened = pseudo_labels.sharpen(probs, 0.5)
    np.testing.assert_allclose(targets, pseudo_labels.restrict_to_classes(sharpened, labels),
                               rtol=1e-4, atol=1e-6)
    assert np.all(targets.numpy()[..., 3] == 0)  # Class 3 is absent from every image.
    hard, _ = pseudo_labels.make_pseudo_labels(
        np.log(probs + 1e-9), source="decoder", soft=False, image_labels=labels,
        restrict_to_image_labels=True)
    np.testing.assert_array_equal(np.argmax(hard, -1), np.argmax(expected, -1))
    with pytest.raises(ValueError, match="needs image_labels"):
        pseudo_labels.make_pseudo_labels(probs, source="decoder", restrict_to_image_labels=True)


def np_class_balanced_weights(probs, keep_fraction, valid):
    """Per class, keeps the ceil(f * n_c) most confident real pixels (ties at the cut kept)."""
    probs = probs.astype(np.float64)
    confidence = probs.max(-1)
    predicted = probs.argmax(-1)
    weights = np.zeros(confidence.shape)
    for c in range(probs.shape[-1]):
        members = (predicted == c) & (valid > 0)
        if not members.any():
            continue
        ranked = np.sort(confidence[members])[::-1]
        cut = ranked[int(np.ceil(keep_fraction * members.sum())) - 1]
        weights[members & (confidence >= cut)] = 1.0
    return weights


@pytest.mark.parametrize("keep_fraction", [0.05, 0.3, 0.5, 0.999, 1.0])
def test_class_balanced_weights_match_numpy(keep_fraction):
    rng = np.random.default_rng(int(keep_fraction * 1000))
    logits = rng.normal(size=(2, 6, 7, 5)) * np.array([3.0, 1.0, 1.0, 0.5, 0.5])
    logits[..., 0] += 2.0  # A dominant class, as background is, and a class never predicted.
    logits[..., 4] -= 20.0
    probs = np_softmax(logits)
    valid = np.ones((2, 6, 7), np.float32)
    valid[1, :, 5:] = 0  # Padding: never ranked, never kept.
    out = pseudo_labels.class_balanced_weights(probs.astype(np.float32), keep_fraction,
                                               valid).numpy()
    expected = np_class_balanced_weights(probs.astype(np.float32), keep_fraction, valid)
    np.testing.assert_array_equal(out, expected)
    assert np.all(out[1, :, 5:] == 0)
    predicted = probs.argmax(-1)
    for c in range(4):  # Every predicted class keeps its share, however unconfident.
        count = np.sum((predicted == c) & (valid > 0))
        if count:
            assert np.sum(out[predicted == c]) >= np.ceil(keep_fraction * count)


def test_keep_per_class_weights_pixels_of_the_fused_distribution_before_sharpening():
    decoder, sgc = _logits(seed=5)
    valid = np.ones(decoder.shape[:3], np.float32)
    targets, weights, distribution = pseudo_labels.make_pseudo_labels(
        decoder, sgc, temperature=0.1, keep_per_class=0.4, valid=valid,
        return_distribution=True)
    np.testing.assert_allclose(targets, np_fusion(decoder, sgc, temperature=0.1), rtol=1e-4,
                               atol=1e-6)
    expected = np_class_balanced_weights(distribution.numpy(), 0.4, valid)
    np.testing.assert_array_equal(weights, expected)
    assert 0 < expected.mean() < 1
    # With a threshold too, a pixel needs both.
    _, both = pseudo_labels.make_pseudo_labels(
        decoder, sgc, temperature=0.1, soft=False, threshold=0.3, keep_per_class=0.4)
    hard_expected = (distribution.numpy().max(-1) >= 0.3) * np_class_balanced_weights(
        distribution.numpy(), 0.4, np.ones_like(valid))
    np.testing.assert_array_equal(both, hard_expected)
    with pytest.raises(ValueError, match="PseudoLabelConfig.keep_per_class"):
        pseudo_labels.PseudoLabelConfig(keep_per_class=0.0)
