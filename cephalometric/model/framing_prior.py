"""The framing prior: where a training crop's box lies around its landmarks.

Measured once on the training annotations when a checkpoint is published and stored in it as
data; prediction (`prediction.framing`) turns predicted landmarks back into a crop-like face box.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class FramingPrior:
    """Where the training crop's box lies relative to the bounding box of its landmarks.

    centre = landmark-box centre + `offset` * landmark-box size; size = `ratio` * landmark-box size
    (per axis). Measured on the training annotations by `measure_prior`.
    """
    offset: tuple = (0.0, 0.0)
    ratio: tuple = (1.6, 1.6)

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> 'FramingPrior':
        if not data:
            return cls()
        offset = tuple(float(v) for v in data['offset'])
        ratio = tuple(float(v) for v in data['ratio'])
        if len(offset) != 2 or len(ratio) != 2 or not all(np.isfinite(offset + ratio)) \
                or min(ratio) <= 0:
            raise ValueError(f'invalid framing prior {data!r}')
        return cls(offset, ratio)

    def to_dict(self) -> dict:
        return {'offset': [float(v) for v in self.offset], 'ratio': [float(v) for v in self.ratio]}

    def box(self, keypoints: np.ndarray) -> np.ndarray:
        """(x, y, w, h) of the face box that a crop around these landmarks would have had."""
        points = np.asarray(keypoints, np.float64).reshape(-1, 2)
        points = points[np.isfinite(points).all(1)]
        if not len(points):   # no landmark has a position: no face box to derive
            raise ValueError('no finite landmark to frame')
        low, high = points.min(0), points.max(0)
        size = np.maximum(high - low, 1.0)
        centre = (low + high) / 2 + np.asarray(self.offset) * size
        box_size = np.asarray(self.ratio) * size
        return np.array([*(centre - box_size / 2), *box_size])


def measure_prior(keypoints: np.ndarray, visible: np.ndarray,
                  image_sizes: np.ndarray) -> FramingPrior:
    """The median crop-box-to-landmark-box relation over training images.

    keypoints (N, K, 2) px, visible (N, K) bool, image_sizes (N, 2) as (width, height): each
    training image is its own face box.
    """
    offsets, ratios = [], []
    for points, seen, (width, height) in zip(keypoints, visible, image_sizes):
        points = points[seen]
        if len(points) < 2:
            continue
        low, high = points.min(0), points.max(0)
        size = np.maximum(high - low, 1.0)
        offsets.append((np.array([width, height]) / 2 - (low + high) / 2) / size)
        ratios.append(np.array([width, height]) / size)
    if not offsets:
        return FramingPrior()
    return FramingPrior(tuple(np.median(offsets, 0).tolist()), tuple(np.median(ratios, 0).tolist()))


_FRAMING_PRIORS: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def framing_prior_of(dataset) -> dict:
    """Where the training boxes lie around their landmarks (`framing.FramingPrior`), as data.

    Measured once per training dataset: its annotations do not change while it trains, and every
    new best checkpoint stores the prior.
    """
    if dataset not in _FRAMING_PRIORS:
        _FRAMING_PRIORS[dataset] = _measure_framing_prior(dataset)
    return {key: list(values) for key, values in _FRAMING_PRIORS[dataset].items()}


def _measure_framing_prior(dataset) -> dict:
    keypoints, visible, sizes = [], [], []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        x0, y0, x1, y1 = np.asarray(info['bbox'], np.float64).reshape(-1)[:4]
        keypoints.append(np.asarray(info['keypoints'], np.float64)[0] - [x0, y0])
        visible.append(np.asarray(info['keypoints_visible'])[0] > 0)
        sizes.append((x1 - x0, y1 - y0))
    return measure_prior(np.array(keypoints), np.array(visible), np.array(sizes)).to_dict()
