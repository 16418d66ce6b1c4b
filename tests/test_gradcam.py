"""Tests of wss.method.gradcam against a float64 numpy reference of Grad-CAM."""

import numpy as np
import pytest
import tensorflow as tf

from wss.method import gradcam


def numpy_gradcam(features, kernel, labels):
    """Grad-CAM of a GAP + 1x1 classifier in float64, with label masking and max scaling."""
    features = features.astype(np.float64)
    kernel = kernel.astype(np.float64)
    _, h, w, _ = features.shape
    # d logit_c / d F_ijk = W_kc / (h w); class weights are the spatial mean of that.
    weights = kernel / (h * w)  # [K, C-1]
    cams = np.maximum(np.einsum("bhwk,kc->bhwc", features, weights), 0.0)
    cams = cams * labels[:, None, None, :]
    peak = cams.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cams / np.maximum(peak, 1e-5), 0.0)


def _inputs(seed=0, batch=3, height=5, width=7, depth=16, classes=6):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, height, width, depth)).astype(np.float32)
    features[0] = np.abs(features[0]) * 3.0  # one sample with post-ReLU-like features
    kernel = rng.normal(scale=0.5, size=(depth, classes)).astype(np.float32)
    bias = rng.normal(size=(classes,)).astype(np.float32)
    labels = (rng.random((batch, classes)) < 0.6).astype(np.float32)
    labels[:, 0] = 1.0
    labels[1, 1] = 0.0
    return features, kernel, bias, labels


def test_closed_form_matches_numpy():
    features, kernel, _, labels = _inputs()
    cams = gradcam.gradcam(features, labels, classifier_kernel=kernel).numpy()
    expected = numpy_gradcam(features, kernel, labels)
    assert cams.shape == expected.shape == (3, 5, 7, 6)
    np.testing.assert_allclose(cams, expected, atol=2e-6)
    assert cams.min() >= 0.0 and cams.max() <= 1.0


def test_closed_form_accepts_conv_kernel():
    features, kernel, _, labels = _inputs(seed=1)
    flat = gradcam.gradcam(features, labels, classifier_kernel=kernel)
    conv = gradcam.gradcam(features, labels, classifier_kernel=kernel[None, None])
    np.testing.assert_allclose(flat.numpy(), conv.numpy(), atol=1e-7)


def test_closed_form_equals_autodiff():
    features, kernel, bias, labels = _inputs(seed=2)

    def classify(final):
        pooled = tf.reduce_mean(final, axis=[1, 2])
        return tf.matmul(pooled, kernel) + bias

    closed = gradcam.gradcam(features, labels, classifier_kernel=kernel).numpy()
    autodiff = gradcam.gradcam(features, labels, classify=classify).numpy()
    np.testing.assert_allclose(closed, autodiff, atol=1e-5)
    raw_closed = gradcam.raw_gradcam_closed_form(features, kernel).numpy()
    raw_auto = gradcam.raw_gradcam_autodiff(features, classify).numpy()
    np.testing.assert_allclose(raw_closed, raw_auto, rtol=1e-5, atol=1e-7)


def test_autodiff_of_nonlinear_classifier_matches_numpy():
    # Non-linear classifier: logits = (GAP(F) W)^2 / 2, so d logit_c / dF_ijk = z_c W_kc / (hw).
    features, kernel, _, _ = _inputs(seed=3)

    def classify(final):
        z = tf.matmul(tf.reduce_mean(final, axis=[1, 2]), kernel)
        return 0.5 * tf.square(z)

    raw = gradcam.raw_gradcam_autodiff(features, classify).numpy()
    f64 = features.astype(np.float64)
    h, w = f64.shape[1:3]
    z = f64.mean(axis=(1, 2)) @ kernel.astype(np.float64)  # [B, C-1]
    weights = z[:, None, :] * kernel.astype(np.float64)[None] / (h * w)  # [B, K, C-1]
    expected = np.maximum(np.einsum("bhwk,bkc->bhwc", f64, weights), 0.0)
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-6)


def test_absent_class_has_zero_cam():
    features, kernel, _, labels = _inputs(seed=4)
    cams = gradcam.gradcam(features, labels, classifier_kernel=kernel).numpy()
    for b, c in zip(*np.nonzero(labels == 0)):
        assert np.all(cams[b, :, :, c] == 0.0)
    # A present class whose map is entirely negative (ReLU gives zeros) is 0, not NaN.
    negative = -np.abs(features)
    positive_kernel = np.abs(kernel)
    cams = gradcam.gradcam(negative, np.ones_like(labels), classifier_kernel=positive_kernel)
    assert np.all(cams.numpy() == 0.0)


def test_present_class_peaks_at_one():
    features, kernel, _, labels = _inputs(seed=5)
    cams = gradcam.gradcam(features, labels, classifier_kernel=kernel).numpy()
    peaks = cams.max(axis=(1, 2))
    raw_peaks = numpy_gradcam(features, kernel, np.ones_like(labels)).max(axis=(1, 2))
    expected = np.where((labels > 0) & (raw_peaks > 0), 1.0, 0.0)
    np.testing.assert_allclose(peaks, expected, atol=1e-6)


def test_cams_are_stop_gradient():
    features, kernel, _, labels = _inputs(seed=6)
    features = tf.Variable(features)
    kernel = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        cams = gradcam.gradcam(features, labels, classifier_kernel=kernel)
        total = tf.reduce_sum(cams)
    grads = tape.gradient(total, [features, kernel])
    assert all(g is None for g in grads)


def test_image_level_labels():
    logits = tf.constant([[-1.0, 0.0, 2.0], [0.5, -3.0, -0.01]])
    predicted = gradcam.image_level_labels(logits).numpy()
    np.testing.assert_array_equal(predicted, [[0, 1, 1], [1, 0, 0]])
    truth = np.array([[1, 0, 0], [0, 0, 1]], np.float32)
    np.testing.assert_array_equal(gradcam.image_level_labels(logits, truth).numpy(), truth)


def test_requires_exactly_one_classifier():
    features, kernel, _, labels = _inputs()
    with pytest.raises(ValueError):
        gradcam.gradcam(features, labels)
    with pytest.raises(ValueError):
        gradcam.gradcam(features, labels, classifier_kernel=kernel, classify=lambda f: f)
