"""Building blocks shared by the backbones and the DeepLabv3+ head.

Every layer here knows the TF1 (slim) variable scope DeepLab gives it, so that the
checkpoint table in `wss.models.checkpoints` can be generated from the layer tree
instead of being typed by hand. The conventions follow DeepLab's code
(`research/deeplab` in tensorflow/models):

* a slim `conv2d` with a normalizer has `weights` and `BatchNorm/{gamma,beta,
  moving_mean,moving_variance}`, and no bias;
* DeepLab's "split" separable convolution is a depthwise convolution with its own
  BatchNorm (scope `<name>_depthwise`) followed by a 1x1 convolution with BatchNorm
  (scope `<name>_pointwise`);
* strided convolutions of the backbones pad explicitly ("fixed padding") and then
  run with VALID padding, so that the result does not depend on whether the input size
  is even or odd; stride-1 convolutions use SAME padding.

`head_conv_bn` and `head_separable_conv` are the head's versions of these blocks (BatchNorm
epsilon 1e-5, DeepLab's initialisers), and `ScopelessLayer` groups the head's parts into
layers without changing any variable path.

Two blocks compute their convolution by a cheaper op where it gives the same sums, with the
same variables: `ConvBN` runs a 1x1 convolution at stride 1 as a matrix product
(`pointwise_conv`), and `SeparableConvBN` applies only the depthwise kernel's centre tap when
the atrous rate reaches past the feature map (`reads_only_centre_tap`). Both made the
training step faster on the CPU (`docs/performance.md`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf

BATCH_NORM_SUFFIXES = ("gamma", "beta", "moving_mean", "moving_variance")
# BatchNorm of the DeepLabv3+ head (ASPP, decoder): DeepLab's `model.py` values.
HEAD_BN_EPSILON = 1e-5
HEAD_BN_MOMENTUM = 0.9997


def scale_dimension(dim: Union[int, tf.Tensor], scale: float) -> Union[int, tf.Tensor]:
    """Scales a spatial size the way DeepLab does: `int((dim - 1) * scale + 1)`.

    For an integer `dim >= 1` and `scale = 1 / k` this equals `ceil(dim / k)`, which is
    also the size that a stack of stride-2 convolutions with fixed padding produces.

    Args:
        dim: A Python int or a scalar integer tensor.
        scale: The scale factor.

    Returns:
        The scaled size, a Python int for a Python input, else an int32 tensor.
    """
    if isinstance(dim, (tf.Tensor, tf.Variable)):
        return tf.cast((tf.cast(dim, tf.float32) - 1.0) * scale + 1.0, tf.int32)
    return int((float(dim) - 1.0) * scale + 1.0)


def fixed_padding(inputs: tf.Tensor, kernel_size: int, rate: int = 1) -> tf.Tensor:
    """Pads height and width so that a VALID convolution matches DeepLab's strided convs.

    Args:
        inputs: `[B, H, W, C]` tensor.
        kernel_size: Kernel size of the convolution that follows.
        rate: Atrous rate of that convolution.

    Returns:
        The padded tensor.
    """
    effective = kernel_size + (kernel_size - 1) * (rate - 1)
    pad_total = effective - 1
    pad_begin = pad_total // 2
    pad_end = pad_total - pad_begin
    return tf.pad(inputs, [[0, 0], [pad_begin, pad_end], [pad_begin, pad_end], [0, 0]])


def pointwise_conv(inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """A 1x1 convolution at stride 1 computed as one matrix product over all pixels.

    The same sums as `tf.nn.conv2d(inputs, kernel, 1, "SAME")` (up to float rounding): on the
    CPU the convolution kernels' gradients (`Conv2DBackpropFilter` / `Input`) were the largest
    op family of a training step and ran slower than the matrix products that compute the
    same gradients here (`docs/performance.md`); on GPU and TPU both are GEMMs.

    Args:
        inputs: `[B, H, W, C_in]` tensor (any static or dynamic spatial size).
        kernel: `[1, 1, C_in, C_out]` kernel in the dtype of `inputs`.

    Returns:
        `[B, H, W, C_out]` tensor.
    """
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    flat = tf.matmul(tf.reshape(inputs, [-1, c_in]), tf.reshape(kernel, [c_in, c_out]))
    shape = inputs.shape[:-1].as_list() + [c_out]
    if None in shape:
        shape = tf.concat([tf.shape(inputs)[:-1], [c_out]], axis=0)
    return tf.reshape(flat, shape)


def scaled_depth(depth: int, width_multiplier: float) -> int:
    """Scales a channel count by `width_multiplier` (at least one channel).

    Args:
        depth: The full-size channel count.
        width_multiplier: The scale factor (1.0 for the real network).

    Returns:
        The scaled channel count.
    """
    if width_multiplier == 1.0:
        return depth
    return max(1, int(depth * width_multiplier + 0.5))


class TF1Named:
    """Mixin for layers that can list their variables under DeepLab's TF1 names."""

    def tf1_variables(self) -> Iterator[Tuple[keras.Variable, str]]:
        """Yields `(variable, tf1_name)` pairs, names relative to the owner's scope."""
        raise NotImplementedError


