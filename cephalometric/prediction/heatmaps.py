"""Heatmap decoding and the crop geometry, vectorised: MMPose's arithmetic without its loops.

`warp_matrix` is MMPose's get_warp_matrix without rotation (the face box onto the network input);
`decode_heatmaps` is MSRAHeatmap.decode (argmax, then DARK or the quarter-pixel shift) for a whole
batch at once.
"""
from __future__ import annotations

import cv2
import numpy as np

OPENCV_MAX_CHANNELS = 512


def warp_matrix(center: np.ndarray, scale: np.ndarray, size) -> np.ndarray:
    """MMPose's get_warp_matrix without rotation: the box (center, w/h) onto a (w, h) input."""
    w, h = size
    src = np.float32([center, center + [-0.5 * scale[0], 0.0]])
    dst = np.float32([[0.5 * w, 0.5 * h], [0.0, 0.5 * h]])
    # Third point: b + (a - b) turned by 90 degrees, as MMPose's _get_3rd_point.
    src, dst = (np.vstack([p, p[1] + [p[1, 1] - p[0, 1], p[0, 0] - p[1, 0]]]) for p in (src, dst))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def decode_heatmaps(heatmaps: np.ndarray, input_size, unbiased: bool = True,
                    blur_kernel_size: int = 11):
    """MSRAHeatmap.decode for a whole batch at once.

    (N, K, H, W) heatmaps -> keypoints (N, K, 2) in input pixels and scores (N, K). Same arithmetic
    as MMPose (argmax; DARK: Gaussian-modulated log-heatmap and one Newton step; else a quarter
    pixel towards the higher neighbour), without its per-keypoint Python loop.
    """
    n, k, h, w = heatmaps.shape
    maps = heatmaps.reshape(n * k, h, w).astype(np.float32)
    flat = maps.reshape(n * k, h * w)
    index = flat.argmax(1)
    scores = flat.max(1)
    x, y = index % w, index // w
    keypoints = np.stack([x, y], 1).astype(np.float32)
    keypoints[scores <= 0] = -1
    if unbiased:
        inside = (scores > 0) & (1 < x) & (x < w - 2) & (1 < y) & (y < h - 2)
        keypoints[inside] += _dark_offsets(maps, x[inside], y[inside], inside, blur_kernel_size)
    else:
        ok = scores > 0
        xs, ys = np.where(ok, x, 1), np.where(ok, y, 1)  # any in-range index where not used
        rows = np.arange(n * k)
        dx = np.where(ok & (1 < x) & (x < w - 1) & (0 < y),
                      maps[rows, ys, np.minimum(xs + 1, w - 1)] - maps[rows, ys, xs - 1], 0)
        dy = np.where(ok & (1 < y) & (y < h - 1) & (0 < x),
                      maps[rows, np.minimum(ys + 1, h - 1), xs] - maps[rows, ys - 1, xs], 0)
        keypoints += np.sign(np.stack([dx, dy], 1)).astype(np.float32) * 0.25
    scale_factor = (np.asarray(input_size) / [w, h]).astype(np.float32)
    return (keypoints * scale_factor).reshape(n, k, 2), scores.reshape(n, k)


def _dark_offsets(maps, x, y, inside, kernel: int) -> np.ndarray:
    """Sub-pixel offsets of DARK (MMPose's gaussian_blur + refine_keypoints_dark) at (x, y)."""
    maps = maps[inside]
    m, h, w = maps.shape
    border = (kernel - 1) // 2
    padded = np.zeros((h + 2 * border, w + 2 * border, m), np.float32)  # zero border, as MMPose
    inner = (slice(border, border + h), slice(border, border + w))   # kernel 1: no border
    padded[inner] = maps.transpose(1, 2, 0)
    for start in range(0, m, OPENCV_MAX_CHANNELS):
        part = np.ascontiguousarray(padded[..., start:start + OPENCV_MAX_CHANNELS])
        padded[..., start:start + OPENCV_MAX_CHANNELS] = cv2.GaussianBlur(part, (kernel, kernel), 0)
    blurred = padded[inner].transpose(2, 0, 1)
    with np.errstate(divide='ignore', invalid='ignore'):
        blurred = blurred * (maps.max((1, 2)) / blurred.max((1, 2)))[:, None, None]
    log = np.log(np.maximum(blurred, 1e-10))
    rows = np.arange(m)

    def at(dy, dx):
        return log[rows, y + dy, x + dx]

    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    det = dxx * dyy - dxy ** 2
    safe = np.where(det != 0, det, 1)
    offsets = -np.stack([dyy * dx - dxy * dy, dxx * dy - dxy * dx], 1) / safe[:, None]
    return np.where((det != 0)[:, None], offsets, 0).astype(np.float32)
