"""How well stated errors match real ones: the numbers evaluate.py reports about confidence.

Pure functions of arrays. `expected` and `actual` are (N images, K landmarks) errors in one unit;
`radius90` the stated 90% radii; NaN entries (a landmark without truth or without a statement)
are left out of every number.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _spearman(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    from scipy.stats import spearmanr
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return None
    return float(spearmanr(a[keep], b[keep]).correlation)


def error_calibration(expected, actual, radius90) -> dict:
    """Spearman of expected against actual error (over all landmark positions, and of the per-image
    means), the share of true positions inside the 90% radius, and how many of the worst 10% of
    images (by actual mean error) are among the top 20% by expected mean error."""
    expected, actual, radius90 = (np.asarray(v, np.float64) for v in (expected, actual, radius90))
    per_image_expected = np.nanmean(np.where(np.isfinite(actual), expected, np.nan), axis=1)
    per_image_actual = np.nanmean(actual, axis=1)
    known = np.isfinite(actual) & np.isfinite(radius90)
    result = {
        'spearman_landmarks': _spearman(expected.ravel(), actual.ravel()),
        'spearman_images': _spearman(per_image_expected, per_image_actual),
        'radius90_coverage': float(np.mean(actual[known] <= radius90[known])) if known.any()
        else None,
        'worst10_in_top20': worst_in_top(per_image_expected, per_image_actual),
    }
    return result


def worst_in_top(expected: np.ndarray, actual: np.ndarray, worst: float = 0.1,
                 top: float = 0.2) -> Optional[float]:
    """Share of the `worst` fraction of images by actual error that rank in the `top` fraction by
    expected error (1.0: every bad image would be reviewed first)."""
    keep = np.isfinite(expected) & np.isfinite(actual)
    expected, actual = expected[keep], actual[keep]
    if len(actual) < 5:
        return None
    bad = np.argsort(-actual)[:max(1, int(round(worst * len(actual))))]
    first = set(np.argsort(-expected)[:max(1, int(round(top * len(actual))))].tolist())
    return float(np.mean([i in first for i in bad]))


def interval_coverage(intervals: Sequence, truth: Sequence) -> Optional[float]:
    """Share of true values inside their [low, high] (pairs with a missing side are left out)."""
    hits = [low <= value <= high for (low, high), value in zip(intervals, truth)
            if low is not None and high is not None and value is not None
            and np.isfinite([low, high, value]).all()]
    return float(np.mean(hits)) if hits else None


def brier_score(probabilities: Sequence[dict], truth: Sequence, classes=(1, 2, 3)) \
        -> Optional[float]:
    """Mean squared difference between class probabilities and the true class (0 is perfect,
    0.67 is a uniform guess over three classes); images without either are left out."""
    scores = []
    for probability, true_class in zip(probabilities, truth):
        if not probability or true_class is None:
            continue
        scores.append(sum((float(probability.get(c, 0.0)) - (c == true_class)) ** 2
                          for c in classes))
    return float(np.mean(scores)) if scores else None


def reliability(probabilities: Sequence[dict], truth: Sequence, bins: int = 5) -> list[dict]:
    """Reliability-diagram points: per bin of stated probability (of every class of every
    image), the mean stated probability, how often that class was the true one, and how many."""
    stated, happened = [], []
    for probability, true_class in zip(probabilities, truth):
        if not probability or true_class is None:
            continue
        for c, p in probability.items():
            stated.append(float(p))
            happened.append(float(int(c) == true_class))
    stated, happened = np.asarray(stated), np.asarray(happened)
    points = []
    edges = np.linspace(0, 1, bins + 1)
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (stated >= low) & ((stated < high) | (high == 1.0))
        if inside.any():
            points.append({'stated': float(stated[inside].mean()),
                           'observed': float(happened[inside].mean()),
                           'count': int(inside.sum())})
    return points
