"""Numpy drawing primitives of the synthetic datasets: shapes, textures, colours, backgrounds.

Shared by the segmentation sets (`wss.data.synthetic`) and the classification set used for
pretraining (`wss.data.synthetic_classification`), so that the classification set's categories
include the segmentation classes' shapes and textures drawn by the very same code, as
ImageNet's categories include VOC's.

Every function draws from a `numpy.random.Generator` passed in, so an image depends only on its
generator's seed.
"""

import numpy as np

# Shapes `shape_mask` can draw. The first five are the built-in segmentation set's.
SHAPES = ("disk", "square", "triangle", "ring", "cross", "hexagon", "star", "ellipse",
          "crescent", "pentagon", "frame", "semicircle", "ell", "arrow")
# Textures `texture` can draw ('dots' is also the built-in set's background clutter).
TEXTURES = ("stripes", "checker", "dots", "grid", "solid")


def smooth_noise(rng, height, width, cells, channels):
    """Bilinearly upsampled uniform noise: a smooth random field in [0, 1].

    Args:
      rng: numpy Generator.
      height: rows of the field.
      width: columns of the field.
      cells: grid cells along each side (more cells, finer structure).
      channels: channels of the field.

    Returns:
      float64 `[height, width, channels]`.
    """
    grid = rng.random((cells + 1, cells + 1, channels))
    ys = np.linspace(0, cells, height)
    xs = np.linspace(0, cells, width)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def random_colour_pair(rng):
    """Two RGB colours (float, 0..255) that differ clearly in luminance or in one channel."""
    while True:
        a, b = rng.uniform(0, 255, size=(2, 3))
        if abs(a.mean() - b.mean()) > 60 or np.abs(a - b).max() > 120:
            return a, b


def texture(rng, name, yy, xx, axis_aligned=False, scale=1.0):
    """A binary texture pattern over pixel coordinates.

    Args:
      rng: numpy Generator.
      name: one of `TEXTURES`.
      yy: float array of row coordinates.
      xx: float array of column coordinates, same shape.
      axis_aligned: stripes, checker and grid horizontal or vertical only (else any angle;
        dots always take any angle).
      scale: multiplies the texture's period (1.0 is tuned for 64-96 px images).

    Returns:
      A bool array of the coordinates' shape (True: the texture's first colour).

    Raises:
      ValueError: for an unknown texture.
    """
    if name == "solid":
        return np.ones_like(yy, dtype=bool)
    if name == "dots" or not axis_aligned:
        angle = rng.uniform(0, np.pi)
    else:
        angle = rng.integers(0, 2) * (np.pi / 2)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if name == "stripes":
        period = rng.uniform(6.0, 10.0) * scale
        return np.mod(u, period) < period / 2
    if name == "checker":
        size = rng.uniform(5.0, 8.0) * scale
        return (np.floor(u / size) + np.floor(v / size)) % 2 == 0
    if name == "dots":
        size = rng.uniform(4.0, 7.0) * scale
        du = np.mod(u, size) - size / 2
        dv = np.mod(v, size) - size / 2
        return du * du + dv * dv < (size / 3.2) ** 2
    if name == "grid":
        size = rng.uniform(6.0, 9.0) * scale
        return (np.mod(u, size) < 1.6) | (np.mod(v, size) < 1.6)
    raise ValueError(f"unknown texture {name!r}")


def _regular_polygon(rx, ry, radius, sides):
    """Inside a regular polygon with `sides` sides whose inradius is `radius * cos(pi / n)`."""
    inside = np.ones_like(rx, dtype=bool)
    apothem = radius * np.cos(np.pi / sides)
    for k in range(sides):
        theta = 2 * np.pi * k / sides
        inside &= rx * np.cos(theta) + ry * np.sin(theta) <= apothem
    return inside


