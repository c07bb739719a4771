"""Fill in the parts of the MMPose config that depend on the prepared data and the command line.

Its job: point the data loaders at a prepared dataset and size the head for its landmarks, and map
--input-size, --sigma, --epochs, --batch-size and --workers onto every place of the config that
holds them. Used by `training` (and by benchmark.py, through `training.build_config`). May import
the standard library, this package's `errors` and `dataset_reader`.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

from .dataset_reader import read_inputs, read_landmark_names
from .errors import UserError

DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _loaders(cfg) -> list:
    """The data-loader dicts the config has, in DATALOADERS order."""
    return [cfg[name] for name in DATALOADERS if name in cfg]


def _codecs(cfg) -> list:
    """Every codec dict in the config (head decoder and GenerateTarget encoders)."""
    found = [cfg.model.head.decoder]
    for loader in _loaders(cfg):
        for step in loader.get('dataset', {}).get('pipeline', []):
            if step.get('type') == 'GenerateTarget':
                found.append(step['encoder'])
    return found


def set_input_size(cfg, size: int, sigma: Optional[float] = None) -> None:
    """Square model input of `size` px with stride-4 heatmaps, everywhere the config names it."""
    if size < 32 or size % 32:
        raise UserError(f'--input-size must be a positive multiple of 32 (HRNet downsamples by '
                        f'32), got {size}')
    if sigma is not None and not sigma > 0:
        raise UserError(f'--sigma must be positive, got {sigma}')
    for codec in [cfg.codec] + _codecs(cfg):
        codec['input_size'] = (size, size)
        codec['heatmap_size'] = (size // 4, size // 4)
        if sigma is not None:
            codec['sigma'] = sigma
    for loader in _loaders(cfg):
        for step in loader.dataset.pipeline:
            if step.get('type') == 'TopdownAffine':
                step['input_size'] = (size, size)


def set_data_root(cfg, data_root: str) -> list[str]:
    """Point all loaders at a prepared dataset and size the head for its landmarks.

    The landmark names come from the dataset's metainfo, read as data (never run); a folder that is
    not a prepared dataset is refused with one line.
    """
    names = read_landmark_names(data_root)
    root = osp.join(osp.abspath(data_root), '')
    cfg.data_root = root
    for loader in _loaders(cfg):
        loader.dataset.data_root = root
    cfg.num_keypoints = len(names)
    cfg.model.head.out_channels = len(names)
    inputs = read_inputs(data_root)
    if inputs != ['rgb']:   # RGB-D: 4-channel stem, depth in every pipeline (cephalometric.rgbd)
        from .rgbd import use_inputs
        use_inputs(cfg, inputs)
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
    """Training images per step and per process."""
    if batch_size < 1:
        raise UserError(f'--batch-size must be at least 1, got {batch_size}')
    cfg.train_dataloader.batch_size = batch_size


def set_workers(cfg, workers: int) -> None:
    """Data-loading processes of every loader (0: load in the training process)."""
    if workers < 0:
        raise UserError(f'--workers must be 0 or more, got {workers}')
    for loader in _loaders(cfg):
        loader.num_workers = workers
        loader.persistent_workers = workers > 0
