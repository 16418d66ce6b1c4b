"""DeepLabv3+ (ASPP + decoder) with PseudoSeg's image classifier, and `build_deeplab`.

The head follows DeepLab's `model.py` (the copy in googleinterns/wss that PseudoSeg
trained with):

* ASPP on the backbone output: image pooling (global mean, 1x1 conv, bilinear resize
  back), `aspp0` 1x1 conv, `aspp1..3` split separable 3x3 convs at the atrous rates,
  all 256 channels with BatchNorm (epsilon 1e-5, decay 0.9997) and ReLU;
  `concat_projection` 1x1 conv to 256 and dropout with keep probability 0.9 in training;
* decoder: `decoder/feature_projection0` 1x1 conv to 48 channels on the stride-4
  endpoint, both inputs resized to `scale_dimension(H, 1/4)` with `align_corners=True`,
  concatenated (ASPP first) and smoothed by `decoder_conv0` and `decoder_conv1` (split
  separable 3x3, 256);
* `logits/semantic`: 1x1 conv with bias.

The image classifier is the one PseudoSeg obtains from DeepLab's `extract_features` with
`global_pool=True, num_classes=C-1`: global average pool of the last block, dropout (keep
0.5 for Xception, none for ResNet) and a 1x1 conv with bias, scope
`<network>/logits` (`xception_65/logits`, `resnet_v1_50/logits`).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import gin
import keras
import tensorflow as tf
from absl import logging

from wss.models.layers import (
    ConvBN,
    SeparableConvBN,
    batch_norm_overrides,
    collect_tf1_variables,
    resize_bilinear,
    scale_dimension,
    scaled_depth,
)
from wss.models.resnet import ResNetBeta
from wss.models.xception import Xception65

HEAD_BN_EPSILON = 1e-5
HEAD_BN_MOMENTUM = 0.9997
BACKBONES = ("xception_65", "resnet_50_beta", "resnet_101_beta")
DEFAULT_ATROUS_RATES_AT_OS16 = (6, 12, 18)


def _static_or_dynamic_size(images: tf.Tensor) -> Tuple:
    """Height and width of `images`: Python ints where static, else scalar tensors."""
    static = images.shape
    dynamic = tf.shape(images)
    height = static[1] if static[1] is not None else dynamic[1]
    width = static[2] if static[2] is not None else dynamic[2]
    return height, width


def _same_static_size(tensor: tf.Tensor, height, width) -> bool:
    return isinstance(height, int) and isinstance(width, int) and tuple(
        tensor.shape[1:3]
    ) == (height, width)


class DeepLabV3Plus(keras.Model):
    """DeepLabv3+ segmentation model with an image classifier (PseudoSeg's network).

    `call(images, training=False)` takes float images `[B, H, W, 3]` in [0, 255] and
    returns a dict:

    * `logits`: `[B, ceil(H/4), ceil(W/4), C]` float32 decoder logits (DeepLab's merged
      logits before upsampling; at the output stride if the decoder is disabled);
    * `cls_logits`: `[B, C - 1]` float32 image classifier logits;
    * `features`: backbone endpoints under DeepLab's names plus `low_level`,
      `penultimate` and `final`.

    Build it with `build_deeplab`, which also runs it once so that every variable exists.

    Args:
        backbone: An `Xception65` or `ResNetBeta` layer.
        num_classes: Number of classes including background.
        output_stride: Output stride of the backbone.
        atrous_rates: ASPP rates (used as given).
        decoder_output_stride: 4 (DeepLabv3+), 8, or None for no decoder.
        width_multiplier: Scales the head's channel counts (256 and 48).
        fine_tune_batch_norm: If False, BatchNorm always runs in inference mode (DeepLab's
            `fine_tune_batch_norm=False`); dropout still follows `training`.
        classifier_dropout_rate: Dropout before the classifier when BatchNorm trains
            (DeepLab passes `is_training and fine_tune_batch_norm` to it). None takes the
            backbone's (0.5 for Xception, 0 for ResNet).
        aspp_dropout_rate: Dropout after `concat_projection` in training (DeepLab: 0.1).
        **kwargs: Keras model arguments (`name`, `dtype`).
    """

    def __init__(
        self,
        backbone,
        num_classes: int,
        output_stride: int,
        atrous_rates: Sequence[int],
        decoder_output_stride: Optional[int] = 4,
        width_multiplier: float = 1.0,
        fine_tune_batch_norm: bool = True,
        classifier_dropout_rate: Optional[float] = None,
        aspp_dropout_rate: float = 0.1,
        **kwargs,
    ):
        kwargs.setdefault("name", "deeplab")
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + 1), got {num_classes}.")
        if decoder_output_stride is not None and (
            decoder_output_stride not in backbone.decoder_endpoints
            or decoder_output_stride >= output_stride
        ):
            raise ValueError(
                f"decoder_output_stride={decoder_output_stride} is not supported with "
                f"output_stride={output_stride}; use one of "
                f"{sorted(s for s in backbone.decoder_endpoints if s < output_stride)} or None."
            )
        self.backbone = backbone
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.atrous_rates = tuple(atrous_rates)
        self._warned_sizes = set()
        self.decoder_output_stride = decoder_output_stride
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.low_level_endpoint = (
            backbone.decoder_endpoints[decoder_output_stride] if decoder_output_stride else None
        )
        if classifier_dropout_rate is None:
            classifier_dropout_rate = backbone.classifier_dropout_rate
        policy = self.dtype_policy

        def depth(d):
            return scaled_depth(d, width_multiplier)

        def conv_bn(filters, scope, name):
            return ConvBN(filters, 1, tf1_scope=scope, bn_epsilon=HEAD_BN_EPSILON,
                          bn_momentum=HEAD_BN_MOMENTUM, name=name, dtype=policy)

        def separable(filters, rate, scope):
            return SeparableConvBN(
                filters, tf1_scope=scope, rate=rate, bn_epsilon=HEAD_BN_EPSILON,
                bn_momentum=HEAD_BN_MOMENTUM,
                depthwise_initializer=keras.initializers.TruncatedNormal(stddev=0.33),
                pointwise_initializer=keras.initializers.TruncatedNormal(stddev=0.06),
                name=scope.replace("/", "_"), dtype=policy)

        head_depth = depth(256)
        self.image_pooling = conv_bn(head_depth, "image_pooling", "image_pooling")
        self.aspp0 = conv_bn(head_depth, "aspp0", "aspp0")
        self.aspp_separable = [
            separable(head_depth, rate, f"aspp{i}") for i, rate in enumerate(self.atrous_rates, 1)
        ]
        self.concat_projection = conv_bn(head_depth, "concat_projection", "concat_projection")
        self.concat_projection_dropout = keras.layers.Dropout(
            aspp_dropout_rate, name="concat_projection_dropout", dtype=policy)
        self.decoder_layers = []
        if decoder_output_stride:
            self.feature_projection = conv_bn(
                depth(48), "decoder/feature_projection0", "decoder_feature_projection0")
            self.decoder_layers = [
                self.feature_projection,
                separable(head_depth, 1, "decoder/decoder_conv0"),
                separable(head_depth, 1, "decoder/decoder_conv1"),
            ]
        self.semantic_logits = keras.layers.Conv2D(
            num_classes, 1, use_bias=True, name="logits_semantic", dtype=policy,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01))
        if isinstance(backbone, Xception65):
            classifier_initializer = keras.initializers.TruncatedNormal(stddev=0.09)
        else:
            classifier_initializer = keras.initializers.VarianceScaling(
                2.0, "fan_in", "truncated_normal")
        self.classifier_dropout = keras.layers.Dropout(
            classifier_dropout_rate, name="prelogits_dropout", dtype=policy)
        self.classifier = keras.layers.Conv2D(
            num_classes - 1, 1, use_bias=True, name="classifier", dtype=policy,
            kernel_initializer=classifier_initializer)

    # ----------------------------------------------------------------- forward pass
    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True

    def call(self, images, training=False) -> Dict[str, object]:
        training = bool(training)
        bn_training = training and self.fine_tune_batch_norm
        height, width = _static_or_dynamic_size(images)
        inputs = tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0
        inputs = tf.cast(inputs, self.compute_dtype)
        final, endpoints = self.backbone(inputs, training=bn_training)

        features = dict(endpoints)
        features["penultimate"] = endpoints[self.backbone.penultimate_endpoint]
        features["final"] = final
        if self.low_level_endpoint:
            features["low_level"] = endpoints[self.low_level_endpoint]

        net = self._aspp(final, height, width, bn_training, training)
        if self.decoder_output_stride:
            net = self._decoder(net, features["low_level"], height, width, bn_training)
        logits = tf.cast(self.semantic_logits(net), tf.float32)
        cls_logits = self.classify(final, training=bn_training)
        return {"logits": logits, "cls_logits": cls_logits, "features": features}

    def _warn_if_rates_exceed(self, features):
        """Warns once per feature size when an ASPP rate reaches past the feature map.

        A 3x3 convolution with rate `r` on an `h x w` map with `r >= max(h, w)` reads nothing
        but zero padding off its centre tap: it is a 1x1 convolution. DeepLab's rates 6/12/18
        suit 513 px crops (33 x 33 features at output stride 16), not small images.
        """
        size = tuple(features.shape[1:3])
        if None in size or size in self._warned_sizes:
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

    def _aspp(self, features, height, width, bn_training, training):
        self._warn_if_rates_exceed(features)
        pool_height = scale_dimension(height, 1.0 / self.output_stride)
        pool_width = scale_dimension(width, 1.0 / self.output_stride)
        image_feature = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
        image_feature = self.image_pooling(image_feature, training=bn_training)
        image_feature = resize_bilinear(image_feature, (pool_height, pool_width))
        branches = [image_feature, self.aspp0(features, training=bn_training)]
        for layer in self.aspp_separable:
            branches.append(layer(features, training=bn_training))
        net = self.concat_projection(tf.concat(branches, axis=3), training=bn_training)
        return self.concat_projection_dropout(net, training=training)

    def _decoder(self, aspp_features, low_level, height, width, bn_training):
        decoder_height = scale_dimension(height, 1.0 / self.decoder_output_stride)
        decoder_width = scale_dimension(width, 1.0 / self.decoder_output_stride)
        projection, conv0, conv1 = self.decoder_layers
        merged = []
        for tensor in (aspp_features, projection(low_level, training=bn_training)):
            if not _same_static_size(tensor, decoder_height, decoder_width):
                tensor = resize_bilinear(tensor, (decoder_height, decoder_width))
            merged.append(tensor)
        net = conv0(tf.concat(merged, axis=3), training=bn_training)
        return conv1(net, training=bn_training)

    def classify(self, final_features, training=False) -> tf.Tensor:
        """The image classifier as a function of the `final` endpoint.

        Args:
            final_features: `[B, h, w, F]` last-block features.
            training: Whether to apply the pre-logits dropout.

        Returns:
            `[B, C - 1]` float32 logits.
        """
        pooled = tf.reduce_mean(final_features, axis=[1, 2], keepdims=True)
        pooled = self.classifier_dropout(pooled, training=bool(training))
        logits = self.classifier(pooled)
        return tf.cast(tf.reshape(logits, [-1, self.num_classes - 1]), tf.float32)

    @property
    def classifier_kernel(self) -> tf.Tensor:
        """The classifier's 1x1 kernel as `[F, C - 1]` (F = depth of `final`)."""
        kernel = self.classifier.kernel
        return tf.reshape(kernel, [kernel.shape[2], kernel.shape[3]])

    # ------------------------------------------------------------ variable naming
    def tf1_variable_table(self) -> List[Tuple[keras.Variable, str]]:
        """Every variable of the model with its DeepLab TF1 checkpoint name.

        Returns:
            `(variable, tf1_name)` pairs, for example
            `(kernel, "xception_65/entry_flow/conv1_1/weights")`.
        """
        prefix = f"{self.backbone.tf1_scope}/"
        table = list(collect_tf1_variables(self.backbone.tf1_layers(), prefix))
        table.append((self.classifier.kernel, f"{prefix}logits/weights"))
        table.append((self.classifier.bias, f"{prefix}logits/biases"))
        head = [self.image_pooling, self.aspp0, *self.aspp_separable, self.concat_projection,
                *self.decoder_layers]
        table.extend(collect_tf1_variables(head))
        table.append((self.semantic_logits.kernel, "logits/semantic/weights"))
        table.append((self.semantic_logits.bias, "logits/semantic/biases"))
        return table

    @property
    def weight_decay_variables(self) -> List[keras.Variable]:
        """Kernels DeepLab regularises with L2: every conv `weights`, no depthwise kernel,
        BatchNorm parameter or bias."""
        return [v for v, name in self.tf1_variable_table() if name.endswith("/weights")]


def default_atrous_rates(output_stride: int) -> Tuple[int, ...]:
    """DeepLab's usual ASPP rates: (6, 12, 18) at output stride 16, scaled by 16 / OS.

    Args:
        output_stride: The backbone output stride.

    Returns:
        Three rates, for example (12, 24, 36) at output stride 8.
    """
    return tuple(max(1, int(r * 16 // output_stride)) for r in DEFAULT_ATROUS_RATES_AT_OS16)


@gin.configurable
def build_deeplab(
    backbone: str = "xception_65",
    num_classes: int = 21,
    output_stride: int = 16,
    atrous_rates: Optional[Sequence[int]] = None,
    decoder_output_stride: Optional[int] = 4,
    multi_grid: Optional[Sequence[int]] = None,
    width_multiplier: float = 1.0,
    middle_flow_units: int = 16,
    resnet_units_per_block: Optional[Sequence[int]] = None,
    fine_tune_batch_norm: bool = True,
    classifier_dropout_rate: Optional[float] = None,
    aspp_dropout_rate: float = 0.1,
    batch_norm_decay: Optional[float] = None,
    synchronized_batch_norm: bool = False,
    dtype=None,
    build_input_size: int = 33,
    name: str = "deeplab",
) -> DeepLabV3Plus:
    """Builds DeepLabv3+ with a PseudoSeg image classifier and creates its variables.

    Call it inside `strategy.scope()` when training with a distribution strategy.

    Args:
        backbone: `"xception_65"`, `"resnet_50_beta"` or `"resnet_101_beta"`.
        num_classes: Classes including background (21 for VOC).
        output_stride: Backbone output stride, 8, 16 or 32.
        atrous_rates: ASPP rates, used as given (DeepLab's `--atrous_rates`). None picks
            (6, 12, 18) at output stride 16, (12, 24, 36) at 8, (3, 6, 9) at 32.
        decoder_output_stride: 4 for DeepLabv3+, None for DeepLabv3 (no decoder).
        multi_grid: Unit rates of the last block (None: (1, 1, 1)).
        width_multiplier: Scales every channel count of backbone and head (1.0 is the
            real network; a small value such as 0.0625 gives the test/demo setting).
        middle_flow_units: Xception middle-flow units (16 in Xception-65).
        resnet_units_per_block: ResNet units in blocks 1-3 (None: the variant's).
        fine_tune_batch_norm: Train BatchNorm statistics and parameters when `training`.
        classifier_dropout_rate: Pre-classifier dropout; None: 0.5 (Xception), 0 (ResNet).
        aspp_dropout_rate: Dropout after the ASPP projection (keep prob 0.9 in DeepLab).
        batch_norm_decay: Moving-average decay of every BatchNorm; None keeps DeepLab's
            values (0.9997 for Xception and the head), which suit fine-tuning from a
            checkpoint; short runs from scratch (the demo) need a faster one such as 0.99.
        synchronized_batch_norm: Batch statistics across replicas (off in the paper).
        dtype: Keras dtype policy for the model (for example `"mixed_bfloat16"`); None
            uses the global policy.
        build_input_size: Side of the dummy batch used to create the variables.
        name: Model name (root of the Keras variable paths).

    Returns:
        A built `DeepLabV3Plus`.

    Raises:
        ValueError: For an unknown backbone or unsupported strides.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; expected one of {BACKBONES}.")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}.")
    if atrous_rates is None:
        atrous_rates = default_atrous_rates(output_stride)
    policy = keras.dtype_policies.get(dtype) if dtype is not None else None
    with batch_norm_overrides(batch_norm_decay, synchronized_batch_norm):
        model = _construct(backbone, num_classes, output_stride, atrous_rates,
                           decoder_output_stride, multi_grid, width_multiplier,
                           middle_flow_units, resnet_units_per_block, fine_tune_batch_norm,
                           classifier_dropout_rate, aspp_dropout_rate, policy, name)
    model(tf.zeros([1, build_input_size, build_input_size, 3], tf.float32), training=False)
    return model


def build_backbone(
    backbone: str = "xception_65",
    output_stride: int = 16,
    multi_grid: Optional[Sequence[int]] = None,
    width_multiplier: float = 1.0,
    middle_flow_units: int = 16,
    resnet_units_per_block: Optional[Sequence[int]] = None,
    policy=None,
):
    """Constructs (without building) an `Xception65` or `ResNetBeta` backbone.

    Args:
        backbone: One of `BACKBONES`.
        output_stride: 8, 16 or 32.
        multi_grid: Unit rates of the last block (None: (1, 1, 1)).
        width_multiplier: Scales every channel count.
        middle_flow_units: Xception middle-flow units.
        resnet_units_per_block: ResNet units in blocks 1-3 (None: the variant's).
        policy: Keras dtype policy, or None for the global one.

    Returns:
        The backbone layer.

    Raises:
        ValueError: For an unknown backbone.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; expected one of {BACKBONES}.")
    if backbone == "xception_65":
        return Xception65(
            output_stride=output_stride,
            multi_grid=multi_grid,
            width_multiplier=width_multiplier,
            middle_flow_units=middle_flow_units,
            dtype=policy,
        )
    return ResNetBeta(
        backbone,
        output_stride=output_stride,
        multi_grid=multi_grid,
        width_multiplier=width_multiplier,
        units_per_block=resnet_units_per_block,
        dtype=policy,
    )


def _construct(backbone, num_classes, output_stride, atrous_rates, decoder_output_stride,
               multi_grid, width_multiplier, middle_flow_units, resnet_units_per_block,
               fine_tune_batch_norm, classifier_dropout_rate, aspp_dropout_rate, policy, name):
    """Constructs (without building) the backbone and the DeepLabv3+ model."""
    net = build_backbone(backbone, output_stride, multi_grid, width_multiplier,
                         middle_flow_units, resnet_units_per_block, policy)
    model = DeepLabV3Plus(
        net,
        num_classes=num_classes,
        output_stride=output_stride,
        atrous_rates=atrous_rates,
        decoder_output_stride=decoder_output_stride,
        width_multiplier=width_multiplier,
        fine_tune_batch_norm=fine_tune_batch_norm,
        classifier_dropout_rate=classifier_dropout_rate,
        aspp_dropout_rate=aspp_dropout_rate,
        name=name,
        dtype=policy,
    )
    return model
