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
aligned pixel for pixel; padding stays 127.5 in both. Its settings are a `StrongViewConfig`
(the gin-configurable part: `StrongViewConfig.cutout_size = 8`), which the unlabelled stream
hands to the plain function `strong_view`.

Differences from the reference, both deliberate: the jitter is applied to the crop instead of the
whole scaled image (cheaper at large scales), and the contrast mean is taken over the valid pixels
of the crop, so padding does not pull the mean towards grey. The reference also wrote the CutOut
square into the weak view's `valid` and `label`; here `valid` and `label` describe the weak view
and the square is only in `strong_valid`.

Every random draw uses stateless ops from a per-example `seed` (shape `[2]`), so a pipeline
with a fixed seed is deterministic whatever its parallelism.

Cost (see docs/data.md, Throughput): the weak view resamples only what the crop needs with the
fastest exact kernel for each case and builds label and valid mask from index vectors; the strong
view draws its random numbers, then does all per-pixel work (jitter on channel planes, with
saturation and hue in closed form, CutOut, padding) in one XLA-compiled function. Tests check
both against the plain compositions (labels and masks exactly, pixels to ~1e-3 of 255).
"""

import dataclasses
import functools
import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import gin
import tensorflow as tf

from wss import config as config_lib
from wss.data.records import IGNORE_LABEL

MEAN_PIXEL = 127.5


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


def _label_index(offset, size, in_size, new_size):
    """Source index of each of the `size` crop positions, `in_size` on padding (static shape)."""
    positions = offset + tf.range(size)
    index = _nearest_align_corners_index(positions, in_size, new_size)
    return tf.where(positions < new_size, index, in_size)


class _Window(NamedTuple):
    """The random draws of `weak_view`: scale, crop window and flip (scalars / `[2]` sizes)."""

    in_size: tf.Tensor  # source `[2]`
    new_size: tf.Tensor  # scaled `[2]`
    scale: tf.Tensor
    off_y: tf.Tensor  # crop offset in the padded scaled image
    off_x: tf.Tensor
    out_h: tf.Tensor  # real (non-padding) pixels in the crop
    out_w: tf.Tensor
    flip: tf.Tensor


def _draw_window(image, seed, height, width, min_scale, max_scale, scale_step, flip_prob):
    """Draws scale, crop offsets and flip as `random_scale`, `random_crop` and `random_flip`."""
    s_scale, s_crop, s_flip = _split(seed, 3)
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
    out_h = tf.minimum(new_size[0] - off_y, height)
    out_w = tf.minimum(new_size[1] - off_x, width)
    flip = tf.random.stateless_uniform([], s_flip) < flip_prob
    return _Window(in_size, new_size, scale, off_y, off_x, out_h, out_w, flip)


def _weak_image(image, window: _Window, height, width, mean_pixel):
    """The scaled, padded, cropped and flipped image of `window`, float32 `[height, width, 3]`.

    Flipping commutes with resampling (both kernels are mirror-symmetric), so the uint8 source
    is flipped, and the crop columns are mirrored: the real pixels are columns
    `[new_w - off_x - out_w, new_w - off_x)` of the flipped scaled image, padded on the left.
    """
    w = window
    image = tf.cond(w.flip, lambda: tf.reverse(image, [1]), lambda: image)
    col = tf.where(w.flip, w.new_size[1] - w.off_x - w.out_w, w.off_x)
    begin = tf.stack([w.off_y, col, 0])
    extent = tf.stack([w.out_h, w.out_w, 3])

    def shrink():
        return tf.raw_ops.ScaleAndTranslate(
            images=image[None], size=tf.stack([w.out_h, w.out_w]),  # uint8 in: no cast pass
            scale=tf.cast(w.new_size, tf.float32) / tf.cast(w.in_size, tf.float32),
            translation=-tf.cast(begin[:2], tf.float32), kernel_type="triangle",
            antialias=True)[0]

    def enlarge():
        full = tf.raw_ops.ResizeBilinear(images=tf.cast(image, tf.float32)[None],
                                         size=w.new_size, half_pixel_centers=True)[0]
        return tf.slice(full, begin, extent)

    crop = tf.cond(
        tf.reduce_all(tf.equal(w.new_size, w.in_size)),
        lambda: tf.cast(tf.slice(image, begin, extent), tf.float32),
        lambda: tf.cond(w.scale < 1.0, shrink, enlarge))
    # Padding by concatenation (cheaper than tf.pad); on the left when flipped.
    fill = tf.fill([w.out_h, width - w.out_w, 3], tf.constant(mean_pixel, tf.float32))
    crop = tf.cond(w.flip, lambda: tf.concat([fill, crop], 1),
                   lambda: tf.concat([crop, fill], 1))
    crop = tf.concat(
        [crop, tf.fill([height - w.out_h, width, 3], tf.constant(mean_pixel, tf.float32))], 0)
    crop.set_shape([height, width, 3])
    return crop


def _weak_label_and_valid(label, window: _Window, height, width):
    """The label (int32) and valid mask (float32) `[height, width]` of `window`.

    Index vectors of the padded crop, reversed when flipped. Columns are gathered as rows of
    the transpose (a row gather copies whole rows; a column gather copies one element at a
    time); padding gathers an appended ignore row / column.
    """
    w = window
    rows = _label_index(w.off_y, height, w.in_size[0], w.new_size[0])
    cols = _label_index(w.off_x, width, w.in_size[1], w.new_size[1])
    cols = tf.cond(w.flip, lambda: tf.reverse(cols, [0]), lambda: cols)
    label = tf.pad(label, [[0, 1], [0, 1]], constant_values=IGNORE_LABEL)
    crop_label = tf.transpose(tf.gather(tf.transpose(tf.gather(label, rows)), cols))
    crop_label.set_shape([height, width])
    valid = (tf.cast(rows < w.in_size[0], tf.float32)[:, None]
             * tf.cast(cols < w.in_size[1], tf.float32)[None, :])
    valid.set_shape([height, width])
    return crop_label, valid


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

    Same result as `random_scale` -> `pad_to_size` -> `random_crop` -> `random_flip`, but
    cheaper:

    - image, shrinking: only the crop window is resampled, with `ScaleAndTranslate`
      (anti-aliased triangle kernel, exactly what `tf.image.resize(..., antialias=True)` runs);
    - image, enlarging: anti-aliasing does nothing, and the triangle kernel is then bilinear
      interpolation with half-pixel centres, so the whole image goes through the much faster
      `ResizeBilinear(half_pixel_centers=True)` kernel and the crop is sliced out (equal up to
      float rounding of the sampling positions, ~1e-3 of the pixel range at most);
    - flip: applied to the source (uint8, cheap) with the crop window mirrored, as both kernels
      are mirror-symmetric (equal to float rounding); padding goes on the left then;
    - label and valid mask: the rows and columns that nearest-neighbour resizing with
      `align_corners=True` would pick are gathered straight into the padded, flipped crop
      (padding gathers an appended ignore row / column), so they are exactly equal.

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
    window = _draw_window(image, seed, height, width, min_scale, max_scale, scale_step,
                          flip_prob)
    crop = _weak_image(image, window, height, width, mean_pixel)
    crop_label, valid = _weak_label_and_valid(tf.cast(label, tf.int32), window, height, width)
    return {"image": crop, "label": crop_label, "valid": valid}


def _masked_mean(image: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Per-channel mean `[1, 1, 3]` over the pixels where `valid` is 1 (one contraction)."""
    total = tf.tensordot(valid, image, axes=[[0, 1], [0, 1]])
    return tf.reshape(total / tf.maximum(tf.reduce_sum(valid), 1.0), [1, 1, -1])


