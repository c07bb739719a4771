"""The prepared dataset as an MMPose dataset class, registered for configs.

Its job: `CephalometricDataset`, MMPose's COCO-style keypoint dataset with the landmark set of
the data root. Its metainfo is a dict read by `data.reader` (metainfo.json, or an old
metainfo.py parsed without running it), never `dict(from_file=...)` on a file in the data root,
which MMEngine would execute; its annotation files are checked by `data.reader` before MMPose
reads them, so a damaged file is one UserError line. A photograph (or depth map) that cannot be
decoded when a sample is loaded, which may be mid-training, is one line too (`DatasetFileError`),
also from a data-loading worker process.
"""
from __future__ import annotations

import os.path as osp

import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

import cv2
import numpy as np
from mmpose.datasets.datasets.base import BaseCocoStyleDataset
from mmpose.registry import DATASETS

from cephalometric.data.images import _native_stderr_silenced
from cephalometric.data.reader import read_annotations, read_metainfo, recreate_hint
from cephalometric.errors import UserError

WORKER_PREFIX = 'Caught '
OPENCV_LOG_ERROR = 2        # cv2.setLogLevel: errors only, no warnings


class DatasetFileError(UserError):
    """A file of the prepared dataset that cannot be used, found while loading a sample.

    PyTorch's DataLoader re-raises an error from a worker process as
    `type(error)("Caught ... in DataLoader worker process N.\\nOriginal Traceback ...")`; this
    class keeps only the original message (the traceback's last line), so the user still reads
    one line.
    """

    def __init__(self, message: str = ''):
        text = str(message)
        if text.startswith(WORKER_PREFIX) and 'Traceback' in text:
            last = text.rstrip().splitlines()[-1]
            text = last.split(': ', 1)[1] if ': ' in last else last
        super().__init__(text)


def undecodable_reason(path: str, width, height) -> str | None:
    """Why the photograph at `path` cannot be used as the annotations describe it, or None."""
    if not osp.isfile(path):
        return 'is missing'
    try:
        with _native_stderr_silenced():   # libpng's "Read Error" on a truncated file
            image = cv2.imread(path, cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        return 'cannot be decoded (truncated or damaged)'
    if (width, height) != (image.shape[1], image.shape[0]):
        return (f'is {image.shape[1]}x{image.shape[0]} pixels but its annotation says '
                f'{width}x{height}')
    return None


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
        coco = read_annotations(self.ann_file, self._data_root)   # one line for a damaged file
        names = coco['categories'][0]['keypoints']
        expected = self._metainfo.get('num_keypoints')
        if expected is not None and expected != len(names):
            raise UserError(f'annotations file {self.ann_file} names {len(names)} landmarks but '
                            f'the metainfo of {self._data_root} has {expected}; '
                            f'{recreate_hint(self._data_root)}')
        id2name = self._metainfo.get('keypoint_id2name') or {}
        if id2name and [id2name.get(i) for i in range(len(names))] != list(names):
            raise UserError(f'annotations file {self.ann_file} lists its landmarks other than the '
                            f'metainfo of {self._data_root} (names or order differ); '
                            f'{recreate_hint(self._data_root)}')
        return super()._load_annotations()

    def prepare_data(self, idx):
        """MMPose's sample; a file that cannot be read becomes one DatasetFileError line."""
        level = cv2.getLogLevel()
        cv2.setLogLevel(OPENCV_LOG_ERROR)   # OpenCV's "PNG input buffer is incomplete": ours below
        try:
            return super().prepare_data(idx)
        except DatasetFileError:
            raise
        except UserError as error:   # e.g. LoadDepth's refusal of a depth map
            raise DatasetFileError(f'{error}') from None
        except Exception:
            info = self.get_data_info(idx)
            path = info.get('img_path', '')
            width, height = info.get('annotated_size') or (None, None)
            reason = undecodable_reason(path, width, height) if path else None
            if reason is None:
                raise
            raise DatasetFileError(
                f'image {path} of the prepared dataset {reason}; '
                f'{recreate_hint(self._data_root or osp.dirname(osp.dirname(path)))}') from None
        finally:
            cv2.setLogLevel(level)

    def parse_data_info(self, raw_data_info: dict):
        """MMPose's record, plus `depth_path` (read by LoadDepth) for an RGB-D dataset."""
        data_info = super().parse_data_info(raw_data_info)
        if data_info is not None:
            # MMPose clips the box to (width - 1, height - 1); inference and evaluate.py frame the
            # whole image as (0, 0, width, height). Train and validate on that same box, or the
            # logged MRE differs from evaluate.py's (0.02 px on the demo data).
            x, y, w, h = raw_data_info['raw_ann_info']['bbox']
            data_info['bbox'] = np.array([[x, y, x + w, y + h]], dtype=np.float32)
            image = raw_data_info['raw_img_info']
            data_info['annotated_size'] = (image['width'], image['height'])
        depth_file = raw_data_info['raw_img_info'].get('depth_file')
        if data_info is not None and depth_file:
            data_info['depth_path'] = osp.join(osp.dirname(data_info['img_path']), depth_file)
        return data_info
