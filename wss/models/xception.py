"""Xception-65 as DeepLab builds it (`research/deeplab/core/xception.py`).

Structure (channel counts at `width_multiplier=1`):

* root: `entry_flow/conv1_1` 3x3/32 stride 2 (fixed padding), `entry_flow/conv1_2`
  3x3/64, both conv+BN+ReLU;
* `entry_flow/block1..3`: one Xception unit each, depths 128, 256, 728, stride 2,
  1x1 convolution shortcut;
* `middle_flow/block1`: 16 units of 728, identity (sum) shortcut;
* `exit_flow/block1`: depths 728/1024/1024, stride 2, conv shortcut;
* `exit_flow/block2`: depths 1536/1536/2048, no shortcut, ReLU inside the separable
  convolutions, unit rates `multi_grid`.

In an Xception unit without "activation in separable conv", each separable conv is
`ReLU -> depthwise -> BN -> pointwise -> BN` (pre-activation); with it, the unit applies
`depthwise -> BN -> ReLU -> pointwise -> BN -> ReLU`. The stride sits in the third
separable conv (explicit fixed padding). Once the requested output stride is reached, the
remaining strides become atrous rates (slim's `stack_blocks_dense`). BatchNorm uses
epsilon 1e-3 and decay 0.9997 as DeepLab's `extract_features` sets them.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from wss.models.layers import ConvBN, SeparableConvBN, TF1Named, scaled_depth

XCEPTION_BN_EPSILON = 1e-3
XCEPTION_BN_MOMENTUM = 0.9997
# DeepLab's xception_arg_scope: truncated normal with stddev 0.09 for every kernel.
_XCEPTION_INITIALIZER_STDDEV = 0.09

# (scope, depth_list, skip_connection_type, activation_fn_in_separable_conv, stride)
_XCEPTION_65_BLOCKS = (
    ("entry_flow/block1", (128, 128, 128), "conv", False, 2),
    ("entry_flow/block2", (256, 256, 256), "conv", False, 2),
    ("entry_flow/block3", (728, 728, 728), "conv", False, 2),
    ("middle_flow/block1", (728, 728, 728), "sum", False, 1),
    ("exit_flow/block1", (728, 1024, 1024), "conv", False, 2),
    ("exit_flow/block2", (1536, 1536, 2048), "none", True, 1),
)

# Decoder inputs by output stride (feature_extractor.networks_to_feature_maps).
XCEPTION_DECODER_ENDPOINTS = {
    4: "entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise",
    8: "entry_flow/block3/unit_1/xception_module/separable_conv2_pointwise",
    16: "exit_flow/block1/unit_1/xception_module/separable_conv2_pointwise",
}


def _initializer():
    return keras.initializers.TruncatedNormal(stddev=_XCEPTION_INITIALIZER_STDDEV)


class XceptionModule(keras.layers.Layer, TF1Named):
    """One Xception unit (DeepLab's `xception_module`).

    Args:
        depths: Three output depths of the separable convolutions.
        skip_connection_type: `"conv"`, `"sum"` or `"none"`.
        stride: Stride of the third separable convolution and of the conv shortcut.
        unit_rates: Atrous rate of each separable convolution.
        activation_in_separable_conv: ReLU inside the separable convs (exit_flow/block2)
            instead of before them.
        tf1_scope: Scope of the unit, for example `entry_flow/block1/unit_1`.
        **kwargs: Keras layer arguments.
    """

    def __init__(
        self,
        depths: Sequence[int],
        skip_connection_type: str,
        stride: int,
        unit_rates: Sequence[int],
        activation_in_separable_conv: bool,
        tf1_scope: str,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if skip_connection_type not in ("conv", "sum", "none"):
            raise ValueError(f"Unsupported skip connection type {skip_connection_type!r}.")
        self.skip_connection_type = skip_connection_type
        self.activation_in_separable_conv = activation_in_separable_conv
        self.tf1_scope = tf1_scope
        module_scope = f"{tf1_scope}/xception_module"
        self.separable_convs = [
            SeparableConvBN(
                depths[i],
                tf1_scope=f"{module_scope}/separable_conv{i + 1}",
                stride=stride if i == 2 else 1,
                rate=unit_rates[i],
                activation="relu" if activation_in_separable_conv else None,
                bn_epsilon=XCEPTION_BN_EPSILON,
                bn_momentum=XCEPTION_BN_MOMENTUM,
                depthwise_initializer=_initializer(),
                pointwise_initializer=_initializer(),
                name=f"separable_conv{i + 1}",
                dtype=self.dtype_policy,
            )
            for i in range(3)
        ]
        self.shortcut = None
        if skip_connection_type == "conv":
            self.shortcut = ConvBN(
                depths[-1],
                1,
                tf1_scope=f"{module_scope}/shortcut",
                stride=stride,
                activation=None,
                bn_epsilon=XCEPTION_BN_EPSILON,
                bn_momentum=XCEPTION_BN_MOMENTUM,
                kernel_initializer=_initializer(),
                name="shortcut",
                dtype=self.dtype_policy,
            )

    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True

    def call(self, inputs, training=False):
        """Returns `(output, endpoints)`; endpoints hold each pointwise conv output."""
        residual = inputs
        endpoints = {}
        for i, separable_conv in enumerate(self.separable_convs):
            if not self.activation_in_separable_conv:
                residual = tf.nn.relu(residual)
            residual = separable_conv(residual, training=training)
            endpoints[f"xception_module/separable_conv{i + 1}_pointwise"] = residual
        if self.skip_connection_type == "conv":
            outputs = residual + self.shortcut(inputs, training=training)
        elif self.skip_connection_type == "sum":
            outputs = residual + inputs
        else:
            outputs = residual
        return outputs, endpoints

    def tf1_variables(self):
        for separable_conv in self.separable_convs:
            yield from separable_conv.tf1_variables()
        if self.shortcut is not None:
            yield from self.shortcut.tf1_variables()


def dense_unit_schedule(
    unit_strides: Sequence[int], output_stride: Optional[int]
) -> List[Tuple[int, int]]:
    """Per-unit `(stride, rate)` as slim's `stack_blocks_dense` assigns them.

    Args:
        unit_strides: Nominal stride of every unit, in order.
        output_stride: Target stride of the units (relative to their input), or None
            for the nominal stride.

    Returns:
        A `(stride, rate)` pair per unit.

    Raises:
        ValueError: If `output_stride` cannot be reached.
    """
    current_stride, rate = 1, 1
    schedule = []
    for unit_stride in unit_strides:
        if output_stride is not None and current_stride > output_stride:
            raise ValueError("The target output_stride cannot be reached.")
        if output_stride is not None and current_stride == output_stride:
            schedule.append((1, rate))
            rate *= unit_stride
        else:
            schedule.append((unit_stride, 1))
            current_stride *= unit_stride
    if output_stride is not None and current_stride != output_stride:
        raise ValueError("The target output_stride cannot be reached.")
    return schedule


class Xception65(keras.layers.Layer):
    """Xception-65 backbone with DeepLab's endpoints.

    `call(images, training)` takes preprocessed images (`[-1, 1]`) and returns
    `(final_features, endpoints)`; endpoint names are DeepLab's without the
    `xception_65/` prefix: every block (`entry_flow/block1`, ..., `exit_flow/block2`)
    and every unit's `.../unit_N/xception_module/separable_convK_pointwise`.

    Args:
        output_stride: 8, 16 or 32.
        multi_grid: Unit rates of `exit_flow/block2` (DeepLab default `(1, 1, 1)`).
        width_multiplier: Scales every channel count (1.0 is the real network).
        middle_flow_units: Units in `middle_flow/block1` (16 in Xception-65).
        **kwargs: Keras layer arguments.

    Raises:
        ValueError: For an unreachable output stride or a bad `multi_grid`.
    """

    tf1_scope = "xception_65"
    penultimate_endpoint = "exit_flow/block1"
    final_endpoint = "exit_flow/block2"
    decoder_endpoints = XCEPTION_DECODER_ENDPOINTS
    classifier_dropout_rate = 0.5  # slim.dropout keep_prob=0.5 before xception_65/logits
    weight_decay_excludes_depthwise = True

    def __init__(
        self,
        output_stride: int = 16,
        multi_grid: Optional[Sequence[int]] = None,
        width_multiplier: float = 1.0,
        middle_flow_units: int = 16,
        **kwargs,
    ):
        kwargs.setdefault("name", "xception_65")
        super().__init__(**kwargs)
        if output_stride is not None and output_stride % 2 != 0:
            raise ValueError(f"The output_stride needs to be a multiple of 2, got {output_stride}.")
        multi_grid = tuple(multi_grid) if multi_grid is not None else (1, 1, 1)
        if len(multi_grid) != 3:
            raise ValueError(f"multi_grid must have 3 elements, got {multi_grid}.")
        self.output_stride = output_stride
        self.width_multiplier = width_multiplier

        def depth(d):
            return scaled_depth(d, width_multiplier)

        def conv_bn(filters, stride, scope, name):
            return ConvBN(
                depth(filters),
                3,
                tf1_scope=scope,
                stride=stride,
                bn_epsilon=XCEPTION_BN_EPSILON,
                bn_momentum=XCEPTION_BN_MOMENTUM,
                kernel_initializer=_initializer(),
                name=name,
                dtype=self.dtype_policy,
            )

        self.conv1_1 = conv_bn(32, 2, "entry_flow/conv1_1", "entry_flow_conv1_1")
        self.conv1_2 = conv_bn(64, 1, "entry_flow/conv1_2", "entry_flow_conv1_2")

        units = []  # (block scope, unit index, depths, skip, act_in_sep, stride, unit_rates)
        for scope, depths, skip, act_in_sep, stride in _XCEPTION_65_BLOCKS:
            num_units = middle_flow_units if scope == "middle_flow/block1" else 1
            unit_rates = multi_grid if scope == "exit_flow/block2" else (1, 1, 1)
            for i in range(num_units):
                units.append((scope, i + 1, depths, skip, act_in_sep, stride, unit_rates))
        blocks_output_stride = None if output_stride is None else output_stride // 2
        schedule = dense_unit_schedule([u[5] for u in units], blocks_output_stride)

        self.units = []
        self.unit_block_scopes = []
        for (scope, index, depths, skip, act_in_sep, _, unit_rates), (stride, rate) in zip(
            units, schedule
        ):
            self.units.append(
                XceptionModule(
                    [depth(d) for d in depths],
                    skip,
                    stride=stride,
                    unit_rates=[rate * r for r in unit_rates],
                    activation_in_separable_conv=act_in_sep,
                    tf1_scope=f"{scope}/unit_{index}",
                    name=f"{scope.replace('/', '_')}_unit_{index}",
                    dtype=self.dtype_policy,
                )
            )
            self.unit_block_scopes.append(scope)
        self.num_features = depth(2048)

    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True

    def call(self, inputs, training=False) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        endpoints: Dict[str, tf.Tensor] = {}
        net = self.conv1_1(inputs, training=training)
        net = self.conv1_2(net, training=training)
        for i, (unit, scope) in enumerate(zip(self.units, self.unit_block_scopes)):
            net, unit_endpoints = unit(net, training=training)
            for name, value in unit_endpoints.items():
                endpoints[f"{unit.tf1_scope}/{name}"] = value
            endpoints[f"{unit.tf1_scope}/xception_module"] = net
            last_of_block = i + 1 == len(self.units) or self.unit_block_scopes[i + 1] != scope
            if last_of_block:
                endpoints[scope] = net
        return net, endpoints

    def tf1_layers(self) -> List[TF1Named]:
        """The layers holding variables, in network order."""
        return [self.conv1_1, self.conv1_2, *self.units]