def _jitter_params(seed, brightness, contrast, saturation, hue, random_order, max_value):
    """The random draws of `color_jitter`: (names of the enabled ops, their amounts, order)."""
    seeds = _split(seed, 5)
    names, amounts = [], []
    if brightness > 0:
        names.append("brightness")
        amounts.append(
            tf.random.stateless_uniform([], seeds[0], -brightness, brightness) * max_value)
    if contrast > 0:
        names.append("contrast")
        amounts.append(tf.random.stateless_uniform([], seeds[1], 1.0 - contrast, 1.0 + contrast))
    if saturation > 0:
        names.append("saturation")
        amounts.append(tf.random.stateless_uniform(
            [], seeds[2], max(1.0 - saturation, 0.0), 1.0 + saturation))
    if hue > 0:
        names.append("hue")
        amounts.append(tf.random.stateless_uniform([], seeds[3], -hue, hue))
    if not random_order or len(names) < 2:
        order = tf.range(len(names), dtype=tf.int32)
    else:
        order = tf.cast(tf.argsort(tf.random.stateless_uniform([len(names)], seeds[4])),
                        tf.int32)
    amounts = tf.stack(amounts) if amounts else tf.zeros([0], tf.float32)
    return tuple(names), amounts, order


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
    `adjust_hue`, computed in closed form by the same code as `strong_view`). The four run in a
    random order, clipping after each. A transform whose amount is 0 is skipped (so strength 0
    is the identity).

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
    names, amounts, order = _jitter_params(
        seed, brightness, contrast, saturation, hue, random_order, max_value)
    if not names:
        return image
    if valid is None:
        valid = tf.ones(tf.shape(image)[:2], tf.float32)
    planes = _jitter_planar(tf.transpose(image, [2, 0, 1]), valid, names, amounts, order,
                            max_value)
    return tf.transpose(planes, [1, 2, 0])