def shape_mask(shape, yy, xx, cy, cx, radius, angle):
    """Boolean mask of one shape centred at (cy, cx) with the given size and rotation.

    Args:
      shape: one of `SHAPES`.
      yy: float array of row coordinates.
      xx: float array of column coordinates.
      cy: centre row.
      cx: centre column.
      radius: the shape's size in pixels (about its circumradius).
      angle: rotation in radians.

    Returns:
      A bool array of the coordinates' shape.

    Raises:
      ValueError: for an unknown shape.
    """
    dy, dx = yy - cy, xx - cx
    ry = dx * np.sin(angle) + dy * np.cos(angle)
    rx = dx * np.cos(angle) - dy * np.sin(angle)
    dist = np.sqrt(dx * dx + dy * dy)
    if shape == "disk":
        return dist <= radius
    if shape == "ring":
        return (dist <= radius) & (dist >= 0.55 * radius)
    if shape == "square":
        half = radius * 0.85
        return (np.abs(rx) <= half) & (np.abs(ry) <= half)
    if shape == "frame":
        half = radius * 0.85
        outer = (np.abs(rx) <= half) & (np.abs(ry) <= half)
        return outer & ~((np.abs(rx) <= 0.5 * half) & (np.abs(ry) <= 0.5 * half))
    if shape == "cross":
        arm = radius * 0.33
        return ((np.abs(rx) <= radius) & (np.abs(ry) <= arm)) | (
            (np.abs(ry) <= radius) & (np.abs(rx) <= arm))
    if shape == "triangle":
        # Equilateral triangle: inside all three half-planes at distance radius/2 from centre.
        inside = np.ones_like(dist, dtype=bool)
        for k in range(3):
            theta = 2 * np.pi * k / 3
            inside &= rx * np.cos(theta) + ry * np.sin(theta) <= radius * 0.5
        return inside
    if shape == "hexagon":
        return _regular_polygon(rx, ry, radius, 6)
    if shape == "pentagon":
        return _regular_polygon(rx, ry, radius, 5)
    if shape == "star":
        # Five points: the radius oscillates between 0.45 r and r with the polar angle.
        phi = np.arctan2(ry, rx)
        wave = np.abs(np.mod(phi * 5 / (2 * np.pi), 1.0) - 0.5) * 2  # 1 at the points
        return dist <= radius * (0.45 + 0.55 * wave)
    if shape == "ellipse":
        return (rx / radius) ** 2 + (ry / (0.5 * radius)) ** 2 <= 1.0
    if shape == "crescent":
        return (dist <= radius) & (np.hypot(rx - 0.45 * radius, ry) > 0.8 * radius)
    if shape == "semicircle":
        return (dist <= radius) & (ry <= 0.15 * radius)
    if shape == "ell":
        arm = radius * 0.38
        vertical = (np.abs(rx + radius * 0.5) <= arm) & (np.abs(ry) <= radius)
        horizontal = (ry >= radius - 2 * arm) & (ry <= radius) & (np.abs(rx) <= radius)
        return vertical | horizontal
    if shape == "arrow":
        shaft = (rx >= -radius) & (rx <= 0.1 * radius) & (np.abs(ry) <= 0.25 * radius)
        head = (rx >= 0.0) & (rx <= radius) & (np.abs(ry) <= 0.75 * (radius - rx))
        return shaft | head
    raise ValueError(f"unknown shape {shape!r}")


def textured_background(rng, height, width, noise=8.0):
    """Two smooth colour fields mixed by a smooth noise field, plus pixel noise.

    Args:
      rng: numpy Generator.
      height: image rows.
      width: image columns.
      noise: standard deviation of the added pixel noise.

    Returns:
      float64 `[height, width, 3]` in about [0, 255].
    """
    base = smooth_noise(rng, height, width, int(rng.integers(2, 5)), 3) * 255
    other = smooth_noise(rng, height, width, int(rng.integers(3, 8)), 3) * 255
    mix = smooth_noise(rng, height, width, int(rng.integers(2, 6)), 1)
    image = base * mix + other * (1 - mix)
    return image + rng.normal(0, noise, size=image.shape)


def draw_clutter(rng, image, yy, xx, blob_texture="dots", max_lines=2, blob_scale=1.0):
    """Background clutter: one irregular textured blob and up to `max_lines` straight lines.

    Args:
      rng: numpy Generator.
      image: float `[H, W, 3]`, drawn on in place.
      yy: float row coordinates `[H, W]`.
      xx: float column coordinates `[H, W]`.
      blob_texture: texture of the blob (one of `TEXTURES`).
      max_lines: at most this many lines (at least 0).
      blob_scale: multiplies the blob's radius (6-16 px).
    """
    height, width = yy.shape
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    blob = smooth_noise(rng, height, width, 6, 1)[..., 0]
    radius = rng.uniform(6, 16) * blob_scale
    region = np.hypot(yy - cy, xx - cx) < radius * (0.6 + 0.8 * blob)
    a, b = random_colour_pair(rng)
    pattern = texture(rng, blob_texture, yy, xx)
    image[region & pattern] = a
    image[region & ~pattern] = b
    for _ in range(int(rng.integers(0, max_lines + 1))):
        y0, x0, y1, x1 = rng.uniform(0, max(height, width), size=4)
        length = max(np.hypot(y1 - y0, x1 - x0), 1e-6)
        dist = np.abs((x1 - x0) * (y0 - yy) - (x0 - xx) * (y1 - y0)) / length
        image[dist < rng.uniform(0.6, 1.8)] = rng.uniform(0, 255, size=3)
