"""Tests of the weak and strong views: alignment, padding, CutOut, label values, flips."""

import numpy as np
import tensorflow as tf

from wss.data import augment


def _seed(i):
    return tf.constant([i, 17], tf.int64)


def _blocks(h=20, w=30):
    """An image of flat coloured blocks and its label (class = block index), asymmetric."""
    label = np.zeros((h, w), np.int32)
    label[: h // 2, : w // 3] = 1
    label[h // 2:, w // 3: 2 * w // 3] = 2
    label[:, 2 * w // 3:] = 3
    label[h - 3:, : w // 3] = 255
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], np.uint8)
    image = colours[np.where(label == 255, 0, label)]
    return image, label


def test_strength_zero_without_cutout_is_identity():
    image, label = _blocks()
    for i in range(5):
        weak = augment.weak_view(image, label, _seed(i), crop_size=(24, 24))
        strong = augment.strong_view(weak["image"], weak["valid"], _seed(i + 100),
                                     strength=0.0, cutout_size=0)
        np.testing.assert_array_equal(strong["strong"].numpy(), weak["image"].numpy())
        np.testing.assert_array_equal(strong["strong_valid"].numpy(), weak["valid"].numpy())


def _one_strong_value_per_weak_value(weak, strong, valid):
    w = weak[valid > 0].reshape(-1, 3)
    s = strong[valid > 0].reshape(-1, 3)
    keys = np.round(w, 3)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    worst = 0.0
    for g in range(inverse.max() + 1):
        group = s[inverse == g]
        worst = max(worst, float(np.abs(group - group[0]).max()))
    return worst


def test_jitter_is_one_pixelwise_map_of_the_weak_view():
    """Jitter is a per-pixel colour map with per-image parameters, so in an aligned pair pixels
    of equal weak colour have equal strong colour. A shift of one pixel breaks this (checked),
    so the test detects misalignment, flips or crops that differ between the views."""
    image, label = _blocks()
    for i in range(4):
        weak = augment.weak_view(image, label, _seed(i), crop_size=(32, 32))
        strong = augment.strong_view(weak["image"], weak["valid"], _seed(i + 50),
                                     strength=1.0, cutout_size=0)
        w, s, v = weak["image"].numpy(), strong["strong"].numpy(), weak["valid"].numpy()
        assert np.abs(s - w).max() > 1.0  # the jitter did something
        assert _one_strong_value_per_weak_value(w, s, v) < 0.5
        shifted = np.roll(s, 1, axis=1)
        assert _one_strong_value_per_weak_value(w, shifted, v) > 5.0
        # Padding stays the mean pixel in both views.
        np.testing.assert_array_equal(s[v == 0], 127.5)
        np.testing.assert_array_equal(w[v == 0], 127.5)


def test_cutout_fraction_scales_the_square_to_the_crop():
    for side, fraction in ((40, 0.25), (97, 0.25), (65, 0.2)):
        image, label = _blocks(side, side)
        weak = augment.weak_view(image, label, _seed(3), crop_size=(side, side), min_scale=1.0,
                                 max_scale=1.0)
        fractional = augment.strong_view(weak["image"], weak["valid"], _seed(4), strength=0.0,
                                         cutout_size=3, cutout_fraction=fraction)
        absolute = augment.strong_view(weak["image"], weak["valid"], _seed(4), strength=0.0,
                                       cutout_size=int(round(fraction * side)))
        np.testing.assert_array_equal(fractional["strong_valid"], absolute["strong_valid"])


def test_cutout_square_only_in_strong_valid():
    image, label = _blocks(40, 40)
    weak = augment.weak_view(image, label, _seed(3), crop_size=(40, 40), min_scale=1.0,
                             max_scale=1.0)
    strong = augment.strong_view(weak["image"], weak["valid"], _seed(4), strength=0.0,
                                 cutout_size=10)
    valid = weak["valid"].numpy()
    sv = strong["strong_valid"].numpy()
    cut = (valid == 1) & (sv == 0)
    assert 0 < cut.sum() <= 100
    rows, cols = np.nonzero(cut)
    assert rows.max() - rows.min() < 10 and cols.max() - cols.min() < 10
    assert np.all(sv <= valid)
    np.testing.assert_array_equal(strong["strong"].numpy()[cut], 127.5)
    assert np.all(valid == 1)  # weak valid untouched


def test_cutout_mask_size_and_clipping():
    for i in range(20):
        mask = augment.cutout_mask(50, 60, _seed(i), size=10).numpy()
        holes = (mask == 0).sum()
        assert 0 < holes <= 100
    assert (augment.cutout_mask(50, 60, _seed(0), size=0).numpy() == 1).all()


def test_padding_is_invalid_and_ignored():
    image, label = _blocks(10, 12)
    weak = augment.weak_view(image, label, _seed(0), crop_size=(24, 24), min_scale=1.0,
                             max_scale=1.0)
    valid = weak["valid"].numpy()
    assert valid.sum() == 10 * 12
    np.testing.assert_array_equal(weak["label"].numpy()[valid == 0], 255)
    np.testing.assert_array_equal(weak["image"].numpy()[valid == 0], 127.5)


def test_labels_keep_their_values_through_scaling():
    rng = np.random.default_rng(0)
    label = rng.choice([0, 3, 7, 255], size=(20, 30)).astype(np.int32)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for i in range(10):
        weak = augment.weak_view(image, label, _seed(i), crop_size=(32, 32))
        assert set(np.unique(weak["label"].numpy())) <= {0, 3, 7, 255}


def test_flip_moves_image_label_and_valid_together():
    image, label = _blocks(10, 12)
    colours = {tuple(image[label == c][0]): c for c in (1, 2, 3)}
    seen_left = seen_right = False
    for i in range(12):
        weak = augment.weak_view(image, label, _seed(i), crop_size=(16, 16), min_scale=1.0,
                                 max_scale=1.0)
        img, lab, valid = (weak[k].numpy() for k in ("image", "label", "valid"))
        cols = np.nonzero(valid.any(axis=0))[0]
        if cols.min() == 0:
            seen_left = True
        else:
            seen_right = True
            assert cols.max() == 15
        # Every real pixel's label agrees with its colour.
        for (r, c) in zip(*np.nonzero(valid)):
            expected = colours.get(tuple(img[r, c].astype(np.uint8)))
            if expected is not None and lab[r, c] != 255:
                assert lab[r, c] == expected
        assert (lab[valid == 0] == 255).all()
    assert seen_left and seen_right


def test_same_seed_same_views():
    image, label = _blocks()
    a = augment.weak_view(image, label, _seed(9), crop_size=(24, 24))
    b = augment.weak_view(image, label, _seed(9), crop_size=(24, 24))
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    sa = augment.strong_view(a["image"], a["valid"], _seed(1))
    sb = augment.strong_view(b["image"], b["valid"], _seed(1))
    np.testing.assert_array_equal(sa["strong"].numpy(), sb["strong"].numpy())


def test_scale_factors_match_deeplab():
    np.testing.assert_allclose(augment.scale_factors(0.5, 2.0, 0.25).numpy(),
                               [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])


def test_crop_first_weak_view_equals_scale_pad_crop_flip():
    """The weak view resamples only the crop; it matches the full DeepLab composition."""
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, (37, 50, 3), dtype=np.uint8))
    label = tf.constant(rng.integers(0, 21, (37, 50)).astype(np.int32))
    for i in range(20):
        seed = _seed(i)
        got = augment.weak_view(image, label, seed, crop_size=(48, 48))
        s_scale, s_crop, s_flip = augment._split(seed, 3)
        x, lab = augment.random_scale(tf.cast(image, tf.float32), label, s_scale)
        x, lab, v = augment.pad_to_size(x, lab, 48, 48)
        x, lab, v = augment.random_crop([x, lab, v], 48, 48, s_crop)
        x, lab, v = augment.random_flip([x, lab, v], s_flip)
        np.testing.assert_allclose(got["image"].numpy(), x.numpy(), atol=0.01)
        np.testing.assert_array_equal(got["label"].numpy(), lab.numpy())
        np.testing.assert_array_equal(got["valid"].numpy(), v.numpy())