def _cutout_keep(height: int, width: int, cy, cx, size: int) -> tf.Tensor:
    """Bool `[height, width]`, False inside the `size` square centred at (cy, cx)."""
    half = size // 2
    ys = tf.range(height)[:, None]
    xs = tf.range(width)[None, :]
    inside_y = tf.logical_and(ys >= cy - half, ys < cy - half + size)
    inside_x = tf.logical_and(xs >= cx - half, xs < cx - half + size)
    return tf.logical_not(tf.logical_and(inside_y, inside_x))


def _cutout_centre(height: int, width: int, seed: tf.Tensor):
    seed_y, seed_x = _split(seed, 2)
    cy = tf.random.stateless_uniform([], seed_y, 0, height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed_x, 0, width, dtype=tf.int32)
    return cy, cx


def cutout_mask(height: int, width: int, seed: tf.Tensor, size: int = 100) -> tf.Tensor:
    """A float32 `[height, width]` mask, 0 inside one random `size` x `size` square, else 1.

    As the reference `cutout_with_mask` (with `pad_size = size / 2`): the centre is uniform
    over the crop and the square is clipped at the borders.
    """
    if size <= 0:
        return tf.ones([height, width], tf.float32)
    cy, cx = _cutout_centre(height, width, seed)
    return tf.cast(_cutout_keep(height, width, cy, cx, size), tf.float32)


def cutmix_mask(height: int, width: int, seed: tf.Tensor, area: float) -> tf.Tensor:
    """A float32 `[height, width]` mask, 0 inside one random CutMix box, else 1.

    The box covers `area` of the crop (to rounding; less where a side is clipped to the crop)
    with an aspect ratio log-uniform in [1/2, 2], and lies wholly inside the crop at a uniform
    position. 1 marks the pixels the strong view keeps, 0 those it takes from its partner.

    Args:
      height, width: The crop's size.
      seed: Stateless seed `[2]`.
      area: Fraction of the crop in the box, in (0, 1).

    Returns:
      float32 `[height, width]` of zeros and ones.
    """
    s_ratio, s_y, s_x = _split(seed, 3)
    log_ratio = tf.random.stateless_uniform([], s_ratio, -math.log(2.0), math.log(2.0))
    ratio = tf.exp(log_ratio)
    box_h = tf.cast(tf.round(tf.sqrt(area * ratio) * height), tf.int32)
    box_w = tf.cast(tf.round(tf.sqrt(area / ratio) * width), tf.int32)
    box_h = tf.clip_by_value(box_h, 1, height)
    box_w = tf.clip_by_value(box_w, 1, width)
    y0 = tf.random.stateless_uniform([], s_y, 0, height - box_h + 1, dtype=tf.int32)
    x0 = tf.random.stateless_uniform([], s_x, 0, width - box_w + 1, dtype=tf.int32)
    ys = tf.range(height)[:, None]
    xs = tf.range(width)[None, :]
    inside = tf.logical_and(tf.logical_and(ys >= y0, ys < y0 + box_h),
                            tf.logical_and(xs >= x0, xs < x0 + box_w))
    return 1.0 - tf.cast(inside, tf.float32)


