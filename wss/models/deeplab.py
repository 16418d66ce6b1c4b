"""DeepLabv3+ with PseudoSeg's image classifier: `DeepLabV3Plus` and `build_deeplab`.

The model follows DeepLab's `model.py` (the copy in googleinterns/wss that PseudoSeg trained
with) and composes four parts:

* the backbone (`Xception65` or `ResNetBeta`, built by `build_backbone`), on inputs scaled
  from [0, 255] to [-1, 1];
* `ASPP` (`wss.models.aspp`) on the backbone output;
* `Decoder` (`wss.models.decoder`) merging the ASPP output with the low-level endpoint
  (absent for DeepLabv3, `decoder_output_stride=None`), then `logits/semantic`, a 1x1 conv
  with bias;
* `ImageClassifierHead` (`wss.models.classifier_head`) on the global average pool of the last
  block, PseudoSeg's image classifier: DeepLab's `extract_features` with
  `global_pool=True, num_classes=C-1`, scope `<network>/logits`.

The parts group layers that used to be attributes of the model; they add no level to the
variable paths (`deeplab/aspp0/...`, `deeplab/classifier/kernel`), which project checkpoints
key on, and `tf1_variable_table` gives every variable its DeepLab TF1 name.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import gin
import keras
import tensorflow as tf

from wss.models.aspp import ASPP
from wss.models.classifier_head import ImageClassifierHead, classifier_initializer, global_pool
from wss.models.decoder import Decoder
from wss.models.layers import batch_norm_overrides, collect_tf1_variables, scaled_depth
from wss.models.resnet import ResNetBeta
from wss.models.xception import Xception65
from wss.resize import spatial_size

BACKBONES = ("xception_65", "resnet_50_beta", "resnet_101_beta")
DEFAULT_ATROUS_RATES_AT_OS16 = (6, 12, 18)


def _check_decoder_stride(backbone, output_stride, decoder_output_stride):
    """Raises `ValueError` unless the backbone has an endpoint for the decoder stride."""
    if decoder_output_stride is not None and (
        decoder_output_stride not in backbone.decoder_endpoints
        or decoder_output_stride >= output_stride
    ):
        raise ValueError(
            f"decoder_output_stride={decoder_output_stride} is not supported with "
            f"output_stride={output_stride}; use one of "
            f"{sorted(s for s in backbone.decoder_endpoints if s < output_stride)} or None."
        )


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
        _check_decoder_stride(backbone, output_stride, decoder_output_stride)
        self.backbone = backbone
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.decoder_output_stride = decoder_output_stride
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.low_level_endpoint = (
            backbone.decoder_endpoints[decoder_output_stride] if decoder_output_stride else None
        )
        # Parts in the order their variables had as attributes of the model (checkpoints,
        # optimizer slots and seeded initialisation follow it).
        head_depth = scaled_depth(256, width_multiplier)
        self.aspp = ASPP(head_depth, atrous_rates, output_stride, dropout_rate=aspp_dropout_rate,
                         fine_tune_batch_norm=fine_tune_batch_norm, dtype=self.dtype_policy)
        self.decoder = Decoder(
            head_depth, scaled_depth(48, width_multiplier), decoder_output_stride,
            dtype=self.dtype_policy) if decoder_output_stride else None
        self.semantic_logits = keras.layers.Conv2D(
            num_classes, 1, use_bias=True, name="logits_semantic", dtype=self.dtype_policy,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01))
        if classifier_dropout_rate is None:
            classifier_dropout_rate = backbone.classifier_dropout_rate
        self.classifier_head = ImageClassifierHead(
            num_classes - 1, classifier_dropout_rate, classifier_initializer(backbone),
            dtype=self.dtype_policy)

    # ----------------------------------------------------------------- forward pass
    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True

    def call(self, images, training=False) -> Dict[str, object]:
        training = bool(training)
        bn_training = training and self.fine_tune_batch_norm
        image_size = spatial_size(images)
        inputs = tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0
        final, endpoints = self.backbone(tf.cast(inputs, self.compute_dtype),
                                         training=bn_training)
        features = self._features(final, endpoints)
        net = self.aspp(final, image_size=image_size, training=training)
        if self.decoder is not None:
            net = self.decoder(net, features["low_level"], image_size=image_size,
                               training=bn_training)
        logits = tf.cast(self.semantic_logits(net), tf.float32)
        cls_logits = self.classify(final, training=bn_training)
        return {"logits": logits, "cls_logits": cls_logits, "features": features}

    def _features(self, final, endpoints) -> Dict[str, tf.Tensor]:
        """The backbone endpoints plus the `penultimate`, `final` and `low_level` aliases."""
        features = dict(endpoints)
        features["penultimate"] = endpoints[self.backbone.penultimate_endpoint]
        features["final"] = final
        if self.low_level_endpoint:
            features["low_level"] = endpoints[self.low_level_endpoint]
        return features

    def classify(self, final_features, training=False) -> tf.Tensor:
        """The image classifier as a function of the `final` endpoint.

        Args:
            final_features: `[B, h, w, F]` last-block features.
            training: Whether to apply the pre-logits dropout.

        Returns:
            `[B, C - 1]` float32 logits.
        """
        return self.classifier_head(global_pool(final_features), training=bool(training))

    # ------------------------------------------------------- parts by their old names
    @property
    def atrous_rates(self) -> Tuple[int, ...]:
        """The ASPP rates."""
        return self.aspp.atrous_rates

    @property
    def aspp_separable(self) -> List[keras.layers.Layer]:
        """The ASPP's separable branches `aspp1, aspp2, ...`."""
        return list(self.aspp.separable)

    @property
    def concat_projection_dropout(self) -> keras.layers.Dropout:
        """The dropout after the ASPP projection."""
        return self.aspp.dropout

    @property
    def classifier(self) -> keras.layers.Conv2D:
        """The image classifier's 1x1 convolution (`<network>/logits`)."""
        return self.classifier_head.classifier

    @property
    def classifier_dropout(self) -> keras.layers.Dropout:
        """The dropout before the image classifier (`prelogits_dropout`)."""
        return self.classifier_head.dropout

    @property
    def classifier_kernel(self) -> tf.Tensor:
        """The classifier's 1x1 kernel as `[F, C - 1]` (F = depth of `final`)."""
        return self.classifier_head.kernel_matrix

    # ------------------------------------------------------------ variable naming
    def tf1_variable_table(self) -> List[Tuple[keras.Variable, str]]:
        """Every variable of the model with its DeepLab TF1 checkpoint name.

        Returns:
            `(variable, tf1_name)` pairs, for example
            `(kernel, "xception_65/entry_flow/conv1_1/weights")`.
        """
        prefix = f"{self.backbone.tf1_scope}/"
        table = list(collect_tf1_variables(self.backbone.tf1_layers(), prefix))
        table.extend(self.classifier_head.tf1_variables(prefix))
        table.extend(self.aspp.tf1_variables())
        if self.decoder is not None:
            table.extend(self.decoder.tf1_variables())
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
        net = build_backbone(backbone, output_stride, multi_grid, width_multiplier,
                             middle_flow_units, resnet_units_per_block, policy)
        model = DeepLabV3Plus(
            net, num_classes=num_classes, output_stride=output_stride,
            atrous_rates=atrous_rates, decoder_output_stride=decoder_output_stride,
            width_multiplier=width_multiplier, fine_tune_batch_norm=fine_tune_batch_norm,
            classifier_dropout_rate=classifier_dropout_rate,
            aspp_dropout_rate=aspp_dropout_rate, name=name, dtype=policy)
    with model.aspp.rate_warnings_off():
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

