"""DeepLab's pooled image classifier head: pooled features -> logits.

What DeepLab's `extract_features(..., global_pool=True, num_classes=K)` puts on top of the
global average pool of the last block: dropout (keep 0.5 for Xception, none for ResNet) and a
1x1 convolution with bias, TF1 scope `<network>/logits` (`xception_65/logits`,
`resnet_v1_50/logits`). PseudoSeg's DeepLab model (`wss.models.deeplab`, K = C - 1) and the
pretraining `ImageClassifier` (`wss.models.classifier`) share it; it lives in its own module
because `classifier` imports `deeplab`.

`ImageClassifierHead` is a `ScopelessLayer`: its sublayers keep the variable paths they had as
attributes of the models (`deeplab/classifier/kernel`, `classifier/classifier/bias`).
"""

from __future__ import annotations

from typing import Iterator, Tuple

import keras
import tensorflow as tf

from wss.models.layers import ScopelessLayer
from wss.models.xception import Xception65


def classifier_initializer(backbone) -> keras.initializers.Initializer:
    """DeepLab's initializer of the `<network>/logits` kernel for a backbone.

    Args:
        backbone: An `Xception65` or `ResNetBeta` layer.

    Returns:
        Truncated normal (stddev 0.09) for Xception, He (truncated normal) for ResNet.
    """
    if isinstance(backbone, Xception65):
        return keras.initializers.TruncatedNormal(stddev=0.09)
    return keras.initializers.VarianceScaling(2.0, "fan_in", "truncated_normal")


def global_pool(features: tf.Tensor) -> tf.Tensor:
    """Global average pool `[B, h, w, F] -> [B, 1, 1, F]`, the head's input."""
    return tf.reduce_mean(features, axis=[1, 2], keepdims=True)


class ImageClassifierHead(ScopelessLayer):
    """Dropout and a 1x1 conv with bias on pooled features, returning `[B, K]` float32 logits.

    `call(pooled, training=False)` takes `[B, 1, 1, F]` (see `global_pool`); `training` is the
    dropout's mode.

    Args:
        num_logits: K, the number of categories.
        dropout_rate: Dropout before the convolution in training.
        kernel_initializer: Initializer of the kernel (see `classifier_initializer`).
        **kwargs: Keras layer arguments (`name`, `dtype`).
    """

    def __init__(self, num_logits: int, dropout_rate: float, kernel_initializer, **kwargs):
        kwargs.setdefault("name", "classifier_head")
        super().__init__(**kwargs)
        self.num_logits = num_logits
        self.dropout = keras.layers.Dropout(dropout_rate, name="prelogits_dropout",
                                            dtype=self.dtype_policy)
        self.classifier = keras.layers.Conv2D(num_logits, 1, use_bias=True, name="classifier",
                                              kernel_initializer=kernel_initializer,
                                              dtype=self.dtype_policy)

    def call(self, pooled, training=False):
        logits = self.classifier(self.dropout(pooled, training=bool(training)))
        return tf.cast(tf.reshape(logits, [-1, self.num_logits]), tf.float32)

    @property
    def kernel_matrix(self) -> tf.Tensor:
        """The 1x1 kernel as `[F, K]`."""
        kernel = self.classifier.kernel
        return tf.reshape(kernel, [kernel.shape[2], kernel.shape[3]])

    def tf1_variables(self, prefix: str) -> Iterator[Tuple[keras.Variable, str]]:
        """Yields `(variable, tf1_name)` under `<prefix>logits/`.

        Args:
            prefix: The backbone's scope with a trailing slash (`xception_65/`).
        """
        yield self.classifier.kernel, f"{prefix}logits/weights"
        yield self.classifier.bias, f"{prefix}logits/biases"