def _saturation_planar(planes, factor):
    """`tf.image.adjust_saturation` in closed form on channel planes `[3, H, W]` in [0, max].

    HSV keeps the value `max(r, g, b)` and scales the saturation `(max - min) / max` by
    `factor`, clipped at 1; in RGB this moves every channel away from the max by the same
    ratio: `c' = max - (max - c) * min(factor, max / (max - min))`.
    """
    r, g, b = tf.unstack(planes)
    hi = tf.maximum(tf.maximum(r, g), b)
    chroma = hi - tf.minimum(tf.minimum(r, g), b)
    ratio = tf.where(chroma > 0, tf.minimum(factor, hi / tf.where(chroma > 0, chroma, 1.0)),
                     factor)
    return hi - (hi - planes) * ratio


def _hue_planar(planes, delta):
    """`tf.image.adjust_hue` in closed form on channel planes `[3, H, W]`.

    HSV keeps max and min; the hue `h` (in sixths of a turn) moves by `6 * delta` and each
    channel is `max - chroma * clip(min(k, 4 - k), 0, 1)` with `k = (n + h) mod 6`, `n` = 5, 3,
    1 for r, g, b (the standard HSV -> RGB formula).
    """
    r, g, b = tf.unstack(planes)
    hi = tf.maximum(tf.maximum(r, g), b)
    chroma = hi - tf.minimum(tf.minimum(r, g), b)
    inv = 1.0 / tf.where(chroma > 0, chroma, 1.0)
    hue = tf.where(hi == r, (g - b) * inv,
                   tf.where(hi == g, 2.0 + (b - r) * inv, 4.0 + (r - g) * inv))
    hue = hue + 6.0 * delta
    out = []
    for n in (5.0, 3.0, 1.0):
        k = n + hue
        k = k - 6.0 * tf.floor(k * (1.0 / 6.0))
        out.append(hi - chroma * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0))
    return tf.stack(out)


def _jitter_planar(planes, valid, names, amounts, order, max_value):
    """The jitter ops `names` (amounts `[n]`) in the order `order` `[n]` on channel planes
    `[3, H, W]`, clipping after each; saturation and hue in closed form (element-wise, so XLA
    compiles each op into one vectorised loop)."""
    count = tf.maximum(tf.reduce_sum(valid), 1.0)

    def op_fn(name, amount):
        if name == "brightness":
            return lambda p: p + amount
        if name == "contrast":
            def adjust_contrast(p):
                # A matrix-vector product: much faster than a reduction under XLA on CPU.
                total = tf.linalg.matvec(tf.reshape(p, [3, -1]), tf.reshape(valid, [-1]))
                mean = tf.reshape(total / count, [3, 1, 1])
                return p * amount + mean * (1.0 - amount)
            return adjust_contrast
        if name == "saturation":
            return lambda p: _saturation_planar(p, amount)
        return lambda p: _hue_planar(p, amount)

    ops = [op_fn(name, amounts[i]) for i, name in enumerate(names)]
    for position in range(len(ops)):
        x = planes
        planes = tf.switch_case(
            order[position],
            [lambda op=op, x=x: tf.clip_by_value(op(x), 0.0, max_value) for op in ops])
        planes.set_shape(x.shape)
    return planes


def _strong_core(image, valid, amounts, order, apply, cy, cx, *, names, partial_jitter,
                 cutout_size, cutout_fill, mean_pixel):
    """The per-pixel work of `strong_view` from its random draws (no random op inside, so the
    same under XLA). The jitter runs on channel planes (transposed in and out once)."""
    height, width = image.shape[0], image.shape[1]
    strong = image
    if names:
        planes = _jitter_planar(tf.transpose(image, [2, 0, 1]), valid, names, amounts, order,
                                255.0)
        strong = tf.transpose(planes, [1, 2, 0])
        if partial_jitter:
            strong = tf.where(apply, strong, image)
    strong_valid = valid
    if cutout_size > 0:
        keep = _cutout_keep(height, width, cy, cx, cutout_size)
        strong_valid = tf.where(keep, valid, 0.0)
    if cutout_size > 0 and cutout_fill == mean_pixel:
        # Padding stays the mean pixel (the reference jitters before padding) and the CutOut
        # square takes the same value: one select.
        strong = tf.where(strong_valid[:, :, None] > 0, strong, mean_pixel)
    else:
        if names:
            strong = tf.where(valid[:, :, None] > 0, strong, mean_pixel)
        if cutout_size > 0:
            cut = tf.logical_and(valid > 0, strong_valid == 0)
            strong = tf.where(cut[:, :, None], cutout_fill, strong)
    return strong, strong_valid


