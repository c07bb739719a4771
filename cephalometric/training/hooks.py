"""MMEngine hooks: the published best model and a training-curve picture.

MMEngine's CheckpointHook names its best checkpoint after the epoch (best_MRE_epoch_37.pth), so
people and scripts cannot rely on a path, and it stores optimizer and message-hub state a model user
does not need. BestCheckpointHook keeps `<work_dir>/best_<metric>.pth` (weights, config, landmark
names: all inference needs) and `best_<metric>.json` (epoch and every validation metric) for the
best epoch so far. The best score lives in MMEngine's message hub, so it survives --resume.
FramingModelHook ends the framing model's run (see the config's `framing_model`): it stores that
network's weights in the landmark run's best_MRE.pth and notes it in best_MRE.json;
RefineModelHook does the same for the refinement model (the config's `refine_model`).
In a multi-process run every process validates the same model (the config's SyncBuffersHook
averages BatchNorm statistics after each epoch) and rank 0 alone writes files.
"""
from __future__ import annotations

import json
import math
import os.path as osp
from typing import Optional

import cephalometric.mmpose_plugins.mmcv_compat  # noqa: F401  (must precede mmpose)

from mmengine.hooks import Hook
from mmpose.registry import HOOKS

from cephalometric.atomic import write_text_atomically
from cephalometric.json_data import read_json_file


def _finite_or_none(value) -> Optional[float]:
    """JSON has no NaN: a metric nothing could be computed for (no visible landmark) is null."""
    value = float(value)
    return value if math.isfinite(value) else None


@HOOKS.register_module()
class BestCheckpointHook(Hook):
    """Save the model with the lowest validation `metric` to `<work_dir>/best_<metric>.pth`."""

    priority = 'LOW'  # after the evaluator has produced the metrics, before logging ends

    def __init__(self, metric: str = 'MRE') -> None:
        self.metric = metric
        self.hub_key = f'best_score_{metric}'

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        score = (metrics or {}).get(self.metric)
        if score is None or math.isnan(score):
            return
        best = runner.message_hub.get_info(self.hub_key)
        if best is not None and not score < best:
            return
        runner.message_hub.update_info(self.hub_key, float(score))
        if runner.rank != 0:
            return
        from cephalometric.model.checkpoint import save_published_checkpoint

        target = osp.join(runner.work_dir, f'best_{self.metric}.pth')
        save_published_checkpoint(runner, target, {'best_metrics': {
            k: float(v) for k, v in metrics.items()}})
        record = dict(checkpoint=osp.basename(target), epoch=runner.epoch, iteration=runner.iter,
                      metric=self.metric, best_score=float(score),
                      metrics={k: _finite_or_none(v) for k, v in metrics.items()})
        write_text_atomically(osp.join(runner.work_dir, f'best_{self.metric}.json'),
                              json.dumps(record, indent=2, sort_keys=True, allow_nan=False))
        runner.logger.info(f'new best {self.metric} {score:.4f} at epoch {runner.epoch} -> '
                           f'{target}')


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
        from cephalometric.training.curves import plot_training_curves
        path = plot_training_curves(runner.work_dir, osp.join(runner.work_dir, self.filename),
                                    metric=self.metric)
        if path:
            runner.logger.info(f'training curves: {path}')


@HOOKS.register_module()
class FramingModelHook(Hook):
    """After the framing model's run, store its weights in the landmark model's `checkpoint`.

    The last epoch's weights are kept: the framing model is judged by the faces it finds in wide
    photographs, which its validation on crops does not measure.
    """

    priority = 'LOW'

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint

    def after_train(self, runner) -> None:
        if runner.rank != 0:
            return
        from mmengine.model import is_model_wrapper
        from mmengine.runner.checkpoint import get_state_dict

        from cephalometric.model.checkpoint import attach_framing_model
        from cephalometric.model.framing_prior import facing_of
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        steps = runner.cfg.train_dataloader.dataset.pipeline
        zoom_out, flip = (next((dict(step) for step in steps if step['type'] == name), None)
                          for name in ('RandomZoomOut', 'RandomFlip'))
        info = dict(epochs=runner.epoch, zoom_out=zoom_out, flip=flip)
        # A framing model that saw both directions tells them apart by its landmarks' geometry,
        # measured against the training faces' (`FramingPrior.facing`).
        facing = facing_of(runner.train_dataloader.dataset) if flip else None
        attach_framing_model(self.checkpoint, get_state_dict(model), info, facing)
        note_in_record(self.checkpoint, 'framing_model', info)
        runner.logger.info(f'framing model ({runner.epoch} epochs) stored in {self.checkpoint}')


def note_in_record(checkpoint: str, key: str, info: dict) -> None:
    """Note a stage that trained in the checkpoint's record (best_MRE.json beside it)."""
    record_path = osp.splitext(checkpoint)[0] + '.json'
    if osp.isfile(record_path):
        record = read_json_file(record_path, max_bytes=1 << 20)
        record[key] = info
        write_text_atomically(record_path, json.dumps(record, indent=2, sort_keys=True,
                                                      allow_nan=False))


@HOOKS.register_module()
class RefineModelHook(Hook):
    """After the refinement model's run, store its weights and `settings` (patch size, input
    size, decoding; see `training.config.refine_config`) in the landmark model's `checkpoint`.

    The last epoch's weights are kept: the run has no validation of its own (its patches are
    centred on the truth, not on the landmark model's estimates).
    """

    priority = 'LOW'

    def __init__(self, checkpoint: str, settings: dict) -> None:
        self.checkpoint, self.settings = checkpoint, dict(settings)

    def after_train(self, runner) -> None:
        if runner.rank != 0:
            return
        from mmengine.model import is_model_wrapper
        from mmengine.runner.checkpoint import get_state_dict

        from cephalometric.model.checkpoint import attach_refine_model
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        info = dict(epochs=runner.epoch, **self.settings)
        attach_refine_model(self.checkpoint, get_state_dict(model), self.settings, info)
        note_in_record(self.checkpoint, 'refine_model', info)
        runner.logger.info(f'refinement model ({runner.epoch} epochs, patch '
                           f'{100 * self.settings["patch"]:.1f}% of the face box) stored in '
                           f'{self.checkpoint}')
