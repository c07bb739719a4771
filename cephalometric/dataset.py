"""The dataset written by prepare_cephalometric_data.py, registered for MMPose configs."""
from __future__ import annotations

import os.path as osp

import cephalometric.mmcv_compat  # noqa: F401  (must precede mmpose)

from mmpose.datasets.datasets.base import BaseCocoStyleDataset
from mmpose.registry import DATASETS

METAINFO_FILE = 'metainfo.py'


@DATASETS.register_module()
class CephalometricDataset(BaseCocoStyleDataset):
    """COCO-style keypoint dataset whose landmark names come from `<data_root>/metainfo.py`.

    The prepared folder carries its own landmark set, so the same config serves the 19 photograph
    landmarks, ISBI 2015's 19 X-ray landmarks or any other set without edits. One face per image;
    its box is the whole image.
    """

    def __init__(self, *args, data_root: str = '', metainfo: dict | None = None, **kwargs):
        if metainfo is None:
            metainfo = dict(from_file=osp.abspath(osp.join(data_root, METAINFO_FILE)))
        super().__init__(*args, data_root=data_root, metainfo=metainfo, **kwargs)
