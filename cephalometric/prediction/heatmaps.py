"""Heatmap decoding and the crop geometry, vectorised: MMPose's arithmetic without its loops.

`warp_matrix` is MMPose's get_warp_matrix without rotation (the face box onto the network input);
`decode_heatmaps` is MSRAHeatmap.decode (argmax, then DARK or the quarter-pixel shift) for a whole
batch at once. A heatmap holding NaN or infinity (a diverged or damaged model) gives no position
(NaN) and score 0, so the landmark is flagged for review and never used for a class;
`check_heatmaps` refuses an output that cannot be heatmaps of this model (one line).
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from cephalometric.errors import UserError

OPENCV_MAX_CHANNELS = 512


def check_heatmaps(heatmaps, batch: int, landmarks: int, input_size, source: str) -> np.ndarray:
    """The network's output as float32 (N, K, h, w) heatmaps of this batch, no larger than the
    input; UserError (one line) for any other shape or type."""
    shape = getattr(heatmaps, 'shape', None)
    width, height = input_size
    if (not isinstance(heatmaps, np.ndarray) or heatmaps.dtype.kind not in 'fiu'
            or heatmaps.ndim != 4 or shape[0] != batch or shape[1] != landmarks
            or not (1 <= shape[2] <= height and 1 <= shape[3] <= width)):
        what = (f'{tuple(shape)} {heatmaps.dtype}' if isinstance(heatmaps, np.ndarray)
                else type(heatmaps).__name__)
        raise UserError(f'{source}: the network gave {what} heatmaps for {batch} image(s) of '
                        f'{width}x{height}, not ({batch}, {landmarks}, h, w) with h and w from 1 '
                        'to the input size; export it again with export_onnx.py or pass a '
                        'checkpoint written by train_cephalometric.py')
    return heatmaps.astype(np.float32, copy=False)


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
    # A map with NaN or infinity anywhere says nothing: no position, score 0.
    broken = ~np.isfinite(maps).all(axis=(1, 2))
    if broken.any():
        maps = np.where(broken[:, None, None], np.float32(0), maps)
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
    keypoints = keypoints * scale_factor
    keypoints[broken] = np.nan
    scores[broken] = 0
    return keypoints.reshape(n, k, 2), scores.reshape(n, k)


def error_signal(spread, refine_shift=None, signal: str = 'spread',
                 refine_uncertainty=None, shape_deviation=None,
                 shape_weight: float = 0.0) -> Optional[np.ndarray]:
    """What the error calibration scales into an expected error, image pixels, by the
    calibration's `signal`:

    - 'spread': the landmark model's heatmap spread;
    - 'spread_and_refine_shift': its root-sum-square with how far the refinement model moved the
      point (calibrations measured before the refinement model's own uncertainty was used);
    - 'refine_uncertainty_and_shift': the root-sum-square of the refinement model's own
      uncertainty (`refinement.Refiner.postprocess`) and that shift. On held-out cephalograms and
      demo faces this ranked landmarks and images by their error clearly better than the
      landmark model's spread (docs/evaluation.md, Confidence); None without the refinement
      model (its calibration says nothing about the landmark model alone).

    `shape_deviation` (the image's, `model.shape_prior.ShapePrior.deviation`; (N, 1) for N
    images) times `shape_weight` is added to every landmark's signal as a root-sum-square: how
    unusual the whole tracing is (calibrations with a shape prior; where it is NaN, the signal
    alone).
    """
    spread = np.asarray(spread, np.float64)
    if signal == 'refine_uncertainty_and_shift':
        if refine_uncertainty is None or refine_shift is None:
            return None
        base = np.hypot(np.asarray(refine_uncertainty, np.float64),
                        np.asarray(refine_shift, np.float64))
    elif signal != 'spread_and_refine_shift' or refine_shift is None:
        base = spread
    else:
        base = np.hypot(spread, np.asarray(refine_shift, np.float64))
    if not shape_weight or shape_deviation is None:
        return base
    deviation = np.asarray(shape_deviation, np.float64)
    return np.where(np.isfinite(deviation), np.hypot(base, shape_weight * deviation), base)


def heatmap_spread(heatmaps: np.ndarray, radius: int = 4) -> np.ndarray:
    """How widely each heatmap's mass lies around its peak: the root-mean-square distance of the
    positive values within `radius` heatmap pixels of the argmax, in heatmap pixels (N, K).

    A sharp, single peak gives about the training sigma; a flat, smeared or two-peaked map a larger
    value, and a map with nothing positive near its peak the spread of a flat window. It is what
    the error calibration (`model.settings`'s error_calibration) scales into an expected error. A
    map with NaN or infinity gives NaN (it gives no position either).
    """
    n, k, h, w = heatmaps.shape
    maps = heatmaps.reshape(n * k, h, w).astype(np.float32)
    broken = ~np.isfinite(maps).all(axis=(1, 2))
    maps = np.clip(np.where(broken[:, None, None], np.float32(0), maps), 0, None)
    peak = maps.reshape(n * k, -1).argmax(1)
    py, px = peak // w, peak % w
    offsets = np.arange(-radius, radius + 1)
    ys = np.clip(py[:, None] + offsets, 0, h - 1)            # (M, 2r+1)
    xs = np.clip(px[:, None] + offsets, 0, w - 1)
    inside_y = (py[:, None] + offsets >= 0) & (py[:, None] + offsets < h)
    inside_x = (px[:, None] + offsets >= 0) & (px[:, None] + offsets < w)
    rows = np.arange(n * k)[:, None, None]
    window = maps[rows, ys[:, :, None], xs[:, None, :]]
    window = window * (inside_y[:, :, None] & inside_x[:, None, :])
    total = window.sum((1, 2))
    with np.errstate(invalid='ignore', divide='ignore'):
        cy = (window * ys[:, :, None]).sum((1, 2)) / total
        cx = (window * xs[:, None, :]).sum((1, 2)) / total
        second = (window * ((ys[:, :, None] - cy[:, None, None]) ** 2
                            + (xs[:, None, :] - cx[:, None, None]) ** 2)).sum((1, 2)) / total
    spread = np.sqrt(second)
    # No positive value near the peak: no peak at all, as unsure as the window can say (the
    # spread of a flat window); a broken map has no position, so no spread either.
    spread[~(total > 0)] = np.sqrt(2 * radius * (radius + 1) / 3)
    spread[broken] = np.nan
    return spread.reshape(n, k)


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
        # OpenCV drops a single channel's axis: put it back.
        padded[..., start:start + OPENCV_MAX_CHANNELS] = cv2.GaussianBlur(
            part, (kernel, kernel), 0).reshape(part.shape)
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
    with np.errstate(over='ignore', invalid='ignore'):   # huge finite maps: no refinement
        offsets = -np.stack([dyy * dx - dxy * dy, dxx * dy - dxy * dx], 1) / safe[:, None]
    usable = (det != 0)[:, None] & np.isfinite(offsets)
    return np.where(usable, offsets, 0).astype(np.float32)