@functools.cache
def _compiled_strong_core(**static):
    """`_strong_core` for one static configuration as an XLA-compiled function (one fused
    kernel instead of a dozen full-image passes)."""
    return tf.function(functools.partial(_strong_core, **static), jit_compile=True,
                       autograph=False)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class StrongViewConfig:
    """The strong view's settings (see `strong_view`), handed to it by the unlabelled stream.

    Gin: `StrongViewConfig.cutout_size = 8`, or a whole config as
    `unlabelled_dataset.strong_view = @StrongViewConfig()`.

    Attributes:
      strength: Multiplies the four jitter amounts (0 disables jitter).
      brightness, contrast, saturation, hue: Jitter amounts at strength 1 (reference values).
      jitter_prob: Probability of jittering at all (reference: 1.0), in [0, 1].
      cutout_size: Side of the CutOut square in pixels (reference: 100, its `pad_size=50`;
        the paper's text says 50 x 50). 0 disables CutOut.
      cutout_fill: Value of the CutOut pixels (reference: the mean pixel 127.5).
      mean_pixel: Value the padding keeps.
      jit_compile: Run the per-pixel work under XLA (speed only).
      cutout_fraction: In [0, 1]; if > 0, the CutOut side is this fraction of the crop's
        shorter side (rounded), replacing `cutout_size`, so that one setting suits every crop
        size (the reference's 100 px on 513 px crops is about 0.2).
      cutmix_area: In [0, 1); if > 0, each strong view also gets a CutMix box (French et al.,
        "Semi-supervised semantic segmentation needs strong, varied perturbations", 2020; not
        in the paper) covering about this fraction of the crop, returned as `mix_mask`; the
        training step pastes into it the strong view of the next image of the batch, and the
        same box of that image's pseudo label into the target (`PseudoSegObjective`). 0 (the
        paper's strong view) disables it.

    Raises:
      ValueError: on construction, for a bad value, naming the field
        (e.g. `StrongViewConfig.jitter_prob=2.0: expected a number >= 0 and <= 1`).
    """

    strength: float = 1.0
    brightness: float = 0.5
    contrast: float = 0.5
    saturation: float = 0.5
    hue: float = 0.25
    jitter_prob: float = 1.0
    cutout_size: int = 100
    cutout_fill: float = MEAN_PIXEL
    mean_pixel: float = MEAN_PIXEL
    jit_compile: bool = True
    cutout_fraction: float = 0.0
    cutmix_area: float = 0.0

    def __post_init__(self):
        name = type(self).__name__
        for field in ("strength", "brightness", "contrast", "saturation", "hue"):
            config_lib.check_number(f"{name}.{field}", getattr(self, field), minimum=0)
        config_lib.check_number(f"{name}.jitter_prob", self.jitter_prob, minimum=0, maximum=1)
        config_lib.check_int(f"{name}.cutout_size", self.cutout_size, minimum=0)
        config_lib.check_number(f"{name}.cutout_fill", self.cutout_fill)
        config_lib.check_number(f"{name}.mean_pixel", self.mean_pixel)
        config_lib.check_bool(f"{name}.jit_compile", self.jit_compile)
        config_lib.check_number(f"{name}.cutout_fraction", self.cutout_fraction, minimum=0,
                                maximum=1)
        config_lib.check_number(f"{name}.cutmix_area", self.cutmix_area, minimum=0)
        if self.cutmix_area >= 1:
            raise ValueError(f"{name}.cutmix_area={self.cutmix_area!r}: expected a number >= 0 "
                             f"and < 1 (the share of the crop taken from another image)")


