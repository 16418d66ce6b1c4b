"""Tests of `wss.models.inference`: logits at the image size on DeepLab's aligned grid."""

import numpy as np
import pytest
import tensorflow as tf

from wss.evaluation import evaluator
from wss.models import inference


class AlignedStride4Model:
    """A perfectly aligned stride-4 network: logit position `i` is input pixel `4 * i`.

    This is where a DeepLab network with fixed padding puts its decoder positions; the image
    itself is the logits, so numpy can compute what upsampling them must give.
    """

    output_stride = 8

    def __call__(self, images, training=False):
        del training
        return {"logits": tf.cast(images, tf.float32)[:, ::4, ::4, :]}


def numpy_reference(images, stride=8, decoder_stride=4, pad_value=127.5):
    """Pad to `n * stride + 1`, sample every `decoder_stride` pixels, interpolate back, crop."""
    batch, height, width, channels = images.shape
    padded_h = -(-(height - 1) // stride) * stride + 1
    padded_w = -(-(width - 1) // stride) * stride + 1
    padded = np.full((batch, padded_h, padded_w, channels), pad_value, np.float64)
    padded[:, :height, :width] = images
    samples = padded[:, ::decoder_stride, ::decoder_stride]
    rows = np.arange(padded_h) / decoder_stride
    cols = np.arange(padded_w) / decoder_stride
    out = np.empty((batch, padded_h, padded_w, channels))
    for b in range(batch):
        for c in range(channels):
            along_cols = np.stack([np.interp(cols, np.arange(samples.shape[2]), row)
                                   for row in samples[b, :, :, c]])
            out[b, :, :, c] = np.stack([np.interp(rows, np.arange(samples.shape[1]), col)
                                        for col in along_cols.T], axis=1)
    return out[:, :height, :width]


@pytest.mark.parametrize("size,stride,expected", [(64, 8, 65), (65, 8, 65), (66, 8, 73),
                                                  (1, 16, 1), (513, 16, 513), (500, 16, 513),
                                                  (96, 8, 97), (80, 16, 81)])
def test_aligned_size(size, stride, expected):
    assert inference.aligned_size(size, stride) == expected
    assert int(inference.aligned_size(tf.constant(size), stride)) == expected


@pytest.mark.parametrize("height,width", [(64, 64), (65, 65), (37, 29)])
def test_full_resolution_logits_put_each_logit_on_its_pixel(height, width):
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    ramp = np.stack([rows, cols], axis=-1)[np.newaxis].astype(np.float32)  # value = position
    got = inference.full_resolution_logits(AlignedStride4Model(), tf.constant(ramp)).numpy()
    assert got.shape == (1, height, width, 2)
    np.testing.assert_allclose(got, numpy_reference(ramp), atol=1e-4)
    # Up to the last sampled pixel before the padding, the ramp comes back exactly: each
    # logit sits on the pixel it was taken from.
    last_row, last_col = (height - 1) // 4 * 4, (width - 1) // 4 * 4
    np.testing.assert_allclose(got[0, :last_row + 1, :last_col + 1],
                               ramp[0, :last_row + 1, :last_col + 1], atol=1e-4)
    if (height - 1) % 8:
        # Upsampling the unpadded image's logits stretches them over the image instead.
        naive = tf.image.resize(AlignedStride4Model()(ramp)["logits"], (height, width))
        assert np.max(np.abs(naive.numpy() - ramp)) > 1.0


def test_evaluation_scores_the_aligned_prediction():
    # Ground truth: class 1 where the column is >= 31, on a 64 x 64 image. A stride-4 model
    # whose logits favour class 1 exactly there (read off the image) gets every pixel right
    # only if its logits are put back on the pixels they came from (upsampled without padding,
    # column 31 would read the logit of column 29.5 and be missed).
    height = width = 64
    cols = np.broadcast_to(np.arange(width, dtype=np.float32), (height, width))
    image = np.stack([cols, np.zeros_like(cols), np.zeros_like(cols)], -1)[np.newaxis]

    class Model(AlignedStride4Model):
        def __call__(self, images, training=False):
            columns = super().__call__(images)["logits"][..., :1]
            return {"logits": tf.concat([30.5 - columns, columns - 30.5], axis=-1)}

    labels = (cols >= 31).astype(np.int32)[np.newaxis]
    labels[:, 61:, :] = labels[:, :, 61:] = 255  # Interpolated towards the padding: ignored.
    dataset = tf.data.Dataset.from_tensors({"image": tf.constant(image),
                                            "label": tf.constant(labels)})
    results = evaluator.evaluate_model(Model(), dataset, num_classes=2)
    assert results["pixel_accuracy"] == pytest.approx(1.0)


def test_crop_alignment_warning_names_the_binding_and_the_aligned_crop():
    assert inference.crop_alignment_warning((65, 65), 8) is None
    assert inference.crop_alignment_warning((513, 513), 16) is None
    message = inference.crop_alignment_warning((64, 65), 8)
    assert "train.crop_size=(64, 65)" in message and "(65, 65)" in message
    message = inference.crop_alignment_warning((97, 100), 16, binding="my.crop")
    assert message.startswith("my.crop=(97, 100)") and "(97, 113)" in message