def test_weak_view_equals_scale_pad_crop_flip_at_every_scale():
    """Each resampling path (shrink: ScaleAndTranslate; no scaling: slice; enlarge:
    ResizeBilinear of the whole image), with and without padding and flip, against the plain
    DeepLab composition: labels and valid masks exactly, images to float rounding."""
    rng = np.random.default_rng(1)
    image = tf.constant(rng.integers(0, 256, (37, 50, 3), dtype=np.uint8))
    label = tf.constant(rng.integers(0, 21, (37, 50)).astype(np.int32))
    flips = set()
    for scale in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
        for crop in ((48, 48), (24, 40), (40, 64)):
            for i in range(4):
                seed = _seed(100 * i + int(scale * 4))
                got = augment.weak_view(image, label, seed, crop_size=crop, min_scale=scale,
                                        max_scale=scale)
                s_scale, s_crop, s_flip = augment._split(seed, 3)
                x, lab = augment.random_scale(tf.cast(image, tf.float32), label, s_scale,
                                              scale, scale)
                x, lab, v = augment.pad_to_size(x, lab, *crop)
                x, lab, v = augment.random_crop([x, lab, v], *crop, s_crop)
                flipped = bool(tf.random.stateless_uniform([], s_flip) < 0.5)
                flips.add(flipped)
                x, lab, v = augment.random_flip([x, lab, v], s_flip)
                np.testing.assert_allclose(got["image"].numpy(), x.numpy(), atol=2e-3)
                np.testing.assert_array_equal(got["label"].numpy(), lab.numpy())
                np.testing.assert_array_equal(got["valid"].numpy(), v.numpy())
    assert flips == {True, False}


