"""Self-attention Grad-CAM (SGC) head (PseudoSeg eq. 3 and appendix A).

The head refines Grad-CAM maps with pixel affinities computed on a hypercolumn of the last two
backbone blocks. With `X` the hypercolumn (`penultimate` and `final` resized bilinearly with
`align_corners=True` to the CAM resolution `h x w`, concatenated, stop-gradient) and `V` the CAMs
(`[B, h, w, C - 1]`, in [0, 1], stop-gradient):

    Q = X W_q,  K = X W_k                      1x1 convs without bias, attention_dim channels
    A = softmax(Q K^T / sqrt(attention_dim))   over keys; padded keys get -1e9 (excluded)
    S = A V + V                                 skip connection, values in [0, 2]
    S = concat([2 - max_c S_c, S])              background score placed as channel 0
    logits = BN(S W_o)                          1x1 conv without bias + BatchNorm, C channels

The only trainable variables are `W_q`, `W_k`, `W_o` and the BatchNorm offset, so a loss on the
SGC logits trains the head alone.

Resolution (`make_sgc_head.resolution`): `'backbone'` (the paper and reference) runs the attention
on the CAMs' own grid, the last block's (output stride 16 or 8). `'decoder'` (an extension for
small images) first upsamples the CAMs bilinearly (`align_corners=True`) to the grid of the
decoder's low-level features (stride 4) and adds those features to the hypercolumn, so the
attention can follow object boundaries that the coarse grid blurs. Measured on the 64 px `large`
set (benchmarks/RESULTS.md, eighteenth session): the head refitted on a frozen PseudoSeg run
segments the validation images at 45.1% mIoU with the true classes, against 36.7% at the
backbone's 9 x 9 grid. Its attention matrix has `(H / 4 * W / 4)^2` entries per image: about
2.6 MB for a 129 px crop, 1.1 GB for a 513 px one, so it is for small crops.

Masking: the reference adds `(1 - v_q v_k^T) * -1e9` to the attention logits, which masks padded
keys for valid queries and leaves padded queries with an (effectively uniform) row over all keys.
Here only keys are masked, so padded queries attend to valid keys; their outputs sit on padding,
which every loss ignores. Either way padding never receives attention from a valid pixel.

BatchNorm defaults follow `slim.batch_norm` as the reference called it outside any arg scope:
decay (Keras momentum) 0.999, epsilon 0.001, `center=True`, `scale=False`. Kernels use Glorot
uniform initialisation (slim's xavier default).

Keras 3 note: `@gin.configurable` cannot decorate a Layer subclass; `make_sgc_head` is the
gin-configurable factory.
"""

import math

import gin
import keras
import tensorflow as tf

from wss import resize


def hypercolumn(features, size):
    """Resizes feature maps to `size` and concatenates them, under stop-gradient.

    Args:
      features: sequence of `[B, h_i, w_i, K_i]` tensors (e.g. `[penultimate, final]`).
      size: `(h, w)` target size (the CAM resolution).

    Returns:
      float32 `[B, h, w, sum_i K_i]` under stop-gradient.
    """
    resized = [resize.resize_bilinear(tf.stop_gradient(f), size) for f in features]
    return tf.stop_gradient(tf.concat(resized, axis=-1))


