"""Fill in the parts of the MMPose config that depend on the prepared data and the command line.

Kept apart from train_cephalometric.py so the benchmark builds exactly the same config for its
plain-MMEngine baseline.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

from .errors import UserError

REQUIRED_FILES = ('annotations/train.json', 'annotations/val.json', 'metainfo.py')


def read_landmark_names(data_root: str) -> list[str]:
    """Landmark names of a prepared dataset, in keypoint order, parsed the way MMPose parses them."""
    missing = [f for f in REQUIRED_FILES if not osp.isfile(osp.join(data_root, f))]
    if missing:
        raise UserError(f'no prepared dataset at {data_root} (missing {", ".join(missing)}); run '
                        f'python prepare_cephalometric_data.py --out-dir {data_root} first')
    import cephalometric.mmcv_compat  # noqa: F401  (must precede mmpose)

    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    meta = parse_pose_metainfo(dict(from_file=osp.abspath(osp.join(data_root, 'metainfo.py'))))
    return [meta['keypoint_id2name'][i] for i in range(meta['num_keypoints'])]


def _codecs(cfg) -> list:
    """Every codec dict in the config (head decoder and GenerateTarget encoders)."""
    found = [cfg.model.head.decoder]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for step in cfg.get(loader, {}).get('dataset', {}).get('pipeline', []):
            if step.get('type') == 'GenerateTarget':
                found.append(step['encoder'])
    return found


def _pipelines(cfg) -> list:
    return [cfg[loader].dataset.pipeline
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
            if loader in cfg]


def set_input_size(cfg, size: int, sigma: Optional[float] = None) -> None:
    """Square model input of `size` px with stride-4 heatmaps, everywhere the config names it."""
    if size % 32:
        raise UserError(f'--input-size must be a multiple of 32 (HRNet downsamples by 32), '
                        f'got {size}')
    for codec in [cfg.codec] + _codecs(cfg):
        codec['input_size'] = (size, size)
        codec['heatmap_size'] = (size // 4, size // 4)
        if sigma is not None:
            codec['sigma'] = sigma
    for pipeline in _pipelines(cfg):
        for step in pipeline:
            if step.get('type') == 'TopdownAffine':
                step['input_size'] = (size, size)


def set_data_root(cfg, data_root: str) -> list[str]:
    """Point all loaders at a prepared dataset and size the head for its landmarks."""
    names = read_landmark_names(data_root)
    root = osp.join(osp.abspath(data_root), '')
    cfg.data_root = root
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if loader in cfg:
            cfg[loader].dataset.data_root = root
    cfg.num_keypoints = len(names)
    cfg.model.head.out_channels = len(names)
    return names


def set_epochs(cfg, epochs: int) -> None:
    """Train for `epochs`, keeping the step-decay milestones at the same fractions of training."""
    if epochs < 1:
        raise UserError(f'--epochs must be at least 1, got {epochs}')
    old = cfg.train_cfg.max_epochs
    cfg.train_cfg.max_epochs = epochs
    for scheduler in cfg.param_scheduler:
        if scheduler.get('by_epoch', True) and scheduler['type'] == 'MultiStepLR':
            scheduler['end'] = epochs
            scheduler['milestones'] = sorted({max(1, round(m * epochs / old))
                                              for m in scheduler['milestones']})


def set_batch_size(cfg, batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f'--batch-size must be at least 1, got {batch_size}')
    cfg.train_dataloader.batch_size = batch_size


def set_workers(cfg, workers: int) -> None:
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if loader in cfg:
            cfg[loader].num_workers = workers
            cfg[loader].persistent_workers = workers > 0
