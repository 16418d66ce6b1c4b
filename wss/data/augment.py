"""Weak and strong views of one training crop, as in DeepLab and the PseudoSeg reference.

Weak view (DeepLab `input_preprocess.preprocess_image_and_label`): random scale from
`{0.5, 0.75, ..., 2.0}` (image: bilinear with anti-aliasing; label: nearest neighbour with
`align_corners=True`, so class ids keep their values), pad bottom/right to the crop size with
the mean pixel 127.5 (labels 255), random crop, random left-right flip. `valid` is 1 on real
pixels and 0 on padding.

Strong view (PseudoSeg `preprocess_utils.random_color_jitter` and `cutout_with_mask`): colour
jitter of the weak crop (brightness 0.5, contrast 0.5, saturation 0.5, hue 0.25, applied in a
random order in [0, 1] with clipping after each, probability 1), scaled by `strength`, then one
CutOut square (reference 100 x 100, `pad_size=50`) filled with the mean pixel 127.5 and set to 0
in `strong_valid`. The strong view is computed from the weak crop itself, so the two views are
aligned pixel for pixel; padding stays 127.5 in both.

Differences from the reference, both deliberate: the jitter is applied to the crop instead of the
whole scaled image (cheaper at large scales), and the contrast mean is taken over the valid pixels
of the crop, so padding does not pull the mean towards grey. The reference also wrote the CutOut
square into the weak view's `valid` and `label`; here `valid` and `label` describe the weak view
and the square is only in `strong_valid`.

Every random draw uses stateless ops from a per-example `seed` (shape `[2]`), so a pipeline
with a fixed seed is deterministic whatever its parallelism.
"""

from typing import Dict, Sequence, Tuple

import gin
import tensorflow as tf

MEAN_PIXEL = 127.5
IGNORE_LABEL = 255


def _split(seed: tf.Tensor, num: int):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def scale_factors(min_scale: float, max_scale: float, step: float) -> tf.Tensor:
    """The discrete scale factors DeepLab samples from (`step=0` is not supported here)."""
    if min_scale < 0 or min_scale > max_scale:
        raise ValueError(f"Bad scale range [{min_scale}, {max_scale}]")
    if min_scale == max_scale or step <= 0:
        return tf.constant([min_scale], tf.float32)
    num = int(round((max_scale - min_scale) / step)) + 1
    return tf.linspace(float(min_scale), float(max_scale), num)