def _ref_color_jitter(image, seed, valid, brightness, contrast, saturation, hue, max_value):
    """The previous `color_jitter` (tf.image ops in a random order), kept as the reference."""
    seeds = augment._split(seed, 5)
    ops = []
    if brightness > 0:
        delta = tf.random.stateless_uniform([], seeds[0], -brightness, brightness) * max_value
        ops.append(lambda x: x + delta)
    if contrast > 0:
        factor = tf.random.stateless_uniform([], seeds[1], 1.0 - contrast, 1.0 + contrast)
        ops.append(lambda x: x * factor + augment._masked_mean(x, valid) * (1.0 - factor))
    if saturation > 0:
        factor_s = tf.random.stateless_uniform(
            [], seeds[2], max(1.0 - saturation, 0.0), 1.0 + saturation)
        ops.append(lambda x: tf.image.adjust_saturation(x, factor_s))
    if hue > 0:
        delta_h = tf.random.stateless_uniform([], seeds[3], -hue, hue)
        ops.append(lambda x: tf.image.adjust_hue(x, delta_h))
    if len(ops) == 1:
        return tf.clip_by_value(ops[0](image), 0.0, max_value)
    order = tf.argsort(tf.random.stateless_uniform([len(ops)], seeds[4])).numpy()
    for position in order:
        image = tf.clip_by_value(ops[position](image), 0.0, max_value)
    return image


def test_color_jitter_equals_tf_image_reference():
    rng = np.random.default_rng(4)
    image = tf.constant(rng.random((12, 16, 3)), tf.float32)
    valid = tf.ones([12, 16], tf.float32)
    for i in range(6):
        for amounts in ((0.5, 0.5, 0.5, 0.25), (0.0, 0.0, 0.8, 0.0), (0.3, 0.0, 0.0, 0.4)):
            want = _ref_color_jitter(image, _seed(i), valid, *amounts, max_value=1.0)
            got = augment.color_jitter(image, _seed(i), None, *amounts, max_value=1.0)
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def _ref_strong_view(image, valid, seed, strength=1.0, jitter_prob=1.0, cutout_size=100,
                     cutout_fill=127.5):
    """The previous `strong_view` (plain TF ops), kept as the reference."""
    s_prob, s_jitter, s_cut = augment._split(seed, 3)
    strong = image
    if strength > 0:
        strong = _ref_color_jitter(image, s_jitter, valid, 0.5 * strength, 0.5 * strength,
                                   0.5 * strength, 0.25 * strength, 255.0)
        if jitter_prob < 1.0 and not tf.random.stateless_uniform([], s_prob) < jitter_prob:
            strong = image
    strong_valid = valid
    if cutout_size > 0:
        strong_valid = valid * augment.cutout_mask(*valid.shape, s_cut, cutout_size)
    if strength > 0:
        strong = tf.where(valid[:, :, None] > 0, strong, 127.5)
    if cutout_size > 0:
        cut = tf.logical_and(valid > 0, strong_valid == 0)
        strong = tf.where(cut[:, :, None], cutout_fill, strong)
    return strong, strong_valid


