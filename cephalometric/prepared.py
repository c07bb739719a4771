"""Reading a dataset written by prepare_cephalometric_data.py (COCO-style JSON per split)."""
from __future__ import annotations

import json
import os.path as osp
from dataclasses import dataclass

import numpy as np

from .errors import UserError
from .metrics import radial_errors, summarize_radial_errors


@dataclass
class Split:
    """One split's annotations as arrays (N images, K landmarks)."""
    names: list
    patient_ids: list
    image_paths: list
    keypoints: np.ndarray      # (N, K, 2) px, NaN where missing
    visible: np.ndarray        # (N, K) bool
    mm_per_pixel: np.ndarray   # (N,) NaN where unknown
    skeletal_class: list       # int or None per image


def load_split(data_root: str, split: str) -> Split:
    path = osp.join(data_root, 'annotations', f'{split}.json')
    if not osp.isfile(path):
        raise UserError(f'no {split} split at {path}; run prepare_cephalometric_data.py '
                        f'--out-dir {data_root} first')
    with open(path) as handle:
        coco = json.load(handle)
    names = list(coco['categories'][0]['keypoints'])
    by_image = {ann['image_id']: ann for ann in coco['annotations']}
    patient_ids, image_paths, keypoints, visible, spacing, classes = [], [], [], [], [], []
    for image in coco['images']:
        ann = by_image[image['id']]
        flat = np.asarray(ann['keypoints'], float).reshape(-1, 3)
        seen = flat[:, 2] > 0
        points = flat[:, :2].copy()
        points[~seen] = np.nan
        patient_ids.append(str(image.get('patient_id', image['id'])))
        image_paths.append(osp.join(data_root, 'images', image['file_name']))
        keypoints.append(points)
        visible.append(seen)
        value = ann.get('mm_per_pixel')
        spacing.append(np.nan if value is None else float(value))
        classes.append(ann.get('skeletal_class'))
    k = len(names)
    return Split(names, patient_ids, image_paths,
                 np.asarray(keypoints, float).reshape(-1, k, 2),
                 np.asarray(visible, bool).reshape(-1, k),
                 np.asarray(spacing, float), classes)


def mean_shape(split: Split) -> np.ndarray:
    """Mean position of each landmark over the images that have it: (K, 2)."""
    return np.nanmean(split.keypoints, axis=0)


def mean_shape_baseline(data_root: str, split: str = 'val') -> dict:
    """Metrics of predicting the mean training shape for every image of `split`.

    The floor any model must beat: it knows where landmarks are on average, nothing about the
    patient in front of it.
    """
    train, target = load_split(data_root, 'train'), load_split(data_root, split)
    prediction = np.broadcast_to(mean_shape(train), target.keypoints.shape)
    errors = radial_errors(prediction, np.nan_to_num(target.keypoints))
    return summarize_radial_errors(errors, target.visible, target.mm_per_pixel, target.names,
                                   per_landmark=False)