class SGCHead(keras.layers.Layer):
    """Self-attention Grad-CAM head: CAMs + hypercolumn features -> SGC logits `[B, h, w, C]`.

    Call as `head(cams, features, valid=None, training=None)`:

    * `cams`: `[B, h, w, C - 1]` Grad-CAM maps in [0, 1] (treated as constants);
    * `features`: a `[B, h', w', K]` tensor or a list of them (`[penultimate, final]`); they are
      resized to `h x w` and concatenated under stop-gradient (see `hypercolumn`);
    * `valid`: optional `[B, H, W]` (or `[B, H, W, 1]`) mask of real pixels at any resolution
      (usually the image's); it is downsampled to `h x w` with nearest neighbour and padded
      positions are excluded as keys;
    * `training`: BatchNorm mode;
    * `low_level`: the decoder's low-level features `[B, h4, w4, K4]`, required (and only used)
      at `resolution='decoder'`, where the logits come at their size `h4 x w4`.

    Returns float32 logits `[B, h, w, C]` (channel 0 = background).
    """

    RESOLUTIONS = ("backbone", "decoder")

    def __init__(
        self,
        num_classes,
        attention_dim=128,
        bn_momentum=0.999,
        bn_epsilon=0.001,
        bn_scale=False,
        mask_align_corners=True,
        resolution="backbone",
        **kwargs,
    ):
        """Creates the head.

        Args:
          num_classes: number of classes `C` including background.
          attention_dim: key / query dimension (reference default 128).
          bn_momentum: BatchNorm moving-average momentum (slim decay).
          bn_epsilon: BatchNorm epsilon.
          bn_scale: whether BatchNorm learns a scale (slim default False).
          mask_align_corners: alignment used to downsample `valid` (see `wss.resize`).
          resolution: `'backbone'` (attention on the CAMs' grid, the paper) or `'decoder'`
            (on the low-level features' grid; see the module docstring).
          **kwargs: passed to `keras.layers.Layer`.

        Raises:
          ValueError: for an unknown `resolution`.
        """
        if resolution not in self.RESOLUTIONS:
            raise ValueError(f"make_sgc_head.resolution = {resolution!r}: expected one of "
                             f"{self.RESOLUTIONS}.")
        super().__init__(**kwargs)
        self.resolution = resolution
        self.num_classes = num_classes
        self.attention_dim = attention_dim
        self.mask_align_corners = mask_align_corners
        self.key = keras.layers.Conv2D(attention_dim, 1, use_bias=False, name="key")
        self.query = keras.layers.Conv2D(attention_dim, 1, use_bias=False, name="query")
        self.output_conv = keras.layers.Conv2D(
            num_classes, 1, use_bias=False, name="pixel_normalization"
        )
        self.output_bn = keras.layers.BatchNormalization(
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            center=True,
            scale=bn_scale,
            name="pixel_normalization_bn",
        )

    def build(self, cams_shape, features_shape=None, valid_shape=None, low_level_shape=None):
        """Builds the sub-layers from the input shapes (called on first use)."""
        if features_shape is None:
            return
        if isinstance(features_shape, (list, tuple)) and isinstance(
            features_shape[0], (list, tuple)
        ):
            depth = sum(int(s[-1]) for s in features_shape)
        else:
            depth = int(features_shape[-1])
        if self.resolution == "decoder":
            if low_level_shape is None:
                raise ValueError(self._missing_low_level_message())
            depth += int(low_level_shape[-1])
        self.key.build((None, None, None, depth))
        self.query.build((None, None, None, depth))
        self.output_conv.build((None, None, None, self.num_classes))
        self.output_bn.build((None, None, None, self.num_classes))
        self.built = True

    def attention(self, cams, hyper, valid=None):
        """Attention propagation without the output projection.

        Args:
          cams: `[B, h, w, C - 1]` values.
          hyper: `[B, h, w, K]` hypercolumn at the CAM resolution.
          valid: optional `[B, h, w]` float mask at the CAM resolution.

        Returns:
          (propagated `[B, h, w, C - 1]` = A V + V, attention weights `[B, hw, hw]`).
        """
        shape = tf.shape(cams)
        batch, height, width = shape[0], shape[1], shape[2]
        num_values = cams.shape[-1]
        query = tf.cast(self.query(hyper), tf.float32)
        key = tf.cast(self.key(hyper), tf.float32)
        query = tf.reshape(query, [batch, height * width, self.attention_dim])
        key = tf.reshape(key, [batch, height * width, self.attention_dim])
        logits = tf.matmul(query, key, transpose_b=True) / math.sqrt(self.attention_dim)
        if valid is not None:
            key_valid = tf.reshape(tf.cast(valid, tf.float32), [batch, 1, height * width])
            logits += (1.0 - key_valid) * -1e9
        weights = tf.nn.softmax(logits, axis=-1)
        values = tf.reshape(cams, [batch, height * width, num_values])
        propagated = tf.reshape(tf.matmul(weights, values), tf.shape(cams)) + cams
        return propagated, weights

    def _missing_low_level_message(self):
        return ("make_sgc_head.resolution = 'decoder' needs the decoder's low-level features, "
                "but none were given (a model without a decoder, "
                "build_deeplab.decoder_output_stride = None?); bind "
                "make_sgc_head.resolution = 'backbone'.")

    def call(self, cams, features, valid=None, training=None, low_level=None):
        """Computes SGC logits; see the class docstring."""
        cams = tf.stop_gradient(tf.cast(cams, tf.float32))
        if not isinstance(features, (list, tuple)):
            features = [features]
        if self.resolution == "decoder":
            if low_level is None:
                raise ValueError(self._missing_low_level_message())
            size = resize.spatial_size(low_level)
            cams = resize.resize_bilinear(cams, size)
            features = [low_level, *features]
        else:
            size = resize.spatial_size(cams)
        hyper = hypercolumn(features, size)
        if valid is not None:
            valid = resize.downsample_mask(valid, size, align_corners=self.mask_align_corners)
        propagated, _ = self.attention(cams, hyper, valid)
        # Class scores lie in [0, 2] after the skip connection, hence the reference's 2 - max.
        background = 2.0 - tf.reduce_max(propagated, axis=-1, keepdims=True)
        scores = tf.concat([background, propagated], axis=-1)
        logits = self.output_bn(self.output_conv(scores), training=training)
        return tf.cast(logits, tf.float32)

    def get_config(self):
        """Returns the layer configuration."""
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            attention_dim=self.attention_dim,
            bn_momentum=self.output_bn.momentum,
            bn_epsilon=self.output_bn.epsilon,
            bn_scale=self.output_bn.scale,
            mask_align_corners=self.mask_align_corners,
            resolution=self.resolution,
        )
        return config


