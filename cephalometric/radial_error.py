"""Radial-error statistics: one copy, used by the training metric (`metric.MeanRadialError`) and by
evaluate.py (`evaluation.statistics`). Pure functions of arrays; imports numpy only.

The field reports cephalometric accuracy as the Mean Radial Error (MRE, the mean Euclidean distance
between predicted and true landmark), its standard deviation (SD), and the Successful Detection Rate
(SDR: the percentage of landmarks within 2, 2.5, 3 and 4 mm). Millimetres need the pixel spacing,
which varies per image; images without it count only in the pixel figures.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def radial_errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Euclidean distance per landmark: (N, K, 2) x 2 -> (N, K)."""
    return np.linalg.norm(np.asarray(pred, float) - np.asarray(truth, float), axis=-1)


def _format_radius(radius: float) -> str:
    return f'{radius:g}'


def summarize_radial_errors(errors_px: np.ndarray,
                            visible: np.ndarray,
                            mm_per_pixel: Optional[np.ndarray] = None,
                            names: Optional[Sequence[str]] = None,
                            sdr_radii_mm: Sequence[float] = (2.0, 2.5, 3.0, 4.0),
                            sdr_radii_px: Sequence[float] = (2.0, 4.0, 6.0, 8.0),
                            per_landmark: bool = True) -> dict:
    """MRE/SD/SDR overall and per landmark.

    Args:
        errors_px: (N, K) radial errors in pixels of the original images.
        visible: (N, K) bool; invisible (unannotated) landmarks are ignored everywhere.
        mm_per_pixel: (N,) spacing per image, NaN where unknown; None when no image has it.
        names: K landmark names for the per-landmark keys (default: '0', '1', ...).

    Returns keys: 'MRE', 'SD' (px); when some image has spacing 'MRE_mm', 'SD_mm' and
    'SDR@<r>mm' (percent, over images with spacing), otherwise 'SDR@<r>px'; per landmark
    'MRE/<name>' in px and, with spacing, 'MRE_mm/<name>'. Empty selections give NaN.
    """
    errors_px = np.asarray(errors_px, float)
    visible = np.asarray(visible, bool) & np.isfinite(errors_px)
    num_images, num_keypoints = errors_px.shape
    names = list(names) if names is not None else [str(i) for i in range(num_keypoints)]
    spacing = (np.full(num_images, np.nan) if mm_per_pixel is None
               else np.asarray(mm_per_pixel, float).reshape(num_images))
    has_spacing = np.isfinite(spacing) & (spacing > 0)

    def mean(values):
        return float(np.mean(values)) if values.size else float('nan')

    def std(values):
        return float(np.std(values)) if values.size else float('nan')

    result = {'MRE': mean(errors_px[visible]), 'SD': std(errors_px[visible])}
    errors_mm = errors_px * np.where(has_spacing, spacing, np.nan)[:, None]
    visible_mm = visible & has_spacing[:, None]
    if has_spacing.any():
        selected = errors_mm[visible_mm]
        result['MRE_mm'] = mean(selected)
        result['SD_mm'] = std(selected)
        for radius in sdr_radii_mm:
            result[f'SDR@{_format_radius(radius)}mm'] = (
                100.0 * mean((selected <= radius).astype(float)))
    else:
        selected = errors_px[visible]
        for radius in sdr_radii_px:
            result[f'SDR@{_format_radius(radius)}px'] = (
                100.0 * mean((selected <= radius).astype(float)))
    if per_landmark:
        for k, name in enumerate(names):
            result[f'MRE/{name}'] = mean(errors_px[visible[:, k], k])
        if has_spacing.any():
            for k, name in enumerate(names):
                result[f'MRE_mm/{name}'] = mean(errors_mm[visible_mm[:, k], k])
    return result