def random_scale(
    image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor,
    min_scale: float = 0.5, max_scale: float = 2.0, step: float = 0.25,
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Rescales image (bilinear, anti-aliased) and label (nearest, align_corners) together.

    Args:
      image: float32 `[H, W, 3]`.
      label: int32 `[H, W]`.
      seed: Stateless seed `[2]`.
      min_scale, max_scale, step: The scale set, as DeepLab's flags.

    Returns:
      The scaled image and label; the new size is `floor(size * scale)`.
    """
    if min_scale == max_scale == 1.0:
        return image, label
    factors = scale_factors(min_scale, max_scale, step)
    index = tf.random.stateless_uniform([], seed, 0, tf.shape(factors)[0], dtype=tf.int32)
    scale = factors[index]
    size = tf.cast(tf.cast(tf.shape(image)[:2], tf.float32) * scale, tf.int32)
    size = tf.maximum(size, 1)
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    label = tf.raw_ops.ResizeNearestNeighbor(
        images=label[None, :, :, None], size=size, align_corners=True,
        half_pixel_centers=False)[0, :, :, 0]
    return image, label


def pad_to_size(
    image: tf.Tensor, label: tf.Tensor, height, width,
    mean_pixel: float = MEAN_PIXEL, ignore_label: int = IGNORE_LABEL,
) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Pads bottom/right up to at least `[height, width]`.

    Returns:
      The padded image (mean pixel), label (ignore label) and float32 `valid` (1 real, 0 pad).
    """
    shape = tf.shape(image)
    pad_h = tf.maximum(height - shape[0], 0)
    pad_w = tf.maximum(width - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    image = tf.pad(image, paddings + [[0, 0]], constant_values=mean_pixel)
    label = tf.pad(label, paddings, constant_values=ignore_label)
    valid = tf.pad(tf.ones(shape[:2], tf.float32), paddings, constant_values=0.0)
    return image, label, valid


def random_crop(tensors: Sequence[tf.Tensor], height: int, width: int, seed: tf.Tensor):
    """Crops the same random `[height, width]` window out of every tensor (`[H, W, ...]`)."""
    shape = tf.shape(tensors[0])
    seed_y, seed_x = _split(seed, 2)
    off_y = tf.random.stateless_uniform([], seed_y, 0, shape[0] - height + 1, dtype=tf.int32)
    off_x = tf.random.stateless_uniform([], seed_x, 0, shape[1] - width + 1, dtype=tf.int32)
    out = []
    for t in tensors:
        c = t[off_y:off_y + height, off_x:off_x + width]
        c.set_shape([height, width] + t.shape[2:].as_list())
        out.append(c)
    return out


def random_flip(tensors: Sequence[tf.Tensor], seed: tf.Tensor, prob: float = 0.5):
    """Flips every tensor left-right together with probability `prob`."""
    flip = tf.random.stateless_uniform([], seed) < prob
    return [tf.cond(flip, lambda t=t: tf.reverse(t, [1]), lambda t=t: t) for t in tensors]


def _nearest_align_corners_index(out_positions, in_size, out_size):
    """Source index of `ResizeNearestNeighbor(align_corners=True)` for output positions."""
    scale = tf.where(out_size > 1,
                     tf.cast(in_size - 1, tf.float32) / tf.cast(tf.maximum(out_size - 1, 1),
                                                                tf.float32), 0.0)
    # roundf (half away from zero), as the kernel; tf.round would round half to even.
    index = tf.cast(tf.floor(tf.cast(out_positions, tf.float32) * scale + 0.5), tf.int32)
    return tf.minimum(index, in_size - 1)


def weak_view(
    image: tf.Tensor,
    label: tf.Tensor,
    seed: tf.Tensor,
    crop_size: Sequence[int] = (513, 513),
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    scale_step: float = 0.25,
    flip_prob: float = 0.5,
    mean_pixel: float = MEAN_PIXEL,
) -> Dict[str, tf.Tensor]:
    """DeepLab's training augmentation of one image and its label.

    Same result as `random_scale` -> `pad_to_size` -> `random_crop` -> `random_flip`, but only
    the crop window is resampled: the image with `ScaleAndTranslate` (bilinear; anti-aliased
    when shrinking, as `tf.image.resize(..., antialias=True)`, which equals plain bilinear when
    enlarging), the label by gathering the rows and columns that nearest-neighbour resizing
    with `align_corners=True` would pick.

    Args:
      image: uint8 or float `[H, W, 3]`.
      label: int32 `[H, W]` (255 = ignore).
      seed: Stateless seed `[2]`.
      crop_size: `(height, width)` of the crop.
      min_scale, max_scale, scale_step: Random scale set.
      flip_prob: Probability of a left-right flip.
      mean_pixel: Padding value of the image.

    Returns:
      Dict with `image` float32 `[h, w, 3]` in [0, 255], `label` int32 `[h, w]`, `valid`
      float32 `[h, w]`, static shapes.
    """
    height, width = int(crop_size[0]), int(crop_size[1])
    s_scale, s_crop, s_flip = _split(seed, 3)
    image = tf.cast(image, tf.float32)
    label = tf.cast(label, tf.int32)
    in_size = tf.shape(image)[:2]
    factors = scale_factors(min_scale, max_scale, scale_step)
    index = tf.random.stateless_uniform([], s_scale, 0, tf.shape(factors)[0], dtype=tf.int32)
    scale = factors[index]
    new_size = tf.maximum(tf.cast(tf.cast(in_size, tf.float32) * scale, tf.int32), 1)
    # Crop offsets within the padded scaled image, as `random_crop` draws them.
    padded = tf.maximum(new_size, [height, width])
    seed_y, seed_x = _split(s_crop, 2)
    off_y = tf.random.stateless_uniform([], seed_y, 0, padded[0] - height + 1, dtype=tf.int32)
    off_x = tf.random.stateless_uniform([], seed_x, 0, padded[1] - width + 1, dtype=tf.int32)
    offset = tf.stack([off_y, off_x])
    out_size = tf.minimum(new_size - offset, [height, width])  # real pixels in the crop
    ratio = tf.cast(new_size, tf.float32) / tf.cast(in_size, tf.float32)
    translation = -tf.cast(offset, tf.float32)

    def resample(antialias):
        return tf.raw_ops.ScaleAndTranslate(
            images=image[None], size=out_size, scale=ratio, translation=translation,
            kernel_type="triangle", antialias=antialias)[0]

    same = tf.reduce_all(tf.equal(new_size, in_size))
    crop = tf.cond(
        same,
        lambda: tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([out_size, [3]], 0)),
        lambda: tf.cond(scale < 1.0, lambda: resample(True), lambda: resample(False)))
    rows = _nearest_align_corners_index(off_y + tf.range(out_size[0]), in_size[0], new_size[0])
    cols = _nearest_align_corners_index(off_x + tf.range(out_size[1]), in_size[1], new_size[1])
    crop_label = tf.gather(tf.gather(label, rows, axis=0), cols, axis=1)
    crop, crop_label, valid = pad_to_size(crop, crop_label, height, width, mean_pixel)
    crop.set_shape([height, width, 3])
    crop_label.set_shape([height, width])
    valid.set_shape([height, width])
    crop, crop_label, valid = random_flip([crop, crop_label, valid], s_flip, flip_prob)
    return {"image": crop, "label": crop_label, "valid": valid}


def _masked_mean(image: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Per-channel mean `[1, 1, 3]` over the pixels where `valid` is 1 (one contraction)."""
    total = tf.tensordot(valid, image, axes=[[0, 1], [0, 1]])
    return tf.reshape(total / tf.maximum(tf.reduce_sum(valid), 1.0), [1, 1, -1])


def color_jitter(
    image: tf.Tensor,
    seed: tf.Tensor,
    valid: tf.Tensor = None,
    brightness: float = 0.5,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.25,
    random_order: bool = True,
    max_value: float = 1.0,
) -> tf.Tensor:
    """SimCLR-style colour jitter, as the reference's `color_jitter` (values in [0, 1]).

    Brightness adds a delta from `[-brightness, brightness]`; contrast scales around the
    per-channel mean (over `valid` pixels) by a factor from `[1 - contrast, 1 + contrast]`;
    saturation multiplies HSV saturation by a factor from `[1 - saturation, 1 + saturation]`;
    hue shifts HSV hue by a delta from `[-hue, hue]` (`tf.image.adjust_saturation` /
    `adjust_hue`). The four run in a random order, clipping after each. A transform whose amount
    is 0 is skipped (so strength 0 is the identity).

    Args:
      image: float32 `[H, W, 3]` in [0, max_value].
      seed: Stateless seed `[2]`.
      valid: Optional float32 `[H, W]`; the contrast mean is over these pixels.
      brightness, contrast, saturation, hue: Jitter amounts, brightness in units of
        `max_value` (the reference works in [0, 1]).
      random_order: Apply the transforms in a random order (the reference does).
      max_value: 1 for images in [0, 1], 255 for [0, 255] (same result, scaled; saves the
        two conversions). Saturation and hue do not depend on the scale.

    Returns:
      The jittered image in [0, max_value].
    """
    seeds = _split(seed, 5)
    ops = []
    if brightness > 0:
        delta = tf.random.stateless_uniform([], seeds[0], -brightness, brightness) * max_value
        ops.append(lambda x: x + delta)
    if contrast > 0:
        factor = tf.random.stateless_uniform([], seeds[1], 1.0 - contrast, 1.0 + contrast)

        def adjust_contrast(x):
            mean = (tf.reduce_mean(x, axis=[0, 1], keepdims=True) if valid is None
                    else _masked_mean(x, valid))
            return x * factor + mean * (1.0 - factor)

        ops.append(adjust_contrast)
    if saturation > 0:
        factor_s = tf.random.stateless_uniform(
            [], seeds[2], max(1.0 - saturation, 0.0), 1.0 + saturation)
        ops.append(lambda x: tf.image.adjust_saturation(x, factor_s))
    if hue > 0:
        delta_h = tf.random.stateless_uniform([], seeds[3], -hue, hue)
        ops.append(lambda x: tf.image.adjust_hue(x, delta_h))
    if not ops:
        return image
    if not random_order or len(ops) == 1:
        for op in ops:
            image = tf.clip_by_value(op(image), 0.0, max_value)
        return image
    order = tf.argsort(tf.random.stateless_uniform([len(ops)], seeds[4]))
    for position in range(len(ops)):
        x = image
        image = tf.switch_case(
            order[position], [lambda op=op, x=x: op(x) for op in ops])
        image = tf.clip_by_value(image, 0.0, max_value)
        image.set_shape(x.shape)
    return image


def cutout_mask(height: int, width: int, seed: tf.Tensor, size: int = 100) -> tf.Tensor:
    """A float32 `[height, width]` mask, 0 inside one random `size` x `size` square, else 1.

    As the reference `cutout_with_mask` (with `pad_size = size / 2`): the centre is uniform
    over the crop and the square is clipped at the borders.
    """
    if size <= 0:
        return tf.ones([height, width], tf.float32)
    seed_y, seed_x = _split(seed, 2)
    cy = tf.random.stateless_uniform([], seed_y, 0, height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed_x, 0, width, dtype=tf.int32)
    half = size // 2
    ys = tf.range(height)[:, None]
    xs = tf.range(width)[None, :]
    inside_y = tf.logical_and(ys >= cy - half, ys < cy - half + size)
    inside_x = tf.logical_and(xs >= cx - half, xs < cx - half + size)
    return 1.0 - tf.cast(tf.logical_and(inside_y, inside_x), tf.float32)


@gin.configurable
def strong_view(
    image: tf.Tensor,
    valid: tf.Tensor,
    seed: tf.Tensor,
    strength: float = 1.0,
    brightness: float = 0.5,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.25,
    jitter_prob: float = 1.0,
    cutout_size: int = 100,
    cutout_fill: float = MEAN_PIXEL,
    mean_pixel: float = MEAN_PIXEL,
) -> Dict[str, tf.Tensor]:
    """The strong view of a weak crop: colour jitter and one CutOut square.

    Args:
      image: float32 `[h, w, 3]` in [0, 255], the weak view (static shape).
      valid: float32 `[h, w]`, the weak view's valid mask.
      seed: Stateless seed `[2]`.
      strength: Multiplies the four jitter amounts (0 disables jitter).
      brightness, contrast, saturation, hue: Jitter amounts at strength 1 (reference values).
      jitter_prob: Probability of jittering at all (reference: 1.0).
      cutout_size: Side of the CutOut square in pixels (reference: 100, its `pad_size=50`;
        the paper's text says 50 x 50). 0 disables CutOut.
      cutout_fill: Value of the CutOut pixels (reference: the mean pixel 127.5).
      mean_pixel: Value the padding keeps.

    Returns:
      Dict with `strong` float32 `[h, w, 3]` and `strong_valid` float32 `[h, w]`.
    """
    height, width = image.shape[0], image.shape[1]
    s_prob, s_jitter, s_cut = _split(seed, 3)
    strong = image
    jittered = strength > 0 and jitter_prob > 0
    if jittered:
        strong = color_jitter(
            image, s_jitter, valid, brightness * strength, contrast * strength,
            saturation * strength, hue * strength, max_value=255.0)
        if jitter_prob < 1.0:
            apply = tf.random.stateless_uniform([], s_prob) < jitter_prob
            strong = tf.cond(apply, lambda: strong, lambda: image)
    strong_valid = valid
    if cutout_size > 0:
        strong_valid = valid * cutout_mask(height, width, s_cut, cutout_size)
    if cutout_size > 0 and cutout_fill == mean_pixel:
        # Padding stays the mean pixel (the reference jitters before padding) and the CutOut
        # square takes the same value: one select.
        strong = tf.where(strong_valid[:, :, None] > 0, strong, mean_pixel)
    else:
        if jittered:
            strong = tf.where(valid[:, :, None] > 0, strong, mean_pixel)
        if cutout_size > 0:
            cut = tf.logical_and(valid > 0, strong_valid == 0)
            strong = tf.where(cut[:, :, None], cutout_fill, strong)
    return {"strong": strong, "strong_valid": strong_valid}


__all__ = [
    "MEAN_PIXEL", "color_jitter", "cutout_mask", "pad_to_size", "random_crop", "random_flip",
    "random_scale", "scale_factors", "strong_view", "weak_view",
]
