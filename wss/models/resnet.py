"""ResNet-50/101 v1 "beta" as DeepLab builds them (`research/deeplab/core/resnet_v1_beta.py`).

The beta variant replaces the 7x7 root convolution by three 3x3 convolutions
(`conv1_1` 64 stride 2, `conv1_2` 64, `conv1_3` 128), followed by a 3x3 stride-2 SAME max
pool. Blocks 1-3 are bottleneck blocks with the stride in their last unit; block 4 has
one unit per `multi_grid` rate and no stride. A bottleneck unit is
`conv1 1x1 -> conv2 3x3 (stride, atrous) -> conv3 1x1 (no ReLU)`, added to the shortcut
(1x1 conv+BN when the depth changes, otherwise subsampling), then ReLU. Preprocessing is
`2x/255 - 1` and BatchNorm uses epsilon 1e-5 and decay 0.95, as DeepLab's
`feature_extractor` sets them for ResNets. Variable scopes are `resnet_v1_50/...` and
`resnet_v1_101/...` (the beta variants share the original names).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from wss.models.layers import ConvBN, TF1Named, scaled_depth
from wss.models.xception import dense_unit_schedule

RESNET_BN_EPSILON = 1e-5
RESNET_BN_MOMENTUM = 0.95

RESNET_UNITS = {"resnet_50_beta": (3, 4, 6), "resnet_101_beta": (3, 4, 23)}
RESNET_TF1_SCOPES = {"resnet_50_beta": "resnet_v1_50", "resnet_101_beta": "resnet_v1_101"}


def _initializer():
    # slim.variance_scaling_initializer() of resnet_arg_scope: factor 2, fan-in, normal.
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_in", distribution="truncated_normal"
    )


class Bottleneck(keras.layers.Layer, TF1Named):
    """DeepLab's `bottleneck` unit (BN after every convolution).

    Args:
        depth: Output depth.
        depth_bottleneck: Depth of the first two convolutions.
        depth_in: Input depth (decides between conv shortcut and subsampling).
        stride: Stride of `conv2` and of the shortcut.
        rate: Atrous rate of `conv2`.
        tf1_scope: Scope of the unit, for example `block1/unit_1`.
        **kwargs: Keras layer arguments.
    """

    def __init__(self, depth, depth_bottleneck, depth_in, stride, rate, tf1_scope, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride
        self.tf1_scope = tf1_scope
        scope = f"{tf1_scope}/bottleneck_v1"

        def conv_bn(filters, kernel_size, stride_, rate_, activation, name):
            return ConvBN(
                filters,
                kernel_size,
                tf1_scope=f"{scope}/{name}",
                stride=stride_,
                rate=rate_,
                activation=activation,
                bn_epsilon=RESNET_BN_EPSILON,
                bn_momentum=RESNET_BN_MOMENTUM,
                kernel_initializer=_initializer(),
                name=name,
                dtype=self.dtype_policy,
            )

        self.shortcut = None
        if depth != depth_in:
            self.shortcut = conv_bn(depth, 1, stride, 1, None, "shortcut")
        self.conv1 = conv_bn(depth_bottleneck, 1, 1, 1, "relu", "conv1")
        self.conv2 = conv_bn(depth_bottleneck, 3, stride, rate, "relu", "conv2")
        self.conv3 = conv_bn(depth, 1, 1, 1, None, "conv3")

    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True

    def call(self, inputs, training=False):
        """Returns `(output, endpoints)`; endpoints hold the three conv outputs."""
        if self.shortcut is not None:
            shortcut = self.shortcut(inputs, training=training)
        elif self.stride > 1:
            shortcut = inputs[:, :: self.stride, :: self.stride, :]
        else:
            shortcut = inputs
        endpoints = {}
        residual = inputs
        for name in ("conv1", "conv2", "conv3"):
            residual = getattr(self, name)(residual, training=training)
            endpoints[f"bottleneck_v1/{name}"] = residual
        return tf.nn.relu(shortcut + residual), endpoints

    def tf1_variables(self):
        if self.shortcut is not None:
            yield from self.shortcut.tf1_variables()
        for conv in (self.conv1, self.conv2, self.conv3):
            yield from conv.tf1_variables()


def _unit_specs(units_per_block: Sequence[int], multi_grid: Sequence[int]) -> List[Tuple]:
    """`(block name, unit index, base depth, nominal stride, unit rate)` of every unit.

    Blocks 1-3 have `units_per_block` units with base depths 64, 128, 256 and the stride in
    their last unit; block 4 has one unit of base depth 512 per `multi_grid` rate.
    """
    units = []
    for b, (base, num_units) in enumerate(zip((64, 128, 256), units_per_block)):
        for i in range(num_units):
            units.append((f"block{b + 1}", i + 1, base, 2 if i == num_units - 1 else 1, 1))
    for i, unit_rate in enumerate(multi_grid):
        units.append(("block4", i + 1, 512, 1, unit_rate))
    return units


def _decoder_endpoints(units_per_block: Sequence[int]) -> Dict[int, str]:
    """The decoder's input endpoint per stride: the unit before each block's strided one.

    Raises:
        ValueError: If a block has fewer than 2 units.
    """
    if min(units_per_block) < 2:
        raise ValueError(f"units_per_block needs at least 2 units per block, got "
                         f"{units_per_block}.")
    return {
        4: f"block1/unit_{units_per_block[0] - 1}/bottleneck_v1/conv3",
        8: f"block2/unit_{units_per_block[1] - 1}/bottleneck_v1/conv3",
        16: f"block3/unit_{units_per_block[2] - 1}/bottleneck_v1/conv3",
    }


class ResNetBeta(keras.layers.Layer):
    """ResNet-v1 beta backbone with DeepLab's endpoints.

    `call(images, training)` takes preprocessed images and returns
    `(final_features, endpoints)`; endpoint names are DeepLab's without the
    `resnet_v1_50/` prefix: `block1..block4`, `blockN/unit_M/bottleneck_v1` and
    `blockN/unit_M/bottleneck_v1/conv{1,2,3}`.

    Args:
        variant: `"resnet_50_beta"` or `"resnet_101_beta"`.
        output_stride: 8, 16 or 32.
        multi_grid: Unit rates of block4 (one unit per rate, default `(1, 1, 1)`).
        width_multiplier: Scales every channel count.
        units_per_block: Units of blocks 1-3 (default the variant's; at least 2 in
            block1 for the stride-4 decoder input).
        **kwargs: Keras layer arguments.

    Raises:
        ValueError: For an unknown variant or an unreachable output stride.
    """

    penultimate_endpoint = "block3"
    final_endpoint = "block4"
    classifier_dropout_rate = 0.0  # resnet_v1_beta has no dropout before `logits`
    weight_decay_excludes_depthwise = True

    def __init__(
        self,
        variant: str = "resnet_50_beta",
        output_stride: int = 16,
        multi_grid: Optional[Sequence[int]] = None,
        width_multiplier: float = 1.0,
        units_per_block: Optional[Sequence[int]] = None,
        **kwargs,
    ):
        if variant not in RESNET_UNITS:
            raise ValueError(f"Unknown ResNet variant {variant!r}; expected {list(RESNET_UNITS)}.")
        kwargs.setdefault("name", variant)
        super().__init__(**kwargs)
        if output_stride is not None and output_stride % 4 != 0:
            raise ValueError(f"The output_stride needs to be a multiple of 4, got {output_stride}.")
        self.tf1_scope = RESNET_TF1_SCOPES[variant]
        units_per_block = tuple(units_per_block or RESNET_UNITS[variant])
        multi_grid = tuple(multi_grid) if multi_grid is not None else (1, 1, 1)
        self.root = self._root_convs(width_multiplier)
        self.pool = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool1",
                                              dtype=self.dtype_policy)
        self.units = []
        self.unit_block_scopes = []
        for block, unit in self._bottlenecks(units_per_block, multi_grid, output_stride,
                                             width_multiplier):
            self.units.append(unit)
            self.unit_block_scopes.append(block)
        self.num_features = scaled_depth(2048, width_multiplier)
        self.decoder_endpoints = _decoder_endpoints(units_per_block)

    def _root_convs(self, width_multiplier: float) -> List[ConvBN]:
        """The beta root: three 3x3 conv + BN layers (`conv1_1` stride 2, `conv1_2`, `conv1_3`)."""

        def root_conv(filters, stride, name):
            return ConvBN(
                scaled_depth(filters, width_multiplier),
                3,
                tf1_scope=name,
                stride=stride,
                bn_epsilon=RESNET_BN_EPSILON,
                bn_momentum=RESNET_BN_MOMENTUM,
                kernel_initializer=_initializer(),
                name=name,
                dtype=self.dtype_policy,
            )

        return [root_conv(64, 2, "conv1_1"), root_conv(64, 1, "conv1_2"),
                root_conv(128, 1, "conv1_3")]

    def _bottlenecks(self, units_per_block, multi_grid, output_stride, width_multiplier):
        """Yields `(block scope, Bottleneck)` for every unit of blocks 1-4, in network order.

        Strides and atrous rates follow `dense_unit_schedule`, so that the blocks reach
        `output_stride` (relative to the stride-4 root) and dilate beyond it.
        """

        def depth(d):
            return scaled_depth(d, width_multiplier)

        units = _unit_specs(units_per_block, multi_grid)
        blocks_output_stride = None if output_stride is None else output_stride // 4
        schedule = dense_unit_schedule([u[3] for u in units], blocks_output_stride)
        depth_in = depth(128)
        for (block, index, base, _, unit_rate), (stride, rate) in zip(units, schedule):
            yield block, Bottleneck(
                depth(base * 4),
                depth(base),
                depth_in,
                stride=stride,
                rate=rate * unit_rate,
                tf1_scope=f"{block}/unit_{index}",
                name=f"{block}_unit_{index}",
                dtype=self.dtype_policy,
            )
            depth_in = depth(base * 4)

    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True

    def call(self, inputs, training=False) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        endpoints: Dict[str, tf.Tensor] = {}
        net = inputs
        for conv in self.root:
            net = conv(net, training=training)
            endpoints[conv.tf1_scope] = net
        net = self.pool(net)
        for i, (unit, block) in enumerate(zip(self.units, self.unit_block_scopes)):
            net, unit_endpoints = unit(net, training=training)
            for name, value in unit_endpoints.items():
                endpoints[f"{unit.tf1_scope}/{name}"] = value
            endpoints[f"{unit.tf1_scope}/bottleneck_v1"] = net
            if i + 1 == len(self.units) or self.unit_block_scopes[i + 1] != block:
                endpoints[block] = net
        return net, endpoints

    def tf1_layers(self) -> List[TF1Named]:
        """The layers holding variables, in network order."""
        return [*self.root, *self.units]
