"""Tests of the SGC head (wss.method.sgc) against a float64 numpy reference.

The reference follows eq. 3 and appendix A.
"""

import numpy as np
import pytest
import tensorflow as tf
from numpy_reference import numpy_bilinear_align_corners

from wss import resize
from wss.method import sgc

NUM_CLASSES = 5  # background + 4 foreground classes.
ATTENTION_DIM = 8


def numpy_sgc(head, cams, penultimate, final, valid_small, low_level=None):
    """Inference-mode SGC logits in float64 from the head's weights.

    With `low_level` (the decoder resolution) the CAMs are first upsampled to its size and it
    leads the hypercolumn.
    """
    features = [penultimate, final]
    if low_level is not None:
        cams = numpy_bilinear_align_corners(cams, *low_level.shape[1:3])
        features = [low_level] + features
    b, h, w, _ = cams.shape
    hyper = np.concatenate([numpy_bilinear_align_corners(f, h, w) for f in features], axis=-1)
    w_k = head.key.kernel.numpy().astype(np.float64)[0, 0]
    w_q = head.query.kernel.numpy().astype(np.float64)[0, 0]
    w_o = head.output_conv.kernel.numpy().astype(np.float64)[0, 0]
    bn = head.output_bn
    q = (hyper @ w_q).reshape(b, h * w, -1)
    k = (hyper @ w_k).reshape(b, h * w, -1)
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(ATTENTION_DIM)
    logits = logits + (1.0 - valid_small.reshape(b, 1, h * w)) * -1e9
    logits -= logits.max(axis=-1, keepdims=True)
    att = np.exp(logits)
    att /= att.sum(axis=-1, keepdims=True)
    values = cams.astype(np.float64).reshape(b, h * w, -1)
    prop = (att @ values + values).reshape(b, h, w, -1)
    scores = np.concatenate([2.0 - prop.max(axis=-1, keepdims=True), prop], axis=-1)
    out = scores @ w_o
    mean = bn.moving_mean.numpy().astype(np.float64)
    var = bn.moving_variance.numpy().astype(np.float64)
    beta = bn.beta.numpy().astype(np.float64)
    return (out - mean) / np.sqrt(var + bn.epsilon) + beta, att


def _inputs(seed=0, batch=2, h=5, w=6, image=(17, 21)):
    rng = np.random.default_rng(seed)
    cams = rng.random((batch, h, w, NUM_CLASSES - 1)).astype(np.float32)
    cams[0, ..., 1] = 0.0  # an absent class
    penultimate = rng.normal(size=(batch, h, w, 6)).astype(np.float32)
    final = rng.normal(size=(batch, 3, 4, 10)).astype(np.float32)  # other size: resized
    valid = np.ones((batch,) + image, np.float32)
    valid[0, 10:, :] = 0.0  # bottom padding
    valid[1, :, 13:] = 0.0  # right padding
    return cams, penultimate, final, valid


def _low_level(seed=0, batch=2, size=(9, 11)):
    """Decoder low-level features at stride 4 of `_inputs`' 17 x 21 images."""
    return np.random.default_rng(seed + 50).normal(size=(batch,) + size + (3,)).astype(np.float32)


def _head(seed=0, resolution="backbone"):
    head = sgc.make_sgc_head(NUM_CLASSES, attention_dim=ATTENTION_DIM, resolution=resolution)
    cams, penultimate, final, valid = _inputs()
    low_level = _low_level() if resolution == "decoder" else None
    head(cams, [penultimate, final], valid, training=False, low_level=low_level)
    rng = np.random.default_rng(seed + 100)
    bn = head.output_bn
    bn.moving_mean.assign(rng.normal(size=NUM_CLASSES).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=NUM_CLASSES).astype(np.float32))
    bn.beta.assign(rng.normal(size=NUM_CLASSES).astype(np.float32))
    return head


def test_head_matches_numpy_reference():
    head = _head()
    cams, penultimate, final, valid = _inputs(seed=1)
    out = head(cams, [penultimate, final], valid, training=False).numpy()
    valid_small = resize.downsample_mask(valid, (5, 6)).numpy()
    expected, _ = numpy_sgc(head, cams, penultimate, final, valid_small)
    assert out.shape == (2, 5, 6, NUM_CLASSES)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_decoder_resolution_matches_numpy_reference():
    head = _head(resolution="decoder")
    cams, penultimate, final, valid = _inputs(seed=7)
    low_level = _low_level(seed=7)
    out = head(cams, [penultimate, final], valid, training=False, low_level=low_level).numpy()
    valid_small = resize.downsample_mask(valid, (9, 11)).numpy()
    expected, _ = numpy_sgc(head, cams, penultimate, final, valid_small, low_level=low_level)
    assert out.shape == (2, 9, 11, NUM_CLASSES)
    assert head.key.kernel.shape == (1, 1, 3 + 6 + 10, ATTENTION_DIM)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_decoder_resolution_errors_name_the_binding():
    with pytest.raises(ValueError, match="make_sgc_head.resolution = 'stride4'"):
        sgc.make_sgc_head(NUM_CLASSES, resolution="stride4")
    head = sgc.make_sgc_head(NUM_CLASSES, attention_dim=ATTENTION_DIM, resolution="decoder")
    cams, penultimate, final, valid = _inputs()
    with pytest.raises(ValueError, match="low-level features"):
        head(cams, [penultimate, final], valid, training=False)


