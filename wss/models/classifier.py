"""The image classification network that pretraining trains: backbone + pooled classifier.

This is the network of DeepLab's ImageNet checkpoints (`xception_65/...` and its
`xception_65/logits` classifier), and the backbone and classifier of PseudoSeg's DeepLab model:
global average pooling of the last block, dropout (keep 0.5 for Xception, none for ResNet) and a
1x1 convolution with bias, under the TF1 scope `<network>/logits`. A checkpoint written from it
by `wss.models.save_tf1_checkpoint` therefore warm-starts `DeepLabV3Plus` exactly as DeepLab's
ImageNet checkpoints do: the backbone is restored and the classifier is skipped when its number
of categories differs from the segmentation classes. The head (pooling aside) is
`wss.models.classifier_head.ImageClassifierHead`, the layer `DeepLabV3Plus` uses.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import gin
import keras
import tensorflow as tf

from wss.models.classifier_head import ImageClassifierHead, classifier_initializer, global_pool
from wss.models.deeplab import BACKBONES, build_backbone
from wss.models.layers import batch_norm_overrides, collect_tf1_variables


class ImageClassifier(keras.Model):
    """A backbone with DeepLab's pooled classifier, for (multi-label) image classification.

    `call(images, training=False)` takes float images `[B, H, W, 3]` in [0, 255] and returns a
    dict with `logits` (`[B, num_logits]` float32) and `features` (the backbone endpoints plus
    `final`).

    Args:
        backbone: An `Xception65` or `ResNetBeta` layer.
        num_logits: Number of categories the classifier scores.
        dropout_rate: Dropout before the classifier in training; None takes the backbone's
            (0.5 for Xception, 0 for ResNet), as DeepLab's `extract_features`.
        **kwargs: Keras model arguments (`name`, `dtype`).
    """

    def __init__(self, backbone, num_logits: int, dropout_rate: Optional[float] = None,
                 **kwargs):
        kwargs.setdefault("name", "classifier")
        super().__init__(**kwargs)
        if num_logits < 1:
            raise ValueError(f"num_logits must be positive, got {num_logits}.")
        self.backbone = backbone
        self.num_logits = num_logits
        if dropout_rate is None:
            dropout_rate = backbone.classifier_dropout_rate
        self.classifier_head = ImageClassifierHead(
            num_logits, dropout_rate, classifier_initializer(backbone), dtype=self.dtype_policy)

    @property
    def classifier(self) -> keras.layers.Conv2D:
        """The 1x1 convolution (`<network>/logits`)."""
        return self.classifier_head.classifier

    @property
    def dropout(self) -> keras.layers.Dropout:
        """The dropout before the classifier (`prelogits_dropout`)."""
        return self.classifier_head.dropout

    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True

    def call(self, images, training=False) -> Dict[str, object]:
        training = bool(training)
        inputs = tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0
        final, endpoints = self.backbone(tf.cast(inputs, self.compute_dtype), training=training)
        logits = self.classifier_head(global_pool(final), training=training)
        features = dict(endpoints)
        features["final"] = final
        return {"logits": logits, "features": features}

    def tf1_variable_table(self) -> List[Tuple[keras.Variable, str]]:
        """Every variable with its DeepLab TF1 name (`xception_65/...`, `.../logits/...`)."""
        prefix = f"{self.backbone.tf1_scope}/"
        table = list(collect_tf1_variables(self.backbone.tf1_layers(), prefix))
        table.extend(self.classifier_head.tf1_variables(prefix))
        return table


@gin.configurable
def build_image_classifier(
    num_logits: int = gin.REQUIRED,
    backbone: str = "xception_65",
    output_stride: int = 32,
    multi_grid: Optional[Sequence[int]] = None,
    width_multiplier: float = 1.0,
    middle_flow_units: int = 16,
    resnet_units_per_block: Optional[Sequence[int]] = None,
    dropout_rate: Optional[float] = None,
    batch_norm_decay: Optional[float] = None,
    synchronized_batch_norm: bool = False,
    dtype=None,
    build_input_size: int = 33,
    name: str = "classifier",
) -> ImageClassifier:
    """Builds an `ImageClassifier` and creates its variables.

    The backbone options mean what they mean for `build_deeplab`; a checkpoint of this model
    warm-starts a DeepLab model built with the same `backbone`, `width_multiplier`,
    `middle_flow_units` and `resnet_units_per_block`, whatever the output strides (atrous
    rates do not change the variables). Call inside `strategy.scope()` when training.

    Args:
        num_logits: Number of categories.
        backbone: One of `BACKBONES`.
        output_stride: Backbone output stride (32 as in ImageNet training; 8 or 16 cost more).
        multi_grid: Unit rates of the last block.
        width_multiplier: Scales every channel count.
        middle_flow_units: Xception middle-flow units.
        resnet_units_per_block: ResNet units in blocks 1-3.
        dropout_rate: Pre-classifier dropout (None: the backbone's).
        batch_norm_decay: Moving-average decay of every BatchNorm (None: DeepLab's).
        synchronized_batch_norm: Batch statistics across replicas.
        dtype: Keras dtype policy (None: the global one).
        build_input_size: Side of the dummy batch used to create the variables.
        name: Model name.

    Returns:
        A built `ImageClassifier`.

    Raises:
        ValueError: For an unknown backbone or output stride.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; expected one of {BACKBONES}.")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}.")
    policy = keras.dtype_policies.get(dtype) if dtype is not None else None
    with batch_norm_overrides(batch_norm_decay, synchronized_batch_norm):
        net = build_backbone(backbone, output_stride, multi_grid, width_multiplier,
                             middle_flow_units, resnet_units_per_block, policy)
        model = ImageClassifier(net, num_logits, dropout_rate=dropout_rate, name=name,
                                dtype=policy)
    model(tf.zeros([1, build_input_size, build_input_size, 3], tf.float32), training=False)
    return model
