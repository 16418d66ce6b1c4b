"""Atrous spatial pyramid pooling (ASPP) of DeepLabv3+, as in DeepLab's `model.py`.

On the backbone output: image pooling (global mean, 1x1 conv, bilinear resize back with
`align_corners=True`), `aspp0` 1x1 conv, `aspp1..3` split separable 3x3 convs at the atrous
rates, all with BatchNorm (epsilon 1e-5, decay 0.9997) and ReLU, concatenated in that order
and projected by `concat_projection` (1x1 conv), followed by dropout (keep probability 0.9 in
DeepLab) in training.

`ASPP` is a `ScopelessLayer`: its sublayers keep the variable paths they had as attributes of
the model (`deeplab/image_pooling/...`, `deeplab/aspp1/...`, `deeplab/concat_projection/...`).
"""

from __future__ import annotations

import contextlib
from typing import Sequence, Tuple

import keras
import tensorflow as tf
from absl import logging

from wss.models.layers import (
    ScopelessLayer,
    TF1Named,
    collect_tf1_variables,
    head_conv_bn,
    head_separable_conv,
    scale_dimension,
)
from wss.resize import resize_bilinear


class ASPP(ScopelessLayer, TF1Named):
    """DeepLab's ASPP with image pooling and its projection.

    `call(features, image_size, training=False)` takes the backbone output `[B, h, w, F]` and
    the `(height, width)` of the network input (ints or scalar tensors; the image-pooling
    branch is resized to `scale_dimension(height, 1 / output_stride)`, as in DeepLab) and
    returns `[B, h, w, depth]` in the compute dtype. BatchNorm trains when `training` and
    `fine_tune_batch_norm`; the dropout follows `training` alone.

    Args:
        depth: Channels of every branch and of the projection (256 in DeepLab).
        atrous_rates: Rates of the separable branches `aspp1, aspp2, ...`.
        output_stride: Output stride of the features.
        dropout_rate: Dropout after the projection in training (DeepLab: 0.1).
        fine_tune_batch_norm: If False, BatchNorm always runs in inference mode.
        **kwargs: Keras layer arguments (`name`, `dtype`).
    """

    def __init__(self, depth: int, atrous_rates: Sequence[int], output_stride: int,
                 dropout_rate: float = 0.1, fine_tune_batch_norm: bool = True, **kwargs):
        kwargs.setdefault("name", "aspp")
        super().__init__(**kwargs)
        self.atrous_rates = tuple(atrous_rates)
        self.output_stride = output_stride
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self._warned_sizes = set()
        # Off (`rate_warnings_off`) while a dummy batch creates the variables or an export
        # traces the model: their feature maps say nothing about the crops it will see.
        self.warn_about_rates = True
        policy = self.dtype_policy
        self.image_pooling = head_conv_bn(depth, "image_pooling", dtype=policy)
        self.aspp0 = head_conv_bn(depth, "aspp0", dtype=policy)
        self.separable = [
            head_separable_conv(depth, rate, f"aspp{i}", dtype=policy)
            for i, rate in enumerate(self.atrous_rates, 1)
        ]
        self.concat_projection = head_conv_bn(depth, "concat_projection", dtype=policy)
        self.dropout = keras.layers.Dropout(
            dropout_rate, name="concat_projection_dropout", dtype=policy)

    def call(self, features, image_size: Tuple, training=False):
        training = bool(training)
        bn_training = training and self.fine_tune_batch_norm
        self._warn_if_rates_exceed(features)
        branches = [self._image_pooling(features, image_size, bn_training),
                    self.aspp0(features, training=bn_training)]
        for layer in self.separable:
            branches.append(layer(features, training=bn_training))
        net = self.concat_projection(tf.concat(branches, axis=3), training=bn_training)
        return self.dropout(net, training=training)

    def _image_pooling(self, features, image_size, bn_training):
        """Global mean, 1x1 conv, resized back to the feature size of `image_size`."""
        height, width = image_size
        pool_height = scale_dimension(height, 1.0 / self.output_stride)
        pool_width = scale_dimension(width, 1.0 / self.output_stride)
        pooled = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
        pooled = self.image_pooling(pooled, training=bn_training)
        return tf.cast(resize_bilinear(pooled, (pool_height, pool_width)), pooled.dtype)

    @contextlib.contextmanager
    def rate_warnings_off(self):
        """Silences the atrous-rate warning inside the `with` block.

        For calls whose input size is not a training crop: the dummy batch of `build_deeplab`
        and the traces of `tf.saved_model.save` (which replays the build's input shape).
        """
        previous = self.warn_about_rates
        self.warn_about_rates = False
        try:
            yield
        finally:
            self.warn_about_rates = previous

    def _warn_if_rates_exceed(self, features):
        """Warns once per feature size when an atrous rate reaches past the feature map.

        A 3x3 convolution with rate `r` on an `h x w` map with `r >= max(h, w)` reads nothing
        but zero padding off its centre tap: it is a 1x1 convolution. DeepLab's rates 6/12/18
        suit 513 px crops (33 x 33 features at output stride 16), not small images.
        """
        size = tuple(features.shape[1:3])
        if not self.warn_about_rates or None in size or size in self._warned_sizes:
            return
        self._warned_sizes.add(size)
        degenerate = [r for r in self.atrous_rates if r >= max(size)]
        if degenerate:
            logging.warning(
                "ASPP atrous rates %s reach past the %dx%d feature map (output stride %d): "
                "those branches act as 1x1 convolutions. For small crops use output stride 8 "
                "and/or smaller build_deeplab.atrous_rates (e.g. %s).", degenerate, size[0],
                size[1], self.output_stride,
                tuple(max(1, round(r * max(size) / 33)) for r in self.atrous_rates))

    def tf1_variables(self):
        """Yields `(variable, tf1_name)`: `image_pooling`, `aspp0..3`, `concat_projection`."""
        layers = [self.image_pooling, self.aspp0, *self.separable, self.concat_projection]
        yield from collect_tf1_variables(layers)