def test_strong_view_equals_previous_implementation():
    """Closed-form planar jitter (XLA-compiled or not) against the tf.image reference."""
    rng = np.random.default_rng(2)
    low = rng.integers(0, 256, (6, 8, 3)).astype(np.float32)
    image = tf.cast(tf.image.resize(low[None], (40, 50), method="bicubic")[0], tf.uint8)
    label = tf.zeros([40, 50], tf.int32)
    configs = [dict(), dict(jitter_prob=0.5, cutout_fill=0.0), dict(strength=0.5, cutout_size=0),
               dict(strength=2.0, cutout_size=7)]
    for i in range(6):
        weak = augment.weak_view(image, label, _seed(i), crop_size=(48, 56))
        for config in configs:
            want, want_valid = _ref_strong_view(weak["image"], weak["valid"], _seed(i + 9),
                                                **config)
            for jit_compile in (True, False):
                got = augment.strong_view(weak["image"], weak["valid"], _seed(i + 9),
                                          jit_compile=jit_compile, **config)
                np.testing.assert_allclose(got["strong"].numpy(), want.numpy(), atol=2e-3)
                np.testing.assert_array_equal(got["strong_valid"].numpy(), want_valid.numpy())


def test_closed_form_hue_and_saturation_match_tf_image():
    rng = np.random.default_rng(3)
    pixels = rng.uniform(0, 255, (500, 3)).astype(np.float32)
    special = np.array([[0, 0, 0], [255, 255, 255], [10, 10, 10], [200, 200, 10],
                        [200, 10, 200], [10, 200, 200], [255, 0, 0], [0, 255, 0], [0, 0, 255],
                        [100, 50, 50], [50, 100, 100], [0, 0, 1]], np.float32)
    image = tf.constant(np.concatenate([pixels, special])[None])  # [1, N, 3]
    planes = tf.transpose(image, [2, 0, 1])
    for delta in (-0.25, -0.1, 0.0, 0.07, 0.25, 0.5):
        got = tf.transpose(augment._hue_planar(planes, delta), [1, 2, 0])
        np.testing.assert_allclose(got.numpy(), tf.image.adjust_hue(image, delta).numpy(),
                                   atol=1e-3)
    for factor in (0.0, 0.5, 0.9, 1.0, 1.3, 1.5, 3.0):
        got = tf.transpose(augment._saturation_planar(planes, factor), [1, 2, 0])
        np.testing.assert_allclose(got.numpy(),
                                   tf.image.adjust_saturation(image, factor).numpy(), atol=1e-3)


def test_cutmix_mask_is_one_box_of_the_area_inside_the_crop():
    height, width = 33, 41
    areas = []
    for i in range(20):
        keep = augment.cutmix_mask(height, width, _seed(i), area=0.5).numpy()
        assert set(np.unique(keep)) <= {0.0, 1.0}
        rows, cols = np.nonzero(keep == 0)
        box_h, box_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == box_h * box_w  # One solid rectangle.
        assert 0.5 <= box_h / box_w * width / height <= 2.0 + 0.2  # Aspect in [1/2, 2] (rounded).
        areas.append(len(rows) / (height * width))
    assert 0.4 < np.mean(areas) < 0.55  # Clipping at the borders only shrinks the box.
    assert len({augment.cutmix_mask(height, width, _seed(i), 0.5).numpy().tobytes()
                for i in range(5)}) > 1  # Boxes move with the seed.


def test_strong_view_with_cutmix_keeps_the_views_of_the_same_seed():
    image, label = _blocks()
    weak = augment.weak_view(image, label, _seed(3), crop_size=(24, 24))
    plain = augment.strong_view(weak["image"], weak["valid"], _seed(4),
                                augment.StrongViewConfig(cutout_size=6))
    mixed = augment.strong_view(weak["image"], weak["valid"], _seed(4),
                                augment.StrongViewConfig(cutout_size=6, cutmix_area=0.3))
    assert "mix_mask" not in plain
    for key in ("strong", "strong_valid"):
        np.testing.assert_array_equal(plain[key].numpy(), mixed[key].numpy())
    assert mixed["mix_mask"].shape == (24, 24)
    assert 0 < mixed["mix_mask"].numpy().sum() < 24 * 24


def test_cutmix_area_out_of_range_names_the_field():
    import pytest

    with pytest.raises(ValueError, match="StrongViewConfig.cutmix_area"):
        augment.StrongViewConfig(cutmix_area=1.0)
    with pytest.raises(ValueError, match="StrongViewConfig.cutmix_area"):
        augment.StrongViewConfig(cutmix_area=-0.1)