def test_sgc_logits_passes_low_level_features_to_a_decoder_resolution_head():
    head = sgc.make_sgc_head(NUM_CLASSES, attention_dim=ATTENTION_DIM, resolution="decoder")
    rng = np.random.default_rng(8)
    final = rng.normal(size=(2, 5, 6, 10)).astype(np.float32)
    kernel = rng.normal(size=(10, NUM_CLASSES - 1)).astype(np.float32)
    labels = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    logits, cams = sgc.sgc_logits(head, final, final[..., :6], labels,
                                  valid=np.ones((2, 17, 21), np.float32),
                                  classifier_kernel=kernel, training=False,
                                  low_level_features=_low_level())
    assert logits.shape == (2, 9, 11, NUM_CLASSES) and cams.shape == (2, 5, 6, NUM_CLASSES - 1)


def test_trainable_variables_and_names():
    head = _head()
    names = sorted(v.path for v in head.trainable_variables)
    assert names == sorted([
        "sgc_head/key/kernel",
        "sgc_head/query/kernel",
        "sgc_head/pixel_normalization/kernel",
        "sgc_head/pixel_normalization_bn/beta",
    ])
    assert head.key.kernel.shape == (1, 1, 16, ATTENTION_DIM)


def test_padding_never_receives_attention():
    head = _head()
    cams, penultimate, final, valid = _inputs(seed=2)
    size = (5, 6)
    valid_small = resize.downsample_mask(valid, size)
    hyper = sgc.hypercolumn([penultimate, final], size)
    _, weights = head.attention(tf.constant(cams), hyper, valid_small)
    key_valid = tf.reshape(valid_small, [2, 1, -1]).numpy()
    assert np.all(weights.numpy() * (1.0 - key_valid) == 0.0)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-5)
    # Changing CAMs at padded positions leaves every valid position's output unchanged.
    out = head(cams, [penultimate, final], valid, training=False).numpy()
    noisy = cams.copy()
    pad = valid_small.numpy() == 0
    noisy[pad] = np.random.default_rng(3).random((pad.sum(), NUM_CLASSES - 1))
    out_noisy = head(noisy, [penultimate, final], valid, training=False).numpy()
    np.testing.assert_allclose(out_noisy[~pad], out[~pad], atol=1e-6)
    assert not np.allclose(out_noisy[pad], out[pad])


def test_gradients_reach_only_the_head():
    head = _head()
    cams, penultimate, final, valid = _inputs(seed=4)
    inputs = [tf.Variable(x) for x in (cams, penultimate, final)]
    with tf.GradientTape() as tape:
        logits = head(inputs[0], inputs[1:], valid, training=True)
        loss = tf.reduce_mean(tf.square(logits))
    grads = tape.gradient(loss, inputs + head.trainable_variables)
    assert all(g is None for g in grads[:3])
    for g in grads[3:]:
        assert g is not None and np.any(g.numpy() != 0.0)


def test_hypercolumn_matches_numpy_resize():
    _, penultimate, final, _ = _inputs(seed=5)
    hyper = sgc.hypercolumn([penultimate, final], (5, 6)).numpy()
    expected = np.concatenate([numpy_bilinear_align_corners(penultimate, 5, 6),
                               numpy_bilinear_align_corners(final, 5, 6)], axis=-1)
    np.testing.assert_allclose(hyper, expected, atol=1e-5)


def test_sgc_logits_pipeline_and_training_mode():
    head = sgc.make_sgc_head(NUM_CLASSES, attention_dim=ATTENTION_DIM)
    rng = np.random.default_rng(6)
    final = rng.normal(size=(2, 5, 6, 10)).astype(np.float32)
    penultimate = rng.normal(size=(2, 5, 6, 6)).astype(np.float32)
    kernel = rng.normal(size=(10, NUM_CLASSES - 1)).astype(np.float32)
    labels = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    logits, cams = sgc.sgc_logits(head, final, penultimate, labels,
                                  valid=np.ones((2, 17, 21), np.float32),
                                  classifier_kernel=kernel, training=True)
    assert logits.shape == (2, 5, 6, NUM_CLASSES) and cams.shape == (2, 5, 6, NUM_CLASSES - 1)
    assert np.all(np.isfinite(logits.numpy()))
    # Training-mode BatchNorm normalises with batch statistics: per-channel mean ~ beta (0).
    np.testing.assert_allclose(logits.numpy().mean(axis=(0, 1, 2)), 0.0, atol=1e-4)


@pytest.mark.parametrize("align_corners,expected_rows", [(True, [0, 4, 8, 12, 16]),
                                                         (False, [0, 3, 6, 10, 13])])
def test_downsample_mask_sampling(align_corners, expected_rows):
    # Only the rows the resize should sample are 1, so the output is all ones iff it samples them.
    mask = np.zeros((1, 17, 3), np.float32)
    mask[0, expected_rows, :] = 1.0
    out = resize.downsample_mask(mask, (5, 3), align_corners).numpy()
    np.testing.assert_array_equal(out, np.ones((1, 5, 3)))


@pytest.mark.parametrize("size,out", [(65, 17), (33, 9), (17, 5), (21, 6)])
def test_resize_labels_lies_on_the_corner_aligned_logit_grid(size, out):
    # L_s upsamples logits with align_corners=True, so logit position i is trained on label
    # pixel round(i * (size - 1) / (out - 1)); masks resized to the logits must read that pixel.
    rng = np.random.default_rng(size)
    labels = rng.integers(0, 9, (2, size, size + 4)).astype(np.int32)
    rows = np.round(np.arange(out) * (size - 1) / (out - 1)).astype(int)
    cols = np.round(np.arange(out + 1) * (size + 3) / out).astype(int)
    expected = labels[:, rows][:, :, cols]
    got = resize.resize_labels(tf.constant(labels), (out, out + 1)).numpy()
    np.testing.assert_array_equal(got, expected)
    # TF1's default sampling (floor(i * size / out)) drifts off that grid.
    drifted = resize.resize_labels(tf.constant(labels), (out, out + 1), align_corners=False)
    assert not np.array_equal(drifted.numpy(), expected)
