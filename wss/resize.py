"""Resizing helpers with DeepLab's (TF1) corner-aligned semantics.

DeepLab feature maps of a crop of size `H` at output stride `s` have `(H - 1) / s + 1` positions
and position `i` sits exactly on pixel `i * s` (crops are `k * s + 1`, e.g. 513). Resizing between
such grids must therefore align the corner pixels, which TF2's `tf.image.resize` cannot do; the
TF1 kernels with `align_corners=True` are still available as raw ops and are used here.

* `spatial_size`: `(H, W)` of a tensor, static ints where known, else scalar tensors.
* `resize_bilinear`: bilinear, `align_corners=True` (DeepLab upsamples logits to the label size
  this way, and resizes image-pooling and decoder features inside its head; the PseudoSeg
  reference resizes hypercolumn features and SGC maps this way too). The result is float32;
  the DeepLab head casts it back to its compute dtype, which gives what resizing in that dtype
  gave (the kernel computes in float32 whatever the input dtype).
* `downsample_mask`: nearest-neighbour resize of a {0, 1} mask (valid / CutOut masks) with
  `align_corners=True` by default, i.e. output position `i` reads input pixel
  `round(i * (in - 1) / (out - 1))`, the pixel the feature position is centred on. The reference
  used TF1's default (`align_corners=False`, input pixel `floor(i * in / out)`); pass
  `align_corners=False` to get that. The two differ by at most one feature position at the
  padding boundary.
* `resize_labels`: the same nearest-neighbour sampling of integer masks, corner-aligned by
  default, so that a mask at the decoder resolution (the `ground_truth` pseudo-label source,
  the pseudo-label diagnostics) lies on the pixels the logits are trained on.
"""

import tensorflow as tf


def spatial_size(tensor):
    """Returns the spatial size `(H, W)` of a `[B, H, W, ...]` tensor.

    Args:
      tensor: a tensor with at least three dimensions.

    Returns:
      A pair of Python ints where the static shape is known, else scalar int32 tensors (each
      dimension on its own).
    """
    static = tensor.shape
    dynamic = tf.shape(tensor)
    height = static[1] if static[1] is not None else dynamic[1]
    width = static[2] if static[2] is not None else dynamic[2]
    return height, width


def resize_bilinear(images, size, align_corners=True):
    """Bilinear resize of `[B, H, W, C]` to `[B, size[0], size[1], C]` (float32 result).

    Args:
      images: `[B, H, W, C]` tensor, any float dtype (computed in float32).
      size: `(height, width)` of the output, ints or scalar int tensors.
      align_corners: if True (default, DeepLab's choice) the corner pixels of input and output
        are aligned, i.e. output `i` samples input `i * (H - 1) / (height - 1)`.

    Returns:
      float32 tensor `[B, height, width, C]`.
    """
    images = tf.cast(images, tf.float32)
    size = tf.cast(tf.stack([size[0], size[1]]), tf.int32)
    return tf.raw_ops.ResizeBilinear(
        images=images, size=size, align_corners=align_corners, half_pixel_centers=False)


def resize_like(images, reference, align_corners=True):
    """Bilinearly resizes `images` to the spatial size of `reference` (`[B, H, W, ...]`).

    Args:
      images: `[B, h, w, C]` tensor.
      reference: tensor whose dimensions 1 and 2 give the target size.
      align_corners: see `resize_bilinear`.

    Returns:
      float32 tensor `[B, H, W, C]`.
    """
    return resize_bilinear(images, spatial_size(reference), align_corners=align_corners)


def downsample_mask(mask, size, align_corners=True):
    """Nearest-neighbour resize of a mask to `size`.

    Args:
      mask: `[B, H, W]` or `[B, H, W, 1]` tensor (bool, int or float); nonzero = valid.
      size: `(height, width)` of the output.
      align_corners: see the module docstring; True samples input pixel
        `round(i * (H - 1) / (height - 1))`, False (the reference's TF1 default) samples
        `floor(i * H / height)`.

    Returns:
      float32 `[B, height, width]` mask of zeros and ones (same rank convention as `[B, H, W]`).
    """
    mask = tf.cast(tf.not_equal(tf.cast(mask, tf.float32), 0.0), tf.float32)
    if mask.shape.rank == 3:
        mask = mask[..., tf.newaxis]
    size = tf.cast(tf.stack([size[0], size[1]]), tf.int32)
    out = tf.raw_ops.ResizeNearestNeighbor(
        images=mask, size=size, align_corners=align_corners, half_pixel_centers=False)
    return out[..., 0]


def resize_labels(labels, size, align_corners=True):
    """Nearest-neighbour resize of integer labels `[B, H, W]` to `size`.

    With `align_corners=True` (the default) output position `i` reads label pixel
    `round(i * (H - 1) / (height - 1))`, the pixel that logit position `i` is trained on by
    L_s (which upsamples the logits with `align_corners=True`, as DeepLab does), so labels
    resized this way are aligned with the decoder's logits. `align_corners=False` (TF1's
    default) reads `floor(i * H / height)`: on a 65 px crop at stride 4 that drifts up to
    3 px towards the top-left corner, which puts about 6% of the labels of scenes of a few
    large objects on the wrong side of an object's boundary.

    Args:
      labels: int `[B, H, W]` class ids.
      size: `(height, width)` of the output.
      align_corners: sampling convention (see above).

    Returns:
      int32 `[B, height, width]`.
    """
    labels = tf.cast(labels, tf.int32)[..., tf.newaxis]
    size = tf.cast(tf.stack([size[0], size[1]]), tf.int32)
    out = tf.raw_ops.ResizeNearestNeighbor(images=labels, size=size, align_corners=align_corners,
                                           half_pixel_centers=False)
    return out[..., 0]