class ScopelessLayer(keras.layers.Layer):
    """A layer that groups sublayers without adding a level to their variable paths.

    Keras names a variable after the layers whose calls enclose its creation: the sublayer
    `aspp0` of a layer `aspp` in the model `deeplab` would own `deeplab/aspp/aspp0/conv/kernel`.
    The parts of the DeepLabv3+ head (ASPP, decoder, image classifier) were attributes of the
    model itself when project checkpoints were first written, and those checkpoints key every
    variable by its path (`wss.experiment.VariableStore`). A part built on this class opens no
    name scope of its own, so its sublayers keep the paths they had (`deeplab/aspp0/...`), and
    its own `path` is its parent's. It must not own variables directly, only through sublayers.

    Keras 3 opens a layer's scope in `Layer._open_name_scope`, which this class overrides;
    `tests/test_models.py` pins the resulting paths, so a change in Keras shows up there.
    """

    def _open_name_scope(self):
        return contextlib.nullcontext()

    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras's BatchNormalization computed with TensorFlow's fused kernel.

    Same variables, names, arguments and results as `keras.layers.BatchNormalization`
    (population variance in the moving average, statistics in float32), but each call is one
    `FusedBatchNormV3` op (and its gradient one `FusedBatchNormGradV3`) instead of a dozen
    element-wise and reduction ops: it was the largest op family of a training step on the CPU.
    The fused kernel needs `epsilon >= 1.001e-5` (as in TF1, where DeepLab's slim batch norm
    was fused too); smaller values are raised to that. Cases the kernel does not cover (masks,
    synchronized or renormalised batch norm, other ranks or axes) run Keras's implementation.
    """

    def _fusable(self, inputs, mask):
        return (mask is None and not self.synchronized and not self.renorm
                and len(inputs.shape) == 4 and self.axis in (-1, 3))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        depth = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([depth], tf.float32)
        beta = self.beta if self.center else tf.zeros([depth], tf.float32)
        epsilon = max(float(self.epsilon), 1.001e-5)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=epsilon, is_training=True)
            # The kernel returns the sample variance (n - 1 denominator) for the moving
            # average; Keras averages the population variance.
            count = tf.cast(tf.size(x) // depth, tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.convert_to_tensor(self.moving_mean),
                variance=tf.convert_to_tensor(self.moving_variance), epsilon=epsilon,
                is_training=False)
        return tf.cast(y, self.compute_dtype)


_BATCH_NORM_OVERRIDES = {"momentum": None, "synchronized": False}


@contextlib.contextmanager
def batch_norm_overrides(momentum=None, synchronized=False):
    """Overrides BatchNorm settings of the layers constructed inside the context.

    Args:
      momentum: moving-average decay for every BatchNorm (None keeps each part's DeepLab
        value, e.g. 0.9997); a smaller value (0.99) suits short runs from scratch.
      synchronized: compute batch statistics across replicas (`tf.distribute`).

    Yields:
      None.
    """
    previous = dict(_BATCH_NORM_OVERRIDES)
    _BATCH_NORM_OVERRIDES.update(momentum=momentum, synchronized=synchronized)
    try:
        yield
    finally:
        _BATCH_NORM_OVERRIDES.update(previous)


def batch_norm(momentum, epsilon, name, dtype=None):
    """A Keras BatchNormalization layer with the overrides of `batch_norm_overrides`."""
    if _BATCH_NORM_OVERRIDES["momentum"] is not None:
        momentum = _BATCH_NORM_OVERRIDES["momentum"]
    return FusedBatchNormalization(
        momentum=momentum, epsilon=epsilon, name=name, dtype=dtype,
        synchronized=_BATCH_NORM_OVERRIDES["synchronized"])


def _batch_norm_variables(bn: keras.layers.BatchNormalization, scope: str):
    yield bn.gamma, f"{scope}/BatchNorm/gamma"
    yield bn.beta, f"{scope}/BatchNorm/beta"
    yield bn.moving_mean, f"{scope}/BatchNorm/moving_mean"
    yield bn.moving_variance, f"{scope}/BatchNorm/moving_variance"


class ConvBN(keras.layers.Layer, TF1Named):
    """slim `conv2d` with BatchNorm and an optional ReLU (DeepLab's `conv2d_same`).

    Args:
        filters: Output channels.
        kernel_size: Square kernel size.
        tf1_scope: DeepLab's variable scope of this convolution, relative to its network
            (for example `entry_flow/conv1_1` or `aspp0`).
        stride: Convolution stride.
        rate: Atrous rate.
        activation: `"relu"` or None.
        explicit_padding: If True and `stride > 1`, pad explicitly and run VALID (slim's
            `resnet_utils.conv2d_same`); otherwise SAME padding.
        bn_epsilon: BatchNorm epsilon.
        bn_momentum: BatchNorm moving-average decay.
        kernel_initializer: Keras initializer for the kernel.
        **kwargs: Keras layer arguments (`name`, `dtype`).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        tf1_scope: str,
        stride: int = 1,
        rate: int = 1,
        activation: Optional[str] = "relu",
        explicit_padding: bool = True,
        bn_epsilon: float = 1e-3,
        bn_momentum: float = 0.9997,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tf1_scope = tf1_scope
        self.kernel_size = kernel_size
        self.stride = stride
        self.rate = rate
        self.activation = activation
        self.pad_explicitly = explicit_padding and stride > 1 and kernel_size > 1
        self.conv = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=stride,
            dilation_rate=rate,
            padding="valid" if self.pad_explicitly else "same",
            use_bias=False,
            kernel_initializer=kernel_initializer,
            name="conv",
            dtype=self.dtype_policy,
        )
        self.bn = batch_norm(
            momentum=bn_momentum, epsilon=bn_epsilon, name="BatchNorm", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True

    def call(self, inputs, training=False):
        x = inputs
        if self.pad_explicitly:
            x = fixed_padding(x, self.kernel_size, self.rate)
        x = self.bn(self._convolve(x), training=training)
        if self.activation == "relu":
            x = tf.nn.relu(x)
        return x

    def _convolve(self, x):
        """The convolution; a 1x1 one at stride 1 as a matrix product over the pixels."""
        if self.kernel_size != 1 or self.stride != 1:
            return self.conv(x)
        if not self.conv.built:
            self.conv.build(x.shape)  # Creates `conv/kernel` as a call would.
        return pointwise_conv(x, tf.cast(self.conv.kernel, x.dtype))

    @property
    def kernel(self) -> keras.Variable:
        """The convolution kernel `[k, k, C_in, C_out]`."""
        return self.conv.kernel

    def tf1_variables(self):
        yield self.conv.kernel, f"{self.tf1_scope}/weights"
        yield from _batch_norm_variables(self.bn, self.tf1_scope)


class SeparableConvBN(keras.layers.Layer, TF1Named):
    """DeepLab's split separable convolution: depthwise+BN(+ReLU), pointwise+BN(+ReLU).

    Args:
        filters: Output channels of the pointwise convolution.
        tf1_scope: Base scope; variables live under `<tf1_scope>_depthwise` and
            `<tf1_scope>_pointwise`.
        kernel_size: Depthwise kernel size.
        stride: Depthwise stride.
        rate: Depthwise atrous rate.
        activation: `"relu"` or None, applied after both BatchNorms.
        explicit_padding: As in `ConvBN`.
        bn_epsilon: BatchNorm epsilon.
        bn_momentum: BatchNorm moving-average decay.
        depthwise_initializer: Keras initializer of the depthwise kernel.
        pointwise_initializer: Keras initializer of the pointwise kernel.
        **kwargs: Keras layer arguments.
    """

    def __init__(
        self,
        filters: int,
        tf1_scope: str,
        kernel_size: int = 3,
        stride: int = 1,
        rate: int = 1,
        activation: Optional[str] = "relu",
        explicit_padding: bool = True,
        bn_epsilon: float = 1e-3,
        bn_momentum: float = 0.9997,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tf1_scope = tf1_scope
        self.kernel_size = kernel_size
        self.rate = rate
        self.activation = activation
        self.pad_explicitly = explicit_padding and stride > 1
        self.depthwise = keras.layers.DepthwiseConv2D(
            kernel_size,
            strides=stride,
            dilation_rate=rate,
            padding="valid" if self.pad_explicitly else "same",
            use_bias=False,
            depthwise_initializer=depthwise_initializer,
            name="depthwise",
            dtype=self.dtype_policy,
        )
        self.depthwise_bn = batch_norm(
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            name="depthwise_BatchNorm",
            dtype=self.dtype_policy,
        )
        self.pointwise = ConvBN(
            filters,
            1,
            tf1_scope=f"{tf1_scope}_pointwise",
            activation=activation,
            bn_epsilon=bn_epsilon,
            bn_momentum=bn_momentum,
            kernel_initializer=pointwise_initializer,
            name="pointwise",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        # Sublayers build on their first call; this skips Keras' symbolic trial run.
        self.built = True

    def call(self, inputs, training=False):
        x = inputs
        if self.pad_explicitly:
            x = fixed_padding(x, self.kernel_size, self.rate)
        x = self.depthwise_bn(self._depthwise(x), training=training)
        if self.activation == "relu":
            x = tf.nn.relu(x)
        return self.pointwise(x, training=training)

    def reads_only_centre_tap(self, input_shape) -> bool:
        """Whether every off-centre tap of the depthwise kernel reads zero padding only.

        With SAME padding at stride 1, a tap `d = j * rate` pixels off centre reads the input
        only where `|d| < size`; when `rate >= max(height, width)` (statically known) every
        off-centre tap multiplies padding, and the convolution is the element-wise product
        with the kernel's centre. DeepLab's ASPP rates on small maps are such (rates 12 and 18
        on the 9 x 9 features of a 129 px crop at output stride 16), and TensorFlow computes
        them on `rate`-fold space-to-batch copies of the input.

        Args:
            input_shape: Shape of the depthwise convolution's input.

        Returns:
            True when the convolution reduces to its centre tap.
        """
        height, width = tuple(input_shape)[1:3]
        return (not self.pad_explicitly and self.kernel_size % 2 == 1
                and self.depthwise.padding == "same"
                and tuple(self.depthwise.strides) == (1, 1) and height is not None
                and width is not None and self.rate >= max(height, width))

    def _depthwise(self, x):
        """The depthwise convolution; only its centre tap where the others read padding."""
        if not self.reads_only_centre_tap(x.shape):
            return self.depthwise(x)
        if not self.depthwise.built:
            self.depthwise.build(x.shape)  # Creates `depthwise/kernel` as a call would.
        centre = self.kernel_size // 2
        # Exactly the convolution's result: the other taps add products with zeros. The
        # gradient of the other taps is zero, as the convolution's is.
        kernel = tf.cast(self.depthwise.kernel[centre, centre, :, 0], x.dtype)
        return x * kernel

    def tf1_variables(self):
        scope = f"{self.tf1_scope}_depthwise"
        yield self.depthwise.kernel, f"{scope}/depthwise_weights"
        yield from _batch_norm_variables(self.depthwise_bn, scope)
        yield from self.pointwise.tf1_variables()


def head_conv_bn(filters: int, tf1_scope: str, dtype=None) -> ConvBN:
    """A 1x1 conv + BatchNorm + ReLU of the DeepLabv3+ head (image pooling, ASPP projections).

    Args:
        filters: Output channels.
        tf1_scope: DeepLab's scope (`aspp0`, `decoder/feature_projection0`); the Keras name is
            the scope with `/` replaced by `_`.
        dtype: Keras dtype policy.

    Returns:
        The `ConvBN` layer.
    """
    return ConvBN(filters, 1, tf1_scope=tf1_scope, bn_epsilon=HEAD_BN_EPSILON,
                  bn_momentum=HEAD_BN_MOMENTUM, name=tf1_scope.replace("/", "_"), dtype=dtype)


def head_separable_conv(filters: int, rate: int, tf1_scope: str, dtype=None) -> SeparableConvBN:
    """A split separable 3x3 conv of the DeepLabv3+ head (`aspp1..3`, `decoder_conv0/1`).

    Args:
        filters: Output channels.
        rate: Atrous rate of the depthwise convolution.
        tf1_scope: DeepLab's scope (`aspp1`, `decoder/decoder_conv0`); the Keras name is the
            scope with `/` replaced by `_`.
        dtype: Keras dtype policy.

    Returns:
        The `SeparableConvBN` layer, initialised as DeepLab's `split_separable_conv2d`.
    """
    return SeparableConvBN(
        filters, tf1_scope=tf1_scope, rate=rate, bn_epsilon=HEAD_BN_EPSILON,
        bn_momentum=HEAD_BN_MOMENTUM,
        depthwise_initializer=keras.initializers.TruncatedNormal(stddev=0.33),
        pointwise_initializer=keras.initializers.TruncatedNormal(stddev=0.06),
        name=tf1_scope.replace("/", "_"), dtype=dtype)


def collect_tf1_variables(
    layers: Sequence[TF1Named], prefix: str = ""
) -> Iterator[Tuple[keras.Variable, str]]:
    """Yields `(variable, prefix + tf1_name)` for a list of `TF1Named` layers.

    Args:
        layers: Layers that implement `tf1_variables`.
        prefix: Scope prepended to every name (for example `xception_65/`).

    Yields:
        `(variable, full TF1 name)` pairs.
    """
    for layer in layers:
        for variable, name in layer.tf1_variables():
            yield variable, prefix + name
