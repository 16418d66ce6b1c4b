"""Logits at the input resolution for an image of any size, on DeepLab's aligned grid.

A DeepLab network (fixed padding before every strided convolution) puts feature position `i`
of stride `s` on input pixel `i * s`, and it resizes between its own grids, and from the
logits to the image, with `align_corners=True`. Both agree only when `(H - 1)` is a multiple
of the output stride, which is why DeepLab trains on crops such as 513 and evaluates on images
padded to such an eval crop. Fed an image of another size (a 64 x 64 image at output stride
8, say), the network's internal resizes stretch its grids and the upsampled logits land
a few pixels off the objects (3 px at the far side of a 64 px image; 0.4 to 12 points of mIoU
on the 64 px probe sets).

`aligned_size` is the smallest size `n * output_stride + 1` not below a size, and
`full_resolution_logits` pads images to it on the bottom and right with the mean pixel (0
after the network's input scaling, as DeepLab pads its eval crops), runs the network, upsamples
the logits to the padded size with `align_corners=True` and crops them back to the image.
Evaluation, self-training's teacher and the exported serving signature all use it, so they
see what training crops of `k * s + 1` pixels taught.
"""

import tensorflow as tf

from wss.data.augment import MEAN_PIXEL
from wss.resize import resize_bilinear


def aligned_size(size, stride):
    """The smallest `n * stride + 1` that is at least `size` (Python ints or int tensors).

    Args:
      size: a spatial size (>= 1).
      stride: the network's output stride.

    Returns:
      The aligned size, of the type of `size`.
    """
    return (size - 1 + stride - 1) // stride * stride + 1


def full_resolution_logits(model, images, training=False):
    """The model's decoder logits upsampled to the images' own size on the aligned grid.

    Args:
      model: a DeepLab model (`wss.models.DeepLabV3Plus`): a callable returning a dict with
        `logits`, with an `output_stride` attribute. A model without one (a network with
        other padding conventions) runs on the images as they are.
      images: float `[B, H, W, 3]` in [0, 255], any `H, W`.
      training: passed to the model.

    Returns:
      float32 `[B, H, W, C]` logits.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    stride = getattr(model, "output_stride", None)
    if stride is None:
        logits = tf.cast(model(images, training=training)["logits"], tf.float32)
        return resize_bilinear(logits, tf.stack([height, width]), align_corners=True)
    stride = int(stride)
    padded_height = aligned_size(height, stride)
    padded_width = aligned_size(width, stride)
    padded = tf.pad(images, [[0, 0], [0, padded_height - height], [0, padded_width - width],
                             [0, 0]], constant_values=MEAN_PIXEL)
    logits = tf.cast(model(padded, training=training)["logits"], tf.float32)
    logits = resize_bilinear(logits, tf.stack([padded_height, padded_width]),
                             align_corners=True)
    return logits[:, :height, :width, :]


def crop_alignment_warning(crop_size, output_stride, binding="train.crop_size"):
    """A warning for a training crop off the aligned grid, or None when it is on it.

    Args:
      crop_size: `(height, width)` of the training crop.
      output_stride: the network's output stride.
      binding: the gin binding to name in the message.

    Returns:
      None if `(size - 1)` is a multiple of `output_stride` for both sides, else a message
      that names the binding and the aligned crop to use instead.
    """
    if all((int(size) - 1) % output_stride == 0 for size in crop_size):
        return None
    aligned = tuple(aligned_size(int(size), output_stride) for size in crop_size)
    return (f"{binding}={tuple(crop_size)}: (size - 1) is not a multiple of the output stride "
            f"{output_stride}, so DeepLab's logits do not sit on the pixels L_s trains them on "
            f"(they are stretched over the crop, a few pixels off). "
            f"Use {aligned} (images smaller than the crop are padded).")
