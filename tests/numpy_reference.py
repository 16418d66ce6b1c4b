"""Float64 numpy references shared by the tests."""

import numpy as np


def numpy_bilinear_align_corners(x, out_h, out_w):
    """Bilinear resize of [B, H, W, C] with aligned corners, float64."""
    x = x.astype(np.float64)
    _, in_h, in_w, _ = x.shape

    def coords(n_out, n_in):
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = coords(out_h, in_h)
    x0, x1, fx = coords(out_w, in_w)
    fx = fx[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bottom = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    return top * (1 - fy)[None, :, None, None] + bottom * fy[None, :, None, None]
