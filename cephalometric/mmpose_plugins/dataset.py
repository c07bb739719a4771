"""The prepared dataset as an MMPose dataset class, registered for configs.

Its job: `CephalometricDataset`, MMPose's COCO-style keypoint dataset with the landmark set of
the data root. Its metainfo is a dict read by `data.reader` (metainfo.json, or an old
metainfo.py parsed without running it), never `dict(from_file=...)` on a file in the data root,
which MMEngine would execute; its annotation files are checked by `data.reader` before MMPose
reads them, so a damaged file is one UserError line.
"""
from __future__ import annotations

import os.path as osp

import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

import numpy as np
from mmpose.datasets.datasets.base import BaseCocoStyleDataset
from mmpose.registry import DATASETS

from cephalometric.data.reader import read_annotations, read_metainfo


@DATASETS.register_module()
class CephalometricDataset(BaseCocoStyleDataset):
    """COCO-style keypoint dataset whose landmark names come from the data root's metainfo.

    The prepared folder carries its own landmark set, so the same config serves the 19 photograph
    landmarks, ISBI 2015's 19 X-ray landmarks or any other set without edits. One face per image;
    its box is the whole image.
    """

    def __init__(self, *args, data_root: str = '', metainfo: dict | None = None, **kwargs):
        self._data_root = data_root
        if metainfo is None:
            metainfo = read_metainfo(data_root)
        super().__init__(*args, data_root=data_root, metainfo=metainfo, **kwargs)

    def _load_annotations(self):
        read_annotations(self.ann_file, self._data_root)   # one line for a damaged file
        return super()._load_annotations()

    def parse_data_info(self, raw_data_info: dict):
        """MMPose's record, plus `depth_path` (read by LoadDepth) for an RGB-D dataset."""
        data_info = super().parse_data_info(raw_data_info)
        if data_info is not None:
            # MMPose clips the box to (width - 1, height - 1); inference and evaluate.py frame the
            # whole image as (0, 0, width, height). Train and validate on that same box, or the
            # logged MRE differs from evaluate.py's (0.02 px on the demo data).
            x, y, w, h = raw_data_info['raw_ann_info']['bbox']
            data_info['bbox'] = np.array([[x, y, x + w, y + h]], dtype=np.float32)
        depth_file = raw_data_info['raw_img_info'].get('depth_file')
        if data_info is not None and depth_file:
            data_info['depth_path'] = osp.join(osp.dirname(data_info['img_path']), depth_file)
        return data_info
