"""MMEngine hooks: a stable best-checkpoint path and a training-curve picture.

MMEngine's CheckpointHook names the best checkpoint after its epoch (best_MRE_epoch_37.pth) and
deletes the previous one, so scripts and people cannot rely on a path. BestCheckpointHook keeps
`<work_dir>/best_<metric>.pth` pointing at the current best (a hard link: no extra disk) and writes
`best_<metric>.json` beside it with the epoch and all validation metrics.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Optional

from . import mmcv_compat  # noqa: F401  (must precede mmpose)
from mmengine.hooks import Hook
from mmpose.registry import HOOKS


def _atomic_link_or_copy(source: str, target: str) -> None:
    temporary = f'{target}.tmp-{os.getpid()}'
    if osp.lexists(temporary):
        os.remove(temporary)
    try:
        os.link(source, temporary)
    except OSError:  # file systems without hard links
        import shutil
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _atomic_write_json(path: str, data: dict) -> None:
    temporary = f'{path}.tmp-{os.getpid()}'
    with open(temporary, 'w') as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(temporary, path)


@HOOKS.register_module()
class BestCheckpointHook(Hook):
    """Mirror CheckpointHook's best checkpoint at `<work_dir>/best_<metric>.pth` (+ .json)."""

    priority = 'LOWEST'  # after CheckpointHook has saved the new best in after_val_epoch

    def __init__(self, metric: str = 'MRE') -> None:
        self.metric = metric
        self._published: Optional[str] = None

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        if runner.rank != 0:
            return
        best = runner.message_hub.get_info('best_ckpt')
        if not best or best == self._published or not osp.isfile(best):
            return
        target = osp.join(runner.work_dir, f'best_{self.metric}.pth')
        _atomic_link_or_copy(best, target)
        record = dict(
            checkpoint=osp.basename(target),
            source=osp.basename(best),
            epoch=runner.epoch,  # CheckpointHook saved it at this (1-based) epoch
            iteration=runner.iter,
            metric=self.metric,
            best_score=runner.message_hub.get_info('best_score'),
            metrics={k: float(v) for k, v in (metrics or {}).items()})
        _atomic_write_json(osp.join(runner.work_dir, f'best_{self.metric}.json'), record)
        self._published = best
        runner.logger.info(f'best {self.metric} so far: {record["best_score"]:.4f} at epoch '
                           f'{record["epoch"]} -> {target}')


@HOOKS.register_module()
class TrainingCurveHook(Hook):
    """After training, draw loss and validation MRE per epoch to `<work_dir>/training_curves.png`.

    Reads every run's `vis_data/scalars.json` in the work dir, so a resumed run's picture shows the
    whole history.
    """

    priority = 'LOWEST'

    def __init__(self, metric: str = 'MRE', filename: str = 'training_curves.png') -> None:
        self.metric = metric
        self.filename = filename

    def after_train(self, runner) -> None:
        if runner.rank != 0:
            return
        from .curves import plot_training_curves
        path = plot_training_curves(runner.work_dir, osp.join(runner.work_dir, self.filename),
                                    metric=self.metric)
        if path:
            runner.logger.info(f'training curves: {path}')
