"""The shape prior: how the landmarks of one face lie relative to each other.

Measured on the training annotations when a checkpoint is calibrated and stored in its error
calibration as data. A tracing whose points lie far from where the other points put them is an
unusual face or a wrong tracing: either way its errors are larger than its heatmaps say. Alone
it ranks the held-out ISBI cephalograms and the demo photographs by their mean error about as
well as the heatmap signals or better (docs/evaluation.md, Confidence), and tells them
something they miss, so the error calibration adds it to every landmark's signal
(`prediction.heatmaps.error_signal`) with the weight its validation split fits.

A Gaussian over the training shapes after similarity alignment (Procrustes, reflections allowed,
so a face of the other side compares too); a landmark's deviation is its distance from its mean
given all the other points, in the image's pixels. The alignment's own directions (position, turn
and size) hold the training shapes nearly fixed and are kept only by a small ridge, so a tracing
that aligns badly with the mean shape stands out strongly and a point moved a little hardly: the
deviation grows faster than the misplacement, and says how unusual the whole tracing is rather
than which point errs (on ISBI its ranking of single points' errors is near chance, of the
images' mean errors Spearman 0.6-0.7). Only its mean over the tracing (`deviation`) is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

# Share of the mean variance added to the covariance's diagonal: aligned shapes lose four
# dimensions to the alignment, so the covariance is singular without it.
RIDGE = 0.01
# Below this many complete training shapes per landmark coordinate there is no shape prior: the
# covariance would be mostly ridge.
MIN_SHAPES_PER_DIMENSION = 2
# A prior over more landmarks would not fit in a checkpoint's metadata (2K x 2K numbers).
MAX_SHAPE_LANDMARKS = 64
ALIGN_ROUNDS = 10


def similarity_align(points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, float]:
    """(points (K, 2) moved, turned, mirrored if that fits better, and scaled onto `reference`,
    the scale applied): Procrustes by SVD."""
    centre, reference_centre = points.mean(0), reference.mean(0)
    moved, target = points - centre, reference - reference_centre
    u, singular, vt = np.linalg.svd(moved.T @ target)
    norm = float((moved ** 2).sum())
    scale = float(singular.sum()) / norm if norm > 0 else 1.0
    return scale * moved @ (u @ vt) + reference_centre, scale


@dataclass
class ShapePrior:
    """`reference` (K, 2): the mean aligned shape (unit size); `mean` (2K,) and `precision`
    (2K, 2K): the Gaussian of the aligned shapes."""
    reference: np.ndarray
    mean: np.ndarray
    precision: np.ndarray

    @classmethod
    def from_dict(cls, data: dict) -> 'ShapePrior':
        reference = np.asarray(data['reference'], np.float64)
        mean = np.asarray(data['mean'], np.float64)
        precision = np.asarray(data['precision'], np.float64)
        count = len(reference)
        if reference.shape != (count, 2) or mean.shape != (2 * count,) \
                or precision.shape != (2 * count, 2 * count) or not all(
                    np.isfinite(a).all() for a in (reference, mean, precision)):
            raise ValueError('invalid shape prior')
        return cls(reference, mean, precision)

    def to_dict(self) -> dict:
        return {'reference': self.reference.tolist(), 'mean': self.mean.tolist(),
                'precision': self.precision.tolist()}

    def deviations(self, keypoints: np.ndarray) -> np.ndarray:
        """(K,) how far each landmark lies from its mean given the others (see the module
        docstring), in the keypoints' pixels; NaN for all when a landmark has no position."""
        points = np.asarray(keypoints, np.float64).reshape(-1, 2)
        if points.shape != self.reference.shape:
            raise ValueError(f'the shape prior knows {len(self.reference)} landmarks, got '
                             f'{len(points)}')
        if not np.isfinite(points).all() or np.ptp(points, 0).max() <= 0:
            return np.full(len(points), np.nan)
        aligned, scale = similarity_align(points, self.reference)
        offset = aligned.ravel() - self.mean
        # x_k - E[x_k | the others] = P_kk^-1 (P offset)_k
        pulled = (self.precision @ offset).reshape(-1, 2)
        blocks = self.precision.reshape(len(points), 2, len(points), 2)
        blocks = blocks[np.arange(len(points)), :, np.arange(len(points)), :]   # (K, 2, 2)
        return np.linalg.norm(np.linalg.solve(blocks, pulled[..., None])[..., 0], axis=1) / scale

    def deviation(self, keypoints: np.ndarray) -> float:
        """The mean of `deviations`: how unusual the whole tracing is, in pixels (NaN: a
        landmark has no position)."""
        return float(np.mean(self.deviations(keypoints)))


def fit_shape_prior(keypoints: np.ndarray, visible: np.ndarray) -> Optional[ShapePrior]:
    """The shape prior of training annotations (N, K, 2) px with visibility (N, K), from the
    shapes with every landmark placed; None when there are too few or too many landmarks."""
    keypoints = np.asarray(keypoints, np.float64)
    complete = np.asarray(visible, bool).all(1) & np.isfinite(keypoints).all((1, 2))
    shapes = keypoints[complete]
    shapes = shapes[np.ptp(shapes, 1).max(1) > 0]   # (all points on one spot: no shape)
    count = keypoints.shape[1]
    if not 3 <= count <= MAX_SHAPE_LANDMARKS or len(shapes) < MIN_SHAPES_PER_DIMENSION * 2 * count:
        return None
    reference = shapes[0] - shapes[0].mean(0)
    reference /= np.linalg.norm(reference)
    for _ in range(ALIGN_ROUNDS):   # generalised Procrustes: align to the mean, renew it
        aligned = np.stack([similarity_align(shape, reference)[0] for shape in shapes])
        reference = aligned.mean(0) - aligned.mean((0, 1))
        reference /= np.linalg.norm(reference)
    vectors = aligned.reshape(len(aligned), -1)
    covariance = np.cov(vectors.T)
    covariance += RIDGE * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
    return ShapePrior(reference, vectors.mean(0), np.linalg.inv(covariance))