@gin.configurable
def make_sgc_head(num_classes, attention_dim=128, bn_momentum=0.999, bn_epsilon=0.001,
                  bn_scale=False, resolution="backbone", name="sgc_head"):
    """Gin-configurable factory of `SGCHead`.

    Args:
      num_classes: number of classes `C` including background.
      attention_dim: key / query dimension.
      bn_momentum: BatchNorm momentum.
      bn_epsilon: BatchNorm epsilon.
      bn_scale: whether BatchNorm learns a scale.
      resolution: `'backbone'` (the paper) or `'decoder'` (see the module docstring).
      name: layer name.

    Returns:
      An `SGCHead`.

    Raises:
      ValueError: for an unknown `resolution`.
    """
    return SGCHead(
        num_classes,
        attention_dim=attention_dim,
        bn_momentum=bn_momentum,
        bn_epsilon=bn_epsilon,
        bn_scale=bn_scale,
        resolution=resolution,
        name=name,
    )


def sgc_logits(head, final_features, penultimate_features, image_labels, valid=None,
               classifier_kernel=None, classify=None, training=None, low_level_features=None):
    """Grad-CAM followed by the SGC head, the whole SGC branch in one call.

    Args:
      head: an `SGCHead`.
      final_features: `[B, h, w, K]` (`features['final']`).
      penultimate_features: `[B, h', w', K']` (`features['penultimate']`).
      image_labels: `[B, C - 1]` labels selecting CAM classes.
      valid: optional `[B, H, W]` valid mask at any resolution.
      classifier_kernel: classifier kernel for the closed-form Grad-CAM.
      classify: classifier callable for the autodiff Grad-CAM.
      training: BatchNorm mode of the head.
      low_level_features: the decoder's low-level features (`features['low_level']`); used
        only by a head at `resolution='decoder'`, which needs them.

    Returns:
      (SGC logits `[B, h, w, C]` at the head's resolution, CAMs `[B, h, w, C - 1]` at the last
      block's).
    """
    from wss.method import gradcam as gradcam_lib

    cams = gradcam_lib.gradcam(final_features, image_labels, classifier_kernel=classifier_kernel,
                               classify=classify)
    logits = head(cams, [penultimate_features, final_features], valid, training=training,
                  low_level=low_level_features)
    return logits, cams