def strong_view(
    image: tf.Tensor,
    valid: tf.Tensor,
    seed: tf.Tensor,
    config: Optional[StrongViewConfig] = None,
    *,
    strength: Optional[float] = None,
    brightness: Optional[float] = None,
    contrast: Optional[float] = None,
    saturation: Optional[float] = None,
    hue: Optional[float] = None,
    jitter_prob: Optional[float] = None,
    cutout_size: Optional[int] = None,
    cutout_fill: Optional[float] = None,
    mean_pixel: Optional[float] = None,
    jit_compile: Optional[bool] = None,
    cutout_fraction: Optional[float] = None,
    cutmix_area: Optional[float] = None,
) -> Dict[str, tf.Tensor]:
    """The strong view of a weak crop: colour jitter, one CutOut square, a CutMix box.

    All random draws are made first (stateless, from `seed`); the per-pixel work then runs as
    one XLA-compiled function (`jit_compile=True`, the default; static crop shape) or as plain
    TF ops. The two agree to float rounding (~1e-4 of the pixel range).

    The settings are `config`'s (a `StrongViewConfig`; without one, its defaults, the
    reference's); a setting given as a keyword argument overrides the config's value. Gin
    bindings do not reach this function: they configure the `StrongViewConfig` that the
    unlabelled stream (`wss.data.pipeline.unlabelled_dataset`) passes in.

    Args:
      image: float32 `[h, w, 3]` in [0, 255], the weak view (static shape).
      valid: float32 `[h, w]`, the weak view's valid mask.
      seed: Stateless seed `[2]`.
      config: A `StrongViewConfig`, or None for its defaults.
      strength, brightness, contrast, saturation, hue, jitter_prob, cutout_size, cutout_fill,
        mean_pixel, jit_compile, cutout_fraction, cutmix_area: Override the config's field of
        that name (see `StrongViewConfig`).

    Returns:
      Dict with `strong` float32 `[h, w, 3]` and `strong_valid` float32 `[h, w]`, and
      `mix_mask` float32 `[h, w]` (`cutmix_mask`) when the config's `cutmix_area` is > 0. The
      box is drawn from a seed folded from `seed`, so the jitter and CutOut draws are those of
      the same seed without CutMix.

    Raises:
      ValueError: on a bad setting, naming it.
    """
    c = config_lib.with_overrides(
        StrongViewConfig, config, strength=strength, brightness=brightness, contrast=contrast,
        saturation=saturation, hue=hue, jitter_prob=jitter_prob, cutout_size=cutout_size,
        cutout_fill=cutout_fill, mean_pixel=mean_pixel, jit_compile=jit_compile,
        cutout_fraction=cutout_fraction, cutmix_area=cutmix_area)
    view = _jitter_and_cutout(image, valid, seed, c)
    if c.cutmix_area > 0:
        view["mix_mask"] = cutmix_mask(image.shape[0], image.shape[1],
                                       tf.random.experimental.stateless_fold_in(seed, 1),
                                       c.cutmix_area)
    return view


def _jitter_and_cutout(image, valid, seed, c):
    """`strong_view` without the CutMix box, from the resolved `StrongViewConfig` `c`."""
    strength, jitter_prob, cutout_size = c.strength, c.jitter_prob, c.cutout_size
    height, width = image.shape[0], image.shape[1]
    if c.cutout_fraction > 0:
        cutout_size = max(1, int(round(c.cutout_fraction * min(height, width))))
    s_prob, s_jitter, s_cut = _split(seed, 3)
    names, amounts, order = (), tf.zeros([0], tf.float32), tf.zeros([0], tf.int32)
    if strength > 0 and jitter_prob > 0:
        names, amounts, order = _jitter_params(
            s_jitter, c.brightness * strength, c.contrast * strength, c.saturation * strength,
            c.hue * strength, True, 255.0)
    partial_jitter = bool(names) and jitter_prob < 1.0
    apply = (tf.random.stateless_uniform([], s_prob) < jitter_prob if partial_jitter
             else tf.constant(True))
    if cutout_size > 0:
        cy, cx = _cutout_centre(height, width, s_cut)
    else:
        cy = cx = tf.constant(0, tf.int32)
    static = dict(names=names, partial_jitter=partial_jitter, cutout_size=int(cutout_size),
                  cutout_fill=float(c.cutout_fill), mean_pixel=float(c.mean_pixel))
    if not names and cutout_size <= 0:
        return {"strong": image, "strong_valid": valid}
    core = _compiled_strong_core(**static) if c.jit_compile else functools.partial(
        _strong_core, **static)
    strong, strong_valid = core(image, valid, amounts, order, apply, cy, cx)
    strong.set_shape(image.shape)
    strong_valid.set_shape(valid.shape)
    return {"strong": strong, "strong_valid": strong_valid}


__all__ = [
    "MEAN_PIXEL", "color_jitter", "cutmix_mask", "cutout_mask", "pad_to_size", "random_crop",
    "random_flip", "random_scale", "scale_factors", "StrongViewConfig", "strong_view", "weak_view",
]
