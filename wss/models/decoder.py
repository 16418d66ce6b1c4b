"""The DeepLabv3+ decoder, as in DeepLab's `model.py` (`refine_by_decoder`).

`decoder/feature_projection0` (1x1 conv to 48 channels) on the low-level endpoint; the ASPP
output and the projection are resized to `scale_dimension(H, 1 / decoder_output_stride)` with
`align_corners=True` (skipped where the size already matches), concatenated (ASPP first) and
smoothed by `decoder/decoder_conv0` and `decoder/decoder_conv1` (split separable 3x3 convs);
BatchNorm epsilon 1e-5, decay 0.9997.

`Decoder` is a `ScopelessLayer`: its sublayers keep the variable paths they had as attributes
of the model (`deeplab/decoder_feature_projection0/...`, `deeplab/decoder_decoder_conv0/...`).
"""

from __future__ import annotations

from typing import Tuple

import tensorflow as tf

from wss.models.layers import (
    ScopelessLayer,
    TF1Named,
    collect_tf1_variables,
    head_conv_bn,
    head_separable_conv,
    scale_dimension,
)
from wss.resize import resize_bilinear


def _has_static_size(tensor: tf.Tensor, height, width) -> bool:
    """Whether `tensor` is statically known to be `height x width` already."""
    return isinstance(height, int) and isinstance(width, int) and tuple(
        tensor.shape[1:3]
    ) == (height, width)


class Decoder(ScopelessLayer, TF1Named):
    """DeepLab's decoder: low-level projection, merge with the ASPP output, two convs.

    `call(aspp_features, low_level, image_size, training=False)` takes the ASPP output, the
    low-level endpoint and the `(height, width)` of the network input (ints or scalar tensors)
    and returns `[B, ceil(H / s), ceil(W / s), depth]` in the compute dtype, `s` the decoder
    output stride. `training` is BatchNorm's mode (the model passes `training and
    fine_tune_batch_norm`).

    Args:
        depth: Channels of the two decoder convs (256 in DeepLab).
        projection_depth: Channels of the low-level projection (48 in DeepLab).
        output_stride: The decoder output stride (stride of the low-level endpoint).
        **kwargs: Keras layer arguments (`name`, `dtype`).
    """

    def __init__(self, depth: int, projection_depth: int, output_stride: int, **kwargs):
        kwargs.setdefault("name", "decoder")
        super().__init__(**kwargs)
        self.output_stride = output_stride
        policy = self.dtype_policy
        self.feature_projection = head_conv_bn(
            projection_depth, "decoder/feature_projection0", dtype=policy)
        self.conv0 = head_separable_conv(depth, 1, "decoder/decoder_conv0", dtype=policy)
        self.conv1 = head_separable_conv(depth, 1, "decoder/decoder_conv1", dtype=policy)

    def call(self, aspp_features, low_level, image_size: Tuple, training=False):
        height = scale_dimension(image_size[0], 1.0 / self.output_stride)
        width = scale_dimension(image_size[1], 1.0 / self.output_stride)
        merged = []
        for tensor in (aspp_features, self.feature_projection(low_level, training=training)):
            if not _has_static_size(tensor, height, width):
                tensor = tf.cast(resize_bilinear(tensor, (height, width)), tensor.dtype)
            merged.append(tensor)
        net = self.conv0(tf.concat(merged, axis=3), training=training)
        return self.conv1(net, training=training)

    def tf1_variables(self):
        """Yields `(variable, tf1_name)` under `decoder/...`."""
        yield from collect_tf1_variables([self.feature_projection, self.conv0, self.conv1])
