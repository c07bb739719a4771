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

    `facing`: where each landmark lies across the training faces (its median x offset from the
    landmark box's centre, as a share of the box's width), which tells a face looking the trained
    way from a mirrored one (`mirrored`). Stored only when the framing model was trained on both
    directions (random flips): its landmarks then show the direction, and framing needs no
    mirrored pass of its own. None: a framing model of one direction.
    """
    offset: tuple = (0.0, 0.0)
    ratio: tuple = (1.6, 1.6)
    facing: Optional[tuple] = None

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> 'FramingPrior':
        if not data:
            return cls()
        offset = tuple(float(v) for v in data['offset'])
        ratio = tuple(float(v) for v in data['ratio'])
        facing = data.get('facing')
        facing = None if facing is None else tuple(float(v) for v in facing)
        if len(offset) != 2 or len(ratio) != 2 or not all(np.isfinite(offset + ratio)) \
                or min(ratio) <= 0 or (facing is not None and not (
                    facing and all(np.isfinite(facing)) and any(facing))):
            raise ValueError(f'invalid framing prior {data!r}')
        return cls(offset, ratio, facing)

    def to_dict(self) -> dict:
        data = {'offset': [float(v) for v in self.offset],
                'ratio': [float(v) for v in self.ratio]}
        if self.facing is not None:
            data['facing'] = [float(v) for v in self.facing]
        return data

    def mirrored(self, keypoints: np.ndarray) -> bool:
        """Whether landmarks (K, 2) show a face looking the other way than the training faces:
        their x offsets (as for `facing`) run against `facing`'s. Needs `facing`."""
        points = np.asarray(keypoints, np.float64).reshape(-1, 2)
        template = np.asarray(self.facing, np.float64)
        if len(template) != len(points):
            raise ValueError(f'the framing prior knows {len(template)} landmarks, got '
                             f'{len(points)}')
        return float(np.nansum(template * horizontal_offsets(points))) < 0

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


def horizontal_offsets(points: np.ndarray) -> np.ndarray:
    """x offset of each landmark (K, 2) from the centre of their bounding box, as a share of its
    width (NaN where a landmark has no position)."""
    points = np.asarray(points, np.float64)
    finite = np.isfinite(points).all(-1)
    if not finite.any():
        return np.full(len(points), np.nan)
    low, high = points[finite, 0].min(), points[finite, 0].max()
    return np.where(finite, (points[:, 0] - (low + high) / 2) / max(high - low, 1.0), np.nan)


def measure_facing(keypoints: np.ndarray, visible: np.ndarray) -> tuple:
    """`FramingPrior.facing` of training annotations: keypoints (N, K, 2), visible (N, K)."""
    offsets = np.array([horizontal_offsets(np.where(seen[:, None], points, np.nan))
                        for points, seen in zip(keypoints, visible)])
    with np.errstate(all='ignore'):
        facing = np.nanmedian(offsets, 0) if len(offsets) else np.zeros(keypoints.shape[1])
    return tuple(float(v) if np.isfinite(v) else 0.0 for v in facing)


_FRAMING_PRIORS: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def framing_prior_of(dataset) -> dict:
    """Where the training boxes lie around their landmarks (`framing.FramingPrior`), as data.

    Measured once per training dataset: its annotations do not change while it trains, and every
    new best checkpoint stores the prior.
    """
    if dataset not in _FRAMING_PRIORS:
        _FRAMING_PRIORS[dataset] = _measure_framing_prior(dataset)
    return {key: list(values) for key, values in _FRAMING_PRIORS[dataset].items()}


def facing_of(dataset) -> list:
    """`FramingPrior.facing` of a training dataset's annotations, as data."""
    keypoints, visible, _ = _annotations(dataset)
    return list(measure_facing(keypoints, visible))


def _measure_framing_prior(dataset) -> dict:
    return measure_prior(*_annotations(dataset)).to_dict()


def _annotations(dataset):
    """Keypoints (N, K, 2) relative to each image's box, visibility (N, K), box sizes (N, 2)."""
    keypoints, visible, sizes = [], [], []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        x0, y0, x1, y1 = np.asarray(info['bbox'], np.float64).reshape(-1)[:4]
        keypoints.append(np.asarray(info['keypoints'], np.float64)[0] - [x0, y0])
        visible.append(np.asarray(info['keypoints_visible'])[0] > 0)
        sizes.append((x1 - x0, y1 - y0))
    return np.array(keypoints), np.array(visible), np.array(sizes)
