"""Colour palettes, coloured masks, overlays and palette PNG files.

The PASCAL palette is the standard bit-interleaved one that VOC's own PNGs use (class 255, the
ignore label, is drawn white here); Cityscapes uses its 19 train-class colours. Palette PNGs
are written with the standard library (zlib), so `wss.predict` needs no Pillow.
"""

import struct
import zlib

import numpy as np
import tensorflow as tf

CITYSCAPES_COLOURS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


def pascal_palette():
    """The 256-entry PASCAL VOC palette (uint8 [256, 3]); entry 255 is white."""
    palette = np.zeros((256, 3), np.int64)
    index = np.arange(256)
    for shift in range(7, -1, -1):
        for channel in range(3):
            palette[:, channel] |= ((index >> channel) & 1) << shift
        index >>= 3
    palette[255] = (255, 255, 255)
    return palette.astype(np.uint8)


def cityscapes_palette():
    """Cityscapes' train-class colours in a 256-entry palette (uint8 [256, 3])."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(CITYSCAPES_COLOURS)] = CITYSCAPES_COLOURS
    palette[255] = (255, 255, 255)
    return palette


def get_palette(name="pascal"):
    """Returns a palette by name: `pascal` (VOC, COCO, synthetic) or `cityscapes`.

    Raises:
      ValueError: for an unknown name.
    """
    if name == "pascal":
        return pascal_palette()
    if name == "cityscapes":
        return cityscapes_palette()
    raise ValueError(f"unknown palette {name!r}; use 'pascal' or 'cityscapes'")


def colorize(labels, palette):
    """Maps integer labels `[..., H, W]` to colours `[..., H, W, 3]` (uint8), in TensorFlow.

    Args:
      labels: integer tensor; values are taken modulo 256.
      palette: uint8 array [256, 3].

    Returns:
      uint8 tensor of colours.
    """
    labels = tf.math.floormod(tf.cast(labels, tf.int32), 256)
    return tf.gather(tf.constant(palette, tf.uint8), labels)


def overlay(image, labels, palette, alpha=0.5):
    """Blends a coloured mask over an image.

    Args:
      image: uint8 or float [H, W, 3] in [0, 255].
      labels: integer [H, W].
      palette: uint8 [256, 3].
      alpha: weight of the mask colour; background (class 0) pixels stay unblended.

    Returns:
      uint8 tensor [H, W, 3].
    """
    image = tf.cast(image, tf.float32)
    colours = tf.cast(colorize(labels, palette), tf.float32)
    foreground = tf.cast(tf.not_equal(labels, 0), tf.float32)[..., None] * alpha
    blended = image * (1.0 - foreground) + colours * foreground
    return tf.cast(tf.clip_by_value(tf.round(blended), 0, 255), tf.uint8)


def _png_chunk(kind, data):
    chunk = kind + data
    return struct.pack(">I", len(data)) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)


def encode_palette_png(labels, palette):
    """Encodes a label map as an 8-bit palette PNG, the format of VOC's masks.

    Args:
      labels: integer array [H, W] with values in 0..255.
      palette: uint8 array [256, 3].

    Returns:
      The PNG file's bytes.

    Raises:
      ValueError: for a non-2-D array or values outside 0..255.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("palette PNG labels must lie in 0..255")
    height, width = labels.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), labels.astype(np.uint8)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", header),
        _png_chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes()),
        _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
        _png_chunk(b"IEND", b""),
    ])
